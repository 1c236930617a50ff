"""QDQ lowering: a quantized graph as the float ONNX model with QuantizeLinear / DequantizeLinear
pairs at the plan's points, so that onnxruntime (and execution providers that consume QDQ) run
the products in integer kernels.

    qg = edgeseq.quant.quantize(graph, calib_x, "edgeseq")
    model = build_onnx_qdq(qg)                                   # onnx.ModelProto
    art = export_onnx_quantized(qg, "out/gru_qdq", numerics="qdq")

The exact lowering (:mod:`.qlower`, ``numerics="exact"``, the default) reproduces the integer
program bit for bit with many small integer ops per micro-op. This one computes what the float
model computes, with the quantized graph's *dequantized* parameters and the plan's rounding at
every point, i.e. the fake-quant simulation (:mod:`edgeseq.quant.fakequant`) as an ONNX graph. Scan
ops render their step programs (:mod:`.render`, the float export's rules) with each ``Quant``
point of the program becoming the plan's QuantizeLinear / DequantizeLinear: input-only work over
the whole sequence, only the recurrence inside a ``Scan``. It agrees with the integer-exact
interpreter to a few output LSBs (see :data:`TOLERANCE`), not bit for bit.

Structure
=========

- **Weights**: the program's own integer weights (per output channel, int8; int16 where the plan
  says so: memory matrices), recovered exactly from the fake-quant parameters, as integer
  initializers + ``DequantizeLinear``. Per-channel input scales (the boundary quantizer, per-channel
  points, spike amplitudes) are absorbed into the weight columns, as the integer program does.
- **Products** are 2-D ``Gemm`` s: ``Gemm(DequantizeLinear(int8 a), DequantizeLinear(int8 W))`` is
  what onnxruntime's QDQ transformer (``ORT_ENABLE_EXTENDED`` and above; ``ORT_ENABLE_ALL`` is the
  default) fuses into ``QGemm`` (int8 x int8 -> float), with its addends as separate ``Add`` s. In a
  ``Scan`` body such a weight and its ``DequantizeLinear`` are the body's own (else onnxruntime does
  not fuse); a wider activation (int16 states, memories: no int8 x int16 kernel) multiplies in float,
  the running sum as ``Gemm``'s C, its weight dequantized once in the main graph (inside the body
  onnxruntime would dequantize it at every step, ~40x slower). Products of one input share one
  ``Gemm`` with stacked rows. Sequence-level products reshape the *integer* activation to 2-D before
  its ``DequantizeLinear``: onnxruntime's x86 ``QDQS8ToU8Transformer`` rewrites int8 Q -> DQ pairs to
  uint8, whose kernels saturate on AVX2 CPUs without VNNI (measured: wrong results). int8 x int8 is
  slow on such CPUs (3-4x slower than float), uint8 x int8 fast: values known to lie in [0, 127]
  (spikes, ReLU outputs of 8-bit points) are carried as uint8, where that kernel cannot saturate, and
  cast to the program's int8 at state boundaries.
- **Points**: every plan point of 8 or 16 bits is ``QuantizeLinear`` -> ``DequantizeLinear`` at the
  plan's scale (zero point 0; sibling points, e.g. the gates of one cell, share one pair; per-channel
  scales as a multiply and a per-tensor pair: onnxruntime's per-axis kernels are ~40x slower on a
  sequence). ONNX has no wider ``QuantizeLinear``: wider points (currents, partial membranes, the
  LSTM's f*c and i*g) are rounded in float (``Round(x / s) * s``), except where the next point of the
  same grid repeats the rounding (only values on that grid are added on the way). Spikes are 0/1
  ``uint8`` (the *integer* membrane compared with the integer threshold).
- **States** are the program's integer states (same keys, flat (B, n), storage dtypes), carried by
  the ``Scan``; mean / sum readouts keep the program's int32 running sum and step count; a causal
  convolution keeps its int8 input history.
- **Boundaries**: the input is quantized as the program's input quantizers specify (offset
  subtracted in float32, then ``QuantizeLinear``; inputs within ~1e-7 of a rounding boundary may
  land one LSB apart from the program's float64); each output is the ``DequantizeLinear`` of its
  integer tensor, which is also an output ``q.<name>``.

Tensors are batch-first and ``batch`` / ``time`` are symbolic, as in the float model; the model is
inline (standard ops only, no ``edgeseq`` functions).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Callable, Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ... import __version__
from ...errors import ConfigError, UnsupportedOpError
from ...ir import ops as O
from ...ir.cells import cell_kinds, has_step_program, step_program
from ...ir.graph import Node
from ...ir.step import Add, Affine, Gt, Mul, QRole, Quant, Select, StepProgram, Sub, WeightKind
from ...ir.types import Act, ReadoutMode
from ...quant.program import int_range
from ._emit import Emitter, activation, f32, prune
from .lower import (
    BATCH,
    INT64_MAX,
    STATE_IN,
    STATE_OUT,
    TIME,
    ir_version_for,
    max_opset,
    state_input_name,
    state_output_name,
)
from .qfused import quantized_lstm, render_quantized_lstm
from .qlower import INT_OUT, PROBE, output_names
from .qweights import int_weights, storage
from .render import KRON_MAX, Numerics, Part, Pending, Ref, Renderer, Scope, Val, render_scan, whole

FLOAT, DOUBLE, BOOL = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.BOOL
INT8, INT16, INT32, INT64, UINT8 = (
    TensorProto.INT8,
    TensorProto.INT16,
    TensorProto.INT32,
    TensorProto.INT64,
    TensorProto.UINT8,
)
NP = helper.tensor_dtype_to_np_dtype
MIN_OPSET = 21  # int16 QuantizeLinear / DequantizeLinear

#: what the QDQ model keeps against the integer-exact interpreter, stated per model family (and
#: written into every QDQ artifact's manifest). ``lsb``: max |q_qdq - q_exact| of the integer
#: outputs, in output LSBs. Measured on every zoo model (tests/unit/zoo_cases.py), T in {1, 40, 50,
#: 200}, B in {1, 3, 48, 64}, normal and 12x overdriven inputs: recurrent <= 4, memory <= 5 except an
#: LMU whose hidden state and memory feed back into its memory input (lmu_full: up to 293 at T = 200,
#: one-LSB step differences grow through the feedback), spiking <= 1 with identical spike trains.
TOLERANCE = {
    "reference": "edgeseq.quant.intexact.run (the integer-exact interpreter)",
    "lsb": {"recurrent": 16, "memory": 512, "spiking": 16, "feedforward": 16, "recurrent_fused": 8192},
    "decision_agreement": 0.995,
    "spike_agreement": 0.999,
    "notes": "float32 arithmetic between the points, float activation functions instead of the program's "
    "tables, round-half-to-even QuantizeLinear instead of the program's round-half-up requantization; "
    "spikes compare the integer membrane with the integer threshold, as the program does. A spiking "
    "output moves by a whole spike when a neuron crosses its threshold one step earlier or later "
    "(a mean readout of spikes: 2^14 / T LSB): not seen on the zoo models. recurrent_fused: a model "
    "exported with fused_rnn, whose LSTMs run on onnxruntime's DynamicQuantizeLSTM: float cell state and "
    "gates, the hidden state quantized to 8 bits per step at a scale the kernel takes from the whole "
    "batch (the plan may hold it in 16), chunk boundaries round the states to the plan's points. Measured "
    "on the zoo LSTM: up to 1,594 LSB of an int16 output at B = 400 (575 at B = 1), 4,531 with 12x "
    "overdriven inputs; decisions agree with the integer program on 98.2-100% of sequences and with the "
    "float model exactly as often as the integer program's do.",
    "fused_decision_agreement": 0.97,
}


def tolerance_key(graph, info: dict) -> str:
    """The :data:`TOLERANCE` ``lsb`` key of a QDQ model built with ``info``: 'recurrent_fused' when a
    scan runs on onnxruntime's quantized LSTM kernel, else the graph's family."""
    return "recurrent_fused" if any(p["where"] == "fused" for p in info.get("products", ())) else family_of(graph)


def _programs(graph):
    for n in graph.nodes:
        if has_step_program(n.op):
            yield n, step_program(n.op, graph.type_of(n.inputs[0]).features)


def family_of(graph) -> str:
    """'spiking' (thresholds in a scan), 'memory' (memory matrices), 'recurrent' or 'feedforward':
    read from the scan ops' step programs."""
    fams = set()
    for _, prog in _programs(graph):
        if any(isinstance(op, Gt) for op in prog.body):
            fams.add("spiking")
        elif any(i.kind is WeightKind.MEMORY for i in prog.param_info.values()):
            fams.add("memory")
        else:
            fams.add("recurrent")
    return next((f for f in ("spiking", "memory", "recurrent") if f in fams), "feedforward")


