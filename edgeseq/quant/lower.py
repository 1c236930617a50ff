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
from ..ir.activations import activation
from ..ir.cells import has_step_program
from ..ir.graph import Graph, Node
from ..ir.types import Act, ReadoutMode
from .config import Granularity, QuantConfig
from .plan import QuantPlan, TensorPlan, WeightPlan, qmax
from .program import (
    WINDOW_MICRO_OPS,
    Add,
    Clamp,
    Concat,
    Div,
    Gather,
    InputSpec,
    Isqrt,
    Load,
    Lut,
    MatVec,
    Mul,
    OutputSpec,
    Program,
    ProgramBuilder,
    Requant,
    Store,
    Sub,
    bits_for,
    int_range,
)
from .sim import node_params

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


def make_table(
    fn: str,
    s_in: float,
    in_bits: int,
    s_out: float,
    out_bits: int,
    table_bits: int,
    slope: float = 0.01,
    lo: float = -1.0,
    hi: float = 1.0,
) -> np.ndarray:
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
    sig = float(np.sum(w**2))
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
    """An integer vector with a known per-channel scale (products, direct inputs), added
    (``sign`` 1) or subtracted (-1)."""

    vec: str
    scale: np.ndarray
    sign: int = 1


@dataclass
class ScaledTerm:
    """mask * coef: a small-integer vector (spikes, resets) times a real per-channel coefficient;
    in a sum of domain P it is one multiply by round(coef / P). ``fake`` receives the coefficient
    the integer constant represents."""

    vec: str
    coef: np.ndarray
    fake: Optional[Callable[[np.ndarray], None]] = None


