"""Float64 reference interpreter: the one definition of what an IR graph computes.

Execution is strictly step by step: at each time step every temporal node consumes its inputs at
that step and its explicit state, and returns its outputs and new state. Matrix products therefore
always have the batch as their only row dimension, so running a sequence in chunks (passing the
state along) gives *bit-identical* results to running it whole. Readouts accumulate in their state
and pooled nodes after them run once, on the readout over every step seen so far.

Every backend, runner and quantizer in edgeseq is tested against :func:`run`.
"""

from __future__ import annotations

import weakref
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy import special

from ..errors import ConfigError, ShapeError
from ..util.finite import as_array, check_finite
from . import ops as O
from .activations import activation
from .graph import Graph
from .types import ReadoutMode, Recurrence, ResetRule

State = dict[str, np.ndarray]

# ----------------------------------------------------------------------------------------------
# pointwise functions


def _sig(x):
    return special.expit(x)


# ----------------------------------------------------------------------------------------------
# parameter preparation (cast once per op and dtype, cached)

_PREP: "weakref.WeakKeyDictionary[O.Struct, dict]" = weakref.WeakKeyDictionary()


def _prep(op: O.Struct, dtype) -> dict:
    key = np.dtype(dtype).str
    cache = _PREP.setdefault(op, {})
    if key not in cache:
        cache[key] = {k: np.asarray(v, dtype=dtype) for k, v in op.arrays().items()}
    return cache[key]


def _mm(x: np.ndarray, w: np.ndarray | None) -> np.ndarray | float:
    """x @ w.T, or 0 when the weight is absent."""
    return 0.0 if w is None else x @ w.T


def _b(p: dict, name: str):
    return p.get(name, 0.0)


# ----------------------------------------------------------------------------------------------
# spiking neurons (snntorch semantics, see NeuronParams)


def neuron_step(
    n: O.NeuronParams,
    p: dict,
    prefix: str,
    current: np.ndarray,
    st: Mapping[str, np.ndarray],
    names: tuple[str, str] = ("syn", "mem"),
) -> tuple[np.ndarray, dict]:
    """One step of a LIF / CuBa-LIF population. ``p`` holds the prepared arrays ('<prefix>beta', ...);
    ``st`` the previous state under ``names``. Returns (spikes, new state)."""
    syn_key, mem_key = names
    beta = np.clip(p[prefix + "beta"], 0.0, 1.0)
    thr = p[prefix + "threshold"]
    scale = p.get(prefix + "spike_scale")
    mem = st[mem_key]
    reset = (mem - thr > 0).astype(mem.dtype)
    new: dict[str, np.ndarray] = {}
    if n.synaptic:
        alpha = np.clip(p[prefix + "alpha"], 0.0, 1.0)
        syn = alpha * st[syn_key] + current
        new[syn_key] = syn
        drive = syn
    else:
        drive = current
    if n.reset is ResetRule.SUBTRACT:
        u = beta * mem + drive - reset * thr
    elif n.reset is ResetRule.ZERO:
        u = beta * ((1.0 - reset) * mem) + drive
    elif n.reset is ResetRule.ZERO_TOTAL:
        base = beta * mem + drive
        u = base - reset * base
    else:
        u = beta * mem + drive
    fired = (u - thr > 0).astype(u.dtype)
    spk = fired if scale is None else fired * scale
    if not n.reset_delay and n.reset is not ResetRule.NONE:
        do_reset = fired - reset
        if n.reset is ResetRule.SUBTRACT:
            u = u - do_reset * thr
        else:
            u = u - do_reset * u
    new[mem_key] = u
    return spk, new


# ----------------------------------------------------------------------------------------------
# step functions: (op, prepared params, inputs at step t, node state) -> (outputs, new node state)

StepFn = Callable[[O.Op, dict, Sequence[np.ndarray], Mapping[str, np.ndarray]], tuple[tuple, dict]]
STEP: dict[type, StepFn] = {}


def _step(cls):
    def deco(fn):
        STEP[cls] = fn
        return fn

    return deco


@_step(O.Linear)
def _linear(op, p, xs, st):
    return (xs[0] @ p["weight"].T + _b(p, "bias"),), {}


