"""The diagonal state-space cell (S4D / DSS) as a step program: complex modes as real pairs."""

from __future__ import annotations

import numpy as np

from .. import ops as O
from ..step import ACT, STATE, StepBuilder, StepProgram, share
from . import lowering


@lowering(O.S4D)
def s4d(op: O.S4D, n_in: int) -> StepProgram:
    h, n = op.a_re.shape
    m = h * n
    cplx = op.complex_modes
    b = StepBuilder("S4D.complex" if cplx else "S4D.real", {"x": h}, {"re": m, "im": m} if cplx else {"re": m})
    abar, bbar = op.discretized()
    k = 2.0 if cplx else 1.0
    c = (np.asarray(op.c_re, np.float64) + 1j * (np.asarray(op.c_im, np.float64) if cplx else 0.0)) * k
    u = b.gather("x", np.repeat(np.arange(h), n), name="u_modes")  # u_t[h] for every mode of channel h
    ar, br = b.param("abar_re", abar.real.ravel()), b.param("bbar_re", bbar.real.ravel())
    re = b.add(
        b.sub(b.mul(ar, "re"), b.mul(b.param("abar_im", abar.imag.ravel()), "im")) if cplx else b.mul(ar, "re"),
        b.mul(br, u),
    )
    re = b.quant_state("re", re, STATE)
    nxt = {"re": re}
    if cplx:
        im = b.add(b.add(b.mul("abar_im", "re"), b.mul(ar, "im")), b.mul(b.param("bbar_im", bbar.imag.ravel()), u))
        nxt["im"] = im = b.quant_state("im", im, STATE)
        cx = b.sub(b.mul(b.param("c_re", c.real.ravel()), re), b.mul(b.param("c_im", c.imag.ravel()), im))
    else:
        cx = b.mul(b.param("c_re", c.real.ravel()), re)
    cx = b.quant("cx", cx, share("re", bits=24))
    y = b.affine([(b.param("sum_modes", np.ones((1, n))), cx, h)])  # k Re(sum_n C x) per channel
    if op.d is not None:
        y = b.add(y, b.mul(b.param("d", op.d), "x"))
    out = b.quant_output(0, y, ACT)
    return b.build([out], nxt)
