"""Batch-first sequence layers that map one-to-one onto IR ops: causal convolution, batch norm over
features, fixed input standardisation and temporal readouts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..ir.types import ReadoutMode, parse_enum


class CausalConv1d(nn.Module):
    """Causal convolution over time on (B, T, C): left zero padding of (K-1)*dilation, stride 1.
    The weight has torch's Conv1d layout (out, in/groups, K)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
    ):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation, groups=groups, bias=bias)
        self.pad = (kernel_size - 1) * dilation

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(F.pad(x.transpose(1, 2), (self.pad, 0)))
        return y.transpose(1, 2)


class BatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over the feature axis of batch-first sequences (B, T, F) or pooled (B, F)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 3:
            return super().forward(x.transpose(1, 2)).transpose(1, 2)
        return super().forward(x)


class Standardize(nn.Module):
    """Fixed per-feature standardisation (x - mean) / std, e.g. from training-set statistics.
    Raw physical units stay the model's input; the scaling folds into the first layer."""

    def __init__(self, mean, std):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean.shape != std.shape or bool((std <= 0).any()):
            raise ConfigError("Standardize needs mean and std of the same length with std > 0")
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class Readout(nn.Module):
    """Temporal readout (B, T, F) -> (B, F): 'last', 'mean' or 'sum' (spike count)."""

    def __init__(self, mode: str = "last"):
        super().__init__()
        self.mode = parse_enum(ReadoutMode, mode, "readout")

    def forward(self, x: Tensor) -> Tensor:
        if self.mode is ReadoutMode.LAST:
            return x[:, -1]
        if self.mode is ReadoutMode.MEAN:
            return x.mean(dim=1)
        return x.sum(dim=1)

    def extra_repr(self) -> str:
        return self.mode.value
