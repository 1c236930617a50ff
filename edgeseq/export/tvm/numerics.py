"""Float32 activations of the generated kernels as TVMScript expressions.

tanh and sigmoid are a rational approximation (max abs error 3.5e-7 for tanh, 2.3e-7 for
sigmoid) instead of TVM's ``T.tanh``, which lowers to a scalar ``expf`` call per lane. The
argument ``x`` of :func:`act` appears several times in the result: pass a cheap expression (a
buffer load) and never bind it to a scalar inside a vectorised loop (see :mod:`.lint`).
"""

from __future__ import annotations

from ...errors import UnsupportedOpError
from ...ir.types import Act
from .emit import f32

# Rational minimax approximation of tanh on [-7.9053, 7.9053] (the form used by Eigen and
# XNNPACK): odd numerator of degree 13, even denominator of degree 6. Max abs error 3.5e-7.
_TANH_CLAMP = 7.90531110763549805
_TANH_P = (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
           -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16)
_TANH_Q = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)


def tanh(x: str) -> str:
    c = f32(_TANH_CLAMP)
    xc = f"T.max(T.min({x}, {c}), {f32(-_TANH_CLAMP)})"
    x2 = f"({xc} * {xc})"
    p = f32(_TANH_P[-1])
    for a in _TANH_P[-2::-1]:
        p = f"({p} * {x2} + {f32(a)})"
    q = f32(_TANH_Q[-1])
    for b in _TANH_Q[-2::-1]:
        q = f"({q} * {x2} + {f32(b)})"
    return f"({xc} * {p} / {q})"


def sigmoid(x: str) -> str:
    half = f32(0.5)
    return f"({half} + {half} * {tanh(f'({half} * {x})')})"


def act(fn: Act, x: str, slope: float = 0.01, lo: float = -1.0, hi: float = 1.0) -> str:
    """``fn(x)`` in float32 (``slope``: leaky relu; ``lo``, ``hi``: hardtanh)."""
    zero, one, half = f32(0.0), f32(1.0), f32(0.5)
    if fn is Act.IDENTITY:
        return x
    if fn is Act.RELU:
        return f"T.max({x}, {zero})"
    if fn is Act.TANH:
        return tanh(x)
    if fn is Act.SIGMOID:
        return sigmoid(x)
    if fn is Act.HARDSIGMOID:
        return f"T.min(T.max({x} / {f32(6.0)} + {half}, {zero}), {one})"
    if fn is Act.SILU:
        return f"({x} * {sigmoid(x)})"
    if fn is Act.GELU:
        return f"({half} * {x} * ({one} + T.erf({x} * {f32(0.7071067811865476)})))"
    if fn is Act.GELU_TANH:
        inner = f"({f32(0.7978845608028654)} * ({x} + {f32(0.044715)} * {x} * {x} * {x}))"
        return f"({half} * {x} * ({one} + {tanh(inner)}))"
    if fn is Act.LEAKY_RELU:
        return f"T.Select({x} >= {zero}, {x}, {f32(slope)} * {x})"
    if fn is Act.HARDTANH:
        return f"T.min(T.max({x}, {f32(lo)}), {f32(hi)})"
    if fn is Act.SOFTPLUS:
        return f"(T.max({x}, {zero}) + T.log1p(T.exp(T.fabs({x}) * {f32(-1.0)})))"
    if fn is Act.MINRNN_G:
        return f"T.Select({x} >= {zero}, {x} + {half}, {sigmoid(x)})"
    raise UnsupportedOpError(f"activation '{fn.value}' has no float32 kernel", where="tvm")
