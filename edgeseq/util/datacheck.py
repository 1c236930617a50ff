"""Checks of user data arrays before any code indexes with them: sequences (N, T, F) numeric and
finite (the NaN/Inf policy of :mod:`edgeseq.util.finite`), labels (N,) integer class ids inside the
model's range. Shared by ``edgeseq validate --data``, ``edgeseq audit --data`` and the demos."""

from __future__ import annotations

from typing import Optional, Type

import numpy as np

from ..errors import DatasetError, EdgeseqError
from .finite import check_finite


def sequences(
    x, what: str, where: str, *, features: Optional[int] = None, error: Type[EdgeseqError] = DatasetError
) -> np.ndarray:
    """``x`` as float32 (N, T, F) with N, T >= 1, numeric and finite; ``features`` when given."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise error(f"{what} must be numeric, got dtype {x.dtype}", where=where)
    if x.ndim != 3 or x.shape[0] < 1 or x.shape[1] < 1 or x.shape[2] < 1:
        raise error(f"{what} must be a non-empty (N, T, F) array, got shape {x.shape}", where=where)
    if features is not None and x.shape[2] != features:
        raise error(
            f"{what} has {x.shape[2]} features per step; the model expects {features}",
            where=where,
            hint="pass data of the task the model was trained on",
        )
    check_finite(x, what, where)
    return x.astype(np.float32, copy=False)


def labels(
    y, n: int, what: str, where: str, *, n_classes: Optional[int] = None, error: Type[EdgeseqError] = DatasetError
) -> np.ndarray:
    """``y`` as int64 (n,) class ids in [0, n_classes)."""
    y = np.asarray(y)
    if y.dtype.kind not in "iub":
        if y.dtype.kind == "f" and y.size and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise error(f"{what} must be integer class ids, got dtype {y.dtype}", where=where)
    if y.shape != (n,):
        raise error(f"{what} must have shape ({n},) (one label per sequence), got {y.shape}", where=where)
    y = y.astype(np.int64)
    if y.size:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0:
            i = int(np.argmax(y < 0))
            raise error(f"{what} holds a negative class id ({y[i]} at index {i})", where=where)
        if n_classes is not None and hi >= n_classes:
            i = int(np.argmax(y >= n_classes))
            raise error(
                f"{what} holds class id {y[i]} at index {i}; the model has {n_classes} classes (0..{n_classes - 1})",
                where=where,
            )
    return y


__all__ = ["sequences", "labels"]
