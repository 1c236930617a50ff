"""Integer programs: what a quantized graph computes, as a few integer micro-ops per time step.

A :class:`Program` is

- ``inputs``: one or more integer input vectors per step, each produced from the float input by the
  documented boundary quantizer (:class:`InputSpec`);
- ``states``: named integer vectors carried from one step to the next (recurrent state, convolution
  history, readout accumulators), all zero at the start of a sequence;
- ``consts``: named integer arrays (weights, biases, multipliers, shifts, tables, limits);
- ``step``: the micro-ops run once per time step, in order;
- ``final``: the micro-ops run once after the last step of a chunk (readouts and the layers after
  them); they may load states but never store them;
- ``outputs``: which vector holds each graph output, and the float scale that dequantizes it.

Every vector has shape (B, n) at run time and a declared signed bit width ``bits``: all of its
values lie in [-2^(bits-1), 2^(bits-1) - 1]. Its C storage type is the smallest of int8/16/32/64
holding ``bits``. Vectors are written once per step (single assignment); ``Load``/``Store`` are the
only way to read and write state, and a ``Store`` takes effect immediately (later loads in the same
step see the new value).

Operands are names: a micro-op operand names either a vector or a constant. Elementwise operands
broadcast along the feature axis when they have one element (a constant of shape () or (1,), or a
vector with n = 1).

The micro-ops and their exact integer semantics (the integer-exact interpreter in
:mod:`edgeseq.quant.intexact` implements exactly these; :file:`edgeseq/quant/README.md` repeats them
for backend writers):

``MatVec``   y[b, g*N + o] = bias[o] + sum_i W[o, i] * x[b, g*I + i], W (N, I), g < blocks
``Requant``  x1 = (x + 2^(pre-1)) >> pre  (pre > 0; else x1 = x);  y = sat((x1*M + 2^(s-1)) >> s)
``Add``      y = a + b              ``Sub``  y = a - b          ``Mul``  y = a * b
``Div``      y = floor((2a + b) / (2b)), b > 0   (a / b rounded half up)
``Isqrt``    y = floor(sqrt(x)), x >= 0
``Lut``      256 entries: y = T[x + 128];  2^k + 1 entries: int16 index with linear interpolation
``Clamp``    y = min(max(x, lo), hi)
``CmpGe``    y = 1 if a >= b else 0
``Select``   y = a if c != 0 else b
``Concat``   y = [x0 | x1 | ...] (per block of ``blocks``)
``Gather``   y[:, j] = x[:, index[j]]
``Load``     y = state                ``Store``  state = x

Window programs (of graphs that read future steps, see :attr:`edgeseq.ir.graph.Graph.is_window`)
also hold *window micro-ops* in ``step``; each maps the whole sequence of one vector to another:

``Reverse``    y_t = x_{T-1-t}          ``Lookahead``  y_t = x_{t+steps}, 0 once t+steps >= T

They cut ``step`` into segments; each segment runs over every step of the window before the next
window micro-op runs, and a vector of an earlier segment is read at the same step t. Every state is
used inside one segment (zero at the start of the window), so a window program runs on whole
windows only (no state in or out, no chunks).

``>>`` is an arithmetic shift (floor division by a power of two); ``sat`` saturates to the output
vector's declared width. Only Requant, Lut and Clamp saturate; every other op is exact, and the
program declares output widths large enough for the worst case of its operands' declared ranges
(checked by :meth:`Program.verify`), so an emitter that uses the declared storage types can never
overflow. The one exception is an accumulating ``Add`` (``accumulate=True``, used by sum / mean
readouts), whose bound grows with the sequence length; its documented limit is
``max_steps`` in the program metadata.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Mapping, Optional, Sequence

import numpy as np

from ..errors import IRFormatError, NumericsError, VerificationError

# ----------------------------------------------------------------------------------------------
# bit widths


def int_range(bits: int) -> tuple[int, int]:
    """[lo, hi] of a signed ``bits``-bit integer."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def bits_for(lo: int, hi: int) -> int:
    """Smallest signed width holding every integer in [lo, hi] (at least 2)."""
    b = 2
    while not (-(1 << (b - 1)) <= lo and hi <= (1 << (b - 1)) - 1):
        b += 1
    return b


def container_bits(bits: int) -> int:
    """Storage width (8, 16, 32 or 64) of a ``bits``-bit vector."""
    for c in (8, 16, 32, 64):
        if bits <= c:
            return c
    raise NumericsError(f"a {bits}-bit integer does not fit any supported storage type (max 64 bits)")


_DTYPES = {8: np.int8, 16: np.int16, 32: np.int32, 64: np.int64}


def storage_dtype(bits: int):
    return _DTYPES[container_bits(bits)]


# ----------------------------------------------------------------------------------------------
# declarations


