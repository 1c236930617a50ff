"""Deterministic synthetic keyword-spotting corpus (12 classes, MLPerf-Tiny / Speech Commands style).

Classes (:data:`KWS_LABELS`): the ten keywords yes, no, up, down, left, right, on, off, stop, go,
plus ``_silence_`` (background noise only) and ``_unknown_`` (one of :data:`UNKNOWN_WORDS`).

Speech comes from two real synthesisers, run as subprocesses:

* ``espeak-ng`` for the splits ``train``, ``val`` and ``test``: English accents x voice variants
  (``-v en-gb-scotland+m3``) with random pitch ``-p``, speed ``-s`` and amplitude ``-a``. ``train``
  and ``val`` draw from :data:`TRAIN_ACCENTS` x :data:`TRAIN_VARIANTS`; ``test`` uses the held-out
  :data:`TEST_VARIANTS` (never heard in training) over all :data:`ESPEAK_ACCENTS`, two of which
  (en-029, en-us-nyc) are also never used for training;
* ``flite`` for the split ``flite``: a held-out second engine (voices kal, kal16, awb, rms, slt with
  random duration stretch), the honest generalisation number. Synthetic accuracy is not comparable
  to published Speech Commands numbers.

Each clip is 1 s of 16 kHz mono float32: the utterance (resampled with ``resample_poly`` from the
engine's rate, leading/trailing silence trimmed) at a random level and random offset, plus white,
pink or brown noise at an SNR drawn from ``snr_db`` (``None`` = clean). Every random choice is drawn
from a generator seeded by ``(seed, split, class, index)``, so clip ``i`` of a class is the same
whatever ``n_per_class`` is and on every machine with the same tool versions.

Cache: the synthesised utterances (the slow part) are stored per split and class as int16 ``.npz``
under ``<cache>/kws-<split>/<hash>/`` where the hash covers the synthesis config and the engine
version; the manifest records that key and the sha256 of every file, and a file whose hash does
not match is regenerated. Mixing with noise and feature extraction run at load time (seconds).
"""

from __future__ import annotations

import os
import re
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache, partial
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ConfigError, DatasetError
from .audio import parse_wav_bytes, resample
from .cache import CacheDir, config_hash
from .dataset import Dataset, check_split
from .features import LogMel
from .streams import NOISE_EXPONENT as _NOISE_EXPONENT
from .streams import colored_noise, lay_out
from .streams import rms as _rms

KWS_KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE_LABEL = "_silence_"
UNKNOWN_LABEL = "_unknown_"
KWS_LABELS = KWS_KEYWORDS + (SILENCE_LABEL, UNKNOWN_LABEL)
SILENCE = KWS_LABELS.index(SILENCE_LABEL)
UNKNOWN = KWS_LABELS.index(UNKNOWN_LABEL)
UNKNOWN_WORDS = (
    "bed",
    "bird",
    "cat",
    "dog",
    "happy",
    "house",
    "marvin",
    "sheila",
    "tree",
    "wow",
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "backward",
    "forward",
    "follow",
    "learn",
    "visual",
)
ESPEAK_ACCENTS = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
TRAIN_ACCENTS = ESPEAK_ACCENTS[:6]
TEST_VARIANTS = (
    "f4",
    "f5",
    "m7",
    "m8",
    "klatt4",
    "klatt5",
    "Gene2",
    "Mario",
    "RicishayMax3",
    "iven4",
    "steph3",
    "zac",
    "victor",
    "shelby",
    "sandro",
    "aunty",
)
TRAIN_VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "f1",
    "f2",
    "f3",
    "klatt2",
    "klatt3",
    "Alex",
    "Alicia",
    "Andrea",
    "Andy",
    "Annie",
    "AnxiousAndy",
    "Denis",
    "Diogo",
    "Gene",
    "Henrique",
    "Hugo",
    "Jacky",
    "Lee",
    "Marco",
    "Michael",
    "Mike",
    "Nguyen",
    "RicishayMax",
    "RicishayMax2",
    "Storm",
    "adam",
    "anika",
    "announcer",
    "antonio",
    "belinda",
    "benjamin",
    "boris",
    "caleb",
    "david",
    "ed",
    "edward",
    "edward2",
    "grandma",
    "grandpa",
    "gustave",
    "iven",
    "iven2",
    "iven3",
    "john",
    "kaukovalta",
    "linda",
    "marcelo",
    "max",
    "michel",
    "miguel",
    "norbert",
    "pablo",
    "paul",
    "pedro",
    "quincy",
    "rob",
    "robert",
    "steph",
    "steph2",
    "travis",
)
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
KWS_SPLITS = ("train", "val", "test", "flite")
SAMPLE_RATE = 16000
# the front end of keyword spotters trained to stream (edgeseq.train.stream): 40 log-mel bands, 30 ms windows
# every 20 ms (50 frames per second, half the frames of the 10 ms default)
STREAM_FRONT_END = LogMel(sample_rate=SAMPLE_RATE, n_mels=40, win_length=480, hop_length=320, n_fft=512, fmin=20.0)
_SYNTH_FORMAT = 1
_WHERE = "edgeseq.data.kws"