@_step(O.Conv1d)
def _conv1d(op, p, xs, st):
    x = xs[0]
    w = p["weight"]
    out_ch, cg, k = w.shape
    g = op.groups
    if op.history:
        window = np.concatenate([st["buf"], x[:, None, :]], axis=1)
        new = {"buf": window[:, 1:, :]}
    else:
        window, new = x[:, None, :], {}
    taps = window[:, :: op.dilation, :]  # (B, K, I)
    b = x.shape[0]
    y = np.einsum("bkgc,gock->bgo", taps.reshape(b, k, g, cg), w.reshape(g, out_ch // g, cg, k))
    return (y.reshape(b, out_ch) + _b(p, "bias"),), new


@_step(O.LayerNorm)
def _layernorm(op, p, xs, st):
    x = xs[0]
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + op.eps)
    if "weight" in p:
        y = y * p["weight"]
    return (y + _b(p, "bias"),), {}


@_step(O.BatchNorm)
def _batchnorm(op, p, xs, st):
    y = (xs[0] - p["mean"]) / np.sqrt(p["var"] + op.eps)
    if "weight" in p:
        y = y * p["weight"]
    return (y + _b(p, "bias"),), {}


@_step(O.Activation)
def _activation(op, p, xs, st):
    return (activation(op.fn, xs[0], op.slope, op.lo, op.hi),), {}


@_step(O.Add)
def _add(op, p, xs, st):
    return (xs[0] + xs[1],), {}


@_step(O.Concat)
def _concat(op, p, xs, st):
    return (np.concatenate(xs, axis=-1),), {}


@_step(O.RNN)
def _rnn(op, p, xs, st):
    h = activation(op.act, xs[0] @ p["w_ih"].T + _b(p, "b_ih") + st["h"] @ p["w_hh"].T + _b(p, "b_hh"))
    return (h,), {"h": h}


@_step(O.GRU)
def _gru(op, p, xs, st):
    h = st["h"]
    n = op.hidden_size
    gi = xs[0] @ p["w_ih"].T + _b(p, "b_ih")
    w_hh = p["w_hh"]
    b_hh = p.get("b_hh", np.zeros(3 * n, dtype=h.dtype))
    gh_rz = h @ w_hh[: 2 * n].T + b_hh[: 2 * n]
    r = _sig(gi[:, :n] + gh_rz[:, :n])
    z = _sig(gi[:, n : 2 * n] + gh_rz[:, n:])
    if op.reset_after:
        cand = np.tanh(gi[:, 2 * n :] + r * (h @ w_hh[2 * n :].T + b_hh[2 * n :]))
    else:
        cand = np.tanh(gi[:, 2 * n :] + (r * h) @ w_hh[2 * n :].T + b_hh[2 * n :])
    h = (1.0 - z) * cand + z * h
    return (h,), {"h": h}


@_step(O.LSTM)
def _lstm(op, p, xs, st):
    n = op.hidden_size
    g = xs[0] @ p["w_ih"].T + _b(p, "b_ih") + st["h"] @ p["w_hh"].T + _b(p, "b_hh")
    i, f, c_in, o = _sig(g[:, :n]), _sig(g[:, n : 2 * n]), np.tanh(g[:, 2 * n : 3 * n]), _sig(g[:, 3 * n :])
    c = f * st["c"] + i * c_in
    h = o * np.tanh(c)
    return (h,), {"h": h, "c": c}


@_step(O.MinGRU)
def _mingru(op, p, xs, st):
    x = xs[0]
    z = _sig(x @ p["w_z"].T + _b(p, "b_z"))
    c = activation(op.candidate, x @ p["w_h"].T + _b(p, "b_h"))
    h = (1.0 - z) * st["h"] + z * c
    return (h,), {"h": h}


@_step(O.MinLSTM)
def _minlstm(op, p, xs, st):
    x = xs[0]
    f = _sig(x @ p["w_f"].T + _b(p, "b_f"))
    i = _sig(x @ p["w_i"].T + _b(p, "b_i"))
    c = activation(op.candidate, x @ p["w_h"].T + _b(p, "b_h"))
    s = f + i
    h = (f / s) * st["h"] + (i / s) * c
    return (h,), {"h": h}


def lmu_memory_update(m: np.ndarray, u: np.ndarray, abar: np.ndarray, bbar: np.ndarray) -> np.ndarray:
    """m (B, d*order), u (B, d) -> Abar m[d] + Bbar u[d] for each memory dimension d."""
    b, d = u.shape
    order = abar.shape[0]
    m3 = m.reshape(b, d, order) @ abar.T + u[:, :, None] * bbar.reshape(1, 1, order)
    return m3.reshape(b, d * order)


@_step(O.LMU)
def _lmu(op, p, xs, st):
    x = xs[0]
    m = st["m"]
    if "h" in st:
        h_prev = st["h"]
    elif not op.has_hidden:
        h_prev = m
    else:
        h_prev = None
    abar, bbar = _prep_lmu(op, x.dtype)
    u = x @ p["e_x"].T + _b(p, "b_u") + _mm(m, p.get("e_m"))
    if op.e_h is not None:
        u = u + h_prev @ p["e_h"].T
    m = lmu_memory_update(m, u, abar, bbar)
    new = {"m": m}
    if not op.has_hidden:
        return (m,), new
    pre = m @ p["w_m"].T + _mm(x, p.get("w_x")) + _b(p, "b_h")
    if op.w_h is not None:
        pre = pre + h_prev @ p["w_h"].T
    h = activation(op.act, pre)
    if "h" in st:
        new["h"] = h
    return (h,), new


@_step(O.Embedding)
def _embedding(op, p, xs, st):
    v = p["table"].shape[0]
    ids = np.clip(np.ceil(xs[0][..., 0] - 0.5), 0, v - 1).astype(np.int64)
    return (p["table"][ids],), {}


@_step(O.AttentionPool)
def _attention_pool(op, p, xs, st):
    x = xs[0]
    score, value = x[:, :1], x[:, 1:]
    m = np.maximum(st["max"], score)
    den = st["den"] * np.exp(st["max"] - m) + np.exp(score - m)
    num = st["num"] * np.exp(st["max"] - m) + np.exp(score - m) * value
    return (num / den,), {"max": m, "den": den, "num": num}


@_step(O.Scan)
def _scan(op, p, xs, st):
    """A generic Scan is defined by its step program."""
    from .step import run_step

    return run_step(op.program, xs, st)


@_step(O.S4D)
def _s4d(op, p, xs, st):
    u = xs[0]
    abar, bbar = _prep_s4d(op)
    b, (h, n) = u.shape[0], abar.shape
    x = st["re"].reshape(b, h, n) + (1j * st["im"].reshape(b, h, n) if op.complex_modes else 0.0)
    x = abar * x + bbar * u[:, :, None]
    c = np.asarray(op.c_re, np.float64) + 1j * (np.asarray(op.c_im, np.float64) if op.complex_modes else 0.0)
    y = (2.0 if op.complex_modes else 1.0) * np.real((c * x).sum(axis=-1))
    if op.d is not None:
        y = y + np.asarray(op.d, np.float64) * u
    new = {"re": np.real(x).reshape(b, h * n).astype(u.dtype)}
    if op.complex_modes:
        new["im"] = np.imag(x).reshape(b, h * n).astype(u.dtype)
    return (y.astype(u.dtype),), new


def _prep_s4d(op: O.S4D):
    cache = _PREP.setdefault(op, {})
    if "zoh" not in cache:
        cache["zoh"] = op.discretized()
    return cache["zoh"]


def _prep_lmu(op: O.LMU, dtype):
    cache = _PREP.setdefault(op, {})
    key = ("AB", np.dtype(dtype).str)
    if key not in cache:
        a, b = op.matrices()
        cache[key] = (a.astype(dtype), b.astype(dtype))
    return cache[key]


def _lif_like(op, p, xs, st):
    current = xs[0]
    if op.recurrence is Recurrence.ONE_TO_ONE:
        current = current + p["v_rec"] * st["spk"]
    elif op.recurrence is Recurrence.ALL_TO_ALL:
        current = current + st["spk"] @ p["w_rec"].T + _b(p, "b_rec")
    spk, new = neuron_step(op.neuron, p, "neuron.", current, st)
    if op.recurrence is not Recurrence.NONE:
        new["spk"] = spk
    out = {
        "spikes": (spk,),
        "membrane": (new["mem"],),
        "both": (spk, new["mem"]),
        "all": (spk, new.get("syn"), new["mem"]),
    }[op.emit]
    return out, new


STEP[O.LIF] = _lif_like
STEP[O.CuBaLIF] = _lif_like


@_step(O.LeakyNeuron)
def _leaky_neuron(op, p, xs, st):
    drive = xs[0]
    new: dict[str, np.ndarray] = {}
    if op.synaptic:
        syn = p["syn_decay"] * st["syn"] + (p["syn_gain"] * drive if "syn_gain" in p else drive)
        new["syn"] = drive = syn
    u = p["decay"] * st["mem"] + (p["gain"] * drive if "gain" in p else drive)
    if "bias" in p:
        u = u + p["bias"]
    if not op.spiking:
        new["mem"] = u
        return (u,), new
    z = (u - p["threshold"] > 0).astype(u.dtype)
    if op.reset is ResetRule.ZERO:
        v = np.where(z > 0, p.get("v_reset", 0.0), u)
    elif op.reset is ResetRule.SUBTRACT:
        v = u - z * p["threshold"]
    else:
        v = u
    new["mem"] = v
    return {"spikes": (z,), "membrane": (v,), "both": (z, v)}[op.emit], new


@_step(O.L2MU)
def _l2mu(op, p, xs, st):
    x = xs[0]
    s_h, s_m = st["s_h"], st["s_m"]
    b = x.shape[0]
    i_u = x @ p["e_x"].T + _mm(s_h, p.get("e_h")) + _mm(s_m, p.get("e_m")) + _b(p, "b_u")
    new: dict[str, np.ndarray] = {}
    s_u, nu = neuron_step(op.u_neuron, p, "u_neuron.", i_u, st, ("u_syn", "u_mem"))
    new.update(nu)
    i_m = (s_m.reshape(b, op.memory_d, op.order) @ p["a"].T + s_u[:, :, None] * p["b"]).reshape(b, -1)
    s_m, nm = neuron_step(op.m_neuron, p, "m_neuron.", i_m, st, ("m_syn", "m_mem"))
    new.update(nm)
    i_h = _mm(x, p.get("w_x")) + _mm(s_h, p.get("w_h")) + s_m @ p["w_m"].T + _b(p, "b_h")
    s_h, nh = neuron_step(op.h_neuron, p, "h_neuron.", i_h, st, ("h_syn", "h_mem"))
    new.update(nh)
    new["s_m"] = s_m
    new["s_h"] = s_h
    return (s_h,), new


# window ops: whole-window functions (B, T, F) -> (B, T, F); their one definition

WindowFn = Callable[[O.Op, np.ndarray], np.ndarray]
WINDOW: dict[type, WindowFn] = {}


def _window(cls):
    def deco(fn):
        WINDOW[cls] = fn
        return fn

    return deco


@_window(O.Reverse)
def _reverse(op, x):
    return x[:, ::-1]


@_window(O.Lookahead)
def _lookahead(op, x):
    y = np.zeros_like(x)
    y[:, : max(x.shape[1] - op.steps, 0)] = x[:, op.steps :]
    return y


@_window(O.SelfAttention)
def _self_attention(op, x):
    bsz, steps, f = x.shape
    e, h = f // 3, op.num_heads
    d = e // h
    q, k, v = (x[..., i * e : (i + 1) * e].reshape(bsz, steps, h, d).transpose(0, 2, 1, 3) for i in range(3))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)  # (B, H, T, T)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    y = (p / p.sum(axis=-1, keepdims=True)) @ v  # (B, H, T, d)
    return y.transpose(0, 2, 1, 3).reshape(bsz, steps, e)


