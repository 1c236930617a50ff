"""QDQ lowering: a quantized graph as the float ONNX model with QuantizeLinear / DequantizeLinear
pairs at the plan's points, so that onnxruntime (and execution providers that consume QDQ) run
the products in integer kernels.

    qg = edgeseq.quant.quantize(graph, calib_x, "edgeseq")
    model = build_onnx_qdq(qg)                                   # onnx.ModelProto
    art = export_onnx_quantized(qg, "out/gru_qdq", numerics="qdq")

The exact lowering (:mod:`.qlower`, ``numerics="exact"``, the default) reproduces the integer
program bit for bit with many small integer ops per micro-op. This one computes what the float
model computes (the structure of :mod:`.lower` / :mod:`.cells`: input projections over the whole
sequence, only the recurrence inside a ``Scan``), with the quantized graph's *dequantized*
parameters and the plan's rounding at every point, i.e. the fake-quant simulation
(:mod:`edgeseq.quant.fakequant`) as an ONNX graph. It agrees with the integer-exact interpreter
to a few output LSBs (see :data:`TOLERANCE`), not bit for bit.

Structure
=========

- **Weights**: the program's own integer weights (per output channel symmetric int8, int16 where
  the plan says so: LMU / L2MU memory matrices), recovered exactly from the fake-quant parameters,
  as integer initializers + ``DequantizeLinear(axis=1)``, for the matrix in ``Gemm`` (in, out)
  layout. A per-channel input scale (the boundary quantizer, per-channel activation points) is
  absorbed into the weight columns, exactly like the integer program does, and the activation is
  dequantized with scale 1.
- **Products** are 2-D ``Gemm``s without a bias input (biases are a separate ``Add``):
  ``Gemm(DequantizeLinear(int8 a), DequantizeLinear(int8 W))`` is what onnxruntime's QDQ
  transformer (level ``ORT_ENABLE_EXTENDED`` and above; ``ORT_ENABLE_ALL`` is the default) fuses
  into ``QGemm`` (com.microsoft, int8 x int8 -> float). Where the activation is int8 and the
  product sits in a ``Scan`` body (recurrent spikes), the int8 weight and its ``DequantizeLinear``
  are the body's own initializer and node (else onnxruntime does not fuse); where the activation
  is wider (int16 recurrent states, LMU memories: onnxruntime has no int8 x int16 kernel) the
  product runs in float and the weight's ``DequantizeLinear`` sits in the main graph (run once per
  call; inside the body onnxruntime would dequantize the matrix at every step, ~40x slower).
  Sequence-level products reshape the *integer* activation to 2-D before its ``DequantizeLinear``:
  onnxruntime's x86 ``QDQS8ToU8Transformer`` rewrites every int8 Q -> DQ pair to uint8 (zero point
  128), and uint8 x int8 kernels saturate on AVX2 CPUs without VNNI (measured: wrong results); no
  int8 activation of a product here is the output of a ``QuantizeLinear`` its ``DequantizeLinear``
  reads directly, so signed activations fuse as int8 x int8 (exact) with onnxruntime's default
  session options. That kernel is slow on AVX2 without VNNI (measured 3-4x slower than float
  ``Gemm``; fast on VNNI / ARM dot-product CPUs), while uint8 x int8 is faster than float: values
  known to lie in [0, 127] (spikes, ReLU outputs of 8-bit points) are therefore carried as uint8
  with zero point 0, where the pairwise int16 sums of that kernel cannot saturate (|2 * 128 * 127| <
  2^15), and are cast back to the program's int8 storage type at the state boundary.
- **Points**: every plan point of 8 or 16 bits is ``QuantizeLinear`` -> ``DequantizeLinear`` with
  the plan's scale (zero point 0, per-axis where the point is per channel; the gate points of one
  cell share one per-axis pair). ONNX has no 24/32-bit ``QuantizeLinear``: the 24-bit currents of
  spiking neurons (and the LSTM's i*g) are rounded half up to their LSB in float
  (``Floor(x / s + 0.5) * s``) where the integer program rounds them separately before a sum; the
  other wide points fold into the rounding of the point after them. Spikes are 0/1 ``uint8``
  tensors (``Cast`` of the comparison of the *integer* membrane with the integer threshold).
- **States** are the program's integer states (same keys, flat (B, n), storage dtypes): the
  ``Scan`` carries the quantized state (``DequantizeLinear`` at the start of a step,
  ``QuantizeLinear`` at its end); mean / sum readouts keep the program's int32 running sum and
  step count; a causal convolution keeps its int8 input history.
- **Boundaries**: the input is quantized as the program's input quantizers specify (offset
  subtracted in float32, then ``QuantizeLinear``; the program uses float64: inputs within ~1e-7
  of a rounding boundary may land one LSB apart); each output is ``DequantizeLinear`` of its
  integer tensor, which is also an output ``q.<name>``.

Tensors are batch-first and ``batch`` / ``time`` are symbolic, as in the float model; the model is
inline (standard ops only, no ``edgeseq`` functions).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ... import __version__
from ...errors import ConfigError, UnsupportedOpError
from ...ir import ops as O
from ...ir.graph import Node
from ...ir.types import Act, ReadoutMode, Recurrence, ResetRule
from ._emit import Emitter, activation
from .render import KRON_MAX
from .lower import BATCH, INT64_MAX, STATE_IN, STATE_OUT, TIME, ir_version_for, max_opset, state_input_name, \
    state_output_name
from .qlower import INT_OUT, PROBE, output_names

FLOAT, DOUBLE, BOOL = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.BOOL
INT8, INT16, INT32, INT64 = TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64
UINT8 = TensorProto.UINT8
NP = {INT8: np.int8, INT16: np.int16, INT32: np.int32, INT64: np.int64, FLOAT: np.float32, DOUBLE: np.float64,
      BOOL: np.bool_, UINT8: np.uint8}
MIN_OPSET = 21  # int16 QuantizeLinear / DequantizeLinear
Q15 = 15

#: what the QDQ model keeps against the integer-exact interpreter, stated per model family (and
#: written into every QDQ artifact's manifest). ``lsb``: max |q_qdq - q_exact| of the integer
#: outputs, in output LSBs. Measured on every zoo model (tests/unit/zoo_cases.py), T in {1, 40, 50,
#: 200}, B in {1, 3, 48, 64}, normal and 12x overdriven inputs: recurrent <= 4, memory <= 5 except an
#: LMU whose hidden state and memory feed back into its memory input (lmu_full: up to 293 at T = 200,
#: one-LSB step differences grow through the feedback), spiking <= 1 with identical spike trains.
TOLERANCE = {
    "reference": "edgeseq.quant.intexact.run (the integer-exact interpreter)",
    "lsb": {"recurrent": 16, "memory": 512, "spiking": 16, "feedforward": 16},
    "decision_agreement": 0.995,
    "spike_agreement": 0.999,
    "notes": "float32 arithmetic between the points, float activation functions instead of the program's "
             "tables, round-half-to-even QuantizeLinear instead of the program's round-half-up requantization; "
             "spikes compare the integer membrane with the integer threshold, as the program does. A spiking "
             "output moves by a whole spike when a neuron crosses its threshold one step earlier or later "
             "(a mean readout of spikes: 2^14 / T LSB): not seen on the zoo models.",
}


def family_of(graph) -> str:
    kinds = {n.op.kind for n in graph.nodes}
    if kinds & {"LIF", "CuBaLIF", "L2MU"}:
        return "spiking"
    if "LMU" in kinds:
        return "memory"
    if kinds & {"RNN", "GRU", "LSTM", "MinGRU", "MinLSTM"}:
        return "recurrent"
    return "feedforward"


def storage(bits: int) -> int:
    if bits <= 8:
        return INT8
    if bits <= 16:
        return INT16
    if bits <= 32:
        return INT32
    return INT64


def qrange(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def f32(a) -> np.ndarray:
    return np.array(a, dtype=np.float32, order="C")


# ----------------------------------------------------------------------------------------------
# weights


def int_weights(wabs: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Per output row: integers ``wq`` (|wq| <= 2^(bits-1)-1) and a scale with ``wq * scale == wabs``.

    ``wabs`` is a weight matrix in the units of its (scale-absorbed) integer input, the form the
    integer program quantized per row; the fake-quant parameters times the input scale give it
    back up to float64 rounding, so an exact integer form exists and is found (the row maximum
    maps to the largest multiple that keeps every entry integral). Returns (wq, scale, exact);
    ``exact`` is False only if some row has no such form (then it is requantized to the nearest)."""
    w = np.asarray(wabs, np.float64)
    rows, cols = w.shape
    qm = (1 << (bits - 1)) - 1
    amax = np.abs(w).max(axis=1) if cols else np.zeros(rows)
    wq = np.zeros((rows, cols), np.int64)
    scale = np.ones(rows)
    exact = True

    def try_m(r: int, ms: np.ndarray):
        t = w[r][None, :] * (ms[:, None] / amax[r])
        ok = np.all(np.abs(t - np.rint(t)) <= 1e-6, axis=1)
        return int(ms[np.argmax(ok)]) if ok.any() else None

    for r in range(rows):
        if amax[r] == 0:
            continue
        m = try_m(r, np.array([qm]))
        if m is None:
            for lo in range(qm - 1, 0, -4096):
                m = try_m(r, np.arange(lo, max(lo - 4096, 0), -1))
                if m is not None:
                    break
        if m is None:
            m, exact = qm, False
        scale[r] = amax[r] / m
        wq[r] = np.clip(np.rint(w[r] / scale[r]), -qm, qm)
    return wq, scale, exact


# ----------------------------------------------------------------------------------------------
# scopes


class _Emitter(Emitter):
    """An :class:`Emitter` whose generated names never repeat (hints may end in '_<k>' themselves)."""

    def __init__(self, prefix: str):
        super().__init__(prefix=prefix, initializers=True)
        self._used: set[str] = set()

    def fresh(self, hint: str) -> str:
        base = f"{self.prefix}{hint}"
        k = self._count.get(base, 0)
        while True:
            name = base if k == 0 else f"{base}_{k}"
            k += 1
            if name not in self._used:
                break
        self._count[base] = k
        self._used.add(name)
        return name