@dataclass(frozen=True)
class KWSConfig:
    """Generation config of the synthetic corpus (defaults: ~7.8k clips, about a minute on 2 cores).

    ``n_train``/``n_val``/``n_test``/``n_flite``: clips per class in each split. Levels are RMS in
    dBFS; ``snr_db`` entries are drawn uniformly per clip (``None`` = no noise added).
    """

    seed: int = 0
    n_train: int = 400
    n_val: int = 50
    n_test: int = 100
    n_flite: int = 100
    unknown_words: tuple[str, ...] = UNKNOWN_WORDS
    train_accents: tuple[str, ...] = TRAIN_ACCENTS
    train_variants: tuple[str, ...] = TRAIN_VARIANTS
    test_accents: tuple[str, ...] = ESPEAK_ACCENTS
    test_variants: tuple[str, ...] = TEST_VARIANTS
    flite_voices: tuple[str, ...] = FLITE_VOICES
    pitch: tuple[int, int] = (25, 75)
    speed: tuple[int, int] = (130, 200)
    amplitude: tuple[int, int] = (70, 130)
    flite_stretch: tuple[float, float] = (0.85, 1.25)
    clip_seconds: float = 1.0
    speech_dbfs: tuple[float, float] = (-32.0, -16.0)
    silence_dbfs: tuple[float, float] = (-65.0, -30.0)
    snr_db: tuple[float | None, ...] = (None, 20.0, 10.0, 5.0)
    noise_kinds: tuple[str, ...] = ("white", "pink", "brown")
    trim_db: float = 40.0

    def __post_init__(self) -> None:
        if not self.unknown_words or set(self.unknown_words) & set(KWS_KEYWORDS):
            raise ConfigError("unknown_words must be non-empty and disjoint from the keywords", where="KWSConfig")
        for name in ("n_train", "n_val", "n_test", "n_flite"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"{name} must be >= 0", where="KWSConfig")
        bad = [k for k in self.noise_kinds if k not in _NOISE_EXPONENT]
        if bad or not self.noise_kinds:
            raise ConfigError(
                f"noise kinds must be among {sorted(_NOISE_EXPONENT)}, got {list(self.noise_kinds)}", where="KWSConfig"
            )
        if not self.snr_db:
            raise ConfigError("snr_db must list at least one value (None = clean)", where="KWSConfig")
        if set(self.train_variants) & set(self.test_variants):
            raise ConfigError("train_variants and test_variants overlap", where="KWSConfig")

    @classmethod
    def tiny(cls, **kw: Any) -> "KWSConfig":
        """A small corpus for tests (a few clips per class, few voices)."""
        base = dict(
            n_train=3,
            n_val=2,
            n_test=2,
            n_flite=2,
            unknown_words=("bed", "cat", "marvin"),
            train_variants=("m1", "f2", "klatt2"),
            test_variants=("m7", "f5"),
        )
        base.update(kw)
        return cls(**base)

    def n_for(self, split: str) -> int:
        return int(getattr(self, f"n_{split}"))

    def engine(self, split: str) -> str:
        return "flite" if split == "flite" else "espeak-ng"

    def voices(self, split: str) -> tuple[str, ...]:
        """Voice specs used for ``split`` (``accent+variant`` for espeak-ng, voice names for flite)."""
        return _voices(self, split)

    def _voices(self, split: str) -> tuple[str, ...]:
        if split == "flite":
            return tuple(self.flite_voices)
        if split == "test":
            return tuple(f"{a}+{v}" for a in self.test_accents for v in self.test_variants)
        return tuple(f"{a}+{v}" for a in self.train_accents for v in self.train_variants)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def synth_key(self, split: str, engine_version: str) -> dict[str, Any]:
        """What the cached utterances of ``split`` depend on (mixing parameters excluded)."""
        return {
            "format": _SYNTH_FORMAT,
            "split": split,
            "seed": self.seed,
            "engine": self.engine(split),
            "engine_version": engine_version,
            "sample_rate": SAMPLE_RATE,
            "voices": list(self.voices(split)),
            "unknown_words": list(self.unknown_words),
            "pitch": list(self.pitch),
            "speed": list(self.speed),
            "amplitude": list(self.amplitude),
            "flite_stretch": list(self.flite_stretch),
            "trim_db": self.trim_db,
        }


