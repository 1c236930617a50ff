"""Scan kernels: the step program of any scan op (:mod:`edgeseq.ir.step`) rendered as TIR.

A scan op lowers through its step program (:func:`edgeseq.ir.cells.step_program`):

1. :func:`~edgeseq.ir.step.passes.hoist` (input projections only) splits it into a whole-sequence part and
   the loop. The hoisted Affines that read one step input become the columns of ONE
   register-blocked projection over the whole (B, T, I) sequence (:func:`.ff.linear`); any other
   hoisted work runs as a sequence kernel (this renderer, without states). Input-only elementwise
   work stays in the loop, fused with the rest of its stage (cheaper than a pass over memory).
2. The loop kernel is ``for b: load state; for t in T.serial(T): stages; store state``. Every
   state lives in a local buffer for the whole sequence and crosses the kernel boundary only as
   the explicit (B, n) state tensors, so a sequence run in chunks equals the whole run bit for
   bit. The stages come from :class:`~edgeseq.ir.step.passes.GroupStages` and
   :func:`~edgeseq.ir.step.passes.schedule`:

   - an Affine is one register-blocked matrix-vector product against pre-transposed weights, all
     of its terms accumulating in the same registers; a blocked Affine (one matrix applied to each
     of several slices, such as a bank of small memories) is one such product looping over the
     blocks;
   - a fused run of elementwise primitives is ONE vectorised loop (plus a vectorised tail) that
     computes every primitive per lane. It stores only what later stages, outputs and states read;
     other values are inlined, or, when read several times, held in a per-lane buffer of one
     vector (never a scalar binding, which TVM 0.27 vectorises wrongly: see :mod:`.lint`);
   - Concat and Gather are copies, Slice a view where the source cannot change during the step.

   A next state is written in place into its state buffer when nothing reads the old value later;
   the others are copied at the end of the step.

Primitives render through :data:`RULES`, keyed by primitive class: a lane-wise rule returns the
expression of one lane from its operands' expressions; a structural rule emits its own loops.
"""

from __future__ import annotations

import re
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from ...errors import UnsupportedOpError
from ...ir.cells import step_program
from ...ir.step import Activate, Add, Affine, Concat, Div, Gather, Gt, Mul, Port, Quant, Select, Slice, StepProgram, Sub
from ...ir.step.passes import FoldBias, GroupStages, Stage, hoist, schedule
from . import ff
from .emit import Kernel, Schedule
from .emit import f32 as lit
from .numerics import act
from .plan import Call, f32


@dataclass(frozen=True)
class Rule:
    fn: Callable
    lanewise: bool


RULES: dict[type, Rule] = {}


def render(*classes, lanewise: bool = True):
    """Register the rendering of primitive classes: lane-wise, ``fn(op, *operand expressions)``
    (operands in ``op.reads()`` order) returns the expression of one lane; structural,
    ``fn(step: _Step, op)`` emits the loops computing ``op``."""

    def deco(fn):
        for c in classes:
            RULES[c] = Rule(fn, lanewise)
        return fn

    return deco


ZERO, ONE = lit(0.0), lit(1.0)


for _cls, _sym in ((Add, "+"), (Sub, "-"), (Mul, "*")):
    render(_cls)(lambda op, a, b, sym=_sym: f"({a} {sym} {b})")


@render(Div)
def _div(op, a, b):
    return f"T.Select({b} != {ZERO}, {a} / {b}, {ZERO})"


@render(Gt)
def _gt(op, a, b):
    return f"T.Select({a} - {b} > {ZERO}, {ONE}, {ZERO})"


@render(Select)
def _select(op, c, a, b):
    return f"T.Select({c} != {ZERO}, {a}, {b})"


@render(Activate)
def _activate(op, x):
    return act(op.fn, x, op.slope, op.lo, op.hi)


@render(Quant)
def _quant(op, x):  # float rendering: a quantization point changes nothing
    return x


# ----------------------------------------------------------------------------------------------
# where values live


