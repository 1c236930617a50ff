"""Spiking neurons as pure functional steps, plus thin modules around them.

The steps reproduce snntorch 1.0's Leaky / Synaptic update and reset rules exactly (see
:class:`edgeseq.ir.ops.NeuronParams`) and hold no module state, so they run inside
``torch._higher_order_ops.scan``, export to ONNX, and train with surrogate gradients.

The spike nonlinearity is a straight-through composition, ``H(x) + (sg(x) - sg(x).detach())``:
its forward value is exactly the strict Heaviside step, its gradient is that of the surrogate
``sg`` (snntorch's ATan by default), and it needs no custom autograd.Function.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..ir.types import Recurrence, ResetRule, parse_enum

SURROGATES = ("atan", "fast_sigmoid", "sigmoid", "straight_through")


def spike(x: Tensor, surrogate: str = "atan", slope: float = 2.0) -> Tensor:
    """Strict Heaviside H(x) = (x > 0) with a surrogate gradient.

    atan (snntorch default, alpha=slope): d/dx = (slope/2) / (1 + (pi/2 slope x)^2)
    fast_sigmoid (slope k): d/dx = 1 / (k|x| + 1)^2;  sigmoid: d/dx = k s(kx)(1 - s(kx));
    straight_through: d/dx = 1."""
    step = (x > 0).to(x.dtype).detach()
    if surrogate == "atan":
        sg = torch.atan((math.pi / 2.0) * slope * x) / math.pi
    elif surrogate == "fast_sigmoid":
        sg = x / (1.0 + slope * x.abs())
    elif surrogate == "sigmoid":
        sg = torch.sigmoid(slope * x)
    elif surrogate == "straight_through":
        sg = x
    else:
        raise ConfigError(f"unknown surrogate '{surrogate}'; expected one of {', '.join(SURROGATES)}")
    return step + (sg - sg.detach())


def _reset_and_fire(
    mem, drive, beta, threshold, reset: ResetRule, reset_delay: bool, spike_scale, surrogate: str, slope: float
):
    r = (mem - threshold > 0).to(mem.dtype).detach()
    if reset is ResetRule.SUBTRACT:
        u = beta * mem + drive - r * threshold
    elif reset is ResetRule.ZERO:
        u = beta * ((1.0 - r) * mem) + drive
    elif reset is ResetRule.ZERO_TOTAL:
        base = beta * mem + drive
        u = base - r * base
    else:
        u = beta * mem + drive
    fired = spike(u - threshold, surrogate, slope)
    spk = fired if spike_scale is None else fired * spike_scale
    if not reset_delay and reset is not ResetRule.NONE:
        do_reset = fired - r
        u = u - do_reset * threshold if reset is ResetRule.SUBTRACT else u - do_reset * u
    return spk, u


def leaky_step(
    current: Tensor,
    mem: Tensor,
    beta,
    threshold,
    reset: ResetRule | str = ResetRule.SUBTRACT,
    reset_delay: bool = True,
    spike_scale=None,
    surrogate: str = "atan",
    slope: float = 2.0,
) -> tuple[Tensor, Tensor]:
    """One LIF step: returns (spikes, new membrane). beta is clipped to [0, 1] as in snntorch."""
    reset = parse_enum(ResetRule, reset, "reset rule")
    beta = torch.as_tensor(beta, dtype=current.dtype).clamp(0, 1)
    return _reset_and_fire(mem, current, beta, threshold, reset, reset_delay, spike_scale, surrogate, slope)


def synaptic_step(
    current: Tensor,
    syn: Tensor,
    mem: Tensor,
    alpha,
    beta,
    threshold,
    reset: ResetRule | str = ResetRule.SUBTRACT,
    reset_delay: bool = True,
    spike_scale=None,
    surrogate: str = "atan",
    slope: float = 2.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """One current-based LIF step: returns (spikes, new synaptic current, new membrane)."""
    reset = parse_enum(ResetRule, reset, "reset rule")
    alpha = torch.as_tensor(alpha, dtype=current.dtype).clamp(0, 1)
    beta = torch.as_tensor(beta, dtype=current.dtype).clamp(0, 1)
    syn = alpha * syn + current
    spk, mem = _reset_and_fire(mem, syn, beta, threshold, reset, reset_delay, spike_scale, surrogate, slope)
    return spk, syn, mem


def surrogate_grad(x: Tensor, surrogate: str, slope: float) -> Tensor:
    """d sg(x) / dx of :func:`spike`'s surrogate."""
    if surrogate == "atan":
        return (slope / 2.0) / (1.0 + ((math.pi / 2.0) * slope * x) ** 2)
    if surrogate == "fast_sigmoid":
        return 1.0 / (slope * x.abs() + 1.0) ** 2
    if surrogate == "sigmoid":
        sig = torch.sigmoid(slope * x)
        return slope * sig * (1.0 - sig)
    if surrogate == "straight_through":
        return torch.ones_like(x)
    raise ConfigError(f"unknown surrogate '{surrogate}'; expected one of {', '.join(SURROGATES)}")