# readouts: state update per step; value from state


def _readout_update(op: O.Readout, x: np.ndarray, st: Mapping[str, np.ndarray]) -> dict:
    if op.mode is ReadoutMode.LAST:
        return {"last": x}
    new = {"sum": st["sum"] + x}
    if op.mode is ReadoutMode.MEAN:
        new["count"] = st["count"] + 1.0
    return new


def _readout_value(op: O.Readout, st: Mapping[str, np.ndarray]) -> np.ndarray:
    if op.mode is ReadoutMode.LAST:
        return st["last"]
    if op.mode is ReadoutMode.MEAN:
        return st["sum"] / np.maximum(st["count"], 1.0)
    return st["sum"]


# ----------------------------------------------------------------------------------------------
# graph execution


def require_graph(graph) -> Graph:
    if not isinstance(graph, Graph):
        raise ConfigError(f"expected an IR Graph, got {type(graph).__name__}", hint="load one with edgeseq.load")
    return graph


def check_input(graph: Graph, x, what: str = "input") -> np.ndarray:
    require_graph(graph)
    x = as_array(x, what)
    if x.ndim != 3:
        raise ShapeError(
            f"{what} must have shape (batch, time, features) = (B, T, {graph.in_features}), got shape {x.shape}"
        )
    if x.shape[2] != graph.in_features:
        raise ShapeError(f"{what} has {x.shape[2]} features per step; the model expects {graph.in_features}")
    if x.shape[1] < 1 or x.shape[0] < 1:
        raise ShapeError(f"{what} needs at least one sequence and one time step, got shape {x.shape}")
    if x.dtype.kind not in "fiub":
        raise ShapeError(f"{what} must be numeric, got dtype {x.dtype}")
    return check_finite(x, what)  # the NaN/Inf policy (edgeseq.util.finite)