@dataclass(frozen=True)
class Vec:
    """A named integer vector of ``n`` values per example, ``bits`` wide.

    ``scale`` (float64, length n or 1; metadata only) dequantizes it: real = scale * q. ``tag`` names
    the quantization point (IR value, state or internal point) it represents, for audits."""

    name: str
    n: int
    bits: int
    scale: Optional[np.ndarray] = None
    tag: Optional[str] = None

    def to_json(self) -> dict:
        d: dict[str, Any] = {"name": self.name, "n": self.n, "bits": self.bits}
        if self.scale is not None:
            d["scale"] = [float(v) for v in np.ravel(self.scale)]
        if self.tag is not None:
            d["tag"] = self.tag
        return d

    @classmethod
    def from_json(cls, d: Mapping) -> "Vec":
        s = d.get("scale")
        return cls(
            str(d["name"]), int(d["n"]), int(d["bits"]), None if s is None else np.asarray(s, np.float64), d.get("tag")
        )


@dataclass(frozen=True)
class StateSpec:
    """A state vector carried between steps (zeros at the start). ``key`` is the graph's state key
    ('<node>/<state>'); ``shape`` is the graph's per-example state shape (the program stores it
    flattened, n = prod(shape))."""

    key: str
    shape: tuple[int, ...]
    bits: int
    scale: Optional[np.ndarray] = None

    @property
    def n(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    def to_json(self) -> dict:
        d: dict[str, Any] = {"key": self.key, "shape": list(self.shape), "bits": self.bits}
        if self.scale is not None:
            d["scale"] = [float(v) for v in np.ravel(self.scale)]
        return d

    @classmethod
    def from_json(cls, d: Mapping) -> "StateSpec":
        s = d.get("scale")
        return cls(
            str(d["key"]),
            tuple(int(v) for v in d["shape"]),
            int(d["bits"]),
            None if s is None else np.asarray(s, np.float64),
        )


@dataclass(frozen=True)
class InputSpec:
    """The boundary quantizer of (a part of) the float input.

    For the input channels ``channels`` (indices into the graph input's features) it produces the
    integer vector ``vec`` with, in IEEE single-precision arithmetic, per channel c:

        t = ((float) x[c] - offset[c]) * inv_scale[c]
        q = clamp(rint(t), -2^(bits-1), 2^(bits-1) - 1)          (rint: round half to even)

    (a subtraction, then a multiplication, each rounded to float32: no fused multiply-add).
    ``offset`` and ``inv_scale`` are float32 values (given values are rounded to float32 once, on
    construction), so a device with a single-precision FPU, or none, computes the same integers.
    It dequantizes as x ~ q * scale[c] + offset[c] (``scale`` is metadata, float64)."""

    vec: str
    channels: np.ndarray
    bits: int
    scale: np.ndarray
    inv_scale: np.ndarray
    offset: np.ndarray

    def __post_init__(self):
        for name in ("inv_scale", "offset"):
            v = np.asarray(getattr(self, name), np.float64)
            with np.errstate(over="ignore"):
                f = v.astype(np.float32)
            if not np.all(np.isfinite(f)):
                raise NumericsError(f"input '{self.vec}': {name} {v.tolist()} is not a finite float32")
            object.__setattr__(self, name, f.astype(np.float64))

    def to_json(self) -> dict:
        return {
            "vec": self.vec,
            "channels": [int(c) for c in self.channels],
            "bits": self.bits,
            "scale": [float(v) for v in self.scale],
            "inv_scale": [float(v) for v in self.inv_scale],
            "offset": [float(v) for v in self.offset],
        }

    @classmethod
    def from_json(cls, d: Mapping) -> "InputSpec":
        return cls(
            str(d["vec"]),
            np.asarray(d["channels"], np.int64),
            int(d["bits"]),
            np.asarray(d["scale"], np.float64),
            np.asarray(d["inv_scale"], np.float64),
            np.asarray(d["offset"], np.float64),
        )

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """(B, T, F) float -> (B, T, len(channels)) int64, exactly as documented above."""
        xf = np.asarray(x).astype(np.float32)[..., self.channels]
        t = (xf - self.offset.astype(np.float32)) * self.inv_scale.astype(np.float32)
        lo, hi = int_range(self.bits)
        return np.clip(np.rint(t), lo, hi).astype(np.int64)


@dataclass(frozen=True)
class OutputSpec:
    """Graph output ``name`` is the program vector ``vec``; real value = q * scale (+ nothing).
    ``temporal`` outputs are produced by the step program every step, pooled ones by ``final``."""

    name: str
    vec: str
    temporal: bool
    scale: np.ndarray

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "vec": self.vec,
            "temporal": self.temporal,
            "scale": [float(v) for v in np.ravel(self.scale)],
        }

    @classmethod
    def from_json(cls, d: Mapping) -> "OutputSpec":
        return cls(str(d["name"]), str(d["vec"]), bool(d["temporal"]), np.asarray(d["scale"], np.float64))


# ----------------------------------------------------------------------------------------------
# micro-ops

MICRO_OPS: dict[str, type["MicroOp"]] = {}


def _micro(cls):
    cls = dataclass(frozen=True, kw_only=True)(cls)
    MICRO_OPS[cls.kind] = cls
    return cls


