"""Passes over step programs, shared by every backend.

Each pass states what it requires of its input and guarantees of its output; :meth:`Pass.__call__`
checks both (and the verifier runs on every program built), so a broken pass fails where it
runs, not as a numeric difference three layers later. Passes never change what a program computes
in float; tests check each one against the evaluator.

- :class:`StripQuant`: drop quantization points (float renderings).
- :class:`SplitAffine`: split every Affine into its input-only terms (plus bias) and the rest, so
  that input projections can leave the loop.
- :class:`DeadCode`: drop ops whose values nobody reads.
- :class:`LinearState`: a next state affine in the states with input-only coefficients
  (``h + z (c - h)``) rewritten as ``a h + b``, so that hoisting leaves one multiply-add per state
  in the loop.
- :func:`hoist`: split a program into a *sequence* part that depends on the step inputs only (run
  once over the whole (B, T) sequence, e.g. as one matrix product) and the *loop* part.
- :func:`sink`: split a loop into the part the next states need (the loop proper) and the ops
  only outputs need, run after the loop over the whole sequence (e.g. a spike threshold whose
  spikes nothing carries, a dense hidden layer on a memory).
- :func:`schedule`: the loop body as stages: single ops (Affine, Concat, Slice, Gather) and maximal
  runs of elementwise ops of one length (one fused loop each), with the values each stage must
  keep for later stages.
- :class:`FoldBias`: an Add of a bias-free Affine's only use becomes that Affine's bias (the
  product starts from the other operand instead of adding it afterwards).
- :class:`GroupStages`: reorder the body (topologically) so that :func:`schedule` makes no more
  stages, typically fewer: independent products first, elementwise work gathered into long runs.
- :func:`liveness`: the last stage that reads each value (buffer reuse in C / TVM kernels).
- :func:`alias_buffers`: offsets in one scratch pool for the values a rendering stores, two values
  sharing space only where their live ranges over the stages do not overlap.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ...errors import VerificationError
from .program import Add, Affine, Concat, Mul, Port, Prim, Quant, StepProgram, Sub


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
        return prog.replace(
            body=tuple(body),
            outputs=tuple(sub.get(o, o) for o in prog.outputs),
            next_state={k: sub.get(v, v) for k, v in prog.next_state.items()},
        )

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
    terms)). Guarantees every Affine is wholly input-only or has only state-dependent terms.
    ``direct=True``: only terms over the step inputs themselves count as input terms (a product of
    another input-only value stays with the state terms, in one product)."""

    name = "split-affine"

    def __init__(self, direct: bool = False):
        self.direct = direct

    def _movable(self, prog: StepProgram) -> set[str]:
        return {p.name for p in prog.inputs} if self.direct else input_only(prog)

    def run(self, prog):
        body: list[Prim] = []
        dep = self._movable(prog)
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
        dep = self._movable(after)
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


_ONE = ("1",)