def check_state(graph: Graph, state: Mapping[str, np.ndarray], batch: int, dtype) -> State:
    if not isinstance(state, Mapping):
        raise ShapeError(f"state must be a mapping of state key to array, got {type(state).__name__}")
    spec = graph.state_spec()
    missing = sorted(set(spec) - set(state))
    extra = sorted(set(state) - set(spec))
    if missing or extra:
        raise ShapeError(
            "state does not match the graph's state contract"
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + (f"; unexpected: {', '.join(extra)}" if extra else "")
        )
    out = {}
    for k, shape in spec.items():
        a = as_array(state[k], f"state '{k}'")
        if a.shape != (batch,) + shape:
            raise ShapeError(f"state '{k}' must have shape {(batch,) + shape}, got {a.shape}")
        check_finite(a, f"state '{k}'")
        out[k] = a.astype(dtype, copy=True)
    return out


def run(graph: Graph, x, state: Mapping[str, np.ndarray] | None = None, *, dtype=np.float64, trace: bool = False):
    """Execute ``graph`` on ``x`` (B, T, F) from ``state`` (zeros if None).

    Returns ``(outputs, new_state)`` with one array per graph output; with ``trace=True`` returns
    ``(outputs, new_state, values)`` where ``values`` maps every value name to its full sequence
    (B, T, F) or pooled value (B, F)."""
    x = check_input(graph, x).astype(dtype, copy=False)
    bsz, steps, _ = x.shape
    if graph.is_window:
        if state is not None:
            graph.require_streaming("running from a given state")
        return _run_window(graph, x, dtype, trace)
    st = graph.init_state(bsz, dtype) if state is None else check_state(graph, state, bsz, dtype)
    types = graph.value_types
    seq_nodes = [n for n in graph.nodes if all(types[i].temporal for i in n.inputs)]
    pooled_nodes = [n for n in graph.nodes if n not in seq_nodes]
    local = {
        n.name: {k.split("/", 1)[1]: v for k, v in st.items() if k.split("/", 1)[0] == n.name} for n in graph.nodes
    }
    prepared = {n.name: _prep(n.op, dtype) for n in graph.nodes}

    want = set(types) if trace else {o for o in graph.outputs if types[o].temporal}
    rec: dict[str, list[np.ndarray]] = {k: [] for k in want if types[k].temporal}
    in_name = graph.inputs[0].name
    for t in range(steps):
        env = {in_name: x[:, t]}
        for node in seq_nodes:
            xs = [env[i] for i in node.inputs]
            if isinstance(node.op, O.Readout):
                local[node.name] = _readout_update(node.op, xs[0], local[node.name])
                continue
            outs, local[node.name] = STEP[type(node.op)](node.op, prepared[node.name], xs, local[node.name])
            env.update(zip(node.outputs, outs))
        for k in rec:
            rec[k].append(env[k])
    values: dict[str, np.ndarray] = {k: np.stack(v, axis=1) for k, v in rec.items()}
    for node in seq_nodes:
        if isinstance(node.op, O.Readout):
            values[node.outputs[0]] = _readout_value(node.op, local[node.name])
    for node in pooled_nodes:
        outs, _ = STEP[type(node.op)](node.op, prepared[node.name], [values[i] for i in node.inputs], {})
        values.update(zip(node.outputs, outs))
    new_state = {f"{n}/{k}": v for n, d in local.items() for k, v in d.items()}
    outputs = tuple(values[o] for o in graph.outputs)
    if trace:
        return outputs, new_state, values
    return outputs, new_state


