"""Spoken digits: the Free Spoken Digit Dataset (real speech, shipped inside edgeseq) and a synthetic
digits corpus from espeak-ng / flite.

FSDD (``edgeseq/data/fsdd/fsdd.npz``, CC BY-SA 4.0, see the ``LICENSE`` beside it): 3,000 mono 8 kHz
recordings of the digits 0-9 by six speakers, 50 takes each, trimmed to near-minimal silence.
edgeseq keeps its native 8 kHz (nothing above 4 kHz was recorded) and uses its own 8 kHz front end
:data:`FRONT_END`: 32 log-mel bands, 30 ms windows every 20 ms (50 frames per second).

Protocols (``load_digits(split, ...)``, ``split`` one of ``train``, ``test``, ``all``):

* the dataset's own split (default): takes 0-4 of every speaker are the test set, 5-49 the training set;
* ``holdout=SPEAKER``: leave-speakers-out, train on the five other speakers, test on ``SPEAKER``;
* ``only=SPEAKER``: train on ``SPEAKER`` alone, test on the five others (the one-speaker fine-tune).

Each clip is ``clip_seconds`` long (1.5 s) with the recording (trimmed of silence more than 40 dB
below its loudest 10 ms, :attr:`FSDD.words`) placed so that it ends ``tail_seconds`` (0.2 s) before the
clip ends, zeros around it (:func:`~edgeseq.data.streams.aligned_clips`): a
streaming model announces a word just after it ends, so the clip's label is read from its last
frame. Classes: :data:`DIGITS_LABELS`, the words ``zero`` .. ``nine`` plus ``_silence_`` (the
background class a streaming model outputs between words; no clip carries it).

:func:`digit_stream` builds the continuous stream of ``edgeseq demo kws --data digits``: a speaker's
recordings among noise-only gaps at a stated SNR. :func:`synthetic_digits` synthesises the same ten
words with espeak-ng (training voices, held-out voices) or flite, resampled to 8 kHz.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import ConfigError, DatasetError
from .dataset import Dataset, check_split
from .features import LogMel

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SILENCE_LABEL = "_silence_"
DIGITS_LABELS = DIGIT_WORDS + (SILENCE_LABEL,)
SILENCE = DIGITS_LABELS.index(SILENCE_LABEL)
SAMPLE_RATE = 8000
FRONT_END = LogMel(sample_rate=SAMPLE_RATE, n_mels=32, win_length=240, hop_length=160, n_fft=256, fmin=60.0)
CLIP_SECONDS = 1.5
TAIL_SECONDS = 0.2
TRIM_DB = 40.0
TEST_TAKES = range(0, 5)  # the dataset's own split
DIGITS_SPLITS = ("train", "test", "all")
FSDD_FILE = Path(__file__).resolve().parent / "fsdd" / "fsdd.npz"
_WHERE = "edgeseq.data.digits"
_MEMBERS = ("pcm_lo", "pcm_hi", "lengths", "digit", "speaker", "take", "speakers", "info")
_MAX_SAMPLES = 64_000_000  # bound on what a dataset file may decode to (FSDD: 10.5 M samples)


@dataclass(frozen=True)
class FSDD:
    """The recordings: ``audio[i]`` float32 in [-1, 1] at 8 kHz, with ``digit``, ``speaker`` (index
    into ``speakers``) and ``take`` per recording, and the file's ``info`` (licence, speaker metadata).
    :attr:`words` are the recordings trimmed like the synthetic corpus (what edgeseq trains and tests on)."""

    audio: tuple[np.ndarray, ...]
    digit: np.ndarray
    speaker: np.ndarray
    take: np.ndarray
    speakers: tuple[str, ...]
    info: dict

    def __len__(self) -> int:
        return len(self.audio)

    @cached_property
    def words(self) -> tuple[np.ndarray, ...]:
        """Every recording with its leading / trailing parts more than :data:`TRIM_DB` below its loudest
        10 ms cut (20 ms margin kept): some recordings keep up to 0.7 s of room noise after the word, and
        a streaming model announces a word when it ends."""
        from .kws import trim_silence

        return tuple(trim_silence(a, SAMPLE_RATE, TRIM_DB) if a.any() else a for a in self.audio)

    def speaker_id(self, name: str) -> int:
        if name not in self.speakers:
            raise ConfigError(f"unknown FSDD speaker '{name}'; speakers: {', '.join(self.speakers)}", where=_WHERE)
        return self.speakers.index(name)


def fsdd(source: str | os.PathLike | None = None) -> FSDD:
    """Load FSDD: the copy shipped with edgeseq, or ``source``: another ``fsdd.npz`` or a checkout of
    the dataset's repository (a folder with ``recordings/{digit}_{speaker}_{take}.wav``)."""
    return _fsdd(str(Path(source).expanduser().resolve()) if source is not None else str(FSDD_FILE))