class LinearState(Pass):
    """Write each next state that is affine in the states, s' = sum_k a_k s_k + b with a_k, b
    computed from step inputs and parameters only, in exactly that form (a_k and b become
    input-only values), where that leaves fewer state-dependent ops. Requires a program without
    quantization points; guarantees no more state-dependent ops than before."""

    name = "linear-state"

    def requires(self, prog):
        if any(isinstance(op, Quant) for op in prog.body):
            raise VerificationError("linear-state needs a program without quantization points")

    def run(self, prog):
        best = prog
        for s in prog.state_names:
            form = self._forms(best).get(best.next_state[s])
            if form is None or not form[0]:
                continue
            cand = DeadCode()(self._emit(best, s, form))
            if _state_ops(cand) < _state_ops(best):
                best = cand
        return best

    def ensures(self, before, after):
        if _state_ops(after) > _state_ops(before):
            raise VerificationError("linear-state added state-dependent ops")

    @staticmethod
    def _forms(prog: StepProgram) -> dict:
        """value -> ({state: coefficient expr}, constant expr or None) where affine in the states."""
        dep = input_only(prog)
        forms: dict = {s: ({s: _ONE}, None) for s in prog.state_names}

        def form(name):
            if name in dep or prog.is_param(name):
                return {}, ("v", name)
            return forms.get(name)

        for op in prog.body:
            if op.out in dep or not isinstance(op, (Add, Sub, Mul)):
                continue
            a, b = form(op.a), form(op.b)
            if a is None or b is None:
                continue
            if isinstance(op, Mul):
                if a[0] and b[0]:
                    continue
                lin, k = (b, a[1]) if not a[0] else (a, b[1])  # k: the input-only factor
                forms[op.out] = ({s: _mul(c, k) for s, c in lin[0].items()}, _mul(lin[1], k))
                continue
            sign = 1 if isinstance(op, Add) else -1
            coefs = dict(a[0])
            for s, c in b[0].items():
                coefs[s] = _add(coefs.get(s), c if sign > 0 else ("neg", c))
            forms[op.out] = (coefs, _add(a[1], b[1] if sign > 0 or b[1] is None else ("neg", b[1])))
        return forms

    @staticmethod
    def _emit(prog: StepProgram, state: str, form) -> StepProgram:
        body, params = list(prog.body), dict(prog.params)
        n = prog.size(prog.next_state[state])
        made: dict = {}

        taken = {op.out for op in body} | set(params) | {p.name for p in prog.inputs + prog.states}

        def fresh(base):
            k = len(taken)
            while f"{base}{k}" in taken:
                k += 1
            taken.add(f"{base}{k}")
            return f"{base}{k}"

        def const(e):
            """The value of an expression of parameters only (None if it reads a value)."""
            if e == _ONE:
                return np.ones(1)
            if e[0] == "v":
                return np.ravel(params[e[1]]) if e[1] in params else None
            args = [const(a) for a in e[1:]]
            if any(a is None for a in args):
                return None
            return -args[0] if e[0] == "neg" else args[0] * args[1] if e[0] == "mul" else args[0] + args[1]

        def value(e) -> str:
            if e[0] == "v":
                return e[1]
            if e in made:
                return made[e]
            c = const(e)
            if c is not None:
                out = fresh("lin.c")
                params[out] = c
            elif e[0] == "neg":
                out = fresh("lin.neg")
                body.append(Sub(out=out, n=n, a=value(_ZERO(params, fresh)), b=value(e[1])))
            elif e[0] == "mul":
                out = fresh("lin.mul")
                body.append(Mul(out=out, n=n, a=value(e[1]), b=value(e[2])))
            else:
                x, y = e[1], e[2]
                out = fresh("lin.sum")
                if y[0] == "neg":
                    body.append(Sub(out=out, n=n, a=value(x), b=value(y[1])))
                elif x[0] == "neg":
                    body.append(Sub(out=out, n=n, a=value(y), b=value(x[1])))
                else:
                    body.append(Add(out=out, n=n, a=value(x), b=value(y)))
            made[e] = out
            return out

        acc: str | None = None
        for s, c in form[0].items():
            t = s if c == _ONE else fresh("lin.term")
            if c != _ONE:
                cv = value(c)
                body.append(Mul(out=t, n=n, a=cv, b=s))
            if acc is None:
                acc = t
            else:
                nxt = fresh("lin.acc")
                body.append(Add(out=nxt, n=n, a=acc, b=t))
                acc = nxt
        if form[1] is not None:
            nxt = fresh("lin.next")
            assert acc is not None
            body.append(Add(out=nxt, n=n, a=acc, b=value(form[1])))
            acc = nxt
        old = prog.next_state[state]
        return prog.replace(
            body=tuple(body),
            params=params,
            outputs=tuple(acc if o == old else o for o in prog.outputs),
            next_state={k: acc if v == old else v for k, v in prog.next_state.items()},
        )


def _ZERO(params: dict, fresh) -> tuple:
    name = next((k for k, v in params.items() if k.startswith("lin.zero")), None)
    if name is None:
        name = fresh("lin.zero")
        params[name] = np.zeros(1)
    return ("v", name)