def _run_window(graph: Graph, x: np.ndarray, dtype, trace: bool):
    """Layered execution of a window graph: node by node, each over the whole window (every
    temporal node from its zero state, step by step as in :func:`run`)."""
    bsz, steps, _ = x.shape
    types = graph.value_types
    st = graph.init_state(bsz, dtype)
    values: dict[str, np.ndarray] = {graph.inputs[0].name: x}
    new_state: State = {}
    for node in graph.nodes:
        xs = [values[i] for i in node.inputs]
        local = {k.split("/", 1)[1]: v for k, v in st.items() if k.split("/", 1)[0] == node.name}
        p = _prep(node.op, dtype)
        if type(node.op) in WINDOW:
            outs: tuple = (WINDOW[type(node.op)](node.op, xs[0]),)
        elif not all(types[i].temporal for i in node.inputs):
            outs, _ = STEP[type(node.op)](node.op, p, xs, {})
        elif isinstance(node.op, O.Readout):
            for t in range(steps):
                local = _readout_update(node.op, xs[0][:, t], local)
            outs = (_readout_value(node.op, local),)
        else:
            per_step = []
            for t in range(steps):
                o, local = STEP[type(node.op)](node.op, p, [v[:, t] for v in xs], local)
                per_step.append(o)
            outs = tuple(np.stack([o[k] for o in per_step], axis=1) for k in range(len(node.outputs)))
        values.update(zip(node.outputs, outs))
        new_state.update({f"{node.name}/{k}": v for k, v in local.items()})
    outputs = tuple(values[o] for o in graph.outputs)
    return (outputs, new_state, values) if trace else (outputs, new_state)