@lru_cache(maxsize=64)
def _voices(config: KWSConfig, split: str) -> tuple[str, ...]:
    return config._voices(split)


# --------------------------------------------------------------------------------------------
# deterministic randomness
# --------------------------------------------------------------------------------------------


def _sid(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def _rng(*parts: int | str) -> np.random.Generator:
    ints = [p if isinstance(p, int) else _sid(p) for p in parts]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(ints)))


# --------------------------------------------------------------------------------------------
# synthesis
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Utterance:
    """One synthesis job: ``word`` spoken by ``voice`` of ``engine`` with the given prosody."""

    word: str
    engine: str
    voice: str
    pitch: int = 50
    speed: int = 175
    amplitude: int = 100
    stretch: float = 1.0

    def argv(self, exe: str) -> list[str]:
        if self.engine == "espeak-ng":
            return [
                exe,
                "-v",
                self.voice,
                "-p",
                str(self.pitch),
                "-s",
                str(self.speed),
                "-a",
                str(self.amplitude),
                "--stdout",
                self.word,
            ]
        return [
            exe,
            "-voice",
            self.voice,
            "--setf",
            f"duration_stretch={self.stretch:.3f}",
            "-t",
            self.word,
            "-o",
            "/dev/stdout",
        ]


def _tool(engine: str) -> str:
    from ..toolchains import require

    return require(engine)


def engine_version(engine: str) -> str:
    """Version of ``espeak-ng`` or ``flite``, e.g. ``"espeak-ng 1.51"`` (part of the cache key)."""
    return _engine_version(engine, _tool(engine))