@lru_cache(maxsize=2)
def _fsdd(path: str) -> FSDD:
    p = Path(path)
    if p.is_dir():
        return _from_folder(p)
    import hashlib

    from ..util.safeio import read_npz

    rebuild = "reinstall edgeseq, or rebuild it with scripts/pack_fsdd.py"
    if not p.exists():
        raise DatasetError("the FSDD file is missing", where=path, hint=rebuild)
    a = read_npz(p, DatasetError, what="FSDD file", keys=_MEMBERS)  # bounded, no pickle
    missing = [m for m in _MEMBERS if m not in a]
    if missing:
        raise DatasetError(f"not an FSDD file (missing {', '.join(missing)})", where=path)
    if a["pcm_lo"].size > _MAX_SAMPLES or a["pcm_hi"].size != a["pcm_lo"].size:
        raise DatasetError("the dataset file holds more samples than edgeseq reads", where=path)
    info = json.loads(str(a["info"]))
    diff = (a["pcm_lo"].astype(np.uint16) | (a["pcm_hi"].astype(np.uint16) << 8)).view(np.int16)
    pcm = np.cumsum(diff, dtype=np.int16)  # wraps modulo 2**16 like the encoder: exact
    if hashlib.sha256(pcm.astype("<i2").tobytes()).hexdigest() != info.get("pcm_sha256"):
        raise DatasetError("decoded samples do not match the file's sha256 (corrupt file)", where=path, hint=rebuild)
    lengths = a["lengths"].astype(np.int64)
    if lengths.sum() != pcm.size or (lengths < 1).any():
        raise DatasetError("clip lengths do not add up to the samples", where=path)
    off = np.concatenate([[0], np.cumsum(lengths)])
    audio = tuple((pcm[off[i] : off[i + 1]].astype(np.float32) / 32768.0) for i in range(len(lengths)))
    return FSDD(
        audio,
        a["digit"].astype(np.int64),
        a["speaker"].astype(np.int64),
        a["take"].astype(np.int64),
        tuple(str(s) for s in a["speakers"]),
        info,
    )


def _from_folder(root: Path) -> FSDD:
    import re

    from .audio import read_wav

    pat = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
    rec = root / "recordings" if (root / "recordings").is_dir() else root
    files = sorted(f for f in rec.iterdir() if pat.match(f.name)) if rec.is_dir() else []
    if not files:
        raise DatasetError("no recordings/{digit}_{speaker}_{take}.wav files found", where=str(root))
    rows = [(pat.match(f.name), f) for f in files]
    speakers = tuple(sorted({m.group(2) for m, _ in rows}))
    audio = []
    for _, f in rows:
        x, _ = read_wav(f, sample_rate=SAMPLE_RATE, channels=1)
        audio.append(x.astype(np.float32))
    return FSDD(
        tuple(audio),
        np.array([int(m.group(1)) for m, _ in rows]),
        np.array([speakers.index(m.group(2)) for m, _ in rows]),
        np.array([int(m.group(3)) for m, _ in rows]),
        speakers,
        {"dataset": "Free Spoken Digit Dataset (FSDD)", "source": str(root), "sample_rate": SAMPLE_RATE},
    )


# --------------------------------------------------------------------------------------------
# protocols
# --------------------------------------------------------------------------------------------


def protocol_name(holdout: Optional[str] = None, only: Optional[str] = None) -> str:
    if holdout and only:
        raise ConfigError("choose one of holdout (leave one speaker out) and only (train on one speaker)", where=_WHERE)
    return f"holdout:{holdout}" if holdout else f"only:{only}" if only else "own"


def select(data: FSDD, split: str, holdout: Optional[str] = None, only: Optional[str] = None) -> np.ndarray:
    """Indices of the recordings of ``split`` under a protocol (see the module docstring)."""
    check_split(split, DIGITS_SPLITS, _WHERE)
    protocol_name(holdout, only)
    n = len(data)
    if split == "all":
        return np.arange(n)
    if holdout or only:
        spk = data.speaker_id(holdout or only)
        in_train = (data.speaker != spk) if holdout else (data.speaker == spk)
    else:
        in_train = ~np.isin(data.take, list(TEST_TAKES))
    return np.flatnonzero(in_train if split == "train" else ~in_train)