class Scope:
    """One ONNX graph being built (the main graph or a Scan body): nodes, initializers, the
    element type of every tensor it creates, cached dequantizations."""

    def __init__(self, prefix: str, lw: "QdqLowering", body: bool):
        self.e = _Emitter(prefix)
        self.lw, self.body = lw, body
        self.types: dict[str, int] = {}
        self._dq: dict[tuple, str] = {}

    def op(self, op_type: str, *inputs, out_type: Optional[int] = None, **kw):
        out = self.e.op(op_type, *inputs, **kw)
        if out_type is not None:
            for o in ([out] if isinstance(out, str) else out):
                self.types[o] = out_type
        return out

    def const(self, value, hint: str = "c", dtype=np.float32) -> str:
        return self.e.const(value, hint, dtype)

    def ints(self, values, hint: str = "i") -> str:
        return self.e.ints(values, hint)

    def type_of(self, name: str) -> int:
        if name in self.types:
            return self.types[name]
        if self.body:
            return self.lw.main.type_of(name)
        return FLOAT

    # -- quantize / dequantize ------------------------------------------------------------------
    def _scale(self, scale, hint: str):
        s = np.asarray(scale, np.float64).ravel()
        if s.size and np.all(s == s[0]):
            return self.const(np.float32(s[0]), hint), False, 1
        return self.const(f32(s), hint), True, s.size

    def quant(self, f: str, scale, bits: int, hint: str = "q", unsigned: bool = False) -> str:
        """QuantizeLinear to ``bits`` (8 or 16 storage; narrower widths clipped) with zero point 0;
        ``unsigned``: uint8 for a value known to lie in [0, 2^(bits-1) - 1] (see the module docstring)."""
        elem = UINT8 if unsigned and bits <= 8 else storage(bits)
        if elem not in (INT8, INT16, UINT8):
            raise UnsupportedOpError(f"a {bits}-bit quantization point has no QuantizeLinear type")
        sc, per_axis, n = self._scale(scale, "qs")
        zp = self.const(np.zeros(n if per_axis else (), NP[elem]), "zp" + ("v" if per_axis else ""), dtype=NP[elem])
        q = self.op("QuantizeLinear", f, sc, zp, out_type=elem, hint=hint, **({"axis": -1} if per_axis else {}))
        if bits not in (8, 16) and elem != UINT8:
            lo, hi = qrange(bits)
            q = self.op("Clip", q, self.const(np.array(lo, NP[elem]), f"lo{bits}", NP[elem]),
                        self.const(np.array(hi, NP[elem]), f"hi{bits}", NP[elem]), out_type=elem, hint=hint)
        self.lw.count_point(bits, self.body)
        return q

    def deq(self, q: str, scale, hint: str = "dq") -> str:
        s = np.asarray(scale, np.float64).ravel()
        if s.size > 1 and np.all(s == s[0]):
            s = s[:1]
        key = (q, s.tobytes())
        if key in self._dq:
            return self._dq[key]
        elem = self.type_of(q)
        sc, per_axis, n = self._scale(s, "ds")
        zp = self.const(np.zeros(n if per_axis else (), NP[elem]), "zp" + ("v" if per_axis else ""), dtype=NP[elem])
        f = self.op("DequantizeLinear", q, sc, zp, out_type=FLOAT, hint=hint, **({"axis": -1} if per_axis else {}))
        self._dq[key] = f
        return f

    def qdq(self, f: str, scale, bits: int, hint: str = "p") -> tuple[str, str]:
        q = self.quant(f, scale, bits, hint)
        return q, self.deq(q, scale, hint + "_f")

    def round_up(self, f: str, scale, hint: str = "r") -> str:
        """Round half up to a multiple of ``scale`` in float (a point wider than 16 bits)."""
        s = np.asarray(scale, np.float64).ravel()
        inv = self.const(f32(1.0 / s) if s.size > 1 and not np.all(s == s[0]) else np.float32(1.0 / s[0]), "inv")
        sc = self.const(f32(s) if s.size > 1 and not np.all(s == s[0]) else np.float32(s[0]), "rs")
        t = self.op("Floor", self.op("Add", self.op("Mul", f, inv), self.const(np.float32(0.5), "half")), hint=hint)
        self.lw.count_point(24, self.body)
        return self.op("Mul", t, sc, out_type=FLOAT, hint=hint)


@dataclass
class Part:
    """Channels ``idx`` of a value as the integer tensor ``q`` (real = q * scale (+ offset))."""

    q: str
    idx: np.ndarray
    bits: int
    scale: np.ndarray
    offset: Optional[np.ndarray] = None


@dataclass
class Val:
    """A value of the main graph: (B, T, n) when temporal, else (B, n); integer parts and the
    float (real-valued) tensor, made on demand."""

    n: int
    parts: list
    temporal: bool
    f: Optional[str] = None

    @property
    def single(self) -> Part:
        return self.parts[0]


# ----------------------------------------------------------------------------------------------
# the lowering


