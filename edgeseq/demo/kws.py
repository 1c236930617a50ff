"""``edgeseq demo kws``: keyword spotting on a continuous audio stream, on an (emulated) Cortex-M4.

1. the shipped KWS model (or ``--model``): 12 classes, the ten keywords plus ``_silence_`` and
   ``_unknown_``, trained on 1 s clips of 98 log-mel frames;
2. the outlier-aware int8 plan of :mod:`edgeseq.quant`, calibrated on training clips;
3. ``edgeseq.export(..., target="cortex-m4")``: firmware for QEMU's mps2-an386 board;
4. a continuous 16 kHz stream: by default synthetic and deterministic
   (:func:`edgeseq.data.kws.synth_stream`): the keywords among unknown words and background noise
   at known times, spoken by voices never used in training (held-out espeak-ng voice variants and
   accents, or the held-out engine flite with ``--engine flite``); or ``--input FILE.wav``, a
   user's own recording (``--truth`` adds its word labels);
5. log-mel features computed frame by frame as the audio arrives (:class:`StreamingFeatures`);
   every hop (250 ms) a decision on the last second: the device keeps ``window / hop`` staggered
   state slots, each reset and then stepped once per 10 ms frame through its streaming step API
   (``esq_reset`` + one ``esq_step`` per frame) -- here every window is streamed frame by frame
   from a reset state, windows batched per device call, with a live terminal view;
6. detection: posterior smoothing, threshold and refractory suppression; detections are matched to
   the ground truth (hits, misses, false accepts, false accepts per hour, per keyword);
7. a report (``demo.json`` + self-contained ``report.html``): timeline and posterior plots,
   device-vs-reference agreement, instructions per frame and per inference, flash / RAM.
"""

from __future__ import annotations

import math
import struct
import sys
import time
import wave
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import ConfigError, DatasetError
from .har import _batched, _check_toolchains, _dir_bytes, _have, _jsonable, _mcu_sizes, _softmax

SAMPLE_RATE = 16000
TARGETS = ("x86", "arm", "cortex-m4")
OWNER = "edgeseq demo kws"  # marks its --out as this demo's own (replaced without --force)
ENGINES = {"espeak-ng": "test", "flite": "flite"}  # engine -> corpus split of held-out voices
RUNNERS = {"x86": "native x86", "arm": "qemu-aarch64", "cortex-m4": "qemu-system-arm (mps2-an386)"}
ENVELOPE_HOP_S = 0.05


@dataclass
class KwsDemoConfig:
    model: str = "kws_lmu"
    target: str = "cortex-m4"
    out: str = "runs/demo-kws"
    input: Optional[str] = None  # a 16 kHz mono 16-bit PCM WAV instead of the synthetic stream
    truth: Optional[str] = None  # word labels of --input (Audacity label track: start, end, label)
    seconds: float = 120.0  # length of the synthetic stream
    engine: str = "espeak-ng"  # held-out voices of espeak-ng, or the held-out engine flite
    snr_db: Optional[float] = 20.0  # background noise of the synthetic stream (None: clean)
    seed: int = 0
    live: bool = True
    quant: str = "edgeseq"  # "edgeseq" (outlier-aware int8), "naive", or "float"
    calib: int = 512
    hop_ms: int = 250  # a decision every hop; window / hop state slots
    chunk: int = 32  # windows per device call (the view refreshes after each)
    threshold: float = 0.6
    smooth: int = 2  # windows averaged (causally) before thresholding
    refractory_s: float = 1.0
    tolerance_s: float = 0.5
    force: bool = False


# ------------------------------------------------------------------------------------------ input


