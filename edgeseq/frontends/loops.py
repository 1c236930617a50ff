"""Loop capture: models whose forward loops over time in Python.

    h = torch.zeros(x.size(0), H)
    for t in range(x.size(1)):            # or: for x_t in x.unbind(1), for step in range(T): x[step]
        h = cell(x[:, t], h)
        outs.append(h)
    return head(torch.stack(outs, 1)[:, -1])

The model is traced to an aten-level graph (make_fx) at a short length with batch 1: the Python
loop unrolls into one copy of its body per step. Each copy reads one time slice of the input and
values of the previous copy; the copies are checked to be identical, and one of them becomes the
step program of a :class:`~edgeseq.ir.ops.Scan` (:mod:`.aten` converts each operation). Values a
copy reads from the previous copy become the program's states; their value before the first step
must be zero (capture checks it numerically; a non-zero start is a one-line error). Work on the
whole sequence before the loop (a Linear over (B, T, F)) or after it (on the stacked outputs) is
per-step and joins the program. ``x[:, -1]``, ``.mean(1)`` / ``.sum(1)`` over stacked outputs and
the values the last step leaves behind become readouts; what follows them (a Linear head,
activations) becomes ordinary IR ops. The caller proves the graph equal to the model at a length
and batch size it did not trace.
"""

from __future__ import annotations

import operator
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from ..errors import UnsupportedModuleError
from ..ir import ops as O
from ..ir.graph import GraphBuilder
from ..ir.step import StepBuilder
from ..ir.types import Act, ReadoutMode
from .aten import C, StepConverter, V, aten, fold, source_line

NONZERO_INIT_HINT = (
    "start each state from torch.zeros(x.size(0), H) and add a constant inside the step, or use nn.GRU / "
    "nn.LSTM with a learned h0"
)
TRACE_STEPS = 6  # copies 1, 3 and 4 are compared with copy 2, which becomes the program
T_REF = 2

_PASS = {
    aten.clone.default,
    aten.detach.default,
    aten.alias.default,
    aten._to_copy.default,
    aten.contiguous.default,
    aten.lift_fresh_copy.default,
    aten.dropout.default,
    aten.view.default,
    aten.reshape.default,
    aten._unsafe_view.default,
    aten.squeeze.dim,
    aten.squeeze.default,
    aten.squeeze.dims,
    aten.unsqueeze.default,
    aten.transpose.int,
    aten.permute.default,
    aten.flatten.using_ints,
}


# ----------------------------------------------------------------------------------------------
# tracing


def trace(model: nn.Module, x: torch.Tensor):
    """aten graph of ``model(x)``; parameters and buffers are named placeholders."""
    from torch.func import functional_call
    from torch.fx.experimental.proxy_tensor import make_fx

    state = {k: v.detach() for k, v in list(model.named_parameters()) + list(model.named_buffers())}

    def f(state, x):
        return functional_call(model, state, (x,))

    try:
        with torch.no_grad():
            gm = make_fx(f, record_stack_traces=True)(state, x)
    except Exception as e:  # noqa: BLE001 - tracing raises many types for untraceable Python
        first = str(e).splitlines()[0] if str(e) else ""
        where = _user_frame(e.__traceback__) or type(model).__name__
        if "data-dependent" in str(e) or "_local_scalar_dense" in str(e):
            raise UnsupportedModuleError(
                "Python control flow that depends on tensor values (if / while on a tensor, .item())",
                where=where,
                hint="write the choice with torch.where(cond, a, b), or move it out of the model",
            ) from None
        raise UnsupportedModuleError(
            f"cannot trace {type(model).__name__}.forward at the aten level ({type(e).__name__}: {first[:160]})",
            where=where,
            hint="see the README section 'Bring your own model' for the supported patterns",
        ) from None
    return gm, list(state), state


def _user_frame(tb) -> str:
    """``file.py:LINE`` of the innermost traceback frame in the user's code (not torch, not edgeseq)."""
    import os
    import traceback

    frames = [
        f
        for f in traceback.extract_tb(tb)
        if not any(lib in f.filename for lib in ("/torch/", "/snntorch/", "/edgeseq/", "<"))
    ]
    if not frames:
        return ""
    f = frames[-1]
    return f"{os.path.basename(f.filename)}:{f.lineno}" + (f" ({f.line.strip()[:70]})" if f.line else "")