class QdqLowering:
    def __init__(self, q, streaming: bool, opset: int, probes: Sequence[str] = ()):
        self.q = q
        self.g = q.graph
        self.plan = q.plan
        self.cfg = q.plan.config
        self.prog = q.program
        self.fk = q.fake_params
        self.streaming, self.opset = streaming, opset
        self.main = Scope("/", self, body=False)
        self.vals: dict[str, Val] = {}
        self.x = self.g.inputs[0].name
        self.produced_states: set[str] = set()
        self.state_final: dict[str, str] = {}
        self.products: list[dict] = []
        self.points: Counter = Counter()
        self.inexact_weights: list[str] = []
        self.probes = list(probes)
        self.probe_vals: dict[str, tuple[str, int]] = {}
        self._bodies = 0
        self._shape_cache: dict[tuple, str] = {}
        self.node = ""

    # -- bookkeeping ----------------------------------------------------------------------------
    def count_point(self, bits: int, body: bool) -> None:
        self.points[f"{'scan' if body else 'sequence'}:{'int' + str(bits) if bits <= 16 else 'round'}"] += 1

    def entry(self, name: str):
        return self.plan[name]

    def wbits(self, name: str, default: int) -> int:
        o = self.cfg.override(name)
        return o.bits if o.bits is not None else default

    def fake(self, node: Node) -> dict:
        return self.fk[node.name]

    def probe(self, name: str, q_seq_tm: str, elem: int) -> None:
        """Register a time-major integer sequence (T, B, n) as the probe ``name``."""
        if name in self.probes:
            self.probe_vals[name] = (q_seq_tm, elem)

    # -- shapes -----------------------------------------------------------------------------------
    def dims(self, which: str) -> str:
        key = ("dim", which)
        if key not in self._shape_cache:
            start = {"B": 0, "T": 1}[which]
            self._shape_cache[key] = self.main.op("Shape", self.x, start=start, end=start + 1, hint=which,
                                                  out_type=INT64)
        return self._shape_cache[key]

    def shape3(self, time_major: bool, n: int) -> str:
        key = ("s3", time_major, n)
        if key not in self._shape_cache:
            a, b = (self.dims("T"), self.dims("B")) if time_major else (self.dims("B"), self.dims("T"))
            self._shape_cache[key] = self.main.op("Concat", a, b, self.main.ints([n], "n"), axis=0, hint="shape3",
                                                  out_type=INT64)
        return self._shape_cache[key]

    def shape2(self, n: int) -> str:
        key = ("s2", n)
        if key not in self._shape_cache:
            self._shape_cache[key] = self.main.op("Concat", self.dims("B"), self.main.ints([n], "n"), axis=0,
                                                  hint="shape2", out_type=INT64)
        return self._shape_cache[key]

    # -- states -----------------------------------------------------------------------------------
    def state_init(self, key: str) -> str:
        """Main-graph tensor holding the state ``key`` at the start of the chunk (B, n)."""
        s = self.prog.states[key]
        elem = storage(s.bits)
        if self.streaming:
            name = state_input_name(key)
            self.main.types[name] = elem
            return name
        ckey = ("zeros", s.n, elem)
        if ckey not in self._shape_cache:
            self._shape_cache[ckey] = self.main.op(
                "ConstantOfShape", self.shape2(s.n), hint="zeros", out_type=elem,
                value=numpy_helper.from_array(np.zeros(1, NP[elem])))
        return self._shape_cache[ckey]

    def state_out(self, key: str) -> str:
        self.produced_states.add(key)
        if self.streaming:
            return state_output_name(key)
        return self.main.e.fresh(f"{key}.final")

    # -- values -------------------------------------------------------------------------------------
    def float_of(self, v: Val) -> str:
        """The real-valued float tensor of a main-graph value."""
        if v.f is None:
            if len(v.parts) == 1 and v.single.offset is None and np.array_equal(v.single.idx, np.arange(v.n)):
                v.f = self.main.deq(v.single.q, v.single.scale)
            else:
                fs, order = [], []
                for p in v.parts:
                    f = self.main.deq(p.q, p.scale)
                    if p.offset is not None:
                        f = self.main.op("Add", f, self.main.const(f32(p.offset), "offset"))
                    fs.append(f)
                    order.append(p.idx)
                order = np.concatenate(order)
                cat = fs[0] if len(fs) == 1 else self.main.op("Concat", *fs, axis=-1, hint="cat")
                if not np.array_equal(order, np.arange(v.n)):
                    cat = self.main.op("Gather", cat, self.main.ints(np.argsort(order), "perm"), axis=-1, hint="perm")
                v.f = cat
        return v.f

    def single_q(self, v: Val) -> tuple[str, int, np.ndarray]:
        """(integer tensor with every channel in order, bits, per-channel scale) of a value: the
        program's ``single`` (parts concatenated in a common type, then permuted)."""
        if len(v.parts) == 1 and np.array_equal(v.single.idx, np.arange(v.n)) and v.single.offset is None:
            p = v.single
            return p.q, p.bits, p.scale
        if any(p.offset is not None for p in v.parts):
            raise UnsupportedOpError("a value with an input offset cannot be merged", where=f"node '{self.node}'")
        bits = max(p.bits for p in v.parts)
        elem = storage(bits)
        qs = [p.q if self.main.type_of(p.q) == elem else self.main.op("Cast", p.q, to=elem, out_type=elem)
              for p in v.parts]
        order = np.concatenate([p.idx for p in v.parts])
        scale = np.concatenate([p.scale for p in v.parts])
        cat = self.main.op("Concat", *qs, axis=-1, out_type=elem, hint="qcat")
        if not np.array_equal(order, np.arange(v.n)):
            inv = np.argsort(order)
            cat = self.main.op("Gather", cat, self.main.ints(inv, "perm"), axis=-1, out_type=elem, hint="qperm")
            scale = scale[inv]
        return cat, bits, scale

    def quantize_value(self, f: str, name: str, temporal: bool) -> Val:
        """Quantize the main-graph float tensor ``f`` at the plan point ``name``."""
        e = self.entry(name)
        n = e.n
        if e.split:
            hi = np.asarray(e.split, np.int64)
            lo = np.setdiff1d(np.arange(n), hi)
            parts = []
            for idx, bits in ((lo, e.bits), (hi, e.split_bits)):
                g = self.main.op("Gather", f, self.main.ints(idx, "split"), axis=-1, hint="split")
                parts.append(Part(self.main.quant(g, e.scale[idx], bits, name), idx, bits, e.scale[idx].copy()))
            return Val(n, parts, temporal, f=None)
        q = self.main.quant(f, e.scale, e.bits, hint=name)
        return Val(n, [Part(q, np.arange(n), e.bits, e.scale.copy())], temporal)

    def seq_int(self, q_tm: str, n: int, bits: int, scale) -> Val:
        """A time-major integer Scan output (T, B, n) as a batch-first main-graph value."""
        elem = self.main.type_of(q_tm)
        qb = self.main.op("Transpose", q_tm, perm=[1, 0, 2], out_type=elem, hint="bm")
        return Val(n, [Part(qb, np.arange(n), bits, np.broadcast_to(np.asarray(scale, np.float64), (n,)).copy())], True)

    # -- products ------------------------------------------------------------------------------------
    def weight(self, sc: Scope, wq: np.ndarray, scale: np.ndarray, bits: int, act_bits: int, hint: str) -> str:
        """Float (out, in) weight for ``Gemm(a, w, transB=1)``: integer initializer +
        DequantizeLinear(axis=0), in the scope of the product when onnxruntime can fuse it (int8 x
        int8), else in the main graph (dequantized once per run).

        (out, in) with ``transB`` rather than (in, out): onnxruntime >= 1.2x rewrites
        ``MatMul``/``Gemm`` of a float activation and a ``DequantizeLinear(axis=1)`` int8 weight
        into ``MatMulNBits``, which by default (accuracy level 4) quantizes the activation to int8 on
        the fly (measured: 25 output LSBs of error behind an int16 readout); this form is left alone
        and int8 activations still fuse into ``QGemm``."""
        fused = act_bits <= 8 and bits <= 8
        home = sc if fused else self.main
        elem = storage(bits)
        w = home.const(np.ascontiguousarray(wq).astype(NP[elem]), hint, dtype=NP[elem])
        home.types[w] = elem
        s = home.const(f32(scale), hint + ".scale")
        zp = home.const(np.zeros(scale.size, NP[elem]), hint + ".zp", dtype=NP[elem])
        return home.op("DequantizeLinear", w, s, zp, axis=0, out_type=FLOAT, hint=hint + ".f")

    def gemm(self, sc: Scope, q2: str, p: Part, wd: np.ndarray, wbits: int, hint: str,
             c: Optional[str] = None) -> tuple[str, np.ndarray]:
        """Gemm(DequantizeLinear(q2), W) (+ c) for the part ``p`` of an input (q2 is its 2-D integer
        tensor) and the fake-quant weight columns ``wd`` (out, len(p.idx)); returns (float (M, out),
        the bias correction for the part's offset). The float addend ``c`` is the Gemm's C input for
        a float product (one op fewer per step) and a separate Add after a fusable one (QGemm takes
        only an int32 bias at the product's scale)."""
        wd = np.asarray(wd, np.float64)
        s = np.asarray(p.scale, np.float64)
        uniform = bool(np.all(s == s[0]))
        wabs = wd * s[None, :]
        wq, ws, exact = int_weights(wabs, wbits)
        if not exact:
            self.inexact_weights.append(f"{self.node}:{hint}")
        if uniform:
            a = sc.deq(q2, s[0])
            wscale = ws / s[0]
        else:
            a = sc.deq(q2, 1.0)
            wscale = ws
        w = self.weight(sc, wq, wscale, wbits, p.bits, f"{self.node}/{hint}")
        fused = p.bits <= 8 and wbits <= 8
        if c is not None and not fused:
            y = sc.op("Gemm", a, w, c, transB=1, out_type=FLOAT, hint=hint)
        else:
            y = sc.op("Gemm", a, w, transB=1, out_type=FLOAT, hint=hint)
            if c is not None:
                y = sc.op("Add", y, c, out_type=FLOAT, hint=hint)
        self.products.append({"node": self.node, "where": "scan" if sc.body else "sequence", "act_bits": int(p.bits),
                              "weight_bits": int(wbits), "integer_kernel": fused,
                              "shape": [int(wd.shape[1]), int(wd.shape[0])]})
        extra = wd @ p.offset if p.offset is not None else np.zeros(wd.shape[0])
        return y, extra

    def project(self, v: Val, wd: np.ndarray, bias, wbits: int, hint: str, time_major: bool = False) -> str:
        """sum over the parts of v of part @ W^T, plus bias: a main-graph float tensor (B, T, out)
        ((T, B, out) with ``time_major``) or (B, out) for a pooled value."""
        wd = np.asarray(wd, np.float64)
        out = wd.shape[0]
        b = np.zeros(out) if bias is None else np.broadcast_to(np.asarray(bias, np.float64), (out,)).copy()
        has_bias = bias is not None
        y = None
        for p in v.parts:  # an input offset folds into the bias (as in the integer program)
            if p.offset is not None:
                b, has_bias = b + wd[:, p.idx] @ p.offset, True
        y = self.main.const(f32(b), f"{self.node}/{hint}.b") if has_bias and np.any(b != 0) else None
        for p in v.parts:  # one Gemm per part, each adding the sum so far (the bias first)
            q = p.q
            elem = self.main.type_of(q)
            if v.temporal and time_major:
                q = self.main.op("Transpose", q, perm=[1, 0, 2], out_type=elem, hint="tm")
            q2 = self.main.op("Reshape", q, self.main.ints([-1, p.idx.size], "flat"), out_type=elem, hint="q2d")
            y, _ = self.gemm(self.main, q2, Part(q2, p.idx, p.bits, p.scale), wd[:, p.idx], wbits, hint, y)
        if v.temporal:
            y = self.main.op("Reshape", y, self.shape3(time_major, out), hint=hint)
        return y

    def body_gemm(self, sc: Scope, q: str, bits: int, scale, wd, wbits: int, hint: str,
                  c: Optional[str] = None) -> str:
        """``q @ W^T (+ c)`` for a 2-D integer tensor of one scale (inside a Scan body, mostly)."""
        n = np.asarray(wd).shape[1]
        p = Part(q, np.arange(n), bits, np.broadcast_to(np.asarray(scale, np.float64), (n,)).copy())
        y, _ = self.gemm(sc, q, p, wd, wbits, hint, c)
        return y

    # -- scans ----------------------------------------------------------------------------------------
    def scan(self, states: Sequence[tuple], seqs: Sequence[str], body: Callable, n_outs: int,
             hint: str) -> tuple[dict, list[str]]:
        """A Scan over the time-major ``seqs``. ``states``: (key, initial main-graph tensor[, carrier
        type]) (a state carried in another type than its storage type, e.g. spikes as uint8, is cast
        on the way in and out); ``body(sc, state_ins: dict key -> name, step_ins) -> (dict key -> new
        state, [(output, elem), ...])``. Returns ({key: final state name}, [time-major outputs])."""
        carried = []
        for st in states:
            k, init = st[0], st[1]
            orig = self.main.type_of(init)
            if len(st) > 2 and st[2] is not None and st[2] != orig:
                init = self.main.op("Cast", init, to=st[2], out_type=st[2], hint="carry")
            carried.append((k, init, orig))
        states = [(k, init) for k, init, _ in carried]
        self._bodies += 1
        sc = Scope(f"s{self._bodies}.", self, body=True)
        s_in = {}
        for k, init in states:
            nm = sc.e.fresh("state." + k.split("/")[-1])
            sc.types[nm] = self.main.type_of(init)
            s_in[k] = nm
        x_in = []
        for s in seqs:
            nm = sc.e.fresh("step")
            sc.types[nm] = self.main.type_of(s)
            x_in.append(nm)
        new, outs = body(sc, s_in, x_in)
        if len(outs) != n_outs:  # pragma: no cover - internal consistency
            raise RuntimeError("scan body outputs")
        out_names: list[str] = []
        out_types: list[int] = []
        for k, _ in states:
            v = new[k]
            if v in out_names or v in s_in.values() or v in x_in or v not in sc.types:  # not made in the body
                v = sc.op("Identity", v, out_type=sc.type_of(v), hint="out")
            out_names.append(v)
            out_types.append(sc.types[s_in[k]])
        for v, elem in outs:
            if v in out_names or v in s_in.values() or v in x_in:
                v = sc.op("Identity", v, out_type=elem, hint="out")
            out_names.append(v)
            out_types.append(elem)
        g = helper.make_graph(
            sc.e.nodes, f"{hint}_step",
            [helper.make_tensor_value_info(s_in[k], sc.types[s_in[k]], None) for k, _ in states]
            + [helper.make_tensor_value_info(n, sc.types[n], None) for n in x_in],
            [helper.make_tensor_value_info(n, t, None) for n, t in zip(out_names, out_types)],
            initializer=sc.e.initializers)
        finals, casts = [], []
        for k, init, orig in carried:
            fin = self.state_out(k)
            self.state_final[k] = fin
            self.main.types[fin] = orig
            if self.main.type_of(init) != orig:
                tmp = self.main.e.fresh(f"{k}.carried")
                self.main.types[tmp] = self.main.type_of(init)
                finals.append(tmp)
                casts.append((tmp, fin, orig))
            else:
                finals.append(fin)
        seq_outs = [self.main.e.fresh(f"{hint}.seq") for _ in outs]
        for s, (_, elem) in zip(seq_outs, outs):
            self.main.types[s] = elem
        self.main.op("Scan", *[i for _, i in states], *seqs, outputs=finals + seq_outs, num_scan_inputs=len(seqs),
                     body=g, hint=hint, node_name=self.main.e.fresh(f"{hint}/scan"))
        for tmp, fin, orig in casts:
            self.main.op("Cast", tmp, to=orig, outputs=[fin])
        return {k: self.state_final[k] for k, _, _ in carried}, seq_outs

    def time_major(self, f: str) -> str:
        return self.main.op("Transpose", f, perm=[1, 0, 2], hint="tm")

    # -- driver ---------------------------------------------------------------------------------------
    def run(self) -> onnx.ModelProto:
        g = self.g
        self.lower_input()
        for node in g.nodes:
            self.node = node.name
            fn = LOWER.get(node.op.kind)
            if fn is None:
                raise UnsupportedOpError(
                    f"op kind '{node.op.kind}' is not supported by the onnx QDQ lowering",
                    where=f"node '{node.name}' ({node.op.kind}), target onnx (numerics qdq)",
                    hint=f"the QDQ lowering handles: {', '.join(sorted(LOWER))}; "
                         "numerics='exact' lowers the integer program instead")
            try:
                fn(self, node, node.op)
            except UnsupportedOpError as err:
                if err.where is None:
                    err.where = f"node '{node.name}' ({node.op.kind}), target onnx (numerics qdq)"
                raise
        if set(self.prog.states) != self.produced_states:  # pragma: no cover - internal consistency
            raise RuntimeError(f"QDQ state mismatch: {sorted(set(self.prog.states) ^ self.produced_states)}")
        return self.finish()

    def lower_input(self) -> None:
        """The program's input quantizers (offset in float32, QuantizeLinear)."""
        x = self.x
        parts_by_vec: dict[str, list] = {}
        for spec in self.prog.inputs:
            ch = np.asarray(spec.channels, np.int64)
            f = x
            if not np.array_equal(ch, np.arange(self.g.in_features)):
                f = self.main.op("Gather", x, self.main.ints(ch, "ch"), axis=-1, hint="in")
            off = np.asarray(spec.offset, np.float64)
            if np.any(off != 0):
                f = self.main.op("Sub", f, self.main.const(f32(off), "in_offset"), hint="in")
            inv = np.asarray(spec.inv_scale, np.float64)
            if np.all(inv == inv[0]):
                qin = self.main.quant(f, 1.0 / inv[0], spec.bits, hint=spec.vec)
            else:
                # per-channel scales: q is carried with them, consumers absorb them into their weights
                qin = self.main.quant(self.main.op("Mul", f, self.main.const(f32(inv), "in_inv"), hint="in"), 1.0,
                                      spec.bits, hint=spec.vec)
            scale = np.asarray(spec.scale, np.float64)
            base = spec.vec.rsplit(".", 1)[0] if spec.vec.endswith((".lo", ".hi")) else spec.vec
            offset = off if np.any(off != 0) and base == x else None
            part = Part(qin, ch, spec.bits, scale.copy(), offset)
            parts_by_vec.setdefault(base, []).append(part)
        for name, parts in parts_by_vec.items():
            n = sum(p.idx.size for p in parts)
            self.vals[name] = Val(n, parts, True)

    def finish(self) -> onnx.ModelProto:
        g, p, m = self.g, self.prog, self.main
        spec = p.states
        inputs = [helper.make_tensor_value_info(self.x, FLOAT, [BATCH, TIME, g.in_features])]
        if self.streaming:
            inputs += [helper.make_tensor_value_info(state_input_name(k), storage(s.bits), [BATCH, s.n])
                       for k, s in spec.items()]
        names = output_names(p, self.x)
        outputs, int_outputs = [], []
        for o, name in zip(p.outputs, names):
            v = self.vals[o.name]
            q, bits, scale = self.single_q(v)
            want = storage(p.vectors[o.vec].bits)
            if m.type_of(q) != want:
                q = m.op("Cast", q, to=want, out_type=want)
            dims = [BATCH, TIME, v.n] if v.temporal else [BATCH, v.n]
            m.op("Identity", q, outputs=[INT_OUT + name])
            sc, per_axis, n = m._scale(np.asarray(o.scale, np.float64), "out_scale")
            zp = m.const(np.zeros(n if per_axis else (), NP[want]), "out_zp", dtype=NP[want])
            m.op("DequantizeLinear", q, sc, zp, outputs=[name], **({"axis": -1} if per_axis else {}))
            outputs.append(helper.make_tensor_value_info(name, FLOAT, dims))
            int_outputs.append(helper.make_tensor_value_info(INT_OUT + name, want, dims))
        outs = outputs + int_outputs
        if self.streaming:
            for k, s in spec.items():
                if self.state_final[k] != state_output_name(k):
                    m.op("Identity", self.state_final[k], outputs=[state_output_name(k)])
                outs.append(helper.make_tensor_value_info(state_output_name(k), storage(s.bits), [BATCH, s.n]))
        for name in self.probes:
            if name not in self.probe_vals:
                raise ConfigError(f"probe '{name}' is not a spike population of this model",
                                  hint=f"available: {', '.join(spike_probes(self.q)) or 'none'}")
            q_tm, elem = self.probe_vals[name]
            m.op("Transpose", q_tm, perm=[1, 0, 2], outputs=[PROBE + name])
            outs.append(helper.make_tensor_value_info(PROBE + name, elem, [BATCH, TIME, None]))
        graph = helper.make_graph(m.e.nodes, f"edgeseq_qdq_{str(g.metadata.get('source', 'graph')).split('.')[-1]}",
                                  inputs, outs, initializer=m.e.initializers,
                                  doc_string="edgeseq quantized graph (QDQ): " + repr(g))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  ir_version=ir_version_for(self.opset), producer_name="edgeseq",
                                  producer_version=__version__)
        helper.set_model_props(model, {
            "edgeseq.numerics": "qdq", "edgeseq.streaming": str(bool(self.streaming)).lower(),
            "edgeseq.state_input_prefix": STATE_IN, "edgeseq.state_output_prefix": STATE_OUT,
            "edgeseq.integer_output_prefix": INT_OUT, "edgeseq.quant_config": self.cfg.name,
        })
        return model