def read_wav_16k(path) -> np.ndarray:
    """A user's recording as float32 (n,) in [-1, 1]; it must be 16 kHz mono 16-bit PCM WAV.

    Anything else raises :class:`DatasetError` naming the file and the ``sox`` command that converts it."""
    from ..util.safeio import Budget, human, open_regular

    p = Path(path)
    fix = f"convert it with: sox {p} -r 16000 -c 1 -b 16 {p.with_name(p.stem + '_16k.wav')}"
    f, size = open_regular(p, DatasetError, "WAV file")
    budget = Budget.for_kind("data")
    if size > budget.total:
        f.close()
        raise DatasetError(f"the WAV file is {human(size)}, more than {budget.limit_text()} allows", where=str(p))
    try:
        w = wave.open(f, "rb")
    except (wave.Error, EOFError, ValueError, struct.error, OverflowError, RuntimeError) as e:
        f.close()  # (the wave module raises RuntimeError for a chunk size that runs past the end of the file)
        raise DatasetError(f"not a 16-bit PCM WAV file ({str(e) or 'chunk sizes run past the end of the file'})",
                           where=str(p), hint=fix) from None
    except OSError as e:
        f.close()
        raise DatasetError(f"cannot read ({e.strerror})", where=str(p)) from None
    with f, w:
        ch, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
        problems = []
        if rate != SAMPLE_RATE:
            problems.append(f"sample rate {rate} Hz")
        if ch != 1:
            problems.append(f"{ch} channels")
        if width != 2:
            problems.append(f"{8 * width}-bit samples")
        if problems:
            raise DatasetError(f"{', '.join(problems)}; the KWS demo needs 16 kHz mono 16-bit PCM", where=str(p),
                               hint=fix)
        try:
            raw = w.readframes(min(n, size // 2 + 1))  # a header may declare more frames than the file holds
        except (wave.Error, EOFError, OSError, ValueError, struct.error) as e:
            raise DatasetError(f"truncated or corrupt WAV data ({e})", where=str(p), hint=fix) from None
    x = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    if x.size < SAMPLE_RATE:
        raise DatasetError(f"the recording is {x.size / SAMPLE_RATE:.2f} s long; at least 1 s is needed", where=str(p))
    return x


def read_truth(path) -> list[tuple[float, float, str]]:
    """Word labels of a recording: one ``start end label`` per line (seconds; tab-, comma- or
    space-separated, as an Audacity label track exports them). Returns events sorted by start."""
    from ..util.safeio import MiB, read_text

    p = Path(path)
    lines = read_text(p, DatasetError, max_bytes=16 * MiB, what="label file").splitlines()
    events = []
    for k, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#") or s.startswith("\\"):
            continue
        parts = [t for t in (s.split("\t") if "\t" in s else s.replace(",", " ").split()) if t.strip()]
        try:
            start, end, label = float(parts[0]), float(parts[1]), parts[2].strip().lower()
        except (IndexError, ValueError):
            raise DatasetError(f"line {k}: expected 'start end label' (seconds), got {s!r}", where=str(p)) from None
        if not (math.isfinite(start) and math.isfinite(end) and 0 <= start <= end):
            raise DatasetError(f"line {k}: need 0 <= start <= end, got {start} .. {end}", where=str(p))
        events.append((start, end, label))
    return sorted(events)


# -------------------------------------------------------------------------------------- streaming


@dataclass(frozen=True)
class WindowPlan:
    """Decision windows over the feature frames: window ``i`` is frames ``[i*hop, i*hop + frames)``,
    i.e. audio ``[i*hop_s, i*hop_s + window_s)``, decided when its last frame is complete."""

    frames: int = 98  # frames per window (the model's training clip)
    hop: int = 25  # frames between decisions
    frame_hop: int = 160  # samples per frame hop
    frame_len: int = 400  # samples per frame
    sample_rate: int = SAMPLE_RATE

    @property
    def hop_s(self) -> float:
        return self.hop * self.frame_hop / self.sample_rate

    @property
    def window_s(self) -> float:
        return ((self.frames - 1) * self.frame_hop + self.frame_len) / self.sample_rate

    @property
    def slots(self) -> int:
        """State slots a device needs to decide every hop on overlapping windows."""
        return math.ceil(self.frames / self.hop)

    def count(self, n_frames: int) -> int:
        return 0 if n_frames < self.frames else 1 + (n_frames - self.frames) // self.hop

    def start_s(self, i) -> Any:
        return np.asarray(i) * self.hop_s

    def end_s(self, i) -> Any:
        return self.start_s(i) + self.window_s

    def centre_s(self, i) -> Any:
        return self.start_s(i) + self.window_s / 2


def stream_features(audio: np.ndarray, config, block: int) -> np.ndarray:
    """Features of ``audio`` computed as it arrives, ``block`` samples at a time (frame by frame:
    :class:`~edgeseq.data.features.StreamingFeatures` emits each frame once its samples are in)."""
    from ..data.features import StreamingFeatures

    sf = StreamingFeatures(config)
    parts = [sf.push(audio[i:i + block]) for i in range(0, len(audio), block)]
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, sf.config.n_features), np.float32)


