"""Smartwatch IMU shoulder-exercise recordings shipped with ``seglearn==1.2.5``.

``seglearn/data/watch_dataset.npy``: 140 series of a wrist-worn smartwatch (50 Hz, accelerometer
ax/ay/az and gyroscope wx/wy/wz) of 10 subjects, each performing 7 shoulder physiotherapy
exercises (PEN pendulum, ABD abduction, FEL forward elevation, IR internal rotation, ER external
rotation, TRAP trapezius extension, ROW upright row) twice. The file is located without importing
seglearn (which would need scikit-learn), read with a restricted unpickler that only accepts the
numpy arrays it holds, and converted once into a pickle-free ``.npz`` under the edgeseq cache.

The split leaves whole subjects out (:data:`SMARTWATCH_TEST_SUBJECTS` by default); windows of
``window`` samples are cut on a fixed grid over each series (every window of a series carries the
series' exercise).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError, DatasetError
from .cache import NUMPY_GLOBALS, CacheDir, restricted_load
from .dataset import Dataset, check_split, sliding_windows, window_step

SMARTWATCH_LABELS = ("PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW")
SMARTWATCH_LABEL_NAMES = (
    "pendulum",
    "abduction",
    "forward elevation",
    "internal rotation",
    "external rotation",
    "trapezius extension",
    "upright row",
)
SMARTWATCH_CHANNELS = ("ax", "ay", "az", "wx", "wy", "wz")
SMARTWATCH_UNITS = ("g", "g", "g", "rad/s", "rad/s", "rad/s")
SMARTWATCH_SAMPLE_RATE = 50.0
SMARTWATCH_SUBJECTS = tuple(range(1, 11))
SMARTWATCH_TEST_SUBJECTS = (8, 9, 10)
SEGLEARN_PIP_INSTALL = "pip install --no-deps seglearn==1.2.5"
_PARSER_VERSION = 1
_WHERE = "edgeseq.data.smartwatch"


def packaged_source() -> Path:
    """Path of ``watch_dataset.npy`` inside the installed seglearn (the package is not imported)."""
    try:
        spec = importlib.util.find_spec("seglearn")
    except (ImportError, ValueError):
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(loc) / "data" / "watch_dataset.npy"
        if path.is_file():
            return path
    raise DatasetError("the seglearn smartwatch data set is not installed", where=_WHERE, hint=SEGLEARN_PIP_INSTALL)


def _read_watch_npy(path: Path) -> dict[str, np.ndarray]:
    """Parse the 0-d object ``.npy`` (a pickled dict of arrays) without executing its pickle."""
    where = str(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _fortran, dtype = np.lib.format.read_array_header_2_0(f)
            if dtype != np.dtype(object) or shape != ():
                raise DatasetError(f"expected a 0-d object array, got {dtype} {shape}", where=where)
            d = restricted_load(f, allowed=NUMPY_GLOBALS, where=where)
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read ({e})", where=where, hint=f"reinstall: {SEGLEARN_PIP_INSTALL}") from None
    if not isinstance(d, dict) or not {"X", "y", "subject"} <= set(d):
        raise DatasetError("unexpected content (expected a dict with X, y, subject)", where=where)
    series = [np.asarray(s, dtype=np.float32) for s in d["X"]]
    if any(s.ndim != 2 or s.shape[1] != len(SMARTWATCH_CHANNELS) for s in series):
        raise DatasetError("every series must be (T, 6)", where=where)
    y = np.asarray(d["y"], dtype=np.int64)
    subject = np.asarray(d["subject"], dtype=np.int64)
    side = np.asarray(d.get("side", np.zeros(len(series))), dtype=np.int64)
    if not len(series) == len(y) == len(subject) == len(side):
        raise DatasetError("X, y and subject differ in length", where=where)
    lengths = np.array([len(s) for s in series], dtype=np.int64)
    return {
        "signals": np.concatenate(series),
        "offsets": np.concatenate([[0], np.cumsum(lengths)]),
        "y": y,
        "subject": subject,
        "side": side,
    }


def smartwatch_series(
    source: str | os.PathLike | None = None, *, cache_dir: str | os.PathLike | None = None
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """All series: (list of float32 (T, 6) arrays, exercise id (S,), subject (S,))."""
    path = packaged_source() if source is None else Path(source).expanduser()
    if not path.is_file():
        raise DatasetError("smartwatch source file does not exist", where=str(path), hint=SEGLEARN_PIP_INSTALL)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    cache = CacheDir("smartwatch", {"source": "seglearn-watch", "sha256": digest, "parser": _PARSER_VERSION}, cache_dir)
    a = cache.get_or_build("series.npz", lambda: _read_watch_npy(path), source=str(path))
    off = a["offsets"]
    series = [a["signals"][off[i] : off[i + 1]] for i in range(len(off) - 1)]
    return series, a["y"], a["subject"]


def load_smartwatch(
    split: str = "train",
    window: int = 128,
    overlap: float = 0.5,
    test_subjects: Sequence[int] = SMARTWATCH_TEST_SUBJECTS,
    *,
    source: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Windows of the smartwatch exercises for ``split`` in ``{"train", "test", "all"}``.

    ``x`` (N, window, 6) float32 in g and rad/s, ``y`` the exercise (7 classes), ``groups`` the subject.
    """
    check_split(split, ("train", "test", "all"), _WHERE)
    step = window_step(window, overlap, _WHERE)
    test = {int(s) for s in test_subjects}
    if not test <= set(SMARTWATCH_SUBJECTS):
        raise ConfigError(f"test_subjects must be among {list(SMARTWATCH_SUBJECTS)}, got {sorted(test)}", where=_WHERE)
    series, y_series, subj = smartwatch_series(source, cache_dir=cache_dir)
    xs, ys, gs = [], [], []
    for s, label, subject in zip(series, y_series, subj):
        in_test = int(subject) in test
        if (split == "train" and in_test) or (split == "test" and not in_test):
            continue
        starts = sliding_windows(s, window, step)
        if not len(starts):
            continue
        xs.append(s[starts[:, None] + np.arange(window)[None, :]])
        ys.append(np.full(len(starts), label, dtype=np.int64))
        gs.append(np.full(len(starts), subject, dtype=np.int64))
    x = np.concatenate(xs) if xs else np.zeros((0, window, 6), np.float32)
    y = np.concatenate(ys) if ys else np.zeros(0, np.int64)
    g = np.concatenate(gs) if gs else np.zeros(0, np.int64)
    meta = {
        "dataset": "seglearn smartwatch shoulder exercises",
        "split": split,
        "sample_rate": SMARTWATCH_SAMPLE_RATE,
        "channels": list(SMARTWATCH_CHANNELS),
        "units": list(SMARTWATCH_UNITS),
        "label_names": list(SMARTWATCH_LABEL_NAMES),
        "window": int(window),
        "step": int(step),
        "overlap": float(overlap),
        "subjects": sorted({int(v) for v in np.unique(g)}),
        "test_subjects": sorted(test),
        "source": "seglearn==1.2.5" if source is None else str(source),
    }
    return Dataset(x=x, y=y, labels=SMARTWATCH_LABELS, name="smartwatch", meta=meta, groups=g)
