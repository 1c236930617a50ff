"""Float step functions with named quantization points.

Feed-forward op kinds have one float64 step function here; scan ops run their step program
(:mod:`edgeseq.ir.cells`), whose Quant primitives are the points. Both compute exactly what the
reference interpreter (:mod:`edgeseq.ir.interpret`) computes, but pass every value the integer
program rounds through a quantizer hook ``q(name, x, point)``. With the identity hook (calibration) the
result equals the reference interpreter; with a fake-quant hook (:mod:`edgeseq.quant.fakequant`)
it is the float simulation of the quantized program; the lowering (:mod:`edgeseq.quant.lower`)
implements the same points in integers. The three therefore share one list of quantization points.

Point names:

- an IR value name (op outputs and the graph input),
- ``'<node>/<state>'`` for a state (the graph's state keys),
- ``'<node>:<internal>'`` for values inside an op (gate pre-activations, gates, currents, ...).

A :class:`Point` declares the role of each name; :func:`edgeseq.quant.plan.make_plan` turns roles
plus calibration statistics into bits and scales.
"""

from __future__ import annotations

import weakref
from typing import Callable, Mapping, Optional, Protocol, Sequence

import numpy as np

from ..errors import UnsupportedOpError
from ..ir import ops as O
from ..ir.activations import CLAMP_ACTS, activation
from ..ir.cells import has_step_program, step_program
from ..ir.graph import Graph, Node
from ..ir.interpret import WINDOW, check_input, check_state
from ..ir.step import PointKind, QPoint, Quant, StepProgram, run_step
from ..ir.types import UNIT_ACTS, Act, ReadoutMode

# ----------------------------------------------------------------------------------------------
# points and quantizer hooks


#: a quantization point's role (the step programs of the cells declare theirs)
Point = QPoint


class Hook(Protocol):
    def __call__(self, name: str, x: np.ndarray, point: Point) -> np.ndarray: ...

    def alias(self, name: str, target: str) -> None: ...


class IdentityHook:
    """No quantization (the reference semantics); records the declared points."""

    def __init__(self):
        self.points: dict[str, Point] = {}
        self.aliases: dict[str, str] = {}

    def __call__(self, name, x, point):
        self.points.setdefault(name, point)
        return x

    def alias(self, name, target):
        self.aliases[name] = target

    def step(self, t: int) -> None:
        pass


# ----------------------------------------------------------------------------------------------
# parameters


_PREP: "weakref.WeakKeyDictionary[O.Op, dict]" = weakref.WeakKeyDictionary()


def float_params(op: O.Op, n_in: int = 0) -> dict[str, np.ndarray]:
    """float64 parameters of ``op`` as the step functions use them: a scan op's step-program
    parameters (``n_in``: its input width), else the op's own arrays."""
    if has_step_program(op):
        return dict(step_program(op, n_in).params)
    if op not in _PREP:
        _PREP[op] = {k: np.asarray(v, dtype=np.float64) for k, v in op.arrays().items()}
    return _PREP[op]


def node_params(graph: Graph, node: Node) -> dict[str, np.ndarray]:
    return float_params(node.op, graph.type_of(node.inputs[0]).features)


def graph_params(graph: Graph) -> dict[str, dict[str, np.ndarray]]:
    return {n.name: node_params(graph, n) for n in graph.nodes}


# ----------------------------------------------------------------------------------------------
# step context