@dataclass(frozen=True, kw_only=True)
class MicroOp:
    """Base class. ``out`` names the vector written; ``node`` the IR node it implements."""

    kind: ClassVar[str] = "MicroOp"
    saturating: ClassVar[bool] = False
    window: ClassVar[bool] = False  # maps a whole sequence (a window micro-op), not one step
    out: str
    node: str = ""

    def reads(self) -> tuple[str, ...]:
        """Names (vectors or constants) this op reads."""
        return ()

    def to_json(self) -> dict:
        d: dict[str, Any] = {"op": self.kind}
        for f in fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    def describe(self) -> str:
        args = ", ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self) if f.name not in ("out", "node"))
        return f"{self.out} = {self.kind}({args})"


def op_from_json(d: Mapping) -> MicroOp:
    kind = d.get("op")
    cls = MICRO_OPS.get(kind)
    if cls is None:
        raise IRFormatError(f"unknown micro-op '{kind}'; known: {', '.join(sorted(MICRO_OPS))}")
    kw = {}
    for f in fields(cls):
        if f.name in d:
            v = d[f.name]
            kw[f.name] = tuple(v) if isinstance(v, list) else v
    try:
        return cls(**kw)
    except TypeError as e:
        raise IRFormatError(f"malformed {kind} micro-op: {e}") from None


@_micro
class MatVec(MicroOp):
    """Integer matrix-vector product with optional bias and shared block-diagonal weights.

    W (N, I) int8/int16 constant; x has ``blocks * I`` values; y has ``blocks * N``:

        y[b, g*N + o] = bias[o] + sum_{i<I} W[o, i] * x[b, g*I + i]        for g < blocks

    ``bias`` (int32/int64, shape (N,)) is optional. Exact: the accumulator width is the declared
    width of ``out`` (32 or 64 in practice), chosen from the worst case |bias| + sum |W| * max|x|."""

    kind = "matvec"
    x: str
    w: str
    bias: Optional[str] = None
    blocks: int = 1

    def reads(self):
        return (self.x, self.w) + ((self.bias,) if self.bias else ())


@_micro
class Requant(MicroOp):
    """Fixed-point rescale with saturation (per channel or per tensor).

    M = mult[c] is 0 or in [2^30, 2^31); s = shift[c] in [1, 62]; pre >= 0 (a constant):

        x1 = (x + (1 << (pre - 1))) >> pre      if pre > 0, else x1 = x      (|x1| < 2^31)
        y  = (x1 * M + (1 << (s - 1))) >> s                                  (in 64 bits)
        y  = min(max(y, -2^(bits-1)), 2^(bits-1) - 1)                        (bits of ``out``)

    ``>>`` is an arithmetic right shift, so rounding is half up (towards +inf): -2.5 -> -2,
    2.5 -> 3. The real factor applied is M * 2^-(s + pre), up to the rounding of the pre-shift."""

    kind = "requant"
    saturating = True
    x: str
    mult: str
    shift: str
    pre: int = 0

    def reads(self):
        return (self.x, self.mult, self.shift)


@_micro
class Add(MicroOp):
    """y = a + b (exact). ``accumulate=True`` marks a running sum (readouts): its bound grows with
    the number of steps and is checked at run time instead (see ``max_steps``)."""

    kind = "add"
    a: str
    b: str
    accumulate: bool = False

    def reads(self):
        return (self.a, self.b)


@_micro
class Sub(MicroOp):
    """y = a - b (exact)."""

    kind = "sub"
    a: str
    b: str

    def reads(self):
        return (self.a, self.b)


@_micro
class Mul(MicroOp):
    """y = a * b elementwise (exact; the product width is declared)."""

    kind = "mul"
    a: str
    b: str

    def reads(self):
        return (self.a, self.b)


@_micro
class Div(MicroOp):
    """y = floor((2a + b) / (2b)) for b > 0: a / b rounded half up (-2.5 -> -2, 2.5 -> 3).
    A non-positive divisor is an error."""

    kind = "div"
    a: str
    b: str

    def reads(self):
        return (self.a, self.b)


@_micro
class Isqrt(MicroOp):
    """y = floor(sqrt(x)) for x >= 0 (exact integer square root). Negative x is an error."""

    kind = "isqrt"
    x: str

    def reads(self):
        return (self.x,)


@_micro
class Lut(MicroOp):
    """Table lookup; the table length selects the rule.

    256 entries (x is int8):          y = T[x + 128]
    2^k + 1 entries (x is int16, 1 <= k <= 16), S = 16 - k:
        u = x + 32768;  i = u >> S;  f = u & (2^S - 1)
        y = T[i] + (((T[i+1] - T[i]) * f + 2^(S-1)) >> S)        (S > 0; y = T[i] when S = 0)

    T[j] holds f(x) at x = j * 2^S - 32768 (the last entry at x = 32768). Table values fit the
    output width, and the interpolation stays between neighbours, so y never overflows."""

    kind = "lut"
    saturating = True
    x: str
    table: str

    def reads(self):
        return (self.x, self.table)


@_micro
class Clamp(MicroOp):
    """y = min(max(x, lo), hi) with constant (per-tensor or per-channel) limits."""

    kind = "clamp"
    saturating = True
    x: str
    lo: str
    hi: str

    def reads(self):
        return (self.x, self.lo, self.hi)


