"""The in-memory dataset every edgeseq stage consumes (the registry of named datasets is
:mod:`edgeseq.data.registry`).

A :class:`Dataset` is a batch-first array of sequences ``x`` (N, T, F) float32 in raw physical
units (g, rad/s, log-mel energies, audio samples) with integer class ids ``y`` (N,), the class
names, and JSON-able metadata (sample rate, channels, units, subjects, split, ...). Normalisation
is left to the training recipe, so a deployed model sees the same units as the sensor produces.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError, DatasetError, ShapeError
from ..util.fs import atomic_write_bytes
from .cache import canonical_json, npz_bytes, read_npz


@dataclass
class Dataset:
    """Windows/clips ``x`` (N, T, F) float32 with labels ``y`` (N,) int64 in ``0..len(labels)-1``.

    ``groups`` (optional, int64 (N,)) is the recording group of each sample (the subject for the
    IMU datasets), for leave-group-out validation. ``meta`` must stay JSON-able.
    """

    x: np.ndarray
    y: np.ndarray
    labels: tuple[str, ...]
    name: str
    meta: dict = field(default_factory=dict)
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.x = np.asarray(self.x)
        self.y = np.asarray(self.y)
        self.labels = tuple(str(s) for s in self.labels)
        where = f"dataset '{self.name}'"
        if self.x.ndim != 3:
            raise ShapeError(f"x must be (N, T, F), got shape {self.x.shape}", where=where)
        if self.x.dtype != np.float32:
            self.x = self.x.astype(np.float32)
        if self.y.ndim != 1 or self.y.shape[0] != self.x.shape[0]:
            raise ShapeError(f"y must be (N,) with N={self.x.shape[0]}, got shape {self.y.shape}", where=where)
        if self.y.dtype != np.int64:
            if not np.issubdtype(self.y.dtype, np.integer) and self.y.size:
                raise ShapeError(f"y must hold integer class ids, got {self.y.dtype}", where=where)
            self.y = self.y.astype(np.int64)
        if self.y.size and (self.y.min() < 0 or self.y.max() >= len(self.labels)):
            raise ShapeError(
                f"class ids must lie in 0..{len(self.labels) - 1}, got {self.y.min()}..{self.y.max()}", where=where
            )
        if self.groups is not None:
            self.groups = np.asarray(self.groups, dtype=np.int64)
            if self.groups.shape != self.y.shape:
                raise ShapeError(f"groups must be (N,), got {self.groups.shape}", where=where)
        try:
            canonical_json(self.meta)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"meta is not JSON-able ({e})", where=where) from None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, split={self.meta.get('split')!r}, n={len(self)}, "
            f"steps={self.steps}, in_features={self.in_features}, n_classes={self.n_classes})"
        )

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    @property
    def in_features(self) -> int:
        return int(self.x.shape[2])

    @property
    def steps(self) -> int:
        return int(self.x.shape[1])

    def subset(self, idx) -> "Dataset":
        """The samples selected by ``idx`` (index array, slice or boolean mask), in that order."""
        idx = np.arange(len(self))[idx] if isinstance(idx, slice) else np.asarray(idx)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ShapeError(f"boolean mask must have shape ({len(self)},), got {idx.shape}", where=self.name)
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64)
        return replace(
            self,
            x=self.x[idx],
            y=self.y[idx],
            meta=dict(self.meta),
            groups=None if self.groups is None else self.groups[idx],
        )

    def class_counts(self) -> dict[str, int]:
        """``{label: number of samples}`` for every class (zero counts included)."""
        counts = np.bincount(self.y, minlength=self.n_classes)
        return {lab: int(c) for lab, c in zip(self.labels, counts)}

    def stratified_split(self, fraction: float, seed: int = 0) -> tuple["Dataset", "Dataset"]:
        """Split into (rest, held) where ``held`` has ~``fraction`` of every class (seeded, disjoint)."""
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"fraction must be in (0, 1), got {fraction}", where=self.name)
        rng = np.random.default_rng(seed)
        held = []
        for c in range(self.n_classes):
            members = np.flatnonzero(self.y == c)
            k = int(round(fraction * len(members)))
            held.append(rng.permutation(members)[:k])
        mask = np.zeros(len(self), dtype=bool)
        mask[np.concatenate(held) if held else []] = True
        return self.subset(~mask), self.subset(mask)

    # persistence -----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write to an ``.npz`` file (atomically; no pickles; meta and labels as JSON)."""
        arrays = {
            "x": self.x,
            "y": self.y,
            "info": np.array(json.dumps({"labels": list(self.labels), "name": self.name, "meta": self.meta})),
        }
        if self.groups is not None:
            arrays["groups"] = self.groups
        return atomic_write_bytes(path, npz_bytes(arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Dataset":
        """Read a file written by :meth:`save`."""
        z = read_npz(path)
        try:
            info = json.loads(str(z["info"]))
            return cls(
                x=z["x"],
                y=z["y"],
                labels=tuple(info["labels"]),
                name=info["name"],
                meta=info["meta"],
                groups=z.get("groups"),
            )
        except (KeyError, ValueError, TypeError) as e:
            raise DatasetError(f"not an edgeseq dataset file ({e})", where=str(path)) from None


def sliding_windows(signal: np.ndarray, window: int, step: int) -> np.ndarray:
    """Start indices ``0, step, 2*step, ...`` of every full window of ``signal`` (length along axis 0)."""
    n = int(signal.shape[0])
    if n < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n - window + 1, step, dtype=np.int64)


def window_step(window: int, overlap: float, where: str) -> int:
    """Hop between windows for a fractional ``overlap`` in [0, 1)."""
    if not isinstance(window, (int, np.integer)) or window < 1:
        raise ConfigError(f"window must be a positive number of samples, got {window!r}", where=where)
    if not 0.0 <= float(overlap) < 1.0:
        raise ConfigError(f"overlap must be in [0, 1), got {overlap!r}", where=where)
    return max(1, int(round(window * (1.0 - float(overlap)))))


def check_split(split: str, allowed: Sequence[str], where: str) -> str:
    if split not in allowed:
        raise ConfigError(f"unknown split '{split}'; choose one of: {', '.join(allowed)}", where=where)
    return split
