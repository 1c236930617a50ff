"""Float32 C rendering of step programs: one time step of any scan op, primitive by primitive.

The program goes through the shared passes (quantization points stripped, dead ops dropped,
elementwise ops grouped by GroupStages) and :func:`~edgeseq.ir.step.passes.schedule`: an Affine becomes one
loop over its blocks and rows against ``static const`` weights (every term summed before the one
store), a fused elementwise stage ONE loop over the features computing each primitive into a local
and storing only what later stages, outputs or states read; Concat / Slice / Gather copy. Output
values are computed into the node's output buffers, next states straight into their state fields
when nothing reads the old state afterwards (else copied at the end of the step), other stored
values share one scratch block placed by :func:`~edgeseq.ir.step.passes.alias_buffers`. ``RULES``
holds one rule per primitive class: elementwise rules return the C expression of element ``i``,
the others C statements.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...errors import UnsupportedOpError
from ...ir.cells import step_program
from ...ir.step import Activate, Add, Affine, Concat, Div, Gather, Gt, Mul, Quant, Select, Slice, StepProgram, Sub
from ...ir.step.passes import BufferPlan, DeadCode, GroupStages, Stage, StripQuant, alias_buffers, schedule
from .cwriter import c_float, c_ident
from .emit_f32 import act_expr, copy
from .emitter import Emitter, NodeCtx, register_program
from .plan import ALIGN

RULES: dict[type, Callable[["StepRender", object], str]] = {}


def rule(cls):
    def deco(fn):
        RULES[cls] = fn
        return fn

    return deco


@dataclass
class StepPlan:
    """Where the values of ``prog`` live: node outputs (``outputs``: value -> output indices),
    states written where the value is computed (``inplace``), states copied at the end (``late``:
    (state, value)), the rest in ``scratch`` (which also snapshots old states that ``late`` both
    reads and overwrites)."""

    prog: StepProgram
    stages: list[Stage]
    outputs: dict[str, list[int]] = field(default_factory=dict)
    inplace: dict[str, list[str]] = field(default_factory=dict)
    late: list[tuple[str, str]] = field(default_factory=list)
    scratch: BufferPlan = field(default_factory=lambda: BufferPlan({}, 0))


def plan(prog: StepProgram) -> StepPlan:
    p = GroupStages()(DeadCode()(StripQuant()(prog)))
    pl = StepPlan(p, schedule(p))
    stage_of = {op.out: k for k, st in enumerate(pl.stages) for op in st.ops}
    last_read = {r: k for k, st in enumerate(pl.stages) for op in st.ops for r in op.reads() if r in p.state_names}
    at_end = set(p.outputs) | set(p.next_state.values())
    for k, v in enumerate(p.outputs):
        pl.outputs.setdefault(v, []).append(k)
    for s, v in p.next_state.items():
        k = stage_of.get(v)
        if k is not None and s not in at_end and (last_read.get(s, -1) < k or pl.stages[k].fused and last_read[s] == k):
            pl.inplace.setdefault(v, []).append(s)
        elif v != s:
            pl.late.append((s, v))
    stored = set().union(*(st.keep if st.fused else {st.ops[0].out} for st in pl.stages))
    pl.scratch = alias_buffers(p, pl.stages, [v for v in stored if v not in pl.outputs and v not in pl.inplace], ALIGN)
    dst = {s for s, _ in pl.late}
    for v in sorted({v for _, v in pl.late if v in dst}):
        pl.scratch.offset[v] = -(-pl.scratch.size // ALIGN) * ALIGN
        pl.scratch.size = pl.scratch.offset[v] + p.size(v)
    return pl


def offset(ptr: str, off: int) -> str:
    """``ptr + off`` as a C expression (``(w + 8)`` + 4 -> ``(w + 12)``)."""
    m = re.fullmatch(r"\((\w+) \+ (\d+)\)", ptr)
    if m:
        return f"({m[1]} + {int(m[2]) + off})"
    return f"({ptr} + {off})" if off else ptr


class StepRender:
    """C text of one step of ``pl`` for the node of ``ctx``."""

    def __init__(self, ctx: NodeCtx, pl: StepPlan):
        self.ctx, self.pl, self.prog = ctx, pl, pl.prog
        self.tabs: dict[str, str] = {}
        self.local: dict[str, str] = {}
        self.ptrs = {port.name: ctx.inp(i) for i, port in enumerate(self.prog.inputs)}
        self.ptrs.update({s: ctx.state(s) for s in self.prog.state_names})
        self.dests = {v: [ctx.out(k) for k in ks] for v, ks in pl.outputs.items()}
        for v, ss in pl.inplace.items():
            self.dests.setdefault(v, []).extend(ctx.state(s) for s in ss)
        scratch = {v: offset(ctx.tmp("scratch"), off) for v, off in pl.scratch.offset.items()}
        self.snapshots = {v: scratch.pop(v) for v in list(scratch) if v in self.ptrs}
        self.dests.update({v: [p] for v, p in scratch.items()})

    def table(self, name: str, ctype: str = "float") -> str:
        if name not in self.tabs:
            a = self.prog.params[name]
            self.tabs[name] = self.ctx.const(name, a if ctype == "float" else a.astype(np.int64), ctype=ctype)
        return self.tabs[name]

    def ptr(self, name: str) -> str:
        """The buffer (C pointer expression) holding ``name``."""
        if self.prog.is_param(name):
            return self.table(name)
        return self.ptrs[name] if name in self.ptrs else self.dests[name][0]

    def at(self, name: str) -> str:
        """Element ``i`` of operand ``name`` in a fused loop (broadcast where it has one value)."""
        if name in self.local:
            return self.local[name]
        if self.prog.is_param(name) and self.prog.size(name) == 1:
            return c_float(self.prog.params[name].reshape(-1)[0], self.ctx.where)
        return f"{self.ptr(name)}[{'0' if self.prog.size(name) == 1 else 'i'}]"

    def rule(self, op) -> Callable:
        fn = RULES.get(type(op))
        if fn is None:
            raise UnsupportedOpError(f"step primitive {op.kind} has no C rendering", where=self.ctx.where)
        return fn

    def stage(self, st: Stage) -> str:
        if not st.fused:
            op = st.ops[0]
            extra = "".join(copy(d, self.ptr(op.out), op.n) for d in self.dests[op.out][1:])
            return f"/* {op.out} = {op.kind} */\n" + self.rule(op)(self, op) + extra
        body, stores = [], []
        for k, op in enumerate(st.ops):
            var = f"v{k}_{c_ident(op.out)}"
            body.append(f"    const float {var} = {self.rule(op)(self, op)};")
            self.local[op.out] = var
            if op.out in st.keep:
                stores += [f"    {d}[i] = {var};" for d in self.dests[op.out]]
        self.local.clear()
        kept = ", ".join(op.out for op in st.ops if op.out in st.keep)
        return "\n".join([f"/* fused: {kept} */", f"for (int i = 0; i < {st.n}; ++i) {{", *body, *stores, "}\n"])

    def render(self) -> str:
        code = [self.stage(st) for st in self.pl.stages]
        size = self.prog.size
        code += [
            copy(self.ctx.out(k), self.ptrs[v], size(v))
            for v, ks in self.pl.outputs.items()
            if v in self.ptrs
            for k in ks
        ]  # outputs that are step inputs or old states
        code += [copy(snap, self.ptrs[v], size(v)) for v, snap in self.snapshots.items()]
        code += [copy(self.ctx.state(s), self.snapshots.get(v, self.ptr(v)), size(v)) for s, v in self.pl.late]
        return "".join(code)


# elementwise rules: the C expression of element i


@rule(Activate)
def _activate(r: StepRender, op: Activate) -> str:
    return act_expr(r.ctx, op.fn, r.at(op.x), slope=op.slope, lo=op.lo, hi=op.hi)


def _binary(cls, fmt: str) -> None:
    RULES[cls] = lambda r, op: fmt.format(a=r.at(op.a), b=r.at(op.b))


_binary(Add, "{a} + {b}")
_binary(Sub, "{a} - {b}")
_binary(Mul, "{a} * {b}")
_binary(Div, "({b} != 0.0f ? {a} / {b} : 0.0f)")
_binary(Gt, "({a} - {b} > 0.0f ? 1.0f : 0.0f)")


@rule(Select)
def _select(r: StepRender, op: Select) -> str:
    return f"({r.at(op.c)} != 0.0f ? {r.at(op.a)} : {r.at(op.b)})"


@rule(Quant)
def _quant(r: StepRender, op: Quant) -> str:
    return r.at(op.x)  # a quantization point leaves the float program unchanged


# the other rules: C statements writing ptr(op.out)


@rule(Affine)
def _affine(r: StepRender, op: Affine) -> str:
    """y[b*O + j] = bias + sum_k W_k[j] . x_k[b*I_k : (b+1)*I_k]: nested block / row loops when every
    term has the same blocks, else one loop over y deriving each term's block and row from j."""
    y = r.ptr(op.out)
    same = len({t.blocks for t in op.terms}) == 1
    nb = op.terms[0].blocks if same else 1
    rows = op.n // nb
    idx = f"b * {rows} + j" if nb > 1 else "j"
    terms = [f"{r.table(op.bias)}[{idx}]"] if op.bias else []
    for t in op.terms:
        o, cols = r.prog.params[t.w].shape
        row, blk = ("j", "b" if nb > 1 else "0") if same else (f"j % {o}", f"j / {o}")
        w, x = r.table(t.w), r.ptr(t.x)
        terms.append(
            f"{w}[{row}] * {x}[{blk}]"
            if cols == 1
            else f"esq_dot({w} + {row} * {cols}, {x}" + ("" if blk == "0" else f" + {blk} * {cols}") + f", {cols})"
        )
    loop = f"for (int j = 0; j < {rows}; ++j)\n    {y}[{idx}] = {' + '.join(terms)};\n"
    return loop if nb == 1 else f"for (int b = 0; b < {nb}; ++b)\n" + "".join(f"    {ln}\n" for ln in loop.splitlines())


