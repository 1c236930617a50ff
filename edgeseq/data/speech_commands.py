"""Loader for a real Google Speech Commands (v2) directory, mapped to the 12 KWS classes.

Layout expected under ``root``: one folder per word holding 16 kHz mono 16-bit wavs,
``validation_list.txt`` and ``testing_list.txt`` (paths like ``yes/0a7c2a8d_nohash_0.wav``) and
``_background_noise_/`` with long noise recordings.

* the ten keywords (:data:`~edgeseq.data.kws.KWS_KEYWORDS`) keep their class;
* every other word folder (not starting with ``_``) is ``_unknown_``;
* ``_silence_`` clips are 1 s segments cut from ``_background_noise_`` on a 1 s grid; each
  segment goes to one split only (by a hash of file name and segment index: ~80/10/10), and
  is scaled by a random gain (seeded per segment) between -30 and 0 dB;
* ``split``: ``"test"`` = files in ``testing_list.txt``, ``"validation"`` = files in
  ``validation_list.txt``, ``"train"`` = all others.

Clips shorter than 1 s are zero-padded at the end, longer ones truncated. Classes are kept with
their natural sizes (``_unknown_`` is the largest); pass ``max_per_class`` to cap them.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DatasetError
from .audio import read_wav
from .dataset import Dataset
from .kws import KWS_KEYWORDS, KWS_LABELS, SILENCE, UNKNOWN

SC_SPLITS = ("train", "validation", "test")
SAMPLE_RATE = 16000
_WHERE = "edgeseq.data.speech_commands"


def _read_list(path: Path) -> set[str]:
    if not path.is_file():
        raise DatasetError(
            "split list is missing",
            where=str(path),
            hint="the Speech Commands v2 archive ships validation_list.txt and testing_list.txt",
        )
    return {ln.strip().replace("\\", "/") for ln in path.read_text("utf-8").splitlines() if ln.strip()}


def _segment_split(name: str, index: int) -> str:
    h = zlib.crc32(f"{name}:{index}".encode()) % 10
    return "validation" if h == 0 else "test" if h == 1 else "train"


def speech_commands_files(root: str | os.PathLike, split: str = "train") -> tuple[list[Path], np.ndarray]:
    """Word clips of ``split``: (wav paths, 12-class label ids), sorted by path."""
    root = Path(root).expanduser()
    if split == "val":
        split = "validation"
    if split not in SC_SPLITS:
        raise ConfigError(f"unknown split '{split}'; choose one of: {', '.join(SC_SPLITS)}", where=_WHERE)
    if not root.is_dir():
        raise DatasetError(
            "Speech Commands directory does not exist",
            where=str(root),
            hint="download and extract speech_commands_v0.02.tar.gz, then pass its folder",
        )
    words = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    missing = [k for k in KWS_KEYWORDS if k not in words]
    if missing:
        raise DatasetError(
            f"keyword folders missing: {', '.join(missing)}",
            where=str(root),
            hint="pass the extracted Speech Commands v2 folder (it holds yes/, no/, ..., go/)",
        )
    val = _read_list(root / "validation_list.txt")
    test = _read_list(root / "testing_list.txt")
    paths, labels = [], []
    for w in words:
        label = KWS_LABELS.index(w) if w in KWS_KEYWORDS else UNKNOWN
        for f in sorted((root / w).glob("*.wav")):
            rel = f"{w}/{f.name}"
            s = "test" if rel in test else "validation" if rel in val else "train"
            if s == split:
                paths.append(f)
                labels.append(label)
    return paths, np.asarray(labels, dtype=np.int64)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    if len(x) >= n:
        return x[:n]
    out = np.zeros(n, dtype=np.float32)
    out[: len(x)] = x
    return out


def _silence_clips(root: Path, split: str, limit: int | None, seed: int) -> np.ndarray:
    noise_dir = root / "_background_noise_"
    if not noise_dir.is_dir():
        raise DatasetError("_background_noise_ folder is missing (needed for the _silence_ class)", where=str(root))
    clips = []
    for f in sorted(noise_dir.glob("*.wav")):
        x, _ = read_wav(f, sample_rate=SAMPLE_RATE, channels=1)
        for i in range(len(x) // SAMPLE_RATE):
            if _segment_split(f.name, i) != split:
                continue
            rng = np.random.default_rng([seed, zlib.crc32(f.name.encode()), i])
            gain = 10.0 ** (rng.uniform(-30.0, 0.0) / 20.0)
            clips.append((x[i * SAMPLE_RATE : (i + 1) * SAMPLE_RATE] * gain).astype(np.float32))
    if not clips:
        raise DatasetError(f"no 1 s background-noise segments fall into split '{split}'", where=str(noise_dir))
    arr = np.stack(clips)
    if limit is not None and len(arr) > limit:
        arr = arr[np.sort(np.random.default_rng(seed).choice(len(arr), limit, replace=False))]
    return arr


def load_speech_commands(
    root: str | os.PathLike,
    split: str = "train",
    features: str | Any = "logmel",
    *,
    max_per_class: int | None = None,
    n_silence: int | None = None,
    seed: int = 0,
    progress: bool | None = None,
) -> Dataset:
    """Speech Commands v2 as a 12-class :class:`~edgeseq.data.dataset.Dataset`.

    ``features`` as in :func:`~edgeseq.data.kws.load_kws` (``"logmel"``, ``"mfcc"``, a config, or
    ``"audio"``). ``n_silence``: number of silence clips (default: the mean keyword-class size,
    capped by the available segments). ``max_per_class`` caps every class (seeded subsample).
    """
    from tqdm.auto import tqdm

    from .features import LogMel, compute, feature_config

    root = Path(root).expanduser()
    split = "validation" if split == "val" else split
    paths, labels = speech_commands_files(root, split)
    rng = np.random.default_rng(seed)
    if max_per_class is not None:
        keep = []
        for c in range(len(KWS_LABELS)):
            idx = np.flatnonzero(labels == c)
            keep.append(np.sort(rng.choice(idx, max_per_class, replace=False)) if len(idx) > max_per_class else idx)
        sel = np.sort(np.concatenate(keep))
        paths, labels = [paths[i] for i in sel], labels[sel]
    audio = np.zeros((len(paths), SAMPLE_RATE), dtype=np.float32)
    disable = None if progress is None else not progress
    for i, p in enumerate(tqdm(paths, desc=f"speech commands {split}", unit="wav", disable=disable, leave=False)):
        x, _ = read_wav(p, sample_rate=SAMPLE_RATE, channels=1)
        audio[i] = _fit(x, SAMPLE_RATE)
    kw_counts = [int((labels == c).sum()) for c in range(len(KWS_KEYWORDS))]
    if n_silence is None:
        n_silence = max(1, int(round(np.mean(kw_counts))))
    if max_per_class is not None:
        n_silence = min(n_silence, max_per_class)
    silence = _silence_clips(root, split, n_silence, seed) if n_silence > 0 else np.zeros((0, SAMPLE_RATE), np.float32)
    audio = np.concatenate([audio, silence])
    labels = np.concatenate([labels, np.full(len(silence), SILENCE, dtype=np.int64)])
    meta: dict[str, Any] = {
        "dataset": "Google Speech Commands v2",
        "split": split,
        "root": str(root),
        "sample_rate": SAMPLE_RATE,
        "n_files": len(paths),
        "n_silence": int(len(silence)),
    }
    if isinstance(features, str) and features == "audio":
        x = audio[:, :, None]
        meta.update(features="audio", units="full scale [-1, 1]")
    elif isinstance(features, (str, LogMel)):
        fc = feature_config(features)
        x = compute(audio, fc)
        meta.update(features=fc.to_dict(), frame_rate=SAMPLE_RATE / fc.hop_length)
    else:
        raise ConfigError(
            f"features must be 'logmel', 'mfcc', 'audio' or a LogMel/MFCC config, got {features!r}", where=_WHERE
        )
    return Dataset(x=x, y=labels, labels=KWS_LABELS, name="speech_commands", meta=meta)