# ----------------------------------------------------------------------------------------------
# per-op lowerings

LOWER: dict[str, Callable[[QdqLowering, Node, O.Op], None]] = {}


def _lower(*kinds):
    def deco(fn):
        for k in kinds:
            LOWER[k] = fn
        return fn

    return deco


def _bias(fk: dict, key: str, n: int) -> np.ndarray:
    return np.asarray(fk.get(key, np.zeros(n)), np.float64)


@_lower("Linear")
def _linear(lw: QdqLowering, node: Node, op: O.Linear):
    fk = lw.fake(node)
    v = lw.vals[node.inputs[0]]
    wb = lw.wbits(f"{node.name}.weight", lw.cfg.weight_bits)
    y = lw.project(v, fk["weight"], _bias(fk, "bias", op.weight.shape[0]), wb, "y")
    lw.vals[node.outputs[0]] = lw.quantize_value(y, node.outputs[0], v.temporal)


@_lower("Conv1d")
def _conv1d(lw: QdqLowering, node: Node, op: O.Conv1d):
    m = lw.main
    fk = lw.fake(node)
    v = lw.vals[node.inputs[0]]
    q, bits, scale = lw.single_q(v)
    elem = m.type_of(q)
    C = op.in_features
    w = np.asarray(fk["weight"], np.float64)
    out_ch, cg, K = w.shape
    hist = op.history
    groups = op.groups
    taps = [k * op.dilation for k in range(K)]
    wf = np.zeros((out_ch, K * C))  # columns: tap k, channel c
    for o in range(out_ch):
        gi = o // (out_ch // groups)
        for k in range(K):
            wf[o, k * C + gi * cg: k * C + (gi + 1) * cg] = w[o, :, k]
    if hist:
        key = f"{node.name}/buf"
        init = lw.state_init(key)
        selem = m.type_of(init)  # the program's storage type (int8); q may be carried as uint8 (spikes, relu)
        buf = m.op("Reshape", init, m.ints([0, hist, C], "buf_shape"), out_type=selem, hint="buf")
        if selem != elem:
            buf = m.op("Cast", buf, to=elem, out_type=elem, hint="buf")
        window = m.op("Concat", buf, q, axis=1, out_type=elem, hint="window")
        fin = lw.state_out(key)
        tail = m.op("Slice", window, m.ints([-hist]), m.ints([INT64_MAX]), m.ints([1]), out_type=elem, hint="tail")
        if selem != elem:
            tail = m.op("Cast", tail, to=selem, out_type=selem, hint="tail")
        m.op("Reshape", tail, m.ints([0, hist * C], "flat_buf"), outputs=[fin])
        m.types[fin] = selem
        lw.state_final[key] = fin
        cols = []
        for pos in taps:
            end = pos - hist if pos < hist else INT64_MAX
            cols.append(m.op("Slice", window, m.ints([pos]), m.ints([end]), m.ints([1]), out_type=elem, hint="tap"))
        col = cols[0] if len(cols) == 1 else m.op("Concat", *cols, axis=-1, out_type=elem, hint="im2col")
    else:
        col = q
    vin = Val(K * C, [Part(col, np.arange(K * C), bits, np.tile(scale, K))], True)
    wb = lw.wbits(f"{node.name}.weight", lw.cfg.weight_bits)
    y = lw.project(vin, wf, _bias(fk, "bias", out_ch), wb, "y")
    lw.vals[node.outputs[0]] = lw.quantize_value(y, node.outputs[0], True)