def windows_of(features: np.ndarray, plan: WindowPlan) -> np.ndarray:
    """(W, frames, F) windows, one per decision."""
    n = plan.count(len(features))
    idx = np.arange(n)[:, None] * plan.hop + np.arange(plan.frames)[None, :]
    return features[idx].astype(np.float32)


# -------------------------------------------------------------------------------------- detection


@dataclass
class Detection:
    keyword: str
    time_s: float  # the time the smoothed score refers to (mean centre of the averaged windows)
    decision_s: float  # when the device could report it (end of the last window)
    confidence: float
    window: int


class Detector:
    """Causal posterior smoothing + threshold + refractory suppression over per-window posteriors.

    A window's score is the mean of the last ``smooth`` posteriors; it fires for keyword ``k`` when
    ``k`` is the top class of the smoothed posterior and its score is at least ``threshold``, unless
    a detection fired less than ``refractory_s`` before."""

    def __init__(self, labels: Sequence[str], keywords: Sequence[str], plan: WindowPlan, *, threshold: float = 0.6,
                 smooth: int = 2, refractory_s: float = 1.0):
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(f"the detection threshold must be in (0, 1], got {threshold}")
        if int(smooth) < 1:
            raise ConfigError(f"smooth must be >= 1 window, got {smooth}")
        if refractory_s < 0:
            raise ConfigError(f"the refractory time must be >= 0 s, got {refractory_s}")
        self.labels = list(labels)
        self.keyword_ids = {self.labels.index(k) for k in keywords}
        self.plan, self.threshold, self.smooth, self.refractory_s = plan, float(threshold), int(smooth), refractory_s
        self._recent: deque = deque(maxlen=self.smooth)
        self._last: Optional[float] = None

    def push(self, window: int, posterior: np.ndarray) -> tuple[np.ndarray, float, Optional[Detection]]:
        """Add window ``window``'s posterior: (smoothed posterior, its time, detection or None)."""
        self._recent.append((window, np.asarray(posterior, dtype=np.float64)))
        score = np.mean([p for _, p in self._recent], axis=0)
        t = float(np.mean([self.plan.centre_s(i) for i, _ in self._recent]))
        k = int(np.argmax(score))
        det = None
        if k in self.keyword_ids and score[k] >= self.threshold and (
                self._last is None or t - self._last >= self.refractory_s):
            det = Detection(self.labels[k], round(t, 4), round(float(self.plan.end_s(window)), 4),
                            round(float(score[k]), 4), int(window))
            self._last = t
        return score, t, det


def detect(posteriors: np.ndarray, labels, keywords, plan: WindowPlan, **kw) -> tuple[np.ndarray, np.ndarray,
                                                                                        list[Detection]]:
    """Run a :class:`Detector` over all windows: (smoothed posteriors (W, C), their times (W,), detections)."""
    d = Detector(labels, keywords, plan, **kw)
    scores, times, dets = [], [], []
    for i, p in enumerate(posteriors):
        s, t, det = d.push(i, p)
        scores.append(s)
        times.append(t)
        if det is not None:
            dets.append(det)
    c = len(labels)
    return (np.array(scores).reshape(-1, c), np.array(times, dtype=np.float64), dets)


# ---------------------------------------------------------------------------------------- scoring

FA_KINDS = ("wrong keyword", "unknown word", "background", "duplicate")


