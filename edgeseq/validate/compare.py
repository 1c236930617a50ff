"""Agreement metrics between an artifact's outputs and the reference's, and named checks."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

PASS, FAIL, SKIP = "pass", "fail", "skip"


@dataclass
class Check:
    """One named check: ``status`` pass | fail | skip, the measured ``value`` and its ``limit``."""

    name: str
    status: str
    value: Optional[float] = None
    limit: Optional[float] = None
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def line(self) -> str:
        if self.value is None:
            return f"{self.name}: {self.detail}" if self.detail else self.name
        rel = "<=" if self.status != FAIL else ">"
        lim = f" {rel} {self.limit:.3g}" if self.limit is not None else ""
        if self.name.endswith(("agreement", "accuracy")) and self.limit is not None:
            rel = ">=" if self.status != FAIL else "<"
            lim = f" {rel} {self.limit:.4g}"
        return f"{self.name} = {self.value:.4g}{lim}" + (f" ({self.detail})" if self.detail else "")

    def to_dict(self) -> dict:
        return asdict(self)


def upper(name: str, value: float, limit: float, detail: str = "") -> Check:
    ok = bool(np.isfinite(value)) and value <= limit
    return Check(name, PASS if ok else FAIL, float(value), float(limit), detail)


def lower(name: str, value: float, limit: float, detail: str = "") -> Check:
    ok = bool(np.isfinite(value)) and value >= limit
    return Check(name, PASS if ok else FAIL, float(value), float(limit), detail)


def output_metrics(got: np.ndarray, ref: np.ndarray, temporal: bool, spikes: bool, lsb=None) -> dict:
    """Agreement of one output (artifact ``got`` vs reference ``ref``, same shape).

    ``lsb``: the output's quantisation step (a scalar or one per feature) for outputs on an integer
    grid; adds the error in LSB units (``max_lsb_error``, ``mean_lsb_error``) and the number of
    values off the reference grid point (``lsb_mismatches``). An error within the float32 rounding
    of the values involved counts as a whole number of LSBs (a float32 output ``q * scale`` carries
    that rounding; the integer it stands for does not)."""
    f32 = np.asarray(got).dtype == np.float32 or np.asarray(ref).dtype == np.float32
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        return {
            "shape_artifact": list(got.shape),
            "shape_reference": list(ref.shape),
            "max_abs_error": float("inf"),
            "mean_abs_error": float("inf"),
            "max_rel_error": float("inf"),
        }
    diff = np.abs(got - ref)
    diff = np.where(np.isnan(diff), np.inf, diff)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    m: dict = {
        "shape": list(got.shape),
        "max_abs_error": float(diff.max()) if diff.size else 0.0,
        "mean_abs_error": float(diff.mean()) if diff.size else 0.0,
        "max_rel_error": float(diff.max() / scale) if diff.size and scale > 0 else float(diff.max(initial=0.0)),
        "reference_max_abs": scale,
    }
    lsb_err = None
    if lsb is not None and diff.size:
        step = np.broadcast_to(np.asarray(lsb, np.float64).reshape(-1), got.shape[-1:])
        lsb_err = diff / step
        if f32:  # float32 rounding of q * scale, on either side, is below this many LSBs
            noise = (np.abs(got) + np.abs(ref)) / step * 2.0**-22
            near = np.rint(lsb_err)
            lsb_err = np.where(np.abs(lsb_err - near) <= noise, near, lsb_err)
        m["lsb"] = float(step[0]) if np.all(step == step[0]) else step.tolist()
        m["max_lsb_error"] = float(lsb_err.max())
        m["mean_lsb_error"] = float(lsb_err.mean())
        m["lsb_mismatches"] = int(np.count_nonzero(lsb_err))
    if temporal and got.ndim == 3:
        m["error_per_step"] = diff.max(axis=(0, 2)).tolist()
    if spikes:  # firing pattern, and the amplitude of graded spikes where both fire
        fa, fr = got != 0, ref != 0
        same = fa == fr
        m["spike_mismatches"] = int(np.count_nonzero(~same))
        m["spike_agreement"] = float(same.mean()) if same.size else 1.0
        m["spikes_artifact"] = int(np.count_nonzero(fa))
        m["spikes_reference"] = int(np.count_nonzero(fr))
        both = fa & fr
        m["spike_amplitude_max_abs_error"] = float(diff[both].max()) if both.any() else 0.0
        if lsb_err is not None:
            m["spike_amplitude_max_lsb_error"] = float(lsb_err[both].max()) if both.any() else 0.0
    if not temporal and got.ndim == 2 and got.shape[1] > 1:
        a, r = got.argmax(axis=1), ref.argmax(axis=1)
        m["decision_agreement"] = float(np.mean(a == r))
        m["decision_mismatches"] = int(np.count_nonzero(a != r))
    return m


def decision_output(types) -> Optional[int]:
    """Index of the graph output that carries the model's decision: the last pooled output with
    more than one feature (class scores), else None."""
    idx = [k for k, t in enumerate(types) if not t.temporal and t.features > 1]
    return idx[-1] if idx else None


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(scores).argmax(axis=1) == np.asarray(labels)))