def clip_samples(
    clip_seconds: float = CLIP_SECONDS, tail_seconds: float = TAIL_SECONDS, sample_rate: int = SAMPLE_RATE
) -> tuple[int, int]:
    n, tail = int(round(clip_seconds * sample_rate)), int(round(tail_seconds * sample_rate))
    if not 0 <= tail < n:
        raise ConfigError(f"need 0 <= tail_seconds < clip_seconds, got {tail_seconds} / {clip_seconds}", where=_WHERE)
    return n, tail


def clips_dataset(
    utterances: Sequence[np.ndarray],
    y: np.ndarray,
    *,
    name: str,
    features: Any,
    meta: dict,
    groups: Optional[np.ndarray] = None,
    clip_seconds: float = CLIP_SECONDS,
    tail_seconds: float = TAIL_SECONDS,
    sample_rate: int = SAMPLE_RATE,
    labels: Sequence[str] = DIGITS_LABELS,
) -> Dataset:
    """A :class:`Dataset` of word-end-aligned clips (``features``: a LogMel/MFCC config, ``"logmel"``
    for :data:`FRONT_END`, or ``"audio"``)."""
    from .features import compute, feature_config
    from .streams import aligned_clips

    n, tail = clip_samples(clip_seconds, tail_seconds, sample_rate)
    clips = aligned_clips(utterances, n, tail)
    meta = {
        **meta,
        "sample_rate": sample_rate,
        "clip_seconds": clip_seconds,
        "tail_seconds": tail_seconds,
        "alignment": "each recording ends tail_seconds before the clip ends; zeros around it",
    }
    if isinstance(features, str) and features == "audio":
        x = clips[:, :, None]
        meta.update(features="audio", channels=["audio"], units="full scale [-1, 1]")
    else:
        fc = FRONT_END if features in (None, "logmel") else feature_config(features)
        if fc.sample_rate != sample_rate:
            raise ConfigError(
                f"the front end runs at {fc.sample_rate} Hz but the audio is {sample_rate} Hz", where=_WHERE
            )
        x = compute(clips, fc)
        meta.update(
            features=fc.to_dict(),
            frame_rate=sample_rate / fc.hop_length,
            units="natural log of mel power" if fc.kind == "logmel" else "DCT of log mel power",
        )
    return Dataset(x=x, y=y, labels=tuple(labels), name=name, meta=meta, groups=groups)


def load_digits(
    split: str = "train",
    features: Any = "logmel",
    *,
    holdout: Optional[str] = None,
    only: Optional[str] = None,
    clip_seconds: float = CLIP_SECONDS,
    tail_seconds: float = TAIL_SECONDS,
    source: str | os.PathLike | None = None,
) -> Dataset:
    """FSDD clips of ``split`` (``train``, ``test`` or ``all``) under a protocol: the dataset's own split
    (default), ``holdout=SPEAKER`` or ``only=SPEAKER``. ``groups`` holds each clip's speaker index;
    ``meta["speakers"]`` their names. ``features``: ``"logmel"`` (:data:`FRONT_END`, (N, 74, 32)), an
    MFCC/LogMel config at 8 kHz, or ``"audio"`` (N, 12000, 1)."""
    data = fsdd(source)
    idx = select(data, split, holdout, only)
    meta = {
        "dataset": "Free Spoken Digit Dataset (FSDD), real speech",
        "split": split,
        "protocol": protocol_name(holdout, only),
        "speakers": list(data.speakers),
        "speakers_in_split": sorted({data.speakers[s] for s in data.speaker[idx]}),
        "licence": "CC BY-SA 4.0",
        "synthetic": False,
    }
    return clips_dataset(
        [data.words[i] for i in idx],
        data.digit[idx],
        name="digits",
        features=features,
        meta=meta,
        groups=data.speaker[idx],
        clip_seconds=clip_seconds,
        tail_seconds=tail_seconds,
    )


# --------------------------------------------------------------------------------------------
# the demo's continuous stream
# --------------------------------------------------------------------------------------------