def spike_values(prog: StepProgram) -> list[str]:
    """The spike populations of a step program: comparisons whose 0/1 result (times a parameter,
    possibly) is a spike state, a spike output or the input of a matrix product."""
    gts = {op.out for op in prog.body if isinstance(op, Gt)}
    src = {v: v for v in gts}
    for op in prog.body:
        if isinstance(op, Mul) and (op.a in src and prog.is_param(op.b) or op.b in src and prog.is_param(op.a)):
            src[op.out] = src[op.a if op.a in src else op.b]
    used = set()
    for op in prog.body:
        if isinstance(op, Affine):
            used.update(src[t.x] for t in op.terms if t.x in src)
        if isinstance(op, Quant) and op.point.role is QRole.SPIKES and op.x in src:
            used.add(src[op.x])
    used.update(
        src[prog.next_state[s.name]]
        for s in prog.states
        if s.point is not None and s.point.role is QRole.SPIKES and prog.next_state[s.name] in src
    )
    return [v for v in (op.out for op in prog.body) if v in used]


# ----------------------------------------------------------------------------------------------
# the lowering


def _part(q: str, n: int, bits: int, scale, idx=None, offset=None) -> Part:
    return Part(
        whole(q, n) if idx is None else Ref(q, 0, len(idx), len(idx)),
        np.arange(n) if idx is None else idx,
        bits,
        np.broadcast_to(np.asarray(scale, np.float64), (n if idx is None else len(idx),)).copy(),
        offset,
    )


