"""Quantizing (and QAT-fine-tuning) a model on a training task's data: one seeded split of the
training split into calibration and validation sequences, shared by ``edgeseq quantize``,
``edgeseq export --quant edgeseq``, ``edgeseq audit`` and the demos."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


def calibration_split(n: int, calib: int, val: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``calib`` calibration and ``val`` validation sequences out of ``n``: seeded and
    disjoint while ``n`` allows; with no sequence left after calibration the validation set reuses
    the first ones."""
    order = np.random.default_rng(seed).permutation(n)
    vi = order[calib : calib + val] if n > calib else order[:val]
    return order[:calib], vi


@dataclass
class TaskData:
    """The training split of a task with its calibration / validation indices."""

    task: str
    x: np.ndarray
    y: np.ndarray
    calib_idx: np.ndarray
    val_idx: np.ndarray

    @property
    def calib_x(self) -> np.ndarray:
        return self.x[self.calib_idx]

    @property
    def val(self) -> Optional[tuple[np.ndarray, np.ndarray]]:
        return (self.x[self.val_idx], self.y[self.val_idx]) if len(self.val_idx) else None

    def rest_idx(self) -> np.ndarray:
        """Every sequence but the validation ones (what fine-tuning may train on)."""
        keep = np.ones(len(self.x), bool)
        keep[self.val_idx] = False
        return np.flatnonzero(keep) if keep.any() else np.arange(len(self.x))


def task_data(
    task_name: str,
    graph,
    *,
    calib: int = 512,
    val: int = 1024,
    seed: int = 0,
    where: str = "",
    front_end: Optional[dict] = None,
) -> TaskData:
    """Load the training split of ``task_name`` (a key of ``edgeseq.train.recipes.TASKS``) for ``graph``
    and split it (:func:`calibration_split`). ``front_end``: the audio front end the model was trained
    with (its metrics' ``front_end``); one with streaming mean normalisation (``cmn_frames``), which no
    task loads by default, computes the split's features."""
    from ..data import load_dataset
    from ..errors import ConfigError, ShapeError
    from ..train.recipes import TASKS

    if task_name not in TASKS:
        raise ConfigError(
            f"unknown task '{task_name}' for calibration; choose one of: {', '.join(TASKS)}", where="--data"
        )
    if calib < 1:
        raise ConfigError("--calib must be at least 1", where="--calib")
    task = TASKS[task_name]
    kw = dict(task["kw"])
    if front_end and front_end.get("cmn_frames"):
        kw["features"] = front_end
    train = load_dataset(task["dataset"], "train", **kw)
    if train.x.shape[2] != graph.in_features:
        raise ShapeError(
            f"task '{task_name}' has {train.x.shape[2]} features per step; the model expects {graph.in_features}",
            where=where or "--data",
        )
    ci, vi = calibration_split(len(train.x), calib, max(val, 0), seed)
    return TaskData(task_name, train.x, train.y, ci, vi)


def quantize_on_task(
    graph,
    data: TaskData,
    config,
    *,
    budget: Optional[float] = 0.5,
    progress: bool = True,
    strict: bool = False,
    max_promotions: int = 8,
):
    """Quantize ``graph`` calibrated on ``data``'s calibration sequences, with the mixed-precision
    search on its validation sequences (none, or ``budget=None``: no search)."""
    from . import quantize

    vdata = data.val if budget is not None else None
    return quantize(
        graph,
        data.calib_x,
        config,
        val=vdata,
        budget=budget if vdata is not None else None,
        progress=progress,
        strict=strict,
        max_promotions=max_promotions,
    )


def qat_on_task(lm, data: TaskData, epochs: int, lr: float, *, seed: int = 0, progress: bool = True, log=print):
    """QAT-fine-tune a loaded checkpoint (``lm.module``) on ``data``; returns the re-captured graph and
    the QAT history. The input range is that of the calibration sequences; the best epoch is picked on
    the validation sequences, which QAT does not train on."""
    import torch

    from ..frontends import capture
    from .qat import QatConfig, qat_finetune

    ti = data.rest_idx()
    hist = qat_finetune(
        lm.module,
        data.x[ti],
        data.y[ti],
        QatConfig(epochs=epochs, lr=lr, seed=seed),
        val=data.val,
        calib_x=data.calib_x,
        progress=progress,
        log=log,
    )
    g = capture(lm.module.eval(), torch.zeros(1, 16, lm.graph.in_features), metadata=dict(lm.graph.metadata))
    return g, hist


def npz_calibration(path, graph, max_sequences: int = 512) -> np.ndarray:
    """Calibration sequences from an .npz holding ``x`` (or ``calib_x``) of shape (N, T, F)."""
    from ..errors import DatasetError, ShapeError
    from ..util.safeio import read_npz

    arrays = read_npz(path, DatasetError, keys=("x", "calib_x"))
    x = arrays.get("calib_x", arrays.get("x"))
    if x is None:
        raise DatasetError("the .npz holds no array 'x' (or 'calib_x') of calibration sequences", where=str(path))
    if x.ndim != 3 or x.shape[2] != graph.in_features or x.shape[0] < 1 or x.shape[1] < 1:
        raise ShapeError(
            f"calibration array has shape {x.shape}; the model needs (N, T, {graph.in_features})", where=str(path)
        )
    x = np.asarray(x[:max_sequences], dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise DatasetError("calibration array holds NaN or Inf", where=str(path))
    return x


def spike_calibration(graph, n: int = 64, steps: int = 64, rate: float = 0.2, seed: int = 0) -> np.ndarray:
    """Random 0/1 spike trains (N, T, F) at ``rate``: calibration for a spiking model with no data."""
    rng = np.random.default_rng(seed)
    return (rng.random((n, steps, graph.in_features)) < rate).astype(np.float64)