class Ctx:
    """What a step function sees: its node, its output names and the hook."""

    __slots__ = ("node", "outs", "ins", "hook")

    def __init__(self, node: Node, hook):
        self.node = node.name
        self.outs = node.outputs
        self.ins = node.inputs
        self.hook = hook

    def out(self, x, point: Point, i: int = 0):
        return self.hook(self.outs[i], x, point)

    def st(self, key: str, x, point: Point):
        return self.hook(f"{self.node}/{key}", x, point)

    def inner(self, key: str, x, point: Point):
        return self.hook(f"{self.node}:{key}", x, point)

    def pname(self, key: str) -> str:
        return f"{self.node}:{key}"

    def sname(self, key: str) -> str:
        return f"{self.node}/{key}"

    def alias_out(self, target: str, i: int = 0) -> None:
        self.hook.alias(self.outs[i], target)

    def table(self, fn: Act, pre, pre_name: str, out_name: str, point: Point, slope=0.01, lo=-1.0, hi=1.0):
        """fn(pre) quantized at ``out_name``: a table lookup in the integer program. A hook with a
        ``table`` method (fake quantization) reproduces the integer table exactly."""
        tab = getattr(self.hook, "table", None)
        if tab is not None:
            return tab(fn, pre, pre_name, out_name, point, slope, lo, hi)
        return self.hook(out_name, activation(fn, pre, slope, lo, hi), point)


def _b(p, name):
    return p.get(name, 0.0)


def _mm(x, w):
    return 0.0 if w is None else x @ w.T


def _unit(fn: str, state: bool = False) -> Point:
    return Point("unit", fn=fn, state=state)


StepFn = Callable[[O.Op, dict, Sequence[np.ndarray], Mapping[str, np.ndarray], Ctx], tuple[tuple, dict]]
SIM: dict[type, StepFn] = {}


def _sim(*classes):
    def deco(fn):
        for c in classes:
            SIM[c] = fn
        return fn

    return deco


# ----------------------------------------------------------------------------------------------
# feed-forward ops


@_sim(O.Linear)
def _linear(op, p, xs, st, c: Ctx):
    return (c.out(xs[0] @ p["weight"].T + _b(p, "bias"), Point("act")),), {}