class Scorer:
    """Matches detections (in time order) to ground-truth word events ``(start_s, end_s, label)``.

    A detection of keyword ``k`` at time ``t`` is a hit when an event of ``k`` not yet matched spans
    ``t`` within ``tolerance_s`` (``start - tol <= t <= end + tol``; of several, the one ending
    first, which matches as many detections as possible). Otherwise it is a false accept, of kind
    ``duplicate`` (the keyword was already detected), ``wrong keyword`` (another keyword was
    spoken), ``unknown word`` (a non-keyword was spoken) or ``background`` (noise only). Keyword
    events never matched are misses (false rejects)."""

    def __init__(self, events: Sequence[tuple[float, float, str]], keywords: Sequence[str], tolerance_s: float = 0.5):
        if tolerance_s < 0:
            raise ConfigError(f"the matching tolerance must be >= 0 s, got {tolerance_s}")
        self.events = [(float(a), float(b), str(c)) for a, b, c in events]
        self.keywords = list(keywords)
        self.tol = float(tolerance_s)
        self.matched: list[Optional[int]] = [None] * len(self.events)  # event -> detection number
        self.outcomes: list[dict] = []

    def add(self, keyword: str, time_s: float) -> dict:
        """Score one detection (call in time order); returns {"outcome", "event"}."""
        near = [j for j, (a, b, _) in enumerate(self.events) if a - self.tol <= time_s <= b + self.tol]
        same = [j for j in near if self.events[j][2] == keyword]
        free = [j for j in same if self.matched[j] is None]
        if free:
            j = min(free, key=lambda j: (self.events[j][1], j))  # earliest-ending: a maximum matching in time order
            self.matched[j] = len(self.outcomes)
            res = {"outcome": "hit", "event": j}
        elif same:
            res = {"outcome": "duplicate", "event": same[0]}
        else:
            kw = [j for j in near if self.events[j][2] in self.keywords]
            other = [j for j in near if self.events[j][2] not in self.keywords]
            pick = kw or other
            kind = "wrong keyword" if kw else ("unknown word" if other else "background")
            j = min(pick, key=lambda j: abs(time_s - 0.5 * (self.events[j][0] + self.events[j][1]))) if pick else None
            res = {"outcome": kind, "event": j}
        self.outcomes.append(res)
        return res

    @property
    def hits(self) -> int:
        return sum(o["outcome"] == "hit" for o in self.outcomes)

    @property
    def false_accepts(self) -> int:
        return sum(o["outcome"] != "hit" for o in self.outcomes)

    def keyword_events(self) -> list[int]:
        return [j for j, e in enumerate(self.events) if e[2] in self.keywords]

    def summary(self, seconds: float, detected_keywords: Sequence[str]) -> dict:
        """Totals and per-keyword rows; ``detected_keywords``: the keyword of each added detection."""
        kws = self.keyword_events()
        misses = [j for j in kws if self.matched[j] is None]
        kinds = {k: sum(o["outcome"] == k for o in self.outcomes) for k in FA_KINDS}
        fa = self.false_accepts
        rows = []
        for k in self.keywords:
            occ = [j for j in kws if self.events[j][2] == k]
            hit = sum(self.matched[j] is not None for j in occ)
            fa_k = sum(o["outcome"] != "hit" for o, d in zip(self.outcomes, detected_keywords) if d == k)
            rows.append({"keyword": k, "spoken": len(occ), "hits": hit, "misses": len(occ) - hit,
                         "false_accepts": fa_k, "hit_rate": hit / len(occ) if occ else None})
        return {
            "keywords_spoken": len(kws), "unknown_words_spoken": len(self.events) - len(kws),
            "detections": len(self.outcomes), "hits": self.hits, "misses": len(misses), "false_accepts": fa,
            "hit_rate": self.hits / len(kws) if kws else None,
            "false_reject_rate": len(misses) / len(kws) if kws else None,
            "precision": self.hits / len(self.outcomes) if self.outcomes else None,
            "false_accepts_per_hour": false_accepts_per_hour(fa, seconds),
            "false_accept_kinds": kinds, "missed_events": misses, "per_keyword": rows,
            "tolerance_s": self.tol,
        }


def false_accepts_per_hour(count: int, seconds: float) -> Optional[float]:
    return None if seconds <= 0 else count * 3600.0 / seconds


def match_detections(detections: Sequence[Detection], events, keywords, tolerance_s: float = 0.5,
                     seconds: Optional[float] = None) -> tuple[list[dict], dict]:
    """Score ``detections`` against ``events``: (per-detection outcomes, :meth:`Scorer.summary`)."""
    sc = Scorer(events, keywords, tolerance_s)
    dets = sorted(detections, key=lambda d: d.time_s)
    outs = [sc.add(d.keyword, d.time_s) for d in dets]
    span = seconds if seconds is not None else max([e[1] for e in sc.events] + [d.time_s for d in dets] + [0.0])
    return outs, sc.summary(span, [d.keyword for d in dets])


# ------------------------------------------------------------------------------------------- demo


