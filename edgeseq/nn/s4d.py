"""Diagonal state-space layer (S4D, Gu et al. 2022; DSS, Gupta et al. 2022) with the semantics of
:class:`edgeseq.ir.ops.S4D`.

Training uses the convolution form: with zero initial state the layer is a causal convolution
of each channel with the kernel K_t = k Re(sum_n C_n Bbar_n Abar_n^t), computed from a Vandermonde
product and applied with an FFT (O(T log T)). Streaming uses :meth:`S4D.step` (the recurrence).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from ..errors import ConfigError


class S4D(nn.Module):
    """``channels`` independent SISO systems with ``modes`` diagonal modes each.

    Initialisation: S4D-Lin (A_n = -1/2 + i pi n) for complex modes, S4D-Real (A_n = -(n + 1)) for
    real modes; log dt uniform in [log dt_min, log dt_max]; B = 1; C ~ N(0, 1/2) (complex); d ~ N(0, 1)."""

    def __init__(
        self,
        channels: int,
        modes: int = 16,
        complex_modes: bool = True,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        skip: bool = True,
        seed: Optional[int] = None,
    ):
        super().__init__()
        if channels < 1 or modes < 1 or not 0 < dt_min <= dt_max:
            raise ConfigError(
                f"S4D needs channels, modes >= 1 and 0 < dt_min <= dt_max, got {channels}, {modes}, {dt_min}, {dt_max}"
            )
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        h, n = channels, modes
        self.channels, self.modes, self.complex_modes = h, n, complex_modes
        self.log_dt = nn.Parameter(
            torch.rand(h, generator=g) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        )
        if complex_modes:
            self.log_neg_a_re = nn.Parameter(torch.full((h, n), math.log(0.5)))
            self.a_im = nn.Parameter(math.pi * torch.arange(n, dtype=torch.float32).repeat(h, 1))
            self.b_re = nn.Parameter(torch.ones(h, n))
            self.b_im = nn.Parameter(torch.zeros(h, n))
            self.c_re = nn.Parameter(torch.randn(h, n, generator=g) * math.sqrt(0.5))
            self.c_im = nn.Parameter(torch.randn(h, n, generator=g) * math.sqrt(0.5))
        else:
            self.log_neg_a_re = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(h, 1))
            self.a_im = self.b_im = self.c_im = None
            self.b_re = nn.Parameter(torch.ones(h, n))
            self.c_re = nn.Parameter(torch.randn(h, n, generator=g))
        self.d = nn.Parameter(torch.randn(h, generator=g)) if skip else None

    @property
    def hidden_size(self) -> int:
        return self.channels

    def _system(self):
        """(Abar, Bbar, C * k) as complex128 tensors (H, N)."""
        dt = torch.exp(self.log_dt.double())[:, None]
        a_re = -torch.exp(self.log_neg_a_re.double())
        zero = torch.zeros_like(a_re)
        a = torch.complex(a_re, self.a_im.double() if self.complex_modes else zero)
        b = torch.complex(self.b_re.double(), self.b_im.double() if self.complex_modes else zero)
        c = torch.complex(self.c_re.double(), self.c_im.double() if self.complex_modes else zero)
        abar = torch.exp(dt * a)
        return abar, (abar - 1.0) / a * b, c * (2.0 if self.complex_modes else 1.0)

    def kernel(self, steps: int) -> Tensor:
        """K (H, T): the impulse response of every channel."""
        abar, bbar, c = self._system()
        powers = torch.exp(torch.log(abar)[:, :, None] * torch.arange(steps, dtype=torch.float64))  # (H, N, T)
        return torch.real(torch.einsum("hn,hnt->ht", c * bbar, powers))

    def forward(self, u: Tensor) -> tuple[Tensor, None]:
        """u (B, T, H) -> y (B, T, H), from a zero state."""
        if u.dim() != 3 or u.shape[-1] != self.channels:
            raise ConfigError(f"S4D expects (B, T, {self.channels}) input, got {tuple(u.shape)}")
        steps = u.shape[1]
        k = self.kernel(steps)
        n = 2 * steps
        uf = torch.fft.rfft(u.double().transpose(1, 2), n=n)
        y = torch.fft.irfft(uf * torch.fft.rfft(k, n=n), n=n)[..., :steps].transpose(1, 2)
        if self.d is not None:
            y = y + self.d.double() * u.double()
        return y.to(u.dtype), None

    def step(self, u: Tensor, state: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """One step of the recurrence: u (B, H), complex state (B, H, N) -> (y (B, H), state)."""
        abar, bbar, c = self._system()
        if state is None:
            state = torch.zeros(u.shape[0], self.channels, self.modes, dtype=torch.complex128)
        state = abar * state + bbar * u.double()[:, :, None]
        y = torch.real((c * state).sum(-1))
        if self.d is not None:
            y = y + self.d.double() * u.double()
        return y.to(u.dtype), state

    def ir_params(self) -> dict:
        """The fields of :class:`edgeseq.ir.ops.S4D` (float64 numpy)."""

        def np_(t):
            return None if t is None else t.detach().double().cpu().numpy()

        return dict(
            log_dt=np_(self.log_dt),
            a_re=-torch.exp(self.log_neg_a_re.detach().double()).numpy(),
            b_re=np_(self.b_re),
            c_re=np_(self.c_re),
            a_im=np_(self.a_im),
            b_im=np_(self.b_im),
            c_im=np_(self.c_im),
            d=np_(self.d),
        )
