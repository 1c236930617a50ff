"""Pointwise activation functions in float64: the one definition every evaluator uses."""

from __future__ import annotations

import numpy as np
from scipy import special

from .types import CLAMP_ACTS, Act

__all__ = ["CLAMP_ACTS", "activation"]


def activation(fn: Act, x: np.ndarray, slope: float = 0.01, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    if fn is Act.IDENTITY:
        return x
    if fn is Act.RELU:
        return np.maximum(x, 0.0)
    if fn is Act.TANH:
        return np.tanh(x)
    if fn is Act.SIGMOID:
        return special.expit(x)
    if fn is Act.HARDSIGMOID:
        return np.clip(x / 6.0 + 0.5, 0.0, 1.0)
    if fn is Act.SILU:
        return x * special.expit(x)
    if fn is Act.GELU:
        return 0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0)))
    if fn is Act.GELU_TANH:
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))
    if fn is Act.LEAKY_RELU:
        return np.where(x >= 0, x, slope * x)
    if fn is Act.HARDTANH:
        return np.clip(x, lo, hi)
    if fn is Act.EXP:
        return np.exp(x)
    if fn is Act.SOFTPLUS:
        return np.logaddexp(0.0, x)
    if fn is Act.MINRNN_G:
        return np.where(x >= 0, x + 0.5, special.expit(x))
    raise NotImplementedError(fn)  # pragma: no cover - every Act member is handled above