@_lower("LayerNorm")
def _layernorm(lw: QdqLowering, node: Node, op: O.LayerNorm):
    fk = lw.fake(node)
    v = lw.vals[node.inputs[0]]
    n = v.n
    w = np.asarray(fk.get("weight", np.ones(n)), np.float64)
    b = np.asarray(fk.get("bias", np.zeros(n)), np.float64)
    y = lw.main.op("LayerNormalization", lw.float_of(v), lw.main.const(f32(w), "ln_w"), lw.main.const(f32(b), "ln_b"),
                   axis=-1, epsilon=float(op.eps), hint="ln")
    lw.vals[node.outputs[0]] = lw.quantize_value(y, node.outputs[0], v.temporal)


@_lower("BatchNorm")
def _batchnorm(lw: QdqLowering, node: Node, op: O.BatchNorm):
    if node.outputs[0] in lw.vals:  # merged into the input quantizer
        return
    fk = lw.fake(node)
    v = lw.vals[node.inputs[0]]
    n = v.n
    a = np.asarray(fk.get("weight", np.ones(n)), np.float64) / np.sqrt(np.asarray(fk["var"], np.float64) + op.eps)
    c = np.asarray(fk.get("bias", np.zeros(n)), np.float64) - np.asarray(fk["mean"], np.float64) * a
    m = lw.main
    y = m.op("Add", m.op("Mul", lw.float_of(v), m.const(f32(a), "bn_a")), m.const(f32(c), "bn_c"), hint="bn")
    lw.vals[node.outputs[0]] = lw.quantize_value(y, node.outputs[0], v.temporal)


@_lower("Activation")
def _activation(lw: QdqLowering, node: Node, op: O.Activation):
    v = lw.vals[node.inputs[0]]
    m = lw.main
    if op.fn is Act.IDENTITY:
        lw.vals[node.outputs[0]] = v
        return
    if op.fn in (Act.RELU, Act.HARDTANH):  # the program clamps each part in place (same scales)
        parts = []
        for p in v.parts:
            if p.offset is not None:
                raise UnsupportedOpError("activation of an offset input")
            f = m.deq(p.q, p.scale)
            y = m.op("Relu", f) if op.fn is Act.RELU else \
                m.op("Clip", f, m.const(np.float32(op.lo), "lo"), m.const(np.float32(op.hi), "hi"))
            # a ReLU of an 8-bit value lies in [0, 127]: carried as uint8 (exact and fast u8 x s8 kernels)
            unsigned = p.bits <= 8 and (op.fn is Act.RELU or op.lo >= 0)
            parts.append(Part(m.quant(y, p.scale, p.bits, node.outputs[0], unsigned=unsigned), p.idx, p.bits,
                              p.scale))
        lw.vals[node.outputs[0]] = Val(v.n, parts, v.temporal)
        return
    y = activation(m.e, op.fn, lw.float_of(v), op.slope, op.lo, op.hi)
    lw.vals[node.outputs[0]] = lw.quantize_value(y, node.outputs[0], v.temporal)


@_lower("Add")
def _add(lw: QdqLowering, node: Node, op: O.Add):
    a, b = (lw.vals[i] for i in node.inputs)
    y = lw.main.op("Add", lw.float_of(a), lw.float_of(b), hint="add")
    lw.vals[node.outputs[0]] = lw.quantize_value(y, node.outputs[0], a.temporal)


@_lower("Concat")
def _concat(lw: QdqLowering, node: Node, op: O.Concat):
    parts, off, temporal = [], 0, True
    for i in node.inputs:
        v = lw.vals[i]
        temporal = v.temporal
        parts += [Part(p.q, p.idx + off, p.bits, p.scale, p.offset) for p in v.parts]
        off += v.n
    lw.vals[node.outputs[0]] = Val(off, parts, temporal)


@_lower("Readout")
def _readout(lw: QdqLowering, node: Node, op: O.Readout):
    m = lw.main
    v = lw.vals[node.inputs[0]]
    q, bits, scale = lw.single_q(v)
    n = v.n
    key = f"{node.name}/"
    out_name = node.outputs[0]
    if op.mode is ReadoutMode.LAST:
        elem = m.type_of(q)
        last = m.op("Gather", q, m.ints(-1, "last"), axis=1, out_type=elem, hint="last")
        fin = lw.state_out(key + "last")
        m.op("Identity", last, outputs=[fin])
        m.types[fin] = elem
        lw.state_final[key + "last"] = fin
        lw.vals[out_name] = Val(n, [Part(last, np.arange(n), bits, scale.copy())], False)
        return
    q32 = m.op("Cast", q, to=INT32, out_type=INT32, hint="q32")
    chunk = m.op("ReduceSum", q32, m.ints([1], "ax1"), keepdims=0, out_type=INT32, hint="chunk_sum")
    total = m.op("Add", lw.state_init(key + "sum"), chunk, out_type=INT32, hint="sum")
    fin = lw.state_out(key + "sum")
    m.op("Identity", total, outputs=[fin])
    m.types[fin] = INT32
    lw.state_final[key + "sum"] = fin
    out = lw.entry(out_name)
    if op.mode is ReadoutMode.SUM:
        y = m.op("Mul", m.op("Cast", total, to=FLOAT), m.const(f32(scale), "sum_scale"), hint="sumf")
        lw.vals[out_name] = lw.quantize_value(y, out_name, False)
        return
    steps = m.op("Cast", lw.dims("T"), to=INT32, out_type=INT32, hint="steps")
    count = m.op("Add", lw.state_init(key + "count"), steps, out_type=INT32, hint="count")
    cfin = lw.state_out(key + "count")
    m.op("Identity", count, outputs=[cfin])
    m.types[cfin] = INT32
    lw.state_final[key + "count"] = cfin
    # the program's mean: floor((2 sum 2^k + c) / (2 c)) (a/b rounded half up), exact in float64
    ratio = scale / out.scale
    kf = int(round(math.log2(float(ratio[0])))) if ratio[0] > 0 else 0
    if not np.allclose(ratio, 2.0 ** kf, rtol=1e-12, atol=0) or kf < 0:
        raise UnsupportedOpError("mean readout scale must be the input scale / 2^k")
    sd = m.op("Cast", total, to=DOUBLE, out_type=DOUBLE)
    cd = m.op("Max", m.op("Cast", count, to=DOUBLE, out_type=DOUBLE), m.const(np.float64(1.0), "one_d", np.float64),
              out_type=DOUBLE)
    num = m.op("Add", m.op("Mul", sd, m.const(np.float64(2.0 ** (kf + 1)), "two_k", np.float64)), cd, out_type=DOUBLE)
    mean = m.op("Floor", m.op("Div", num, m.op("Mul", cd, m.const(np.float64(2.0), "two_d", np.float64))),
                out_type=DOUBLE, hint="mean")
    lo, hi = qrange(out.bits)
    mean = m.op("Clip", mean, m.const(np.float64(lo), "lo_d", np.float64), m.const(np.float64(hi), "hi_d", np.float64),
                out_type=DOUBLE)
    elem = storage(out.bits)
    mq = m.op("Cast", mean, to=elem, out_type=elem, hint=out_name)
    lw.vals[out_name] = Val(n, [Part(mq, np.arange(n), out.bits, out.scale.copy())], False)


# ----------------------------------------------------------------------------------------------
# recurrent cells


def _hidden_act(sc: Scope, lw: QdqLowering, fn: Act, pre: str, pre_name: str, target: str,
                slope: float = 0.01) -> str:
    """act(pre) quantized at ``target`` (an integer tensor), with the pre-activation point."""
    t = lw.entry(target)
    if fn is Act.IDENTITY:
        return sc.quant(pre, t.scale, t.bits, "h")
    p = lw.entry(pre_name)
    _, pf = sc.qdq(pre, p.scale, p.bits, "pre")
    y = sc.op("Relu", pf) if fn is Act.RELU else activation(sc.e, fn, pf, slope)
    return sc.quant(y, t.scale, t.bits, "h")


@_lower("RNN")
def _rnn(lw: QdqLowering, node: Node, op: O.RNN):
    fk = lw.fake(node)
    nd, H = node.name, op.hidden_size
    v = lw.vals[node.inputs[0]]
    wb_i = lw.wbits(f"{nd}.w_ih", lw.cfg.weight_bits)
    wb_h = lw.wbits(f"{nd}.w_hh", lw.cfg.weight_bits)
    he = lw.entry(f"{nd}/h")
    xp = lw.project(v, fk["w_ih"], _bias(fk, "b_ih", H) + _bias(fk, "b_hh", H), wb_i, "xp", time_major=True)
    key = f"{nd}/h"

    def body(sc, st, xs):
        pre = lw.body_gemm(sc, st[key], he.bits, he.scale, fk["w_hh"], wb_h, "hh", c=xs[0])
        h = _hidden_act(sc, lw, op.act, pre, f"{nd}:pre", key)
        return {key: h}, [(h, storage(he.bits))]

    _, (seq,) = lw.scan([(key, lw.state_init(key))], [xp], body, 1, nd)
    lw.vals[node.outputs[0]] = lw.seq_int(seq, H, he.bits, he.scale)


