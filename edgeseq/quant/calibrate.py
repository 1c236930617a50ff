"""Calibration: run the float64 step functions (reference semantics) over calibration batches and
record the statistics of every quantization point: every IR value, every state over time, and
the internal points of each cell (gate pre-activations, gates, currents, ...)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import ShapeError
from ..ir.graph import Graph
from .observe import CalibrationStats, TensorStats
from .sim import Point, simulate


class RecordingHook:
    """Identity quantizer that records statistics (values pass through unchanged)."""

    def __init__(self, stats: CalibrationStats, reservoir: int = 8192, per_step: bool = True):
        self.stats = stats
        self.reservoir = reservoir
        self.t = -1
        self.per_step = per_step

    def step(self, t: int) -> None:
        self.t = t

    def __call__(self, name: str, x: np.ndarray, point: Point) -> np.ndarray:
        x = np.asarray(x)
        st = self.stats.points.get(name)
        if st is None:
            n = x.shape[-1] if x.ndim else 1
            st = self.stats.points[name] = TensorStats(n, self.reservoir, seed=len(self.stats.points))
            self.stats.specs[name] = point
        st.update(
            np.broadcast_to(x, x.shape[:-1] + (st.n,)) if x.ndim else np.full((1, st.n), float(x)),
            self.t if self.per_step else -1,
        )
        return x

    def alias(self, name: str, target: str) -> None:
        self.stats.aliases[name] = target


def calibrate(
    graph: Graph,
    xs,
    *,
    batch_size: int = 256,
    progress: bool = False,
    stats: Optional[CalibrationStats] = None,
    reservoir: int = 8192,
    params=None,
) -> CalibrationStats:
    """Statistics of every quantization point of ``graph`` over the sequences ``xs`` (N, T, F).

    Runs batches of ``batch_size`` through :func:`edgeseq.quant.sim.simulate` with a recording
    identity hook, i.e. exactly the reference semantics. Pass ``stats`` to keep accumulating."""
    xs = np.asarray(xs)
    if xs.ndim != 3:
        raise ShapeError(f"calibration data must be (N, T, F), got shape {xs.shape}")
    stats = stats if stats is not None else CalibrationStats()
    hook = RecordingHook(stats, reservoir)
    starts = range(0, xs.shape[0], batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="calibrate", unit="batch", leave=False)
    for s in starts:
        simulate(graph, xs[s : s + batch_size], hook, params)
    stats.sequences += xs.shape[0]
    stats.steps = max(stats.steps, xs.shape[1])
    return stats