class _LeakyScan(torch.autograd.Function):
    """A whole sequence of :func:`leaky_step` (subtract or no reset, reset delayed) as one op with a
    hand-written backward pass: the same numbers as the step loop, with a fraction of its autograd
    bookkeeping (the training form of feed-forward LIF layers).

    forward(x (B, T, H), mem0 (B, H), beta (clamped), threshold, subtract, spikes_out, surrogate,
    slope) -> (output (B, T, H): spikes or membrane, final membrane (B, H))."""

    @staticmethod
    def forward(ctx, x, mem0, beta, thr, subtract: bool, spikes_out: bool, surrogate: str, slope: float):
        xt = x.transpose(0, 1).contiguous()  # time-major: every step reads / writes contiguous rows
        u = torch.empty_like(xt)
        mem = mem0
        for t in range(xt.shape[0]):
            if subtract:
                r = (mem - thr > 0).to(x.dtype)
                mem = beta * mem + xt[t] - r * thr
            else:
                mem = beta * mem + xt[t]
            u[t] = mem
        ctx.save_for_backward(u, mem0, beta, thr)
        ctx.cfg = (subtract, spikes_out, surrogate, slope)
        out = (u - thr > 0).to(x.dtype) if spikes_out else u
        return out.transpose(0, 1), mem

    @staticmethod
    def backward(ctx, g_out, g_mem):
        u, mem0, beta, thr = ctx.saved_tensors  # u: (T, B, H)
        subtract, spikes_out, surrogate, slope = ctx.cfg
        g_out = torch.zeros_like(u) if g_out is None else g_out.transpose(0, 1)
        carry = torch.zeros_like(mem0) if g_mem is None else g_mem.clone()
        g_thr = torch.zeros_like(mem0)
        if spikes_out:
            sg = surrogate_grad(u - thr, surrogate, slope) * g_out  # d loss / d u through the spikes
            g_thr = g_thr - sg.sum(0)
        else:
            sg = g_out.contiguous()
        g_u = torch.empty_like(u)  # d loss / d u_t, through the output and all later steps
        for t in range(u.shape[0] - 1, -1, -1):
            carry = carry + sg[t]
            g_u[t] = carry
            carry = carry * beta
        prev = torch.cat([mem0[None], u[:-1]])  # membrane before each step
        g_beta = (g_u * prev).sum(0)
        if subtract:
            g_thr = g_thr - (g_u * (prev - thr > 0).to(u.dtype)).sum(0)
        return (g_u.transpose(0, 1), carry, _reduce_to(g_beta, beta), _reduce_to(g_thr, thr), None, None, None, None)


def _reduce_to(g: Tensor, like: Tensor) -> Tensor:
    """Sum a (B, H) gradient down to the shape of a scalar or per-neuron parameter."""
    g = g.sum(0)
    return g if g.shape == like.shape else g.sum().reshape(like.shape)