@_lower("GRU")
def _gru(lw: QdqLowering, node: Node, op: O.GRU):
    fk = lw.fake(node)
    nd, H = node.name, op.hidden_size
    v = lw.vals[node.inputs[0]]
    wb_i = lw.wbits(f"{nd}.w_ih", lw.cfg.weight_bits)
    wb_h = lw.wbits(f"{nd}.w_hh", lw.cfg.weight_bits)
    b_ih, b_hh = _bias(fk, "b_ih", 3 * H), _bias(fk, "b_hh", 3 * H)
    w_hh = np.asarray(fk["w_hh"], np.float64)
    bx = b_ih + b_hh
    if op.reset_after:
        bx[2 * H:] = b_ih[2 * H:]
    xp = lw.project(v, fk["w_ih"], bx, wb_i, "xp", time_major=True)
    # two scan inputs (split once over the sequence, not at every step)
    xrz_seq, xn_seq = lw.main.op("Split", xp, lw.main.ints([2 * H, H], "split"), axis=2, outputs=2)
    he = lw.entry(f"{nd}/h")
    key = f"{nd}/h"
    e = {k: lw.entry(f"{nd}:{k}") for k in ("r_pre", "z_pre", "r", "z", "n_pre", "n")}

    def body(sc, st, xs):
        hq = st[key]
        h = sc.deq(hq, he.scale)
        xrz, xn = xs
        pre = lw.body_gemm(sc, hq, he.bits, he.scale, w_hh[:2 * H], wb_h, "hrz", c=xrz)
        _, pre_f = sc.qdq(pre, np.r_[e["r_pre"].scale, e["z_pre"].scale], max(e["r_pre"].bits, e["z_pre"].bits),
                          "rz_pre")
        _, rz = sc.qdq(sc.op("Sigmoid", pre_f), np.r_[e["r"].scale, e["z"].scale], max(e["r"].bits, e["z"].bits),
                       "rz")
        r, z = sc.op("Split", rz, sc.ints([H, H], "split_h"), axis=1, outputs=2)
        if op.reset_after:
            b_hn = sc.const(f32(b_hh[2 * H:]), "b_hn") if np.any(b_hh[2 * H:] != 0) else None
            hn = lw.body_gemm(sc, hq, he.bits, he.scale, w_hh[2 * H:], wb_h, "hn", c=b_hn)
            hne = lw.entry(f"{nd}:hn")
            _, hn = sc.qdq(hn, hne.scale, hne.bits, "hn")
            npre = sc.op("Add", xn, sc.op("Mul", r, hn), hint="n_pre")
        else:
            rhe = lw.entry(f"{nd}:rh")
            rhq, _ = sc.qdq(sc.op("Mul", r, h), rhe.scale, rhe.bits, "rh")
            npre = lw.body_gemm(sc, rhq, rhe.bits, rhe.scale, w_hh[2 * H:], wb_h, "hn", c=xn)
        _, npre = sc.qdq(npre, e["n_pre"].scale, e["n_pre"].bits, "n_pre")
        _, cand = sc.qdq(sc.op("Tanh", npre), e["n"].scale, e["n"].bits, "n")
        hnew = sc.op("Add", cand, sc.op("Mul", z, sc.op("Sub", h, cand)), hint="h")
        hq2 = sc.quant(hnew, he.scale, he.bits, "h")
        return {key: hq2}, [(hq2, storage(he.bits))]

    _, (seq,) = lw.scan([(key, lw.state_init(key))], [xrz_seq, xn_seq], body, 1, nd)
    lw.vals[node.outputs[0]] = lw.seq_int(seq, H, he.bits, he.scale)


@_lower("LSTM")
def _lstm(lw: QdqLowering, node: Node, op: O.LSTM):
    fk = lw.fake(node)
    nd, H = node.name, op.hidden_size
    v = lw.vals[node.inputs[0]]
    wb_i = lw.wbits(f"{nd}.w_ih", lw.cfg.weight_bits)
    wb_h = lw.wbits(f"{nd}.w_hh", lw.cfg.weight_bits)
    perm = np.r_[0:2 * H, 3 * H:4 * H, 2 * H:3 * H]  # [i, f, o] (sigmoid) then g (tanh)
    b = (_bias(fk, "b_ih", 4 * H) + _bias(fk, "b_hh", 4 * H))[perm]
    xp = lw.project(v, np.asarray(fk["w_ih"], np.float64)[perm], b, wb_i, "xp", time_major=True)
    w_hh = np.asarray(fk["w_hh"], np.float64)[perm]
    he, ce = lw.entry(f"{nd}/h"), lw.entry(f"{nd}/c")
    e = {k: lw.entry(f"{nd}:{k}") for k in ("i_pre", "f_pre", "o_pre", "g_pre", "i", "f", "o", "g", "ig", "c_pre",
                                            "tc")}
    kh, kc = f"{nd}/h", f"{nd}/c"

    def body(sc, st, xs):
        hq, cq = st[kh], st[kc]
        c = sc.deq(cq, ce.scale)
        pre = lw.body_gemm(sc, hq, he.bits, he.scale, w_hh, wb_h, "hh", c=xs[0])
        pre_e = [e[k] for k in ("i_pre", "f_pre", "o_pre", "g_pre")]
        _, pre_f = sc.qdq(pre, np.concatenate([p.scale for p in pre_e]), max(p.bits for p in pre_e), "pre")
        sp, gp = sc.op("Split", pre_f, sc.ints([3 * H, H], "split"), axis=1, outputs=2)
        g_e = [e[k] for k in ("i", "f", "o")]
        _, s = sc.qdq(sc.op("Sigmoid", sp), np.concatenate([p.scale for p in g_e]), max(p.bits for p in g_e), "ifo")
        _, g = sc.qdq(sc.op("Tanh", gp), e["g"].scale, e["g"].bits, "g")
        i, f, o = sc.op("Split", s, sc.ints([H, H, H], "split3"), axis=1, outputs=3)
        ig = sc.round_up(sc.op("Mul", i, g), e["ig"].scale, "ig")
        cq2 = sc.quant(sc.op("Add", sc.op("Mul", f, c), ig), ce.scale, ce.bits, "c")
        _, cp = sc.qdq(sc.deq(cq2, ce.scale), e["c_pre"].scale, e["c_pre"].bits, "c_pre")
        _, tc = sc.qdq(sc.op("Tanh", cp), e["tc"].scale, e["tc"].bits, "tc")
        hq2 = sc.quant(sc.op("Mul", o, tc), he.scale, he.bits, "h")
        return {kh: hq2, kc: cq2}, [(hq2, storage(he.bits))]

    _, (seq,) = lw.scan([(kh, lw.state_init(kh)), (kc, lw.state_init(kc))], [xp], body, 1, nd)
    lw.vals[node.outputs[0]] = lw.seq_int(seq, H, he.bits, he.scale)


def _min_candidate(lw: QdqLowering, node: Node, op, cp: str) -> str:
    """minGRU / minLSTM candidate over the sequence (time-major float), quantized at ':c'."""
    nd = node.name
    m = lw.main
    ce = lw.entry(f"{nd}:c")
    if op.candidate is Act.IDENTITY:
        return m.qdq(cp, ce.scale, ce.bits, "c")[1]
    pe = lw.entry(f"{nd}:c_pre")
    _, pf = m.qdq(cp, pe.scale, pe.bits, "c_pre")
    return m.qdq(activation(m.e, op.candidate, pf), ce.scale, ce.bits, "c")[1]


def _lerp_scan(lw: QdqLowering, node: Node, gate: str, cand: str, toward_h: bool) -> None:
    """h' = h + g (c - h) (minGRU) or c + g (h - c) (minLSTM), quantized at the state point."""
    nd = node.name
    key = f"{nd}/h"
    he = lw.entry(key)
    H = he.n

    def body(sc, st, xs):
        h = sc.deq(st[key], he.scale)
        g, c = xs
        if toward_h:
            y = sc.op("Add", c, sc.op("Mul", g, sc.op("Sub", h, c)))
        else:
            y = sc.op("Add", h, sc.op("Mul", g, sc.op("Sub", c, h)))
        hq = sc.quant(y, he.scale, he.bits, "h")
        return {key: hq}, [(hq, storage(he.bits))]

    _, (seq,) = lw.scan([(key, lw.state_init(key))], [gate, cand], body, 1, nd)
    lw.vals[node.outputs[0]] = lw.seq_int(seq, H, he.bits, he.scale)


@_lower("MinGRU")
def _mingru(lw: QdqLowering, node: Node, op: O.MinGRU):
    fk = lw.fake(node)
    nd, H = node.name, op.hidden_size
    v = lw.vals[node.inputs[0]]
    m = lw.main
    wb = lw.wbits(f"{nd}.w_z", lw.cfg.weight_bits)
    zp = lw.project(v, fk["w_z"], _bias(fk, "b_z", H), wb, "z_pre", time_major=True)
    cp = lw.project(v, fk["w_h"], _bias(fk, "b_h", H), lw.wbits(f"{nd}.w_h", lw.cfg.weight_bits), "c_pre",
                    time_major=True)
    ze, zpe = lw.entry(f"{nd}:z"), lw.entry(f"{nd}:z_pre")
    _, zf = m.qdq(zp, zpe.scale, zpe.bits, "z_pre")
    _, z = m.qdq(m.op("Sigmoid", zf), ze.scale, ze.bits, "z")
    _lerp_scan(lw, node, z, _min_candidate(lw, node, op, cp), toward_h=False)


@_lower("MinLSTM")
def _minlstm(lw: QdqLowering, node: Node, op: O.MinLSTM):
    fk = lw.fake(node)
    nd, H = node.name, op.hidden_size
    v = lw.vals[node.inputs[0]]
    m = lw.main
    gates = {}
    for g in ("f", "i"):
        pre = lw.project(v, fk[f"w_{g}"], _bias(fk, f"b_{g}", H), lw.wbits(f"{nd}.w_{g}", lw.cfg.weight_bits),
                         f"{g}_pre", time_major=True)
        pe, ge = lw.entry(f"{nd}:{g}_pre"), lw.entry(f"{nd}:{g}")
        _, pf = m.qdq(pre, pe.scale, pe.bits, f"{g}_pre")
        gates[g] = m.qdq(m.op("Sigmoid", pf), ge.scale, ge.bits, g)[1]
    fe = lw.entry(f"{nd}:fn")
    s = m.op("Max", m.op("Add", gates["f"], gates["i"]), m.const(np.float32(lw.entry(f"{nd}:f").scale[0]), "lsb"))
    _, fn = m.qdq(m.op("Div", gates["f"], s), fe.scale, fe.bits, "fn")
    cp = lw.project(v, fk["w_h"], _bias(fk, "b_h", H), lw.wbits(f"{nd}.w_h", lw.cfg.weight_bits), "c_pre",
                    time_major=True)
    _lerp_scan(lw, node, fn, _min_candidate(lw, node, op, cp), toward_h=True)


