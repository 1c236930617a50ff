"""Fast paths as pattern rewrites: a step program that computes exactly what ONNX's own ``GRU`` or
``LSTM`` op computes runs on onnxruntime's fused kernel.

Each pattern below is the semantics of the ONNX operator written as a step program (default
activations, no peepholes, one direction); :func:`fused_kernel` matches a quantization-free program
against them structurally (:func:`edgeseq.ir.step.match.match`) and builds the operator's W, R and B
from the bound parameters, in ONNX's gate order. A program that does not match renders generically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Optional

import numpy as np

from ...ir.step import StepBuilder, StepProgram
from ...ir.step.match import match
from ...ir.types import Act


@dataclass
class FusedKernel:
    """ONNX ``op_type`` with inputs W (1, G*H, I), R (1, G*H, H), B (1, 2*G*H) and ``attrs``."""

    op_type: str
    hidden: int
    w: np.ndarray
    r: np.ndarray
    b: np.ndarray
    attrs: dict = field(default_factory=dict)
    #: the program's parameters the kernel was built from (W, R and biases)
    params: tuple = ()


def _builder(name: str, states) -> tuple[StepBuilder, Callable, Callable]:
    b = StepBuilder(name, {"x": 1}, {s: 1 for s in states})
    return b, lambda n: b.param(n, np.zeros((1, 1))), lambda n: b.param(n, np.zeros(1))


def _gate(b, w, v, fn: Act, g: str, x: str = "x", h: str = "h") -> str:
    return b.act(fn, b.affine([(w("W" + g), x), (w("R" + g), h)], v("b" + g)))


@lru_cache(maxsize=None)
def gru_pattern(linear_before_reset: bool) -> StepProgram:
    """ONNX GRU: z, r = sigmoid(x Wz^T + h Rz^T + bz), ...; h' = (1 - z) n + z h with
    n = tanh(x Wh^T + bWh + r (h Rh^T + bRh)) (linear_before_reset) or tanh(x Wh^T + (r h) Rh^T + bWh)."""
    b, w, v = _builder("onnx.GRU", ["h"])
    r = _gate(b, w, v, Act.SIGMOID, "r")
    z = _gate(b, w, v, Act.SIGMOID, "z")
    if linear_before_reset:
        pre = b.add(b.affine([(w("Wh"), "x")], v("bh")), b.mul(r, b.affine([(w("Rh"), "h")], v("bRh"))))
    else:
        pre = b.affine([(w("Wh"), "x"), (w("Rh"), b.mul(r, "h"))], v("bh"))
    h = b.lerp(z, b.act(Act.TANH, pre), "h")
    return b.build([h], {"h": h})


@lru_cache(maxsize=None)
def lstm_pattern() -> StepProgram:
    """ONNX LSTM: i, f, o = sigmoid(...), g = tanh(...); c' = f c + i g; h' = o tanh(c')."""
    b, w, v = _builder("onnx.LSTM", ["h", "c"])
    i, f, g, o = (
        _gate(b, w, v, fn, k) for k, fn in (("i", Act.SIGMOID), ("f", Act.SIGMOID), ("g", Act.TANH), ("o", Act.SIGMOID))
    )
    c = b.add(b.mul(f, "c"), b.mul(i, g))
    h = b.mul(o, b.act(Act.TANH, c))
    return b.build([h], {"h": h, "c": c})


def _stack(prog: StepProgram, bind: dict, names, shape) -> Optional[np.ndarray]:
    out = []
    for n in names:
        k = bind.get(n)
        a = np.zeros(shape) if k is None else np.asarray(prog.params[k], np.float64).reshape(shape)
        out.append(a)
    return np.concatenate(out, axis=0)


def _kernel(prog: StepProgram, bind: dict, op_type: str, gates: str, extra_bias, **attrs) -> Optional[FusedKernel]:
    """W, R, B in the gate order ``gates`` (bias names: 'b<g>' on W's side, ``extra_bias`` on R's)."""
    w0 = prog.params[bind["W" + gates[0]]]
    hsz, isz = w0.shape
    try:
        w = _stack(prog, bind, ["W" + g for g in gates], (hsz, isz))
        r = _stack(prog, bind, ["R" + g for g in gates], (hsz, hsz))
        wb = _stack(prog, bind, ["b" + g for g in gates], (hsz,))
        rb = _stack(prog, bind, [extra_bias.get(g, "-") for g in gates], (hsz,))
    except ValueError:  # shapes that are not one gate each: not this operator
        return None
    used = tuple(sorted(k for k in bind.values() if k is not None))
    return FusedKernel(op_type, hsz, w[None], r[None], np.concatenate([wb, rb])[None], dict(attrs), used)


def fused_kernel(prog: StepProgram) -> Optional[FusedKernel]:
    """The ONNX GRU / LSTM that computes the quantization-free program ``prog``, or None."""
    for lbr in (True, False):
        bind = match(gru_pattern(lbr), prog)
        if bind is not None:
            return _kernel(prog, bind, "GRU", "zrh", {"h": "bRh"}, linear_before_reset=int(lbr))
    bind = match(lstm_pattern(), prog)
    if bind is not None:
        return _kernel(prog, bind, "LSTM", "iofg", {})
    return None
