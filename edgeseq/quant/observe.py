"""Statistics of quantization points and the range observers.

:class:`TensorStats` accumulates, for one point over all calibration batches and time steps:
per-channel min / max / max|x|, a uniform reservoir of rows (B, n) for percentile and MSE
searches, and per-step max|x| and RMS (how a recurrent state grows over time).

Observers turn statistics into a clipping range ``amax`` (symmetric) or ``(lo, hi)``:

- ``minmax``: the largest magnitude seen;
- ``percentile``: the p-th percentile of |x| (per tensor or per channel, from the reservoir);
- ``mse``: the clipping value minimising the mean squared quantization error of the reservoir
  for the given bit width (a grid search over fractions of the largest magnitude).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..errors import NumericsError


class TensorStats:
    """Running statistics of one quantization point (values of shape (B, n) per call)."""

    def __init__(self, n: int, reservoir: int = 8192, seed: int = 0):
        self.n = int(n)
        self.count = 0
        self.ch_min = np.full(self.n, np.inf)
        self.ch_max = np.full(self.n, -np.inf)
        self.cap = int(reservoir)
        self.rows = np.zeros((0, self.n), dtype=np.float32)
        self._rng = np.random.default_rng(seed)
        self.step_absmax: list[float] = []
        self.step_sumsq: list[float] = []
        self.step_count: list[int] = []

    def update(self, x: np.ndarray, t: int = -1) -> None:
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.n)
        if not np.all(np.isfinite(x)):
            raise NumericsError("calibration produced NaN or Inf values")
        if x.shape[0] == 0:
            return
        self.ch_min = np.minimum(self.ch_min, x.min(axis=0))
        self.ch_max = np.maximum(self.ch_max, x.max(axis=0))
        self._reservoir(x)
        self.count += x.shape[0]
        if t >= 0:
            while len(self.step_absmax) <= t:
                self.step_absmax.append(0.0)
                self.step_sumsq.append(0.0)
                self.step_count.append(0)
            self.step_absmax[t] = max(self.step_absmax[t], float(np.abs(x).max()))
            self.step_sumsq[t] += float((x * x).sum())
            self.step_count[t] += x.size

    def _reservoir(self, x: np.ndarray) -> None:
        m = x.shape[0]
        have = self.rows.shape[0]
        free = self.cap - have
        if free > 0:
            take = x[:free]
            self.rows = np.concatenate([self.rows, take.astype(np.float32)], axis=0)
            x = x[free:]
            seen = self.count + take.shape[0]
        else:
            seen = self.count
        if x.shape[0] == 0:
            return
        j = seen + np.arange(1, x.shape[0] + 1)
        r = (self._rng.random(x.shape[0]) * j).astype(np.int64)
        keep = r < self.cap
        if keep.any():
            self.rows[r[keep]] = x[keep].astype(np.float32)
        del m

    # -- summaries -----------------------------------------------------------------------------------
    @property
    def ch_absmax(self) -> np.ndarray:
        return np.maximum(np.abs(self.ch_min), np.abs(self.ch_max))

    @property
    def absmax(self) -> float:
        return float(self.ch_absmax.max()) if self.n else 0.0

    def step_rms(self) -> np.ndarray:
        c = np.maximum(np.asarray(self.step_count, dtype=np.float64), 1)
        return np.sqrt(np.asarray(self.step_sumsq) / c)

    def summary(self) -> dict:
        return {
            "n": self.n,
            "count": self.count,
            "absmax": self.absmax,
            "min": float(self.ch_min.min()) if self.count else 0.0,
            "max": float(self.ch_max.max()) if self.count else 0.0,
        }


# ----------------------------------------------------------------------------------------------
# observers


def _qdq(x: np.ndarray, amax, bits: int) -> np.ndarray:
    qmax = (1 << (bits - 1)) - 1
    s = np.maximum(np.asarray(amax, dtype=np.float64), 1e-30) / qmax
    return np.clip(np.floor(x / s + 0.5), -qmax - 1, qmax) * s


def amax_minmax(st: TensorStats, per_channel: bool = False):
    return st.ch_absmax.copy() if per_channel else st.absmax


def amax_percentile(st: TensorStats, p: float, per_channel: bool = False):
    a = np.abs(st.rows.astype(np.float64))
    if a.size == 0:
        return amax_minmax(st, per_channel)
    if per_channel:
        v = np.percentile(a, p, axis=0)
        return np.minimum(np.maximum(v, 1e-12), st.ch_absmax)
    return float(min(max(np.percentile(a, p), 1e-12), st.absmax))


def amax_mse(st: TensorStats, bits: int, per_channel: bool = False, grid: int = 64):
    """Clipping magnitude minimising E[(x - qdq(x))^2] over the reservoir."""
    x = st.rows.astype(np.float64)
    if x.size == 0:
        return amax_minmax(st, per_channel)
    if per_channel:
        return np.array([_mse_1d(x[:, c], float(st.ch_absmax[c]), bits, grid) for c in range(st.n)])
    return _mse_1d(x.ravel(), st.absmax, bits, grid)


def _mse_1d(x: np.ndarray, amax: float, bits: int, grid: int) -> float:
    if amax <= 0:
        return 1e-12
    best, best_err = amax, np.inf
    for frac in np.linspace(0.15, 1.0, grid):
        c = amax * frac
        err = float(np.mean((x - _qdq(x, c, bits)) ** 2))
        if err < best_err:
            best, best_err = c, err
    return float(best)


def observe_amax(st: TensorStats, observer: str, bits: int, per_channel: bool, percentile: float):
    """Symmetric clipping magnitude (scalar, or per channel) of a point by ``observer``."""
    if observer == "minmax":
        return amax_minmax(st, per_channel)
    if observer == "percentile":
        return amax_percentile(st, percentile, per_channel)
    if observer == "mse":
        return amax_mse(st, bits, per_channel)
    raise ValueError(observer)  # pragma: no cover - the config parses observers


def observe_range(st: TensorStats, observer: str, percentile: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (lo, hi) clipping range (asymmetric: for input offsets)."""
    if observer == "percentile" and st.rows.size:
        x = st.rows.astype(np.float64)
        lo = np.maximum(np.percentile(x, 100.0 - percentile, axis=0), st.ch_min)
        hi = np.minimum(np.percentile(x, percentile, axis=0), st.ch_max)
        return lo, hi
    return st.ch_min.copy(), st.ch_max.copy()