def _memory(lw: QdqLowering, sc: Scope, m_q: str, m_bits: int, s_m, u_q: str, u_bits: int, s_u, a: np.ndarray,
            b: np.ndarray, d: int, wbits: int) -> str:
    """Float a m[d] + b u[d] per memory dimension (block-diagonal; a batched MatMul beyond KRON_MAX)."""
    order = a.shape[0]
    b = np.asarray(b, np.float64).reshape(order)
    if d * order <= KRON_MAX:
        am = lw.body_gemm(sc, m_q, m_bits, s_m, np.kron(np.eye(d), a), wbits, "A")
        return lw.body_gemm(sc, u_q, u_bits, s_u, np.kron(np.eye(d), b.reshape(order, 1)), wbits, "B", c=am)
    # per memory dimension: (B*d, order) rows through one (order, order) Gemm, u (B*d, 1) through b
    s_m = float(np.ravel(s_m)[0])
    s_u = float(np.ravel(s_u)[0])
    m2 = sc.op("Reshape", m_q, sc.ints([-1, order], "rows"), out_type=sc.type_of(m_q))
    u2 = sc.op("Reshape", u_q, sc.ints([-1, 1], "col"), out_type=sc.type_of(u_q))
    am = lw.body_gemm(sc, m2, m_bits, s_m, a, wbits, "A")
    amb = lw.body_gemm(sc, u2, u_bits, s_u, b.reshape(order, 1), wbits, "B", c=am)
    return sc.op("Reshape", amb, sc.ints([-1, d * order], "flat_m"), hint="m")


@_lower("LMU")
def _lmu(lw: QdqLowering, node: Node, op: O.LMU):
    fk = lw.fake(node)
    nd = node.name
    v = lw.vals[node.inputs[0]]
    d, order, M = op.memory_d, op.order, op.memory_size
    wb = lw.cfg.weight_bits
    me, ue = lw.entry(f"{nd}/m"), lw.entry(f"{nd}:u")
    has_h = op.has_hidden and (op.w_h is not None or op.e_h is not None)
    hidden = "none" if not op.has_hidden else ("rec" if has_h else "dense")
    mb = max(lw.wbits(f"{nd}.AB", lw.cfg.lmu_matrix_bits), lw.wbits(f"{nd}.A", lw.cfg.lmu_matrix_bits))
    ux = lw.project(v, fk["e_x"], _bias(fk, "b_u", d), lw.wbits(f"{nd}.e_x", wb), "ux", time_major=True)
    seqs = [ux]
    he = lw.entry(f"{nd}/h") if has_h else None
    target = f"{nd}/h" if has_h else node.outputs[0]
    H = op.hidden_size
    if hidden == "rec":
        if "w_x" in fk:
            seqs.append(lw.project(v, fk["w_x"], _bias(fk, "b_h", H), lw.wbits(f"{nd}.w_x", wb), "hx",
                                   time_major=True))
    km, kh = f"{nd}/m", f"{nd}/h"
    abar, bbar = np.asarray(fk["abar"], np.float64), np.asarray(fk["bbar"], np.float64)

    def body(sc, st, xs):
        mq = st[km]
        u = xs[0]
        if "e_m" in fk:
            u = lw.body_gemm(sc, mq, me.bits, me.scale, fk["e_m"], lw.wbits(f"{nd}.e_m", wb), "em", c=u)
        if "e_h" in fk:
            hp_q, hp_bits, hp_scale = (st[kh], he.bits, he.scale) if has_h else (mq, me.bits, me.scale)
            u = lw.body_gemm(sc, hp_q, hp_bits, hp_scale, fk["e_h"], lw.wbits(f"{nd}.e_h", wb), "eh", c=u)
        uq = sc.quant(u, ue.scale, ue.bits, "u")
        mnew = _memory(lw, sc, mq, me.bits, me.scale, uq, ue.bits, ue.scale, abar, bbar, d, mb)
        mq2 = sc.quant(mnew, me.scale, me.bits, "m")
        new = {km: mq2}
        if hidden != "rec":
            return new, [(mq2, storage(me.bits))]
        c = xs[1] if len(xs) > 1 else (sc.const(f32(fk["b_h"]), "b_h") if "b_h" in fk and
                                        np.any(np.asarray(fk["b_h"]) != 0) else None)
        pre = lw.body_gemm(sc, mq2, me.bits, me.scale, fk["w_m"], lw.wbits(f"{nd}.w_m", wb), "wm", c=c)
        if "w_h" in fk:
            pre = lw.body_gemm(sc, st[kh], he.bits, he.scale, fk["w_h"], lw.wbits(f"{nd}.w_h", wb), "wh", c=pre)
        hq = _hidden_act(sc, lw, op.act, pre, f"{nd}:pre", target)
        new[kh] = hq
        return new, [(hq, storage(he.bits))]

    states = [(km, lw.state_init(km))] + ([(kh, lw.state_init(kh))] if has_h else [])
    _, (seq,) = lw.scan(states, seqs, body, 1, nd)
    if hidden == "rec":
        lw.vals[node.outputs[0]] = lw.seq_int(seq, H, he.bits, he.scale)
        return
    mval = lw.seq_int(seq, M, me.bits, me.scale)
    if hidden == "none":
        lw.vals[node.outputs[0]] = mval
        return
    # dense hidden cell: no recurrence through h, so it runs once over the whole sequence
    m_ = lw.main
    pre = lw.project(mval, fk["w_m"], None, lw.wbits(f"{nd}.w_m", wb), "hm")
    if "w_x" in fk:
        pre = m_.op("Add", pre, lw.project(v, fk["w_x"], None, lw.wbits(f"{nd}.w_x", wb), "hx"))
    if "b_h" in fk and np.any(np.asarray(fk["b_h"]) != 0):
        pre = m_.op("Add", pre, m_.const(f32(fk["b_h"]), "b_h"))
    q = _hidden_act(m_, lw, op.act, pre, f"{nd}:pre", target)
    te = lw.entry(target)
    lw.vals[node.outputs[0]] = Val(H, [Part(q, np.arange(H), te.bits, te.scale.copy())], True)


# ----------------------------------------------------------------------------------------------
# spiking neurons


def _vec(a, n) -> np.ndarray:
    return np.broadcast_to(np.asarray(a, np.float64), (n,)).copy()


def _neuron(lw: QdqLowering, sc: Scope, node: Node, nprm: O.NeuronParams, prefix: str, pop: str, names,
            current: str, st: dict, new: dict, rounded: bool) -> tuple[str, str]:
    """One LIF / CuBa-LIF population step (edgeseq.quant.lower._neuron): ``current`` is the float
    input current (already rounded to the current point's LSB when ``rounded``). Writes the new
    integer states into ``new``; returns (spikes int8 0/1, membrane int16)."""
    nd = node.name
    fk = lw.fake(node)
    syn_key, mem_key = (f"{nd}/{names[0]}", f"{nd}/{names[1]}")
    mem_e = lw.entry(mem_key)
    n = mem_e.n
    smem = float(mem_e.scale[0])
    melem = storage(mem_e.bits)
    lo, hi = qrange(mem_e.bits)
    thr_q = np.clip(np.rint(_vec(fk[prefix + "threshold"], n) / smem), lo, hi).astype(np.int64)
    thr_i = sc.const(thr_q.astype(NP[melem]), f"{pop}thr_q", NP[melem])
    thr_f = sc.const(f32(thr_q * smem), f"{pop}thr")
    zero = sc.const(np.float32(0.0), "zero")
    memq = st[mem_key]
    mem = sc.deq(memq, smem)
    reset = sc.op("Greater", memq, thr_i, out_type=BOOL, hint=f"{pop}reset")
    beta = sc.const(f32(_vec(fk[prefix + "beta"], n)), f"{pop}beta")
    if nprm.synaptic:
        syn_e = lw.entry(syn_key)
        cur = current if rounded else sc.round_up(current, lw.entry(f"{nd}:{pop}cur").scale, f"{pop}cur")
        syn = sc.deq(st[syn_key], syn_e.scale)
        alpha = sc.const(f32(_vec(fk[prefix + "alpha"], n)), f"{pop}alpha")
        synq = sc.quant(sc.op("Add", sc.op("Mul", alpha, syn), cur), syn_e.scale, syn_e.bits, f"{pop}syn")
        new[syn_key] = synq
        drive = sc.round_up(sc.deq(synq, syn_e.scale), lw.entry(f"{nd}:{pop}drive").scale, f"{pop}drive")
    else:
        drive = current if rounded else sc.round_up(current, lw.entry(f"{nd}:{pop}cur").scale, f"{pop}cur")
    base = sc.op("Where", reset, zero, mem) if nprm.reset is ResetRule.ZERO else mem
    u = sc.op("Add", sc.op("Mul", beta, base), drive, hint=f"{pop}u")
    if nprm.reset is ResetRule.SUBTRACT:
        u = sc.op("Sub", u, sc.op("Where", reset, thr_f, zero))
    elif nprm.reset is ResetRule.ZERO_TOTAL:
        u = sc.op("Where", reset, zero, u)
    uq = sc.quant(u, smem, mem_e.bits, f"{pop}mem")
    fired = sc.op("Greater", uq, thr_i, out_type=BOOL, hint=f"{pop}spk")
    if not nprm.reset_delay and nprm.reset is not ResetRule.NONE:
        dd = sc.op("Sub", sc.op("Cast", fired, to=FLOAT), sc.op("Cast", reset, to=FLOAT))
        uf = sc.deq(uq, smem)
        corr = sc.op("Mul", dd, thr_f if nprm.reset is ResetRule.SUBTRACT else uf)
        uq = sc.quant(sc.op("Sub", uf, corr), smem, mem_e.bits, f"{pop}mem")
    new[mem_key] = uq
    spk = sc.op("Cast", fired, to=UINT8, out_type=UINT8, hint=f"{pop}spikes")  # 0/1: uint8 (see carriers)
    return spk, uq


def _neuron_states(node: Node, nprm: O.NeuronParams, names) -> list[str]:
    ks = [f"{node.name}/{names[1]}"]
    if nprm.synaptic:
        ks.append(f"{node.name}/{names[0]}")
    return ks