@dataclass(frozen=True)
class Loc:
    """A vector in buffer ``buf`` from element ``off``; ``row`` is the ``b, t, `` prefix of a
    (B, T, F) tensor. ``mutable``: a state buffer, rewritten during the step."""

    buf: str
    off: int = 0
    row: str = ""
    mutable: bool = False

    def at(self, j: str) -> str:
        return f"{self.buf}[{self.row}{j if not self.off else f'{self.off} + {j}'}]"


_CHEAP = re.compile(r"^(\w+\[[^\[\]]*\]|T\.float32\([^()]*\))$")


def _ident(name: str) -> str:
    return re.sub(r"\W", "_", name)


class _Step:
    """Renders one step of ``prog`` into kernel ``k`` (inside the b and t loops)."""

    def __init__(self, k: Kernel, prog: StepProgram):
        self.k, self.prog = k, prog
        self.consts: dict[str, np.ndarray] = {}
        self.loc: dict[str, Loc] = {}
        self.outs: dict[str, list[str]] = {}  # value -> output tensors it is written to
        self.alias: dict[str, str] = {}  # value -> state whose buffer it is computed into
        self._names: set[str] = set()
        self._params: dict[tuple, str] = {}
        self._stage_of: dict[str, int] = {}
        self._readers: dict[str, set[int]] = {}
        self._next = set(prog.next_state.values())

    # -- names, constants, operands ----------------------------------------------------------------
    def name(self, prefix: str, base: str) -> str:
        name, i = prefix + _ident(base), 1
        while name in self._names:
            name, i = f"{prefix}{_ident(base)}_{i}", i + 1
        self._names.add(name)
        return name

    def const(self, param: str, form: str) -> str:
        """Parameter ``param`` as a kernel constant: ``vec`` (flat float32), ``mat_t`` (a matrix
        transposed to (in, out)) or ``index`` (int32)."""
        key = (param, form)
        if key not in self._params:
            a = self.prog.params[param]
            arr = {
                "vec": lambda: f32(a.reshape(-1)),
                "mat_t": lambda: f32(a.T),
                "index": lambda: np.ascontiguousarray(a.reshape(-1).astype(np.int32)),
            }[form]()
            name = self.name({"mat_t": "w_"}.get(form, "c_"), param)
            self.k.input(name, arr.shape, str(arr.dtype))
            self.consts[name] = arr
            self._params[key] = name
        return self._params[key]

    def vector(self, name: str) -> Loc:
        """The location of a value, or of a parameter as a constant vector."""
        return Loc(self.const(name, "vec")) if self.prog.is_param(name) else self.loc[name]

    def operand(self, name: str, j: str, n: int) -> str:
        """Element ``j`` of operand ``name`` in an op of length ``n`` (one value broadcasts)."""
        if self.prog.is_param(name) and self.prog.size(name) == 1:
            return lit(float(self.prog.params[name].reshape(-1)[0]))
        return self.vector(name).at("0" if self.prog.size(name) == 1 and n > 1 else j)

    # -- storage -------------------------------------------------------------------------------------
    def read_later(self, v: str) -> bool:
        """Read by a later stage or taken by a state at the end of the step."""
        return v in self._next or any(i > self._stage_of[v] for i in self._readers.get(v, ()))

    def dest(self, v: str, force: bool = False) -> Optional[Loc]:
        """Where a structural op writes ``v``: its state's buffer, a new buffer, or nowhere (None:
        only output tensors read it)."""
        if v in self.alias:
            loc = self.loc[self.alias[v]]
        elif force or self.read_later(v):
            loc = Loc(self.k.scratch(self.name("v_", v), self.prog.size(v)))
        else:
            return None
        self.loc[v] = loc
        return loc

    def stores(self, v: str, dst: Optional[Loc], j: str, value: str) -> list[str]:
        out = [f"{dst.at(j)} = {value}"] if dst is not None else []
        return out + [f"{y}[b, t, {j}] = {dst.at(j) if dst is not None else value}" for y in self.outs.get(v, ())]

    def publish(self, v: str) -> None:
        """Write value ``v`` to the output tensors that take it."""
        if self.outs.get(v):
            src = self.loc[v]
            self.k.vec(self.prog.size(v), lambda j: [f"{y}[b, t, {j}] = {src.at(j)}" for y in self.outs[v]])

    # -- the step ------------------------------------------------------------------------------------
    def plan(self, stages: Sequence[Stage]) -> None:
        """Stage of every value, its readers, and which next states are computed in place."""
        for i, st in enumerate(stages):
            for op in st.ops:
                self._stage_of[op.out] = i
                for r in op.reads():
                    self._readers.setdefault(r, set()).add(i)
        for s in self.prog.states:
            v = self.prog.next_state[s.name]
            i = self._stage_of.get(v)
            if i is None or v in self.alias or any(r > i for r in self._readers.get(s.name, ())):
                continue
            op = stages[i].ops[0]
            if stages[i].fused or not (isinstance(op, Slice) or s.name in op.reads()):
                self.alias[v] = s.name

    def step(self, stages: Sequence[Stage]) -> None:
        prog, k = self.prog, self.k
        states = set(prog.state_names)
        snaps = {}
        for src in dict.fromkeys(v for s, v in prog.next_state.items() if v in states and v != s):
            snaps[src] = Loc(k.scratch(self.name("sn_", src), prog.size(src)))
            k.vec(prog.size(src), lambda j, src=src: [f"{snaps[src].at(j)} = {self.loc[src].at(j)}"])
        for v in self.outs:
            if v in self.loc:  # a step input or a state (before it changes)
                self.publish(v)
        for i, st in enumerate(stages):
            if st.fused:
                self.fused(st, i)
            else:
                RULES[type(st.ops[0])].fn(self, st.ops[0])
        for s in prog.states:
            v = prog.next_state[s.name]
            if v != s.name and self.alias.get(v) != s.name:
                src, dst = snaps.get(v) or self.loc[v], self.loc[s.name]
                k.vec(s.n, lambda j, src=src, dst=dst: [f"{dst.at(j)} = {src.at(j)}"])

    def fused(self, st: Stage, i: int) -> None:
        """One vectorised loop computing every op of the stage per lane."""
        ph = "\x00{}\x00".format
        made = {op.out for op in st.ops}
        tmpl, uses = {}, {v: len(self.outs.get(v, ())) for v in made}
        for op in st.ops:
            rule = RULES.get(type(op))
            if rule is None or not rule.lanewise:
                raise UnsupportedOpError(f"step primitive {op.kind} has no lane-wise TVM rendering", where="tvm")
            tmpl[op.out] = rule.fn(op, *[ph(r) for r in op.reads()])
            for r in set(op.reads()) & made:
                uses[r] += tmpl[op.out].count(ph(r))
        home = {v: self.dest(v) for v in made if v not in self.alias and self.read_later(v)}
        lane_bufs: dict[str, str] = {}

        def lane_buf(v):
            if v not in lane_bufs:
                lane_bufs[v] = self.k.scratch(self.name("lt_", v), self.k.sched.lanes)
            return lane_bufs[v]

        def body(j, lane):
            lines, deferred, expr = [], [], {}
            for op in st.ops:
                e = tmpl[op.out]
                for r in set(op.reads()):
                    e = e.replace(ph(r), expr[r] if r in expr else self.operand(r, j, st.n))
                v = op.out
                if v in home:
                    lines.append(f"{home[v].at(j)} = {e}")
                    e = home[v].at(j)
                elif v in self.alias or (uses[v] > 1 and not _CHEAP.match(e)):
                    buf = lane_buf(v)
                    lines.append(f"{buf}[{lane}] = {e}")
                    e = f"{buf}[{lane}]"
                if v in self.alias:  # the state's old value may still be read in this stage
                    deferred.append(f"{self.loc[self.alias[v]].at(j)} = {e}")
                expr[v] = e
                lines += [f"{y}[b, t, {j}] = {e}" for y in self.outs.get(v, ())]
            return lines + deferred

        self.k.lanes_loop(st.n, body)
        for v in made & set(self.alias):
            self.loc[v] = self.loc[self.alias[v]]


