"""Lowering: float IR graph + :class:`~edgeseq.quant.plan.QuantPlan` -> integer :class:`Program`.

Every op kind is lowered to the micro-ops of :mod:`edgeseq.quant.program` at the quantization
points the float simulator (:mod:`edgeseq.quant.sim`) declares, so the integer program, the
fake-quant simulation and the plan agree point by point. The lowering also returns the
*fake-quant parameters*: every weight, bias, LMU matrix and neuron constant replaced by the float
value its integer form represents (dequantized), which the fake-quant simulation runs with.

Building blocks (all integer):

- ``affine``: sum_k W_k x_k + b into a planned scale. Each weight matrix absorbs the per-channel
  scale of its input (W'[o, c] = W[o, c] * s_c) and is quantized per output row; one term is a
  MatVec with an int32 bias and one Requant. Several terms are each requantized into a fine common
  domain P = out_scale / 2^F, added, biased, and requantized by 2^-F; F (<= 16) is the largest
  for which the worst case of the sum still fits int32, so no term ever saturates.
- ``lut``: int8 inputs use a 256-entry table, int16 inputs a 2^k + 1 table with interpolation.
- ``lerp`` (GRU / minGRU / minLSTM updates): a + requant(z * (b - a), 2^-(zbits-1)).
- spiking neurons: Q15 decay constants, integer thresholds, 0/1 spikes.

BatchNorm is folded first (:mod:`edgeseq.quant.passes`); a BatchNorm right after the graph input
is merged into the boundary quantizer; any other is a per-channel integer affine map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from ..errors import NumericsError, UnsupportedOpError
from ..ir import ops as O
from ..ir.graph import Graph, Node
from ..ir.interpret import activation
from ..ir.types import Act, ReadoutMode, Recurrence, ResetRule
from .config import Granularity, QuantConfig
from .plan import QuantPlan, TensorPlan, WeightPlan, qmax
from .program import (Add, CmpGe, Clamp, Concat, Div, Gather, InputSpec, Isqrt, Load, Lut, MatVec, Mul,
                      OutputSpec, Program, ProgramBuilder, Requant, Select, Store, Sub, bits_for, int_range)
from .sim import float_params

Q15 = 15

# ----------------------------------------------------------------------------------------------
# fixed-point helpers


def quantize_multiplier(ratio) -> tuple[np.ndarray, np.ndarray]:
    """ratio (> 0) -> (M, s) with M in [2^30, 2^31), 1 <= s <= 62 and M * 2^-s ~ ratio.
    Ratios too small to ever produce a non-zero output give M = 0, s = 1."""
    r = np.atleast_1d(np.asarray(ratio, np.float64))
    if np.any(r < 0) or not np.all(np.isfinite(r)):
        raise NumericsError("requantization needs finite non-negative scale ratios")
    m, e = np.frexp(r)
    mult = np.rint(m * (1 << 31)).astype(np.int64)
    over = mult == (1 << 31)
    mult[over] = 1 << 30
    e = e + over
    shift = 31 - e
    if np.any((shift < 1) & (r > 0)):
        raise NumericsError(f"scale ratio {float(r.max()):.4g} is too large for a requantization (max 2^30)")
    zero = (r == 0) | (shift > 62)
    mult[zero] = 0
    shift[zero] = 1
    return mult.astype(np.int64), shift.astype(np.int64)


def make_table(fn: str, s_in: float, in_bits: int, s_out: float, out_bits: int, table_bits: int,
               slope: float = 0.01, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    """The Lut table of ``fn`` from an input of scale ``s_in`` to an output of scale ``s_out``:
    256 entries for inputs of at most 8 bits, else 2^table_bits + 1 interpolation nodes over int16."""
    olo, ohi = int_range(out_bits)
    if in_bits <= 8:
        xs = np.arange(-128, 128, dtype=np.float64) * s_in
    else:
        S = 16 - table_bits
        xs = (np.arange((1 << table_bits) + 1, dtype=np.float64) * (1 << S) - 32768.0) * s_in
    ys = activation(Act(fn), xs, slope, lo, hi)
    return np.clip(round_half_up(ys / s_out), olo, ohi).astype(np.int64)


def round_half_up(x) -> np.ndarray:
    return np.floor(np.asarray(x, np.float64) + 0.5)


def quantize_weight(w: np.ndarray, bits: int, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric weight quantization per output row (or per tensor): (Wq int64, scale (rows,))."""
    w = np.asarray(w, np.float64)
    qm = qmax(bits)
    amax = np.abs(w).max(axis=1) if per_channel else np.full(w.shape[0], np.abs(w).max() if w.size else 0.0)
    scale = np.where(amax > 0, amax / qm, 1.0)
    wq = np.clip(np.rint(w / scale[:, None]), -qm, qm).astype(np.int64)
    return wq, scale


def _sqnr(w, wd) -> float:
    err = float(np.sum((w - wd) ** 2))
    sig = float(np.sum(w ** 2))
    if err == 0:
        return float("inf")
    return 10.0 * math.log10(max(sig, 1e-300) / err)


# ----------------------------------------------------------------------------------------------
# lowering-time handles


@dataclass
class Part:
    """Some channels (``idx``) of a value, held in vector ``vec`` with per-channel ``scale``
    (real = scale * q + offset)."""

    vec: str
    idx: np.ndarray
    bits: int
    scale: np.ndarray
    offset: Optional[np.ndarray] = None


@dataclass
class QV:
    n: int
    parts: list

    @property
    def whole(self) -> bool:
        return len(self.parts) == 1 and np.array_equal(self.parts[0].idx, np.arange(self.n))


@dataclass
class MatTerm:
    """W (out, in) times value ``qv``; ``fake`` receives the dequantized W; ``blocks`` > 1 applies
    the same W to each block of ``qv`` (LMU memories)."""

    w: np.ndarray
    qv: QV
    name: str
    bits: int
    fake: Optional[Callable[[np.ndarray], None]] = None
    blocks: int = 1
    per_channel: Optional[bool] = None


@dataclass
class RawTerm:
    """An integer vector with a known per-channel scale (products, direct inputs)."""

    vec: str
    scale: np.ndarray


