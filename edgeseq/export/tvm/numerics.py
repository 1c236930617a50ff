"""Float32 activations of the generated kernels as TVMScript expressions.

tanh and sigmoid are a rational approximation (max abs error 3.5e-7 for tanh, 2.3e-7 for
sigmoid) instead of TVM's ``T.tanh``, which lowers to a scalar ``expf`` call per lane; exp is
range reduction to [-ln2/2, ln2/2], a degree-7 polynomial and the power of two built in the
exponent bits (relative error 1e-7 on [-87.3, 88.3], beyond which it saturates). The
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
_TANH_P = (
    4.89352455891786e-03,
    6.37261928875436e-04,
    1.48572235717979e-05,
    5.12229709037114e-08,
    -8.60467152213735e-11,
    2.00018790482477e-13,
    -2.76076847742355e-16,
)
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


# exp(x) = 2^n e^r, n = round(x / ln2), r = x - n ln2 (ln2 split in two for exactness); the
# polynomial for e^r on [-ln2/2, ln2/2] is Cephes' expf.
_EXP_LO, _EXP_HI = -87.3, 88.3  # 2^n stays a normal float32
_LN2_HI, _LN2_LO = 0.693359375, -2.12194440e-4
_EXP_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)


def exp(x: str) -> str:
    xc = f"T.max(T.min({x}, {f32(_EXP_HI)}), {f32(_EXP_LO)})"
    n = f"T.floor({xc} * {f32(1.4426950408889634)} + {f32(0.5)})"
    r = f"({xc} - {n} * {f32(_LN2_HI)} - {n} * {f32(_LN2_LO)})"
    p = f32(_EXP_P[0])
    for c in _EXP_P[1:]:
        p = f"({p} * {r} + {f32(c)})"
    two_n = f'T.reinterpret("float32", (T.Cast("int32", T.min(T.max({n}, {f32(-126.0)}), {f32(127.0)})) + 127) << 23)'
    return f"(({p} * {r} * {r} + {r} + {f32(1.0)}) * {two_n})"


def sigmoid(x: str) -> str:
    half = f32(0.5)
    return f"({half} + {half} * {tanh(f'({half} * {x})')})"


def _gelu_inner(x: str) -> str:
    return f"({f32(0.7978845608028654)} * ({x} + {f32(0.044715)} * {x} * {x} * {x}))"


_ZERO, _ONE, _HALF = f32(0.0), f32(1.0), f32(0.5)
ACTS = {  # fn -> (x, slope, lo, hi) -> expression
    Act.IDENTITY: lambda x, *_: x,
    Act.RELU: lambda x, *_: f"T.max({x}, {_ZERO})",
    Act.TANH: lambda x, *_: tanh(x),
    Act.SIGMOID: lambda x, *_: sigmoid(x),
    Act.HARDSIGMOID: lambda x, *_: f"T.min(T.max({x} / {f32(6.0)} + {_HALF}, {_ZERO}), {_ONE})",
    Act.SILU: lambda x, *_: f"({x} * {sigmoid(x)})",
    Act.GELU: lambda x, *_: f"({_HALF} * {x} * ({_ONE} + T.erf({x} * {f32(0.7071067811865476)})))",
    Act.GELU_TANH: lambda x, *_: f"({_HALF} * {x} * ({_ONE} + {tanh(_gelu_inner(x))}))",
    Act.LEAKY_RELU: lambda x, slope, *_: f"T.Select({x} >= {_ZERO}, {x}, {f32(slope)} * {x})",
    Act.HARDTANH: lambda x, _, lo, hi: f"T.min(T.max({x}, {f32(lo)}), {f32(hi)})",
    Act.EXP: lambda x, *_: exp(x),
    Act.SOFTPLUS: lambda x, *_: f"(T.max({x}, {_ZERO}) + T.log1p(T.exp(T.fabs({x}) * {f32(-1.0)})))",
    Act.MINRNN_G: lambda x, *_: f"T.Select({x} >= {_ZERO}, {x} + {_HALF}, {sigmoid(x)})",
}


def act(fn: Act, x: str, slope: float = 0.01, lo: float = -1.0, hi: float = 1.0) -> str:
    """``fn(x)`` in float32 (``slope``: leaky relu; ``lo``, ``hi``: hardtanh)."""
    rule = ACTS.get(fn)
    if rule is None:
        raise UnsupportedOpError(f"activation '{fn.value}' has no float32 kernel", where="tvm")
    return rule(x, slope, lo, hi)