class QdqLowering:
    def __init__(self, q, streaming: bool, opset: int, probes: Sequence[str] = (), fused_rnn: bool = False):
        self.q = q
        self.fused_rnn = fused_rnn
        self.g = q.graph
        self.plan = q.plan
        self.cfg = q.plan.config
        self.prog = q.program
        self.fk = q.fake_params
        self.streaming, self.opset = streaming, opset
        self.x = self.g.inputs[0].name
        self.main = Scope(Emitter(prefix="/", initializers=True), Numerics(None), 3, lead=(self.x, 0))
        self.vals: dict[str, Val] = {}
        self.produced_states: set[str] = set()
        self.state_final: dict[str, str] = {}
        self.products: list[dict] = []
        self.points: Counter = Counter()
        self.inexact_weights: list[str] = []
        self.probes = list(probes)
        self.probe_vals: dict[str, str] = {}
        self.scans = 0
        self.node = ""

    # -- bookkeeping ----------------------------------------------------------------------------
    def count_point(self, bits: int, sc: Scope) -> None:
        self.points[f"{'scan' if sc.rank == 2 else 'sequence'}:{'int' + str(bits) if bits <= 16 else 'round'}"] += 1

    def entry(self, name: str):
        return self.plan[name]

    def wbits(self, name: str, default: int) -> int:
        o = self.cfg.override(name)
        return o.bits if o.bits is not None else default

    def fake(self, node: Node) -> dict:
        return self.fk[node.name]

    # -- shapes and states -------------------------------------------------------------------------
    def dim(self, which: str) -> str:
        start = {"B": 0, "T": 1}[which]
        m = self.main
        return m.cached(
            ("dim", which), lambda: m.op("Shape", self.x, start=start, end=start + 1, hint=which, elem=INT64)
        )

    def state_init(self, key: str) -> str:
        """Main-graph tensor holding the state ``key`` at the start of the chunk (B, n)."""
        s = self.prog.states[key]
        elem = storage(s.bits)
        if self.streaming:
            name = state_input_name(key)
            self.main.types[name] = elem
            return name
        m = self.main
        return m.cached(
            ("zeros", s.n, elem),
            lambda: m.op(
                "ConstantOfShape",
                m.op("Concat", self.dim("B"), m.ints([s.n], "n"), axis=0, elem=INT64, hint="shape2"),
                hint="zeros",
                elem=elem,
                value=numpy_helper.from_array(np.zeros(1, NP(elem))),
            ),
        )

    def state_out(self, key: str) -> str:
        self.produced_states.add(key)
        name = state_output_name(key) if self.streaming else self.main.e.fresh(f"{key}.final")
        self.state_final[key] = name
        return name

    # -- quantize / dequantize ----------------------------------------------------------------------
    def quant(self, sc: Scope, f: str, scale, bits: int, hint: str = "q", unsigned: bool = False) -> str:
        """QuantizeLinear to ``bits`` (8 or 16 storage; narrower widths clipped) with zero point 0;
        ``unsigned``: uint8 for a value known to lie in [0, 2^(bits-1) - 1] (see the module docstring).
        Per-channel scales multiply by their inverses first (onnxruntime's per-axis QuantizeLinear is
        ~40x slower than per-tensor on a sequence)."""
        elem = UINT8 if unsigned and bits <= 8 else storage(bits)
        if elem not in (INT8, INT16, UINT8):
            raise UnsupportedOpError(f"a {bits}-bit quantization point has no QuantizeLinear type")
        s = np.asarray(scale, np.float64).ravel()
        if not np.all(s == s[0]):
            f, s = sc.op("Mul", f, sc.const(f32(1.0 / s), "inv")), np.ones(1)
        zp = sc.const(np.zeros((), NP(elem)), "zp", dtype=NP(elem))
        q = sc.op("QuantizeLinear", f, sc.const(np.float32(s[0]), "qs"), zp, elem=elem, hint=hint)
        if bits not in (8, 16) and elem != UINT8:
            lo, hi = int_range(bits)
            q = sc.op(
                "Clip",
                q,
                sc.const(np.array(lo, NP(elem)), f"lo{bits}", NP(elem)),
                sc.const(np.array(hi, NP(elem)), f"hi{bits}", NP(elem)),
                elem=elem,
                hint=hint,
            )
        self.count_point(bits, sc)
        return q

    def deq(self, sc: Scope, q: str, scale, hint: str = "dq") -> str:
        s = np.asarray(scale, np.float64).ravel()

        def make():
            elem = sc.type_of(q)
            uniform = bool(np.all(s == s[0]))
            zp = sc.const(np.zeros((), NP(elem)), "zp", dtype=NP(elem))
            f = sc.op(
                "DequantizeLinear", q, sc.const(np.float32(s[0] if uniform else 1.0), "ds"), zp, elem=FLOAT, hint=hint
            )
            return f if uniform else sc.op("Mul", f, sc.const(f32(s), "ds"), elem=FLOAT, hint=hint)

        return sc.cached(("dq", q, s[:1].tobytes() if np.all(s == s[0]) else s.tobytes()), make)

    def round_to(self, sc: Scope, f: str, scale, hint: str = "r") -> str:
        """Round to a multiple of ``scale`` in float (a point wider than 16 bits; half to even,
        where the program rounds half up: the two differ only on exact ties, which float32 products
        of the program's operands rarely represent exactly)."""
        s = np.asarray(scale, np.float64).ravel()
        uniform = s.size == 1 or np.all(s == s[0])
        inv = sc.const(np.float32(1.0 / s[0]) if uniform else f32(1.0 / s), "inv")
        t = sc.op("Round", sc.op("Mul", f, inv), hint=hint)
        self.count_point(24, sc)
        return sc.op("Mul", t, sc.const(np.float32(s[0]) if uniform else f32(s), "rs"), elem=FLOAT, hint=hint)

    # -- values ---------------------------------------------------------------------------------------
    def float_of(self, sc: Scope, v: Val) -> str:
        """The real-valued float tensor of a value held as integer parts."""
        fs, order = [], []
        for p in v.parts:
            f = self.deq(sc, sc.tensor(p.q), p.scale)
            if p.offset is not None:
                f = sc.op("Add", f, sc.const(f32(p.offset), "offset"))
            fs.append(f)
            order.append(p.idx)
        order = np.concatenate(order)
        cat = fs[0] if len(fs) == 1 else sc.op("Concat", *fs, axis=-1, hint="cat")
        if not np.array_equal(order, np.arange(v.n)):
            cat = sc.op("Gather", cat, sc.ints(np.argsort(order), "perm"), axis=-1, hint="perm")
        return cat

    def single_q(self, sc: Scope, v: Val) -> Part:
        """One integer tensor with every channel in order (the program's ``single``: parts
        concatenated in a common type, then permuted)."""
        if len(v.parts) == 1 and np.array_equal(v.single.idx, np.arange(v.n)) and v.single.offset is None:
            return v.single
        if any(p.offset is not None for p in v.parts):
            raise UnsupportedOpError("a value with an input offset cannot be merged", where=f"node '{self.node}'")
        bits = max(p.bits for p in v.parts)
        elem = storage(bits)
        qs = [sc.tensor(p.q) for p in v.parts]
        qs = [q if sc.type_of(q) == elem else sc.op("Cast", q, to=elem, elem=elem) for q in qs]
        order = np.concatenate([p.idx for p in v.parts])
        scale = np.concatenate([p.scale for p in v.parts])
        cat = sc.op("Concat", *qs, axis=-1, elem=elem, hint="qcat")
        if not np.array_equal(order, np.arange(v.n)):
            inv = np.argsort(order)
            cat = sc.op("Gather", cat, sc.ints(inv, "perm"), axis=-1, elem=elem, hint="qperm")
            scale = scale[inv]
        return _part(cat, v.n, bits, scale)

    def quantize_value(self, f: str, name: str, temporal: bool, sc: Optional[Scope] = None) -> Val:
        """Quantize the float tensor ``f`` at the plan point ``name`` (a split point in two parts)."""
        sc = sc or self.main
        e = self.entry(name)
        n = e.n
        if e.split:
            hi = np.asarray(e.split, np.int64)
            lo = np.setdiff1d(np.arange(n), hi)
            parts = []
            for idx, bits in ((lo, e.bits), (hi, e.split_bits)):
                g = sc.op("Gather", f, sc.ints(idx, "split"), axis=-1, hint="split")
                parts.append(_part(self.quant(sc, g, e.scale[idx], bits, name), len(idx), bits, e.scale[idx], idx))
            return Val(n, parts=parts, temporal=temporal)
        return Val(
            n, parts=[_part(self.quant(sc, f, e.scale, e.bits, hint=name), n, e.bits, e.scale)], temporal=temporal
        )

    def transpose(self, v: Val) -> Val:
        """Swap the batch and time axes of a temporal value's integer parts."""
        m = self.main
        parts = []
        for p in v.parts:
            q = m.tensor(p.q)
            t = m.op("Transpose", q, perm=[1, 0, 2], elem=m.type_of(q), hint="tm")
            parts.append(Part(whole(t, p.q.n), p.idx, p.bits, p.scale, p.offset))
        return Val(v.n, parts=parts, temporal=True)

    # -- products --------------------------------------------------------------------------------------
    def weight(self, sc: Scope, wq: np.ndarray, scale: np.ndarray, bits: int, act_bits: int, hint: str) -> str:
        """Float (out, in) weight for ``Gemm(a, w, transB=1)``: integer initializer +
        DequantizeLinear(axis=0), in the scope of the product when onnxruntime can fuse it (int8 x
        int8), else in the main graph (dequantized once per run).

        (out, in) with ``transB`` rather than (in, out): onnxruntime >= 1.2x rewrites
        ``MatMul``/``Gemm`` of a float activation and a ``DequantizeLinear(axis=1)`` int8 weight
        into ``MatMulNBits``, which by default (accuracy level 4) quantizes the activation to int8 on
        the fly (measured: 25 output LSBs of error behind an int16 readout); this form is left alone
        and int8 activations still fuse into ``QGemm``."""
        home = sc if act_bits <= 8 and bits <= 8 else self.main
        elem = storage(bits)
        w = home.const(np.ascontiguousarray(wq).astype(NP(elem)), hint, dtype=NP(elem))
        home.types[w] = elem
        s = home.const(f32(scale), hint + ".scale")
        zp = home.const(np.zeros(scale.size, NP(elem)), hint + ".zp", dtype=NP(elem))
        return home.op("DequantizeLinear", w, s, zp, axis=0, elem=FLOAT, hint=hint + ".f")

    def gemm(self, sc: Scope, q2: str, p: Part, wd: np.ndarray, wbits: int, hint: str, c: Optional[str] = None) -> str:
        """Gemm(DequantizeLinear(q2), W) (+ c) for the part ``p`` of an input (q2 its 2-D integer
        tensor) and the fake-quant weight columns ``wd`` (out, len(p.idx)). The float addend ``c`` is
        the Gemm's C input for a float product and a separate Add after a fusable one (QGemm takes
        only an int32 bias at the product's scale)."""
        wd = np.asarray(wd, np.float64)
        s = np.asarray(p.scale, np.float64)
        uniform = bool(np.all(s == s[0]) and s[0] > 0)
        wq, ws, exact = int_weights(wd * s[None, :], wbits)
        if not exact:
            self.inexact_weights.append(f"{self.node}:{hint}")
        a = self.deq(sc, q2, s[0] if uniform else 1.0)
        w = self.weight(sc, wq, ws / s[0] if uniform else ws, wbits, p.bits, f"{self.node}/{hint}")
        fused = p.bits <= 8 and wbits <= 8
        if c is not None and not fused:
            y = sc.op("Gemm", a, w, c, transB=1, elem=FLOAT, hint=hint)
        else:
            y = sc.op("Gemm", a, w, transB=1, elem=FLOAT, hint=hint)
            if c is not None:
                y = sc.op("Add", y, c, elem=FLOAT, hint=hint)
        self.products.append(
            {
                "node": self.node,
                "where": "scan" if sc.rank == 2 else "sequence",
                "act_bits": int(p.bits),
                "weight_bits": int(wbits),
                "integer_kernel": fused,
                "shape": [int(wd.shape[1]), int(wd.shape[0])],
            }
        )
        return y

    def product(
        self, sc: Scope, v: Val, wd: np.ndarray, bias, wbits: int, hint: str, c: Optional[str] = None, blocks: int = 1
    ) -> str:
        """``v`` W^T (+ bias) (+ c) with the fake-quant weight ``wd`` (out, in) applied to each of
        ``blocks`` slices of ``v``: one Gemm per integer part (an input offset folds into the bias),
        over 2-D rows of a sequence (``v.temporal`` in a sequence scope)."""
        wd = np.asarray(wd, np.float64)
        out, width = wd.shape
        parts = v.parts
        rows = sc.rank == 3 and v.temporal
        if blocks > 1:
            p = parts[0]
            if len(parts) > 1 or blocks * max(out, width) <= KRON_MAX or not np.all(p.scale == p.scale[0]):
                wd = np.kron(np.eye(blocks), wd)
            else:  # one (order, order) product over every block's row
                q = sc.op("Reshape", sc.tensor(p.q), sc.ints([-1, width], "rows"), elem=sc.type_of(sc.tensor(p.q)))
                y = self.gemm(sc, q, Part(whole(q, width), np.arange(width), p.bits, p.scale[:width]), wd, wbits, hint)
                y = sc.op(
                    "Reshape", y, sc.shape(blocks * out) if rows else sc.ints([-1, blocks * out], "flat"), hint=hint
                )
                if bias is not None:
                    y = sc.op("Add", y, sc.const(f32(np.broadcast_to(bias, (blocks * out,))), f"{hint}.b"))
                return y if c is None else sc.op("Add", y, c)
            out = wd.shape[0]
        b = np.zeros(out) if bias is None else np.broadcast_to(np.asarray(bias, np.float64), (out,)).copy()
        has_bias = bias is not None
        for p in parts:  # an input offset folds into the bias (as in the integer program)
            if p.offset is not None:
                b, has_bias = b + wd[:, p.idx] @ p.offset, True
        acc = sc.op("Reshape", c, sc.ints([-1, out], "rows")) if rows and c is not None else c
        if has_bias and np.any(b != 0):
            bc = sc.const(f32(b), f"{self.node}/{hint}.b")
            acc = bc if acc is None else sc.op("Add", acc, bc)
        for p in parts:  # one Gemm per part, each adding the sum so far
            q = sc.tensor(p.q)
            if rows:
                q = sc.op("Reshape", q, sc.ints([-1, p.idx.size], "rows"), elem=sc.type_of(q), hint="q2d")
            acc = self.gemm(sc, q, Part(whole(q, p.idx.size), p.idx, p.bits, p.scale), wd[:, p.idx], wbits, hint, acc)
        return sc.op("Reshape", acc, sc.shape(out), hint=hint) if rows else acc

    # -- driver ---------------------------------------------------------------------------------------
    def run(self) -> onnx.ModelProto:
        self.lower_input()
        for node in self.g.nodes:
            self.node = node.name
            fn = LOWER.get(node.op.kind) or (_scan if getattr(node.op, "program", None) is not None else None)
            if fn is None:
                raise UnsupportedOpError(
                    f"op kind '{node.op.kind}' is not supported by the onnx QDQ lowering",
                    where=f"node '{node.name}' ({node.op.kind}), target onnx (numerics qdq)",
                    hint=f"the QDQ lowering handles: {', '.join(sorted(LOWER))}; "
                    "numerics='exact' lowers the integer program instead",
                )
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
        x, m = self.x, self.main
        parts_by_vec: dict[str, list] = {}
        for spec in self.prog.inputs:
            ch = np.asarray(spec.channels, np.int64)
            f = x
            if not np.array_equal(ch, np.arange(self.g.in_features)):
                f = m.op("Gather", x, m.ints(ch, "ch"), axis=-1, hint="in")
            off = np.asarray(spec.offset, np.float64)
            if np.any(off != 0):
                f = m.op("Sub", f, m.const(f32(off), "in_offset"), hint="in")
            inv = np.asarray(spec.inv_scale, np.float64)
            if np.all(inv == inv[0]):
                qin = self.quant(m, f, 1.0 / inv[0], spec.bits, hint=spec.vec)
            else:
                # per-channel scales: q is carried with them, consumers absorb them into their weights
                qin = self.quant(
                    m, m.op("Mul", f, m.const(f32(inv), "in_inv"), hint="in"), 1.0, spec.bits, hint=spec.vec
                )
            base = spec.vec.rsplit(".", 1)[0] if spec.vec.endswith((".lo", ".hi")) else spec.vec
            offset = off if np.any(off != 0) and base == x else None
            parts_by_vec.setdefault(base, []).append(_part(qin, len(ch), spec.bits, spec.scale, ch, offset))
        for name, parts in parts_by_vec.items():
            self.vals[name] = Val(sum(p.idx.size for p in parts), parts=parts, temporal=True)

    def finish(self) -> onnx.ModelProto:
        g, p, m = self.g, self.prog, self.main
        spec = p.states
        inputs = [helper.make_tensor_value_info(self.x, FLOAT, [BATCH, TIME, g.in_features])]
        if self.streaming:
            inputs += [
                helper.make_tensor_value_info(state_input_name(k), storage(s.bits), [BATCH, s.n])
                for k, s in spec.items()
            ]
        outputs, int_outputs = [], []
        for o, name in zip(p.outputs, output_names(p, self.x)):
            v = self.vals[o.name]
            q = m.tensor(self.single_q(m, v).q)
            want = storage(p.vectors[o.vec].bits)
            if m.type_of(q) != want:
                q = m.op("Cast", q, to=want, elem=want)
            dims = [BATCH, TIME, v.n] if v.temporal else [BATCH, v.n]
            m.op("Identity", q, outputs=[INT_OUT + name])
            m.op("Identity", self.deq(m, q, o.scale), outputs=[name])
            outputs.append(helper.make_tensor_value_info(name, FLOAT, dims))
            int_outputs.append(helper.make_tensor_value_info(INT_OUT + name, want, dims))
        outs = outputs + int_outputs
        if self.streaming:
            for k, s in spec.items():
                outs.append(helper.make_tensor_value_info(state_output_name(k), storage(s.bits), [BATCH, s.n]))
        for name in self.probes:
            if name not in self.probe_vals:
                raise ConfigError(
                    f"probe '{name}' is not a spike population of this model",
                    hint=f"available: {', '.join(spike_probes(self.q)) or 'none'}",
                )
            m.op("Transpose", self.probe_vals[name], perm=[1, 0, 2], outputs=[PROBE + name])
            outs.append(helper.make_tensor_value_info(PROBE + name, UINT8, [BATCH, TIME, None]))
        m.merge_slices()
        prune(m.e, [o.name for o in outs])
        graph = helper.make_graph(
            m.e.nodes,
            f"edgeseq_qdq_{str(g.metadata.get('source', 'graph')).split('.')[-1]}",
            inputs,
            outs,
            initializer=m.e.initializers,
            doc_string="edgeseq quantized graph (QDQ): " + repr(g),
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", self.opset)]
            + [helper.make_opsetid(d, 1) for d in sorted({n.domain for n in m.e.nodes} - {"", "ai.onnx"})],
            ir_version=ir_version_for(self.opset),
            producer_name="edgeseq",
            producer_version=__version__,
        )
        helper.set_model_props(
            model,
            {
                "edgeseq.numerics": "qdq",
                "edgeseq.streaming": str(bool(self.streaming)).lower(),
                "edgeseq.state_input_prefix": STATE_IN,
                "edgeseq.state_output_prefix": STATE_OUT,
                "edgeseq.integer_output_prefix": INT_OUT,
                "edgeseq.quant_config": self.cfg.name,
            },
        )
        return model


