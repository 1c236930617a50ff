"""Passes over step programs, shared by every backend.

Each pass states what it requires of its input and guarantees of its output; :meth:`Pass.__call__`
checks both (and the verifier runs on every program built), so a broken pass fails where it
runs, not as a numeric difference three layers later. Passes never change what a program computes
in float; tests check each one against the evaluator.

- :class:`StripQuant`: drop quantization points (float renderings).
- :class:`SplitAffine`: split every Affine into its input-only terms (plus bias) and the rest, so
  that input projections can leave the loop.
- :class:`DeadCode`: drop ops whose values nobody reads.
- :func:`hoist`: split a program into a *sequence* part that depends on the step inputs only (run
  once over the whole (B, T) sequence, e.g. as one matrix product) and the *loop* part.
- :func:`schedule`: the loop body as stages: single ops (Affine, Concat, Slice, Gather) and maximal
  runs of elementwise ops of one length (one fused loop each), with the values each stage must
  keep for later stages.
- :func:`liveness`: the last stage that reads each value (buffer reuse in C / TVM kernels).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from ...errors import VerificationError
from .program import Add, Affine, Concat, Port, Prim, Quant, StepProgram


class Pass:
    """A program -> program transformation with checked pre- and post-conditions."""

    name = "pass"

    def requires(self, prog: StepProgram) -> None:
        """Raise VerificationError if ``prog`` is not a valid input."""

    def run(self, prog: StepProgram) -> StepProgram:
        raise NotImplementedError

    def ensures(self, before: StepProgram, after: StepProgram) -> None:
        """Raise VerificationError if ``after`` breaks the pass's guarantee."""

    def __call__(self, prog: StepProgram) -> StepProgram:
        self.requires(prog)
        out = self.run(prog)
        if [s.name for s in out.inputs] != [s.name for s in prog.inputs] or out.state_names != prog.state_names:
            raise VerificationError(f"pass {self.name} changed the program's interface")
        self.ensures(prog, out)
        return out


def _rename(op: Prim, sub: dict) -> Prim:
    """``op`` with its operands renamed by ``sub``."""
    if not sub:
        return op
    changes = {}
    for f in ("x", "a", "b", "c", "index", "bias"):
        v = getattr(op, f, None)
        if isinstance(v, str) and v in sub:
            changes[f] = sub[v]
    if isinstance(op, Affine):
        changes["terms"] = tuple(replace(t, x=sub.get(t.x, t.x)) for t in op.terms)
    if isinstance(op, Concat):
        changes["xs"] = tuple(sub.get(x, x) for x in op.xs)
    return replace(op, **changes) if changes else op


class StripQuant(Pass):
    """Remove every Quant (reads of its value read its input instead)."""

    name = "strip-quant"

    def run(self, prog):
        sub: dict[str, str] = {}
        body = []
        for op in prog.body:
            if isinstance(op, Quant):
                sub[op.out] = sub.get(op.x, op.x)
                continue
            body.append(_rename(op, sub))
        return prog.replace(body=tuple(body), outputs=tuple(sub.get(o, o) for o in prog.outputs),
                            next_state={k: sub.get(v, v) for k, v in prog.next_state.items()})

    def ensures(self, before, after):
        if any(isinstance(op, Quant) for op in after.body):
            raise VerificationError("strip-quant left a Quant")


def input_only(prog: StepProgram) -> set[str]:
    """Values computed from the step inputs and parameters only (not from any state)."""
    dep = {p.name for p in prog.inputs}
    for op in prog.body:
        reads = [r for r in op.reads() if not prog.is_param(r)]
        if all(r in dep for r in reads):
            dep.add(op.out)
    return dep


