"""Continuous audio streams of spoken words, for streaming keyword spotting.

Two uses of the same idea (utterances placed among noise-only gaps, with their times known):

* :func:`lay_out`: a long evaluation stream (the ``edgeseq demo kws`` audio) with the ground-truth
  events ``(start_s, end_s, label)``;
* :func:`training_sequences`: short randomised training sequences with a class target for every
  feature frame, for models that run on one continuous state (:mod:`edgeseq.train.stream`).

Frame targets: a word occupying samples ``[a, b)`` ends in frame ``e``, the first frame whose window
reaches sample ``b``. Frames ``[e - pre, e + post)`` are labelled with the word's class (the model is
asked to announce the word just after it ends, and for ``post`` frames), a few frames before that are
ignored (``IGNORE``: the word may or may not be over), every other frame is labelled with the
background class, the inside of the word included: a model that guessed a word from its beginning
("s..." of six or seven) would fire early and wrongly on a stream. A fixed-length clip whose word ends ``tail`` seconds before its end (see
:func:`aligned_clips`) is then classified by the output of its last frame.

Augmentation of the training sequences (all drawn from the given generator): speed (resampling by
a factor, which moves tempo and pitch together), level (RMS in dBFS per word), gap lengths and time
placement, and white / pink / brown background noise at a random SNR (or a quiet noise floor, or
digital silence), drawn from one bank of noise per colour and call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..errors import ConfigError

IGNORE = -100  # frame target ignored by the loss (torch's cross-entropy ignore_index)
NOISE_BANK = 16  # training_sequences draws each sequence's noise from banks this many sequences long
NOISE_EXPONENT = {"white": 0.0, "pink": 1.0, "brown": 2.0}


def colored_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise of ``n`` samples with power spectrum ~ 1/f^a (white a=0, pink a=1, brown a=2)."""
    if kind not in NOISE_EXPONENT:
        raise ConfigError(f"unknown noise kind '{kind}'; choose {', '.join(NOISE_EXPONENT)}", where="noise")
    white = rng.standard_normal(n)
    a = NOISE_EXPONENT[kind]
    if a == 0.0:
        x = white
    else:
        spec = np.fft.rfft(white)
        f = np.arange(spec.size, dtype=np.float64)
        f[0] = 1.0
        spec = spec / f ** (a / 2.0)
        spec[0] = 0.0
        x = np.fft.irfft(spec, n=n)
    x = x - x.mean()
    r = np.sqrt(np.mean(x * x))
    return (x / r if r > 0 else x).astype(np.float64)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def lay_out(
    utterances: Sequence[np.ndarray],
    labels: Sequence[str],
    levels_db: Sequence[float],
    total: int,
    sample_rate: int,
    rng: np.random.Generator,
    *,
    gap_s: tuple[float, float],
    snr_db: Optional[float],
    noise: str,
    default_level_db: float,
) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """Place ``utterances`` one after another in a stream of ``total`` samples, each scaled to its RMS
    level ``levels_db`` (dBFS), separated by gaps drawn uniformly from ``gap_s`` seconds (one before
    the first word too); words that no longer fit are dropped. ``snr_db`` adds ``noise`` (white, pink
    or brown) at that SNR relative to the mean word RMS (``default_level_db`` when no word fits).

    Returns ``(float32 audio clipped to [-1, 1], events)`` with ``events`` ``(start_s, end_s, label)``."""
    out = np.zeros(int(total), dtype=np.float64)
    events: list[tuple[float, float, str]] = []
    speech_rms = []
    pos = int(rng.uniform(*gap_s) * sample_rate)
    for u, label, level in zip(utterances, labels, levels_db):
        if pos + len(u) > total:
            break
        u = np.asarray(u, dtype=np.float64) * (10.0 ** (level / 20.0) / max(rms(u), 1e-12))
        out[pos : pos + len(u)] += u
        speech_rms.append(rms(u))
        events.append((pos / sample_rate, (pos + len(u)) / sample_rate, str(label)))
        pos += len(u) + int(rng.uniform(*gap_s) * sample_rate)
    if snr_db is not None:
        ref = float(np.mean(speech_rms)) if speech_rms else 10.0 ** (default_level_db / 20.0)
        noise_rng = np.random.Generator(np.random.PCG64(rng.integers(0, 2**63)))
        out += colored_noise(noise, int(total), noise_rng) * (ref / 10.0 ** (snr_db / 20.0))
    return np.clip(out, -1.0, 1.0).astype(np.float32), events


