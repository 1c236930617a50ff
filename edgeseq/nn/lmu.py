"""Legendre Memory Unit matching keras-lmu's definition (see :class:`edgeseq.ir.ops.LMU`).

Training can use the parallel (FFT convolution) form when the memory has no recurrent input
(no hidden_to_memory, no memory_to_memory) and the hidden cell is not recurrent ('dense' or
'none'): then m = u * H with the impulse response H_k = Abar^k Bbar, as keras-lmu's LMUFFT.
Streaming always uses :meth:`LMU.step`.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..ir.legendre import lmu_matrices
from ..ir.types import Act, Discretizer, parse_enum
from .functional import act_fn

HIDDEN_CELLS = ("rnn", "dense", "none")


@lru_cache(maxsize=32)
def _impulse(order: int, theta: float, disc: Discretizer, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """H (steps, order) with H_k = Abar^k Bbar, and P (steps, order, order) with P_t = Abar^(t+1)."""
    abar, bbar = lmu_matrices(order, theta, disc)
    h = np.empty((steps, order))
    p = np.empty((steps, order, order))
    v = bbar[:, 0].copy()
    a = abar.copy()
    for k in range(steps):
        h[k] = v
        p[k] = a
        v = abar @ v
        a = abar @ a
    return h, p


@lru_cache(maxsize=32)
def _toeplitz(order: int, theta: float, disc: Discretizer, steps: int) -> np.ndarray:
    """(steps * order, steps) matrix K with K[t*order + k, s] = H[t - s, k] for s <= t, else 0: the causal
    convolution m[t, k] = sum_{s<=t} H[t-s, k] u[s] as one matrix product."""
    h, _ = _impulse(order, theta, disc, steps)
    lag = np.arange(steps)[:, None] - np.arange(steps)[None, :]
    k = np.where((lag >= 0)[:, :, None], h[np.clip(lag, 0, None)], 0.0)  # (T, S, order)
    return np.ascontiguousarray(k.transpose(0, 2, 1).reshape(steps * order, steps))


# up to this many steps the parallel form is one (T*order, T) x (T, B*d) matrix product (fastest on CPUs
# for short windows); longer sequences use the FFT convolution (O(T log T))
TOEPLITZ_MAX_STEPS = 256


class LMU(nn.Module):
    """LMU layer over batch-first sequences.

    Args mirror keras-lmu: ``memory_d`` memory dimensions of Legendre ``order`` with window
    ``theta`` steps; ``hidden_to_memory``, ``memory_to_memory``, ``input_to_hidden``;
    ``hidden_cell`` 'rnn' (h = act(W_m m + W_x x + W_h h + b)), 'dense' (no W_h) or 'none'
    (output m). ``parallel``: 'auto' uses the FFT form whenever it applies.
    forward(x, state=None) -> (y, state) with state {'m', 'h'}; step(x_t, state) -> (y_t, state).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 0,
        memory_d: int = 1,
        order: int = 8,
        theta: float = 16.0,
        discretizer: str = "zoh",
        hidden_to_memory: bool = False,
        memory_to_memory: bool = False,
        input_to_hidden: bool = False,
        hidden_cell: str = "rnn",
        activation: str = "tanh",
        memory_bias: bool = False,
        parallel: str | bool = "auto",
    ):
        super().__init__()
        if hidden_cell not in HIDDEN_CELLS:
            raise ConfigError(f"hidden_cell must be one of {HIDDEN_CELLS}, got '{hidden_cell}'")
        if hidden_cell != "none" and hidden_size < 1:
            raise ConfigError("hidden_size must be >= 1 unless hidden_cell='none'")
        self.input_size, self.memory_d, self.order, self.theta = input_size, memory_d, int(order), float(theta)
        self.discretizer = parse_enum(Discretizer, discretizer, "discretizer")
        self.hidden_cell = hidden_cell
        self.memory_size = memory_d * self.order
        self.hidden_size = hidden_size if hidden_cell != "none" else self.memory_size
        self.act = parse_enum(Act, activation, "activation")
        self.parallel = parallel
        abar, bbar = lmu_matrices(self.order, self.theta, self.discretizer)
        self.register_buffer("abar", torch.tensor(abar, dtype=torch.float32), persistent=False)
        self.register_buffer("bbar", torch.tensor(bbar[:, 0], dtype=torch.float32), persistent=False)

        def glorot(rows, cols):
            bound = math.sqrt(6.0 / (rows + cols))
            return nn.Parameter(torch.empty(rows, cols).uniform_(-bound, bound))

        self.e_x = glorot(memory_d, input_size)
        self.e_h = glorot(memory_d, self.hidden_size) if hidden_to_memory else None
        self.e_m = glorot(memory_d, self.memory_size) if memory_to_memory else None
        self.b_u = nn.Parameter(torch.zeros(memory_d)) if memory_bias else None
        if hidden_cell == "none":
            if input_to_hidden:
                raise ConfigError("input_to_hidden needs a hidden cell")
            self.w_m = self.w_x = self.w_h = self.b_h = None
        else:
            self.w_m = glorot(hidden_size, self.memory_size)
            self.w_x = glorot(hidden_size, input_size) if input_to_hidden else None
            self.w_h = (
                nn.Parameter(nn.init.orthogonal_(torch.empty(hidden_size, hidden_size)))
                if hidden_cell == "rnn"
                else None
            )
            self.b_h = nn.Parameter(torch.zeros(hidden_size))

    # -- helpers --------------------------------------------------------------------------------
    @property
    def needs_h_state(self) -> bool:
        return self.hidden_cell != "none" and (self.w_h is not None or self.e_h is not None)

    def can_parallel(self) -> bool:
        if self.parallel is False:
            return False
        ok = self.e_h is None and self.e_m is None and self.hidden_cell != "rnn"
        if self.parallel is True and not ok:
            raise ConfigError(
                "the parallel LMU form needs no hidden_to_memory/memory_to_memory and a non-recurrent hidden cell"
            )
        return ok

    def init_state(self, batch: int, device=None, dtype=torch.float32) -> dict[str, Tensor]:
        s = {"m": torch.zeros(batch, self.memory_size, device=device, dtype=dtype)}
        if self.needs_h_state:
            s["h"] = torch.zeros(batch, self.hidden_size, device=device, dtype=dtype)
        return s

    def _hidden(self, m: Tensor, x: Tensor, h_prev: Optional[Tensor]) -> Tensor:
        if self.hidden_cell == "none":
            return m
        pre = m @ self.w_m.T + self.b_h
        if self.w_x is not None:
            pre = pre + x @ self.w_x.T
        if self.w_h is not None:
            pre = pre + h_prev @ self.w_h.T
        return act_fn(self.act, pre)

    # -- forms ------------------------------------------------------------------------------------
    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        m = state["m"]
        h_prev = state.get("h", m if self.hidden_cell == "none" else None)
        u = x_t @ self.e_x.T
        if self.e_h is not None:
            u = u + h_prev @ self.e_h.T
        if self.e_m is not None:
            u = u + m @ self.e_m.T
        if self.b_u is not None:
            u = u + self.b_u
        b = x_t.shape[0]
        m = (m.reshape(b, self.memory_d, self.order) @ self.abar.T + u.unsqueeze(-1) * self.bbar).reshape(b, -1)
        h = self._hidden(m, x_t, h_prev)
        new = {"m": m}
        if self.needs_h_state:
            new["h"] = h
        return h, new

    def forward(self, x: Tensor, state: Optional[dict[str, Tensor]] = None):
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ConfigError(f"LMU expects (B, T, {self.input_size}), got {tuple(x.shape)}")
        if self.can_parallel():
            return self.forward_parallel(x, state)
        return self.forward_sequential(x, state)

    def forward_sequential(self, x: Tensor, state: Optional[dict[str, Tensor]] = None):
        state = self.init_state(x.shape[0], x.device, x.dtype) if state is None else state
        ys = []
        for t in range(x.shape[1]):
            y, state = self.step(x[:, t], state)
            ys.append(y)
        return torch.stack(ys, dim=1), state

    def forward_parallel(self, x: Tensor, state: Optional[dict[str, Tensor]] = None):
        """Convolution form: m_t = Abar^(t+1) m_0 + sum_{j<=t} Abar^(t-j) Bbar u_j, as one Toeplitz
        matrix product in the input's dtype for windows up to TOEPLITZ_MAX_STEPS steps, else an FFT
        convolution in float64."""
        b, steps, _ = x.shape
        u = x @ self.e_x.T
        if self.b_u is not None:
            u = u + self.b_u
        if steps <= TOEPLITZ_MAX_STEPS:
            k = torch.from_numpy(_toeplitz(self.order, self.theta, self.discretizer, steps)).to(x.device, x.dtype)
            m = k @ u.permute(1, 0, 2).reshape(steps, b * self.memory_d)  # (T*order, B*d)
            m = m.reshape(steps, self.order, b, self.memory_d).permute(2, 0, 3, 1)  # (B, T, d, order)
        else:
            h_np, _ = _impulse(self.order, self.theta, self.discretizer, steps)
            n = 2 * steps
            uf = torch.fft.rfft(u.double().transpose(1, 2), n=n)  # (B, d, F)
            hf = torch.fft.rfft(torch.from_numpy(h_np).to(x.device).T, n=n)  # (order, F)
            m = torch.fft.irfft(uf.unsqueeze(2) * hf, n=n)[..., :steps]  # (B, d, order, T)
            m = m.permute(0, 3, 1, 2)  # (B, T, d, order)
        if state is not None:
            _, p_np = _impulse(self.order, self.theta, self.discretizer, steps)
            m0 = state["m"].double().reshape(b, self.memory_d, self.order)
            p = torch.from_numpy(p_np).to(x.device)
            m = m.double() + torch.einsum("tij,bdj->btdi", p, m0)
        m = m.reshape(b, steps, self.memory_size).to(x.dtype)
        y = self._hidden(m, x, None)
        new = {"m": m[:, -1]}
        if self.needs_h_state:
            new["h"] = y[:, -1]
        return y, new

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, hidden={self.hidden_size}, memory_d={self.memory_d}, order={self.order}, "
            f"theta={self.theta}, cell={self.hidden_cell}"
        )