# ----------------------------------------------------------------------------------------------
# scan ops: their step programs with the plan's points


class _Points(Numerics):
    """The QDQ form of a scan node's step program: fake-quant parameters, integer products, the
    plan's points, integer states."""

    strip = False

    def __init__(self, lw: QdqLowering, node: Node, prog: StepProgram):
        super().__init__(prog)
        self.lw, self.node = lw, node
        self.fk = lw.fake(node)
        self.points = prog.qualified_points(node.name, node.outputs)
        self.keys = [f"{node.name}/{s.name}" for s in prog.states]
        self.absorbed: set[str] = set()

    def grid(self, v: str):
        """The scale of a point or state value (None for spikes and other values)."""
        op = self.prog.producers().get(v)
        if isinstance(op, Quant) and op.point.role is not QRole.SPIKES:
            return self.lw.entry(self.points[v][0]).scale
        k = self.prog.state_names.index(v) if v in self.prog.state_names else None
        return None if k is None or self._spikes(k) else self.lw.entry(self.keys[k]).scale

    def start(self, prog: StepProgram) -> None:
        super().start(prog)
        self.absorb(prog)

    def absorb(self, prog: StepProgram) -> None:
        """The wide points whose rounding the next point of the same scale repeats: on the way there
        the value only meets values on the same grid (integer multiples of the scale), and
        round(a + b) = round(a) + b for such b. Decided last point first, so that of two summed points
        one stays rounded."""
        cons, prod = prog.consumers(), prog.producers()
        ends = set(prog.outputs) | set(prog.next_state.values())

        def integral(v: str) -> bool:
            op = prod.get(v)
            return isinstance(op, Gt) or isinstance(op, (Add, Sub)) and all(map(integral, op.reads()))

        def on_grid(v: str, s) -> bool:
            if prog.is_param(v):
                r = np.ravel(self.value_of(v)) / s
                return bool(np.all(np.abs(r - np.rint(r)) < 1e-6))
            op = prod.get(v)
            if isinstance(op, (Add, Sub)) or isinstance(op, Select):
                return all(on_grid(r, s) for r in (op.a, op.b))
            if isinstance(op, Mul):
                return any(integral(a) and on_grid(b, s) for a, b in ((op.a, op.b), (op.b, op.a)))
            g = self.grid(v)
            return v not in self.absorbed and g is not None and np.array_equal(np.broadcast_to(g, s.shape), s)

        for q in reversed([op for op in prog.body if isinstance(op, Quant) and self.quant_key(op) == ("wide",)]):
            s, v = self.lw.entry(self.points[q.out][0]).scale, q.out
            while v not in ends and len(cons.get(v, ())) == 1:
                c = cons[v][0]
                if isinstance(c, Quant):
                    g = self.grid(c.out)
                    if g is not None and np.array_equal(np.broadcast_to(g, s.shape), s):
                        self.absorbed.add(q.out)
                    break
                if (
                    not isinstance(c, (Add, Sub, Select))
                    or isinstance(c, Select)
                    and c.c == v
                    or not all(on_grid(r, s) for r in (c.a, c.b) if r != v)
                ):
                    break
                v = c.out

    def value_of(self, name: str) -> np.ndarray:
        return np.asarray(self.fk.get(name, self.prog.params[name]), np.float64)

    def to_float(self, sc: Scope, v: Val) -> str:
        return self.lw.float_of(sc, v) if v.parts else super().to_float(sc, v)

    def single(self, sc: Scope, v: Val) -> Part:
        if not v.parts and v.mask is not None:  # 0/1 spikes (times their amplitude)
            q = sc.op("Cast", sc.tensor(v.mask), to=UINT8, elem=UINT8, hint="spikes")
            amp = np.ones(v.n)
            for c in v.coef:
                amp = amp * np.broadcast_to(np.ravel(self.value_of(c)), (v.n,))
            v.parts = [_part(q, v.n, 2, amp)]
        if not v.parts:
            raise UnsupportedOpError(
                "a value used as integers that is not at a quantization point of at most "
                "16 bits (QDQ holds int8 / int16 only)",
                where=f"node '{self.node.name}' (step program '{self.prog.name}')",
                hint="export the exact integer program instead (--onnx-numerics exact)",
            )
        return self.lw.single_q(sc, v)

    # -- products ----------------------------------------------------------------------------------
    def wbits(self, w: str) -> int:
        info = self.prog.param_info.get(w)
        default = (
            self.lw.cfg.lmu_matrix_bits
            if info is not None and info.kind is WeightKind.MEMORY
            else self.lw.cfg.weight_bits
        )
        return self.lw.wbits(f"{self.node.name}.{info.source if info else w}", default)

    def affine(self, sc: Scope, p: Pending, addend: Optional[str]) -> str:
        bias = None
        if p.has_bias:
            bias = np.concatenate(
                [
                    np.zeros(o.n) if b is None else np.broadcast_to(np.ravel(self.value_of(b)), (o.n,))
                    for o, b in zip(p.ops, p.biases)
                ]
            )
        acc = addend
        for k, ((xv, blocks), ws) in enumerate(zip(p.xs, p.ws)):
            if not xv.parts:
                self.single(sc, xv)
            w = np.vstack([self.value_of(n) for n in ws])
            acc = self.lw.product(
                sc, xv, w, bias if k == 0 else None, max(self.wbits(n) for n in ws), "+".join(ws), acc, blocks
            )
        return acc

    # -- points ------------------------------------------------------------------------------------
    def quant_key(self, op: Quant, sc: Optional[Scope] = None):
        """Points of one width share a pair in a loop; over a sequence only with equal scales (a
        pair with per-channel scales costs two multiplies there, more than a second pair)."""
        name, point = self.points[op.out]
        e = self.lw.entry(name) if point.role is not QRole.SPIKES and op.out not in self.absorbed else None
        if e is None or e.split:
            return None
        key = (e.bits if e.bits <= 16 else "wide",)
        return key + (e.scale.tobytes(),) if sc is not None and sc.rank == 3 else key

    def quant(self, R: Renderer, sc: Scope, ops: Sequence[Quant], env: dict) -> list:
        lw = self.lw
        op = ops[0]
        name, point = self.points[op.out]
        v = env[op.x]
        if point.role is QRole.SPIKES or op.out in self.absorbed:
            return [v]
        entries = [lw.entry(self.points[o.out][0]) for o in ops]
        e = entries[0]
        if len(ops) == 1:
            if e.split:
                return [lw.quantize_value(sc.f(v), name, True, sc)]
            if (
                v.parts
                and len(v.parts) == 1
                and v.single.offset is None
                and v.single.bits <= e.bits
                and np.array_equal(np.broadcast_to(v.single.scale, (e.n,)), e.scale)
            ):
                return [v]  # already on this point's grid
            x = sc.f(v)
        else:
            r = v.f
            x = sc.tensor(Ref(r.name, r.start, sum(o.n for o in ops), r.width))
        scale = np.concatenate([np.broadcast_to(t.scale, (o.n,)) for t, o in zip(entries, ops)])
        if e.bits > 16:
            y = lw.round_to(sc, x, scale, name.split(":")[-1])
            return sc.lane_vals(ops, y, lambda r: Val(r.n, f=r))
        q = lw.quant(sc, x, scale, e.bits, name.split(":")[-1].split("/")[-1])
        f = sc.lazy(lambda: lw.deq(sc, q, scale), "dq")
        vals = sc.lane_vals(
            ops, q, lambda r: Val(r.n, parts=[Part(r, np.arange(r.n), e.bits, scale[r.start : r.start + r.n])])
        )
        for val in vals:
            val.f = Ref(f, val.single.q.start, val.n, val.single.q.width)
        return vals

    def gt(self, R: Renderer, sc: Scope, op: Gt, env: dict) -> Val:
        """Spikes and resets compare the integer membrane with the integer threshold."""
        a = env[op.a]
        if self.prog.is_param(op.b) and len(a.parts) == 1 and a.single.offset is None:
            p = a.single
            q = sc.tensor(p.q)
            elem = sc.type_of(q)
            lo, hi = np.iinfo(NP(elem)).min, np.iinfo(NP(elem)).max
            thr = np.clip(np.rint(np.broadcast_to(np.ravel(self.value_of(op.b)), (op.n,)) / p.scale), lo, hi)
            t = sc.const(thr.astype(NP(elem)), "thr_q", NP(elem))
            return Val(op.n, mask=whole(sc.op("Greater", q, t, elem=BOOL, hint="gt"), op.n))
        return super().gt(R, sc, op, env)

    # -- states ------------------------------------------------------------------------------------
    def _spikes(self, k: int) -> bool:
        pt = self.prog.states[k].point
        return pt is not None and pt.role is QRole.SPIKES

    def carrier(self, k: int) -> int:
        return UINT8 if self._spikes(k) else storage(self.lw.prog.states[self.keys[k]].bits)

    def state_val(self, sc: Scope, k: int, name: str) -> Val:
        s = self.prog.states[k]
        if self._spikes(k):
            amp = (
                np.ones(s.n)
                if s.amplitude is None
                else np.broadcast_to(np.ravel(self.prog.params[s.amplitude]), (s.n,))
            )
            return Val(s.n, parts=[_part(name, s.n, 2, amp)])
        e = self.lw.entry(self.keys[k])
        return Val(s.n, parts=[_part(name, s.n, e.bits, e.scale)])

    def state_next(self, sc: Scope, k: int, v: Val) -> str:
        if self._spikes(k) and v.mask is not None:
            return sc.op("Cast", sc.tensor(v.mask), to=UINT8, elem=UINT8, hint="spikes")
        q = sc.tensor(self.single(sc, v).q)
        elem = self.carrier(k)
        return q if sc.type_of(q) == elem else sc.op("Cast", q, to=elem, elem=elem)

    def storage(self, k: int) -> int:
        return storage(self.lw.prog.states[self.keys[k]].bits)

    def state_final(self, sc: Scope, k: int, name: str, out: Optional[str]) -> str:
        sc.op("Cast", name, to=self.storage(k), outputs=[out])
        sc.types[out] = self.storage(k)
        return out