@_micro
class CmpGe(MicroOp):
    """y = 1 if a >= b else 0 (spikes: U > thr is U >= thr + 1 on integers)."""

    kind = "cmp_ge"
    a: str
    b: str

    def reads(self):
        return (self.a, self.b)


@_micro
class Select(MicroOp):
    """y = a where c != 0, else b."""

    kind = "select"
    c: str
    a: str
    b: str

    def reads(self):
        return (self.c, self.a, self.b)


@_micro
class Concat(MicroOp):
    """Concatenation along the features. With blocks = G each input is viewed as (G, n_k) and the
    blocks are concatenated block by block: y[b, g] = [x0[b, g] | x1[b, g] | ...]."""

    kind = "concat"
    xs: tuple
    blocks: int = 1

    def reads(self):
        return tuple(self.xs)


@_micro
class Gather(MicroOp):
    """y[:, j] = x[:, index[j]] (a constant int index vector)."""

    kind = "gather"
    x: str
    index: str

    def reads(self):
        return (self.x, self.index)


@_micro
class Load(MicroOp):
    """y = the current value of state ``state``."""

    kind = "load"
    state: str


@_micro
class Store(MicroOp):
    """state ``state`` = x (immediately). ``out`` is the state key."""

    kind = "store"
    x: str

    def reads(self):
        return (self.x,)


@dataclass(frozen=True, kw_only=True)
class _WindowMicro(MicroOp):
    """A window micro-op: its integer semantics are the IR window op's (:data:`edgeseq.ir.interpret.WINDOW`)
    applied to the integer sequence of ``x``; :meth:`ir_op` names that op."""

    window = True
    x: str

    def reads(self):
        return (self.x,)

    def ir_op(self):
        raise NotImplementedError

    @classmethod
    def of(cls, op, **kw) -> "_WindowMicro":
        """The micro-op of the IR window op ``op`` (``kw``: out, x, node)."""
        return cls(**kw)


@_micro
class Reverse(_WindowMicro):
    """Window op: y_t = x_{T-1-t} over the window (the backward direction of a bidirectional RNN)."""

    kind = "reverse"

    def ir_op(self):
        from ..ir import ops as O

        return O.Reverse()


@_micro
class Lookahead(_WindowMicro):
    """Window op: y_t = x_{t+steps}, 0 once t+steps >= T (integer 0 is real 0: no input offset)."""

    kind = "lookahead"
    steps: int = 1

    def ir_op(self):
        from ..ir import ops as O

        return O.Lookahead(steps=self.steps)

    @classmethod
    def of(cls, op, **kw) -> "Lookahead":
        return cls(steps=int(op.steps), **kw)


#: IR window op kind -> its window micro-op
WINDOW_MICRO_OPS: dict[str, type[_WindowMicro]] = {"Reverse": Reverse, "Lookahead": Lookahead}


def segments(ops: Sequence[MicroOp]) -> list[tuple[tuple[MicroOp, ...], tuple[MicroOp, ...]]]:
    """``step`` cut at its window micro-ops: [(per-step ops of a segment, window ops after it)]; one
    segment and no window ops for a streaming program (:func:`edgeseq.ir.window.cut`)."""
    from ..ir.window import cut

    return cut(ops, lambda op: op.window)


# ----------------------------------------------------------------------------------------------
# interval arithmetic (worst-case ranges), shared by the lowering and the verifier

Interval = tuple[int, int]


def _rq_scalar(x: int, m: int, s: int, pre: int) -> int:
    if pre > 0:
        x = (x + (1 << (pre - 1))) >> pre
    return (x * m + (1 << (s - 1))) >> s


def requant_interval(iv: Interval, mult: np.ndarray, shift: np.ndarray, pre: int) -> Interval:
    """Range of an (unsaturated) Requant of values in ``iv`` (monotone in x for M >= 0)."""
    lo, hi = iv
    ms = [int(v) for v in np.ravel(mult)]
    ss = [int(v) for v in np.ravel(shift)]
    if len(ss) == 1 and len(ms) > 1:
        ss = ss * len(ms)
    if len(ms) == 1 and len(ss) > 1:
        ms = ms * len(ss)
    vals = [_rq_scalar(v, m, s, pre) for m, s in zip(ms, ss) for v in (lo, hi)]
    return min(vals), max(vals)


def matvec_interval(w: np.ndarray, bias: Optional[np.ndarray], xiv: Interval) -> Interval:
    lo_x, hi_x = xiv
    w = np.asarray(w, dtype=object)
    pos = np.where(w > 0, w, 0)
    neg = np.where(w < 0, w, 0)
    hi = (pos * hi_x + neg * lo_x).sum(axis=1)
    lo = (pos * lo_x + neg * hi_x).sum(axis=1)
    if bias is not None:
        b = np.asarray(bias, dtype=object)
        hi = hi + b
        lo = lo + b
    return int(min(lo)), int(max(hi))


def _div_half_up(a: int, b: int) -> int:
    return (2 * a + b) // (2 * b)


def _const_iv(a: np.ndarray) -> Interval:
    return int(np.min(a)), int(np.max(a))


# ----------------------------------------------------------------------------------------------
# the program