def time_axis_of(model: nn.Module, example: torch.Tensor) -> int:
    """The axis of the input the forward slices one step at a time (0: time-major, 1: batch-first)."""
    gm, names, _ = trace(model, example)
    x = [n for n in gm.graph.nodes if n.op == "placeholder"][len(names)]
    derived, dims = {x}, set()
    lead = tuple(example.shape[:2])
    for n in gm.graph.nodes:  # values computed from the input, and where sequences of its shape are sliced
        if n.op != "call_function" or not any(
            a in derived for a in _flatten(list(n.args)) if isinstance(a, torch.fx.Node)
        ):
            continue
        derived.add(n)
        src = n.args[0] if n.args else None
        val = src.meta.get("val") if isinstance(src, torch.fx.Node) else None
        if (
            n.target in (aten.select.int, aten.unbind.int)
            and isinstance(val, torch.Tensor)
            and val.dim() == 3
            and tuple(val.shape[:2]) == lead
        ):
            dims.add((n.args[1] if len(n.args) > 1 else 0) % 3)
    dims &= {0, 1}
    if len(dims) != 1:
        raise UnsupportedModuleError(
            "no loop over time: the forward does not read its input one time step at a time",
            where=type(model).__name__,
            hint="loop over x[:, t], x.unbind(1) or x[t] (time-major input)",
        )
    return dims.pop()


def _functional(target):
    """The out-of-place overload of an in-place aten op (add_ -> add), or None."""
    name = target.overloadpacket.__name__
    if not name.endswith("_") or name.startswith("_"):
        return None
    packet = getattr(aten, name[:-1], None)
    return None if packet is None else getattr(packet, target._overloadname, None)


def _mutates_first(target) -> bool:
    schema = getattr(target, "_schema", None)
    if schema is None or not schema.arguments:
        return False
    info = schema.arguments[0].alias_info
    return bool(info is not None and info.is_write)


def _width(node) -> int:
    """Per-example values of a traced (batch 1) tensor, time axis excluded for step values."""
    val = node.meta.get("val")
    if val is None or not hasattr(val, "shape"):
        return 1
    return int(np.prod(tuple(val.shape))) if val.dim() else 1


class _Call:
    """An fx node seen with its functional target and resolved arguments."""

    def __init__(self, node, target, args, kwargs):
        self.target, self.meta, self.name, self.args, self.kwargs = target, node.meta, node.name, args, kwargs


# ----------------------------------------------------------------------------------------------
# classification of every node: constant, whole sequence, step t, or a stack of steps


class Seq:
    """The graph input or a whole-sequence value computed from it; ``axis`` is its time axis."""

    def __init__(self, axis: int):
        self.axis = axis


class Step:
    def __init__(self, t: int):
        self.t = t


class Static:
    """An input that is the same at every step (a (B, F) input the loop reads whole each iteration)."""


class Pooled:
    """A value reduced over time (after a readout), or computed from one."""


POOLED = Pooled()


class Stacked:
    """torch.stack / torch.cat of one value per step, in order (time axis ``axis``)."""

    def __init__(self, items: list, axis: int):
        self.items, self.axis = items, axis


CONST = "const"
_LIKE = {
    aten.zeros_like.default,
    aten.ones_like.default,
    aten.full_like.default,
    aten.empty_like.default,
    aten.new_zeros.default,
    aten.new_ones.default,
    aten.new_full.default,
    aten.new_empty.default,
}