@_lower("LIF", "CuBaLIF")
def _lif(lw: QdqLowering, node: Node, op):
    fk = lw.fake(node)
    nd = node.name
    v = lw.vals[node.inputs[0]]
    n = v.n
    m = lw.main
    rec = op.recurrence
    nprm = op.neuron
    cur_key = f"{nd}:cur"
    x = lw.float_of(v)
    ss = _vec(fk.get("neuron.spike_scale", 1.0), n)
    if rec is Recurrence.ALL_TO_ALL:
        b = _bias(fk, "b_rec", n)
        if np.any(b != 0):
            x = m.op("Add", x, m.const(f32(b), "b_rec"))
    rounded = rec is Recurrence.NONE
    if rounded:
        x = m.round_up(x, lw.entry(cur_key).scale, "cur")
    xs = [lw.time_major(x)]
    keys = _neuron_states(node, nprm, ("syn", "mem")) + ([f"{nd}/spk"] if rec is not Recurrence.NONE else [])
    mem_e = lw.entry(f"{nd}/mem")

    def body(sc, st, ins):
        cur = ins[0]
        if rec is Recurrence.ONE_TO_ONE:
            cur = sc.op("Add", cur, sc.op("Mul", sc.const(f32(_vec(fk["v_rec"], n) * ss), "v_rec"),
                                          sc.op("Cast", st[f"{nd}/spk"], to=FLOAT)))
        elif rec is Recurrence.ALL_TO_ALL:
            cur = lw.body_gemm(sc, st[f"{nd}/spk"], 2, ss, fk["w_rec"], lw.wbits(f"{nd}.w_rec", lw.cfg.weight_bits),
                               "rec", c=cur)
        new: dict = {}
        spk, memq = _neuron(lw, sc, node, nprm, "neuron.", "", ("syn", "mem"), cur, st, new, rounded)
        if rec is not Recurrence.NONE:
            new[f"{nd}/spk"] = spk
        outs = {"spikes": [(spk, UINT8)], "membrane": [(memq, storage(mem_e.bits))],
                "both": [(spk, UINT8), (memq, storage(mem_e.bits))]}[op.emit]
        return new, outs

    n_outs = 2 if op.emit == "both" else 1
    _, seqs = lw.scan([(k, lw.state_init(k), UINT8 if k.endswith("/spk") else None) for k in keys], xs, body,
                      n_outs, nd)
    if op.emit in ("spikes", "both"):
        lw.probe(f"{nd}:spk", seqs[0], UINT8)
    def spk_val(seq: str) -> Val:
        qb = m.op("Transpose", seq, perm=[1, 0, 2], out_type=UINT8, hint="bm")
        return Val(n, [Part(qb, np.arange(n), 2, ss.copy())], True)

    if op.emit == "spikes":
        lw.vals[node.outputs[0]] = spk_val(seqs[0])
    elif op.emit == "membrane":
        lw.vals[node.outputs[0]] = lw.seq_int(seqs[0], n, mem_e.bits, mem_e.scale)
    else:
        lw.vals[node.outputs[0]] = spk_val(seqs[0])
        lw.vals[node.outputs[1]] = lw.seq_int(seqs[1], n, mem_e.bits, mem_e.scale)


@_lower("L2MU")
def _l2mu(lw: QdqLowering, node: Node, op: O.L2MU):
    fk = lw.fake(node)
    nd = node.name
    v = lw.vals[node.inputs[0]]
    d, order, H, M = op.memory_d, op.order, op.hidden_size, op.memory_size
    wb = lw.cfg.weight_bits
    ss_m = _vec(fk.get("m_neuron.spike_scale", 1.0), M)
    ss_h = _vec(fk.get("h_neuron.spike_scale", 1.0), H)
    ss_u = _vec(fk.get("u_neuron.spike_scale", 1.0), d)
    if not (np.all(ss_m == ss_m[0]) and np.all(ss_u == ss_u[0])):
        raise UnsupportedOpError("per-neuron spike amplitudes in the L2MU memory are not supported")
    iu = lw.project(v, fk["e_x"], _bias(fk, "b_u", d), lw.wbits(f"{nd}.e_x", wb), "iu", time_major=True)
    seqs = [iu]
    if "w_x" in fk:  # x w_x + b_h over the whole sequence (else b_h is added in the body)
        seqs.append(lw.project(v, fk["w_x"], _bias(fk, "b_h", H), lw.wbits(f"{nd}.w_x", wb), "ih", time_major=True))
    mb = lw.wbits(f"{nd}.ab", lw.cfg.lmu_matrix_bits)
    keys = ([f"{nd}/s_m", f"{nd}/s_h"] + _neuron_states(node, op.u_neuron, ("u_syn", "u_mem"))
            + _neuron_states(node, op.m_neuron, ("m_syn", "m_mem")) + _neuron_states(node, op.h_neuron,
                                                                                     ("h_syn", "h_mem")))
    a, bvec = np.asarray(fk["a"], np.float64), np.asarray(fk["b"], np.float64)

    def body(sc, st, xs):
        s_m, s_h = st[f"{nd}/s_m"], st[f"{nd}/s_h"]
        new: dict = {}
        i_u = xs[0]
        if "e_h" in fk:
            i_u = lw.body_gemm(sc, s_h, 2, ss_h, fk["e_h"], lw.wbits(f"{nd}.e_h", wb), "eh", c=i_u)
        if "e_m" in fk:
            i_u = lw.body_gemm(sc, s_m, 2, ss_m, fk["e_m"], lw.wbits(f"{nd}.e_m", wb), "em", c=i_u)
        s_u, _ = _neuron(lw, sc, node, op.u_neuron, "u_neuron.", "u_", ("u_syn", "u_mem"), i_u, st, new, False)
        i_m = _memory(lw, sc, s_m, 2, ss_m[0], s_u, 2, ss_u[0], a, bvec, d, mb)
        s_m2, _ = _neuron(lw, sc, node, op.m_neuron, "m_neuron.", "m_", ("m_syn", "m_mem"), i_m, st, new, False)
        i_h = lw.body_gemm(sc, s_m2, 2, ss_m, fk["w_m"], lw.wbits(f"{nd}.w_m", wb), "wm")
        if len(xs) > 1:
            i_h = sc.op("Add", i_h, xs[1])
        elif "b_h" in fk and np.any(np.asarray(fk["b_h"]) != 0):
            i_h = sc.op("Add", i_h, sc.const(f32(fk["b_h"]), "b_h"))
        if "w_h" in fk:
            i_h = lw.body_gemm(sc, s_h, 2, ss_h, fk["w_h"], lw.wbits(f"{nd}.w_h", wb), "wh", c=i_h)
        s_h2, _ = _neuron(lw, sc, node, op.h_neuron, "h_neuron.", "h_", ("h_syn", "h_mem"), i_h, st, new, False)
        new[f"{nd}/s_m"] = s_m2
        new[f"{nd}/s_h"] = s_h2
        return new, [(s_u, UINT8), (s_m2, UINT8), (s_h2, UINT8)]

    _, (su_seq, sm_seq, sh_seq) = lw.scan([(k, lw.state_init(k), UINT8 if k.split("/")[-1] in ("s_m", "s_h") else None)
                                           for k in keys], seqs, body, 3, nd)
    lw.probe(f"{nd}:u_spk", su_seq, UINT8)
    lw.probe(f"{nd}:m_spk", sm_seq, UINT8)
    lw.probe(f"{nd}:h_spk", sh_seq, UINT8)
    qb = lw.main.op("Transpose", sh_seq, perm=[1, 0, 2], out_type=UINT8, hint="bm")
    lw.vals[node.outputs[0]] = Val(H, [Part(qb, np.arange(H), 2, ss_h.copy())], True)


# ----------------------------------------------------------------------------------------------
# entry points


def spike_probes(q) -> list[str]:
    """Names of the spike populations a QDQ model can expose as probes (``probe.<name>``, (B, T, n)
    int8): the program's spike vectors ('<node>:spk', '<node>:u_spk', ...), so that they compare
    directly with ``edgeseq.quant.intexact.run(..., trace=True)``."""
    out = []
    for n in q.graph.nodes:
        if n.op.kind in ("LIF", "CuBaLIF") and n.op.emit in ("spikes", "both"):
            out.append(f"{n.name}:spk")
        elif n.op.kind == "L2MU":
            out += [f"{n.name}:u_spk", f"{n.name}:m_spk", f"{n.name}:h_spk"]
    return out


def supported_kinds() -> set[str]:
    return set(LOWER)


def check_supported(q) -> None:
    for n in q.graph.nodes:
        if n.op.kind not in LOWER:
            raise UnsupportedOpError(
                f"op kind '{n.op.kind}' is not supported by the onnx QDQ lowering",
                where=f"node '{n.name}' ({n.op.kind}), target onnx (numerics qdq)",
                hint=f"the QDQ lowering handles: {', '.join(sorted(LOWER))}; numerics='exact' lowers the integer "
                     "program instead")


def build_onnx_qdq(q, *, streaming: bool = False, opset: int = 21, probes: Sequence[str] = (),
                   info: Optional[dict] = None) -> onnx.ModelProto:
    """The QDQ model of the quantized graph ``q`` (see the module docstring). ``streaming=True``
    adds the program's integer states as inputs / outputs; ``probes`` (names from
    :func:`spike_probes`) adds int8 spike trains ``probe.<name>`` (B, T, n). ``info``, when given,
    receives the products (where they run, widths, whether onnxruntime has an integer kernel for
    them) and the quantization points by place and width. Raises :class:`UnsupportedOpError` for
    an op kind this lowering does not handle."""
    if not (hasattr(q, "program") and hasattr(q, "graph") and hasattr(q, "plan") and hasattr(q, "fake_params")):
        raise ConfigError(f"build_onnx_qdq expects a quantized graph, got {type(q).__name__}",
                          hint="quantize the graph first: edgeseq.quant.quantize(graph, calib_x)")
    top = max_opset()
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
        raise ConfigError(f"opset must be an integer from {MIN_OPSET} to {top}, got {opset!r}",
                          where="target onnx (numerics qdq)", hint="int16 QuantizeLinear needs opset 21")
    avail = spike_probes(q)
    for p in probes:
        if p not in avail:
            raise ConfigError(f"probe '{p}' is not a spike population of this model",
                              where="target onnx (numerics qdq)", hint=f"available: {', '.join(avail) or 'none'}")
    check_supported(q)
    lw = QdqLowering(q, bool(streaming), opset, probes)
    model = lw.run()
    if info is not None:
        info["products"] = lw.products
        info["points"] = dict(sorted(lw.points.items()))
        info["inexact_weights"] = lw.inexact_weights
        info["scans"] = lw._bodies
    return model