def _scan(lw: QdqLowering, node: Node, op) -> None:
    m = lw.main
    prog = step_program(op, lw.g.type_of(node.inputs[0]).features)
    num = _Points(lw, node, prog)
    kernel = quantized_lstm(num, prog) if lw.fused_rnn and not lw.probes else None
    if kernel is not None:
        lw.scans += 1
        render_quantized_lstm(lw, node, num, kernel)
        return
    xt = lw.transpose(lw.vals[node.inputs[0]])
    m.num, m.lead = num, (m.tensor(xt.parts[0].q), 0)
    probes = [v for v in spike_values(prog) if f"{node.name}:{v}" in lw.probes]
    lw.scans += 1
    res = render_scan(
        num, m, prog, xt, [lw.state_init(k) for k in num.keys], [lw.state_out(k) for k in num.keys], node.name, probes
    )
    for name, v in zip(node.outputs, res.outputs):
        p = num.single(m, v)
        q = m.tensor(p.q)
        qb = m.op("Transpose", q, perm=[1, 0, 2], elem=m.type_of(q), hint="bm")
        lw.vals[name] = Val(v.n, parts=[_part(qb, v.n, p.bits, p.scale)], temporal=True)
    for v, val in zip(probes, res.outputs[len(prog.outputs) :]):
        lw.probe_vals[f"{node.name}:{v}"] = m.tensor(num.single(m, val).q)
    m.num, m.lead = Numerics(None), (lw.x, 0)