def _add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    if a[0] == "neg" and b[0] == "neg":
        return ("neg", ("add", a[1], b[1]))
    return ("add", a, b)


def _mul(a, k):
    if a is None:
        return None
    if a == _ONE:
        return k
    if a[0] == "neg":
        return ("neg", _mul(a[1], k))
    return ("mul", a, k)


def _state_ops(prog: StepProgram) -> int:
    dep = input_only(prog)
    return sum(op.out not in dep for op in prog.body)


@dataclass
class Hoisted:
    """``seq`` runs once over the whole sequence (its inputs are the step inputs, no states);
    ``loop`` takes the step inputs it still needs and ``carry`` (values of ``seq``) as inputs."""

    seq: StepProgram
    loop: StepProgram
    carry: tuple[str, ...]


def hoist(prog: StepProgram, *, strip: bool = True, elementwise: bool = True) -> Hoisted:
    """Split ``prog`` into a whole-sequence part and a loop. With ``elementwise=False`` only the
    input projections leave the loop: Affines (parts of Affines) over the step inputs themselves,
    which is what pays where elementwise work is cheap inside the loop; a product of another
    input-only value stays in its loop product (e.g. B u in the LMU memory update)."""
    p = StripQuant()(prog) if strip else prog
    p = DeadCode()(SplitAffine(direct=not elementwise)(p))
    dep = input_only(p)
    step_in = {x.name for x in p.inputs}
    seq_names = set(step_in)
    seq_ops = []
    for op in p.body:
        if (
            op.out in dep
            and all(p.is_param(r) or r in (seq_names if elementwise else step_in) for r in op.reads())
            and (elementwise or isinstance(op, Affine))
        ):
            seq_ops.append(op)
            seq_names.add(op.out)
    loop_ops = [op for op in p.body if op.out not in seq_names]
    used_in_loop = set(p.outputs) | set(p.next_state.values())
    for op in loop_ops:
        used_in_loop.update(op.reads())
    carry = tuple(op.out for op in seq_ops if op.out in used_in_loop)
    seq = StepProgram(
        p.name + ".seq", p.inputs, (), {k: v for k, v in p.params.items()}, tuple(seq_ops), carry, {}, p.param_info
    )
    seq = DeadCode()(seq) if carry else seq
    inputs = tuple(x for x in p.inputs if x.name in used_in_loop) + tuple(Port(c, p.size(c)) for c in carry)
    loop = StepProgram(
        p.name + ".loop", inputs, p.states, p.params, tuple(loop_ops), p.outputs, p.next_state, p.param_info
    )
    return Hoisted(seq, loop, carry)


@dataclass
class Sunk:
    """``loop`` computes every next state and emits ``keep`` per step (the values ``post`` reads
    that the loop computes or carries); ``post`` takes the loop's inputs and ``keep`` as inputs
    and computes the original outputs over the whole sequence (no states)."""

    loop: StepProgram
    post: StepProgram
    keep: tuple[str, ...]


def sink(loop: StepProgram) -> Sunk:
    """Move the ops no next state depends on after the loop. Guarantees: ``loop`` has no op whose
    value only outputs need; ``post`` has no states; ``loop`` then ``post`` computes the outputs."""
    need = set(loop.next_state.values())
    for op in reversed(loop.body):
        if op.out in need:
            need.update(op.reads())
    post_ops = [op for op in loop.body if op.out not in need]
    made = {op.out for op in post_ops}
    keep: list[str] = []
    for v in [r for op in post_ops for r in op.reads()] + list(loop.outputs):
        if v not in made and not loop.is_param(v) and v not in keep:
            keep.append(v)
    ins = {p.name for p in loop.inputs}
    emitted = tuple(v for v in keep if v not in ins)
    inner = loop.replace(body=tuple(op for op in loop.body if op.out in need), outputs=emitted)
    ports = tuple(p for p in loop.inputs if p.name in keep) + tuple(Port(v, loop.size(v)) for v in emitted)
    post = StepProgram(loop.name + ".post", ports, (), loop.params, tuple(post_ops), loop.outputs, {}, loop.param_info)
    if any(op.out not in need for op in inner.body) or post.states:  # pragma: no cover - by construction
        raise VerificationError("sink left an output-only op in the loop")
    return Sunk(DeadCode()(inner), post, emitted)


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