def reference(graph: Graph, x, state: Mapping[str, np.ndarray] | None = None, *, layout: str | None = None):
    """Public entry point: ``(y, state)`` for input ``x`` in the model's own layout (recorded at
    capture: (B, T, F), (T, B, F) or a static (B, F); ``layout`` overrides it, see
    :mod:`edgeseq.ir.layout`). Temporal outputs come back in that layout.

    ``y`` is the single output array, or a tuple when the graph has several outputs."""
    from .layout import from_ir, to_ir

    outputs, new_state = run(graph, to_ir(require_graph(graph), x, layout), state)
    outputs = from_ir(graph, outputs, layout)
    return (outputs[0] if len(outputs) == 1 else outputs), new_state


def run_chunked(graph: Graph, x, chunk: int, state=None, dtype=np.float64):
    """Run ``x`` in chunks of ``chunk`` steps, carrying the state; returns (outputs, state).
    Temporal outputs are concatenated; pooled outputs are those after the last chunk."""
    x = check_input(graph, x)
    graph.require_streaming("running in chunks")
    types = graph.value_types
    parts: list[tuple] = []
    for s in range(0, x.shape[1], chunk):
        outs, state = run(graph, x[:, s : s + chunk], state, dtype=dtype)
        parts.append(outs)
    outputs = tuple(
        np.concatenate([p[k] for p in parts], axis=1) if types[o].temporal else parts[-1][k]
        for k, o in enumerate(graph.outputs)
    )
    return outputs, state


def supported_kinds() -> set[str]:
    return {cls.kind for cls in STEP} | {cls.kind for cls in WINDOW} | {O.Readout.kind}