@render(Affine, lanewise=False)
def _affine(s: _Step, op: Affine) -> None:
    """One register-blocked product; terms with another block count (rare) accumulate into it."""
    groups: dict[int, list] = {}
    for t in op.terms:
        groups.setdefault(t.blocks, []).append(t)
    dst = s.dest(op.out, force=len(groups) > 1)
    for g, (blocks, terms) in enumerate(groups.items()):
        _product(s, op, blocks, terms, dst, first=g == 0, last=g == len(groups) - 1)


def _product(s: _Step, op: Affine, blocks: int, terms: list, dst: Optional[Loc], first: bool, last: bool) -> None:
    """For every block: out = (bias, or what earlier terms left in ``dst``) + sum of the terms."""
    n_out = op.n // blocks
    blk = s.k.fresh("blk") if blocks > 1 else None

    def at(j, width):  # element j of the current block of a vector of ``width`` values per block
        return j if blk is None else f"{blk} * {width} + {j}"

    def term(t):
        n_in = s.prog.params[t.w].shape[1]
        w, x = s.const(t.w, "mat_t"), s.loc[t.x]
        return n_in, (lambda kk, j: f"{w}[{kk}, {j}]"), (lambda kk: x.at(at(kk, n_in)))

    if not first:
        init = lambda j: dst.at(at(j, n_out))  # noqa: E731
    elif op.bias is not None:
        init = lambda j: s.operand(op.bias, at(j, n_out), op.n)  # noqa: E731
    else:
        init = None

    def store(j, v):
        return s.stores(op.out, dst, at(j, n_out), v) if last else [f"{dst.at(at(j, n_out))} = {v}"]

    with s.k.loop(blk, blocks) if blk else nullcontext():
        s.k.matvec(n_out=n_out, terms=[term(t) for t in terms], init=init, store=store)