# --------------------------------------------------------------------------------------------
# fixed-length clips aligned on the end of the word
# --------------------------------------------------------------------------------------------


def aligned_clips(utterances: Sequence[np.ndarray], n_samples: int, tail_samples: int) -> np.ndarray:
    """(N, n_samples) float32 clips, each utterance placed so that it ends ``tail_samples`` before
    the clip's end (zeros around it); an utterance longer than the room loses its beginning."""
    if not 0 <= tail_samples < n_samples:
        raise ConfigError(f"the tail ({tail_samples} samples) must be shorter than the clip ({n_samples})")
    room = n_samples - tail_samples
    out = np.zeros((len(utterances), n_samples), dtype=np.float32)
    for i, u in enumerate(utterances):
        u = np.asarray(u, dtype=np.float32)[-room:]
        out[i, room - len(u) : room] = u
    return out


# --------------------------------------------------------------------------------------------
# training sequences with frame targets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SequenceConfig:
    """How :func:`training_sequences` builds its randomised sequences (seconds, dBFS, dB)."""

    seconds: float = 3.0
    gap_s: tuple[float, float] = (0.15, 1.2)
    speech_dbfs: tuple[float, float] = (-50.0, -14.0)
    snr_db: tuple[Optional[float], ...] = (None, 30.0, 20.0, 15.0, 10.0, 5.0)
    noise_kinds: tuple[str, ...] = ("white", "pink", "brown")
    floor_dbfs: tuple[float, float] = (-80.0, -50.0)  # the quiet noise floor of half the clean sequences
    speed: tuple[float, float] = (0.85, 1.15)
    pre_s: float = 0.04
    post_s: float = 0.4

    def __post_init__(self) -> None:
        if self.seconds <= 0 or not 0 <= self.gap_s[0] <= self.gap_s[1]:
            raise ConfigError("need seconds > 0 and 0 <= gap_s[0] <= gap_s[1]", where="SequenceConfig")
        if not 0 < self.speed[0] <= self.speed[1]:
            raise ConfigError("speed factors must be positive", where="SequenceConfig")
        if self.pre_s < 0 or self.post_s <= 0 or not self.snr_db or not self.noise_kinds:
            raise ConfigError("need pre_s >= 0, post_s > 0 and at least one SNR and noise kind", where="SequenceConfig")