class NeuronPopulation(nn.Module):
    """Parameters of one LIF (alpha=None) or CuBa-LIF population, optionally learnable, and its step."""

    def __init__(
        self,
        size: int,
        beta=0.9,
        threshold=1.0,
        alpha=None,
        reset="subtract",
        reset_delay=True,
        learn_beta=False,
        learn_threshold=False,
        learn_alpha=False,
        per_neuron=False,
        surrogate="atan",
        slope=2.0,
    ):
        super().__init__()
        self.size = size
        self.reset = parse_enum(ResetRule, reset, "reset rule")
        self.reset_delay = bool(reset_delay)
        self.surrogate = surrogate
        self.slope = float(slope)

        def param(value, learn, name):
            t = torch.as_tensor(value, dtype=torch.float32).clone()
            if per_neuron and t.dim() == 0:
                t = t.expand(size).clone()
            if learn:
                self.register_parameter(name, nn.Parameter(t))
            else:
                self.register_buffer(name, t)

        param(beta, learn_beta, "beta")
        param(threshold, learn_threshold, "threshold")
        if alpha is None:
            self.alpha = None
        else:
            param(alpha, learn_alpha, "alpha")

    @property
    def synaptic(self) -> bool:
        return self.alpha is not None

    def init_state(self, batch: int, device=None, dtype=torch.float32) -> dict[str, Tensor]:
        z = torch.zeros(batch, self.size, device=device, dtype=dtype)
        return {"syn": z, "mem": z.clone()} if self.synaptic else {"mem": z}

    def step(self, current: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        thr = self.threshold.to(current.dtype)
        if self.synaptic:
            spk, syn, mem = synaptic_step(
                current,
                state["syn"],
                state["mem"],
                self.alpha,
                self.beta,
                thr,
                self.reset,
                self.reset_delay,
                None,
                self.surrogate,
                self.slope,
            )
            return spk, {"syn": syn, "mem": mem}
        spk, mem = leaky_step(
            current, state["mem"], self.beta, thr, self.reset, self.reset_delay, None, self.surrogate, self.slope
        )
        return spk, {"mem": mem}

    def extra_repr(self) -> str:
        kind = "synaptic" if self.synaptic else "leaky"
        return f"{self.size}, {kind}, reset={self.reset.value}, reset_delay={self.reset_delay}"


class LIF(nn.Module):
    """A layer of LIF neurons (``alpha=None``) or current-based LIF neurons (``alpha`` given) over a
    batch-first sequence (B, T, H) of input currents, with optional recurrence on the previous spikes.

    forward(x, state=None) -> (output, state), output = spikes or membrane (``emit``)."""

    def __init__(
        self,
        size: int,
        beta=0.9,
        threshold=1.0,
        alpha=None,
        reset="subtract",
        reset_delay=True,
        recurrence="none",
        learn_beta=False,
        learn_threshold=False,
        per_neuron=False,
        emit="spikes",
        surrogate="atan",
        slope=2.0,
    ):
        super().__init__()
        self.pop = NeuronPopulation(
            size,
            beta,
            threshold,
            alpha,
            reset,
            reset_delay,
            learn_beta,
            learn_threshold,
            learn_beta and alpha is not None,
            per_neuron,
            surrogate,
            slope,
        )
        self.recurrence = parse_enum(Recurrence, recurrence, "recurrence")
        if emit not in ("spikes", "membrane"):
            raise ConfigError(f"emit must be 'spikes' or 'membrane', got '{emit}'")
        self.emit = emit
        self.v_rec = nn.Parameter(torch.ones(size)) if self.recurrence is Recurrence.ONE_TO_ONE else None
        self.rec = nn.Linear(size, size) if self.recurrence is Recurrence.ALL_TO_ALL else None
        if self.rec is not None:
            nn.init.normal_(self.rec.weight, std=0.5 / math.sqrt(size))

    @property
    def size(self) -> int:
        return self.pop.size

    def init_state(self, batch: int, device=None, dtype=torch.float32) -> dict[str, Tensor]:
        s = self.pop.init_state(batch, device, dtype)
        if self.recurrence is not Recurrence.NONE:
            s["spk"] = torch.zeros(batch, self.size, device=device, dtype=dtype)
        return s

    def step(self, x: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        if self.v_rec is not None:
            x = x + self.v_rec * state["spk"]
        elif self.rec is not None:
            x = x + self.rec(state["spk"])
        spk, new = self.pop.step(x, state)
        if self.recurrence is not Recurrence.NONE:
            new["spk"] = spk
        return (spk if self.emit == "spikes" else new["mem"]), new

    @property
    def fused(self) -> bool:
        """Whether forward runs as one fused scan (feed-forward leaky neurons with subtract or no
        reset, delayed; the layout of every zoo model) instead of the step loop."""
        pop = self.pop
        return (
            not pop.synaptic
            and self.recurrence is Recurrence.NONE
            and pop.reset_delay
            and pop.reset in (ResetRule.SUBTRACT, ResetRule.NONE)
        )

    def forward(self, x: Tensor, state: Optional[dict[str, Tensor]] = None):
        if state is None:
            state = self.init_state(x.shape[0], x.device, x.dtype)
        if self.fused and x.shape[1] > 0:
            pop = self.pop
            beta = torch.as_tensor(pop.beta, dtype=x.dtype).clamp(0, 1)
            out, mem = _LeakyScan.apply(
                x,
                state["mem"],
                beta,
                pop.threshold.to(x.dtype),
                pop.reset is ResetRule.SUBTRACT,
                self.emit == "spikes",
                pop.surrogate,
                pop.slope,
            )
            return out, {"mem": mem}
        outs = []
        for t in range(x.shape[1]):
            y, state = self.step(x[:, t], state)
            outs.append(y)
        return torch.stack(outs, dim=1), state