# ----------------------------------------------------------------------------------------------
# feed-forward ops

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
    y = lw.product(lw.main, v, fk["weight"], _bias(fk, "bias", op.weight.shape[0]), wb, "y")
    lw.vals[node.outputs[0]] = lw.quantize_value(y, node.outputs[0], v.temporal)


@_lower("Conv1d")
def _conv1d(lw: QdqLowering, node: Node, op: O.Conv1d):
    m = lw.main
    fk = lw.fake(node)
    p = lw.single_q(m, lw.vals[node.inputs[0]])
    q, bits, scale = m.tensor(p.q), p.bits, p.scale
    elem = m.type_of(q)
    C = op.in_features
    w = np.asarray(fk["weight"], np.float64)
    out_ch, cg, K = w.shape
    hist = op.history
    taps = [k * op.dilation for k in range(K)]
    wf = np.zeros((out_ch, K * C))  # columns: tap k, channel c
    for o in range(out_ch):
        gi = o // (out_ch // op.groups)
        for k in range(K):
            wf[o, k * C + gi * cg : k * C + (gi + 1) * cg] = w[o, :, k]
    if hist:
        key = f"{node.name}/buf"
        init = lw.state_init(key)
        selem = m.type_of(init)  # the program's storage type (int8); q may be carried as uint8 (spikes, relu)
        buf = m.op("Reshape", init, m.ints([0, hist, C], "buf_shape"), elem=selem, hint="buf")
        if selem != elem:
            buf = m.op("Cast", buf, to=elem, elem=elem, hint="buf")
        window = m.op("Concat", buf, q, axis=1, elem=elem, hint="window")
        fin = lw.state_out(key)
        tail = m.op("Slice", window, m.ints([-hist]), m.ints([INT64_MAX]), m.ints([1]), elem=elem, hint="tail")
        if selem != elem:
            tail = m.op("Cast", tail, to=selem, elem=selem, hint="tail")
        m.op("Reshape", tail, m.ints([0, hist * C], "flat_buf"), outputs=[fin])
        m.types[fin] = selem
        cols = [
            m.op(
                "Slice",
                window,
                m.ints([pos]),
                m.ints([pos - hist if pos < hist else INT64_MAX]),
                m.ints([1]),
                elem=elem,
                hint="tap",
            )
            for pos in taps
        ]
        col = cols[0] if len(cols) == 1 else m.op("Concat", *cols, axis=-1, elem=elem, hint="im2col")
    else:
        col = q
    vin = Val(K * C, parts=[_part(col, K * C, bits, np.tile(scale, K))], temporal=True)
    y = lw.product(m, vin, wf, _bias(fk, "bias", out_ch), lw.wbits(f"{node.name}.weight", lw.cfg.weight_bits), "y")
    lw.vals[node.outputs[0]] = lw.quantize_value(y, node.outputs[0], True)