class SplitAffine(Pass):
    """Affine(input terms + state terms + bias) -> Add(Affine(input terms + bias), Affine(state
    terms)). Guarantees every Affine is wholly input-only or has only state-dependent terms."""

    name = "split-affine"

    def run(self, prog):
        body: list[Prim] = []
        dep = input_only(prog)
        for op in prog.body:
            if isinstance(op, Affine):
                inp = [t for t in op.terms if t.x in dep]
                rec = [t for t in op.terms if t.x not in dep]
                if inp and rec:
                    a = f"{op.out}.in"
                    r = f"{op.out}.rec"
                    body.append(Affine(out=a, n=op.n, terms=tuple(inp), bias=op.bias))
                    body.append(Affine(out=r, n=op.n, terms=tuple(rec)))
                    body.append(Add(out=op.out, n=op.n, a=a, b=r))
                    continue
            body.append(op)
        return prog.replace(body=tuple(body))

    def ensures(self, before, after):
        dep = input_only(after)
        for op in after.body:
            if isinstance(op, Affine) and len({t.x in dep for t in op.terms}) > 1:
                raise VerificationError(f"split-affine left a mixed Affine '{op.out}'")


class DeadCode(Pass):
    """Remove ops whose value is neither read, an output, nor a next state."""

    name = "dead-code"

    def run(self, prog):
        live = set(prog.outputs) | set(prog.next_state.values())
        body = []
        for op in reversed(prog.body):
            if op.out in live:
                body.append(op)
                live.update(op.reads())
        return prog.replace(body=tuple(reversed(body)))

    def ensures(self, before, after):
        used = set(after.outputs) | set(after.next_state.values())
        for op in after.body:
            used.update(op.reads())
        dead = [op.out for op in after.body if op.out not in used]
        if dead:
            raise VerificationError(f"dead-code left unused values {dead}")


@dataclass
class Hoisted:
    """``seq`` runs once over the whole sequence (its inputs are the step inputs, no states);
    ``loop`` takes the step inputs it still needs and ``carry`` (values of ``seq``) as inputs."""

    seq: StepProgram
    loop: StepProgram
    carry: tuple[str, ...]


def hoist(prog: StepProgram, *, strip: bool = True, elementwise: bool = True) -> Hoisted:
    """Split ``prog`` into a whole-sequence part and a loop. With ``elementwise=False`` only
    Affines leave the loop (what is worth it where elementwise work is cheap inside the loop)."""
    p = StripQuant()(prog) if strip else prog
    p = DeadCode()(SplitAffine()(p))
    dep = input_only(p)
    seq_ops = [op for op in p.body if op.out in dep and (elementwise or isinstance(op, Affine))]
    seq_names = {op.out for op in seq_ops}
    loop_ops = [op for op in p.body if op.out not in seq_names]
    used_in_loop = set(p.outputs) | set(p.next_state.values())
    for op in loop_ops:
        used_in_loop.update(op.reads())
    carry = tuple(op.out for op in seq_ops if op.out in used_in_loop)
    seq = StepProgram(p.name + ".seq", p.inputs, (), {k: v for k, v in p.params.items()}, tuple(seq_ops), carry, {},
                      p.param_info)
    seq = DeadCode()(seq) if carry else seq
    inputs = tuple(x for x in p.inputs if x.name in used_in_loop) + tuple(Port(c, p.size(c)) for c in carry)
    loop = StepProgram(p.name + ".loop", inputs, p.states, p.params, tuple(loop_ops), p.outputs, p.next_state,
                       p.param_info)
    return Hoisted(seq, loop, carry)


@dataclass
class Stage:
    """One op, or a fused run of elementwise ops of one length ``n``."""

    ops: list
    n: int
    fused: bool
    keep: set = field(default_factory=set)  # values later stages, outputs or states read


def schedule(prog: StepProgram) -> list[Stage]:
    """The body as stages (see the module docstring). A value stays scalar inside its fused stage
    unless it is in ``keep``."""
    stages: list[Stage] = []
    for op in prog.body:
        last = stages[-1] if stages else None
        if op.elementwise and last is not None and last.fused and last.n == op.n:
            last.ops.append(op)
        else:
            stages.append(Stage([op], op.n, op.elementwise))
    needed_after: set[str] = set(prog.outputs) | set(prog.next_state.values())
    for st in reversed(stages):
        produced = {op.out for op in st.ops}
        st.keep = produced & needed_after
        for op in st.ops:
            needed_after.update(r for r in op.reads() if r not in produced)
    return stages