@_sim(O.Conv1d)
def _conv1d(op, p, xs, st, c: Ctx):
    x = xs[0]
    w = p["weight"]
    out_ch, cg, k = w.shape
    g = op.groups
    if op.history:
        window = np.concatenate([st["buf"], x[:, None, :]], axis=1)
        new = {"buf": window[:, 1:, :]}
    else:
        window, new = x[:, None, :], {}
    taps = window[:, :: op.dilation, :]
    b = x.shape[0]
    y = np.einsum("bkgc,gock->bgo", taps.reshape(b, k, g, cg), w.reshape(g, out_ch // g, cg, k))
    return (c.out(y.reshape(b, out_ch) + _b(p, "bias"), Point("act")),), new


@_sim(O.LayerNorm)
def _layernorm(op, p, xs, st, c: Ctx):
    x = xs[0]
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + op.eps)
    if "weight" in p:
        y = y * p["weight"]
    return (c.out(y + _b(p, "bias"), Point("act")),), {}


@_sim(O.BatchNorm)
def _batchnorm(op, p, xs, st, c: Ctx):
    y = (xs[0] - p["mean"]) / np.sqrt(p["var"] + op.eps)
    if "weight" in p:
        y = y * p["weight"]
    return (c.out(y + _b(p, "bias"), Point("act")),), {}


@_sim(O.Activation)
def _activation(op, p, xs, st, c: Ctx):
    if op.fn in CLAMP_ACTS:
        y = activation(op.fn, xs[0], op.slope, op.lo, op.hi)
        return (c.out(y, Point("share", ref=c.ins[0])),), {}
    pt = _unit(UNIT_ACTS[op.fn]) if op.fn in UNIT_ACTS else Point("act")
    return (c.table(op.fn, xs[0], c.ins[0], c.outs[0], pt, op.slope, op.lo, op.hi),), {}


@_sim(O.Add)
def _add(op, p, xs, st, c: Ctx):
    return (c.out(xs[0] + xs[1], Point("act")),), {}


@_sim(O.Concat)
def _concat(op, p, xs, st, c: Ctx):
    return (c.out(np.concatenate(xs, axis=-1), Point("concat", refs=tuple(c.ins))),), {}


# ----------------------------------------------------------------------------------------------
# scan ops: their step programs, evaluated with the hook at every quantization point


def _scan(op, p, xs, st, c: Ctx):
    prog = step_program(op, xs[0].shape[-1])
    outs, new = run_step(prog, xs, st, params=p, hook=c.hook, node=c.node, node_outputs=c.outs)
    for i, target in enumerate(state_aliases(prog)):
        if target is not None:
            c.alias_out(f"{c.node}/{target}", i)
    return outs, new


def state_aliases(prog: StepProgram) -> list:
    """For each output of ``prog``: the state whose quantization point it is, or None."""
    prod = prog.producers()
    out = []
    for o in prog.outputs:
        q = prod.get(o)
        out.append(q.name.name if isinstance(q, Quant) and q.name.kind is PointKind.STATE else None)
    return out


# ----------------------------------------------------------------------------------------------
# readouts


def readout_update(op: O.Readout, x, st):
    if op.mode is ReadoutMode.LAST:
        return {"last": x}
    new = {"sum": st["sum"] + x}
    if op.mode is ReadoutMode.MEAN:
        new["count"] = st["count"] + 1.0
    return new


def readout_value(op: O.Readout, st, c: Ctx):
    if op.mode is ReadoutMode.LAST:
        return c.out(st["last"], Point("share", ref=c.ins[0]))
    if op.mode is ReadoutMode.MEAN:
        return c.out(st["sum"] / np.maximum(st["count"], 1.0), Point("mean", ref=c.ins[0]))
    return c.out(st["sum"], Point("act", bits=None))


# ----------------------------------------------------------------------------------------------
# runner


def _step_fn(op):
    return _scan if has_step_program(op) else SIM.get(type(op))


#: op -> what it is, for ops whose float exports run on every target but have no integer lowering
FLOAT_ONLY: dict[type, str] = {O.SelfAttention: "self-attention over the window"}


def supported(graph: Graph) -> None:
    for n in graph.nodes:
        if type(n.op) in FLOAT_ONLY:
            raise UnsupportedOpError(
                f"quantization does not support op kind '{n.op.kind}' ({FLOAT_ONLY[type(n.op)]}); "
                "its float export works on every target (ONNX, TVM, C)",
                where=f"node '{n.name}'",
                hint="export the float graph: edgeseq.export(graph, target=...)",
            )
        if _step_fn(n.op) is None and not isinstance(n.op, O.Readout) and type(n.op) not in WINDOW:
            raise UnsupportedOpError(f"quantization does not support op kind '{n.op.kind}'", where=f"node '{n.name}'")


def simulate(
    graph: Graph,
    x,
    hook,
    params: Optional[Mapping[str, dict]] = None,
    state: Optional[Mapping[str, np.ndarray]] = None,
    *,
    trace: bool = False,
):
    """Run ``graph`` step by step like the reference interpreter, with quantization hook ``hook``.

    ``params`` replaces node parameters (fake-quantized weights); default: the graph's own.
    Returns ``(outputs, new_state)`` (plus ``values`` with ``trace=True``, as interpret.run)."""
    supported(graph)
    x = check_input(graph, x).astype(np.float64, copy=False)
    bsz, steps, _ = x.shape
    if graph.is_window:
        if state is not None:
            graph.require_streaming("simulating from a given state")
        return _simulate_window(graph, x, hook, params, trace)
    st = graph.init_state(bsz, np.float64) if state is None else check_state(graph, state, bsz, np.float64)
    types = graph.value_types
    seq_nodes = [n for n in graph.nodes if all(types[i].temporal for i in n.inputs)]
    pooled_nodes = [n for n in graph.nodes if n not in seq_nodes]
    local = {
        n.name: {k.split("/", 1)[1]: v for k, v in st.items() if k.split("/", 1)[0] == n.name} for n in graph.nodes
    }
    prm = {
        n.name: (params[n.name] if params is not None and n.name in params else node_params(graph, n))
        for n in graph.nodes
    }
    fns = {n.name: _step_fn(n.op) for n in graph.nodes}
    ctxs = {n.name: Ctx(n, hook) for n in graph.nodes}
    want = set(types) if trace else {o for o in graph.outputs if types[o].temporal}
    rec: dict[str, list[np.ndarray]] = {k: [] for k in want if types[k].temporal}
    in_name = graph.inputs[0].name
    in_point = Point("input")
    for t in range(steps):
        if hasattr(hook, "step"):
            hook.step(t)
        env = {in_name: hook(in_name, x[:, t], in_point)}
        for node in seq_nodes:
            xs = [env[i] for i in node.inputs]
            if isinstance(node.op, O.Readout):
                local[node.name] = readout_update(node.op, xs[0], local[node.name])
                continue
            outs, local[node.name] = fns[node.name](node.op, prm[node.name], xs, local[node.name], ctxs[node.name])
            env.update(zip(node.outputs, outs))
        for k in rec:
            rec[k].append(env[k])
    if hasattr(hook, "step"):
        hook.step(-1)
    values: dict[str, np.ndarray] = {k: np.stack(v, axis=1) for k, v in rec.items()}
    for node in seq_nodes:
        if isinstance(node.op, O.Readout):
            values[node.outputs[0]] = readout_value(node.op, local[node.name], ctxs[node.name])
    for node in pooled_nodes:
        outs, _ = fns[node.name](node.op, prm[node.name], [values[i] for i in node.inputs], {}, ctxs[node.name])
        values.update(zip(node.outputs, outs))
    new_state = {f"{n}/{k}": v for n, d in local.items() for k, v in d.items()}
    outputs = tuple(values[o] for o in graph.outputs)
    if trace:
        return outputs, new_state, values
    return outputs, new_state


def _simulate_window(graph: Graph, x: np.ndarray, hook, params, trace: bool):
    """A window graph, layered like :func:`edgeseq.ir.interpret.run` runs it: node by node, each over
    the whole window from its zero state. A window op moves values in time and rounds nothing: its
    output is its input's quantization point (an alias)."""
    bsz, steps, _ = x.shape
    types = graph.value_types
    st = graph.init_state(bsz, np.float64)
    in_name = graph.inputs[0].name
    in_point = Point("input")
    step = getattr(hook, "step", lambda t: None)
    seq = []
    for t in range(steps):
        step(t)
        seq.append(hook(in_name, x[:, t], in_point))
    values: dict[str, np.ndarray] = {in_name: np.stack(seq, axis=1)}
    new_state: dict[str, np.ndarray] = {}
    for node in graph.nodes:
        xs = [values[i] for i in node.inputs]
        local = {k.split("/", 1)[1]: v for k, v in st.items() if k.split("/", 1)[0] == node.name}
        c = Ctx(node, hook)
        if type(node.op) in WINDOW:
            hook.alias(node.outputs[0], node.inputs[0])
            outs: tuple = (WINDOW[type(node.op)](node.op, xs[0]),)
        else:
            fn = _step_fn(node.op)
            p = params[node.name] if params is not None and node.name in params else node_params(graph, node)
            if not all(types[i].temporal for i in node.inputs):
                step(-1)
                outs, _ = fn(node.op, p, xs, {}, c)
            else:
                per_step = []
                for t in range(steps):
                    step(t)
                    if isinstance(node.op, O.Readout):
                        local = readout_update(node.op, xs[0][:, t], local)
                        continue
                    o, local = fn(node.op, p, [v[:, t] for v in xs], local, c)
                    per_step.append(o)
                step(-1)
                if isinstance(node.op, O.Readout):
                    outs = (readout_value(node.op, local, c),)
                else:
                    outs = tuple(np.stack([o[k] for o in per_step], axis=1) for k in range(len(node.outputs)))
        values.update(zip(node.outputs, outs))
        new_state.update({f"{node.name}/{k}": v for k, v in local.items()})
    outputs = tuple(values[o] for o in graph.outputs)
    return (outputs, new_state, values) if trace else (outputs, new_state)