def change_speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``x`` ``factor`` times faster (linear interpolation; tempo and pitch move together)."""
    if factor == 1.0 or x.size < 2:
        return np.asarray(x, dtype=np.float32)
    n = max(2, int(round(x.size / factor)))
    return np.interp(np.linspace(0.0, x.size - 1, n), np.arange(x.size), x).astype(np.float32)


def word_end_frame(end_sample: int, win: int, hop: int) -> int:
    """The first frame (windows ``[k*hop, k*hop + win)``) whose window reaches sample ``end_sample``."""
    return max(0, -(-(int(end_sample) - win) // hop))


def frame_targets(
    words: Sequence[tuple[int, int, int]],
    n_frames: int,
    win: int,
    hop: int,
    background: int,
    pre: int,
    post: int,
    guard: int = 3,
) -> np.ndarray:
    """Per-frame class targets (int64 (n_frames,)) for words ``(start_sample, end_sample, class)``: the
    word's class on frames ``[e - pre, e + post)`` around its end frame ``e``, no target on the ``guard``
    frames before that (where the word may or may not be over), background everywhere else, inside the
    word too (a word is announced when it is complete, never guessed from its beginning)."""
    t = np.full(n_frames, background, dtype=np.int64)
    for _, b, _ in words:
        e = word_end_frame(b, win, hop)
        t[max(0, e - pre - guard) : max(0, min(n_frames, e - pre))] = IGNORE
    for _, b, c in words:
        e = word_end_frame(b, win, hop)
        t[max(0, e - pre) : max(0, min(n_frames, e + post))] = c
    return t


def training_sequences(
    audio: Sequence[np.ndarray],
    labels: np.ndarray,
    n: int,
    cfg: SequenceConfig,
    sample_rate: int,
    win: int,
    hop: int,
    background: int,
    rng: np.random.Generator,
    order: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random sequences of ``cfg.seconds`` built from the utterances ``audio`` (float32 at
    ``sample_rate``) with class ``labels``: (audio float32 (n, samples), frame targets int64 (n, frames)).

    Utterances are drawn in ``order`` (indices, cycled; default a random permutation), so one pass
    over the pool uses every utterance about once."""
    total = int(round(cfg.seconds * sample_rate))
    n_frames = 0 if total < win else 1 + (total - win) // hop
    pre, post = int(round(cfg.pre_s * sample_rate / hop)), max(1, int(round(cfg.post_s * sample_rate / hop)))
    order = rng.permutation(len(audio)) if order is None else np.asarray(order)
    if not len(order):
        raise ConfigError("the utterance pool is empty")
    # one bank of each noise colour per call; every sequence takes a random stretch of it
    bank_rng = np.random.Generator(np.random.PCG64(rng.integers(0, 2**63)))
    banks = {kind: colored_noise(kind, NOISE_BANK * total, bank_rng) for kind in cfg.noise_kinds}
    xs = np.zeros((n, total), dtype=np.float32)
    ts = np.zeros((n, n_frames), dtype=np.int64)
    k = 0
    for i in range(n):
        x = np.zeros(total, dtype=np.float64)
        words = []
        levels = []
        pos = int(rng.uniform(0.0, cfg.gap_s[1]) * sample_rate)
        while True:
            j = int(order[k % len(order)])
            u = change_speed(audio[j], float(rng.uniform(*cfg.speed)))
            if len(u) >= total:  # never fits: skip it
                k += 1
                continue
            if pos + len(u) > total:
                break
            k += 1
            level = float(rng.uniform(*cfg.speech_dbfs))
            u = u.astype(np.float64) * (10.0 ** (level / 20.0) / max(rms(u), 1e-12))
            x[pos : pos + len(u)] += u
            words.append((pos, pos + len(u), int(labels[j])))
            levels.append(rms(u))
            pos += len(u) + int(rng.uniform(*cfg.gap_s) * sample_rate)
        snr = cfg.snr_db[int(rng.integers(len(cfg.snr_db)))]
        kind = cfg.noise_kinds[int(rng.integers(len(cfg.noise_kinds)))]
        off = int(rng.integers(0, (NOISE_BANK - 1) * total))
        noise = banks[kind][off : off + total]
        if snr is not None:
            ref = float(np.mean(levels)) if levels else 10.0 ** (np.mean(cfg.speech_dbfs) / 20.0)
            x += noise * (ref / 10.0 ** (snr / 20.0))
        elif rng.random() < 0.5:
            x += noise * 10.0 ** (rng.uniform(*cfg.floor_dbfs) / 20.0)
        xs[i] = np.clip(x, -1.0, 1.0)
        ts[i] = frame_targets(words, n_frames, win, hop, background, pre, post)
    return xs, ts


__all__ = [
    "IGNORE",
    "NOISE_EXPONENT",
    "SequenceConfig",
    "aligned_clips",
    "change_speed",
    "colored_noise",
    "frame_targets",
    "lay_out",
    "rms",
    "training_sequences",
    "word_end_frame",
]
