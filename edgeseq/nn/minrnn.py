"""minGRU and minLSTM (Feng et al., "Were RNNs All We Needed?", 2024).

Both are linear recurrences h_t = a_t * h_{t-1} + b_t whose coefficients depend on x_t only, so
training can run the recurrence without a step loop. Two parallel forms are provided:

- :func:`chunked_scan` (used by ``forward_parallel``): the sequence is cut into ~sqrt(T) chunks,
  scanned inside all chunks at once, then the chunk carries are propagated: 2 sqrt(T) vector steps
  instead of T, in the input's dtype, exact up to float rounding, for any sign of b and h0 (so the
  identity candidate and negative initial states train in parallel too);
- :func:`log_space_scan` (Heinsen 2023), the form of the minGRU paper for GPUs:
  log h_t = A*_t + logcumsumexp_{j<=t}(log b_j - A*_j), A*_t = sum_{j<=t} log a_j, which needs
  b_t > 0 (the candidate g(x) = x + 0.5 (x >= 0), sigmoid(x) (x < 0)) and h0 >= 0.

forward(x, h0=None) -> (y, h_T) with batch-first x (B, T, I); step(x_t, h) -> h.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError


def g(x: Tensor) -> Tensor:
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: Tensor) -> Tensor:
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


def chunked_scan(a: Tensor, b: Tensor, h0: Optional[Tensor] = None, chunk: Optional[int] = None) -> Tensor:
    """h_t = a_t h_{t-1} + b_t for all t (a, b: (B, T, H); h0: (B, H) or None = 0).

    Inside each chunk of ``chunk`` steps (default ~sqrt(T)) the recurrence runs from zero for all
    chunks at once, with the running product of a; the state entering each chunk is then carried
    from chunk to chunk, and h = h_local + prod_a_local * carry_in."""
    bsz, steps, hid = a.shape
    c = max(1, int(round(math.sqrt(steps)))) if chunk is None else int(chunk)
    n = -(-steps // c)
    pad = n * c - steps
    if pad:
        a = torch.cat([a, a.new_ones(bsz, pad, hid)], 1)
        b = torch.cat([b, b.new_zeros(bsz, pad, hid)], 1)
    ac = a.reshape(bsz, n, c, hid).unbind(2)  # unbind (not indexing): its backward is one stack
    bc = b.reshape(bsz, n, c, hid).unbind(2)
    h, p = bc[0], ac[0]
    hs, ps = [h], [p]
    for k in range(1, c):
        h = torch.addcmul(bc[k], ac[k], h)
        p = p * ac[k]
        hs.append(h)
        ps.append(p)
    h_end, p_end = h.unbind(1), p.unbind(1)
    carry = a.new_zeros(bsz, hid) if h0 is None else h0.to(a.dtype)
    carries = []
    for k in range(n):
        carries.append(carry)
        carry = torch.addcmul(h_end[k], p_end[k], carry)
    cin = torch.stack(carries, 1)[:, :, None]  # (B, n, 1, H): the state entering each chunk
    out = torch.stack(hs, 2) + torch.stack(ps, 2) * cin
    return out.reshape(bsz, n * c, hid)[:, :steps]


def log_space_scan(log_a: Tensor, log_b: Tensor, h0: Optional[Tensor] = None) -> Tensor:
    """h_t = a_t h_{t-1} + b_t for all t at once, from log a and log b (B, T, H); h0 >= 0 (B, H).

    The scan accumulates in float64: the cumulative sums cancel large terms, which in float32
    would cost ~1e-5 relative accuracy (and more in the gradients) at a few hundred steps."""
    dtype = log_a.dtype
    a_star = torch.cumsum(log_a.double(), dim=1)
    terms = log_b.double() - a_star
    if h0 is not None:
        log_h0 = torch.log(h0.double().clamp_min(torch.finfo(torch.float64).tiny))
        terms = torch.cat([log_h0.unsqueeze(1), terms], dim=1)
        return torch.exp(a_star + torch.logcumsumexp(terms, dim=1)[:, 1:]).to(dtype)
    return torch.exp(a_star + torch.logcumsumexp(terms, dim=1)).to(dtype)


class _MinRNN(nn.Module):
    n_gates = 2

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, candidate: str = "minrnn_g", parallel: bool = True
    ):
        super().__init__()
        if candidate not in ("minrnn_g", "identity"):
            raise ConfigError(f"candidate must be 'minrnn_g' or 'identity', got '{candidate}'")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.candidate = candidate
        self.parallel = parallel
        self.proj = nn.Linear(input_size, self.n_gates * hidden_size, bias=bias)
        bound = 1.0 / math.sqrt(input_size)
        nn.init.uniform_(self.proj.weight, -bound, bound)

    def _cand(self, k: Tensor) -> Tensor:
        return g(k) if self.candidate == "minrnn_g" else k

    def init_state(self, batch: int, device=None, dtype=torch.float32) -> Tensor:
        return torch.zeros(batch, self.hidden_size, device=device, dtype=dtype)

    def can_parallel(self, h0: Optional[Tensor] = None) -> bool:
        return bool(self.parallel)

    def forward(self, x: Tensor, h0: Optional[Tensor] = None):
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ConfigError(f"{type(self).__name__} expects (B, T, {self.input_size}), got {tuple(x.shape)}")
        if self.can_parallel(h0):
            y = self.forward_parallel(x, h0)
        else:
            y = self.forward_sequential(x, h0)
        return y, y[:, -1]

    def forward_sequential(self, x: Tensor, h0: Optional[Tensor] = None) -> Tensor:
        h = self.init_state(x.shape[0], x.device, x.dtype) if h0 is None else h0
        ys = []
        for t in range(x.shape[1]):
            h = self.step(x[:, t], h)
            ys.append(h)
        return torch.stack(ys, dim=1)


class MinGRU(_MinRNN):
    """z = sigmoid(W_z x + b_z), c = g(W_h x + b_h), h_t = (1 - z) h_{t-1} + z c. Weights in
    ``proj`` stacked [z, h]."""

    n_gates = 2

    def step(self, x_t: Tensor, h: Tensor) -> Tensor:
        k_z, k_h = self.proj(x_t).chunk(2, dim=-1)
        z = torch.sigmoid(k_z)
        return (1 - z) * h + z * self._cand(k_h)

    def forward_parallel(self, x: Tensor, h0: Optional[Tensor] = None) -> Tensor:
        k_z, k_h = self.proj(x).chunk(2, dim=-1)
        z = torch.sigmoid(k_z)
        return chunked_scan(1 - z, z * self._cand(k_h), h0)


class MinLSTM(_MinRNN):
    """f, i = sigmoid(W_f x + b_f), sigmoid(W_i x + b_i); f', i' = f/(f+i), i/(f+i);
    h_t = f' h_{t-1} + i' g(W_h x + b_h). Weights in ``proj`` stacked [f, i, h]."""

    n_gates = 3

    def step(self, x_t: Tensor, h: Tensor) -> Tensor:
        k_f, k_i, k_h = self.proj(x_t).chunk(3, dim=-1)
        f, i = torch.sigmoid(k_f), torch.sigmoid(k_i)
        s = f + i
        return (f / s) * h + (i / s) * self._cand(k_h)

    def forward_parallel(self, x: Tensor, h0: Optional[Tensor] = None) -> Tensor:
        k_f, k_i, k_h = self.proj(x).chunk(3, dim=-1)
        f, i = torch.sigmoid(k_f), torch.sigmoid(k_i)
        s = f + i
        return chunked_scan(f / s, (i / s) * self._cand(k_h), h0)