def digit_stream(
    seconds: float = 120.0,
    *,
    speakers: Optional[Sequence[str]] = None,
    takes: Optional[Sequence[int]] = None,
    seed: int = 0,
    snr_db: Optional[float] = 20.0,
    noise: str = "pink",
    gap_s: tuple[float, float] = (0.8, 2.5),
    source: str | os.PathLike | None = None,
) -> tuple[np.ndarray, int, list[tuple[float, float, str]]]:
    """A continuous 8 kHz stream of FSDD recordings (:attr:`FSDD.words`) of ``speakers`` (default: all) and ``takes``
    (default: all), in random order, each at a random level of -35..-15 dBFS RMS, among noise-only
    gaps of ``gap_s`` seconds, with ``noise`` at ``snr_db`` dB SNR (``None``: no noise added).
    Returns ``(audio float32 (n,), 8000, events)``, ``events`` the ``(start_s, end_s, word)`` of every
    recording placed. Deterministic in ``seed``; recordings repeat only once all were used."""
    from .kws import _rng
    from .streams import lay_out

    if seconds <= 0 or not 0 <= gap_s[0] <= gap_s[1]:
        raise ConfigError("need seconds > 0 and 0 <= gap_s[0] <= gap_s[1]", where=_WHERE)
    data = fsdd(source)
    speakers = list(data.speakers) if speakers is None else list(speakers)
    keep = np.isin(data.speaker, [data.speaker_id(s) for s in speakers])
    if takes is not None:
        keep &= np.isin(data.take, list(takes))
    pool = np.flatnonzero(keep)
    if not len(pool):
        raise ConfigError(f"no FSDD recordings of speakers {speakers} with takes {takes}", where=_WHERE)
    rng = _rng(
        0, "digits-stream", ",".join(sorted(speakers)), "all" if takes is None else str(sorted(takes)), int(seed)
    )
    total = int(round(seconds * SAMPLE_RATE))
    per = np.mean([len(data.words[i]) for i in pool]) + gap_s[0] * SAMPLE_RATE
    n = int(total // max(per, 1.0)) + 2
    order = np.concatenate([rng.permutation(pool) for _ in range(-(-n // len(pool)))])[:n]
    levels = rng.uniform(-35.0, -15.0, size=len(order))
    audio, events = lay_out(
        [data.words[i] for i in order],
        [DIGIT_WORDS[data.digit[i]] for i in order],
        levels,
        total,
        SAMPLE_RATE,
        rng,
        gap_s=gap_s,
        snr_db=snr_db,
        noise=noise,
        default_level_db=-25.0,
    )
    return audio, SAMPLE_RATE, events


# --------------------------------------------------------------------------------------------
# synthetic digits
# --------------------------------------------------------------------------------------------


def synthetic_digits(
    split: str = "train",
    n_per_digit: int = 300,
    *,
    config=None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Synthetic recordings of the ten digit words at 8 kHz: ``(audio list, digit ids)``, digit by digit.

    ``split`` picks the voices as in the synthetic keyword corpus (:mod:`edgeseq.data.kws`):
    ``train`` / ``val`` espeak-ng training voices, ``test`` held-out espeak-ng voices, ``flite`` the
    flite engine. Synthesised once and cached (16 kHz), then resampled to 8 kHz."""
    from .audio import resample
    from .kws import SAMPLE_RATE as SYNTH_RATE
    from .kws import KWSConfig, word_utterances

    got = word_utterances(
        DIGIT_WORDS, split, n_per_digit, config or KWSConfig(), cache_dir=cache_dir, progress=progress
    )
    audio, y = [], []
    for d, w in enumerate(DIGIT_WORDS):
        for u in got[w]:
            audio.append(resample(u, SYNTH_RATE, SAMPLE_RATE))
            y.append(d)
    return audio, np.array(y, dtype=np.int64)


def load_digits_synth(
    split: str = "train",
    features: Any = "logmel",
    n_per_digit: int = 100,
    *,
    clip_seconds: float = CLIP_SECONDS,
    tail_seconds: float = TAIL_SECONDS,
    progress: bool | None = None,
) -> Dataset:
    """Word-end-aligned clips of :func:`synthetic_digits` (same layout and front end as :func:`load_digits`)."""
    from .kws import KWS_SPLITS

    check_split(split, KWS_SPLITS, _WHERE)
    audio, y = synthetic_digits(split, n_per_digit, progress=progress)
    meta = {
        "dataset": "synthetic spoken digits (espeak-ng / flite)",
        "split": split,
        "synthetic": True,
        "n_per_digit": n_per_digit,
    }
    return clips_dataset(
        audio,
        y,
        name="digits_synth",
        features=features,
        meta=meta,
        clip_seconds=clip_seconds,
        tail_seconds=tail_seconds,
    )


__all__ = [
    "CLIP_SECONDS",
    "DIGITS_LABELS",
    "DIGITS_SPLITS",
    "DIGIT_WORDS",
    "FRONT_END",
    "FSDD",
    "FSDD_FILE",
    "SAMPLE_RATE",
    "SILENCE",
    "TAIL_SECONDS",
    "clips_dataset",
    "digit_stream",
    "fsdd",
    "load_digits",
    "load_digits_synth",
    "protocol_name",
    "select",
    "synthetic_digits",
]
