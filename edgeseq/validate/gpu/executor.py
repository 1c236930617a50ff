"""Whole-graph execution with the reference kernels: layer by layer over whole sequences.

The float64 interpreter walks time step by step through every node; here each node processes its
whole input sequence at once (the graph is a DAG and every op is causal, so the result is the
same): feed-forward ops are batched torch ops over (B, T, F), scan ops go to a kernel set
(:mod:`.torch_kernels` or :mod:`.triton_kernels`), readouts pool over time, pooled nodes run last.
Streaming state in and out uses the interpreter's keys (``graph.state_spec()``).
"""

from __future__ import annotations

import weakref
from types import ModuleType
from typing import Mapping, Optional

import numpy as np
import torch

from ...errors import ConfigError, ShapeError
from ...ir import ops as O
from ...ir.graph import Graph, Node
from ...ir.types import ReadoutMode, Recurrence, ResetRule
from . import torch_kernels as TK

_PARAMS: "weakref.WeakKeyDictionary[O.Struct, dict]" = weakref.WeakKeyDictionary()


def _params(op: O.Op, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    cache = _PARAMS.setdefault(op, {})
    key = (str(device), dtype)
    if key not in cache:
        cache[key] = {
            k: torch.as_tensor(np.array(v, dtype=np.float64), device=device).to(dtype) for k, v in op.arrays().items()
        }
    return cache[key]


def _lin(x: torch.Tensor, w: Optional[torch.Tensor], b: Optional[torch.Tensor] = None):
    y = x @ w.T
    return y if b is None else y + b


# ----------------------------------------------------------------------------------------------
# describing which kernel runs each node


def describe(op: O.Op, kernels: ModuleType) -> str:
    k = kernels.NAME
    if isinstance(op, (O.MinGRU, O.MinLSTM)):
        return f"{k}: parallel associative scan (diagonal linear recurrence)"
    if isinstance(op, O.LMU):
        if op.has_hidden and op.e_h is not None:
            return "torch: step loop (hidden-to-memory feedback makes the memory nonlinear)"
        s = f"{k}: parallel doubling scan of the memory (constant transition matrix)"
        if op.has_hidden and op.w_h is not None:
            fused = k == "triton" and kernels.rnn_supports(op.act)
            s += f" + {'triton' if fused else 'torch'} fused recurrent hidden cell"
        return s
    if isinstance(op, (O.RNN, O.GRU, O.LSTM)):
        fused = not (k == "triton" and isinstance(op, O.RNN) and not kernels.rnn_supports(op.act))
        return f"{k if fused else 'torch'}: fused per-step {op.kind} kernel"
    if isinstance(op, (O.LIF, O.CuBaLIF)):
        return f"{k}: fused per-step {op.kind} kernel"
    if isinstance(op, O.L2MU):
        return "torch: step loop (three coupled LIF populations)"
    if isinstance(op, O.LeakyNeuron):
        return "torch: step loop (elementwise leaky integrators" + (", spikes and resets)" if op.spiking else ")")
    if isinstance(op, O.S4D):
        return "torch: complex parallel doubling scan (diagonal state space)"
    if isinstance(op, O.AttentionPool):
        return "torch: cumulative softmax pooling"
    if isinstance(op, O.Readout):
        return f"torch: readout {op.mode.value}"
    return f"torch: {op.kind}"


# ----------------------------------------------------------------------------------------------
# feed-forward ops (temporal (B, T, F) or pooled (B, F))


def _ff(op: O.Op, p: dict, xs: list[torch.Tensor], st: dict) -> tuple[tuple, dict]:
    x = xs[0]
    if isinstance(op, O.Linear):
        return (_lin(x, p["weight"], p.get("bias")),), {}
    if isinstance(op, O.Activation):
        return (TK.activation(op.fn, x, op.slope, op.lo, op.hi),), {}
    if isinstance(op, O.LayerNorm):
        mu = x.mean(dim=-1, keepdim=True)
        var = ((x - mu) ** 2).mean(dim=-1, keepdim=True)
        y = (x - mu) / torch.sqrt(var + op.eps)
        if "weight" in p:
            y = y * p["weight"]
        return ((y + p["bias"]) if "bias" in p else y,), {}
    if isinstance(op, O.BatchNorm):
        y = (x - p["mean"]) / torch.sqrt(p["var"] + op.eps)
        if "weight" in p:
            y = y * p["weight"]
        return ((y + p["bias"]) if "bias" in p else y,), {}
    if isinstance(op, O.Add):
        return (xs[0] + xs[1],), {}
    if isinstance(op, O.Concat):
        return (torch.cat(xs, dim=-1),), {}
    if isinstance(op, O.Embedding):
        ids = torch.clamp(torch.ceil(x[..., 0] - 0.5), 0, p["table"].shape[0] - 1).long()
        return (p["table"][ids],), {}
    if isinstance(op, O.Conv1d):
        hist = op.history
        window = torch.cat([st["buf"], x], dim=1) if hist else x
        y = torch.nn.functional.conv1d(
            window.transpose(1, 2), p["weight"], p.get("bias"), dilation=op.dilation, groups=op.groups
        ).transpose(1, 2)
        return (y,), ({"buf": window[:, window.shape[1] - hist :]} if hist else {})
    if isinstance(op, O.Reverse):  # window ops (edgeseq.ir.interpret.WINDOW): whole windows only
        return (torch.flip(x, dims=[1]),), {}
    if isinstance(op, O.Lookahead):
        return (torch.nn.functional.pad(x[:, op.steps :], (0, 0, 0, min(op.steps, x.shape[1]))),), {}
    if isinstance(op, O.SelfAttention):
        b, t, f = x.shape
        q, k, v = (u.reshape(b, t, op.num_heads, -1).transpose(1, 2) for u in x.split(f // 3, dim=-1))
        w = torch.softmax(q @ k.transpose(-1, -2) / float(np.sqrt(f // 3 // op.num_heads)), dim=-1)
        return ((w @ v).transpose(1, 2).reshape(b, t, f // 3),), {}
    raise ConfigError(f"the reference kernels cannot run op kind '{op.kind}'", where="edgeseq.validate.gpu")


# ----------------------------------------------------------------------------------------------
# scan ops (temporal)


def _neuron_params(n: O.NeuronParams, p: dict, prefix: str) -> dict:
    out = {"beta": torch.clamp(p[prefix + "beta"], 0.0, 1.0), "threshold": p[prefix + "threshold"]}
    if n.synaptic:
        out["alpha"] = torch.clamp(p[prefix + "alpha"], 0.0, 1.0)
    if prefix + "spike_scale" in p:
        out["spike_scale"] = p[prefix + "spike_scale"]
    return out


def _scan(op: O.Op, p: dict, x: torch.Tensor, st: dict, K: ModuleType) -> tuple[tuple, dict]:
    bsz, steps, _ = x.shape
    if isinstance(op, O.RNN):
        gx = _lin(x, p["w_ih"], p.get("b_ih"))
        if "b_hh" in p:
            gx = gx + p["b_hh"]
        y = K.rnn_scan(gx, p["w_hh"], st["h"], op.act)
        return (y,), {"h": y[:, -1]}
    if isinstance(op, O.GRU):
        gx = _lin(x, p["w_ih"], p.get("b_ih"))
        b_hh = p.get("b_hh", torch.zeros(3 * op.hidden_size, dtype=x.dtype, device=x.device))
        y = K.gru_scan(gx, p["w_hh"], b_hh, st["h"], op.reset_after)
        return (y,), {"h": y[:, -1]}
    if isinstance(op, O.LSTM):
        gx = _lin(x, p["w_ih"], p.get("b_ih"))
        if "b_hh" in p:
            gx = gx + p["b_hh"]
        y, c = K.lstm_scan(gx, p["w_hh"], st["h"], st["c"])
        return (y,), {"h": y[:, -1], "c": c}
    if isinstance(op, O.MinGRU):
        z = torch.sigmoid(_lin(x, p["w_z"], p.get("b_z")))
        c = TK.activation(op.candidate, _lin(x, p["w_h"], p.get("b_h")))
        y = K.diag_scan(1.0 - z, z * c, st["h"])
        return (y,), {"h": y[:, -1]}
    if isinstance(op, O.MinLSTM):
        f = torch.sigmoid(_lin(x, p["w_f"], p.get("b_f")))
        i = torch.sigmoid(_lin(x, p["w_i"], p.get("b_i")))
        c = TK.activation(op.candidate, _lin(x, p["w_h"], p.get("b_h")))
        s = f + i
        y = K.diag_scan(f / s, (i / s) * c, st["h"])
        return (y,), {"h": y[:, -1]}
    if isinstance(op, O.LMU):
        return _lmu(op, p, x, st, K)
    if isinstance(op, (O.LIF, O.CuBaLIF)):
        rec = {Recurrence.NONE: 0, Recurrence.ONE_TO_ONE: 1, Recurrence.ALL_TO_ALL: 2}[op.recurrence]
        np_ = _neuron_params(op.neuron, p, "neuron.")
        spk, mem, mem_t, syn_t, spk_t = K.lif_scan(
            x,
            np_,
            op.neuron.reset,
            op.neuron.reset_delay,
            st["mem"],
            st.get("syn"),
            rec,
            p.get("v_rec"),
            p.get("w_rec"),
            p.get("b_rec"),
            st.get("spk"),
        )
        new = {"mem": mem_t}
        if syn_t is not None:
            new["syn"] = syn_t
        if rec:
            new["spk"] = spk_t
        if op.emit == "all":  # the synaptic current: alpha syn + the input current the neurons saw
            cur = (
                x
                if not rec
                else x
                + (
                    torch.cat([st["spk"][:, None], spk[:, :-1]], 1) * p["v_rec"]
                    if rec == 1
                    else _lin(torch.cat([st["spk"][:, None], spk[:, :-1]], 1), p["w_rec"], p.get("b_rec"))
                )
            )
            alpha = torch.clamp(p["neuron.alpha"], 0.0, 1.0).expand_as(cur)
            return (spk, TK.diag_scan(alpha, cur, st["syn"]), mem), new
        return {"spikes": (spk,), "membrane": (mem,), "both": (spk, mem)}[op.emit], new
    if isinstance(op, O.L2MU):
        return _l2mu(op, p, x, st)
    if isinstance(op, O.LeakyNeuron):
        return _leaky(op, p, x, st)
    if isinstance(op, O.S4D):
        return _s4d(op, x, st, K)
    if isinstance(op, O.AttentionPool):
        return _attention_pool(x, st)
    raise ConfigError(f"the reference kernels cannot run op kind '{op.kind}'", where="edgeseq.validate.gpu")


def _attention_pool(x: torch.Tensor, st: dict):
    """Cumulative softmax pooling with one shift for the whole chunk (its largest score)."""
    s, v = x[..., :1], x[..., 1:]
    m = torch.maximum(st["max"], s.amax(dim=1))  # (B, 1)
    carry = torch.exp(st["max"] - m)
    w = torch.exp(s - m[:, None])
    den = st["den"][:, None] * carry[:, None] + torch.cumsum(w, dim=1)
    num = st["num"][:, None] * carry[:, None] + torch.cumsum(w * v, dim=1)
    return (num / den,), {"max": m, "den": den[:, -1], "num": num[:, -1]}


def _s4d(op: O.S4D, x: torch.Tensor, st: dict, K: ModuleType):
    """S4D: a complex diagonal linear recurrence, solved by the parallel doubling scan in complex
    arithmetic (torch kernels on every kernel set: Triton has no complex type)."""
    bsz, steps, h = x.shape
    abar, bbar = op.discretized()
    cplx = torch.complex128 if x.dtype == torch.float64 else torch.complex64
    a = torch.as_tensor(abar.ravel(), device=x.device).to(cplx)
    b = torch.as_tensor(bbar.ravel(), device=x.device).to(cplx)
    n = op.modes
    u = x.repeat_interleave(n, dim=-1).to(cplx)
    x0 = st["re"].to(cplx) + (1j * st["im"].to(cplx) if op.complex_modes else 0)
    xs = TK.diag_scan(a.expand(bsz, steps, -1), b * u, x0)
    c = np.asarray(op.c_re) + 1j * (np.asarray(op.c_im) if op.complex_modes else 0.0)
    c = torch.as_tensor((c * (2.0 if op.complex_modes else 1.0)).ravel(), device=x.device).to(cplx)
    y = torch.real((xs * c).reshape(bsz, steps, h, n).sum(-1)).to(x.dtype)
    if op.d is not None:
        y = y + torch.as_tensor(np.array(op.d, np.float64), device=x.device).to(x.dtype) * x
    new = {"re": torch.real(xs[:, -1]).to(x.dtype)}
    if op.complex_modes:
        new["im"] = torch.imag(xs[:, -1]).to(x.dtype)
    return (y,), new


def _lmu(op: O.LMU, p: dict, x: torch.Tensor, st: dict, K: ModuleType):
    bsz, steps, _ = x.shape
    abar64, bbar64 = op.matrices()
    abar = torch.as_tensor(abar64, device=x.device).to(x.dtype)
    bbar = torch.as_tensor(bbar64.reshape(-1), device=x.device).to(x.dtype)
    d, order, n = op.memory_d, op.order, op.memory_size
    ux = _lin(x, p["e_x"], p.get("b_u"))
    if op.has_hidden and op.e_h is not None:
        return _lmu_loop(op, p, x, ux, st, abar, bbar)
    feedback = p.get("e_m")
    if not op.has_hidden and op.e_h is not None:  # h_{t-1} is m_{t-1}: linear feedback
        feedback = p["e_h"] if feedback is None else feedback + p["e_h"]
    m0 = st["m"]
    if feedback is None:  # d independent Legendre memories: rows (B*d), vectors of length order
        b = (ux[..., None] * bbar).permute(0, 2, 1, 3).reshape(bsz * d, steps, order)
        y = K.ti_scan(b, abar, m0.reshape(bsz * d, order))
        m_seq = y.reshape(bsz, d, steps, order).permute(0, 2, 1, 3).reshape(bsz, steps, n)
    else:
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        b_blk = torch.kron(eye, bbar[:, None])  # (n, d)
        trans = torch.kron(eye, abar) + b_blk @ feedback
        m_seq = K.ti_scan(ux @ b_blk.T, trans, m0)
    new = {"m": m_seq[:, -1]}
    if not op.has_hidden:
        return (m_seq,), new
    pre = _lin(m_seq, p["w_m"], p.get("b_h"))
    if "w_x" in p:
        pre = pre + x @ p["w_x"].T
    if "w_h" in p:
        h = K.rnn_scan(pre, p["w_h"], st["h"], op.act)
        new["h"] = h[:, -1]
    else:
        h = TK.activation(op.act, pre)
    return (h,), new


def _lmu_loop(op, p, x, ux, st, abar, bbar):
    bsz, steps, _ = x.shape
    d, order = op.memory_d, op.order
    m, h = st["m"], st["h"]
    xh = torch.zeros((bsz, steps, op.hidden_size), dtype=x.dtype, device=x.device)
    if "w_x" in p:
        xh = xh + x @ p["w_x"].T
    if "b_h" in p:
        xh = xh + p["b_h"]
    outs = []
    for t in range(steps):
        u = ux[:, t] + h @ p["e_h"].T
        if "e_m" in p:
            u = u + m @ p["e_m"].T
        m = (m.reshape(bsz, d, order) @ abar.T + u[:, :, None] * bbar).reshape(bsz, -1)
        pre = m @ p["w_m"].T + xh[:, t]
        if "w_h" in p:
            pre = pre + h @ p["w_h"].T
        h = TK.activation(op.act, pre)
        outs.append(h)
    return (torch.stack(outs, 1),), {"m": m, "h": h}


def _leaky(op: O.LeakyNeuron, p: dict, x: torch.Tensor, st: dict):
    """LeakyNeuron: a torch step loop (elementwise, so each step is a few vector ops)."""
    syn, v = st.get("syn"), st["mem"]
    thr, outs = p.get("threshold"), []
    for t in range(x.shape[1]):
        d = x[:, t]
        if op.synaptic:
            syn = p["syn_decay"] * syn + (p["syn_gain"] * d if "syn_gain" in p else d)
            d = syn
        u = p["decay"] * v + (p["gain"] * d if "gain" in p else d)
        if "bias" in p:
            u = u + p["bias"]
        z = (u > thr).to(u.dtype) if thr is not None else None
        if z is not None and op.reset is ResetRule.ZERO:
            v = torch.where(z > 0, p["v_reset"] if "v_reset" in p else torch.zeros_like(u), u)
        elif z is not None and op.reset is ResetRule.SUBTRACT:
            v = u - z * thr
        else:
            v = u
        outs.append((z, v))
    new = {"mem": v} if syn is None else {"syn": syn, "mem": v}
    mem = torch.stack([o[1] for o in outs], 1)
    if not op.spiking:
        return (mem,), new
    spk = torch.stack([o[0] for o in outs], 1)
    return {"spikes": (spk,), "membrane": (mem,), "both": (spk, mem)}[op.emit], new


def _l2mu(op: O.L2MU, p: dict, x: torch.Tensor, st: dict):
    bsz, steps, _ = x.shape
    pops = {
        name: (neuron, _neuron_params(neuron, p, f"{name}_neuron."))
        for name, neuron in (("u", op.u_neuron), ("m", op.m_neuron), ("h", op.h_neuron))
    }
    s = dict(st)
    ix = _lin(x, p["e_x"], p.get("b_u"))
    hx = x @ p["w_x"].T if "w_x" in p else None
    outs = []

    def fire(pop: str, current):
        neuron, params = pops[pop]
        spk, mem, syn = TK.neuron_step(
            current, s[f"{pop}_mem"], s.get(f"{pop}_syn"), params, neuron.reset, neuron.reset_delay
        )
        s[f"{pop}_mem"] = mem
        if syn is not None:
            s[f"{pop}_syn"] = syn
        return spk

    for t in range(steps):
        s_h, s_m = s["s_h"], s["s_m"]
        i_u = ix[:, t]
        if "e_h" in p:
            i_u = i_u + s_h @ p["e_h"].T
        if "e_m" in p:
            i_u = i_u + s_m @ p["e_m"].T
        s_u = fire("u", i_u)
        i_m = (s_m.reshape(bsz, op.memory_d, op.order) @ p["a"].T + s_u[:, :, None] * p["b"]).reshape(bsz, -1)
        s_m = fire("m", i_m)
        i_h = s_m @ p["w_m"].T
        if hx is not None:
            i_h = hx[:, t] + i_h
        if "w_h" in p:
            i_h = i_h + s_h @ p["w_h"].T
        if "b_h" in p:
            i_h = i_h + p["b_h"]
        s_h = fire("h", i_h)
        s["s_m"], s["s_h"] = s_m, s_h
        outs.append(s_h)
    return (torch.stack(outs, 1),), s


# ----------------------------------------------------------------------------------------------
# readouts


def _readout(op: O.Readout, x: torch.Tensor, st: dict) -> tuple[torch.Tensor, dict]:
    if op.mode is ReadoutMode.LAST:
        return x[:, -1], {"last": x[:, -1]}
    total = st["sum"] + x.sum(dim=1)
    if op.mode is ReadoutMode.SUM:
        return total, {"sum": total}
    count = st["count"] + float(x.shape[1])
    return total / torch.clamp_min(count, 1.0), {"sum": total, "count": count}


# ----------------------------------------------------------------------------------------------


class GraphExecutor:
    """Runs ``graph`` on ``device`` in ``dtype`` with the kernel module ``kernels``; tensors in and out."""

    def __init__(self, graph: Graph, device: torch.device, dtype: torch.dtype, kernels: ModuleType):
        self.graph = graph
        self.device = device
        self.dtype = dtype
        self.kernels = kernels
        types = graph.value_types
        self.seq_nodes = [n for n in graph.nodes if all(types[i].temporal for i in n.inputs)]
        self.pooled_nodes = [n for n in graph.nodes if n not in self.seq_nodes]
        self.plan = {n.name: describe(n.op, kernels) for n in graph.nodes}
        self.params = {n.name: _params(n.op, device, dtype) for n in graph.nodes}

    def init_state(self, batch: int) -> dict[str, torch.Tensor]:
        return {
            k: torch.zeros((batch,) + s, dtype=self.dtype, device=self.device)
            for k, s in self.graph.state_spec().items()
        }

    def __call__(self, x: torch.Tensor, state: Optional[Mapping[str, torch.Tensor]] = None):
        g = self.graph
        if x.dim() != 3 or x.shape[2] != g.in_features:
            raise ShapeError(f"input must have shape (B, T, {g.in_features}), got {tuple(x.shape)}")
        if state is not None:
            g.require_streaming("running from a given state")
        st = self.init_state(x.shape[0]) if state is None else dict(state)
        local: dict[str, dict] = {n.name: {} for n in g.nodes}
        for k, v in st.items():
            node, key = k.split("/", 1)
            local[node][key] = v
        env: dict[str, torch.Tensor] = {g.inputs[0].name: x}
        for node in self.seq_nodes:
            self._node(node, env, local)
        for node in self.pooled_nodes:
            outs, _ = _ff(node.op, self.params[node.name], [env[i] for i in node.inputs], {})
            env.update(zip(node.outputs, outs))
        new_state = {f"{n}/{k}": v for n, d in local.items() for k, v in d.items()}
        return tuple(env[o] for o in g.outputs), new_state

    def _node(self, node: Node, env: dict, local: dict) -> None:
        xs = [env[i] for i in node.inputs]
        op = node.op
        if isinstance(op, O.Readout):
            val, local[node.name] = _readout(op, xs[0], local[node.name])
            env[node.outputs[0]] = val
            return
        if op.is_scan:
            outs, new = _scan(op, self.params[node.name], xs[0], local[node.name], self.kernels)
        else:
            outs, new = _ff(op, self.params[node.name], xs, local[node.name])
        if new:
            local[node.name] = {**local[node.name], **new}
        env.update(zip(node.outputs, outs))