def _check_config(cfg: KwsDemoConfig) -> None:
    if cfg.target not in TARGETS:
        raise ConfigError(f"unknown demo target '{cfg.target}'; choose one of: {', '.join(TARGETS)}")
    if cfg.quant not in ("edgeseq", "naive", "float"):
        raise ConfigError(f"--quant must be edgeseq, naive or float, got '{cfg.quant}'")
    if cfg.engine not in ENGINES:
        raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got '{cfg.engine}'")
    if cfg.input is None and not (2.0 <= cfg.seconds <= 3600.0):
        raise ConfigError(f"--seconds must be between 2 and 3600, got {cfg.seconds:g}")
    if cfg.truth and not cfg.input:
        raise ConfigError("--truth labels a recording given with --input")
    if cfg.hop_ms <= 0 or cfg.hop_ms % 10 or cfg.hop_ms > 1000:
        raise ConfigError(f"--hop-ms must be a multiple of 10 ms between 10 and 1000, got {cfg.hop_ms}")
    if cfg.chunk < 1:
        raise ConfigError(f"--chunk must be >= 1, got {cfg.chunk}")
    Detector(["k"], ["k"], WindowPlan(), threshold=cfg.threshold, smooth=cfg.smooth, refractory_s=cfg.refractory_s)
    Scorer([], [], cfg.tolerance_s)


def run_kws_demo(cfg: KwsDemoConfig, stream=None) -> dict:
    """Run the demo; writes ``demo.json`` and ``report.html`` (and the artifact) under ``cfg.out``.

    The whole output is staged and moved into place when the demo finishes (an interrupted or killed
    demo leaves the previous one intact); a previous output of this demo is replaced without ``force``."""
    from ..util.fs import output_dir

    with output_dir(cfg.out, cfg.force, owner=OWNER) as out:
        return _run_kws_demo(cfg, stream, out)


