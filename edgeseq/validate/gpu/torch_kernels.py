"""Plain-torch reference kernels for the scan families (any torch device, float32 or float64).

Every function here has a Triton twin in :mod:`.triton_kernels` with the same signature; the graph
executor (:mod:`.executor`) picks one set. Conventions: sequences are batch-first ``(B, T, F)``
tensors, input projections are hoisted out of the time loop by the caller (one matmul over the
whole sequence), and each kernel returns the per-step outputs plus the final state.

Linear recurrences run as parallel scans in ``ceil(log2 T)`` doubling rounds (Hillis-Steele):

- :func:`diag_scan`: ``h_t = a_t * h_{t-1} + b_t`` elementwise (minGRU, minLSTM), combining pairs
  ``(a1, b1) . (a2, b2) = (a1 a2, a2 b1 + b2)``;
- :func:`ti_scan`: ``m_t = M m_{t-1} + b_t`` with one constant matrix ``M`` (LMU memory), where
  round k adds ``M^(2^k) y_{t-2^k}``.

Nonlinear cells (RNN, GRU, LSTM, LIF / CuBa-LIF) step through time; the torch versions are loops
over steps of batched tensor ops.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ...ir.types import Act, ResetRule

NAME = "torch"

# activation codes shared with the Triton kernels (constexpr ints there)
ACT_CODES = {Act.IDENTITY: 0, Act.TANH: 1, Act.RELU: 2, Act.SIGMOID: 3}
RESET_CODES = {ResetRule.NONE: 0, ResetRule.SUBTRACT: 1, ResetRule.ZERO: 2, ResetRule.ZERO_TOTAL: 3}


def activation(fn: Act, x: torch.Tensor, slope: float = 0.01, lo: float = -1.0, hi: float = 1.0) -> torch.Tensor:
    """Every :class:`~edgeseq.ir.types.Act`, exactly as :func:`edgeseq.ir.interpret.activation`."""
    if fn is Act.IDENTITY:
        return x
    if fn is Act.RELU:
        return torch.clamp_min(x, 0.0)
    if fn is Act.TANH:
        return torch.tanh(x)
    if fn is Act.SIGMOID:
        return torch.sigmoid(x)
    if fn is Act.HARDSIGMOID:
        return torch.clamp(x / 6.0 + 0.5, 0.0, 1.0)
    if fn is Act.SILU:
        return x * torch.sigmoid(x)
    if fn is Act.GELU:
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if fn is Act.GELU_TANH:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if fn is Act.LEAKY_RELU:
        return torch.where(x >= 0, x, slope * x)
    if fn is Act.HARDTANH:
        return torch.clamp(x, lo, hi)
    if fn is Act.SOFTPLUS:
        return torch.logaddexp(torch.zeros_like(x), x)
    if fn is Act.EXP:
        return torch.exp(x)
    if fn is Act.MINRNN_G:
        return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))
    raise NotImplementedError(fn)  # pragma: no cover - every Act member is handled above


# ----------------------------------------------------------------------------------------------
# linear recurrences: parallel scans


def diag_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """``h_t = a_t * h_{t-1} + b_t`` for a, b (B, T, H) from h0 (B, H); returns h (B, T, H)."""
    b = b.clone()
    b[:, 0] = b[:, 0] + a[:, 0] * h0
    steps = a.shape[1]
    s = 1
    while s < steps:
        b = torch.cat([b[:, :s], a[:, s:] * b[:, :-s] + b[:, s:]], dim=1)
        a = torch.cat([a[:, :s], a[:, s:] * a[:, :-s]], dim=1)
        s *= 2
    return b


def ti_scan(b: torch.Tensor, m: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """``y_t = M y_{t-1} + b_t`` for b (R, T, N), one matrix M (N, N) and y_{-1} = h0 (R, N)."""
    y = b.clone()
    y[:, 0] = y[:, 0] + h0 @ m.T
    steps = y.shape[1]
    p = m
    s = 1
    while s < steps:
        y = torch.cat([y[:, :s], y[:, s:] + y[:, :-s] @ p.T], dim=1)
        s *= 2
        if s < steps:
            p = p @ p
    return y


# ----------------------------------------------------------------------------------------------
# nonlinear cells: fused per-step loops (input projections precomputed by the caller)


def rnn_scan(gx: torch.Tensor, w_hh: torch.Tensor, h0: torch.Tensor, act: Act) -> torch.Tensor:
    """``h_t = act(gx_t + h_{t-1} W_hh^T)``; gx (B, T, H) holds x W_ih^T + b_ih + b_hh."""
    wt = w_hh.T
    h = h0
    out = []
    for t in range(gx.shape[1]):
        h = activation(act, gx[:, t] + h @ wt)
        out.append(h)
    return torch.stack(out, dim=1)


def gru_scan(
    gx: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, h0: torch.Tensor, reset_after: bool
) -> torch.Tensor:
    """torch-convention GRU over gx = x W_ih^T + b_ih (B, T, 3H), gates [r, z, n]."""
    n = h0.shape[1]
    w_rz, w_n = w_hh[: 2 * n].T, w_hh[2 * n :].T
    b_rz, b_n = b_hh[: 2 * n], b_hh[2 * n :]
    h = h0
    out = []
    for t in range(gx.shape[1]):
        g = gx[:, t]
        rz = torch.sigmoid(g[:, : 2 * n] + h @ w_rz + b_rz)
        r, z = rz[:, :n], rz[:, n:]
        if reset_after:
            cand = torch.tanh(g[:, 2 * n :] + r * (h @ w_n + b_n))
        else:
            cand = torch.tanh(g[:, 2 * n :] + (r * h) @ w_n + b_n)
        h = (1.0 - z) * cand + z * h
        out.append(h)
    return torch.stack(out, dim=1)


def lstm_scan(gx: torch.Tensor, w_hh: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor):
    """torch-convention LSTM over gx = x W_ih^T + b_ih + b_hh (B, T, 4H), gates [i, f, g, o].
    Returns (h (B, T, H), final c (B, H))."""
    n = h0.shape[1]
    wt = w_hh.T
    h, c = h0, c0
    out = []
    for t in range(gx.shape[1]):
        g = gx[:, t] + h @ wt
        i, f, o = torch.sigmoid(g[:, :n]), torch.sigmoid(g[:, n : 2 * n]), torch.sigmoid(g[:, 3 * n :])
        c = f * c + i * torch.tanh(g[:, 2 * n : 3 * n])
        h = o * torch.tanh(c)
        out.append(h)
    return torch.stack(out, dim=1), c


def neuron_step(
    current: torch.Tensor, mem: torch.Tensor, syn: Optional[torch.Tensor], p: dict, reset: ResetRule, reset_delay: bool
):
    """One LIF / CuBa-LIF step (see :class:`~edgeseq.ir.ops.NeuronParams`). ``p`` holds beta and
    alpha (already clipped to [0, 1]), threshold and scale (None for unit spikes).
    Returns (spikes, new mem, new syn)."""
    beta, thr, scale = p["beta"], p["threshold"], p.get("spike_scale")
    r = (mem - thr > 0).to(mem.dtype)
    if syn is not None:
        syn = p["alpha"] * syn + current
        drive = syn
    else:
        drive = current
    if reset is ResetRule.SUBTRACT:
        u = beta * mem + drive - r * thr
    elif reset is ResetRule.ZERO:
        u = beta * ((1.0 - r) * mem) + drive
    elif reset is ResetRule.ZERO_TOTAL:
        base = beta * mem + drive
        u = base - r * base
    else:
        u = beta * mem + drive
    fired = (u - thr > 0).to(u.dtype)
    spk = fired if scale is None else fired * scale
    if not reset_delay and reset is not ResetRule.NONE:
        do_reset = fired - r
        u = u - do_reset * thr if reset is ResetRule.SUBTRACT else u - do_reset * u
    return spk, u, syn


def lif_scan(
    current: torch.Tensor,
    p: dict,
    reset: ResetRule,
    reset_delay: bool,
    mem0: torch.Tensor,
    syn0: Optional[torch.Tensor],
    rec: int = 0,
    v_rec=None,
    w_rec=None,
    b_rec=None,
    spk0=None,
):
    """LIF / CuBa-LIF layer over the input current (B, T, N). ``rec``: 0 none, 1 one-to-one
    (``I_t += v_rec * S_{t-1}``), 2 all-to-all (``I_t += S_{t-1} W^T + b``).
    Returns (spikes (B, T, N), membrane (B, T, N), final mem, final syn, final spikes)."""
    mem, syn, spk = mem0, syn0, spk0
    spikes, mems = [], []
    wt = w_rec.T if rec == 2 else None
    for t in range(current.shape[1]):
        i_t = current[:, t]
        if rec == 1:
            i_t = i_t + v_rec * spk
        elif rec == 2:
            i_t = i_t + spk @ wt
            if b_rec is not None:
                i_t = i_t + b_rec
        spk, mem, syn = neuron_step(i_t, mem, syn, p, reset, reset_delay)
        spikes.append(spk)
        mems.append(mem)
    return torch.stack(spikes, 1), torch.stack(mems, 1), mem, syn, spk
