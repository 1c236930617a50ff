"""Float32 C rendering of step programs: every scan op with a step program
(:func:`edgeseq.ir.cells.step_program`) becomes one time step of C, primitive by primitive.

The program is prepared by the shared passes (quantization points stripped, dead ops dropped,
elementwise ops clustered) and cut into stages by :func:`~edgeseq.ir.step.passes.schedule`:

- an Affine is one loop over its rows (and blocks) against ``static const`` weights, every term
  summed in registers before the single store;
- a fused run of elementwise ops is ONE loop over the features computing every primitive per
  element into locals, storing only the values later stages, outputs or states read;
- Concat / Slice / Gather copy.

Values live where they are needed: an output value is computed into the node's output buffer; a
next state is written straight into its state field when nothing reads the old state afterwards
(otherwise copied at the end of the step); other stored values share one scratch block placed by
:func:`~edgeseq.ir.step.passes.alias_buffers`. Each primitive class has one rule in ``RULES``
(elementwise rules return a C expression of the element, the others C statements).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...errors import UnsupportedOpError
from ...ir.cells import step_program
from ...ir.step import (Activate, Add, Affine, Concat, Div, Gather, Gt, Mul, Quant, Select, Slice, StepProgram,
                        Sub)
from ...ir.step.passes import BufferPlan, Cluster, DeadCode, Stage, StripQuant, alias_buffers, schedule
from .codegen import Emitter, NodeCtx, register_program
from .cwriter import c_float, c_ident
from .emit_f32 import act_expr, copy
from .plan import ALIGN

RULES: dict[type, Callable[["StepRender", object], str]] = {}


def rule(cls):
    def deco(fn):
        RULES[cls] = fn
        return fn

    return deco


# ----------------------------------------------------------------------------------------------
# where every value lives (independent of C names: computed once per node)


@dataclass
class StepPlan:
    prog: StepProgram
    stages: list[Stage]
    outputs: dict[str, list[int]] = field(default_factory=dict)  # value -> node output indices
    inplace: dict[str, list[str]] = field(default_factory=dict)  # value -> states written where computed
    late: list[tuple[str, str]] = field(default_factory=list)  # (state, value) copied at the end
    scratch: BufferPlan = field(default_factory=lambda: BufferPlan({}, 0))

    @property
    def scratch_size(self) -> int:
        return self.scratch.size


def plan(prog: StepProgram) -> StepPlan:
    p = Cluster()(DeadCode()(StripQuant()(prog)))
    stages = schedule(p)
    pl = StepPlan(p, stages)
    stage_of = {op.out: k for k, st in enumerate(stages) for op in st.ops}
    states = set(p.state_names)
    last_read: dict[str, int] = {}
    for k, st in enumerate(stages):
        for op in st.ops:
            for r in op.reads():
                if r in states:
                    last_read[r] = k
    read_at_end = set(p.outputs) | set(p.next_state.values())
    for k, v in enumerate(p.outputs):
        pl.outputs.setdefault(v, []).append(k)
    for s, v in p.next_state.items():
        k = stage_of.get(v)
        if k is not None and s not in read_at_end and (last_read.get(s, -1) < k
                                                       or (stages[k].fused and last_read[s] == k)):
            pl.inplace.setdefault(v, []).append(s)
        elif v != s:
            pl.late.append((s, v))
    stored = set()
    for st in stages:
        stored |= st.keep if st.fused else {op.out for op in st.ops}
    in_scratch = [v for v in stored if v not in pl.outputs and v not in pl.inplace]
    pl.scratch = alias_buffers(p, stages, in_scratch, ALIGN)
    # an old state copied into another state at the end while itself overwritten: snapshot it
    dst = {s for s, _ in pl.late}
    snap = sorted({v for _, v in pl.late if v in states and v in dst})
    for v in snap:
        pl.scratch.offset[v] = -(-pl.scratch.size // ALIGN) * ALIGN
        pl.scratch.size = pl.scratch.offset[v] + p.size(v)
    return pl


# ----------------------------------------------------------------------------------------------
# rendering


def offset(ptr: str, off: int) -> str:
    """``ptr + off`` as a C expression (``(w + 8)`` + 4 -> ``(w + 12)``)."""
    m = re.fullmatch(r"\((\w+) \+ (\d+)\)", ptr)
    if m:
        return f"({m[1]} + {int(m[2]) + off})"
    return f"({ptr} + {off})" if off else ptr


class StepRender:
    """C text of one step of ``plan`` for the node of ``ctx``."""

    def __init__(self, ctx: NodeCtx, pl: StepPlan):
        self.ctx, self.pl, self.prog = ctx, pl, pl.prog
        self.tabs: dict[str, str] = {}
        self.local: dict[str, str] = {}
        self.names: set[str] = set()
        inputs = {port.name: ctx.inp(i) for i, port in enumerate(self.prog.inputs)}
        self.ptrs: dict[str, str] = dict(inputs)
        self.ptrs.update({s: ctx.state(s) for s in self.prog.state_names})
        scratch = ctx.tmp("scratch") if pl.scratch_size else ""
        self.dests: dict[str, list[str]] = {}
        for v, ks in pl.outputs.items():
            self.dests[v] = [ctx.out(k) for k in ks]
        for v, ss in pl.inplace.items():
            self.dests.setdefault(v, []).extend(ctx.state(s) for s in ss)
        for v, off in pl.scratch.offset.items():
            if v not in self.prog.state_names:
                self.dests[v] = [offset(scratch, off)]
        self.snapshots = {v: offset(scratch, off) for v, off in pl.scratch.offset.items()
                          if v in self.prog.state_names}

    # -- operands ---------------------------------------------------------------------------------
    def table(self, name: str, ctype: str = "float") -> str:
        if name not in self.tabs:
            a = self.prog.params[name]
            self.tabs[name] = self.ctx.const(name, a.astype(np.int64) if ctype != "float" else a, ctype=ctype)
        return self.tabs[name]

    def ptr(self, name: str) -> str:
        """Buffer (C pointer expression) holding value ``name``."""
        if self.prog.is_param(name):
            return self.table(name)
        if name in self.ptrs:
            return self.ptrs[name]
        return self.dests[name][0]

    def at(self, name: str) -> str:
        """Element ``i`` of operand ``name`` inside a fused loop (broadcast where it has one value)."""
        if name in self.local:
            return self.local[name]
        if self.prog.is_param(name):
            a = self.prog.params[name].reshape(-1)
            return c_float(a[0], self.ctx.where) if a.size == 1 else f"{self.table(name)}[i]"
        return f"{self.ptr(name)}[{'0' if self.prog.size(name) == 1 else 'i'}]"

    def _fresh(self, value: str) -> str:
        base = "v_" + c_ident(value)
        name, k = base, 1
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    # -- stages -----------------------------------------------------------------------------------
    def stage(self, st: Stage) -> str:
        if not st.fused:
            (op,) = st.ops
            fn = RULES.get(type(op))
            if fn is None:
                raise UnsupportedOpError(f"step primitive {op.kind} has no C rendering", where=self.ctx.where)
            extra = "".join(copy(d, self.ptr(op.out), op.n) for d in self.dests[op.out][1:])
            return f"/* {op.out} = {op.kind} */\n" + fn(self, op) + extra
        body, stores = [], []
        for op in st.ops:
            fn = RULES.get(type(op))
            if fn is None:
                raise UnsupportedOpError(f"step primitive {op.kind} has no C rendering", where=self.ctx.where)
            expr = fn(self, op)
            var = self._fresh(op.out)
            body.append(f"    const float {var} = {expr};")
            self.local[op.out] = var
            if op.out in st.keep:
                stores += [f"    {d}[i] = {var};" for d in self.dests[op.out]]
        for op in st.ops:
            del self.local[op.out]
        kept = ", ".join(op.out for op in st.ops if op.out in st.keep)
        return "\n".join([f"/* fused: {kept} */", f"for (int i = 0; i < {st.n}; ++i) {{", *body, *stores, "}"]) + "\n"

    def render(self) -> str:
        code = [self.stage(st) for st in self.pl.stages]
        prog = self.prog
        for v, ks in self.pl.outputs.items():  # outputs that are step inputs or old states
            if v in self.ptrs:
                code += [copy(self.ctx.out(k), self.ptrs[v], prog.size(v)) for k in ks]
        code += [copy(snap, self.ptrs[v], prog.size(v)) for v, snap in self.snapshots.items()]
        for s, v in self.pl.late:
            src = self.snapshots.get(v, self.ptr(v))
            code.append(copy(self.ctx.state(s), src, prog.size(v)))
        return "".join(code)


# ----------------------------------------------------------------------------------------------
# rules: elementwise primitives return the C expression of element i


@rule(Activate)
def _activate(r: StepRender, op: Activate) -> str:
    return act_expr(r.ctx, op.fn, r.at(op.x), slope=op.slope, lo=op.lo, hi=op.hi)


def _binary(fmt: str):
    return lambda r, op: fmt.format(a=r.at(op.a), b=r.at(op.b))


RULES[Add] = _binary("{a} + {b}")
RULES[Sub] = _binary("{a} - {b}")
RULES[Mul] = _binary("{a} * {b}")
RULES[Div] = _binary("({b} != 0.0f ? {a} / {b} : 0.0f)")
RULES[Gt] = _binary("({a} - {b} > 0.0f ? 1.0f : 0.0f)")


@rule(Select)
def _select(r: StepRender, op: Select) -> str:
    return f"({r.at(op.c)} != 0.0f ? {r.at(op.a)} : {r.at(op.b)})"


@rule(Quant)
def _quant(r: StepRender, op: Quant) -> str:
    return r.at(op.x)  # the float program is unchanged by a quantization point


# rules: the other primitives return C statements writing ptr(op.out)


def _dot(r: StepRender, w: str, x: str, cols: int, row: str, blk: str) -> str:
    xs = f"{x} + {blk} * {cols}" if blk != "0" else x
    if cols == 1:
        return f"{w}[{row}] * {x}[{blk}]"
    return f"esq_dot({w} + {row} * {cols}, {xs}, {cols})"


@rule(Affine)
def _affine(r: StepRender, op: Affine) -> str:
    y = r.ptr(op.out)
    blocks = {t.blocks for t in op.terms}
    b = r.table(op.bias) if op.bias else None
    if len(blocks) == 1:  # one loop over the blocks (if any) and rows, every term summed in registers
        (nb,) = blocks
        rows = op.n // nb
        blk = "b" if nb > 1 else "0"
        idx = f"b * {rows} + j" if nb > 1 else "j"
        terms = [_dot(r, r.table(t.w), r.ptr(t.x), r.prog.params[t.w].shape[1], "j", blk) for t in op.terms]
        acc = " + ".join(([f"{b}[{idx}]"] if b else []) + terms)
        loop = f"for (int j = 0; j < {rows}; ++j)\n    {y}[{idx}] = {acc};\n"
        return loop if nb == 1 else f"for (int b = 0; b < {nb}; ++b)\n" + "".join(
            "    " + ln + "\n" for ln in loop.splitlines())
    # terms with different block structure: one accumulating loop per term
    code = f"memcpy({y}, {b}, {op.n} * sizeof(float));\n" if b else f"memset({y}, 0, {op.n} * sizeof(float));\n"
    for t in op.terms:
        rows = op.n // t.blocks
        term = _dot(r, r.table(t.w), r.ptr(t.x), r.prog.params[t.w].shape[1], "j", "b")
        code += (f"for (int b = 0; b < {t.blocks}; ++b)\n    for (int j = 0; j < {rows}; ++j)\n"
                 f"        {y}[b * {rows} + j] += {term};\n")
    return code


@rule(Concat)
def _concat(r: StepRender, op: Concat) -> str:
    y, off, code = r.ptr(op.out), 0, []
    per = op.n // op.blocks
    for x in op.xs:
        n = r.prog.size(x) // op.blocks
        if op.blocks == 1:
            code.append(copy(f"{y} + {off}", r.ptr(x), n))
        else:
            code.append(f"for (int b = 0; b < {op.blocks}; ++b) "
                        + copy(f"{y} + b * {per} + {off}", f"{r.ptr(x)} + b * {n}", n))
        off += n
    return "".join(code)


@rule(Slice)
def _slice(r: StepRender, op: Slice) -> str:
    return copy(r.ptr(op.out), f"{r.ptr(op.x)} + {op.start}", op.n)


@rule(Gather)
def _gather(r: StepRender, op: Gather) -> str:
    idx = r.table(op.index, "int32_t")
    return f"for (int i = 0; i < {op.n}; ++i) {r.ptr(op.out)}[i] = {r.ptr(op.x)}[{idx}[i]];\n"


# ----------------------------------------------------------------------------------------------
# the emitter of every op with a step program


@register_program
class StepF32(Emitter):
    """Any scan op, through its step program."""

    def _plan(self, ctx: NodeCtx) -> StepPlan:
        if "step_plan" not in ctx.memo:
            ctx.memo["step_plan"] = plan(step_program(ctx.op, ctx.n_in()))
        return ctx.memo["step_plan"]

    def temps(self, ctx):
        n = self._plan(ctx).scratch_size
        return {"scratch": n} if n else {}

    def step(self, ctx):
        return StepRender(ctx, self._plan(ctx)).render()