def liveness(prog: StepProgram) -> dict[str, int]:
    """Value -> index of the last op that reads it (len(body) for outputs and next states)."""
    last: dict[str, int] = {}
    for i, op in enumerate(prog.body):
        for r in op.reads():
            last[r] = i
    for v in list(prog.outputs) + list(prog.next_state.values()):
        last[v] = len(prog.body)
    return last



def with_initial_state(prog: StepProgram, init: dict) -> StepProgram:
    """The program of ``prog`` started from ``init[state]`` (constants, one per example) instead of
    zero, keeping the zero-start contract: the state carries the offset s - init. Every read of a
    state adds the constant back; every stored value subtracts it (and is the state's quantization
    point; a point the program had on the state's value becomes an inner point)."""
    from .program import PointKind, PointName, QPoint, QRole, Sub

    params = dict(prog.params)
    sub: dict[str, str] = {}
    head: list[Prim] = []
    for s in prog.states:
        if s.name not in init:
            continue
        k = f"{s.name}.init"
        params[k] = np.broadcast_to(np.asarray(init[s.name], np.float64).ravel(), (s.n,)).copy()
        head.append(Add(out=f"{s.name}.value", n=s.n, a=s.name, b=k))
        sub[s.name] = f"{s.name}.value"
    body = list(head)
    for op in prog.body:
        op = _rename(op, sub)
        if isinstance(op, Quant) and op.name.kind is PointKind.STATE and op.name.name in sub:
            op = replace(op, name=PointName(PointKind.INNER, f"{op.name.name}_value"))
        body.append(op)
    nxt = dict(prog.next_state)
    for s in prog.states:
        if s.name not in init:
            continue
        v = sub.get(nxt[s.name], nxt[s.name])
        body.append(Sub(out=f"{s.name}.offset", n=s.n, a=v, b=f"{s.name}.init"))
        body.append(Quant(out=f"{s.name}.next", n=s.n, x=f"{s.name}.offset", point=QPoint(QRole.STATE),
                          name=PointName(PointKind.STATE, s.name)))
        nxt[s.name] = f"{s.name}.next"
    outs = tuple(sub.get(o, o) for o in prog.outputs)
    return prog.replace(params=params, body=tuple(body), outputs=outs, next_state=nxt)


def with_delay(prog: StepProgram, delay: int) -> StepProgram:
    """The program run on an input that becomes valid only after ``delay`` steps (the output of a
    valid convolution, streamed): a step counter (saturating at ``delay``) holds every state at zero
    until the input is valid, so the recurrence starts exactly where the delayed sequence does."""
    from .program import Gt, PointKind, PointName, QPoint, QRole, Select, StateSlot

    if delay <= 0:
        return prog
    params = dict(prog.params)
    params["delay.edge"] = np.array([delay - 0.5])
    params["delay.one"] = np.array([1.0])
    counter = StateSlot("delay.count", 1)
    head = [Gt(out="delay.valid", n=1, a=counter.name, b="delay.edge"),
            Add(out="delay.next", n=1, a=counter.name, b="delay.one"),
            Select(out="delay.count_sel", n=1, c="delay.valid", a=counter.name, b="delay.next"),
            Quant(out="delay.count_q", n=1, x="delay.count_sel", point=QPoint(QRole.STATE),
                  name=PointName(PointKind.STATE, counter.name))]
    body = head + list(prog.body)
    nxt = {counter.name: "delay.count_q"}
    for s in prog.states:
        gated = f"{s.name}.gated"
        body.append(Select(out=gated, n=s.n, c="delay.valid", a=prog.next_state[s.name], b=s.name))
        nxt[s.name] = gated
    return prog.replace(states=tuple(prog.states) + (counter,), params=params, body=tuple(body), next_state=nxt)
