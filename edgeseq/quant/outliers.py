"""Outlier channels: detection, SmoothQuant-style scale migration, and splitting to int16.

An activation has *outlier channels* when a few channels' ranges are far larger than the typical
channel's (raw sensor inputs with an offset, a few large hidden units): with one per-tensor scale,
every other channel then gets only a handful of integer levels.

- :func:`detect_outliers` reports the channels whose max|x| exceeds ``threshold`` times the median
  channel's, with their ratios.
- Scale migration (SmoothQuant, Xiao et al. 2023): with per-channel factors
  ``s_c = amax_c^alpha / wmax_c^(1 - alpha)`` the activation is divided by s and the consuming
  weight columns multiplied by s. In the integer program this is exactly a per-channel activation
  scale ``S * s_c`` that the consumer's matvec absorbs into its weight columns before per-row weight
  quantization (:func:`smooth_scales`); the producer's per-channel requantization multiplier (or
  the per-channel input quantizer) produces it for free. alpha = 1 is a plain per-channel
  activation scale; alpha = 0 puts the whole burden on the activation.
- Splitting: the outlier channels travel in a separate int16 vector (the plan's ``split``), the
  rest stay int8; the consumer's matvec becomes two terms.

:func:`outlier_report` runs detection over every activation of a calibrated graph.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..ir import ops as O
from ..ir.cells import has_step_program, step_program
from ..ir.graph import Graph
from ..ir.step.analysis import input_matrices
from .observe import CalibrationStats, TensorStats


def detect_outliers(st: TensorStats, threshold: float) -> dict:
    """Channels whose max|x| is more than ``threshold`` times the median channel's."""
    a = st.ch_absmax
    med = float(np.median(a)) if a.size else 0.0
    if med <= 0 or a.size < 2:
        return {"channels": [], "ratios": [], "median_absmax": med, "max_ratio": 0.0}
    r = a / med
    ch = [int(c) for c in np.nonzero(r > threshold)[0]]
    return {"channels": ch, "ratios": [float(r[c]) for c in ch], "median_absmax": med, "max_ratio": float(r.max())}


def consumer_matrices(graph: Graph, value: str) -> list[np.ndarray]:
    """Every weight matrix (out, in) that multiplies ``value`` in its consumers."""
    mats: list[np.ndarray] = []
    for node in graph.consumers().get(value, []):
        op = node.op
        if isinstance(op, O.Linear):
            mats.append(np.asarray(op.weight, np.float64))
        elif isinstance(op, O.Conv1d):
            if op.groups == 1:
                mats.append(np.abs(np.asarray(op.weight, np.float64)).max(axis=2))
        elif has_step_program(op):
            prog = step_program(op, graph.type_of(node.inputs[0]).features)
            mats += [np.asarray(prog.params[w], np.float64) for w in input_matrices(prog) or ()]
    return mats


def consumer_column_max(graph: Graph, value: str, n: int) -> np.ndarray:
    """max |W[:, c]| over every consuming matrix, per input channel c (ones if none)."""
    mats = consumer_matrices(graph, value)
    if not mats:
        return np.ones(n)
    return np.max(np.stack([np.abs(m).max(axis=0) for m in mats]), axis=0)


def smooth_factors(amax: np.ndarray, wmax: np.ndarray, alpha: float) -> np.ndarray:
    """SmoothQuant factors s_c = amax_c^alpha / wmax_c^(1-alpha) (normalised to max 1)."""
    a = np.maximum(np.asarray(amax, np.float64), 1e-12)
    w = np.maximum(np.asarray(wmax, np.float64), 1e-12)
    s = a**alpha / w ** (1.0 - alpha)
    return s / s.max()


def smooth_scales(amax: np.ndarray, wmax: np.ndarray, alpha: float, bits: int) -> np.ndarray:
    """Per-channel activation scales S * s_c after migration: the smoothed activation x / s uses
    the full ``bits`` range with one scale S."""
    s = smooth_factors(amax, wmax, alpha)
    qm = (1 << (bits - 1)) - 1
    big = float(np.max(np.maximum(amax, 1e-12) / s))
    return (big / qm) * s


def outlier_report(
    graph: Graph, stats: CalibrationStats, threshold: float = 6.0, values_only: bool = True
) -> dict[str, dict]:
    """Outlier channels of every calibrated activation (IR values; all points with
    ``values_only=False``): {name: {'channels', 'ratios', 'median_absmax', 'max_ratio'}}."""
    names = set(graph.value_types) if values_only else set(stats.points)
    out = {}
    for name in sorted(names):
        if name not in stats:
            continue
        rep = detect_outliers(stats[name], threshold)
        if rep["channels"]:
            out[name] = rep
    return out


def format_report(report: dict[str, dict]) -> str:
    if not report:
        return "no outlier channels"
    lines = []
    for k, r in report.items():
        chans = ", ".join(f"{c} ({x:.1f}x)" for c, x in zip(r["channels"], r["ratios"]))
        lines.append(f"{k}: {chans}; median channel max|x| = {r['median_absmax']:.4g}")
    return "\n".join(lines)


def split_channels(st: TensorStats, threshold: float) -> Optional[list[int]]:
    ch = detect_outliers(st, threshold)["channels"]
    return ch or None