class Lowerer:
    def __init__(self, graph: Graph, plan: QuantPlan, scan_rule: Callable):
        self.g = graph
        self.plan = plan
        self.scan_rule = scan_rule  # lowers a scan op through its step program (quant.steplower)
        self.cfg: QuantConfig = plan.config
        self.pb = ProgramBuilder()
        self.vals: dict[str, QV] = {}
        self.fake: dict[str, dict[str, np.ndarray]] = {
            n.name: {k: np.array(v, dtype=np.float64, copy=True) for k, v in node_params(graph, n).items()}
            for n in graph.nodes
        }
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
        cat = self.emit(
            Concat(out=self.nm(f"{self.node}.cat"), xs=tuple(p.vec for p in qv.parts), node=self.node),
            qv.n,
            bits,
            scale,
        )
        if np.array_equal(order, np.arange(qv.n)):
            return Part(cat, order, bits, scale)
        inv = np.argsort(order)
        v = self.emit(
            Gather(out=self.nm(f"{self.node}.perm"), x=cat, index=self.k("perm", inv), node=self.node),
            qv.n,
            bits,
            scale[inv],
            tag,
        )
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
        ratio = in_scale / out_scale * (2.0**pre)
        if np.any(ratio < 0):
            raise UnsupportedOpError("a negative scale ratio cannot be requantized", where=f"node '{self.node}'")
        m, s = quantize_multiplier(ratio)
        if np.all(m == m[0]) and np.all(s == s[0]):
            mk, sk = self.scalar(int(m[0])), self.scalar(int(s[0]))
        else:
            mk, sk = self.k(f"{base}.mult", m, np.int32), self.k(f"{base}.shift", s, np.int8)
        return self.emit(
            Requant(out=self.nm(f"{self.node}:{base}"), x=vec, mult=mk, shift=sk, pre=pre, node=self.node),
            n,
            bits,
            out_scale,
            tag,
        )

    def clamp_bits(self, vec: str, bits: int, base: str, scale=None, tag=None) -> str:
        lo, hi = int_range(bits)
        vlo, vhi = self.pb.interval(vec)
        n = self.pb.vectors[vec].n
        if lo <= vlo and vhi <= hi and self.bits_of(vec) <= bits and tag is None:
            return vec
        return self.emit(
            Clamp(out=self.nm(f"{self.node}:{base}"), x=vec, lo=self.scalar(lo), hi=self.scalar(hi), node=self.node),
            n,
            bits,
            scale,
            tag,
        )

    # -- weights ------------------------------------------------------------------------------------
    def quant_matrix(
        self,
        name: str,
        w: np.ndarray,
        in_scale: np.ndarray,
        bits: int,
        per_channel: Optional[bool] = None,
        x_absmax: int = 0,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
        self.weights[key] = WeightPlan(
            key,
            bits,
            "per_channel" if per_channel else "per_tensor",
            ws,
            tuple(w.shape),
            _sqnr(np.asarray(w, np.float64), wd),
        )
        return wq, ws, wd

    # -- affine sums ------------------------------------------------------------------------------
    def affine(
        self,
        terms: Sequence,
        bias: Optional[np.ndarray],
        out: TensorPlan,
        tag: Optional[str],
        fake_bias: Optional[Callable[[np.ndarray], None]] = None,
        n_out: Optional[int] = None,
        base: Optional[str] = None,
    ) -> QV:
        """sum of terms + bias, quantized as ``out``. Returns the output value (parts per ``out``)."""
        base = base or (tag.split(":")[-1].split("/")[-1] if tag else "y")
        mats = []  # (Wq, ws, vec, blocks)
        extra = 0.0  # W @ offset of offset inputs, folded into the integer bias
        extra_deq = 0.0  # the same with the dequantized weights (what the fake simulation must subtract)
        n = n_out if n_out is not None else out.n
        for t in terms:
            if not isinstance(t, MatTerm):
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
        scaled = [t for t in terms if isinstance(t, ScaledTerm)]
        b = np.zeros(n) if bias is None else np.broadcast_to(np.asarray(bias, np.float64), (n,)).copy()
        b = b + extra
        has_bias = bias is not None or np.any(np.asarray(extra) != 0)
        if not mats and not out.split and any(np.array_equal(np.broadcast_to(r.scale, (n,)), out.scale) for r in raws):
            return self._sum_at(raws, scaled, b if has_bias else None, out, tag, fake_bias, base)
        if len(mats) == 1 and not raws and not scaled:
            wq, ws, vec, blocks = mats[0]
            bq = round_half_up(b / ws).astype(np.int64) if has_bias else None
            if bq is not None and blocks > 1:
                bq_b = bq.reshape(blocks, -1)
                if not np.all(bq_b == bq_b[0]):
                    raise UnsupportedOpError(
                        "a blocked matvec needs the same bias in every block", where=f"node '{self.node}'"
                    )
                bq = bq_b[0]
            acc = self.emit(
                MatVec(
                    out=self.nm(f"{self.node}:{base}.acc"),
                    x=vec,
                    w=self.k(f"{base}.w", wq),
                    bias=None if bq is None else self.k(f"{base}.b", bq),
                    blocks=blocks,
                    node=self.node,
                ),
                n,
                None,
                ws,
            )
            if fake_bias is not None:
                fake_bias((np.tile(bq, blocks) * ws if bq is not None else np.zeros(n)) - extra_deq)
            return self.finish(acc, ws, out, tag, base)
        if not mats and len(raws) == 1 and raws[0].sign > 0 and not scaled and not has_bias:
            if fake_bias is not None:
                fake_bias(np.zeros(n))
            return self.finish(raws[0].vec, raws[0].scale, out, tag, base)
        # several terms: a fine common domain P = out_scale / 2^F, with F as large as the worst case
        # of the sum allows in int32 (no term can saturate)
        accs = []
        bound = 0.0  # worst-case |sum| in units of the output scale
        for i, (wq, ws, vec, blocks) in enumerate(mats):
            acc = self.emit(
                MatVec(
                    out=self.nm(f"{self.node}:{base}.acc{i}"),
                    x=vec,
                    w=self.k(f"{base}.w{i}", wq),
                    bias=None,
                    blocks=blocks,
                    node=self.node,
                ),
                n,
                None,
                ws,
            )
            accs.append((acc, ws, f"{base}.t{i}"))
        signs = [1] * len(accs)
        for j, r in enumerate(raws):
            accs.append((r.vec, r.scale, f"{base}.r{j}"))
            signs.append(r.sign)
        for vec, sc, _ in accs:
            lo, hi = self.pb.interval(vec)
            bound += max(abs(lo), abs(hi)) * float(np.max(np.broadcast_to(sc, (n,)) / out.scale))
        for t in scaled:
            lo, hi = self.pb.interval(t.vec)
            bound += max(abs(lo), abs(hi)) * float(np.max(np.abs(t.coef) / out.scale))
        if has_bias:
            bound += float(np.max(np.abs(b) / out.scale))
        f_bits = int(math.floor(29.0 - math.log2(max(bound, 1.0))))
        f_bits = max(-8, min(16, f_bits))
        P = out.scale * 2.0**-f_bits
        pieces = []
        for vec, sc, nm in accs:
            lo, hi = self.pb.interval(vec)
            top = max(abs(lo), abs(hi)) * float(np.max(np.broadcast_to(sc, (n,)) / P)) + 1
            pieces.append(self.requant(vec, sc, P, min(31, bits_for(-int(top) - 1, int(top) + 1)), nm))
        pieces += [self.scaled_piece(t, P, f"{base}.m{j}") for j, t in enumerate(scaled)]
        signs += [1] * len(scaled)
        total = self.signed_sum(pieces, signs, f"{base}.sum", P)
        if has_bias:
            bq = round_half_up(b / P).astype(np.int64)
            total = self.emit(
                Add(out=self.nm(f"{self.node}:{base}.bias"), a=total, b=self.k(f"{base}.b", bq), node=self.node),
                n,
                None,
                P,
            )
            if fake_bias is not None:
                fake_bias(bq * P - extra_deq)
        elif fake_bias is not None:
            fake_bias(np.zeros(n))
        return self.finish(total, P, out, tag, base)

    def signed_sum(self, pieces: Sequence[str], signs: Sequence[int], base: str, scale) -> str:
        """sum of sign * piece (all in one domain) as a chain of Add / Sub."""
        n = self.pb.width(pieces[0])
        total = pieces[0]
        if signs[0] < 0:
            total = self.emit(
                Sub(out=self.nm(f"{self.node}:{base}.neg"), a=self.scalar(0), b=total, node=self.node), n, None, scale
            )
        for i, (pc, sg) in enumerate(zip(pieces[1:], signs[1:])):
            cls = Add if sg > 0 else Sub
            total = self.emit(cls(out=self.nm(f"{self.node}:{base}{i}"), a=total, b=pc, node=self.node), n, None, scale)
        return total

    def scaled_piece(self, t: ScaledTerm, P, base: str) -> str:
        """mask * round(coef / P): the term in domain P."""
        n = self.pb.width(t.vec)
        q = round_half_up(np.asarray(t.coef, np.float64) / P).astype(np.int64)
        if t.fake is not None:
            t.fake(q * P)
        if np.all(q == 1):
            return t.vec
        k = self.scalar(int(q.flat[0])) if np.all(q == q.flat[0]) else self.k(f"{base}.c", q)
        return self.emit(Mul(out=self.nm(f"{self.node}:{base}"), a=t.vec, b=k, node=self.node), n)

    def _sum_at(self, raws, scaled, bias, out: TensorPlan, tag, fake_bias, base) -> QV:
        """A sum with a term already at the output scale: every term goes to that scale (others
        requantized once, just wide enough), exact adds, then saturation to the output width."""
        n = out.n
        pieces, signs = [], []
        for j, r in enumerate(raws):
            sc = np.broadcast_to(r.scale, (n,))
            vec = r.vec
            if not np.array_equal(sc, out.scale):
                lo, hi = self.pb.interval(vec)
                top = int(math.ceil(max(abs(lo), abs(hi)) * float(np.max(sc / out.scale)))) + 1
                vec = self.requant(vec, sc, out.scale, bits_for(-top, top), f"{base}.r{j}")
            pieces.append(vec)
            signs.append(r.sign)
        pieces += [self.scaled_piece(t, out.scale, f"{base}.m{j}") for j, t in enumerate(scaled)]
        signs += [1] * len(scaled)
        total = self.signed_sum(pieces, signs, f"{base}.sum", out.scale)
        if bias is not None:
            bq = round_half_up(bias / out.scale).astype(np.int64)
            total = self.emit(
                Add(out=self.nm(f"{self.node}:{base}.bias"), a=total, b=self.k(f"{base}.b", bq), node=self.node),
                n,
                None,
                out.scale,
            )
            if fake_bias is not None:
                fake_bias(bq * out.scale)
        elif fake_bias is not None:
            fake_bias(np.zeros(n))
        v = self.clamp_bits(total, out.bits, base, out.scale)
        if tag is not None:
            self.pb.retag(v, tag, out.scale)
        return QV(n, [Part(v, np.arange(n), out.bits, out.scale.copy())])

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
            g = self.emit(
                Gather(
                    out=self.nm(f"{self.node}:{base}.{nm}g"), x=vec, index=self.k(f"{base}.{nm}", idx), node=self.node
                ),
                idx.size,
                self.bits_of(vec),
                scale[idx],
            )
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
        v = self.emit(
            Lut(out=self.nm(f"{self.node}:{base}"), x=p.vec, table=self.k(f"{base}.lut", table, dtype), node=self.node),
            p.scale.size,
            out.bits,
            out.scale,
            tag,
        )
        return Part(v, p.idx, out.bits, out.scale.copy())

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
        fn = self.scan_rule if has_step_program(node.op) else LOWER.get(type(node.op))
        if fn is None:
            raise UnsupportedOpError(
                f"cannot quantize op kind '{node.op.kind}'",
                where=f"node '{node.name}'",
                hint="supported: " + ", ".join(sorted(c.kind for c in LOWER)),
            )
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
        s2 = self.emit(
            Add(out=self.nm(f"{node.name}:sum"), a=s.vec, b=x.vec, accumulate=True, node=node.name), n, 32, x.scale
        )
        self.store(key + "sum", s2)
        if op.mode is ReadoutMode.MEAN:
            self.state(key + "count", 1, bits=32, scale=np.ones(1))
            c = self.load(key + "count")
            c2 = self.emit(
                Add(out=self.nm(f"{node.name}:count"), a=c.vec, b=self.scalar(1), accumulate=True, node=node.name),
                1,
                32,
            )
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
        c1 = self.emit(
            Clamp(
                out=self.nm(f"{node.name}:count1"),
                x=c.vec,
                lo=self.scalar(1),
                hi=self.scalar((1 << 31) - 1),
                node=node.name,
            ),
            1,
            32,
        )
        ratio = x_scale / out.scale
        kf = int(round(math.log2(float(ratio[0])))) if ratio[0] > 0 else 0
        if not np.allclose(ratio, 2.0**kf, rtol=1e-12, atol=0) or kf < 0:
            raise UnsupportedOpError("mean readout scale must be the input scale / 2^k")
        num = s.vec
        if kf > 0:
            num = self.emit(Mul(out=self.nm(f"{node.name}:scaled"), a=s.vec, b=self.scalar(1 << kf), node=node.name), n)
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
    qv = L.affine(
        [
            MatTerm(
                op.weight,
                x,
                f"{node.name}.weight",
                L.wbits(f"{node.name}.weight", L.cfg.weight_bits),
                _setter(fk, "weight"),
            )
        ],
        op.bias,
        out,
        node.outputs[0],
        _setter(fk, "bias"),
        base="y",
    )
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
            wf[o, pos * C + gi * cg : pos * C + (gi + 1) * cg] = w[o, :, k]
    if hist:
        key = f"{node.name}/buf"
        L.pb.add_state(key, (hist, C), x.bits, np.tile(x.scale, hist))
        b = L.load(key)
        cat = L.emit(
            Concat(out=L.nm(f"{node.name}:window"), xs=(b.vec, x.vec), node=node.name),
            win * C,
            x.bits,
            np.tile(x.scale, win),
        )
        window = Part(cat, np.arange(win * C), x.bits, np.tile(x.scale, win))
        nb = L.emit(
            Gather(out=L.nm(f"{node.name}:buf"), x=cat, index=L.k("shift", np.arange(C, win * C)), node=node.name),
            hist * C,
            x.bits,
        )
        L.store(key, nb)
    else:
        window = x

    def put_w(wd):
        wr = np.zeros_like(w)
        for o in range(out_ch):
            gi = o // (out_ch // groups)
            for k in range(K):
                pos = k * op.dilation
                wr[o, :, k] = wd[o, pos * C + gi * cg : pos * C + (gi + 1) * cg]
        fk["weight"] = wr

    _ensure(fk, "bias", out_ch)
    qv = L.affine(
        [
            MatTerm(
                wf,
                QV(win * C, [window]),
                f"{node.name}.weight",
                L.wbits(f"{node.name}.weight", L.cfg.weight_bits),
                put_w,
            )
        ],
        op.bias,
        out,
        node.outputs[0],
        _setter(fk, "bias"),
        base="y",
    )
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
            raise NumericsError(
                "a BatchNorm with a zero scale cannot be merged into the input quantizer", where=f"node '{node.name}'"
            )
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
    eps_q = int(round_half_up(op.eps / unit**2))
    ve = L.emit(Add(out=L.nm(f"{nd}:ve"), a=var, b=L.scalar(eps_q), node=nd), 1)
    lo, hi = L.pb.interval(ve)
    ve1 = L.emit(
        Clamp(out=L.nm(f"{nd}:ve1"), x=ve, lo=L.scalar(1), hi=L.scalar(max(hi, 1)), node=nd), 1, bits_for(1, max(hi, 1))
    )
    r = L.emit(Isqrt(out=L.nm(f"{nd}:rstd"), x=ve1, node=nd), 1)
    F = 12
    dF = L.emit(Mul(out=L.nm(f"{nd}:dF"), a=d, b=L.scalar(1 << F), node=nd), n)
    nrm = L.emit(Div(out=L.nm(f"{nd}:norm"), a=dF, b=r, node=nd), n)
    # the normalised value has at most sqrt(n) magnitude: clamp to that bound
    lim = int(math.ceil(math.sqrt(n) * (1 << F))) + 1
    nrm = L.emit(
        Clamp(out=L.nm(f"{nd}:normc"), x=nrm, lo=L.scalar(-lim), hi=L.scalar(lim), node=nd), n, bits_for(-lim, lim)
    )
    w = np.ones(n) if op.weight is None else np.asarray(op.weight, np.float64)
    b = np.zeros(n) if op.bias is None else np.asarray(op.bias, np.float64)
    qv, wd, bd = _diag_affine(
        L, Part(nrm, np.arange(n), bits_for(-lim, lim), np.full(n, 2.0**-F)), w, b, out, node.outputs[0], "ln"
    )
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
            v = L.emit(
                Clamp(out=L.nm(f"{node.name}:y"), x=p.vec, lo=lo_k, hi=hi_k, node=node.name),
                n,
                p.bits,
                p.scale,
                node.outputs[0] if xq.whole else None,
            )
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


@_lower(O.Reverse, O.Lookahead)
def _window_op(L: Lowerer, node: Node, op: O.Op):
    """A window op moves each part of its input in time (a window micro-op per part); it rounds
    nothing, so every part keeps its width and scale."""
    cls = WINDOW_MICRO_OPS[op.kind]
    parts = []
    for p in L.vals[node.inputs[0]].parts:
        if p.offset is not None and isinstance(op, O.Lookahead):
            raise UnsupportedOpError("a look-ahead of an input with an offset (its zero fill would not be 0)")
        micro = cls.of(op, out=L.nm(f"{node.name}:{p.vec}"), x=p.vec, node=node.name)
        v = L.emit(micro, p.idx.size, L.bits_of(p.vec), p.scale)
        parts.append(Part(v, p.idx, p.bits, p.scale, p.offset))
    L.out_value(node, QV(L.vals[node.inputs[0]].n, parts))
