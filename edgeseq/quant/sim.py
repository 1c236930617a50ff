"""Float step functions with named quantization points.

Each IR op kind has one float64 step function here that computes exactly what the reference
interpreter (:mod:`edgeseq.ir.interpret`) computes, but passes every value the integer program
rounds through a quantizer hook ``q(name, x, point)``. With the identity hook (calibration) the
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
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Protocol, Sequence

import numpy as np

from ..errors import UnsupportedOpError
from ..ir import ops as O
from ..ir.graph import Graph, Node
from ..ir.interpret import activation, check_input, check_state, lmu_memory_update
from ..ir.types import Act, ReadoutMode, Recurrence, ResetRule

# ----------------------------------------------------------------------------------------------
# points and quantizer hooks


@dataclass(frozen=True)
class Point:
    """Role of a quantization point.

    ``role``:
      input   the graph input (boundary quantizer; may be per channel with an offset)
      act     an activation value (activation bits, calibrated)
      state   a recurrent state (state bits, calibrated over time)
      inner   a value inside a cell kept at state precision (e.g. the LMU memory input u)
      pre     the input of the lookup table of ``fn`` (LUT input bits, range capped where fn saturates)
      unit    the output of tanh (signed) or sigmoid (unsigned): fixed power-of-two scale
      share   the scale of point ``ref`` (``bits`` wide); ``widen`` makes ref's range cover this one
      mean    a mean readout: the scale of ``ref`` (its input) refined by 2^8 for 8-bit inputs
      concat  a concatenation (its scale is the concatenation of the inputs' scales)
      spikes  0/1 spikes (the scale is the spike amplitude)
    ``state=True`` selects the state bit width for 'unit' / 'act' points that are carried as state.
    """

    role: str
    fn: Optional[str] = None
    ref: Optional[str] = None
    bits: Optional[int] = None
    widen: bool = False
    state: bool = False
    refs: tuple = ()


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


def float_params(op: O.Op) -> dict[str, np.ndarray]:
    """float64 parameter dict of ``op`` as the step functions use it (LMU: plus 'abar', 'bbar')."""
    if op not in _PREP:
        p = {k: np.asarray(v, dtype=np.float64) for k, v in op.arrays().items()}
        if isinstance(op, O.LMU):
            a, b = op.matrices()
            p["abar"], p["bbar"] = a.astype(np.float64), b.reshape(-1).astype(np.float64)
        _PREP[op] = p
    return _PREP[op]


def graph_params(graph: Graph) -> dict[str, dict[str, np.ndarray]]:
    return {n.name: float_params(n.op) for n in graph.nodes}


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


#: activations computed without a table: the output keeps the input's scale
CLAMP_ACTS = (Act.IDENTITY, Act.RELU, Act.HARDTANH)
UNIT_ACTS = {Act.TANH: "tanh", Act.SIGMOID: "sigmoid", Act.HARDSIGMOID: "sigmoid"}


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
# recurrent cells


def lerp(z, a, b):
    """a + z (b - a): (1 - z) a + z b, in the form the integer program computes."""
    return a + z * (b - a)


def _act_pre(fn: Act, pre, c: Ctx, state: bool, as_state: Optional[str]):
    """fn(pre) with the pre-activation and the result quantized; as_state: store as this state."""
    if fn is Act.IDENTITY:
        pt = Point("state") if state else Point("act")
        return c.st(as_state, pre, pt) if as_state else c.out(pre, pt)
    if fn is Act.RELU:
        pre_q = c.inner("pre", pre, Point("pre", fn="relu", state=state))
        y = np.maximum(pre_q, 0.0)
        pt = Point("state") if state else Point("act")
        return c.st(as_state, y, pt) if as_state else c.out(y, pt)
    pre_q = c.inner("pre", pre, Point("pre", fn=fn.value, state=state))
    if fn in UNIT_ACTS:
        pt = _unit(UNIT_ACTS[fn], state)
    else:
        pt = Point("state") if state else Point("act")
    return c.table(fn, pre_q, c.pname("pre"), c.sname(as_state) if as_state else c.outs[0], pt)


@_sim(O.RNN)
def _rnn(op, p, xs, st, c: Ctx):
    pre = xs[0] @ p["w_ih"].T + _b(p, "b_ih") + st["h"] @ p["w_hh"].T + _b(p, "b_hh")
    h = _act_pre(op.act, pre, c, True, "h")
    c.alias_out(c.sname("h"))
    return (h,), {"h": h}


@_sim(O.GRU)
def _gru(op, p, xs, st, c: Ctx):
    h = st["h"]
    n = op.hidden_size
    w_ih, w_hh = p["w_ih"], p["w_hh"]
    b_ih = p.get("b_ih", np.zeros(3 * n))
    b_hh = p.get("b_hh", np.zeros(3 * n))
    x = xs[0]

    def gate(k, fn, name):
        rows = slice(k * n, (k + 1) * n)
        pre = x @ w_ih[rows].T + b_ih[rows] + h @ w_hh[rows].T + b_hh[rows]
        pre = c.inner(f"{name}_pre", pre, Point("pre", fn=fn))
        return c.table(Act(fn), pre, c.pname(f"{name}_pre"), c.pname(name), _unit(fn))

    r = gate(0, "sigmoid", "r")
    z = gate(1, "sigmoid", "z")
    rows = slice(2 * n, 3 * n)
    if op.reset_after:
        hn = c.inner("hn", h @ w_hh[rows].T + b_hh[rows], Point("inner"))
        n_pre = x @ w_ih[rows].T + b_ih[rows] + r * hn
    else:
        rh = c.inner("rh", r * h, Point("share", ref=c.sname("h"), bits=None))
        n_pre = x @ w_ih[rows].T + b_ih[rows] + rh @ w_hh[rows].T + b_hh[rows]
    n_pre = c.inner("n_pre", n_pre, Point("pre", fn="tanh"))
    cand = c.table(Act.TANH, n_pre, c.pname("n_pre"), c.pname("n"), _unit("tanh", state=True))
    h = c.st("h", lerp(z, cand, h), _unit("tanh", state=True))
    c.alias_out(c.sname("h"))
    return (h,), {"h": h}


@_sim(O.LSTM)
def _lstm(op, p, xs, st, c: Ctx):
    n = op.hidden_size
    x, h = xs[0], st["h"]
    w_ih, w_hh = p["w_ih"], p["w_hh"]
    b_ih = p.get("b_ih", np.zeros(4 * n))
    b_hh = p.get("b_hh", np.zeros(4 * n))

    def gate(k, fn, name):
        rows = slice(k * n, (k + 1) * n)
        pre = x @ w_ih[rows].T + b_ih[rows] + h @ w_hh[rows].T + b_hh[rows]
        pre = c.inner(f"{name}_pre", pre, Point("pre", fn=fn))
        return c.table(Act(fn), pre, c.pname(f"{name}_pre"), c.pname(name), _unit(fn))

    i = gate(0, "sigmoid", "i")
    f = gate(1, "sigmoid", "f")
    g = gate(2, "tanh", "g")
    o = gate(3, "sigmoid", "o")
    fc = c.inner("fc", f * st["c"], Point("share", ref=c.sname("c"), bits=24))
    ig = c.inner("ig", i * g, Point("share", ref=c.sname("c"), bits=24))
    cell = c.st("c", fc + ig, Point("state"))
    c_pre = c.inner("c_pre", cell, Point("pre", fn="tanh"))
    tc = c.table(Act.TANH, c_pre, c.pname("c_pre"), c.pname("tc"), _unit("tanh"))
    h = c.st("h", o * tc, _unit("tanh", state=True))
    c.alias_out(c.sname("h"))
    return (h,), {"h": h, "c": cell}


def _candidate(op, pre, c: Ctx):
    if op.candidate is Act.IDENTITY:
        return c.inner("c", pre, Point("share", ref=c.sname("h"), widen=True))
    pre = c.inner("c_pre", pre, Point("pre", fn=op.candidate.value))
    return c.table(op.candidate, pre, c.pname("c_pre"), c.pname("c"), Point("share", ref=c.sname("h"), widen=True))


@_sim(O.MinGRU)
def _mingru(op, p, xs, st, c: Ctx):
    x = xs[0]
    z_pre = c.inner("z_pre", x @ p["w_z"].T + _b(p, "b_z"), Point("pre", fn="sigmoid"))
    z = c.table(Act.SIGMOID, z_pre, c.pname("z_pre"), c.pname("z"), _unit("sigmoid"))
    cand = _candidate(op, x @ p["w_h"].T + _b(p, "b_h"), c)
    h = c.st("h", lerp(z, st["h"], cand), Point("state"))
    c.alias_out(c.sname("h"))
    return (h,), {"h": h}


@_sim(O.MinLSTM)
def _minlstm(op, p, xs, st, c: Ctx):
    x = xs[0]
    f_pre = c.inner("f_pre", x @ p["w_f"].T + _b(p, "b_f"), Point("pre", fn="sigmoid"))
    i_pre = c.inner("i_pre", x @ p["w_i"].T + _b(p, "b_i"), Point("pre", fn="sigmoid"))
    f = c.table(Act.SIGMOID, f_pre, c.pname("f_pre"), c.pname("f"), _unit("sigmoid"))
    i = c.table(Act.SIGMOID, i_pre, c.pname("i_pre"), c.pname("i"), _unit("sigmoid"))
    s = f + i
    fp = c.inner("fn", np.divide(f, s, out=np.zeros_like(s), where=s > 0), _unit("sigmoid"))
    cand = _candidate(op, x @ p["w_h"].T + _b(p, "b_h"), c)
    # h = f' h + (1 - f') c
    h = c.st("h", lerp(fp, cand, st["h"]), Point("state"))
    c.alias_out(c.sname("h"))
    return (h,), {"h": h}


@_sim(O.LMU)
def _lmu(op, p, xs, st, c: Ctx):
    x = xs[0]
    m = st["m"]
    if "h" in st:
        h_prev = st["h"]
    elif not op.has_hidden:
        h_prev = m
    else:
        h_prev = None
    u = x @ p["e_x"].T + _b(p, "b_u") + _mm(m, p.get("e_m"))
    if op.e_h is not None:
        u = u + h_prev @ p["e_h"].T
    u = c.inner("u", u, Point("inner"))
    m = c.st("m", lmu_memory_update(m, u, p["abar"], p["bbar"].reshape(-1, 1)), Point("state"))
    new = {"m": m}
    if not op.has_hidden:
        c.alias_out(c.sname("m"))
        return (m,), new
    pre = m @ p["w_m"].T + _mm(x, p.get("w_x")) + _b(p, "b_h")
    if op.w_h is not None:
        pre = pre + h_prev @ p["w_h"].T
    if "h" in st:
        h = _act_pre(op.act, pre, c, True, "h")
        c.alias_out(c.sname("h"))
        new["h"] = h
    else:
        h = _act_pre(op.act, pre, c, False, None)
    return (h,), new


# ----------------------------------------------------------------------------------------------
# spiking neurons


CUR_BITS = 24  # width of currents / partial membrane terms at the membrane scale


def neuron_step(n: O.NeuronParams, p: dict, prefix: str, current, st, c: Ctx, pop: str = "",
                names: tuple[str, str] = ("syn", "mem")):
    """One LIF / CuBa-LIF step with quantization points (see interpret.neuron_step).

    Points: ':<pop>cur' (current at the drive scale), ':<pop>as' (alpha*syn), '/<syn>' ,
    ':<pop>drive' (syn at the membrane scale), ':<pop>bm' (beta*mem), '/<mem>'."""
    syn_key, mem_key = names
    mem_pt = c.sname(mem_key)
    beta = np.clip(p[prefix + "beta"], 0.0, 1.0)
    thr = p[prefix + "threshold"]
    scale = p.get(prefix + "spike_scale")
    mem = st[mem_key]
    reset = (mem - thr > 0).astype(mem.dtype)
    new: dict[str, np.ndarray] = {}
    if n.synaptic:
        syn_pt = c.sname(syn_key)
        alpha = np.clip(p[prefix + "alpha"], 0.0, 1.0)
        cur = c.inner(pop + "cur", current, Point("share", ref=syn_pt, bits=CUR_BITS))
        a_s = c.inner(pop + "as", alpha * st[syn_key], Point("share", ref=syn_pt, bits=CUR_BITS))
        syn = c.st(syn_key, a_s + cur, Point("state"))
        new[syn_key] = syn
        drive = c.inner(pop + "drive", syn, Point("share", ref=mem_pt, bits=CUR_BITS))
    else:
        drive = c.inner(pop + "cur", current, Point("share", ref=mem_pt, bits=CUR_BITS))
    if n.reset is ResetRule.ZERO:
        bm = c.inner(pop + "bm", beta * ((1.0 - reset) * mem), Point("share", ref=mem_pt, bits=CUR_BITS))
    else:
        bm = c.inner(pop + "bm", beta * mem, Point("share", ref=mem_pt, bits=CUR_BITS))
    if n.reset is ResetRule.SUBTRACT:
        u = bm + drive - reset * thr
    elif n.reset is ResetRule.ZERO_TOTAL:
        base = bm + drive
        u = base - reset * base
    else:
        u = bm + drive
    # the membrane saturates to its planned range before the threshold test (identity in float)
    u = c.st(mem_key, u, Point("state"))
    fired = (u - thr > 0).astype(u.dtype)
    spk = fired if scale is None else fired * scale
    if not n.reset_delay and n.reset is not ResetRule.NONE:
        do_reset = fired - reset
        if n.reset is ResetRule.SUBTRACT:
            u = u - do_reset * thr
        else:
            u = u - do_reset * u
        u = c.st(mem_key, u, Point("state"))
    new[mem_key] = u
    return spk, new


def _lif_like(op, p, xs, st, c: Ctx):
    current = xs[0]
    if op.recurrence is Recurrence.ONE_TO_ONE:
        current = current + p["v_rec"] * st["spk"]
    elif op.recurrence is Recurrence.ALL_TO_ALL:
        current = current + st["spk"] @ p["w_rec"].T + _b(p, "b_rec")
    spk, new = neuron_step(op.neuron, p, "neuron.", current, st, c)
    if op.recurrence is not Recurrence.NONE:
        new["spk"] = spk
    mem_alias = c.sname("mem")
    if op.emit == "spikes":
        return (c.out(spk, Point("spikes")),), new
    if op.emit == "membrane":
        c.alias_out(mem_alias)
        return (new["mem"],), new
    c.alias_out(mem_alias, 1)
    return (c.out(spk, Point("spikes")), new["mem"]), new


SIM[O.LIF] = _lif_like
SIM[O.CuBaLIF] = _lif_like


@_sim(O.L2MU)
def _l2mu(op, p, xs, st, c: Ctx):
    x = xs[0]
    s_h, s_m = st["s_h"], st["s_m"]
    b = x.shape[0]
    i_u = x @ p["e_x"].T + _mm(s_h, p.get("e_h")) + _mm(s_m, p.get("e_m")) + _b(p, "b_u")
    new: dict[str, np.ndarray] = {}
    s_u, nu = neuron_step(op.u_neuron, p, "u_neuron.", i_u, st, c, "u_", ("u_syn", "u_mem"))
    new.update(nu)
    i_m = (s_m.reshape(b, op.memory_d, op.order) @ p["a"].T + s_u[:, :, None] * p["b"]).reshape(b, -1)
    s_m, nm = neuron_step(op.m_neuron, p, "m_neuron.", i_m, st, c, "m_", ("m_syn", "m_mem"))
    new.update(nm)
    i_h = _mm(x, p.get("w_x")) + _mm(s_h, p.get("w_h")) + s_m @ p["w_m"].T + _b(p, "b_h")
    s_h, nh = neuron_step(op.h_neuron, p, "h_neuron.", i_h, st, c, "h_", ("h_syn", "h_mem"))
    new.update(nh)
    new["s_m"] = s_m
    new["s_h"] = s_h
    return (c.out(s_h, Point("spikes")),), new


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


def supported(graph: Graph) -> None:
    for n in graph.nodes:
        if type(n.op) not in SIM and not isinstance(n.op, O.Readout):
            raise UnsupportedOpError(f"quantization does not support op kind '{n.op.kind}'",
                                     where=f"node '{n.name}'")


def simulate(graph: Graph, x, hook, params: Optional[Mapping[str, dict]] = None,
             state: Optional[Mapping[str, np.ndarray]] = None, *, trace: bool = False):
    """Run ``graph`` step by step like the reference interpreter, with quantization hook ``hook``.

    ``params`` replaces node parameters (fake-quantized weights); default: the graph's own.
    Returns ``(outputs, new_state)`` (plus ``values`` with ``trace=True``, as interpret.run)."""
    supported(graph)
    x = check_input(graph, x).astype(np.float64, copy=False)
    bsz, steps, _ = x.shape
    st = graph.init_state(bsz, np.float64) if state is None else check_state(graph, state, bsz, np.float64)
    types = graph.value_types
    seq_nodes = [n for n in graph.nodes if all(types[i].temporal for i in n.inputs)]
    pooled_nodes = [n for n in graph.nodes if n not in seq_nodes]
    local = {n.name: {k.split("/", 1)[1]: v for k, v in st.items() if k.split("/", 1)[0] == n.name}
             for n in graph.nodes}
    prm = {n.name: (params[n.name] if params is not None and n.name in params else float_params(n.op))
           for n in graph.nodes}
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
            outs, local[node.name] = SIM[type(node.op)](node.op, prm[node.name], xs, local[node.name],
                                                        ctxs[node.name])
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
        outs, _ = SIM[type(node.op)](node.op, prm[node.name], [values[i] for i in node.inputs], {},
                                     ctxs[node.name])
        values.update(zip(node.outputs, outs))
    new_state = {f"{n}/{k}": v for n, d in local.items() for k, v in d.items()}
    outputs = tuple(values[o] for o in graph.outputs)
    if trace:
        return outputs, new_state, values
    return outputs, new_state