class LoopCapture:
    """Roll the traced time loop of ``model`` (see the module docstring)."""

    def __init__(self, model: nn.Module, example: torch.Tensor, time_axis: Optional[int]):
        """``time_axis`` None: a static (B, F) input, read whole by every iteration of a loop of fixed length."""
        self.model, self.time_axis, self.steps = model, time_axis, TRACE_STEPS
        self.static = time_axis is None
        shape = list(example.shape)
        if self.static:
            shape[0] = 1
        else:
            shape[time_axis], shape[1 - time_axis] = TRACE_STEPS, 1
        self.in_features = int(shape[-1])
        gm, names, state = trace(model, torch.randn(*shape, generator=torch.Generator().manual_seed(0)))
        self.gm = gm
        self.nodes = list(gm.graph.nodes)
        self.kind: dict[Any, Any] = {}  # node -> CONST | C | Seq | Step | Stacked | list
        self.target: dict[Any, Any] = {}
        self.args: dict[Any, tuple] = {}  # node -> arguments with in-place updates resolved
        self.kwargs: dict[Any, dict] = {}
        ph = [n for n in self.nodes if n.op == "placeholder"]
        for n, k in zip(ph, names):
            self.kind[n] = C(state[k].detach().double().numpy())
        self.x_node = ph[len(names)]
        self.kind[self.x_node] = Static() if self.static else Seq(time_axis)
        self.interval: dict[Any, int] = {}
        if self.static:
            self._static_iterations()
        self._classify()

    def _static_iterations(self) -> None:
        """Iteration boundaries of a loop over a static input: the operations reading the input
        repeat with a period; each repetition starts an iteration."""
        readers = [
            i
            for i, n in enumerate(self.nodes)
            if n.op == "call_function" and n.target is not operator.getitem and self.x_node in _flatten(list(n.args))
        ]
        targets = [self.nodes[i].target for i in readers]
        period = next(
            (
                p
                for p in range(1, len(targets) + 1)
                if len(targets) % p == 0 and targets == targets[:p] * (len(targets) // p)
            ),
            len(targets),
        )
        starts = readers[::period]
        if len(starts) < 5:
            raise UnsupportedModuleError(
                f"a loop over a static input needs at least 5 iterations to be checked, found {len(starts)}",
                where=type(self.model).__name__,
            )
        self.steps = len(starts)
        bounds = starts + [len(self.nodes)]
        for t in range(self.steps):
            for n in self.nodes[bounds[t] : bounds[t + 1]]:
                self.interval[n] = t

    def fail(self, node, why: str, hint: Optional[str] = None) -> UnsupportedModuleError:
        return UnsupportedModuleError(why, where=source_line(node) or getattr(node, "name", "?"), hint=hint)

    # -- pass 1 ---------------------------------------------------------------------------------
    def _classify(self) -> None:
        current: dict[Any, Any] = {}  # a tensor updated in place -> the node holding its value now

        def resolve(a):
            return torch.fx.node.map_arg(a, lambda x: current.get(x, x))

        for n in self.nodes:
            self.args[n], self.kwargs[n] = resolve(n.args), resolve(n.kwargs)
            if n.op in ("placeholder", "output"):
                continue
            if n.op == "get_attr":
                self.kind[n] = C(getattr(self.gm, n.target).detach().double().numpy())
                continue
            target = n.target
            mutated = None
            if hasattr(target, "overloadpacket") and _mutates_first(target):
                func = _functional(target)
                if func is None:
                    raise self.fail(n, f"the in-place operation {target} has no out-of-place form")
                target, mutated = func, self.args[n][0]
            self.target[n] = target
            self.kind[n] = self._kind(n, target)
            if mutated is not None:
                for k in [k for k, v in current.items() if v is mutated] + [mutated]:
                    current[k] = n

    def _arg_kind(self, a):
        if isinstance(a, torch.fx.Node):
            return self.kind[a]
        if isinstance(a, (list, tuple)):
            return type(a)(self._arg_kind(v) for v in a)
        return a

    def _kind(self, n, target):
        args = [self._arg_kind(a) for a in self.args[n]]
        if target is operator.getitem:
            src, idx = args
            return src[idx] if isinstance(src, (list, tuple)) else src
        if target in _LIKE:
            return CONST  # zeros_like(x) and friends do not depend on x's values
        flat = _flatten(args) + _flatten([self._arg_kind(v) for v in self.kwargs[n].values()])
        steps = {a.t for a in flat if isinstance(a, Step)}
        if any(isinstance(a, Static) for a in flat):
            if n not in self.interval:
                raise self.fail(n, "the static input is used outside the time loop")
            steps.add(self.interval[n])
        seqs = [a for a in flat if isinstance(a, (Seq, Stacked))]
        pooled = any(isinstance(a, Pooled) for a in flat)
        if pooled:
            if steps or seqs:
                raise self.fail(n, "an operation mixes a value reduced over time with a sequence or a step")
            return POOLED
        if not steps and not seqs:
            return CONST
        if self._readout_mode(target, args) is not None:
            return POOLED
        self._check_reduction(n, target, args)
        src = args[0] if args else None
        if isinstance(src, Seq) and target is aten.select.int and args[1] % 3 == src.axis:
            return Step(args[2] % self.steps)
        if isinstance(src, Seq) and target is aten.unbind.int and (args[1] if len(args) > 1 else 0) % 3 == src.axis:
            return [Step(t) for t in range(self.steps)]
        if target in (aten.stack.default, aten.cat.default) and steps and not seqs:
            items = list(self.args[n][0])
            kinds = [self.kind[i] for i in items]
            if [k.t for k in kinds if isinstance(k, Step)] == list(range(self.steps)) and len(kinds) == self.steps:
                dim = self.args[n][1] if len(self.args[n]) > 1 else self.kwargs[n].get("dim", 0)
                return Stacked(items, int(dim) % 3)
        if steps:
            if max(steps) - min(steps) > 1:
                raise self._order_problem(n) or self.fail(
                    n,
                    "the loop reads a value from two or more steps back",
                    hint="carry it through the loop's state explicitly",
                )
            if seqs:
                raise self.fail(n, "an operation mixes one step with a whole sequence")
            return Step(max(steps))
        axis = seqs[0].axis
        val = n.meta.get("val")
        shape = tuple(val.shape) if isinstance(val, torch.Tensor) else ()
        if len(shape) == 3 and shape.count(self.steps) == 1 and 1 in shape[:2]:
            axis = shape.index(self.steps)  # batch is 1 while tracing: the time axis is the one of T steps
        elif target is aten.transpose.int and {args[1] % 3, args[2] % 3} == {0, 1}:
            axis = 1 - axis
        elif target is aten.permute.default:
            axis = [d % 3 for d in args[1]].index(axis)
        return Seq(axis)

    def _order_problem(self, n) -> Optional[UnsupportedModuleError]:
        """A loop that does not visit every step forwards: backwards (reversed(range(T))) or skipping steps."""
        order = []
        for m in self.nodes:
            if m is n:
                break
            if m.op == "call_function" and self.target.get(m) is aten.select.int:
                src = self.args[m][0]
                if isinstance(self.kind.get(src), Seq) and self.args[m][1] % 3 == self.kind[src].axis:
                    order.append(self.args[m][2] % self.steps)
        if len(order) < 2:
            return None
        if order == sorted(order, reverse=True):
            return self.fail(
                n,
                "the loop runs backwards over time",
                hint="a stream runs forwards: loop forwards over x.flip(1) outside the model, or use a bidirectional "
                "nn.GRU / nn.LSTM (a window graph)",
            )
        if order == sorted(order) and any(b - a > 1 for a, b in zip(order, order[1:])):
            return self.fail(
                n,
                "the loop skips time steps (range(0, T, k))",
                hint="loop over every step; subsample the input before it reaches the model",
            )
        return None

    def _check_reduction(self, n, target, args) -> None:
        """A reduction over the time axis that is not a readout (max, min, ...): one line that says so."""
        src = args[0] if args else None
        if not isinstance(src, (Seq, Stacked)) or target not in _TIME_REDUCTIONS or len(args) < 2:
            return
        dims = args[1] if isinstance(args[1], (list, tuple)) else [args[1]]
        if any(isinstance(d, int) and d % 3 == src.axis for d in dims):
            raise self.fail(
                n,
                f"'{target.overloadpacket.__name__}' over time is not a streaming readout",
                hint="read the loop out with its last step (outs[:, -1] or the final state), .mean(1) or .sum(1)",
            )

    def _readout_mode(self, target, args) -> Optional[ReadoutMode]:
        """The readout an operation on a whole sequence is: its last step, or a mean / sum over time."""
        src = args[0] if args else None
        if not isinstance(src, (Seq, Stacked)):
            return None
        if (
            target is aten.select.int
            and args[1] % 3 == src.axis
            and isinstance(src, Stacked)
            and args[2] in (-1, self.steps - 1)
        ):
            return ReadoutMode.LAST
        if target in (aten.mean.dim, aten.sum.dim_IntList):
            dims = args[1] if isinstance(args[1], (list, tuple)) else [args[1]]
            if [d % 3 for d in dims] == [src.axis]:
                return ReadoutMode.MEAN if target is aten.mean.dim else ReadoutMode.SUM
        return None

    def call(self, n) -> _Call:
        return _Call(n, self.target.get(n, n.target), self.args[n], self.kwargs[n])

    def bodies(self) -> dict[int, list]:
        """The nodes each loop iteration computes, in execution order: iteration t runs from the
        first use of the input's time slice t to the first use of slice t + 1 (its constant
        operations excluded); the last one runs to the end (what follows the loop included)."""
        if self.static:
            out: dict[int, list] = {t: [] for t in range(self.steps)}
            for n in self.nodes:
                if n.op == "call_function" and isinstance(self.kind.get(n), Step):
                    out[self.interval.get(n, self.steps - 1)].append(n)
            return out
        starts: dict[int, int] = {}
        for i, n in enumerate(self.nodes):
            if n.op != "call_function" or self.target[n] is operator.getitem:
                continue
            if self._reads_slice(n) is not None:
                t = self._reads_slice(n)
                starts.setdefault(t, i)
        if sorted(starts) != list(range(self.steps)):
            raise UnsupportedModuleError(
                "no loop over time: the forward does not read the input one time step at a time",
                where=type(self.model).__name__,
                hint="loop over x[:, t], x.unbind(1) or x[t] (time-major)",
            )
        order = [starts[t] for t in range(self.steps)] + [len(self.nodes)]
        out = {}
        for t in range(self.steps):
            out[t] = [
                n
                for n in self.nodes[order[t] : order[t + 1]]
                if n.op == "call_function" and isinstance(self.kind.get(n), Step)
            ]
        return out

    def _reads_slice(self, n) -> Optional[int]:
        """The time step whose input slice ``n`` takes or first consumes, if any."""
        src = self.args[n][0] if self.args[n] and isinstance(self.args[n][0], torch.fx.Node) else None
        if src is not None and self.target[n] is aten.select.int and isinstance(self.kind.get(src), Seq):
            return self.kind[n].t
        for a in _flatten(list(self.args[n])):
            if isinstance(a, torch.fx.Node) and self.target.get(a) is operator.getitem:
                base = self.args[a][0]
                if self.target.get(base) is aten.unbind.int and isinstance(self.kind.get(base), list):
                    return self.args[a][1] % self.steps
        return None

    # -- pass 2: one copy of the body as a step program --------------------------------------------
    def _signature(self, n, pos: dict, t: int):
        def arg(a):
            if isinstance(a, (list, tuple)):
                return tuple(arg(v) for v in a)
            if not isinstance(a, torch.fx.Node):
                return ("lit", a)
            if a in pos:
                return ("body", pos[a])
            k = self.kind[a]
            if isinstance(k, Step):
                return ("prev", k.t - t)
            if isinstance(k, C) and a.op == "placeholder":
                return ("param", a.name)
            if k == CONST:
                return ("const", self.target[a], tuple(arg(v) for v in self.args[a]))
            return ("outer", a.name)

        args = tuple(arg(a) for a in self.args[n])
        if self.target[n] is aten.select.int and isinstance(self.kind[self.args[n][0]], Seq):
            args = args[:2]  # the time index differs from copy to copy
        return (self.target[n], args, tuple(sorted((k, arg(v)) for k, v in self.kwargs[n].items())))

    def canonical(self) -> list:
        bodies = self.bodies()
        ref = bodies[T_REF]
        if not ref:
            raise UnsupportedModuleError(
                "no loop over time: the forward never reads one time step of its input", where=type(self.model).__name__
            )

        def sig(body, t):
            pos = {n: i for i, n in enumerate(body)}
            return [self._signature(n, pos, t) for n in body]

        want = sig(ref, T_REF)
        for t in (1, 3, 4):
            got = sig(bodies[t][: len(ref)], t)
            if got != want:
                i = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)) - 1)
                node = bodies[t][min(i, len(bodies[t]) - 1)] if bodies[t] else None
                raise UnsupportedModuleError(
                    f"iterations {t} and {T_REF} of the time loop compute different things (the step depends on the "
                    "time index, or the loop changes over time)",
                    where=(source_line(node) if node is not None else "") or type(self.model).__name__,
                    hint="a scan does the same at every step: carry a step counter as a state instead of using t",
                )
        self.first_same = sig(bodies[0], 0) == want
        last_sig = sig(bodies[self.steps - 1], self.steps - 1)
        self.last_match = next(
            (i for i, (a, b_) in enumerate(zip(last_sig, want)) if a != b_), min(len(want), len(last_sig))
        )
        self.bodies_ = bodies
        return ref

    def build_program(self):
        ref = self.canonical()
        prev = {n: i for i, n in enumerate(self.bodies_[T_REF - 1])}
        b = StepBuilder(f"loop.{type(self.model).__name__}", {"x": self.in_features})
        cx = StepConverter(b)
        vals: dict[Any, Any] = {}
        states: dict[int, str] = {}

        def operand(a):
            if isinstance(a, (list, tuple)):
                return type(a)(operand(v) for v in a)
            if not isinstance(a, torch.fx.Node):
                return a
            if a in vals:
                return vals[a]
            k = self.kind[a]
            if a in prev:
                j = prev[a]
                if j not in states:
                    states[j] = b.state(f"state{len(states)}", _width(a))
                return V(states[j], _width(a))
            if isinstance(k, C):
                return k
            if k == CONST:
                vals[a] = fold(
                    self.call(a), operand(list(self.args[a])), {kk: operand(v) for kk, v in self.kwargs[a].items()}
                )
                return vals[a]
            if isinstance(k, (Seq, Stacked)) or isinstance(k, Static):
                return detime(a)
            if self.target.get(a) is operator.getitem and isinstance(self.kind.get(self.args[a][0]), list):
                return detime(self.args[self.args[a][0]][0])  # this step's slice of an unbind
            raise self.fail(
                a,
                f"step {T_REF} of the loop reads a value of step {k.t}"
                if isinstance(k, Step)
                else "unsupported value in the time loop",
            )

        def detime(a):
            """The per-step value of a whole-sequence node."""
            if a in vals:
                return vals[a]
            k = self.kind[a]
            if a is self.x_node:
                out: Any = V("x", self.in_features)
            elif isinstance(k, Stacked):
                out = operand(k.items[T_REF])
            else:
                args = operand(list(self.args[a]))
                if self.target[a] in _PASS:
                    out = next(x for x in _flatten(args) if isinstance(x, V))
                else:
                    out = cx.convert(self.call(a), args, {kk: operand(v) for kk, v in self.kwargs[a].items()})
            vals[a] = out
            return out

        for n in ref:
            target = self.target[n]
            src = self.args[n][0] if self.args[n] and isinstance(self.args[n][0], torch.fx.Node) else None
            if target in (aten.select.int, aten.unbind.int) and src is not None and isinstance(self.kind[src], Seq):
                per_step = detime(src)
                vals[n] = per_step if target is aten.select.int else [per_step] * self.steps
                continue
            if target is operator.getitem:
                s = operand(self.args[n][0])
                vals[n] = s[self.args[n][1]] if isinstance(s, (list, tuple)) else s
                continue
            vals[n] = cx.convert(
                self.call(n), operand(list(self.args[n])), {k: operand(v) for k, v in self.kwargs[n].items()}
            )
        self.b, self.cx, self.vals, self.states, self.operand, self.detime = b, cx, vals, states, operand, detime
        self.ref = ref
        self._initial_states()

    def _initial_states(self) -> None:
        """Each state's value before step 0 (what the first iteration reads in its place): zero, or a
        constant carried as an offset."""
        self.init: dict[int, np.ndarray] = {}
        if not self.first_same:
            return  # the first iteration differs (work on zero states folded away): checked numerically
        first, second = self.bodies_[0], self.bodies_[1]
        prev = {n: i for i, n in enumerate(first)}
        for n0, n1 in zip(first, second):
            for a0, a1 in zip(_flatten(list(self.args[n0])), _flatten(list(self.args[n1]))):
                if not isinstance(a1, torch.fx.Node) or a1 not in prev:
                    continue
                j = prev[a1]
                if j in self.states and j not in self.init and isinstance(a0, torch.fx.Node):
                    v = self.operand_outer(a0)
                    self.init[j] = np.broadcast_to(
                        np.ravel(v.value) if isinstance(v, C) else np.zeros(1), (_width(a1),)
                    ).copy()

    def operand_outer(self, a):
        k = self.kind[a]
        if isinstance(k, C):
            return k
        if k == CONST:
            return fold(
                self.call(a),
                [self.operand_outer(x) if isinstance(x, torch.fx.Node) else x for x in self.args[a]],
                dict(self.kwargs[a]),
            )
        raise self.fail(
            a,
            "the first iteration starts from a value computed from the input",
            hint="start the loop's state from zeros or a constant",
        )

    # -- pass 3: the graph around the scan ---------------------------------------------------------
    def build(self, gb: GraphBuilder, x_name: str = "x") -> list[str]:
        """Add the scan and what follows it to ``gb``; returns the graph's output value names."""
        self.build_program()
        last = {n: i for i, n in enumerate(self.bodies_[self.steps - 1][: self.last_match])}
        exprs: dict[Any, tuple] = {}

        def expr(a) -> tuple:
            if a in exprs:
                return exprs[a]
            k = self.kind.get(a)
            if a in last:  # a value the last step leaves behind
                e: tuple = ("last", self._value(self.vals[self.ref[last[a]]], a))
            elif isinstance(k, (Seq, Stacked)):
                e = ("temporal", self._value(self.detime(a), a))
            elif isinstance(k, C) or k == CONST:
                e = ("const", self.operand(a))
            else:
                e = self._post(a, expr)
            exprs[a] = e
            return e

        out_node = next(n for n in self.nodes if n.op == "output")
        results = [expr(a) for a in _flatten([self.args[out_node][0]])]
        names: list[str] = []
        for e in _walk(results):
            if e[0] in ("temporal", "last") and e[1] not in names:
                names.append(e[1])
        nxt = {}
        for j, sname in self.states.items():
            nxt[sname] = self._value(self.vals[self.ref[j]], self.ref[j])
            off = self.init.get(j)
            if off is not None and np.any(off != 0):
                raise self.fail(
                    self.ref[j],
                    "the loop's state starts from a non-zero constant",
                    hint=NONZERO_INIT_HINT,
                )
        if not names:
            raise UnsupportedModuleError(
                "the model's outputs do not depend on the time loop", where=type(self.model).__name__
            )
        prog = self.b.build(names, nxt)
        outs = gb.add(O.Scan(program=prog), x_name, "loop")
        seq = dict(zip(names, outs if isinstance(outs, tuple) else (outs,)))
        made: dict[int, str] = {}
        return [self._emit(gb, e, seq, made) for e in results]

    def _value(self, v, node) -> str:
        if not isinstance(v, V):
            raise self.fail(node, "a loop value that is not a tensor computed from the input")
        return v.name

    def _post(self, n, expr) -> tuple:
        """An operation after the loop (on sequences, readouts or pooled values)."""
        if n.op != "call_function":
            raise self.fail(n, "unsupported value after the time loop")
        target = self.target[n]
        args = list(self.args[n])
        src = self.kind.get(args[0]) if args and isinstance(args[0], torch.fx.Node) else None
        if target is operator.getitem:
            return expr(args[0])
        mode = self._readout_mode(target, [self.kind.get(a, a) if isinstance(a, torch.fx.Node) else a for a in args])
        if mode is not None:
            if len(args) > 2 and target is not aten.select.int and args[2]:
                raise self.fail(
                    n,
                    "a readout over time with keepdim=True",
                    hint="drop keepdim (.mean(1)) and unsqueeze the result if a time axis of 1 is needed",
                )
            return ("readout", mode, expr(args[0]))
        if isinstance(src, (Seq, Stacked)) and target is aten.select.int:
            raise self.fail(n, "after the loop only the last step of a sequence ([:, -1]) can be selected")
        ins = [
            expr(a)
            if isinstance(a, torch.fx.Node)
            else [expr(x) for x in a]
            if isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.fx.Node)
            else a
            for a in args
        ]
        if target in _PASS:
            return ins[0]
        if target is aten.t.default and ins[0][0] == "const":
            return ("const", C(np.asarray(ins[0][1].value).T))
        if target is aten.addmm.default:
            return ("linear", _const(ins[2], self, n).T, np.ravel(_const(ins[0], self, n)), ins[1])
        if target in (aten.mm.default, aten.matmul.default):
            return ("linear", _const(ins[1], self, n).T, None, ins[0])
        if target is aten.linear.default:
            bias = None if len(ins) < 3 or ins[2] is None else np.ravel(_const(ins[2], self, n))
            return ("linear", _const(ins[1], self, n), bias, ins[0])
        if target in _POOLED_ACTS:
            return ("act", _POOLED_ACTS[target], ins[0])
        if target is aten.add.Tensor and all(isinstance(i, tuple) and i[0] != "const" for i in ins[:2]):
            return ("add", ins[0], ins[1])
        if target is aten.cat.default:
            return ("concat", ins[0])
        raise self.fail(
            n,
            f"{target} after the time loop is not supported",
            hint="after the loop: the last step, mean or sum over time, Linear, activations, +, cat",
        )

    def _emit(self, gb: GraphBuilder, e: tuple, seq: dict, made: dict) -> str:
        key = id(e)
        if key in made:
            return made[key]
        kind = e[0]
        if kind == "temporal":
            out = seq[e[1]]
        elif kind == "last":
            out = gb.add(O.Readout(mode=ReadoutMode.LAST), seq[e[1]])
        elif kind == "readout":
            out = gb.add(O.Readout(mode=e[1]), self._emit(gb, e[2], seq, made))
        elif kind == "linear":
            out = gb.add(O.Linear(weight=e[1], bias=e[2]), self._emit(gb, e[3], seq, made))
        elif kind == "act":
            out = gb.add(O.Activation(fn=e[1]), self._emit(gb, e[2], seq, made))
        elif kind == "add":
            out = gb.add(O.Add(), [self._emit(gb, e[1], seq, made), self._emit(gb, e[2], seq, made)])
        elif kind == "concat":
            out = gb.add(O.Concat(), [self._emit(gb, x, seq, made) for x in e[1]])
        else:
            raise UnsupportedModuleError(
                "a model output that does not depend on the input", where=type(self.model).__name__
            )
        made[key] = out
        return out


