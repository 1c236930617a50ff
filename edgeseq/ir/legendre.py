"""The Legendre delay system of the LMU and its discretisation (numpy only).

Continuous system (Voelker et al. 2019, keras-lmu 0.9), for i, j in [0, order):

    A[i, j] = (2i + 1) * (-1 if i < j else (-1)^(i - j + 1))
    B[i]    = (2i + 1) * (-1)^i
    theta dm/dt = A m + B u

Discretised with dt = 1 step, in the column convention m_t = Abar m_{t-1} + Bbar u_t:

    zoh:   [[Abar, Bbar], [0, I]] = expm([[A/theta, B/theta], [0, 0]])   (== scipy cont2discrete 'zoh')
    euler: Abar = I + A/theta,  Bbar = B/theta
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import ConfigError
from .types import Discretizer, parse_enum


def legendre_system(order: int) -> tuple[np.ndarray, np.ndarray]:
    """Continuous (A, B) of the Legendre delay system, B with shape (order, 1)."""
    if int(order) != order or order < 1:
        raise ConfigError(f"LMU order must be a positive integer, got {order}")
    q = np.arange(order, dtype=np.float64)
    r = (2 * q + 1)[:, None]
    i, j = np.meshgrid(q, q, indexing="ij")
    a = np.where(i < j, -1.0, (-1.0) ** (i - j + 1)) * r
    b = ((-1.0) ** q)[:, None] * r
    return a, b


@lru_cache(maxsize=64)
def _matrices(order: int, theta: float, disc: Discretizer) -> tuple[np.ndarray, np.ndarray]:
    a, b = legendre_system(order)
    a, b = a / theta, b / theta
    if disc is Discretizer.EULER:
        abar, bbar = np.eye(order) + a, b
    else:
        from scipy.linalg import expm

        em = np.zeros((order + 1, order + 1))
        em[:order, :order] = a
        em[:order, order:] = b
        ms = expm(em)
        abar, bbar = ms[:order, :order], ms[:order, order:]
    abar.setflags(write=False)
    bbar.setflags(write=False)
    return abar, bbar


def lmu_matrices(order: int, theta: float, discretizer: str | Discretizer = "zoh") -> tuple[np.ndarray, np.ndarray]:
    """Discretised LMU matrices ``(Abar, Bbar)``, float64, in the column convention
    ``m_t = Abar @ m_{t-1} + Bbar * u_t``. ``Abar`` is (order, order); ``Bbar`` is (order, 1) as
    scipy.signal.cont2discrete returns it. ``theta`` is the window length in steps."""
    disc = parse_enum(Discretizer, discretizer, "discretizer")
    if isinstance(order, bool) or int(order) != order or order < 1:
        raise ConfigError(f"LMU order must be a positive integer, got {order}")
    if not float(theta) > 0:
        raise ConfigError(f"LMU theta must be positive, got {theta}")
    abar, bbar = _matrices(int(order), float(theta), disc)
    return abar.copy(), bbar.copy()