@rule(Concat)
def _concat(r: StepRender, op: Concat) -> str:
    y, off, code = r.ptr(op.out), 0, []
    loop = f"for (int b = 0; b < {op.blocks}; ++b) " if op.blocks > 1 else ""
    for x in op.xs:
        n = r.prog.size(x) // op.blocks
        blk = (f" + b * {op.n // op.blocks}", f" + b * {n}") if op.blocks > 1 else ("", "")
        code.append(loop + copy(f"{y}{blk[0]} + {off}", f"{r.ptr(x)}{blk[1]}", n))
        off += n
    return "".join(code)


@rule(Slice)
def _slice(r: StepRender, op: Slice) -> str:
    return copy(r.ptr(op.out), f"{r.ptr(op.x)} + {op.start}", op.n)


@rule(Gather)
def _gather(r: StepRender, op: Gather) -> str:
    idx = r.table(op.index, "int32_t")
    return f"for (int i = 0; i < {op.n}; ++i) {r.ptr(op.out)}[i] = {r.ptr(op.x)}[{idx}[i]];\n"


@register_program
class StepF32(Emitter):
    """Every op with a step program (ops without an emitter of their own kind)."""

    def _plan(self, ctx: NodeCtx) -> StepPlan:
        if "plan" not in ctx.memo:
            ctx.memo["plan"] = plan(step_program(ctx.op, ctx.n_in()))
        return ctx.memo["plan"]

    def temps(self, ctx):
        n = self._plan(ctx).scratch.size
        return {"scratch": n} if n else {}

    def step(self, ctx):
        return StepRender(ctx, self._plan(ctx)).render()

    def pooled(self, ctx):  # a program without states (an embedding lookup) also runs on pooled values
        return super().pooled(ctx) if self._plan(ctx).prog.states else self.step(ctx)