_TIME_REDUCTIONS = {
    aten.max.dim,
    aten.min.dim,
    aten.amax.default,
    aten.amin.default,
    aten.logsumexp.default,
    aten.std.correction,
    aten.var.correction,
    aten.prod.dim_int,
    aten.cumsum.default,
    aten.argmax.default,
    aten.argmin.default,
    aten.median.dim,
}

_POOLED_ACTS = {
    aten.relu.default: Act.RELU,
    aten.tanh.default: Act.TANH,
    aten.sigmoid.default: Act.SIGMOID,
    aten.gelu.default: Act.GELU,
    aten.silu.default: Act.SILU,
}


def _walk(exprs):
    for e in exprs:
        if isinstance(e, tuple) and e:
            yield e
            for x in e[1:]:
                if isinstance(x, tuple):
                    yield from _walk([x])
                elif isinstance(x, list):
                    yield from _walk(x)


def _const(v, cap, node) -> np.ndarray:
    if isinstance(v, tuple) and v and v[0] == "const":
        c = v[1]
        return np.asarray(c.value if isinstance(c, C) else c, np.float64)
    raise cap.fail(node, "a weight after the loop must be a parameter")


def _flatten(a) -> list:
    out = []
    for v in a:
        if isinstance(v, (list, tuple)):
            out += _flatten(v)
        else:
            out.append(v)
    return out
