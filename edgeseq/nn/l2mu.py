"""L2MU: the LIF-based Legendre Memory Unit (Leto, Urgese, Macii, Fra; NICE 2025).

Every block of the LMU becomes a population of (current-based) LIF neurons: a spike input encoder,
the memory input u, the memory m and the hidden state h (equations in :class:`edgeseq.ir.ops.L2MU`).
The memory transition (a, b) starts as the discretised Legendre system.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from ..ir.legendre import lmu_matrices
from .spiking import NeuronPopulation


def _glorot(rows: int, cols: int) -> nn.Parameter:
    bound = math.sqrt(6.0 / (rows + cols))
    return nn.Parameter(torch.empty(rows, cols).uniform_(-bound, bound))


class L2MU(nn.Module):
    """L2MU layer over (B, T, input_size) input currents; returns (hidden spikes (B, T, H), state).

    ``encoder_size`` > 0 adds the spike input encoder: a Linear projection into a LIF population
    whose spikes drive the cell. ``truncate_feedback`` (training only; the forward pass is unchanged)
    stops gradients through the previous step's spikes. ``neuron``: 'leaky' or 'synaptic' populations. ``beta``/``threshold``
    are learnable per population when ``learn_neurons``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        memory_d: int = 4,
        order: int = 8,
        theta: float = 32.0,
        encoder_size: int = 0,
        neuron: str = "leaky",
        beta: float = 0.9,
        alpha: float = 0.8,
        threshold: float = 1.0,
        reset: str = "subtract",
        reset_delay: bool = True,
        hidden_to_memory: bool = True,
        memory_to_memory: bool = True,
        input_to_hidden: bool = True,
        recurrent_hidden: bool = True,
        learn_memory: bool = True,
        learn_neurons: bool = True,
        surrogate: str = "atan",
        slope: float = 2.0,
        truncate_feedback: bool = True,
    ):
        super().__init__()
        self.truncate_feedback = bool(truncate_feedback)
        self.input_size, self.hidden_size, self.memory_d, self.order = input_size, hidden_size, memory_d, order
        self.memory_size = memory_d * order
        a_syn = alpha if neuron == "synaptic" else None

        def pop(n):
            return NeuronPopulation(
                n,
                beta,
                threshold,
                a_syn,
                reset,
                reset_delay,
                learn_neurons,
                learn_neurons,
                learn_neurons and a_syn is not None,
                False,
                surrogate,
                slope,
            )

        cell_in = input_size
        if encoder_size:
            self.enc = nn.Linear(input_size, encoder_size)
            self.enc_pop = pop(encoder_size)
            cell_in = encoder_size
        else:
            self.enc = self.enc_pop = None
        self.cell_in = cell_in
        abar, bbar = lmu_matrices(order, theta)
        a = torch.tensor(abar, dtype=torch.float32)
        b = torch.tensor(bbar[:, 0], dtype=torch.float32)
        if learn_memory:
            self.a, self.b = nn.Parameter(a), nn.Parameter(b)
        else:
            self.register_buffer("a", a)
            self.register_buffer("b", b)
        self.e_x = _glorot(memory_d, cell_in)
        self.e_h = _glorot(memory_d, hidden_size) if hidden_to_memory else None
        self.e_m = _glorot(memory_d, self.memory_size) if memory_to_memory else None
        self.b_u = nn.Parameter(torch.zeros(memory_d))
        self.w_x = _glorot(hidden_size, cell_in) if input_to_hidden else None
        self.w_h = _glorot(hidden_size, hidden_size) if recurrent_hidden else None
        self.w_m = _glorot(hidden_size, self.memory_size)
        self.b_h = nn.Parameter(torch.zeros(hidden_size))
        self.u_pop, self.m_pop, self.h_pop = pop(memory_d), pop(self.memory_size), pop(hidden_size)

    def init_state(self, batch: int, device=None, dtype=torch.float32) -> dict[str, Tensor]:
        s: dict[str, Tensor] = {}
        pops = [("u", self.u_pop), ("m", self.m_pop), ("h", self.h_pop)]
        if self.enc_pop is not None:
            pops.insert(0, ("enc", self.enc_pop))
        for name, p in pops:
            for k, v in p.init_state(batch, device, dtype).items():
                s[f"{name}_{k}"] = v
        s["s_m"] = torch.zeros(batch, self.memory_size, device=device, dtype=dtype)
        s["s_h"] = torch.zeros(batch, self.hidden_size, device=device, dtype=dtype)
        return s

    @staticmethod
    def _sub(state: dict[str, Tensor], name: str) -> dict[str, Tensor]:
        return {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + "_")}

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        new: dict[str, Tensor] = {}
        if self.enc is not None:
            x_t, st = self.enc_pop.step(self.enc(x_t), self._sub(state, "enc"))
            new.update({f"enc_{k}": v for k, v in st.items()})
        s_h, s_m = state["s_h"], state["s_m"]
        if self.truncate_feedback and torch.is_grad_enabled():
            # spike feedback from the previous step carries no gradient (the membranes still do):
            # through 100+ steps of surrogate-gradient feedback loops the full BPTT gradient explodes
            s_h, s_m = s_h.detach(), s_m.detach()
        i_u = x_t @ self.e_x.T + self.b_u
        if self.e_h is not None:
            i_u = i_u + s_h @ self.e_h.T
        if self.e_m is not None:
            i_u = i_u + s_m @ self.e_m.T
        s_u, st = self.u_pop.step(i_u, self._sub(state, "u"))
        new.update({f"u_{k}": v for k, v in st.items()})
        b = x_t.shape[0]
        i_m = (s_m.reshape(b, self.memory_d, self.order) @ self.a.T + s_u.unsqueeze(-1) * self.b).reshape(b, -1)
        s_m, st = self.m_pop.step(i_m, self._sub(state, "m"))
        new.update({f"m_{k}": v for k, v in st.items()})
        i_h = s_m @ self.w_m.T + self.b_h
        if self.w_x is not None:
            i_h = i_h + x_t @ self.w_x.T
        if self.w_h is not None:
            i_h = i_h + s_h @ self.w_h.T
        s_h, st = self.h_pop.step(i_h, self._sub(state, "h"))
        new.update({f"h_{k}": v for k, v in st.items()})
        new["s_m"], new["s_h"] = s_m, s_h
        return s_h, new

    def forward(self, x: Tensor, state: Optional[dict[str, Tensor]] = None):
        """The whole sequence: the same equations as :meth:`step`, with the input-only parts (the
        spike encoder, a feed-forward LIF population, and the input projections) computed for all
        steps at once and the neuron parameters prepared once."""
        from ..ir.types import ResetRule
        from .spiking import _LeakyScan, _reset_and_fire

        b, steps, _ = x.shape
        state = self.init_state(b, x.device, x.dtype) if state is None else dict(state)
        new: dict[str, Tensor] = {}
        if self.enc is not None:
            pop = self.enc_pop
            cur = self.enc(x)
            if not pop.synaptic and pop.reset_delay and pop.reset in (ResetRule.SUBTRACT, ResetRule.NONE) and steps > 0:
                beta = torch.as_tensor(pop.beta, dtype=x.dtype).clamp(0, 1)
                xs, mem = _LeakyScan.apply(
                    cur,
                    state["enc_mem"],
                    beta,
                    pop.threshold.to(x.dtype),
                    pop.reset is ResetRule.SUBTRACT,
                    True,
                    pop.surrogate,
                    pop.slope,
                )
                new["enc_mem"] = mem
            else:
                st, outs = self._sub(state, "enc"), []
                for cur_t in cur.unbind(1):
                    o, st = pop.step(cur_t, st)
                    outs.append(o)
                xs = torch.stack(outs, 1) if outs else cur
                new.update({f"enc_{k}": v for k, v in st.items()})
        else:
            xs = x
        # per-step slices by unbind (indexing [:, t] would cost a full-size zero gradient per step)
        pre_u = (xs @ self.e_x.T + self.b_u).unbind(1)  # T x (B, d)
        pre_h = (
            (self.b_h + (xs @ self.w_x.T if self.w_x is not None else torch.zeros_like(xs[..., :1])))
            .expand(b, steps, self.hidden_size)
            .unbind(1)
        )  # T x (B, H)

        def params(pop):
            beta = torch.as_tensor(pop.beta, dtype=x.dtype).clamp(0, 1)
            alpha = None if pop.alpha is None else torch.as_tensor(pop.alpha, dtype=x.dtype).clamp(0, 1)
            return beta, pop.threshold.to(x.dtype), alpha, pop

        def fire(prm, cur_t, st):
            beta, thr, alpha, pop = prm
            if alpha is not None:
                st["syn"] = alpha * st["syn"] + cur_t
                cur_t = st["syn"]
            spk, st["mem"] = _reset_and_fire(
                st["mem"], cur_t, beta, thr, pop.reset, pop.reset_delay, None, pop.surrogate, pop.slope
            )
            return spk

        pu, pm, ph = params(self.u_pop), params(self.m_pop), params(self.h_pop)
        su, sm, sh = self._sub(state, "u"), self._sub(state, "m"), self._sub(state, "h")
        s_m, s_h = state["s_m"], state["s_h"]
        truncate = self.truncate_feedback and torch.is_grad_enabled()
        ys = []
        for t in range(steps):
            if truncate:
                s_h, s_m = s_h.detach(), s_m.detach()
            i_u = pre_u[t]
            if self.e_h is not None:
                i_u = i_u + s_h @ self.e_h.T
            if self.e_m is not None:
                i_u = i_u + s_m @ self.e_m.T
            s_u = fire(pu, i_u, su)
            i_m = (s_m.reshape(b, self.memory_d, self.order) @ self.a.T + s_u.unsqueeze(-1) * self.b).reshape(b, -1)
            s_m_new = fire(pm, i_m, sm)
            i_h = s_m_new @ self.w_m.T + pre_h[t]
            if self.w_h is not None:
                i_h = i_h + s_h @ self.w_h.T
            s_h = fire(ph, i_h, sh)
            s_m = s_m_new
            ys.append(s_h)
        for name, st in (("u", su), ("m", sm), ("h", sh)):
            new.update({f"{name}_{k}": v for k, v in st.items()})
        new["s_m"], new["s_h"] = s_m, s_h
        out = torch.stack(ys, dim=1) if ys else x.new_zeros(b, 0, self.hidden_size)
        return out, {k: new.get(k, state[k]) for k in state}
