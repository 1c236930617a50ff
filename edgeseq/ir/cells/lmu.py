"""The Legendre Memory Unit (keras-lmu) as a step program."""

from __future__ import annotations

import numpy as np

from .. import ops as O
from ..step import INNER, STATE, StepBuilder, StepProgram, WeightKind
from . import lowering
from .gated import act_to


@lowering(O.LMU)
def lmu(op: O.LMU, n_in: int) -> StepProgram:
    d, order = op.memory_d, op.order
    has_h_state = op.has_hidden and (op.w_h is not None or op.e_h is not None)
    states = {"m": op.memory_size}
    if has_h_state:
        states["h"] = op.hidden_size
    b = StepBuilder(f"LMU.{op.discretizer.value}.{op.act.value}", {"x": op.input_size}, states)
    h_prev = "h" if has_h_state else ("m" if not op.has_hidden else None)

    def w(name):
        a = getattr(op, name)
        return None if a is None else b.param(name, a, name)

    def bias(name):
        a = getattr(op, name)
        return None if a is None else b.param(name, a)

    terms = [(w("e_x"), "x")]
    if op.e_m is not None:
        terms.append((w("e_m"), "m"))
    if op.e_h is not None:
        terms.append((w("e_h"), h_prev))
    u = b.quant("u", b.affine(terms, bias("b_u")), INNER)
    abar, bbar = op.matrices()
    a = b.param("abar", abar, "A", WeightKind.MEMORY)
    bb = b.param("bbar", np.asarray(bbar, np.float64).reshape(order, 1), "B", WeightKind.MEMORY)
    m = b.quant_state("m", b.affine([(a, "m", d), (bb, u, d)]), STATE)
    if not op.has_hidden:
        return b.build([m], {"m": m})
    terms = [(w("w_m"), m)]
    if op.w_x is not None:
        terms.append((w("w_x"), "x"))
    if op.w_h is not None:
        terms.append((w("w_h"), h_prev))
    pre_v = b.affine(terms, bias("b_h"))
    h = act_to(b, op.act, pre_v, state="h" if has_h_state else None)
    nxt = {"m": m}
    if has_h_state:
        nxt["h"] = h
    return b.build([h], nxt)