def resolve_alias(aliases: dict[str, str], name: str) -> str:
    """Follow ``aliases`` (value -> the point it shares) from ``name`` to a point of its own."""
    seen = set()
    while name in aliases and name not in seen:
        seen.add(name)
        name = aliases[name]
    return name


@dataclass
class CalibrationStats:
    """Everything calibration learned about a graph: per-point statistics, the declared points
    (roles), output aliases (value -> state point), and the number of sequences/steps seen."""

    points: dict[str, TensorStats] = field(default_factory=dict)
    specs: dict = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    sequences: int = 0
    steps: int = 0

    def resolve(self, name: str) -> str:
        """The point ``name`` stands for, following aliases (a window op's output is its input's)."""
        return resolve_alias(self.aliases, name)

    def __getitem__(self, name: str) -> TensorStats:
        return self.points[self.resolve(name)]

    def __contains__(self, name: str) -> bool:
        return self.resolve(name) in self.points

    def table(self) -> str:
        rows = [("point", "role", "n", "min", "max", "absmax")]
        for k, s in self.points.items():
            sp = self.specs.get(k)
            rows.append(
                (
                    k,
                    sp.role if sp else "?",
                    str(s.n),
                    f"{s.ch_min.min():.4g}",
                    f"{s.ch_max.max():.4g}",
                    f"{s.absmax:.4g}",
                )
            )
        w = [max(len(r[i]) for r in rows) for i in range(6)]
        return "\n".join("  ".join(c.ljust(x) for c, x in zip(r, w)).rstrip() for r in rows)

    def channel_ratio(self, name: str) -> Optional[np.ndarray]:
        """max|x| of each channel divided by the median channel's."""
        st = self[name]
        a = st.ch_absmax
        med = float(np.median(a))
        if med <= 0:
            return None
        return a / med