@lru_cache(maxsize=8)
def _engine_version(engine: str, exe: str) -> str:
    try:
        p = subprocess.run([exe, "--version"], check=False, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DatasetError(f"cannot run {engine} --version ({e})", where=exe) from None
    text = (p.stdout + p.stderr).decode("utf-8", "replace")
    if engine == "espeak-ng":
        m = re.search(r"text-to-speech:\s*(\S+)", text)
    else:
        m = re.search(r"version:\s*(\S+)", text)
    return f"{engine} {m.group(1) if m else text.strip().splitlines()[0] if text.strip() else 'unknown'}"


def trim_silence(
    x: np.ndarray, sample_rate: int = SAMPLE_RATE, threshold_db: float = 40.0, margin_s: float = 0.02
) -> np.ndarray:
    """Cut leading/trailing parts whose 10 ms energy is ``threshold_db`` below the loudest 10 ms."""
    hop = max(1, sample_rate // 100)
    n = len(x) // hop
    if n == 0 or not np.any(x):
        return x[:0]
    e = (x[: n * hop].astype(np.float64).reshape(n, hop) ** 2).mean(axis=1)
    active = np.flatnonzero(e >= e.max() * 10.0 ** (-threshold_db / 10.0))
    margin = int(round(margin_s * sample_rate))
    start = max(0, active[0] * hop - margin)
    end = min(len(x), (active[-1] + 1) * hop + margin)
    return x[start:end]


def synthesize(utt: Utterance, *, exe: str | None = None, trim_db: float | None = 40.0) -> np.ndarray:
    """Run the engine for one utterance: float32 mono at 16 kHz, silence trimmed (if ``trim_db``)."""
    exe = exe or _tool(utt.engine)
    try:
        p = subprocess.run(utt.argv(exe), check=True, capture_output=True, timeout=60)
    except subprocess.CalledProcessError as e:
        raise DatasetError(
            f"{utt.engine} failed for {utt} ({e.stderr.decode('utf-8', 'replace').strip()})", where=exe
        ) from None
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DatasetError(f"cannot run {utt.engine} ({e})", where=exe) from None
    x, rate = parse_wav_bytes(p.stdout, where=f"{utt.engine} output for {utt.word!r}")
    x = resample(x.mean(axis=1) if x.shape[1] > 1 else x[:, 0], rate, SAMPLE_RATE)
    if trim_db is not None:
        x = trim_silence(x, SAMPLE_RATE, trim_db)
    if x.size == 0:
        raise DatasetError(f"{utt.engine} produced no audio for {utt}", where=exe)
    return x.astype(np.float32)


def utterance_for(config: KWSConfig, split: str, label: int, index: int) -> Utterance:
    """The deterministic synthesis job for clip ``index`` of class ``label`` in ``split``."""
    rng = _rng(config.seed, split, label, index, "synth")
    if label == UNKNOWN:
        word = config.unknown_words[int(rng.integers(len(config.unknown_words)))]
    elif label == SILENCE:
        raise ConfigError("the silence class has no utterance", where=_WHERE)
    else:
        word = KWS_LABELS[label]
    return _voice_and_prosody(config, split, word, rng)


def _voice_and_prosody(config: KWSConfig, split: str, word: str, rng: np.random.Generator) -> Utterance:
    voices = config.voices(split)
    voice = voices[int(rng.integers(len(voices)))]
    pitch = int(rng.integers(config.pitch[0], config.pitch[1] + 1))
    speed = int(rng.integers(config.speed[0], config.speed[1] + 1))
    amp = int(rng.integers(config.amplitude[0], config.amplitude[1] + 1))
    stretch = round(float(rng.uniform(*config.flite_stretch)), 3)
    return Utterance(word, config.engine(split), voice, pitch, speed, amp, stretch)


def _synthesize_many(
    jobs: Sequence[Utterance], *, trim_db: float, workers: int | None, progress: bool | None, desc: str
) -> list[np.ndarray]:
    from tqdm.auto import tqdm

    if not jobs:
        return []
    exes = {e: _tool(e) for e in {j.engine for j in jobs}}
    n_workers = max(1, int(workers) if workers else min(4, os.cpu_count() or 1))
    disable = None if progress is None else not progress
    out: list[np.ndarray | None] = [None] * len(jobs)
    with (
        ThreadPoolExecutor(max_workers=n_workers) as pool,
        tqdm(total=len(jobs), desc=desc, unit="utt", disable=disable, leave=False) as bar,
    ):
        futures = {pool.submit(synthesize, j, exe=exes[j.engine], trim_db=trim_db): i for i, j in enumerate(jobs)}
        for fut in futures:
            out[futures[fut]] = fut.result()
            bar.update(1)
    return out  # type: ignore[return-value]


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


# --------------------------------------------------------------------------------------------
# the utterance cache
# --------------------------------------------------------------------------------------------


def _class_file(label: int) -> str:
    return f"{KWS_LABELS[label].strip('_')}.npz"


def synth_cache(config: KWSConfig, split: str, cache_dir: str | os.PathLike | None = None) -> CacheDir:
    """The cache directory holding the utterances of ``split`` for ``config``."""
    return CacheDir(f"kws-{split}", config.synth_key(split, engine_version(config.engine(split))), cache_dir)


def utterances(
    config: KWSConfig,
    split: str,
    n: int,
    *,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool | None = None,
    classes: Sequence[int] | None = None,
) -> dict[int, list[np.ndarray]]:
    """The first ``n`` trimmed utterances (float32, 16 kHz) of every spoken class of ``split`` (or of
    ``classes``).

    Missing or corrupt class files are (re)generated; a cached file with fewer than ``n``
    utterances is extended (earlier utterances are identical by construction).
    """
    classes = [c for c in (range(len(KWS_LABELS)) if classes is None else classes) if c != SILENCE]
    got = cached_utterances(
        synth_cache(config, split, cache_dir),
        {_class_file(c): (KWS_LABELS[c], partial(utterance_for, config, split, c)) for c in classes},
        n,
        trim_db=config.trim_db,
        workers=workers,
        progress=progress,
        desc=f"kws {split} ({config.engine(split)})",
    )
    return {c: got[_class_file(c)] for c in classes}


def cached_utterances(
    cache: CacheDir,
    items: dict[str, tuple[str, Callable[[int], Utterance]]],
    n: int,
    *,
    trim_db: float,
    workers: int | None = None,
    progress: bool | None = None,
    desc: str = "synthesis",
) -> dict[str, list[np.ndarray]]:
    """The first ``n`` utterances of every item ``file name -> (label, job of index i)`` in ``cache``
    (float32, 16 kHz), synthesising what is missing, corrupt or too short (earlier utterances of an
    item are identical by construction, so a file is extended rather than rebuilt)."""
    result: dict[str, list[np.ndarray]] = {}

    def scan(names: list[str]) -> list[tuple[str, int, dict | None]]:
        todo = []
        for name in names:
            arrays = cache.get(name)
            have = 0 if arrays is None else len(arrays["offsets"]) - 1
            if have >= n:
                off = arrays["offsets"]
                result[name] = [arrays["audio"][off[i] : off[i + 1]].astype(np.float32) / 32767.0 for i in range(n)]
            else:
                todo.append((name, have, arrays))
        return todo

    todo = scan(list(items))
    if not todo:
        return result
    with cache.lock():
        todo = scan([name for name, _, _ in todo])  # another process may have generated them meanwhile
        if not todo:
            return result
        jobs, where = [], []
        for name, have, _ in todo:
            for i in range(have, n):
                jobs.append(items[name][1](i))
                where.append(name)
        audio = _synthesize_many(jobs, trim_db=trim_db, workers=workers, progress=progress, desc=desc)
        new: dict[str, list[np.ndarray]] = {name: [] for name, _, _ in todo}
        for name, x in zip(where, audio):
            new[name].append(_to_int16(x))
        for name, have, arrays in todo:
            old = (
                []
                if arrays is None
                else [arrays["audio"][arrays["offsets"][i] : arrays["offsets"][i + 1]] for i in range(have)]
            )
            items_ = old + new[name]
            jobs_c = [items[name][1](i) for i in range(n)]
            lengths = np.array([len(a) for a in items_], dtype=np.int64)
            cache.put(
                name,
                {
                    "audio": np.concatenate(items_) if items_ else np.zeros(0, np.int16),
                    "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                    "word": np.array([j.word for j in jobs_c]),
                    "voice": np.array([j.voice for j in jobs_c]),
                },
                n=n,
                label=items[name][0],
            )
            result[name] = [a.astype(np.float32) / 32767.0 for a in items_]
    return result


def word_job(config: KWSConfig, split: str, word: str, index: int) -> Utterance:
    """The deterministic synthesis job for utterance ``index`` of ``word`` (any word) in ``split``:
    a voice of the split and prosody drawn like :func:`utterance_for`, seeded by ``(seed, split, word, index)``."""
    return _voice_and_prosody(config, split, word, _rng(config.seed, split, "word", word, index, "synth"))


def word_utterances(
    words: Sequence[str],
    split: str,
    n: int,
    config: KWSConfig | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool | None = None,
) -> dict[str, list[np.ndarray]]:
    """``n`` synthetic utterances (float32, 16 kHz, trimmed) of every word in ``words`` spoken by the
    voices of ``split`` (espeak-ng training / held-out voices, or flite), cached like :func:`utterances`."""
    config = config or KWSConfig()
    check_split(split, KWS_SPLITS, _WHERE)
    if n < 1:
        raise ConfigError(f"need at least one utterance per word, got {n}", where=_WHERE)
    cache = CacheDir(f"words-{split}", config.synth_key(split, engine_version(config.engine(split))), cache_dir)
    got = cached_utterances(
        cache,
        {f"{w}.npz": (w, partial(word_job, config, split, w)) for w in words},
        n,
        trim_db=config.trim_db,
        workers=workers,
        progress=progress,
        desc=f"words {split} ({config.engine(split)})",
    )
    return {w: got[f"{w}.npz"] for w in words}


# --------------------------------------------------------------------------------------------
# mixing
# --------------------------------------------------------------------------------------------


def mix_clip(config: KWSConfig, split: str, label: int, index: int, utterance: np.ndarray | None) -> np.ndarray:
    """Clip ``index`` of class ``label``: the utterance at a random level/offset plus noise (float32)."""
    n = int(round(config.clip_seconds * SAMPLE_RATE))
    rng = _rng(config.seed, split, label, index, "mix")
    u_offset = rng.random()
    speech_db = rng.uniform(*config.speech_dbfs)
    silence_db = rng.uniform(*config.silence_dbfs)
    snr = config.snr_db[int(rng.integers(len(config.snr_db)))]
    kind = config.noise_kinds[int(rng.integers(len(config.noise_kinds)))]
    noise_rng = np.random.Generator(np.random.PCG64(rng.integers(0, 2**63)))
    clip = np.zeros(n, dtype=np.float64)
    if utterance is None:
        clip += colored_noise(kind, n, noise_rng) * 10.0 ** (silence_db / 20.0)
    else:
        u = np.asarray(utterance, dtype=np.float64)[:n]
        u = u * (10.0 ** (speech_db / 20.0) / max(_rms(u), 1e-12))
        start = int(u_offset * (n - len(u) + 1))
        clip[start : start + len(u)] = u
        if snr is not None:
            clip += colored_noise(kind, n, noise_rng) * (_rms(u) / 10.0 ** (snr / 20.0))
    return np.clip(clip, -1.0, 1.0).astype(np.float32)


def kws_clips(
    split: str,
    n_per_class: int | None = None,
    config: KWSConfig | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Audio clips of ``split``: (float32 (N, 16000), labels int64 (N,), per-clip info dicts).

    Clips are ordered class by class (label 0 first), ``n_per_class`` each.
    """
    config = config or KWSConfig()
    check_split(split, KWS_SPLITS, _WHERE)
    n = config.n_for(split) if n_per_class is None else int(n_per_class)
    if n < 1:
        raise ConfigError(f"n_per_class must be >= 1, got {n}", where=_WHERE)
    utts = utterances(config, split, n, cache_dir=cache_dir, workers=workers, progress=progress)
    from tqdm.auto import tqdm

    clips = np.zeros((n * len(KWS_LABELS), int(round(config.clip_seconds * SAMPLE_RATE))), dtype=np.float32)
    y = np.repeat(np.arange(len(KWS_LABELS), dtype=np.int64), n)
    info: list[dict[str, Any]] = []
    disable = None if progress is None else not progress
    k = 0
    for c in tqdm(range(len(KWS_LABELS)), desc=f"kws {split} mixing", disable=disable, leave=False):
        for i in range(n):
            u = None if c == SILENCE else utts[c][i]
            clips[k] = mix_clip(config, split, c, i, u)
            if c == SILENCE:
                info.append({"label": SILENCE_LABEL, "word": None, "voice": None})
            else:
                job = utterance_for(config, split, c, i)
                info.append({"label": KWS_LABELS[c], "word": job.word, "voice": job.voice})
            k += 1
    return clips, y, info


def load_kws(
    split: str = "train",
    features: str | Any = "logmel",
    n_per_class: int | None = None,
    config: KWSConfig | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool | None = None,
) -> Dataset:
    """The synthetic KWS corpus for ``split`` in ``{"train", "val", "test", "flite"}``.

    ``features``: ``"logmel"`` (N, 98, 40), ``"stream"`` (:data:`STREAM_FRONT_END`, (N, 49, 40)),
    ``"mfcc"`` (N, 98, 10), a :class:`~edgeseq.data.features.LogMel` or :class:`~edgeseq.data.features.MFCC`
    config (or its ``to_dict()`` form), or ``"audio"`` (N, 16000, 1), all float32.
    """
    from .features import compute, feature_config

    config = config or KWSConfig()
    clips, y, info = kws_clips(split, n_per_class, config, cache_dir=cache_dir, workers=workers, progress=progress)
    n = len(clips) // len(KWS_LABELS)
    meta: dict[str, Any] = {
        "dataset": "synthetic keyword spotting (espeak-ng / flite)",
        "split": split,
        "sample_rate": SAMPLE_RATE,
        "engine": config.engine(split),
        "engine_version": engine_version(config.engine(split)),
        "voices": list(config.voices(split)),
        "n_per_class": n,
        "config": config.to_dict(),
        "config_hash": config_hash(config.to_dict()),
        "clip_seconds": config.clip_seconds,
        "synthetic": True,
    }
    if isinstance(features, str) and features == "audio":
        x = clips[:, :, None]
        meta.update(features="audio", channels=["audio"], units="full scale [-1, 1]")
    else:
        if isinstance(features, str) and features == "stream":
            features = STREAM_FRONT_END
        fc = feature_config(features) if isinstance(features, (str, LogMel, dict)) else None
        if fc is None:
            raise ConfigError(
                f"features must be 'logmel', 'mfcc', 'audio' or a LogMel/MFCC config, got {features!r}", where=_WHERE
            )
        x = compute(clips, fc)
        meta.update(
            features=fc.to_dict(),
            frame_rate=SAMPLE_RATE / fc.hop_length,
            units="natural log of mel power" if fc.kind == "logmel" else "DCT of log mel power",
        )
    return Dataset(x=x, y=y, labels=KWS_LABELS, name="kws", meta=meta)


# --------------------------------------------------------------------------------------------
# continuous stream for the demo
# --------------------------------------------------------------------------------------------


def synth_stream(
    duration_s: float = 60.0,
    *,
    seed: int = 0,
    split: str = "test",
    config: KWSConfig | None = None,
    keyword_fraction: float = 0.7,
    gap_s: tuple[float, float] = (0.8, 2.5),
    snr_db: float | None = 20.0,
    noise: str = "pink",
    workers: int | None = None,
    progress: bool | None = None,
) -> tuple[np.ndarray, int, list[tuple[float, float, str]]]:
    """A continuous 16 kHz stream with keywords and unknown words among noise-only gaps.

    Returns ``(audio float32 (n,), 16000, events)``; ``events`` lists ``(start_s, end_s, label)``
    for every spoken word (``label`` is the keyword or ``"_unknown_"``), in time order. Voices come
    from ``split`` (default: the held-out test voices). Deterministic in ``seed``.
    """
    config = config or KWSConfig()
    check_split(split, KWS_SPLITS, _WHERE)
    if duration_s <= 0 or not 0.0 <= keyword_fraction <= 1.0 or not 0 <= gap_s[0] <= gap_s[1]:
        raise ConfigError("need duration_s > 0, 0 <= keyword_fraction <= 1, 0 <= gap_s[0] <= gap_s[1]", where=_WHERE)
    rng = _rng(config.seed, "stream", split, int(seed))
    total = int(round(duration_s * SAMPLE_RATE))
    plan: list[tuple[int, int, float]] = []  # (label, job index seed, level)
    jobs: list[Utterance] = []
    t = rng.uniform(*gap_s)
    est = 0.7  # seconds per word, only for planning; actual lengths are used for placement
    while t + est < duration_s:
        label = int(rng.integers(len(KWS_KEYWORDS))) if rng.random() < keyword_fraction else UNKNOWN
        idx = int(rng.integers(2**31))
        jobs.append(utterance_for(config, split, label, 1_000_000 + idx))
        plan.append((label, idx, float(rng.uniform(*config.speech_dbfs))))
        t += est + rng.uniform(*gap_s)
    audio_u = _synthesize_many(jobs, trim_db=config.trim_db, workers=workers, progress=progress, desc="kws stream")
    audio, events = lay_out(
        audio_u,
        [KWS_LABELS[label] for label, _, _ in plan],
        [lv for _, _, lv in plan],
        total,
        SAMPLE_RATE,
        rng,
        gap_s=gap_s,
        snr_db=snr_db,
        noise=noise,
        default_level_db=float(np.mean(config.speech_dbfs)),
    )
    return audio, SAMPLE_RATE, events


__all__ = [
    "KWS_KEYWORDS",
    "KWS_LABELS",
    "STREAM_FRONT_END",
    "SILENCE_LABEL",
    "UNKNOWN_LABEL",
    "UNKNOWN_WORDS",
    "ESPEAK_ACCENTS",
    "TRAIN_ACCENTS",
    "TRAIN_VARIANTS",
    "TEST_VARIANTS",
    "FLITE_VOICES",
    "KWS_SPLITS",
    "KWSConfig",
    "Utterance",
    "cached_utterances",
    "colored_noise",
    "engine_version",
    "kws_clips",
    "load_kws",
    "mix_clip",
    "synth_cache",
    "synth_stream",
    "synthesize",
    "trim_silence",
    "utterance_for",
    "utterances",
    "word_job",
    "word_utterances",
]