def _run_kws_demo(cfg: KwsDemoConfig, stream, out: Path) -> dict:
    from ..export import export as export_artifact
    from ..data.features import LogMel, compute
    from ..data.kws import KWS_LABELS, KWSConfig, synth_stream
    from ..ir.interpret import run as ref_run
    from ..models import load_model
    from ..toolchains import require
    from ..util.fs import atomic_write_json
    from .live import LiveView, bar

    stream = stream or sys.stderr
    say = (lambda m: print(m, file=stream, flush=True))
    _check_config(cfg)
    _check_toolchains(cfg.target)
    if cfg.input:  # a user's recording is checked before anything slow happens
        user_audio = read_wav_16k(cfg.input)
        user_events = read_truth(cfg.truth) if cfg.truth else None
    else:
        require(cfg.engine)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    # 1. model ------------------------------------------------------------------------------
    lm = load_model(cfg.model)
    graph = lm.graph
    feat = LogMel()
    n_out = graph.output_types[0].features
    if graph.in_features != feat.n_features:
        raise ConfigError(f"model '{cfg.model}' takes {graph.in_features} input features; the KWS demo streams "
                          f"{feat.n_features} log-mel bands")
    labels = list(lm.labels) or (list(KWS_LABELS) if n_out == len(KWS_LABELS) else [])
    if len(labels) != n_out:
        raise ConfigError(f"model '{cfg.model}' has {n_out} outputs but {len(labels)} labels; the KWS demo needs "
                          f"the 12 keyword-spotting classes ({', '.join(KWS_LABELS)})")
    keywords = [k for k in labels if not k.startswith("_")]
    if not keywords:
        raise ConfigError(f"model '{cfg.model}' has no keyword classes (labels: {', '.join(labels)})")
    n_params = lm.metrics.get("parameters") or graph.num_params()  # trained parameters, as recorded at training
    say(f"model   {lm.name}: {n_params:,} parameters ({', '.join(n.op.kind for n in graph.nodes)})")

    # 2. audio ------------------------------------------------------------------------------
    t = time.perf_counter()
    corpus = KWSConfig()
    if cfg.input:
        audio, events = user_audio, user_events
        source = f"{cfg.input} ({audio.size / SAMPLE_RATE:.1f} s at 16 kHz)" + (
            f", word labels from {cfg.truth}" if cfg.truth else ", unlabelled")
        held_out = None
    else:
        split = ENGINES[cfg.engine]
        say(f"audio   synthesising a {cfg.seconds:g} s stream ({cfg.engine}, held-out voices, seed {cfg.seed})")
        audio, _, events = synth_stream(cfg.seconds, seed=cfg.seed, split=split, config=corpus, snr_db=cfg.snr_db,
                                        progress=False)
        if cfg.engine == "flite":
            held_out = f"flite voices {', '.join(corpus.flite_voices)} (an engine never used in training)"
        else:
            new_accents = [a for a in corpus.test_accents if a not in corpus.train_accents]
            held_out = (f"espeak-ng voice variants {', '.join(corpus.test_variants)} (never used in training) over "
                        f"the accents {', '.join(corpus.test_accents)}"
                        + (f" ({', '.join(new_accents)} never used in training either)" if new_accents else ""))
        source = (f"synthetic stream, {cfg.seconds:g} s, {cfg.engine} held-out voices, seed {cfg.seed}, "
                  + (f"pink noise at {cfg.snr_db:g} dB SNR" if cfg.snr_db is not None else "no added noise"))
    if not cfg.input:
        from ..data.audio import write_wav

        write_wav(out / "stream.wav", audio, SAMPLE_RATE)
    seconds = audio.size / SAMPLE_RATE
    timings["audio_s"] = time.perf_counter() - t

    # 3. features, frame by frame, and the decision windows ----------------------------------
    t = time.perf_counter()
    frames = feat.n_frames(int(round(corpus.clip_seconds * SAMPLE_RATE)))
    hop_frames = int(cfg.hop_ms * SAMPLE_RATE / 1000) // feat.hop_length
    plan = WindowPlan(frames=frames, hop=hop_frames, frame_hop=feat.hop_length, frame_len=feat.win_length)
    block = hop_frames * feat.hop_length
    features = stream_features(audio, feat, block)
    batch_equal = bool(np.array_equal(features, compute(audio, feat)))
    x = windows_of(features, plan)
    if len(x) == 0:
        raise DatasetError(f"the audio is {seconds:.2f} s long; one decision window needs {plan.window_s:.2f} s",
                           where=cfg.input or "stream")
    timings["features_s"] = time.perf_counter() - t
    say(f"stream  {source}")
    say(f"        {len(features)} log-mel frames computed as the audio arrives ({block} samples per push; equal to "
        f"batch features: {'yes' if batch_equal else 'NO'}); {len(x)} windows of {frames} frames, one every "
        f"{plan.hop_s * 1000:.0f} ms ({plan.slots} state slots)")

    # 4. float reference + quantization -------------------------------------------------------
    t = time.perf_counter()
    float_logits = _batched(lambda a: ref_run(graph, a.astype(np.float64))[0][0], x)
    timings["float_reference_s"] = time.perf_counter() - t
    q = None
    int_logits = None
    plan_summary = None
    if cfg.quant != "float":
        t = time.perf_counter()
        q, plan_summary = _quantize(graph, cfg, say)
        int_logits = _batched(lambda a: q.run(a, mode="int")[0][0], x)
        timings["quantize_s"] = time.perf_counter() - t

    # 5. export -------------------------------------------------------------------------------
    t = time.perf_counter()
    art_dir = out / "artifact"
    say(f"export  {cfg.target} -> {Path(cfg.out) / 'artifact'}")
    art = export_artifact(q if q is not None else graph, target=cfg.target, out=art_dir, force=True,
                            golden_input=x[:2], progress=lambda m: say(f"        {m}"))
    device = art.parts["c"] if art.kind == "bundle" else art
    timings["export_s"] = time.perf_counter() - t

    # 6. stream through the device -------------------------------------------------------------
    t = time.perf_counter()
    runner = RUNNERS[cfg.target]
    view = LiveView(stream, live=cfg.live)
    det_kw = dict(threshold=cfg.threshold, smooth=cfg.smooth, refractory_s=cfg.refractory_s)
    detector = Detector(labels, keywords, plan, **det_kw)
    scorer = Scorer(events, keywords, cfg.tolerance_s) if events is not None else None
    dev_logits = np.zeros((len(x), len(labels)), np.float32)
    live_dets: list[str] = []
    n_dets = 0
    for i in range(0, len(x), cfg.chunk):
        xc = x[i:i + cfg.chunk]
        outs = device.impl.run(xc, mode="step")
        dev_logits[i:i + len(xc)] = np.asarray(outs[0])
        post = _softmax(dev_logits[i:i + len(xc)].astype(np.float64))
        for r in range(len(xc)):
            _, _, det = detector.push(i + r, post[r])
            if det is None:
                continue
            n_dets += 1
            mark = ""
            if scorer is not None:
                o = scorer.add(det.keyword, det.time_s)["outcome"]
                mark = " (hit)" if o == "hit" else " (false accept)"
            live_dets.append(f"{det.keyword}@{det.time_s:.1f}s{mark}")
        j = i + len(xc) - 1
        top = int(post[-1].argmax())
        now_s = float(plan.end_s(j))
        tally = ""
        if scorer is not None:
            spoken = sum(1 for a, b, lab in scorer.events if lab in keywords and b <= now_s)
            tally = f"   hits {scorer.hits}, false accepts {scorer.false_accepts}, keywords spoken so far {spoken}"
        view.update([
            f"device  {runner}  {bar((j + 1) / len(x))} {j + 1}/{len(x)} windows  ({now_s:.1f} s of {seconds:.1f} s "
            f"audio)",
            f"  now: {labels[top]:<10} confidence {post[-1][top]:5.1%}   (window {plan.start_s(j):.2f}-{now_s:.2f} s)",
            f"  detections {n_dets}: {', '.join(live_dets[-5:]) or '-'}{tally}",
        ], force_log=(j + 1 == len(x)))
    view.close()
    timings["device_stream_s"] = time.perf_counter() - t

    # 7. detections from the device, scored; the same rule on the reference -------------------
    dev_post = _softmax(dev_logits.astype(np.float64))
    smoothed, score_t, dets = detect(dev_post, labels, keywords, plan, **det_kw)
    ref_logits = int_logits if int_logits is not None else float_logits
    _, _, ref_dets = detect(_softmax(ref_logits.astype(np.float64)), labels, keywords, plan, **det_kw)
    same_dets = [(d.keyword, d.window) for d in dets] == [(d.keyword, d.window) for d in ref_dets]
    agreement = float((dev_logits.argmax(-1) == ref_logits.argmax(-1)).mean())
    max_err = float(np.max(np.abs(dev_logits - ref_logits)))
    float_dets = None
    if int_logits is not None:
        _, _, fd = detect(_softmax(float_logits.astype(np.float64)), labels, keywords, plan, **det_kw)
        float_dets = fd
    metrics = None
    det_rows = [asdict(d) for d in dets]
    if events is not None:
        outcomes, metrics = match_detections(dets, events, keywords, cfg.tolerance_s, seconds)
        for row, o in zip(det_rows, outcomes):
            row["outcome"] = o["outcome"]
            row["truth"] = None if o["event"] is None else events[o["event"]][2]
        latency = [d.decision_s - events[o["event"]][1] for d, o in zip(dets, outcomes) if o["outcome"] == "hit"]
        metrics["decision_latency_s"] = {"median": float(np.median(latency)) if latency else None,
                                         "max": float(np.max(latency)) if latency else None,
                                         "note": "time from the end of the spoken keyword to the end of the window "
                                                 "that fired"}
        if float_dets is not None:
            metrics["float_reference"] = {k: v for k, v in match_detections(
                float_dets, events, keywords, cfg.tolerance_s, seconds)[1].items()
                if k in ("hits", "misses", "false_accepts", "false_accepts_per_hour", "hit_rate")}
        say(f"result  {metrics['hits']}/{metrics['keywords_spoken']} keywords detected, {metrics['misses']} missed, "
            f"{metrics['false_accepts']} false accepts ({metrics['false_accepts_per_hour']:.0f} per hour) over "
            f"{seconds:.0f} s")
    else:
        say(f"result  {len(dets)} detections over {seconds:.0f} s (no word labels: pass --truth to score them)")
    say(f"device  decisions equal to the {'integer' if q is not None else 'float'} reference on {agreement:.2%} of "
        f"windows (max logit difference {max_err:.3g}); detections identical: {'yes' if same_dets else 'NO'}")

    # 8. cost + sizes ------------------------------------------------------------------------
    t = time.perf_counter()
    cost = device.impl.cost(x[:2])
    sizes = {"artifact_bytes": _dir_bytes(art_dir), "device_binary_bytes": device.impl.binary.stat().st_size,
             "weights_bytes": device.manifest.get("weights_bytes"), "float32_weight_bytes": 4 * graph.num_params()}
    mcu = None
    mcu_cost = None
    if cfg.target == "cortex-m4":
        mcu, mcu_cost = _mcu_sizes(device.impl), cost
    elif _have("arm-none-eabi-gcc", "qemu-system-arm"):
        say("sizes   building the same model for cortex-m4 (flash / RAM, instructions per frame)")
        m4 = export_artifact(q if q is not None else graph, target="cortex-m4", out=out / "cortex-m4", force=True,
                               golden_input=x[:1])
        mcu, mcu_cost = _mcu_sizes(m4.impl), m4.impl.cost(x[:1])
    timings["cost_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_start

    ins = (mcu_cost or {}).get("instructions")
    budget = None
    if ins:
        per_s = ins["per_inference"] / plan.hop_s
        budget = {"instructions_per_frame": ins["per_step"], "instructions_per_inference": ins["per_inference"],
                  "instructions_per_second_of_audio": per_s, "mhz_at_one_instruction_per_cycle": per_s / 1e6,
                  "slots": plan.slots,
                  "note": f"one {frames}-frame window inference every {plan.hop_s * 1000:.0f} ms ({plan.slots} "
                          f"staggered slots, each stepped at {1 / (plan.frame_hop / plan.sample_rate):.0f} frames/s); "
                          "the log-mel front end is not included (it runs on the host here)"}
        say(f"cost    cortex-m4: {ins['per_step']:,.0f} instructions per frame, {ins['per_inference']:,.0f} per "
            f"{frames}-frame inference, {per_s / 1e6:.1f} M per second of audio")

    result = {
        "demo": "kws", "model": lm.name, "model_source": lm.source, "target": cfg.target, "runner": runner,
        "quantization": cfg.quant, "data": source, "held_out_voices": held_out, "labels": labels,
        "keywords": keywords,
        "stream": {"seconds": seconds, "sample_rate": SAMPLE_RATE, "engine": None if cfg.input else cfg.engine,
                   "seed": None if cfg.input else cfg.seed, "snr_db": None if cfg.input else cfg.snr_db,
                   "wav": None if cfg.input else "stream.wav", "input": cfg.input},
        "streaming": {"features": feat.to_dict(), "frames": int(len(features)), "samples_per_push": block,
                      "streamed_equals_batch": batch_equal, "window_frames": frames, "window_s": plan.window_s,
                      "hop_frames": hop_frames, "hop_s": plan.hop_s, "slots": plan.slots, "windows": int(len(x)),
                      "windows_per_device_call": cfg.chunk},
        "detection": {"rule": "causal mean of the last `smooth` window posteriors; fire when a keyword is the top "
                              "class and its smoothed posterior >= threshold; no detection within `refractory_s` of "
                              "the previous one; time = mean centre of the averaged windows",
                      **det_kw, "tolerance_s": cfg.tolerance_s},
        "events": [{"start_s": round(a, 4), "end_s": round(b, 4), "label": lab} for a, b, lab in events or []]
        if events is not None else None,
        "detections": det_rows, "metrics": metrics,
        "device_vs_reference": {"decision_agreement": agreement, "max_abs_logit_difference": max_err,
                                "detections_identical": same_dets, "reference_detections": len(ref_dets),
                                "reference": "integer-exact interpreter" if q is not None else "float64 interpreter"},
        "posteriors": {"time_s": [round(float(v), 4) for v in score_t],
                       "window_end_s": [round(float(v), 4) for v in plan.end_s(np.arange(len(x)))],
                       "smoothed": np.round(smoothed, 4).tolist()},
        "envelope": {"hop_s": ENVELOPE_HOP_S, "peak": _envelope(audio, ENVELOPE_HOP_S)},
        "cost": _jsonable(cost), "mcu_cost": _jsonable(mcu_cost) if mcu_cost is not None else None,
        "budget": budget, "sizes": sizes, "mcu_sizes": mcu, "plan": plan_summary,
        "timings": {k: round(v, 2) for k, v in timings.items()}, "config": asdict(cfg),
        "artifact": str(Path(cfg.out) / "artifact"),
    }
    atomic_write_json(out / "demo.json", result)
    from .kws_report import kws_report

    kws_report(result, out / "report.html")
    say(f"report  {Path(cfg.out) / 'report.html'}  (total {timings['total_s']:.0f} s)")
    return result


def _envelope(audio: np.ndarray, hop_s: float) -> list[float]:
    n = max(1, int(round(hop_s * SAMPLE_RATE)))
    m = len(audio) // n
    if m == 0:
        return []
    return np.round(np.abs(audio[: m * n]).reshape(m, n).max(axis=1).astype(np.float64), 4).tolist()


def _quantize(graph, cfg: KwsDemoConfig, say):
    """The int8 plan: calibrated on clips of the training split (training voices, never the stream's),
    searched on other training clips."""
    from ..quant.tasks import quantize_on_task, task_data

    data = task_data("kws", graph, calib=cfg.calib, seed=cfg.seed)
    say(f"quant   plan '{cfg.quant}', calibrated on {len(data.calib_idx)} training clips")
    q = quantize_on_task(graph, data, cfg.quant, progress=False)
    return q, q.plan.summary()