@render(Concat, lanewise=False)
def _concat(s: _Step, op: Concat) -> None:
    dst = s.dest(op.out, force=True)
    widths = [s.prog.size(x) // op.blocks for x in op.xs]
    total = sum(widths)
    for blk in range(op.blocks):
        off = 0
        for x, w in zip(op.xs, widths):
            src = s.vector(x)
            s.k.vec(
                w,
                lambda j, src=src, o=blk * total + off, i=blk * w: [f"{dst.at(f'{o} + {j}')} = {src.at(f'{i} + {j}')}"],
            )
            off += w
    s.publish(op.out)


@render(Slice, lanewise=False)
def _slice(s: _Step, op: Slice) -> None:
    src = s.vector(op.x)
    if src.mutable or op.out in s.alias:
        dst = s.dest(op.out, force=True)
        s.k.vec(op.n, lambda j: [f"{dst.at(j)} = {src.at(f'{op.start} + {j}')}"])
    else:
        s.loc[op.out] = Loc(src.buf, src.off + op.start, src.row)
    s.publish(op.out)


@render(Gather, lanewise=False)
def _gather(s: _Step, op: Gather) -> None:
    dst = s.dest(op.out, force=True)
    src, idx = s.vector(op.x), s.const(op.index, "index")
    s.k.vec(op.n, lambda j: [f"{dst.at(j)} = {src.at(f'{idx}[{j}]')}"])
    s.publish(op.out)


# ----------------------------------------------------------------------------------------------
# kernels


def loop_kernel(name: str, prog: StepProgram, sched: Schedule, sources: dict, out_refs: Sequence[str]) -> Call:
    """The kernel running ``prog`` over every (b, t): its inputs read (B, T, F) tensors,
    ``sources[input] = (binding, F, offset)``; output i is bound to ``out_refs[i]``; states are
    bound to ``state:<name>``."""
    k = Kernel(name, sched)
    s = _Step(k, prog)
    ins, outs, tensors = {}, {}, {}
    for port in prog.inputs:
        ref, width, off = sources[port.name]
        if ref not in tensors:
            tensors[ref] = k.input(f"X{len(tensors)}", ("B", "T", width))
            ins[tensors[ref]] = ref
        s.loc[port.name] = Loc(tensors[ref], off, "b, t, ")
    io = []
    for st in prog.states:
        p_in, p_out = k.input(s.name("S_", st.name), ("B", st.n)), k.output(s.name("SO_", st.name), ("B", st.n))
        ins[p_in] = outs[p_out] = f"state:{st.name}"
        s.loc[st.name] = Loc(k.scratch(s.name("st_", st.name), st.n), mutable=True)
        io.append((p_in, p_out, s.loc[st.name], st.n))
    for i, (v, ref) in enumerate(zip(prog.outputs, out_refs)):
        outs[k.output(f"Y{i}", ("B", "T", prog.size(v)))] = ref
        s.outs.setdefault(v, []).append(f"Y{i}")
    stages = schedule(GroupStages()(FoldBias()(prog)))
    s.plan(stages)
    with k.loop("b", "B"):
        for p_in, _, loc, n in io:
            k.vec(n, lambda j, p=p_in, loc=loc: [f"{loc.at(j)} = {p}[b, {j}]"])
        with k.loop("t", "TT"):
            s.step(stages)
        for _, p_out, loc, n in io:
            k.vec(n, lambda j, p=p_out, loc=loc: [f"{p}[b, {j}] = {loc.at(j)}"])
    return Call(k, consts=s.consts, ins=ins, outs=outs)


def _projectable(prog: StepProgram, op) -> Optional[str]:
    """The step input an Affine reads, if it is one projection of it (one input, no blocks, a
    constant bias)."""
    if not isinstance(op, Affine) or (op.bias is not None and not prog.is_param(op.bias)):
        return None
    xs = {t.x for t in op.terms}
    inputs = {p.name for p in prog.inputs}
    if len(xs) == 1 and xs <= inputs and all(t.blocks == 1 for t in op.terms):
        return xs.pop()
    return None


def plan_scan(op, n_in: int, sched: Schedule) -> list[Call]:
    """Kernel calls of a scan op with ``n_in`` input features."""
    return plan_program(step_program(op, n_in), sched)


def plan_program(prog: StepProgram, sched: Schedule) -> list[Call]:
    """Kernel calls of a step program: projections, a sequence kernel if other work was hoisted,
    the loop. Bindings: ``in<i>`` (step input i), ``out<i>``, ``state:<name>``, ``tmp:*``."""
    h = hoist(prog, elementwise=False)
    base = _ident(prog.name.lower())
    sources = {p.name: (f"in{i}", p.n, 0) for i, p in enumerate(prog.inputs)}
    groups: dict[str, list[Affine]] = {}
    rest = []
    for a in h.seq.body:
        x = _projectable(h.seq, a)
        (groups.setdefault(x, []) if x is not None else rest).append(a)
    calls = []
    for x, affs in groups.items():
        ps = h.seq.params
        w = np.concatenate([sum(ps[t.w] for t in a.terms) for a in affs])
        b = np.concatenate([ps[a.bias].reshape(-1) if a.bias is not None else np.zeros(a.n) for a in affs])
        ref = f"tmp:P{len(calls)}"
        k = ff.linear(f"proj_i{w.shape[1]}_o{w.shape[0]}", w.shape[1], w.shape[0], ff.TEMPORAL, sched, bias=True)
        calls.append(Call(k, consts={"Wt": f32(w.T), "bias": f32(b)}, ins={"X": sources[x][0]}, outs={"Y": ref}))
        off = 0
        for a in affs:
            sources[a.out] = (ref, w.shape[0], off)
            off += a.n
    if rest:
        made = {a.out for a in rest}
        needed = dict.fromkeys(r for a in rest for r in a.reads() if r in sources)
        outs = tuple(v for v in h.carry if v in made)
        seq = StepProgram(
            prog.name + ".seq", tuple(Port(v, h.seq.size(v)) for v in needed), (), h.seq.params, tuple(rest), outs, {}
        )
        refs = [f"tmp:R{i}" for i in range(len(outs))]
        calls.append(loop_kernel(f"{base}_seq", seq, sched, sources, refs))
        sources.update({v: (r, h.seq.size(v), 0) for v, r in zip(outs, refs)})
    name = "_".join([f"{base}_scan"] + [f"{_ident(s.name)}{s.n}" for s in prog.states])
    calls.append(loop_kernel(name, h.loop, sched, sources, [f"out{i}" for i in range(len(prog.outputs))]))
    return calls
