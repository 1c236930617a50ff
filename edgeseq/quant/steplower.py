"""Integer lowering of step programs: any scan op's step program -> integer micro-ops.

Values between quantization points are exact integers with a known per-channel scale; a Quant
requantizes to the planned bits and scale of its point. The rules, primitive by primitive:

- ``Affine``, ``Add``, ``Sub`` build a *pending sum* of terms (matrix products, vectors, masked
  constants, biases); it is lowered only where it is consumed: at a Quant as one multi-term affine
  (:meth:`Lowerer.affine`: every term requantized into one fine domain, or straight into the output
  scale when a term is already there), elsewhere as exact adds of same-scale vectors.
- ``Mul`` of two vectors is an exact product (its scale the product of the scales); of a vector
  and a parameter c it is a fixed-point multiply by round(c 2^k) (k = 15 for |c| <= 1) unless the
  vector holds small integers (spikes, resets: at most 2 bits), which keep c as an exact
  coefficient (a *masked* value, mask * c).
- ``Gt`` against a parameter compares with the threshold in the vector's scale; the result is a
  0/1 mask. ``Select``, ``Concat``, ``Slice``, ``Gather`` move integers and keep scales.
- ``Activate``: identity / relu / hardtanh clamp in place; every other function is a lookup table
  from its (PRE) input point to the Quant that consumes it.
- ``Div`` a / b: (a 2^k) / max(b, 1), requantized to the point (the integer form assumes b >= 0:
  normalisers and sums of non-negative terms; a b <= 0 acts as 1).
- blocked matrix products of one Affine with equal block counts and input widths share one
  matvec over the block-wise concatenation of their inputs when the first one dominates every
  row (one rounding, e.g. the LMU memory update [Abar | Bbar] [m_d; u_d]).

Every parameter the integer program rounds gets its dequantized value in the fake-quantization
parameters (``Lowerer.fake``), so the fake-quant simulation runs the same constants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..errors import UnsupportedOpError
from ..ir.cells import step_program
from ..ir.graph import Node
from ..ir.step import (
    Activate,
    Add,
    Affine,
    Concat,
    Div,
    Gather,
    Gt,
    Mul,
    QRole,
    Quant,
    Select,
    Slice,
    StepProgram,
    Sub,
    WeightKind,
)
from ..ir.types import Act
from .lower import QV, Lowerer, MatTerm, Part, RawTerm, ScaledTerm, round_half_up
from .program import Add as AddOp
from .program import Clamp, CmpGe, bits_for, int_range
from .program import Concat as CatOp
from .program import Div as DivOp
from .program import Gather as GatherOp
from .program import Mul as MulOp
from .program import Select as SelOp

SMALL_BITS = 2  # vectors of at most this width (spikes, resets) keep parameter factors exact


@dataclass
class Masked:
    """mask * coef: ``part`` holds small integers (its scale included in ``coef``)."""

    part: Part
    coef: np.ndarray
    fakes: list = field(default_factory=list)  # (param, factor): fake[param] = coef_deq / factor


@dataclass
class Pending:
    """A sum not yet lowered: matrix terms, vector terms, masked terms, a constant."""

    mats: list = field(default_factory=list)  # (weight param, QV, blocks, sign)
    raws: list = field(default_factory=list)  # (Part, sign)
    masked: list = field(default_factory=list)  # (Masked, sign)
    consts: list = field(default_factory=list)  # (param, sign)


@dataclass
class Table:
    fn: Act
    part: Part
    slope: float
    lo: float
    hi: float


@dataclass
class Ratio:
    a: Part
    b: Part


class _Scan:
    def __init__(self, L: Lowerer, node: Node, prog: StepProgram):
        self.L, self.node, self.prog = L, node, prog
        self.fk = L.fake[node.name]
        self.points = prog.qualified_points(node.name, node.outputs)
        self.vals: dict[str, object] = {}

    # -- operands -------------------------------------------------------------------------------
    def param(self, name: str) -> np.ndarray:
        return np.asarray(self.prog.params[name], np.float64)

    def pvec(self, name: str, n: int) -> np.ndarray:
        return np.broadcast_to(self.param(name).ravel(), (n,)).copy()

    def fail(self, what: str):
        raise UnsupportedOpError(
            f"cannot quantize {what}", where=f"node '{self.node.name}' (step program '{self.prog.name}')"
        )

    def part(self, name: str) -> Part:
        """A value as one integer vector."""
        v = self.vals[name]
        if isinstance(v, QV):
            return self.L.single(v)
        if isinstance(v, Masked):
            return self.materialize_masked(v)
        if isinstance(v, Pending):
            return self.materialize_sum(v)
        self.fail(f"'{name}' outside a quantization point ({type(v).__name__})")

    def materialize_masked(self, m: Masked) -> Part:
        coef = m.coef
        if np.all(coef > 0):
            return Part(m.part.vec, m.part.idx, m.part.bits, coef.copy())
        sign = np.sign(coef).astype(np.int64)
        L = self.L
        n = coef.size
        v = L.emit(MulOp(out=L.nm(f"{L.node}:sgn"), a=m.part.vec, b=L.k("sign", sign), node=L.node), n)
        return Part(v, np.arange(n), L.bits_of(v), np.where(coef != 0, np.abs(coef), 1.0))

    def materialize_sum(self, s: Pending) -> Part:
        """A sum of same-scale vectors (no matrices, no constants) as exact adds."""
        if s.mats or s.consts:
            self.fail("a sum with weights or constants that is not quantized (add a Quant)")
        terms = [(p, sg) for p, sg in s.raws] + [(self.materialize_masked(m), sg) for m, sg in s.masked]
        scale = terms[0][0].scale
        for p, _ in terms:
            if not np.array_equal(np.broadcast_to(p.scale, scale.shape), scale):
                self.fail("a sum of values with different scales that is not quantized (add a Quant)")
        if len(terms) == 1 and terms[0][1] > 0:
            return terms[0][0]
        v = self.L.signed_sum([p.vec for p, _ in terms], [sg for _, sg in terms], "sum", scale)
        return Part(v, np.arange(scale.size), self.L.bits_of(v), scale.copy())

    def as_sum(self, name: str, sign: int) -> Pending:
        if self.prog.is_param(name):
            return Pending(consts=[(name, sign)])
        v = self.vals[name]
        if isinstance(v, Pending):
            return Pending(
                [(w, x, b, s * sign) for w, x, b, s in v.mats],
                [(p, s * sign) for p, s in v.raws],
                [(m, s * sign) for m, s in v.masked],
                [(c, s * sign) for c, s in v.consts],
            )
        if isinstance(v, Masked):
            return Pending(masked=[(v, sign)])
        return Pending(raws=[(self.part(name), sign)])

    # -- primitives -----------------------------------------------------------------------------
    def affine(self, op: Affine):
        mats = []
        for t in op.terms:
            x = self.vals[t.x]
            qv = x if isinstance(x, QV) else QV(self.prog.size(t.x), [self.part(t.x)])
            mats.append((t.w, qv, t.blocks, 1))
        return Pending(mats=mats, consts=[(op.bias, 1)] if op.bias else [])

    def mul(self, op: Mul):
        a, b = op.a, op.b
        if self.prog.is_param(a):
            a, b = b, a
        if self.prog.is_param(b):
            return self.mul_param(a, b, op.n)
        pa, pb = self.part(a), self.part(b)
        L = self.L
        v = L.emit(MulOp(out=L.nm(f"{L.node}:{op.out}"), a=pa.vec, b=pb.vec, node=L.node), op.n)
        return QV(op.n, [Part(v, np.arange(op.n), L.bits_of(v), np.broadcast_to(pa.scale * pb.scale, (op.n,)).copy())])

    def mul_param(self, x: str, c: str, n: int):
        v = self.vals[x]
        cv = self.pvec(c, n)
        if isinstance(v, Masked):
            return Masked(v.part, v.coef * cv, v.fakes + [(c, v.coef)])
        p = self.part(x)
        if p.bits <= SMALL_BITS:
            return Masked(p, np.broadcast_to(p.scale, (n,)) * cv, [(c, np.broadcast_to(p.scale, (n,)).copy())])
        amax = float(np.max(np.abs(cv))) if cv.size else 0.0
        k = 15 - max(0, math.ceil(math.log2(amax))) if amax > 0 else 15
        cq = round_half_up(self.param(c) * 2.0**k).astype(np.int64)
        self.fk[c] = cq / 2.0**k
        L = self.L
        kq = L.scalar(int(cq.flat[0])) if cq.size == 1 else L.k(f"{c}.q", np.broadcast_to(cq.ravel(), (n,)))
        out = L.emit(MulOp(out=L.nm(f"{L.node}:{c}x"), a=p.vec, b=kq, node=L.node), n)
        return QV(n, [Part(out, np.arange(n), L.bits_of(out), np.broadcast_to(p.scale, (n,)) * 2.0**-k)])

    def gt(self, op: Gt):
        L = self.L
        p = self.part(op.a)
        if self.prog.is_param(op.b):
            sc = np.broadcast_to(p.scale, (op.n,))
            q = round_half_up(self.pvec(op.b, op.n) / sc).astype(np.int64)
            self.fk[op.b] = (
                (q * sc).reshape(self.param(op.b).shape) if self.param(op.b).size == op.n else q[:1] * sc[:1]
            )
            lo, hi = int_range(62)
            thr = L.k(f"{op.b}.q1", np.clip(q + 1, lo, hi))
        else:
            pb = self.part(op.b)
            if not np.array_equal(np.broadcast_to(pb.scale, (op.n,)), np.broadcast_to(p.scale, (op.n,))):
                self.fail("a comparison of values with different scales")
            thr = L.emit(AddOp(out=L.nm(f"{L.node}:{op.out}.b1"), a=pb.vec, b=L.scalar(1), node=L.node), op.n)
        v = L.emit(CmpGe(out=L.nm(f"{L.node}:{op.out}"), a=p.vec, b=thr, node=L.node), op.n)
        return Masked(Part(v, np.arange(op.n), 2, np.ones(op.n)), np.ones(op.n))

    def select(self, op: Select):
        L = self.L
        c = self.part(op.c)
        branches = [op.a, op.b]
        ref = next((self.part(x) for x in branches if not self.prog.is_param(x)), None)
        if ref is None:
            self.fail("a Select of two constants")
        scale = np.broadcast_to(ref.scale, (op.n,))
        names = []
        for x in branches:
            if self.prog.is_param(x):
                q = round_half_up(self.pvec(x, op.n) / scale).astype(np.int64)
                names.append(L.scalar(int(q[0])) if np.all(q == q[0]) else L.k(f"{x}.q", q))
            else:
                p = self.part(x)
                if not np.array_equal(np.broadcast_to(p.scale, (op.n,)), scale):
                    self.fail("a Select between values with different scales")
                names.append(p.vec)
        v = L.emit(SelOp(out=L.nm(f"{L.node}:{op.out}"), c=c.vec, a=names[0], b=names[1], node=L.node), op.n)
        return QV(op.n, [Part(v, np.arange(op.n), L.bits_of(v), scale.copy())])

    def activate(self, op: Activate):
        p = self.part(op.x)
        if op.fn is Act.IDENTITY:
            return QV(op.n, [p])
        if op.fn in (Act.RELU, Act.HARDTANH):
            L = self.L
            if op.fn is Act.RELU:
                lo_k, hi_k = L.scalar(0), L.scalar(int_range(p.bits)[1])
            else:
                lo_k = L.k("lo", np.clip(np.ceil(op.lo / p.scale - 0.5), *int_range(p.bits)).astype(np.int64))
                hi_k = L.k("hi", np.clip(np.floor(op.hi / p.scale + 0.5), *int_range(p.bits)).astype(np.int64))
            v = L.emit(
                Clamp(out=L.nm(f"{L.node}:{op.out}"), x=p.vec, lo=lo_k, hi=hi_k, node=L.node), op.n, p.bits, p.scale
            )
            return QV(op.n, [Part(v, np.arange(op.n), p.bits, p.scale)])
        return Table(op.fn, p, op.slope, op.lo, op.hi)

    def concat(self, op: Concat):
        parts = [self.part(x) for x in op.xs]
        L = self.L
        bits = max(p.bits for p in parts)
        scale = np.concatenate(
            [np.broadcast_to(p.scale, (self.prog.size(x),)).reshape(op.blocks, -1) for p, x in zip(parts, op.xs)],
            axis=1,
        ).ravel()
        v = L.emit(
            CatOp(out=L.nm(f"{L.node}:{op.out}"), xs=tuple(p.vec for p in parts), blocks=op.blocks, node=L.node),
            op.n,
            bits,
            scale,
        )
        return QV(op.n, [Part(v, np.arange(op.n), bits, scale)])

    def gather(self, idx: np.ndarray, x: str, n: int, out: str):
        p = self.part(x)
        L = self.L
        v = L.emit(GatherOp(out=L.nm(f"{L.node}:{out}"), x=p.vec, index=L.k(f"{out}.idx", idx), node=L.node), n, p.bits)
        return QV(n, [Part(v, np.arange(n), p.bits, np.broadcast_to(p.scale, (self.prog.size(x),))[idx].copy())])

    # -- quantization points --------------------------------------------------------------------
    def quant(self, op: Quant):
        L = self.L
        name, point = self.points[op.out]
        base = op.name.name or op.out
        v = self.vals[op.x]
        if point.role is QRole.SPIKES:
            p = self.part(op.x)
            if p.bits > SMALL_BITS:
                self.fail(f"spike point '{name}' of a value that is not 0/1 spikes")
            return QV(op.n, [p])
        e = L.e(name)
        if isinstance(v, Table):
            return QV(op.n, [L.lut(L.single(QV(op.n, [v.part])), v.fn.value, e, name, base, v.slope, v.lo, v.hi)])
        if isinstance(v, Ratio):
            return QV(op.n, [self.ratio(v, e, name, base)])
        if isinstance(v, (Pending, Masked)):
            s = v if isinstance(v, Pending) else Pending(masked=[(v, 1)])
            return self.lower_sum(s, e, name, base)
        p = self.part(op.x)
        if not e.split and np.array_equal(np.broadcast_to(p.scale, (e.n,)), e.scale):
            vec = L.clamp_bits(p.vec, e.bits, base, e.scale)
            L.pb.retag(vec, name, e.scale)
            return QV(e.n, [Part(vec, np.arange(e.n), e.bits, e.scale.copy())])
        return L.finish(p.vec, p.scale, e, name, base)

    def ratio(self, r: Ratio, e, name: str, base: str) -> Part:
        """a / b for b >= 0: (a 2^k) / max(b, 1) rounded half up, then requantized to the output
        scale (skipped when the ratio of scales is exactly 2^k)."""
        L = self.L
        n = e.n
        sa, sb = np.broadcast_to(r.a.scale, (n,)), np.broadcast_to(r.b.scale, (n,))
        _, hi = L.pb.interval(r.b.vec)
        exact = np.log2(sa / (sb * e.scale))
        kf = int(round(float(exact[0])))
        direct = np.allclose(exact, kf, rtol=0, atol=1e-9) and kf >= 0
        if not direct:  # keep 4 bits below the output's resolution, within int64
            kf = int(np.clip(math.ceil(float(np.max(exact))) + 4, 0, 62 - r.a.bits))
        b1 = L.emit(
            Clamp(out=L.nm(f"{L.node}:{base}.den"), x=r.b.vec, lo=L.scalar(1), hi=L.scalar(max(hi, 1)), node=L.node),
            n,
            bits_for(1, max(hi, 1)),
        )
        num = r.a.vec
        if kf:
            num = L.emit(MulOp(out=L.nm(f"{L.node}:{base}.num"), a=num, b=L.scalar(1 << kf), node=L.node), n)
        q = L.emit(DivOp(out=L.nm(f"{L.node}:{base}.div"), a=num, b=b1, node=L.node), n)
        if direct:
            v = L.clamp_bits(q, e.bits, base, e.scale)
            L.pb.retag(v, name, e.scale)
        else:
            v = L.requant(q, sa * 2.0**-kf / sb, e.scale, e.bits, base, name)
        return Part(v, np.arange(n), e.bits, e.scale.copy())

    def lower_sum(self, s: Pending, e, name: str, base: str) -> QV:
        L = self.L
        terms = self.matrix_terms(s.mats)
        for p, sg in s.raws:
            terms.append(RawTerm(p.vec, p.scale, sg))
        for m, sg in s.masked:
            terms.append(ScaledTerm(m.part.vec, sg * m.coef, self._fake_masked(m, sg)))
        bias, fake_bias = None, None
        if s.consts:
            bias = sum(sg * self.pvec(c, e.n) for c, sg in s.consts)
            fake_bias = self._fake_consts(s.consts, e.n)
        return L.affine(terms, bias, e, name, fake_bias, n_out=e.n, base=base)

    def _fake_masked(self, m: Masked, sign: int) -> Optional[Callable]:
        if not m.fakes:
            return None
        prm, factor = m.fakes[-1]

        def put(coef_deq):
            shape = self.param(prm).shape
            val = sign * np.asarray(coef_deq, np.float64) / np.where(factor != 0, factor, 1.0)
            self.fk[prm] = val.reshape(shape) if val.size == int(np.prod(shape)) else val[:1].reshape(shape)

        return put

    def _fake_consts(self, consts, n: int) -> Callable:
        def put(total):
            first, s0 = consts[0]
            rest = sum((sg * self.pvec(c, n) for c, sg in consts[1:]), np.zeros(n))
            self.fk[first] = s0 * (np.asarray(total, np.float64) - rest)

        return put

    def matrix_terms(self, mats) -> list:
        L = self.L
        cfg = L.cfg
        node = self.node.name
        out = []
        mats = self.merge_blocked(mats)
        for ws, qv, blocks, sign in mats:
            width = sum(self.param(x).shape[1] for x in ws)
            if blocks > 1 and qv.n != width:  # one block's view of a per-tensor vector
                p = L.single(qv)
                p = L.per_tensor(p, p.bits)
                qv = QV(width, [Part(p.vec, np.arange(width), p.bits, np.full(width, float(p.scale[0])))])
            info = [self.prog.param_info.get(w) for w in ws]
            source = "".join(i.source if i else w for i, w in zip(info, ws))
            kind = info[0].kind if info[0] else WeightKind.WEIGHT
            default = cfg.lmu_matrix_bits if kind is WeightKind.MEMORY else cfg.weight_bits
            w = np.concatenate([self.param(x) for x in ws], axis=1) * sign
            out.append(
                MatTerm(
                    w,
                    qv,
                    f"{node}.{source}",
                    L.wbits(f"{node}.{source}", default),
                    self._fake_matrix(ws, sign),
                    blocks=blocks,
                )
            )
        return out

    def _fake_matrix(self, ws, sign):
        cols = [self.param(w).shape[1] for w in ws]

        def put(wd):
            off = 0
            for w, c in zip(ws, cols):
                self.fk[w] = sign * np.asarray(wd[:, off : off + c], np.float64)
                off += c

        return put

    def merge_blocked(self, mats):
        """Blocked terms with equal block counts and input widths share one matvec over the
        block-wise concatenation of their inputs when the first term dominates every row."""
        blocked = [m for m in mats if m[2] > 1]
        if len(blocked) < 2 or len({m[2] for m in blocked}) != 1 or len({m[3] for m in blocked}) != 1:
            return [((w,), qv, b, s) for w, qv, b, s in mats]
        L = self.L
        parts = [L.per_tensor(L.single(qv), L.single(qv).bits) for _, qv, _, _ in blocked]
        if len({p.bits for p in parts}) != 1:
            return [((w,), qv, b, s) for w, qv, b, s in mats]
        rows = [np.abs(self.param(w)).max(axis=1) * float(p.scale[0]) for (w, _, _, _), p in zip(blocked, parts)]
        if not all(np.all(4.0 * rows[0] >= r) for r in rows[1:]):
            return [((w,), qv, b, s) for w, qv, b, s in mats]
        blocks = blocked[0][2]
        widths = [self.param(w).shape[1] for w, _, _, _ in blocked]
        cat = L.emit(
            CatOp(out=L.nm(f"{L.node}:cat"), xs=tuple(p.vec for p in parts), blocks=blocks, node=L.node),
            blocks * sum(widths),
            parts[0].bits,
        )
        scale = np.concatenate([np.full(wd, float(p.scale[0])) for wd, p in zip(widths, parts)])
        merged = (
            (tuple(w for w, _, _, _ in blocked)),
            QV(sum(widths), [Part(cat, np.arange(sum(widths)), parts[0].bits, scale)]),
            blocks,
            blocked[0][3],
        )
        return [merged] + [((w,), qv, b, s) for w, qv, b, s in mats if b == 1]

    # -- driver ---------------------------------------------------------------------------------
    def run(self) -> None:
        L, node, prog = self.L, self.node, self.prog
        self.vals[prog.inputs[0].name] = L.vals[node.inputs[0]]
        for s in prog.states:
            key = f"{node.name}/{s.name}"
            if s.point is not None and s.point.role is QRole.SPIKES:
                amp = self.pvec(s.amplitude, s.n) if s.amplitude else np.ones(s.n)
                L.state(key, s.n, bits=SMALL_BITS, scale=amp)
            else:
                L.state(key, s.n, L.e(key))
            self.vals[s.name] = QV(s.n, [L.load(key)])
        for op in prog.body:
            self.vals[op.out] = self.lower(op)
        for s in prog.states:
            key = f"{node.name}/{s.name}"
            p = self.part(prog.next_state[s.name])
            want = L.pb.states[key]
            if not np.array_equal(np.broadcast_to(p.scale, (s.n,)), np.broadcast_to(want.scale, (s.n,))):
                self.fail(f"state '{s.name}': its new value is not at the state's scale")
            L.store(key, p.vec)
        for i, o in enumerate(prog.outputs):
            v = self.vals[o]
            L.out_value(node, v if isinstance(v, QV) else QV(prog.size(o), [self.part(o)]), i)

    def lower(self, op):
        rule = RULES.get(type(op))
        if rule is None:
            self.fail(f"primitive {op.kind}")
        return rule(self, op)

    def add_sub(self, op):
        a, b = self.as_sum(op.a, 1), self.as_sum(op.b, 1 if isinstance(op, Add) else -1)
        return Pending(a.mats + b.mats, a.raws + b.raws, a.masked + b.masked, a.consts + b.consts)

    def div(self, op: Div):
        return Ratio(self.part(op.a), self.part(op.b))

    def slice(self, op: Slice):
        return self.gather(np.arange(op.start, op.start + op.n), op.x, op.n, op.out)

    def gather_op(self, op: Gather):
        return self.gather(self.param(op.index).astype(np.int64), op.x, op.n, op.out)


#: the integer rule of each primitive
RULES: dict[type, Callable] = {
    Affine: _Scan.affine,
    Add: _Scan.add_sub,
    Sub: _Scan.add_sub,
    Mul: _Scan.mul,
    Div: _Scan.div,
    Gt: _Scan.gt,
    Select: _Scan.select,
    Activate: _Scan.activate,
    Concat: _Scan.concat,
    Slice: _Scan.slice,
    Gather: _Scan.gather_op,
    Quant: _Scan.quant,
}


def lower_scan(L: Lowerer, node: Node, op) -> None:
    """Lower the step program of scan node ``node`` into ``L``'s program."""
    prog = step_program(op, L.g.type_of(node.inputs[0]).features)
    _Scan(L, node, prog).run()