class FoldBias(Pass):
    """``v = Affine(terms); y = Add(v, w)`` (or ``Add(w, v)``) with ``v`` read by nothing else ->
    ``y = Affine(terms, bias=w)`` at the Add's place. Guarantees no Add is left that could fold."""

    name = "fold-bias"

    @staticmethod
    def _foldable(prog: StepProgram) -> dict[str, tuple[Affine, str]]:
        """Add value -> (the Affine it absorbs, the other operand)."""
        prods = prog.producers()
        uses = prog.consumers()
        ends = set(prog.outputs) | set(prog.next_state.values())
        out = {}
        for op in prog.body:
            if not isinstance(op, Add) or op.a == op.b:
                continue
            for v, w in ((op.a, op.b), (op.b, op.a)):
                a = prods.get(v)
                if (
                    isinstance(a, Affine)
                    and a.bias is None
                    and v not in ends
                    and len(uses[v]) == 1
                    and prog.size(w) == op.n
                ):
                    out[op.out] = (a, w)
                    break
        return out

    def run(self, prog):
        fold = self._foldable(prog)
        gone = {a.out for a, _ in fold.values()}
        body = []
        for op in prog.body:
            if op.out in gone:
                continue
            if op.out in fold:
                a, w = fold[op.out]
                op = replace(a, out=op.out, bias=w)
            body.append(op)
        return prog.replace(body=tuple(body))

    def ensures(self, before, after):
        if self._foldable(after):
            raise VerificationError(f"fold-bias left foldable Adds {sorted(self._foldable(after))}")