@dataclass
class Program:
    """An integer program (see the module docstring). Build one with :class:`ProgramBuilder`."""

    inputs: tuple[InputSpec, ...]
    vectors: dict[str, Vec]
    states: dict[str, StateSpec]
    consts: dict[str, np.ndarray]
    step: tuple[MicroOp, ...]
    final: tuple[MicroOp, ...]
    outputs: tuple[OutputSpec, ...]
    metadata: dict = field(default_factory=dict)

    # -- lookups ----------------------------------------------------------------------------------
    @property
    def is_window(self) -> bool:
        """True for a window program (window micro-ops in ``step``): it runs on whole windows."""
        return any(op.window for op in self.step)

    def is_const(self, name: str) -> bool:
        return name in self.consts

    def width(self, name: str) -> int:
        """Number of values of a vector or constant operand (constants: their size)."""
        if name in self.vectors:
            return self.vectors[name].n
        return int(np.size(self.consts[name]))

    def tagged(self) -> dict[str, str]:
        """Quantization point (tag) -> vector name."""
        return {v.tag: v.name for v in self.vectors.values() if v.tag}

    # -- static checks ----------------------------------------------------------------------------
    def intervals(self) -> dict[str, Interval]:
        """Worst-case range of every vector from the declared ranges of inputs and states (each
        vector's range is also clipped to its declared width)."""
        iv: dict[str, Interval] = {}
        for s in self.inputs:
            iv[s.vec] = int_range(s.bits)

        def get(name: str) -> Interval:
            if name in self.consts:
                return _const_iv(self.consts[name])
            return iv[name]

        for op in self.step + self.final:
            if isinstance(op, Store):
                continue
            r = self._op_interval(op, get)
            dlo, dhi = int_range(self.vectors[op.out].bits)
            iv[op.out] = (max(r[0], dlo), min(r[1], dhi))
        return iv

    def _op_interval(self, op: MicroOp, get) -> Interval:
        c = self.consts
        if isinstance(op, MatVec):
            return matvec_interval(c[op.w], c[op.bias] if op.bias else None, get(op.x))
        if isinstance(op, Requant):
            return requant_interval(get(op.x), c[op.mult], c[op.shift], op.pre)
        if isinstance(op, Add):
            a, b = get(op.a), get(op.b)
            return a[0] + b[0], a[1] + b[1]
        if isinstance(op, Sub):
            a, b = get(op.a), get(op.b)
            return a[0] - b[1], a[1] - b[0]
        if isinstance(op, Mul):
            a, b = get(op.a), get(op.b)
            p = [a[i] * b[j] for i in (0, 1) for j in (0, 1)]
            return min(p), max(p)
        if isinstance(op, Div):
            a, b = get(op.a), get(op.b)
            blo = max(b[0], 1)
            p = [_div_half_up(a[i], bb) for i in (0, 1) for bb in (blo, max(b[1], 1))]
            return min(p + [0]), max(p + [0])
        if isinstance(op, Isqrt):
            a = get(op.x)
            return math.isqrt(max(a[0], 0)), math.isqrt(max(a[1], 0))
        if isinstance(op, Lut):
            return _const_iv(c[op.table])
        if isinstance(op, Clamp):
            a, lo, hi = get(op.x), _const_iv(c[op.lo]), _const_iv(c[op.hi])
            return max(min(a[0], hi[1]), lo[0]), min(max(a[1], lo[0]), hi[1])
        if isinstance(op, CmpGe):
            return 0, 1
        if isinstance(op, Select):
            a, b = get(op.a), get(op.b)
            return min(a[0], b[0]), max(a[1], b[1])
        if isinstance(op, Concat):
            ivs = [get(x) for x in op.xs]
            return min(v[0] for v in ivs), max(v[1] for v in ivs)
        if isinstance(op, Gather):
            return get(op.x)
        if isinstance(op, Load):
            return int_range(self.states[op.state].bits)
        if isinstance(op, Reverse):
            return get(op.x)
        if isinstance(op, Lookahead):
            a = get(op.x)
            return min(a[0], 0), max(a[1], 0)
        raise VerificationError(f"no interval rule for micro-op '{op.kind}'")  # pragma: no cover

    def verify(self) -> None:
        """Check names, shapes, widths and the overflow-freedom contract; raise VerificationError."""
        known_vecs: set[str] = set()
        for s in self.inputs:
            if s.vec not in self.vectors:
                raise VerificationError(f"input vector '{s.vec}' is not declared")
            known_vecs.add(s.vec)
        for name, a in self.consts.items():
            if not isinstance(a, np.ndarray) or a.dtype.kind not in "iu":
                raise VerificationError(f"constant '{name}' must be an integer array")
        for section, ops in (("step", self.step), ("final", self.final)):
            for i, op in enumerate(ops):
                where = f"{section} micro-op #{i} ({op.kind} -> '{op.out}', node '{op.node}')"
                for r in op.reads():
                    if r not in known_vecs and r not in self.consts:
                        raise VerificationError(
                            f"reads '{r}', which is neither a constant nor an earlier vector", where=where
                        )
                if isinstance(op, Store):
                    if section == "final":
                        raise VerificationError("the final program may not store state", where=where)
                    if op.out not in self.states:
                        raise VerificationError(f"stores unknown state '{op.out}'", where=where)
                    continue
                if isinstance(op, Load) and op.state not in self.states:
                    raise VerificationError(f"loads unknown state '{op.state}'", where=where)
                if op.out in known_vecs or op.out in self.consts:
                    raise VerificationError(f"vector '{op.out}' is written twice", where=where)
                if op.out not in self.vectors:
                    raise VerificationError(f"vector '{op.out}' is not declared", where=where)
                self._check_shapes(op, where)
                known_vecs.add(op.out)
        for o in self.outputs:
            if o.vec not in known_vecs:
                raise VerificationError(f"output '{o.name}' names unknown vector '{o.vec}'")
        self._check_window()
        # widths: exact ops must fit their declared width in the worst case
        iv: dict[str, Interval] = {s.vec: int_range(s.bits) for s in self.inputs}

        def get(name: str) -> Interval:
            return _const_iv(self.consts[name]) if name in self.consts else iv[name]

        for section, ops in (("step", self.step), ("final", self.final)):
            for i, op in enumerate(ops):
                where = f"{section} micro-op #{i} ({op.kind} -> '{op.out}', node '{op.node}')"
                if isinstance(op, Store):
                    slo, shi = int_range(self.states[op.out].bits)
                    vlo, vhi = get(op.x)
                    if vlo < slo or vhi > shi:
                        raise VerificationError(
                            f"stores a vector of range [{vlo}, {vhi}] into int{self.states[op.out].bits} state",
                            where=where,
                        )
                    continue
                r = self._op_interval(op, get)
                bits = self.vectors[op.out].bits
                dlo, dhi = int_range(bits)
                if bits > 64:
                    raise VerificationError(f"declared width {bits} exceeds 64 bits", where=where)
                exempt = op.saturating or (isinstance(op, Add) and op.accumulate)
                if not exempt and (r[0] < dlo or r[1] > dhi):
                    raise VerificationError(
                        f"worst-case range [{r[0]}, {r[1]}] does not fit the declared int{bits}", where=where
                    )
                if isinstance(op, Requant):
                    xi = get(op.x)
                    if op.pre > 0:
                        xi = ((xi[0] + (1 << (op.pre - 1))) >> op.pre, (xi[1] + (1 << (op.pre - 1))) >> op.pre)
                    if xi[0] < -(1 << 31) or xi[1] >= (1 << 31):
                        raise VerificationError("requant input (after pre-shift) may exceed 32 bits", where=where)
                    m, s = self.consts[op.mult], self.consts[op.shift]
                    if np.any((m != 0) & ((m < (1 << 30)) | (m >= (1 << 31)))) or np.any((s < 1) | (s > 62)):
                        raise VerificationError("requant multiplier/shift out of range", where=where)
                iv[op.out] = (max(r[0], dlo), min(r[1], dhi))

    def _check_window(self) -> None:
        """Window micro-ops: in ``step`` only, on vectors; every state used inside one segment."""
        if any(op.window for op in self.final):
            raise VerificationError("window micro-ops belong to the step program, not to final")
        seg_of: dict[str, int] = {}
        for k, (ops, wins) in enumerate(segments(self.step)):
            for op in wins:
                if op.x in self.consts:
                    raise VerificationError(f"window micro-op {op.kind} -> '{op.out}' reads constant '{op.x}'")
            for op in ops:
                key = op.out if isinstance(op, Store) else op.state if isinstance(op, Load) else None
                if key is not None and seg_of.setdefault(key, k) != k:
                    raise VerificationError(
                        f"state '{key}' is used in two segments of the window program (node '{op.node}')"
                    )

    def _check_shapes(self, op: MicroOp, where: str) -> None:
        n = self.vectors[op.out].n
        c = self.consts

        def w(name):
            return self.width(name)

        def elementwise(*names):
            for nm in names:
                if w(nm) not in (1, n):
                    raise VerificationError(f"operand '{nm}' has {w(nm)} values, expected 1 or {n}", where=where)

        if isinstance(op, MatVec):
            W = c.get(op.w)
            if W is None or W.ndim != 2:
                raise VerificationError("matvec weight must be a 2-D constant", where=where)
            if w(op.x) != W.shape[1] * op.blocks or n != W.shape[0] * op.blocks:
                raise VerificationError(
                    f"matvec shapes: W {W.shape}, blocks {op.blocks}, x {w(op.x)}, y {n}", where=where
                )
            if op.bias and c[op.bias].shape != (W.shape[0],):
                raise VerificationError("matvec bias must have shape (N,)", where=where)
        elif isinstance(op, Requant):
            if w(op.x) != n:
                raise VerificationError("requant input and output widths differ", where=where)
            elementwise(op.mult, op.shift)
            if op.pre < 0 or op.pre > 62:
                raise VerificationError("requant pre-shift must lie in [0, 62]", where=where)
        elif isinstance(op, (Add, Sub, Mul, Div, CmpGe)):
            elementwise(op.a, op.b)
        elif isinstance(op, Select):
            elementwise(op.c, op.a, op.b)
        elif isinstance(op, (Clamp,)):
            elementwise(op.x, op.lo, op.hi)
        elif isinstance(op, Isqrt):
            elementwise(op.x)
        elif isinstance(op, Lut):
            elementwise(op.x)
            t = c[op.table]
            xb = self.vectors[op.x].bits if op.x in self.vectors else 64
            if t.shape == (256,):
                if xb > 8:
                    raise VerificationError("a 256-entry table needs an int8 input", where=where)
            else:
                k = int(round(math.log2(max(t.size - 1, 1))))
                if t.ndim != 1 or t.size != (1 << k) + 1 or not 1 <= k <= 16:
                    raise VerificationError(f"table of {t.size} entries: expected 256 or 2^k + 1", where=where)
                if xb > 16:
                    raise VerificationError("an interpolated table needs an input of at most 16 bits", where=where)
        elif isinstance(op, Concat):
            tot = sum(w(x) for x in op.xs)
            if tot != n or any(w(x) % op.blocks for x in op.xs):
                raise VerificationError("concat widths do not add up", where=where)
        elif isinstance(op, Gather):
            idx = c[op.index]
            if idx.shape != (n,) or (idx.size and (idx.min() < 0 or idx.max() >= w(op.x))):
                raise VerificationError("gather index out of range", where=where)
        elif isinstance(op, _WindowMicro):
            if w(op.x) != n:
                raise VerificationError("a window micro-op keeps its input's width", where=where)
            if isinstance(op, Lookahead) and op.steps < 1:
                raise VerificationError(f"lookahead needs steps >= 1, got {op.steps}", where=where)
        elif isinstance(op, Load):
            if self.states[op.state].n != n:
                raise VerificationError("load width differs from the state's", where=where)

    # -- sizes ------------------------------------------------------------------------------------
    def sizes(self) -> dict[str, int]:
        """Bytes of constants by role, of state per sequence, and of step vectors per sequence."""
        role = {"weights": 0, "biases": 0, "tables": 0, "other": 0}
        used: dict[str, str] = {}
        for op in self.step + self.final:
            if isinstance(op, MatVec):
                used[op.w] = "weights"
                if op.bias:
                    used[op.bias] = "biases"
            elif isinstance(op, Lut):
                used[op.table] = "tables"
        for name, a in self.consts.items():
            role[used.get(name, "other")] += int(a.nbytes)
        state = sum(s.n * container_bits(s.bits) // 8 for s in self.states.values())
        vecs = sum(v.n * container_bits(v.bits) // 8 for v in self.vectors.values())
        return {
            "const_bytes": sum(role.values()),
            **{f"{k}_bytes": v for k, v in role.items()},
            "state_bytes": state,
            "vector_bytes": vecs,
        }

    def op_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for op in self.step + self.final:
            out[op.kind] = out.get(op.kind, 0) + 1
        return out

    def macs_per_step(self) -> int:
        return sum(int(self.consts[op.w].size) * op.blocks for op in self.step if isinstance(op, MatVec))

    # -- text -------------------------------------------------------------------------------------
    def listing(self) -> str:
        """A readable listing of the program (one micro-op per line)."""
        lines = ["inputs:"]
        for s in self.inputs:
            lines.append(f"  {s.vec}: int{s.bits} x {len(s.channels)} (channels {list(map(int, s.channels))})")
        lines.append("states:")
        for k, s in self.states.items():
            lines.append(f"  {k}: int{s.bits} x {s.n}")
        for section, ops in (("step", self.step), ("final", self.final)):
            lines.append(f"{section}:")
            for op in ops:
                v = self.vectors.get(op.out)
                decl = f"  : int{v.bits} x {v.n}" if v is not None and not isinstance(op, Store) else ""
                lines.append(f"  {op.describe()}{decl}")
        lines.append("outputs: " + ", ".join(f"{o.name} <- {o.vec}" for o in self.outputs))
        return "\n".join(lines)

    # -- serialisation ------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "inputs": [s.to_json() for s in self.inputs],
            "vectors": [v.to_json() for v in self.vectors.values()],
            "states": [s.to_json() for s in self.states.values()],
            "consts": {k: {"dtype": a.dtype.str, "shape": list(a.shape)} for k, a in self.consts.items()},
            "step": [op.to_json() for op in self.step],
            "final": [op.to_json() for op in self.final],
            "outputs": [o.to_json() for o in self.outputs],
            "metadata": self.metadata,
        }

    @classmethod
    def from_json(cls, doc: Mapping, consts: Mapping[str, np.ndarray]) -> "Program":
        try:
            table = doc["consts"]
            for k, info in table.items():
                a = consts.get(k)
                if a is None:
                    raise IRFormatError(f"constant '{k}' is missing")
                if a.dtype.str != info["dtype"] or list(a.shape) != list(info["shape"]):
                    raise IRFormatError(f"constant '{k}' has unexpected dtype/shape")
            vecs = [Vec.from_json(v) for v in doc["vectors"]]
            states = [StateSpec.from_json(s) for s in doc["states"]]
            prog = cls(
                inputs=tuple(InputSpec.from_json(s) for s in doc["inputs"]),
                vectors={v.name: v for v in vecs},
                states={s.key: s for s in states},
                consts={k: consts[k] for k in table},
                step=tuple(op_from_json(o) for o in doc["step"]),
                final=tuple(op_from_json(o) for o in doc["final"]),
                outputs=tuple(OutputSpec.from_json(o) for o in doc["outputs"]),
                metadata=dict(doc.get("metadata", {})),
            )
        except IRFormatError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise IRFormatError(f"malformed integer program ({type(e).__name__}: {e})") from None
        prog.verify()
        return prog

    def equals(self, other: "Program") -> bool:
        """Exact equality (structure, declarations and constant bits)."""
        if json.dumps(self.to_json(), sort_keys=True) != json.dumps(other.to_json(), sort_keys=True):
            return False
        return all(self.consts[k].tobytes() == other.consts[k].tobytes() for k in self.consts)


# ----------------------------------------------------------------------------------------------
# builder


class ProgramBuilder:
    """Incremental construction with automatic worst-case widths.

    ``emit(op, bits=None)`` appends ``op`` and declares its output; when ``bits`` is None the width
    is the smallest holding the op's worst-case range (saturating ops need explicit bits)."""

    def __init__(self):
        self.inputs: list[InputSpec] = []
        self.vectors: dict[str, Vec] = {}
        self.states: dict[str, StateSpec] = {}
        self.consts: dict[str, np.ndarray] = {}
        self.step: list[MicroOp] = []
        self.final: list[MicroOp] = []
        self.outputs: list[OutputSpec] = []
        self.section = "step"
        self._iv: dict[str, Interval] = {}
        self._names: set[str] = set()
        self.metadata: dict = {}

    # names
    def name(self, base: str) -> str:
        base = base.replace(" ", "_")
        nm, i = base, 1
        while nm in self._names:
            nm = f"{base}#{i}"
            i += 1
        self._names.add(nm)
        return nm

    def const(self, base: str, value, dtype=None) -> str:
        a = np.asarray(value)
        if dtype is None:
            lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
            dtype = storage_dtype(bits_for(lo, hi))
        arr = np.ascontiguousarray(a.astype(dtype))
        if not np.array_equal(arr.astype(np.int64), np.asarray(value).astype(np.int64)):
            raise NumericsError(f"constant '{base}' does not fit {np.dtype(dtype).name}")
        arr.setflags(write=False)
        # share identical small constants
        if arr.size <= 4:
            for k, v in self.consts.items():
                if (
                    v.dtype == arr.dtype
                    and v.shape == arr.shape
                    and v.tobytes() == arr.tobytes()
                    and k.startswith("k:")
                ):
                    return k
            base = "k:" + base
        nm = self.name(base)
        self.consts[nm] = arr
        return nm

    def scalar(self, value: int) -> str:
        return self.const(f"{int(value)}", np.asarray([int(value)]))

    def interval(self, name: str) -> Interval:
        if name in self.consts:
            return _const_iv(self.consts[name])
        return self._iv[name]

    def width(self, name: str) -> int:
        if name in self.vectors:
            return self.vectors[name].n
        return int(np.size(self.consts[name]))

    def add_input(self, spec: InputSpec, tag: Optional[str] = None) -> str:
        self.inputs.append(spec)
        self._names.add(spec.vec)
        self.vectors[spec.vec] = Vec(spec.vec, len(spec.channels), spec.bits, spec.scale, tag)
        self._iv[spec.vec] = int_range(spec.bits)
        return spec.vec

    def add_state(self, key: str, shape: Sequence[int], bits: int, scale=None) -> str:
        if key in self.states:
            raise VerificationError(f"state '{key}' declared twice")
        self.states[key] = StateSpec(
            key,
            tuple(int(s) for s in shape),
            int(bits),
            None if scale is None else np.atleast_1d(np.asarray(scale, np.float64)),
        )
        return key

    def emit(self, op: MicroOp, n: int, bits: Optional[int] = None, scale=None, tag: Optional[str] = None) -> str:
        ops = self.step if self.section == "step" else self.final
        if isinstance(op, Store):
            ops.append(op)
            return op.out
        prog = Program((), self.vectors, self.states, self.consts, (), (), ())
        r = prog._op_interval(op, self.interval)
        if bits is None:
            if op.saturating:
                raise VerificationError(f"{op.kind} needs an explicit output width")
            bits = bits_for(*r)
        container_bits(bits)
        lo, hi = int_range(bits)
        self._iv[op.out] = (max(r[0], lo), min(r[1], hi))
        self.vectors[op.out] = Vec(
            op.out, int(n), int(bits), None if scale is None else np.atleast_1d(np.asarray(scale, np.float64)), tag
        )
        ops.append(op)
        return op.out

    def retag(self, vec: str, tag: str, scale=None) -> None:
        v = self.vectors[vec]
        self.vectors[vec] = dataclasses.replace(
            v, tag=tag, scale=v.scale if scale is None else np.atleast_1d(np.asarray(scale, np.float64))
        )

    def build(self) -> Program:
        p = Program(
            tuple(self.inputs),
            dict(self.vectors),
            dict(self.states),
            dict(self.consts),
            tuple(self.step),
            tuple(self.final),
            tuple(self.outputs),
            dict(self.metadata),
        )
        p.verify()
        return p