@_lower("LayerNorm")
def _layernorm(lw: QdqLowering, node: Node, op: O.LayerNorm):
    fk = lw.fake(node)
    v = lw.vals[node.inputs[0]]
    m = lw.main
    w = np.asarray(fk.get("weight", np.ones(v.n)), np.float64)
    b = np.asarray(fk.get("bias", np.zeros(v.n)), np.float64)
    y = m.op(
        "LayerNormalization",
        lw.float_of(m, v),
        m.const(f32(w), "ln_w"),
        m.const(f32(b), "ln_b"),
        axis=-1,
        epsilon=float(op.eps),
        hint="ln",
    )
    lw.vals[node.outputs[0]] = lw.quantize_value(y, node.outputs[0], v.temporal)


@_lower("BatchNorm")
def _batchnorm(lw: QdqLowering, node: Node, op: O.BatchNorm):
    if node.outputs[0] in lw.vals:  # merged into the input quantizer
        return
    fk = lw.fake(node)
    v = lw.vals[node.inputs[0]]
    a = np.asarray(fk.get("weight", np.ones(v.n)), np.float64) / np.sqrt(np.asarray(fk["var"], np.float64) + op.eps)
    c = np.asarray(fk.get("bias", np.zeros(v.n)), np.float64) - np.asarray(fk["mean"], np.float64) * a
    m = lw.main
    y = m.op("Add", m.op("Mul", lw.float_of(m, v), m.const(f32(a), "bn_a")), m.const(f32(c), "bn_c"), hint="bn")
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
            f = lw.deq(m, m.tensor(p.q), p.scale)
            y = (
                m.op("Relu", f)
                if op.fn is Act.RELU
                else m.op("Clip", f, m.const(np.float32(op.lo), "lo"), m.const(np.float32(op.hi), "hi"))
            )
            # a ReLU of an 8-bit value lies in [0, 127]: carried as uint8 (exact and fast u8 x s8 kernels)
            unsigned = p.bits <= 8 and (op.fn is Act.RELU or op.lo >= 0)
            q = lw.quant(m, y, p.scale, p.bits, node.outputs[0], unsigned=unsigned)
            parts.append(Part(whole(q, p.q.n), p.idx, p.bits, p.scale))
        lw.vals[node.outputs[0]] = Val(v.n, parts=parts, temporal=v.temporal)
        return
    y = activation(m.e, op.fn, lw.float_of(m, v), op.slope, op.lo, op.hi)
    lw.vals[node.outputs[0]] = lw.quantize_value(y, node.outputs[0], v.temporal)


@_lower("Add")
def _add(lw: QdqLowering, node: Node, op: O.Add):
    a, b = (lw.vals[i] for i in node.inputs)
    y = lw.main.op("Add", lw.float_of(lw.main, a), lw.float_of(lw.main, b), hint="add")
    lw.vals[node.outputs[0]] = lw.quantize_value(y, node.outputs[0], a.temporal)