class GroupStages(Pass):
    """Reorder the body so that :func:`schedule` makes as few stages as it can find: a list
    schedule that continues the current fused run with any ready elementwise op of its length,
    else takes a ready non-elementwise op (products first: what they feed can then join one run),
    else starts a new run. Guarantees a topological order and no more stages than before."""

    name = "group-stages"

    def run(self, prog):
        avail = {p.name for p in prog.inputs} | set(prog.state_names) | set(prog.params)
        pending, order, run_n = list(prog.body), [], None
        while pending:
            ready = [op for op in pending if all(r in avail for r in op.reads())]
            pick = (
                next((op for op in ready if op.elementwise and op.n == run_n), None)
                or next((op for op in ready if not op.elementwise), None)
                or ready[0]
            )
            pending.remove(pick)
            order.append(pick)
            avail.add(pick.out)
            run_n = pick.n if pick.elementwise else None
        out = prog.replace(body=tuple(order))
        return out if len(schedule(out)) <= len(schedule(prog)) else prog

    def ensures(self, before, after):
        if sorted(op.out for op in before.body) != sorted(op.out for op in after.body):
            raise VerificationError("group-stages changed the set of ops")
        if len(schedule(after)) > len(schedule(before)):
            raise VerificationError("group-stages made more stages")


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
    state adds the constant back (quantized like the state's value was, or at the state's scale); every stored value subtracts it (and is the state's quantization
    point; a point the program had on the state's value becomes the point of the output it is, or an
    inner point)."""
    from .program import PointKind, PointName, QPoint, QRole, Sub

    params = dict(prog.params)
    sub: dict[str, str] = {}
    head: list[Prim] = []
    own = {op.name.name: op.point for op in prog.body if isinstance(op, Quant) and op.name.kind is PointKind.STATE}
    for s in prog.states:
        if s.name not in init:
            continue
        k = f"{s.name}.init"
        params[k] = np.broadcast_to(np.asarray(init[s.name], np.float64).ravel(), (s.n,)).copy()
        head.append(Add(out=f"{s.name}.value", n=s.n, a=s.name, b=k))
        head.append(
            Quant(
                out=f"{s.name}.value_q",
                n=s.n,
                x=f"{s.name}.value",
                point=own.get(s.name, QPoint(QRole.SHARE, ref=s.name, widen=True)),
                name=PointName(PointKind.INNER, f"{s.name}.value"),
            )
        )
        sub[s.name] = f"{s.name}.value_q"
    body = list(head)
    for op in prog.body:
        op = _rename(op, sub)
        if isinstance(op, Quant) and op.name.kind is PointKind.STATE and op.name.name in sub:
            name = PointName(PointKind.INNER, f"{op.name.name}_value")
            if op.out in prog.outputs:
                name = PointName(PointKind.OUTPUT, index=prog.outputs.index(op.out))
            op = replace(op, name=name)
        body.append(op)
    nxt = dict(prog.next_state)
    for s in prog.states:
        if s.name not in init:
            continue
        v = sub.get(nxt[s.name], nxt[s.name])
        body.append(Sub(out=f"{s.name}.offset", n=s.n, a=v, b=f"{s.name}.init"))
        body.append(
            Quant(
                out=f"{s.name}.next",
                n=s.n,
                x=f"{s.name}.offset",
                point=QPoint(QRole.STATE),
                name=PointName(PointKind.STATE, s.name),
            )
        )
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
    head = [
        Gt(out="delay.valid", n=1, a=counter.name, b="delay.edge"),
        Add(out="delay.next", n=1, a=counter.name, b="delay.one"),
        Quant(
            out="delay.next_q",
            n=1,
            x="delay.next",
            point=QPoint(QRole.STATE),
            name=PointName(PointKind.STATE, counter.name),
        ),
        Select(out="delay.count_sel", n=1, c="delay.valid", a=counter.name, b="delay.next_q"),
    ]
    body = head + list(prog.body)
    nxt = {counter.name: "delay.count_sel"}
    for s in prog.states:
        gated = f"{s.name}.gated"
        body.append(Select(out=gated, n=s.n, c="delay.valid", a=prog.next_state[s.name], b=s.name))
        nxt[s.name] = gated
    return prog.replace(states=tuple(prog.states) + (counter,), params=params, body=tuple(body), next_state=nxt)


@dataclass
class BufferPlan:
    """``offset[v]``: where value ``v`` starts in a pool of ``size`` elements."""

    offset: dict[str, int]
    size: int


def alias_buffers(prog: StepProgram, stages: list[Stage], values, align: int = 1) -> BufferPlan:
    """Place ``values`` (each written by one stage of ``stages``) in one pool, first fit, offsets a
    multiple of ``align``. A value lives from the stage that writes it to the last stage that reads
    it (the end of the step for outputs and next states), both ends included: a stage never writes
    over a value it reads (a fused loop's element i may land on another operand's element j > i,
    still to be read)."""
    at: dict[str, int] = {}
    for k, st in enumerate(stages):
        for op in st.ops:
            at[op.out] = k
    end = 2 * len(stages)
    last: dict[str, int] = {}
    for k, st in enumerate(stages):
        for op in st.ops:
            for r in op.reads():
                last[r] = max(last.get(r, -1), 2 * k + 1)
    for v in list(prog.outputs) + list(prog.next_state.values()):
        last[v] = end
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, first, last)
    offset: dict[str, int] = {}
    size = 0
    for v in sorted(values, key=lambda v: (at[v], -prog.size(v))):
        n, first = prog.size(v), 2 * at[v] + 1
        lo = last.get(v, first)
        busy = sorted((o, o + s) for o, s, f, e in placed if not (e < first or lo < f))
        pos = 0
        for a, b in busy:
            if a - pos >= n:
                break
            pos = max(pos, -(-b // align) * align)
        placed.append((pos, n, first, lo))
        offset[v] = pos
        size = max(size, pos + n)
    return BufferPlan(offset, size)