class Lowerer:
    def __init__(self, graph: Graph, plan: QuantPlan):
        self.g = graph
        self.plan = plan
        self.cfg: QuantConfig = plan.config
        self.pb = ProgramBuilder()
        self.vals: dict[str, QV] = {}
        self.fake: dict[str, dict[str, np.ndarray]] = {
            n.name: {k: np.array(v, dtype=np.float64, copy=True) for k, v in float_params(n.op).items()}
            for n in graph.nodes}
        self.weights: dict[str, WeightPlan] = {}
        self.max_steps: list[int] = []
        self.node = ""

    # -- small utilities ------------------------------------------------------------------------
    def e(self, name: str) -> TensorPlan:
        return self.plan[name]

    def nm(self, base: str) -> str:
        return self.pb.name(base)

    def emit(self, op, n, bits=None, scale=None, tag=None) -> str:
        return self.pb.emit(op, n, bits, scale, tag)

    def k(self, base: str, value, dtype=None) -> str:
        return self.pb.const(f"{self.node}.{base}", value, dtype)

    def scalar(self, v: int) -> str:
        return self.pb.scalar(v)

    def bits_of(self, vec: str) -> int:
        return self.pb.vectors[vec].bits

    def wbits(self, name: str, default: int) -> int:
        o = self.cfg.override(name)
        return o.bits if o.bits is not None else default

    # -- parts ------------------------------------------------------------------------------------
    def single(self, qv: QV, tag: Optional[str] = None) -> Part:
        """One vector holding every channel in order."""
        if qv.whole:
            return qv.parts[0]
        if any(p.offset is not None for p in qv.parts):
            raise UnsupportedOpError("a value with an input offset cannot be merged", where=f"node '{self.node}'")
        order = np.concatenate([p.idx for p in qv.parts])
        bits = max(p.bits for p in qv.parts)
        scale = np.concatenate([p.scale for p in qv.parts])
        cat = self.emit(Concat(out=self.nm(f"{self.node}.cat"), xs=tuple(p.vec for p in qv.parts), node=self.node),
                        qv.n, bits, scale)
        if np.array_equal(order, np.arange(qv.n)):
            return Part(cat, order, bits, scale)
        inv = np.argsort(order)
        v = self.emit(Gather(out=self.nm(f"{self.node}.perm"), x=cat, index=self.k("perm", inv), node=self.node),
                      qv.n, bits, scale[inv], tag)
        return Part(v, np.arange(qv.n), bits, scale[inv])

    def per_tensor(self, p: Part, bits: int, tag=None) -> Part:
        if np.all(p.scale == p.scale[0]):
            return p
        s = float(p.scale.max()) * (qmax(p.bits) / qmax(bits))
        out = np.full(p.scale.size, s)
        v = self.requant(p.vec, p.scale, out, bits, "pt", tag)
        return Part(v, p.idx, bits, out)

    # -- requantization ---------------------------------------------------------------------------
    def requant(self, vec: str, in_scale, out_scale, bits: int, base: str, tag=None) -> str:
        n = self.pb.vectors[vec].n
        in_scale = np.broadcast_to(np.asarray(in_scale, np.float64), (n,))
        out_scale = np.broadcast_to(np.asarray(out_scale, np.float64), (n,))
        lo, hi = self.pb.interval(vec)
        pre = max(0, bits_for(lo, hi) - 32)
        ratio = in_scale / out_scale * (2.0 ** pre)
        if np.any(ratio < 0):
            raise UnsupportedOpError("a negative scale ratio cannot be requantized", where=f"node '{self.node}'")
        m, s = quantize_multiplier(ratio)
        if np.all(m == m[0]) and np.all(s == s[0]):
            mk, sk = self.scalar(int(m[0])), self.scalar(int(s[0]))
        else:
            mk, sk = self.k(f"{base}.mult", m, np.int32), self.k(f"{base}.shift", s, np.int8)
        return self.emit(Requant(out=self.nm(f"{self.node}:{base}"), x=vec, mult=mk, shift=sk, pre=pre,
                                 node=self.node), n, bits, out_scale, tag)

    def clamp_bits(self, vec: str, bits: int, base: str, scale=None, tag=None) -> str:
        lo, hi = int_range(bits)
        vlo, vhi = self.pb.interval(vec)
        n = self.pb.vectors[vec].n
        if lo <= vlo and vhi <= hi and self.bits_of(vec) <= bits and tag is None:
            return vec
        return self.emit(Clamp(out=self.nm(f"{self.node}:{base}"), x=vec, lo=self.scalar(lo), hi=self.scalar(hi),
                               node=self.node), n, bits, scale, tag)

    # -- weights ------------------------------------------------------------------------------------
    def quant_matrix(self, name: str, w: np.ndarray, in_scale: np.ndarray, bits: int,
                     per_channel: Optional[bool] = None, x_absmax: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(Wq, row scale in output units, dequantized W in input units).

        With ``x_absmax`` (the input's worst-case magnitude), row scales are enlarged where needed so
        that sum |Wq[o, :]| * x_absmax stays within 7/8 of the configured accumulator width (int32 by
        default): the matvec then never needs a wider accumulator (int16 x int16 LMU memories)."""
        if per_channel is None:
            per_channel = self.cfg.weight_granularity is Granularity.PER_CHANNEL
        wsc = np.asarray(w, np.float64) * in_scale[None, :]
        wq, ws = quantize_weight(wsc, bits, per_channel)
        acc_bits = self.cfg.accumulator_bits
        if x_absmax and acc_bits < 64 and wsc.size:
            limit = 0.875 * 2.0 ** (acc_bits - 1) - 0.5 * wsc.shape[1] * x_absmax
            need = np.abs(wsc).sum(axis=1) * x_absmax / max(limit, 1.0)
            if not per_channel:
                need = np.full_like(need, need.max())
            if np.any(need > ws):
                ws = np.maximum(ws, need)
                wq = np.clip(np.rint(wsc / ws[:, None]), -qmax(bits), qmax(bits)).astype(np.int64)
        wd = wq * ws[:, None] / in_scale[None, :]
        key = name
        i = 1
        while key in self.weights:
            key = f"{name}#{i}"
            i += 1
        self.weights[key] = WeightPlan(key, bits, "per_channel" if per_channel else "per_tensor", ws,
                                       tuple(w.shape), _sqnr(np.asarray(w, np.float64), wd))
        return wq, ws, wd

    # -- affine sums ------------------------------------------------------------------------------
    def affine(self, terms: Sequence, bias: Optional[np.ndarray], out: TensorPlan, tag: Optional[str],
               fake_bias: Optional[Callable[[np.ndarray], None]] = None, n_out: Optional[int] = None,
               base: Optional[str] = None) -> QV:
        """sum of terms + bias, quantized as ``out``. Returns the output value (parts per ``out``)."""
        base = base or (tag.split(":")[-1].split("/")[-1] if tag else "y")
        mats = []  # (Wq, ws, vec, blocks)
        extra = 0.0  # W @ offset of offset inputs, folded into the integer bias
        extra_deq = 0.0  # the same with the dequantized weights (what the fake simulation must subtract)
        n = n_out if n_out is not None else out.n
        for t in terms:
            if isinstance(t, RawTerm):
                continue
            wd_full = np.zeros_like(np.asarray(t.w, np.float64))
            for p in t.qv.parts:
                wp = np.asarray(t.w, np.float64)[:, p.idx]
                lo, hi = self.pb.interval(p.vec)
                wq, ws, wd = self.quant_matrix(t.name, wp, p.scale, t.bits, t.per_channel, max(abs(lo), abs(hi)))
                wd_full[:, p.idx] = wd
                if p.offset is not None:
                    extra = extra + np.tile(wp @ p.offset, t.blocks)
                    extra_deq = extra_deq + np.tile(wd @ p.offset, t.blocks)
                mats.append((wq, np.tile(ws, t.blocks), p.vec, t.blocks))
            if t.fake is not None:
                t.fake(wd_full)
        raws = [t for t in terms if isinstance(t, RawTerm)]
        b = np.zeros(n) if bias is None else np.broadcast_to(np.asarray(bias, np.float64), (n,)).copy()
        b = b + extra
        has_bias = bias is not None or np.any(np.asarray(extra) != 0)
        if len(mats) == 1 and not raws:
            wq, ws, vec, blocks = mats[0]
            bq = round_half_up(b / ws).astype(np.int64) if has_bias else None
            if bq is not None and blocks > 1:
                bq_b = bq.reshape(blocks, -1)
                if not np.all(bq_b == bq_b[0]):
                    raise UnsupportedOpError("a blocked matvec needs the same bias in every block",
                                             where=f"node '{self.node}'")
                bq = bq_b[0]
            acc = self.emit(MatVec(out=self.nm(f"{self.node}:{base}.acc"), x=vec, w=self.k(f"{base}.w", wq),
                                   bias=None if bq is None else self.k(f"{base}.b", bq), blocks=blocks,
                                   node=self.node), n, None, ws)
            if fake_bias is not None:
                fake_bias((np.tile(bq, blocks) * ws if bq is not None else np.zeros(n)) - extra_deq)
            return self.finish(acc, ws, out, tag, base)
        if not mats and len(raws) == 1 and not has_bias:
            if fake_bias is not None:
                fake_bias(np.zeros(n))
            return self.finish(raws[0].vec, raws[0].scale, out, tag, base)
        # several terms: a fine common domain P = out_scale / 2^F, with F as large as the worst case
        # of the sum allows in int32 (no term can saturate)
        accs = []
        bound = 0.0  # worst-case |sum| in units of the output scale
        for i, (wq, ws, vec, blocks) in enumerate(mats):
            acc = self.emit(MatVec(out=self.nm(f"{self.node}:{base}.acc{i}"), x=vec, w=self.k(f"{base}.w{i}", wq),
                                   bias=None, blocks=blocks, node=self.node), n, None, ws)
            accs.append((acc, ws, f"{base}.t{i}"))
        for j, r in enumerate(raws):
            accs.append((r.vec, r.scale, f"{base}.r{j}"))
        for vec, sc, _ in accs:
            lo, hi = self.pb.interval(vec)
            bound += max(abs(lo), abs(hi)) * float(np.max(np.broadcast_to(sc, (n,)) / out.scale))
        if has_bias:
            bound += float(np.max(np.abs(b) / out.scale))
        f_bits = int(math.floor(29.0 - math.log2(max(bound, 1.0))))
        f_bits = max(-8, min(16, f_bits))
        P = out.scale * 2.0 ** -f_bits
        pieces = []
        for vec, sc, nm in accs:
            lo, hi = self.pb.interval(vec)
            top = max(abs(lo), abs(hi)) * float(np.max(np.broadcast_to(sc, (n,)) / P)) + 1
            pieces.append(self.requant(vec, sc, P, min(31, bits_for(-int(top) - 1, int(top) + 1)), nm))
        total = pieces[0]
        for i, pc in enumerate(pieces[1:]):
            total = self.emit(Add(out=self.nm(f"{self.node}:{base}.sum{i}"), a=total, b=pc, node=self.node), n,
                              None, P)
        if has_bias:
            bq = round_half_up(b / P).astype(np.int64)
            total = self.emit(Add(out=self.nm(f"{self.node}:{base}.bias"), a=total, b=self.k(f"{base}.b", bq),
                                  node=self.node), n, None, P)
            if fake_bias is not None:
                fake_bias(bq * P - extra_deq)
        elif fake_bias is not None:
            fake_bias(np.zeros(n))
        return self.finish(total, P, out, tag, base)

    def finish(self, vec: str, scale, out: TensorPlan, tag, base) -> QV:
        """Requantize an accumulator into ``out`` (one vector, or the parts of a split value)."""
        n = out.n
        if not out.split:
            v = self.requant(vec, scale, out.scale, out.bits, base, tag)
            return QV(n, [Part(v, np.arange(n), out.bits, out.scale.copy())])
        hi = np.asarray(out.split, dtype=np.int64)
        lo = np.setdiff1d(np.arange(n), hi)
        parts = []
        scale = np.broadcast_to(np.asarray(scale, np.float64), (n,))
        for idx, bits, nm in ((lo, out.bits, "lo"), (hi, out.split_bits, "hi")):
            g = self.emit(Gather(out=self.nm(f"{self.node}:{base}.{nm}g"), x=vec, index=self.k(f"{base}.{nm}", idx),
                                 node=self.node), idx.size, self.bits_of(vec), scale[idx])
            v = self.requant(g, scale[idx], out.scale[idx], bits, f"{base}.{nm}", f"{tag}.{nm}" if tag else None)
            parts.append(Part(v, idx, bits, out.scale[idx].copy()))
        return QV(n, parts)

    # -- tables and gates ---------------------------------------------------------------------------
    def lut(self, p: Part, fn: str, out: TensorPlan, tag, base: str, slope=0.01, lo=-1.0, hi=1.0) -> Part:
        if p.bits > 16:
            p = self.per_tensor(p, 16)
            s16 = float(p.scale.max()) * qmax(p.bits) / qmax(16)
            v = self.requant(p.vec, p.scale, s16, 16, f"{base}.in")
            p = Part(v, p.idx, 16, np.full(p.scale.size, s16))
        p = self.per_tensor(p, p.bits)
        s_in = float(p.scale[0])
        if not np.all(out.scale == out.scale[0]):
            raise UnsupportedOpError("a table output needs a per-tensor scale", where=f"node '{self.node}'")
        s_out = float(out.scale[0])
        table = make_table(fn, s_in, p.bits, s_out, out.bits, self.cfg.lut_table_bits, slope, lo, hi)
        dtype = np.int8 if out.bits <= 8 else np.int16
        v = self.emit(Lut(out=self.nm(f"{self.node}:{base}"), x=p.vec, table=self.k(f"{base}.lut", table, dtype),
                          node=self.node), p.scale.size, out.bits, out.scale, tag)
        return Part(v, p.idx, out.bits, out.scale.copy())

    def lerp(self, z: Part, a: Part, b: Part, out: TensorPlan, tag, base: str) -> Part:
        """a + z (b - a) with z a unit (Q(bits-1)) gate; a, b and out share one scale."""
        if not (np.allclose(a.scale, out.scale, rtol=0, atol=0)):
            v = self.requant(a.vec, a.scale, out.scale, out.bits, f"{base}.a")
            a = Part(v, a.idx, out.bits, out.scale.copy())
        if not (np.allclose(b.scale, out.scale, rtol=0, atol=0)):
            v = self.requant(b.vec, b.scale, out.scale, out.bits, f"{base}.b")
            b = Part(v, b.idx, out.bits, out.scale.copy())
        n = out.n
        d = self.emit(Sub(out=self.nm(f"{self.node}:{base}.d"), a=b.vec, b=a.vec, node=self.node), n)
        pr = self.emit(Mul(out=self.nm(f"{self.node}:{base}.zd"), a=z.vec, b=d, node=self.node), n)
        zf = z.bits - 1
        dlo, dhi = self.pb.interval(d)
        step = self.requant(pr, 2.0 ** -zf, 1.0, bits_for(dlo, dhi), f"{base}.step")
        s = self.emit(Add(out=self.nm(f"{self.node}:{base}.s"), a=a.vec, b=step, node=self.node), n)
        v = self.clamp_bits(s, out.bits, base, out.scale, tag)
        return Part(v, np.arange(n), out.bits, out.scale.copy())

    def mul_raw(self, a: Part, b: Part, base: str) -> RawTerm:
        v = self.emit(Mul(out=self.nm(f"{self.node}:{base}"), a=a.vec, b=b.vec, node=self.node), a.scale.size)
        return RawTerm(v, a.scale * b.scale)

    def load(self, key: str, tag=None) -> Part:
        st = self.pb.states[key]
        v = self.emit(Load(out=self.nm(f"{key}.prev"), state=key, node=self.node), st.n, st.bits, st.scale, None)
        return Part(v, np.arange(st.n), st.bits, st.scale.copy() if st.scale is not None else np.ones(st.n))

    def store(self, key: str, vec: str) -> None:
        self.pb.emit(Store(out=key, x=vec, node=self.node), self.pb.states[key].n)

    def state(self, key: str, n: int, entry: Optional[TensorPlan] = None, bits=None, scale=None, shape=None):
        e = entry
        b = bits if bits is not None else e.bits
        s = scale if scale is not None else (e.scale if e is not None else np.ones(n))
        self.pb.add_state(key, shape or (n,), b, np.broadcast_to(s, (n,)))

    # ------------------------------------------------------------------------------------------
    # driver

    def run(self) -> Program:
        g = self.g
        types = g.value_types
        in_name = g.inputs[0].name
        self.lower_input(in_name)
        seq = [n for n in g.nodes if all(types[i].temporal for i in n.inputs)]
        pooled = [n for n in g.nodes if n not in seq]
        self.pb.section = "step"
        for node in seq:
            self.node = node.name
            self.lower_node(node)
        self.pb.section = "final"
        for node in seq:
            if isinstance(node.op, O.Readout):
                self.node = node.name
                self.readout_final(node)
        for node in pooled:
            self.node = node.name
            self.lower_node(node)
        for o in g.outputs:
            p = self.single(self.vals[o])
            self.pb.outputs.append(OutputSpec(o, p.vec, types[o].temporal, p.scale.copy()))
        if self.max_steps:
            self.pb.metadata["max_steps"] = int(min(self.max_steps))
        self.pb.metadata["config"] = self.cfg.name
        return self.pb.build()

    def lower_input(self, name: str) -> None:
        e = self.e(name)
        n = self.g.in_features
        if e.absorbed:
            return
        off = e.offset if e.offset is not None else np.zeros(n)
        if e.split:
            hi = np.asarray(e.split, np.int64)
            lo = np.setdiff1d(np.arange(n), hi)
            parts = []
            for idx, bits, nm in ((lo, e.bits, f"{name}.lo"), (hi, e.split_bits, f"{name}.hi")):
                spec = InputSpec(nm, idx, bits, e.scale[idx], 1.0 / e.scale[idx], off[idx])
                self.pb.add_input(spec, tag=nm)
                parts.append(Part(nm, idx, bits, e.scale[idx].copy(), off[idx] if e.offset is not None else None))
            self.vals[name] = QV(n, parts)
            return
        spec = InputSpec(name, np.arange(n), e.bits, e.scale.copy(), 1.0 / e.scale, off)
        self.pb.add_input(spec, tag=name)
        self.vals[name] = QV(n, [Part(name, np.arange(n), e.bits, e.scale.copy(), e.offset)])

    def lower_node(self, node: Node) -> None:
        fn = LOWER.get(type(node.op))
        if fn is None:
            raise UnsupportedOpError(f"cannot quantize op kind '{node.op.kind}'", where=f"node '{node.name}'",
                                     hint="supported: " + ", ".join(sorted(c.kind for c in LOWER)))
        try:
            fn(self, node, node.op)
        except UnsupportedOpError as err:
            if err.where is None:
                err.where = f"node '{node.name}' ({node.op.kind})"
            raise

    def out_value(self, node: Node, qv: QV, i: int = 0) -> None:
        self.vals[node.outputs[i]] = qv

    # ------------------------------------------------------------------------------------------
    # readouts

    def readout_step(self, node: Node, op: O.Readout) -> None:
        x = self.single(self.vals[node.inputs[0]])
        n = x.scale.size
        key = f"{node.name}/"
        if op.mode is ReadoutMode.LAST:
            self.state(key + "last", n, bits=x.bits, scale=x.scale)
            self.store(key + "last", x.vec)
            return
        self.state(key + "sum", n, bits=32, scale=x.scale)
        s = self.load(key + "sum")
        lo, hi = int_range(x.bits)
        self.max_steps.append(((1 << 31) - 1) // max(abs(lo), hi, 1))
        s2 = self.emit(Add(out=self.nm(f"{node.name}:sum"), a=s.vec, b=x.vec, accumulate=True, node=node.name),
                       n, 32, x.scale)
        self.store(key + "sum", s2)
        if op.mode is ReadoutMode.MEAN:
            self.state(key + "count", 1, bits=32, scale=np.ones(1))
            c = self.load(key + "count")
            c2 = self.emit(Add(out=self.nm(f"{node.name}:count"), a=c.vec, b=self.scalar(1), accumulate=True,
                               node=node.name), 1, 32)
            self.store(key + "count", c2)
        self._readout_in = getattr(self, "_readout_in", {})
        self._readout_in[node.name] = x

    def readout_final(self, node: Node) -> None:
        op: O.Readout = node.op
        key = f"{node.name}/"
        out = self.e(node.outputs[0])
        if op.mode is ReadoutMode.LAST:
            p = self.load(key + "last")
            self.vals[node.outputs[0]] = QV(p.scale.size, [p])
            return
        x_scale = self.pb.states[key + "sum"].scale
        n = x_scale.size
        s = self.load(key + "sum")
        if op.mode is ReadoutMode.SUM:
            v = self.requant(s.vec, x_scale, out.scale, out.bits, "sum", node.outputs[0])
            self.vals[node.outputs[0]] = QV(n, [Part(v, np.arange(n), out.bits, out.scale.copy())])
            return
        c = self.load(key + "count")
        c1 = self.emit(Clamp(out=self.nm(f"{node.name}:count1"), x=c.vec, lo=self.scalar(1),
                             hi=self.scalar((1 << 31) - 1), node=node.name), 1, 32)
        ratio = x_scale / out.scale
        kf = int(round(math.log2(float(ratio[0])))) if ratio[0] > 0 else 0
        if not np.allclose(ratio, 2.0 ** kf, rtol=1e-12, atol=0) or kf < 0:
            raise UnsupportedOpError("mean readout scale must be the input scale / 2^k")
        num = s.vec
        if kf > 0:
            num = self.emit(Mul(out=self.nm(f"{node.name}:scaled"), a=s.vec, b=self.scalar(1 << kf),
                                node=node.name), n)
        m = self.emit(Div(out=self.nm(f"{node.name}:mean"), a=num, b=c1, node=node.name), n)
        v = self.clamp_bits(m, out.bits, "meanq", out.scale, node.outputs[0])
        self.vals[node.outputs[0]] = QV(n, [Part(v, np.arange(n), out.bits, out.scale.copy())])


LOWER: dict[type, Callable[[Lowerer, Node, O.Op], None]] = {}


def _lower(*classes):
    def deco(fn):
        for c in classes:
            LOWER[c] = fn
        return fn

    return deco


def _setter(d: dict, key: str, rows=None, shape=None):
    def put(v):
        v = np.asarray(v, np.float64)
        if rows is None:
            d[key] = v.reshape(shape) if shape is not None else v
        else:
            if key not in d:
                raise KeyError(key)
            d[key][rows] = v

    return put


def _ensure(d: dict, key: str, n: int):
    if key not in d:
        d[key] = np.zeros(n)
    return d


# ----------------------------------------------------------------------------------------------
# feed-forward ops


@_lower(O.Linear)
def _linear(L: Lowerer, node: Node, op: O.Linear):
    fk = L.fake[node.name]
    out = L.e(node.outputs[0])
    x = L.vals[node.inputs[0]]
    _ensure(fk, "bias", op.weight.shape[0])
    qv = L.affine([MatTerm(op.weight, x, f"{node.name}.weight", L.wbits(f"{node.name}.weight", L.cfg.weight_bits),
                           _setter(fk, "weight"))],
                  op.bias, out, node.outputs[0], _setter(fk, "bias"), base="y")
    L.out_value(node, qv)


@_lower(O.Conv1d)
def _conv1d(L: Lowerer, node: Node, op: O.Conv1d):
    fk = L.fake[node.name]
    out = L.e(node.outputs[0])
    x = L.single(L.vals[node.inputs[0]])
    C = op.in_features
    w = np.asarray(op.weight, np.float64)
    out_ch, cg, K = w.shape
    hist = op.history
    win = hist + 1
    groups = op.groups
    wf = np.zeros((out_ch, win * C))
    for o in range(out_ch):
        gi = o // (out_ch // groups)
        for k in range(K):
            pos = k * op.dilation
            wf[o, pos * C + gi * cg: pos * C + (gi + 1) * cg] = w[o, :, k]
    if hist:
        key = f"{node.name}/buf"
        L.pb.add_state(key, (hist, C), x.bits, np.tile(x.scale, hist))
        b = L.load(key)
        cat = L.emit(Concat(out=L.nm(f"{node.name}:window"), xs=(b.vec, x.vec), node=node.name), win * C, x.bits,
                     np.tile(x.scale, win))
        window = Part(cat, np.arange(win * C), x.bits, np.tile(x.scale, win))
        nb = L.emit(Gather(out=L.nm(f"{node.name}:buf"), x=cat, index=L.k("shift", np.arange(C, win * C)),
                           node=node.name), hist * C, x.bits)
        L.store(key, nb)
    else:
        window = x

    def put_w(wd):
        wr = np.zeros_like(w)
        for o in range(out_ch):
            gi = o // (out_ch // groups)
            for k in range(K):
                pos = k * op.dilation
                wr[o, :, k] = wd[o, pos * C + gi * cg: pos * C + (gi + 1) * cg]
        fk["weight"] = wr

    _ensure(fk, "bias", out_ch)
    qv = L.affine([MatTerm(wf, QV(win * C, [window]), f"{node.name}.weight",
                           L.wbits(f"{node.name}.weight", L.cfg.weight_bits), put_w)],
                  op.bias, out, node.outputs[0], _setter(fk, "bias"), base="y")
    L.out_value(node, qv)


def _diag_affine(L: Lowerer, x: Part, a: np.ndarray, c: np.ndarray, out: TensorPlan, tag, base: str):
    """y = a * x + c per channel: integer multiply by a per-channel weight, add a bias, requantize."""
    n = x.scale.size
    bits = L.cfg.weight_bits
    wsc = a * x.scale
    ws = np.where(wsc != 0, np.abs(wsc) / qmax(bits), x.scale / qmax(bits))
    aq = np.rint(wsc / ws).astype(np.int64)
    bq = round_half_up(c / ws).astype(np.int64)
    pr = L.emit(Mul(out=L.nm(f"{L.node}:{base}.ax"), a=x.vec, b=L.k(f"{base}.a", aq), node=L.node), n)
    acc = L.emit(Add(out=L.nm(f"{L.node}:{base}.acc"), a=pr, b=L.k(f"{base}.c", bq), node=L.node), n, None, ws)
    qv = L.finish(acc, ws, out, tag, base)
    return qv, aq * ws / x.scale, bq * ws


@_lower(O.BatchNorm)
def _batchnorm(L: Lowerer, node: Node, op: O.BatchNorm):
    from .passes import bn_affine

    a, c = bn_affine(op)
    fk = L.fake[node.name]
    out = L.e(node.outputs[0])
    src = node.inputs[0]
    if src == L.g.inputs[0].name and L.e(src).absorbed:
        if np.any(a == 0):
            raise NumericsError("a BatchNorm with a zero scale cannot be merged into the input quantizer",
                                where=f"node '{node.name}'")
        n = a.size
        spec = InputSpec(node.outputs[0], np.arange(n), out.bits, out.scale.copy(), a / out.scale, -c / a)
        L.pb.add_input(spec, tag=node.outputs[0])
        L.out_value(node, QV(n, [Part(node.outputs[0], np.arange(n), out.bits, out.scale.copy())]))
        return
    x = L.single(L.vals[src])
    qv, ad, cd = _diag_affine(L, x, a, c, out, node.outputs[0], "bn")
    fk.update(mean=np.zeros(a.size), var=np.full(a.size, 1.0 - op.eps), weight=ad, bias=cd)
    L.out_value(node, qv)


@_lower(O.LayerNorm)
def _layernorm(L: Lowerer, node: Node, op: O.LayerNorm):
    fk = L.fake[node.name]
    out = L.e(node.outputs[0])
    x = L.single(L.vals[node.inputs[0]])
    x = L.per_tensor(x, x.bits)
    n = x.scale.size
    nd = node.name
    kshift = max(0, 15 - x.bits)
    xs = x.vec
    if kshift:
        xs = L.emit(Mul(out=L.nm(f"{nd}:xs"), a=x.vec, b=L.scalar(1 << kshift), node=nd), n)
    ones = L.k("ones", np.ones((1, n), np.int64), np.int8)
    s = L.emit(MatVec(out=L.nm(f"{nd}:sum"), x=xs, w=ones, node=nd), 1)
    nk = L.scalar(n)
    mean = L.emit(Div(out=L.nm(f"{nd}:mean"), a=s, b=nk, node=nd), 1)
    d = L.emit(Sub(out=L.nm(f"{nd}:d"), a=xs, b=mean, node=nd), n)
    d2 = L.emit(Mul(out=L.nm(f"{nd}:d2"), a=d, b=d, node=nd), n)
    ss = L.emit(MatVec(out=L.nm(f"{nd}:ss"), x=d2, w=ones, node=nd), 1)
    var = L.emit(Div(out=L.nm(f"{nd}:var"), a=ss, b=nk, node=nd), 1)
    unit = float(x.scale[0]) / (1 << kshift)
    eps_q = int(round_half_up(op.eps / unit ** 2))
    ve = L.emit(Add(out=L.nm(f"{nd}:ve"), a=var, b=L.scalar(eps_q), node=nd), 1)
    lo, hi = L.pb.interval(ve)
    ve1 = L.emit(Clamp(out=L.nm(f"{nd}:ve1"), x=ve, lo=L.scalar(1), hi=L.scalar(max(hi, 1)), node=nd), 1,
                 bits_for(1, max(hi, 1)))
    r = L.emit(Isqrt(out=L.nm(f"{nd}:rstd"), x=ve1, node=nd), 1)
    F = 12
    dF = L.emit(Mul(out=L.nm(f"{nd}:dF"), a=d, b=L.scalar(1 << F), node=nd), n)
    nrm = L.emit(Div(out=L.nm(f"{nd}:norm"), a=dF, b=r, node=nd), n)
    # the normalised value has at most sqrt(n) magnitude: clamp to that bound
    lim = int(math.ceil(math.sqrt(n) * (1 << F))) + 1
    nrm = L.emit(Clamp(out=L.nm(f"{nd}:normc"), x=nrm, lo=L.scalar(-lim), hi=L.scalar(lim), node=nd), n,
                 bits_for(-lim, lim))
    w = np.ones(n) if op.weight is None else np.asarray(op.weight, np.float64)
    b = np.zeros(n) if op.bias is None else np.asarray(op.bias, np.float64)
    qv, wd, bd = _diag_affine(L, Part(nrm, np.arange(n), bits_for(-lim, lim), np.full(n, 2.0 ** -F)), w, b, out,
                              node.outputs[0], "ln")
    fk["weight"], fk["bias"] = wd, bd
    L.out_value(node, qv)


@_lower(O.Activation)
def _activation(L: Lowerer, node: Node, op: O.Activation):
    xq = L.vals[node.inputs[0]]
    out = L.e(node.outputs[0])
    if op.fn is Act.IDENTITY:
        L.out_value(node, xq)
        return
    if op.fn in (Act.RELU, Act.HARDTANH):
        parts = []
        for p in xq.parts:
            if p.offset is not None:
                raise UnsupportedOpError("activation of an offset input")
            n = p.scale.size
            if op.fn is Act.RELU:
                lo_k, hi_k = L.scalar(0), L.scalar(int_range(p.bits)[1])
            else:
                lo_k = L.k("lo", np.clip(np.ceil(op.lo / p.scale - 0.5), *int_range(p.bits)).astype(np.int64))
                hi_k = L.k("hi", np.clip(np.floor(op.hi / p.scale + 0.5), *int_range(p.bits)).astype(np.int64))
            v = L.emit(Clamp(out=L.nm(f"{node.name}:y"), x=p.vec, lo=lo_k, hi=hi_k, node=node.name), n, p.bits,
                       p.scale, node.outputs[0] if xq.whole else None)
            parts.append(Part(v, p.idx, p.bits, p.scale))
        L.out_value(node, QV(xq.n, parts))
        return
    x = L.single(xq)
    y = L.lut(x, op.fn.value, out, node.outputs[0], "y", op.slope, op.lo, op.hi)
    L.out_value(node, QV(xq.n, [y]))


@_lower(O.Add)
def _add(L: Lowerer, node: Node, op: O.Add):
    out = L.e(node.outputs[0])
    a = L.single(L.vals[node.inputs[0]])
    b = L.single(L.vals[node.inputs[1]])
    qv = L.affine([RawTerm(a.vec, a.scale), RawTerm(b.vec, b.scale)], None, out, node.outputs[0], base="y")
    L.out_value(node, qv)


@_lower(O.Concat)
def _concat(L: Lowerer, node: Node, op: O.Concat):
    parts = []
    off = 0
    for i in node.inputs:
        v = L.vals[i]
        for p in v.parts:
            parts.append(Part(p.vec, p.idx + off, p.bits, p.scale, p.offset))
        off += v.n
    L.out_value(node, QV(off, parts))


@_lower(O.Readout)
def _readout(L: Lowerer, node: Node, op: O.Readout):
    L.readout_step(node, op)


# ----------------------------------------------------------------------------------------------
# recurrent cells


def _gate_terms(L: Lowerer, node: Node, x: QV, h: Optional[Part], w_ih, w_hh, rows, fk, wbits_ih, wbits_hh):
    terms = [MatTerm(np.asarray(w_ih)[rows], x, f"{node.name}.w_ih", wbits_ih, _setter(fk, "w_ih", rows))]
    if h is not None:
        terms.append(MatTerm(np.asarray(w_hh)[rows], QV(h.scale.size, [h]), f"{node.name}.w_hh", wbits_hh,
                             _setter(fk, "w_hh", rows)))
    return terms


def _bias_rows(op, rows, which=("b_ih", "b_hh")):
    tot = 0.0
    for nm in which:
        b = getattr(op, nm)
        if b is not None:
            tot = tot + np.asarray(b, np.float64)[rows]
    return tot


def _split_bias_setter(fk, rows, keep="b_ih", zero="b_hh"):
    def put(v):
        fk[keep][rows] = v
        fk[zero][rows] = 0.0

    return put


def _act_out(L: Lowerer, node: Node, fn: Act, pre_terms, bias, fake_bias, target: str, state: bool) -> Part:
    """Terms -> fn -> the point ``target`` (a state point or the output value)."""
    tgt = L.e(target)
    if fn is Act.IDENTITY:
        return L.single(L.affine(pre_terms, bias, tgt, target, fake_bias))
    pre_e = L.e(f"{node.name}:pre")
    pre = L.single(L.affine(pre_terms, bias, pre_e, f"{node.name}:pre", fake_bias))
    if fn is Act.RELU:
        r = L.emit(Clamp(out=L.nm(f"{node.name}:relu"), x=pre.vec, lo=L.scalar(0),
                         hi=L.scalar(int_range(pre.bits)[1]), node=node.name), pre.scale.size, pre.bits, pre.scale)
        v = L.requant(r, pre.scale, tgt.scale, tgt.bits, "h", target)
        return Part(v, np.arange(tgt.n), tgt.bits, tgt.scale.copy())
    return L.lut(pre, fn.value, tgt, target, "h")


@_lower(O.RNN)
def _rnn(L: Lowerer, node: Node, op: O.RNN):
    fk = L.fake[node.name]
    H = op.hidden_size
    x = L.vals[node.inputs[0]]
    he = L.e(f"{node.name}/h")
    L.state(f"{node.name}/h", H, he)
    h = L.load(f"{node.name}/h")
    for k in ("b_ih", "b_hh"):
        _ensure(fk, k, H)
    rows = slice(0, H)
    terms = _gate_terms(L, node, x, h, op.w_ih, op.w_hh, rows, fk,
                        L.wbits(f"{node.name}.w_ih", L.cfg.weight_bits), L.wbits(f"{node.name}.w_hh", L.cfg.weight_bits))
    hn = _act_out(L, node, op.act, terms, _bias_rows(op, rows), _split_bias_setter(fk, rows), f"{node.name}/h", True)
    L.store(f"{node.name}/h", hn.vec)
    L.out_value(node, QV(H, [hn]))


@_lower(O.GRU)
def _gru(L: Lowerer, node: Node, op: O.GRU):
    fk = L.fake[node.name]
    nd = node.name
    H = op.hidden_size
    x = L.vals[node.inputs[0]]
    he = L.e(f"{nd}/h")
    L.state(f"{nd}/h", H, he)
    h = L.load(f"{nd}/h")
    for k in ("b_ih", "b_hh"):
        _ensure(fk, k, 3 * H)
    wb_i = L.wbits(f"{nd}.w_ih", L.cfg.weight_bits)
    wb_h = L.wbits(f"{nd}.w_hh", L.cfg.weight_bits)

    def gate(k, name):
        rows = slice(k * H, (k + 1) * H)
        terms = _gate_terms(L, node, x, h, op.w_ih, op.w_hh, rows, fk, wb_i, wb_h)
        pre = L.single(L.affine(terms, _bias_rows(op, rows), L.e(f"{nd}:{name}_pre"), f"{nd}:{name}_pre",
                                _split_bias_setter(fk, rows)))
        return L.lut(pre, "sigmoid", L.e(f"{nd}:{name}"), f"{nd}:{name}", name)

    r = gate(0, "r")
    z = gate(1, "z")
    rows = slice(2 * H, 3 * H)
    w_in = np.asarray(op.w_ih)[rows]
    w_hn = np.asarray(op.w_hh)[rows]
    b_in = _bias_rows(op, rows, ("b_ih",))
    b_hn = _bias_rows(op, rows, ("b_hh",))
    if op.reset_after:
        hn = L.single(L.affine([MatTerm(w_hn, QV(H, [h]), f"{nd}.w_hh", wb_h, _setter(fk, "w_hh", rows))],
                               b_hn if op.b_hh is not None else None, L.e(f"{nd}:hn"), f"{nd}:hn",
                               _setter(fk, "b_hh", rows)))
        terms = [MatTerm(w_in, x, f"{nd}.w_ih", wb_i, _setter(fk, "w_ih", rows)), L.mul_raw(r, hn, "rhn")]
        n_pre = L.single(L.affine(terms, b_in if op.b_ih is not None else None, L.e(f"{nd}:n_pre"),
                                  f"{nd}:n_pre", _setter(fk, "b_ih", rows)))
    else:
        rh_e = L.e(f"{nd}:rh")
        pr = L.mul_raw(r, h, "rh_p")
        rh_v = L.requant(pr.vec, pr.scale, rh_e.scale, rh_e.bits, "rh", f"{nd}:rh")
        rh = Part(rh_v, np.arange(H), rh_e.bits, rh_e.scale.copy())
        terms = [MatTerm(w_in, x, f"{nd}.w_ih", wb_i, _setter(fk, "w_ih", rows)),
                 MatTerm(w_hn, QV(H, [rh]), f"{nd}.w_hh", wb_h, _setter(fk, "w_hh", rows))]
        n_pre = L.single(L.affine(terms, _bias_rows(op, rows), L.e(f"{nd}:n_pre"), f"{nd}:n_pre",
                                  _split_bias_setter(fk, rows)))
    cand = L.lut(n_pre, "tanh", L.e(f"{nd}:n"), f"{nd}:n", "n")
    hn_ = L.lerp(z, cand, h, he, f"{nd}/h", "h")
    L.store(f"{nd}/h", hn_.vec)
    L.out_value(node, QV(H, [hn_]))


@_lower(O.LSTM)
def _lstm(L: Lowerer, node: Node, op: O.LSTM):
    fk = L.fake[node.name]
    nd = node.name
    H = op.hidden_size
    x = L.vals[node.inputs[0]]
    he, ce = L.e(f"{nd}/h"), L.e(f"{nd}/c")
    L.state(f"{nd}/h", H, he)
    L.state(f"{nd}/c", H, ce)
    h = L.load(f"{nd}/h")
    c = L.load(f"{nd}/c")
    for k in ("b_ih", "b_hh"):
        _ensure(fk, k, 4 * H)
    wb_i = L.wbits(f"{nd}.w_ih", L.cfg.weight_bits)
    wb_h = L.wbits(f"{nd}.w_hh", L.cfg.weight_bits)

    def gate(k, name, fn):
        rows = slice(k * H, (k + 1) * H)
        terms = _gate_terms(L, node, x, h, op.w_ih, op.w_hh, rows, fk, wb_i, wb_h)
        pre = L.single(L.affine(terms, _bias_rows(op, rows), L.e(f"{nd}:{name}_pre"), f"{nd}:{name}_pre",
                                _split_bias_setter(fk, rows)))
        return L.lut(pre, fn, L.e(f"{nd}:{name}"), f"{nd}:{name}", name)

    i = gate(0, "i", "sigmoid")
    f = gate(1, "f", "sigmoid")
    g = gate(2, "g", "tanh")
    o = gate(3, "o", "sigmoid")
    fc_e, ig_e = L.e(f"{nd}:fc"), L.e(f"{nd}:ig")
    fcr = L.mul_raw(f, c, "fc_p")
    fc = L.requant(fcr.vec, fcr.scale, fc_e.scale, fc_e.bits, "fc", f"{nd}:fc")
    igr = L.mul_raw(i, g, "ig_p")
    ig = L.requant(igr.vec, igr.scale, ig_e.scale, ig_e.bits, "ig", f"{nd}:ig")
    s = L.emit(Add(out=L.nm(f"{nd}:c_sum"), a=fc, b=ig, node=nd), H)
    cn = L.clamp_bits(s, ce.bits, "c", ce.scale, f"{nd}/c")
    L.store(f"{nd}/c", cn)
    cp_e = L.e(f"{nd}:c_pre")
    cp = L.requant(cn, ce.scale, cp_e.scale, cp_e.bits, "c_pre", f"{nd}:c_pre")
    tc = L.lut(Part(cp, np.arange(H), cp_e.bits, cp_e.scale.copy()), "tanh", L.e(f"{nd}:tc"), f"{nd}:tc", "tc")
    hr = L.mul_raw(o, tc, "h_p")
    hv = L.requant(hr.vec, hr.scale, he.scale, he.bits, "h", f"{nd}/h")
    L.store(f"{nd}/h", hv)
    L.out_value(node, QV(H, [Part(hv, np.arange(H), he.bits, he.scale.copy())]))


def _candidate(L: Lowerer, node: Node, op, x: QV, fk) -> Part:
    nd = node.name
    H = op.hidden_size
    _ensure(fk, "b_h", H)
    term = [MatTerm(op.w_h, x, f"{nd}.w_h", L.wbits(f"{nd}.w_h", L.cfg.weight_bits), _setter(fk, "w_h"))]
    ce = L.e(f"{nd}:c")
    if op.candidate is Act.IDENTITY:
        return L.single(L.affine(term, op.b_h, ce, f"{nd}:c", _setter(fk, "b_h")))
    pre = L.single(L.affine(term, op.b_h, L.e(f"{nd}:c_pre"), f"{nd}:c_pre", _setter(fk, "b_h")))
    return L.lut(pre, op.candidate.value, ce, f"{nd}:c", "c")


def _sig_gate(L: Lowerer, node: Node, x: QV, w, b, wname: str, name: str, fk) -> Part:
    nd = node.name
    H = np.asarray(w).shape[0]
    _ensure(fk, f"b_{wname[-1]}", H)
    pre = L.single(L.affine([MatTerm(w, x, f"{nd}.{wname}", L.wbits(f"{nd}.{wname}", L.cfg.weight_bits),
                                     _setter(fk, wname))], b, L.e(f"{nd}:{name}_pre"), f"{nd}:{name}_pre",
                            _setter(fk, f"b_{wname[-1]}")))
    return L.lut(pre, "sigmoid", L.e(f"{nd}:{name}"), f"{nd}:{name}", name)


@_lower(O.MinGRU)
def _mingru(L: Lowerer, node: Node, op: O.MinGRU):
    fk = L.fake[node.name]
    nd = node.name
    H = op.hidden_size
    x = L.vals[node.inputs[0]]
    he = L.e(f"{nd}/h")
    L.state(f"{nd}/h", H, he)
    h = L.load(f"{nd}/h")
    z = _sig_gate(L, node, x, op.w_z, op.b_z, "w_z", "z", fk)
    cand = _candidate(L, node, op, x, fk)
    hn = L.lerp(z, h, cand, he, f"{nd}/h", "h")
    L.store(f"{nd}/h", hn.vec)
    L.out_value(node, QV(H, [hn]))


@_lower(O.MinLSTM)
def _minlstm(L: Lowerer, node: Node, op: O.MinLSTM):
    fk = L.fake[node.name]
    nd = node.name
    H = op.hidden_size
    x = L.vals[node.inputs[0]]
    he = L.e(f"{nd}/h")
    L.state(f"{nd}/h", H, he)
    h = L.load(f"{nd}/h")
    f = _sig_gate(L, node, x, op.w_f, op.b_f, "w_f", "f", fk)
    i = _sig_gate(L, node, x, op.w_i, op.b_i, "w_i", "i", fk)
    fe = L.e(f"{nd}:fn")
    s = L.emit(Add(out=L.nm(f"{nd}:fi"), a=f.vec, b=i.vec, node=nd), H)
    lo, hi = L.pb.interval(s)
    s1 = L.emit(Clamp(out=L.nm(f"{nd}:fi1"), x=s, lo=L.scalar(1), hi=L.scalar(max(hi, 1)), node=nd), H,
                bits_for(1, max(hi, 1)))
    # f' = f / (f + i) in the unit scale of fn: f_q * 2^(bits-1) / (f_q + i_q), rounded half up
    if not (np.all(f.scale == f.scale[0]) and np.all(i.scale == f.scale[0])):
        raise UnsupportedOpError("minLSTM gates need one common scale")
    num = L.emit(Mul(out=L.nm(f"{nd}:fnum"), a=f.vec, b=L.scalar(1 << (fe.bits - 1)), node=nd), H)
    fr = L.emit(Div(out=L.nm(f"{nd}:fdiv"), a=num, b=s1, node=nd), H)
    fp_v = L.clamp_bits(fr, fe.bits, "fn", fe.scale, f"{nd}:fn")
    fp = Part(fp_v, np.arange(H), fe.bits, fe.scale.copy())
    cand = _candidate(L, node, op, x, fk)
    hn = L.lerp(fp, cand, h, he, f"{nd}/h", "h")
    L.store(f"{nd}/h", hn.vec)
    L.out_value(node, QV(H, [hn]))


@_lower(O.LMU)
def _lmu(L: Lowerer, node: Node, op: O.LMU):
    fk = L.fake[node.name]
    nd = node.name
    x = L.vals[node.inputs[0]]
    d, order = op.memory_d, op.order
    me = L.e(f"{nd}/m")
    L.state(f"{nd}/m", op.memory_size, me)
    m_prev = L.load(f"{nd}/m")
    has_h_state = op.has_hidden and (op.w_h is not None or op.e_h is not None)
    h_prev = None
    if has_h_state:
        he = L.e(f"{nd}/h")
        L.state(f"{nd}/h", op.hidden_size, he)
        h_prev = L.load(f"{nd}/h")
    elif not op.has_hidden:
        h_prev = m_prev
    wb = L.cfg.weight_bits
    # memory input u
    terms = [MatTerm(op.e_x, x, f"{nd}.e_x", L.wbits(f"{nd}.e_x", wb), _setter(fk, "e_x"))]
    if op.e_m is not None:
        terms.append(MatTerm(op.e_m, QV(m_prev.scale.size, [m_prev]), f"{nd}.e_m", L.wbits(f"{nd}.e_m", wb),
                             _setter(fk, "e_m")))
    if op.e_h is not None:
        terms.append(MatTerm(op.e_h, QV(h_prev.scale.size, [h_prev]), f"{nd}.e_h", L.wbits(f"{nd}.e_h", wb),
                             _setter(fk, "e_h")))
    _ensure(fk, "b_u", d)
    ue = L.e(f"{nd}:u")
    u = L.single(L.affine(terms, op.b_u, ue, f"{nd}:u", _setter(fk, "b_u")))
    # memory update, per memory dimension d: Abar @ m_d + Bbar * u_d
    m_prev_pt = L.per_tensor(m_prev, m_prev.bits)
    u_pt = L.per_tensor(u, u.bits)
    abar, bbar = fk["abar"], fk["bbar"].reshape(-1, 1)
    s_m, s_u = float(m_prev_pt.scale[0]), float(u_pt.scale[0])
    a_row = np.abs(abar).max(axis=1) * s_m
    b_row = np.abs(bbar[:, 0]) * s_u
    if m_prev_pt.bits == u_pt.bits and np.all(4.0 * a_row >= b_row):
        # one blocked matvec over [m_d ; u_d] with shared row scales: a single rounding; Abar keeps
        # (nearly) its full precision because it dominates every row
        cat = L.emit(Concat(out=L.nm(f"{nd}:mu"), xs=(m_prev_pt.vec, u_pt.vec), blocks=d, node=nd),
                     d * (order + 1), m_prev_pt.bits)
        wmem = np.concatenate([abar, bbar], axis=1)
        cat_part = Part(cat, np.arange(order + 1), m_prev_pt.bits, np.concatenate([np.full(order, s_m), [s_u]]))

        def put_ab(wd):
            fk["abar"] = wd[:, :order].copy()
            fk["bbar"] = wd[:, order].copy()

        terms = [MatTerm(wmem, QV(order + 1, [cat_part]), f"{nd}.AB", L.wbits(f"{nd}.AB", L.cfg.lmu_matrix_bits),
                         put_ab, blocks=d)]
    else:
        # two blocked matvecs with their own row scales (m and u on very different scales)
        m_part = Part(m_prev_pt.vec, np.arange(order), m_prev_pt.bits, np.full(order, s_m))
        u_part = Part(u_pt.vec, np.arange(1), u_pt.bits, np.full(1, s_u))
        terms = [MatTerm(abar, QV(order, [m_part]), f"{nd}.A", L.wbits(f"{nd}.A", L.cfg.lmu_matrix_bits),
                         _setter(fk, "abar"), blocks=d),
                 MatTerm(bbar, QV(1, [u_part]), f"{nd}.B", L.wbits(f"{nd}.B", L.cfg.lmu_matrix_bits),
                         _setter(fk, "bbar", shape=(order,)), blocks=d)]
    m_new = L.single(L.affine(terms, None, me, f"{nd}/m", None, n_out=d * order, base="m"))
    L.store(f"{nd}/m", m_new.vec)
    if not op.has_hidden:
        L.out_value(node, QV(op.memory_size, [m_new]))
        return
    H = op.hidden_size
    terms = [MatTerm(op.w_m, QV(op.memory_size, [m_new]), f"{nd}.w_m", L.wbits(f"{nd}.w_m", wb), _setter(fk, "w_m"))]
    if op.w_x is not None:
        terms.append(MatTerm(op.w_x, x, f"{nd}.w_x", L.wbits(f"{nd}.w_x", wb), _setter(fk, "w_x")))
    if op.w_h is not None:
        terms.append(MatTerm(op.w_h, QV(H, [h_prev]), f"{nd}.w_h", L.wbits(f"{nd}.w_h", wb), _setter(fk, "w_h")))
    _ensure(fk, "b_h", H)
    target = f"{nd}/h" if has_h_state else node.outputs[0]
    h = _act_out(L, node, op.act, terms, op.b_h, _setter(fk, "b_h"), target, has_h_state)
    if has_h_state:
        L.store(f"{nd}/h", h.vec)
    L.out_value(node, QV(H, [h]))


# ----------------------------------------------------------------------------------------------
# spiking


def _vec(p, n):
    return np.broadcast_to(np.asarray(p, np.float64), (n,)).copy()


def _neuron(L: Lowerer, node: Node, nprm: O.NeuronParams, prefix: str, pop: str, names, terms, bias, fk,
            fake_bias=None) -> Part:
    """Lower one LIF / CuBa-LIF population step; returns the 0/1 spike vector."""
    nd = node.name
    syn_key, mem_key = names
    mem_e = L.e(f"{nd}/{mem_key}")
    n = mem_e.n
    smem = float(mem_e.scale[0])
    L.state(f"{nd}/{mem_key}", n, mem_e)
    mem = L.load(f"{nd}/{mem_key}")
    thr = _vec(fk[prefix + "threshold"], n)
    thr_q = round_half_up(thr / smem).astype(np.int64)
    fk[prefix + "threshold"] = thr_q * smem
    thr_k = L.k(f"{pop}thr", thr_q)
    thr1 = L.k(f"{pop}thr1", thr_q + 1)
    R = L.emit(CmpGe(out=L.nm(f"{nd}:{pop}reset"), a=mem.vec, b=thr1, node=nd), n)
    beta_q = round_half_up(np.clip(_vec(fk[prefix + "beta"], n), 0, 1) * (1 << Q15)).astype(np.int64)
    fk[prefix + "beta"] = beta_q / float(1 << Q15)
    if nprm.synaptic:
        syn_e = L.e(f"{nd}/{syn_key}")
        L.state(f"{nd}/{syn_key}", n, syn_e)
        syn = L.load(f"{nd}/{syn_key}")
        cur = L.single(L.affine(terms, bias, L.e(f"{nd}:{pop}cur"), f"{nd}:{pop}cur", fake_bias, base=f"{pop}cur"))
        alpha_q = round_half_up(np.clip(_vec(fk[prefix + "alpha"], n), 0, 1) * (1 << Q15)).astype(np.int64)
        fk[prefix + "alpha"] = alpha_q / float(1 << Q15)
        as_e = L.e(f"{nd}:{pop}as")
        pr = L.emit(Mul(out=L.nm(f"{nd}:{pop}as_p"), a=syn.vec, b=L.k(f"{pop}alpha", alpha_q), node=nd), n)
        a_s = L.requant(pr, syn.scale * 2.0 ** -Q15, as_e.scale, as_e.bits, f"{pop}as", f"{nd}:{pop}as")
        ss = L.emit(Add(out=L.nm(f"{nd}:{pop}syn_sum"), a=a_s, b=cur.vec, node=nd), n)
        syn_new = L.clamp_bits(ss, syn_e.bits, f"{pop}syn", syn_e.scale, f"{nd}/{syn_key}")
        L.store(f"{nd}/{syn_key}", syn_new)
        dr_e = L.e(f"{nd}:{pop}drive")
        drive = L.requant(syn_new, syn_e.scale, dr_e.scale, dr_e.bits, f"{pop}drive", f"{nd}:{pop}drive")
    else:
        drive = L.single(L.affine(terms, bias, L.e(f"{nd}:{pop}cur"), f"{nd}:{pop}cur", fake_bias,
                                  base=f"{pop}cur")).vec
    bm_e = L.e(f"{nd}:{pop}bm")
    src = mem.vec
    if nprm.reset is ResetRule.ZERO:
        src = L.emit(Select(out=L.nm(f"{nd}:{pop}mkeep"), c=R, a=L.scalar(0), b=mem.vec, node=nd), n)
    pr = L.emit(Mul(out=L.nm(f"{nd}:{pop}bm_p"), a=src, b=L.k(f"{pop}beta", beta_q), node=nd), n)
    bm = L.requant(pr, mem.scale * 2.0 ** -Q15, bm_e.scale, bm_e.bits, f"{pop}bm", f"{nd}:{pop}bm")
    u = L.emit(Add(out=L.nm(f"{nd}:{pop}u"), a=bm, b=drive, node=nd), n)
    if nprm.reset is ResetRule.SUBTRACT:
        rt = L.emit(Mul(out=L.nm(f"{nd}:{pop}rthr"), a=R, b=thr_k, node=nd), n)
        u = L.emit(Sub(out=L.nm(f"{nd}:{pop}u_r"), a=u, b=rt, node=nd), n)
    elif nprm.reset is ResetRule.ZERO_TOTAL:
        u = L.emit(Select(out=L.nm(f"{nd}:{pop}u_r"), c=R, a=L.scalar(0), b=u, node=nd), n)
    uc = L.clamp_bits(u, mem_e.bits, f"{pop}mem_c", mem_e.scale, None)
    fired = L.emit(CmpGe(out=L.nm(f"{nd}:{pop}spk"), a=uc, b=thr1, node=nd), n)
    if not nprm.reset_delay and nprm.reset is not ResetRule.NONE:
        dd = L.emit(Sub(out=L.nm(f"{nd}:{pop}dreset"), a=fired, b=R, node=nd), n)
        if nprm.reset is ResetRule.SUBTRACT:
            corr = L.emit(Mul(out=L.nm(f"{nd}:{pop}corr"), a=dd, b=thr_k, node=nd), n)
        else:
            corr = L.emit(Mul(out=L.nm(f"{nd}:{pop}corr"), a=dd, b=uc, node=nd), n)
        u2 = L.emit(Sub(out=L.nm(f"{nd}:{pop}u2"), a=uc, b=corr, node=nd), n)
        uc = L.clamp_bits(u2, mem_e.bits, f"{pop}mem", mem_e.scale, f"{nd}/{mem_key}")
    else:
        L.pb.retag(uc, f"{nd}/{mem_key}")
    L.store(f"{nd}/{mem_key}", uc)
    scale = _vec(fk.get(prefix + "spike_scale", 1.0), n)
    return Part(fired, np.arange(n), 2, scale), Part(uc, np.arange(n), mem_e.bits, mem_e.scale.copy())


@_lower(O.LIF, O.CuBaLIF)
def _lif(L: Lowerer, node: Node, op):
    fk = L.fake[node.name]
    nd = node.name
    x = L.single(L.vals[node.inputs[0]])
    n = x.scale.size
    terms = [RawTerm(x.vec, x.scale)]
    bias = None
    fake_bias = None
    if op.recurrence is not Recurrence.NONE:
        sc = _vec(fk.get("neuron.spike_scale", 1.0), n)
        L.state(f"{nd}/spk", n, bits=2, scale=sc)
        spk = L.load(f"{nd}/spk")
        if op.recurrence is Recurrence.ONE_TO_ONE:
            v = _vec(fk["v_rec"], n) * sc
            sg = np.sign(v).astype(np.int64)
            sv = L.emit(Mul(out=L.nm(f"{nd}:vrec"), a=spk.vec, b=L.k("vsign", sg), node=nd), n)
            terms.append(RawTerm(sv, np.where(v != 0, np.abs(v), 1.0)))
        else:
            _ensure(fk, "b_rec", n)
            terms.append(MatTerm(op.w_rec, QV(n, [spk]), f"{nd}.w_rec", L.wbits(f"{nd}.w_rec", L.cfg.weight_bits),
                                 _setter(fk, "w_rec")))
            bias = op.b_rec
            fake_bias = _setter(fk, "b_rec")
    spikes, mem = _neuron(L, node, op.neuron, "neuron.", "", ("syn", "mem"), terms, bias, fk, fake_bias)
    if op.recurrence is not Recurrence.NONE:
        L.store(f"{nd}/spk", spikes.vec)
    if op.emit == "spikes":
        L.out_value(node, QV(n, [spikes]))
    elif op.emit == "membrane":
        L.out_value(node, QV(n, [mem]))
    else:
        L.out_value(node, QV(n, [spikes]), 0)
        L.out_value(node, QV(n, [mem]), 1)


@_lower(O.L2MU)
def _l2mu(L: Lowerer, node: Node, op: O.L2MU):
    fk = L.fake[node.name]
    nd = node.name
    x = L.vals[node.inputs[0]]
    d, order, H, M = op.memory_d, op.order, op.hidden_size, op.memory_size
    wb = L.cfg.weight_bits
    ss_m = _vec(fk.get("m_neuron.spike_scale", 1.0), M)
    ss_h = _vec(fk.get("h_neuron.spike_scale", 1.0), H)
    ss_u = _vec(fk.get("u_neuron.spike_scale", 1.0), d)
    L.state(f"{nd}/s_m", M, bits=2, scale=ss_m)
    L.state(f"{nd}/s_h", H, bits=2, scale=ss_h)
    s_m = L.load(f"{nd}/s_m")
    s_h = L.load(f"{nd}/s_h")
    terms = [MatTerm(op.e_x, x, f"{nd}.e_x", L.wbits(f"{nd}.e_x", wb), _setter(fk, "e_x"))]
    if op.e_h is not None:
        terms.append(MatTerm(op.e_h, QV(H, [s_h]), f"{nd}.e_h", L.wbits(f"{nd}.e_h", wb), _setter(fk, "e_h")))
    if op.e_m is not None:
        terms.append(MatTerm(op.e_m, QV(M, [s_m]), f"{nd}.e_m", L.wbits(f"{nd}.e_m", wb), _setter(fk, "e_m")))
    _ensure(fk, "b_u", d)
    s_u, _ = _neuron(L, node, op.u_neuron, "u_neuron.", "u_", ("u_syn", "u_mem"), terms, op.b_u, fk,
                     _setter(fk, "b_u"))
    s_u = Part(s_u.vec, s_u.idx, s_u.bits, ss_u)
    # memory currents: per memory dimension [a | b] @ [s_m_d ; s_u_d]
    if not (np.all(ss_m == ss_m[0]) and np.all(ss_u == ss_u[0])):
        raise UnsupportedOpError("per-neuron spike amplitudes in the L2MU memory are not supported")
    cat = L.emit(Concat(out=L.nm(f"{nd}:mu"), xs=(s_m.vec, s_u.vec), blocks=d, node=nd), d * (order + 1), 2)
    wmem = np.concatenate([fk["a"], fk["b"].reshape(-1, 1)], axis=1)
    in_scale = np.concatenate([np.full(order, ss_m[0]), [ss_u[0]]])

    def put_ab(wd):
        fk["a"] = wd[:, :order].copy()
        fk["b"] = wd[:, order].copy()

    mb = L.wbits(f"{nd}.ab", L.cfg.lmu_matrix_bits)
    mterm = MatTerm(wmem, QV(order + 1, [Part(cat, np.arange(order + 1), 2, in_scale)]), f"{nd}.ab", mb, put_ab,
                    blocks=d)
    s_m_new, _ = _neuron(L, node, op.m_neuron, "m_neuron.", "m_", ("m_syn", "m_mem"), [mterm], None, fk)
    s_m_new = Part(s_m_new.vec, s_m_new.idx, 2, ss_m)
    terms = [MatTerm(op.w_m, QV(M, [s_m_new]), f"{nd}.w_m", L.wbits(f"{nd}.w_m", wb), _setter(fk, "w_m"))]
    if op.w_x is not None:
        terms.append(MatTerm(op.w_x, x, f"{nd}.w_x", L.wbits(f"{nd}.w_x", wb), _setter(fk, "w_x")))
    if op.w_h is not None:
        terms.append(MatTerm(op.w_h, QV(H, [s_h]), f"{nd}.w_h", L.wbits(f"{nd}.w_h", wb), _setter(fk, "w_h")))
    _ensure(fk, "b_h", H)
    s_h_new, _ = _neuron(L, node, op.h_neuron, "h_neuron.", "h_", ("h_syn", "h_mem"), terms, op.b_h, fk,
                         _setter(fk, "b_h"))
    L.store(f"{nd}/s_m", s_m_new.vec)
    L.store(f"{nd}/s_h", s_h_new.vec)
    L.out_value(node, QV(H, [Part(s_h_new.vec, s_h_new.idx, 2, ss_h)]))


def lower(graph: Graph, plan: QuantPlan) -> tuple[Program, dict[str, dict[str, np.ndarray]], dict[str, WeightPlan]]:
    """(integer program, fake-quant parameters per node, weight plans) of ``graph`` under ``plan``."""
    L = Lowerer(graph, plan)
    prog = L.run()
    prog.metadata["state_order"] = list(graph.state_spec())
    return prog, L.fake, L.weights


def supported_kinds() -> set[str]:
    return {c.kind for c in LOWER}