@_lower("Concat")
def _concat(lw: QdqLowering, node: Node, op: O.Concat):
    parts, off, temporal = [], 0, True
    for i in node.inputs:
        v = lw.vals[i]
        temporal = v.temporal
        parts += [Part(p.q, p.idx + off, p.bits, p.scale, p.offset) for p in v.parts]
        off += v.n
    lw.vals[node.outputs[0]] = Val(off, parts=parts, temporal=temporal)


@_lower("Readout")
def _readout(lw: QdqLowering, node: Node, op: O.Readout):
    m = lw.main
    v = lw.vals[node.inputs[0]]
    p = lw.single_q(m, v)
    q, bits, scale, n = m.tensor(p.q), p.bits, p.scale, v.n
    key = f"{node.name}/"
    out_name = node.outputs[0]

    def state(k: str, value: str, elem: int) -> None:
        fin = lw.state_out(key + k)
        m.op("Identity", value, outputs=[fin])
        m.types[fin] = elem

    if op.mode is ReadoutMode.LAST:
        elem = m.type_of(q)
        last = m.op("Gather", q, m.ints(-1, "last"), axis=1, elem=elem, hint="last")
        state("last", last, elem)
        lw.vals[out_name] = Val(n, parts=[_part(last, n, bits, scale)], temporal=False)
        return
    q32 = m.op("Cast", q, to=INT32, elem=INT32, hint="q32")
    chunk = m.op("ReduceSum", q32, m.ints([1], "ax1"), keepdims=0, elem=INT32, hint="chunk_sum")
    total = m.op("Add", lw.state_init(key + "sum"), chunk, elem=INT32, hint="sum")
    state("sum", total, INT32)
    out = lw.entry(out_name)
    if op.mode is ReadoutMode.SUM:
        y = m.op("Mul", m.op("Cast", total, to=FLOAT), m.const(f32(scale), "sum_scale"), hint="sumf")
        lw.vals[out_name] = lw.quantize_value(y, out_name, False)
        return
    steps = m.op("Cast", lw.dim("T"), to=INT32, elem=INT32, hint="steps")
    count = m.op("Add", lw.state_init(key + "count"), steps, elem=INT32, hint="count")
    state("count", count, INT32)
    # the program's mean: floor((2 sum 2^k + c) / (2 c)) (a/b rounded half up), exact in float64
    ratio = scale / out.scale
    kf = int(round(math.log2(float(ratio[0])))) if ratio[0] > 0 else 0
    if not np.allclose(ratio, 2.0**kf, rtol=1e-12, atol=0) or kf < 0:
        raise UnsupportedOpError("mean readout scale must be the input scale / 2^k")
    sd = m.op("Cast", total, to=DOUBLE, elem=DOUBLE)
    cd = m.op(
        "Max", m.op("Cast", count, to=DOUBLE, elem=DOUBLE), m.const(np.float64(1.0), "one_d", np.float64), elem=DOUBLE
    )
    num = m.op("Add", m.op("Mul", sd, m.const(np.float64(2.0 ** (kf + 1)), "two_k", np.float64)), cd, elem=DOUBLE)
    mean = m.op(
        "Floor",
        m.op("Div", num, m.op("Mul", cd, m.const(np.float64(2.0), "two_d", np.float64))),
        elem=DOUBLE,
        hint="mean",
    )
    lo, hi = int_range(out.bits)
    mean = m.op(
        "Clip",
        mean,
        m.const(np.float64(lo), "lo_d", np.float64),
        m.const(np.float64(hi), "hi_d", np.float64),
        elem=DOUBLE,
    )
    elem = storage(out.bits)
    mq = m.op("Cast", mean, to=elem, elem=elem, hint=out_name)
    lw.vals[out_name] = Val(n, parts=[_part(mq, n, out.bits, out.scale)], temporal=False)


for _kind in cell_kinds():
    LOWER[_kind] = _scan


# ----------------------------------------------------------------------------------------------
# entry points


def spike_probes(q) -> list[str]:
    """Names of the spike populations a QDQ model can expose as probes (``probe.<name>``, (B, T, n)
    uint8): the program's spike vectors ('<node>:<value>' of each scan's step program), so that they
    compare directly with ``edgeseq.quant.intexact.run(..., trace=True)``."""
    return [
        f"{n.name}:{v}"
        for n, prog in _programs(q.graph)
        for v in spike_values(prog)
        if f"{n.name}:{v}" in q.program.vectors
    ]


def supported_kinds() -> set[str]:
    return set(LOWER)


def build_onnx_qdq(
    q,
    *,
    streaming: bool = False,
    opset: int = 21,
    probes: Sequence[str] = (),
    info: Optional[dict] = None,
    fused_rnn: bool = False,
) -> onnx.ModelProto:
    """The QDQ model of the quantized graph ``q`` (see the module docstring). ``fused_rnn``: an
    LSTM-shaped scan runs on onnxruntime's quantized LSTM kernel (:mod:`.qfused`; tolerance
    ``recurrent_fused``, see :func:`tolerance_key`), else over ``Scan`` like every other scan. ``streaming=True``
    adds the program's integer states as inputs / outputs; ``probes`` (names from
    :func:`spike_probes`) adds uint8 spike trains ``probe.<name>`` (B, T, n). ``info``, when given,
    receives the products (where they run, widths, whether onnxruntime has an integer kernel for
    them) and the quantization points by place and width. Raises :class:`UnsupportedOpError` for
    an op kind this lowering does not handle."""
    if not (hasattr(q, "program") and hasattr(q, "graph") and hasattr(q, "plan") and hasattr(q, "fake_params")):
        raise ConfigError(
            f"build_onnx_qdq expects a quantized graph, got {type(q).__name__}",
            hint="quantize the graph first: edgeseq.quant.quantize(graph, calib_x)",
        )
    top = max_opset()
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
        raise ConfigError(
            f"opset must be an integer from {MIN_OPSET} to {top}, got {opset!r}",
            where="target onnx (numerics qdq)",
            hint="int16 QuantizeLinear needs opset 21",
        )
    if q.graph.is_window:
        q.graph.require_streaming(
            "the QDQ lowering (numerics 'qdq')",
            hint="export window graphs with numerics 'exact' (the integer program, on whole windows)",
        )
    avail = spike_probes(q)
    for p in probes:
        if p not in avail:
            raise ConfigError(
                f"probe '{p}' is not a spike population of this model",
                where="target onnx (numerics qdq)",
                hint=f"available: {', '.join(avail) or 'none'}",
            )
    lw = QdqLowering(q, bool(streaming), opset, probes, bool(fused_rnn))
    model = lw.run()
    if info is not None:
        info["products"] = lw.products
        info["points"] = dict(sorted(lw.points.items()))
        info["inexact_weights"] = lw.inexact_weights
        info["scans"] = lw.scans
    return model
