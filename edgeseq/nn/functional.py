"""Torch versions of the IR's pointwise functions (same definitions as the reference interpreter)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ir.types import Act


def act_fn(fn: Act, x: Tensor, slope: float = 0.01, lo: float = -1.0, hi: float = 1.0) -> Tensor:
    if fn is Act.IDENTITY:
        return x
    if fn is Act.RELU:
        return torch.relu(x)
    if fn is Act.TANH:
        return torch.tanh(x)
    if fn is Act.SIGMOID:
        return torch.sigmoid(x)
    if fn is Act.HARDSIGMOID:
        return F.hardsigmoid(x)
    if fn is Act.SILU:
        return F.silu(x)
    if fn is Act.GELU:
        return F.gelu(x)
    if fn is Act.GELU_TANH:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if fn is Act.LEAKY_RELU:
        return F.leaky_relu(x, slope)
    if fn is Act.HARDTANH:
        return F.hardtanh(x, lo, hi)
    if fn is Act.SOFTPLUS:
        return F.softplus(x)
    if fn is Act.EXP:
        return torch.exp(x)
    if fn is Act.MINRNN_G:
        return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))
    raise NotImplementedError(fn)  # pragma: no cover
