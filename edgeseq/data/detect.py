"""Keyword-spotting decisions on a stream: decision points over the feature frames, posterior
smoothing with threshold and refractory suppression, and matching against ground-truth word events
(hits, misses, false accepts per hour). Used by ``edgeseq demo kws``, its benchmark, and streaming
training (which picks a model's detection threshold on a validation stream).

Two ways to decide (:class:`WindowPlan`):

* ``slots``: overlapping windows of a clip classifier, ``frames`` long every ``hop`` frames; a device
  needs ``ceil(frames / hop)`` state slots, each reset and stepped through its window;
* ``continuous``: a model trained to stream (:mod:`edgeseq.train.stream`) runs on one state and is
  read after every frame: ``WindowPlan.continuous(...)``, one-frame "windows" with a one-frame hop.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import ConfigError

SAMPLE_RATE = 16000


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

    @classmethod
    def continuous(cls, frame_hop: int, frame_len: int, sample_rate: int) -> "WindowPlan":
        """A decision after every frame of a model that runs on one continuous state."""
        return cls(frames=1, hop=1, frame_hop=frame_hop, frame_len=frame_len, sample_rate=sample_rate)

    @property
    def hop_s(self) -> float:
        return self.hop * self.frame_hop / self.sample_rate

    @property
    def window_s(self) -> float:
        return ((self.frames - 1) * self.frame_hop + self.frame_len) / self.sample_rate

    @property
    def slots(self) -> int:
        """State slots a device needs to decide every hop on overlapping windows (1: one continuous state)."""
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
    parts = [sf.push(audio[i : i + block]) for i in range(0, len(audio), block)]
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

    def __init__(
        self,
        labels: Sequence[str],
        keywords: Sequence[str],
        plan: WindowPlan,
        *,
        threshold: float = 0.6,
        smooth: int = 2,
        refractory_s: float = 1.0,
    ):
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
        if (
            k in self.keyword_ids
            and score[k] >= self.threshold
            and (self._last is None or t - self._last >= self.refractory_s)
        ):
            det = Detection(
                self.labels[k],
                round(t, 4),
                round(float(self.plan.end_s(window)), 4),
                round(float(score[k]), 4),
                int(window),
            )
            self._last = t
        return score, t, det


def detect(
    posteriors: np.ndarray, labels, keywords, plan: WindowPlan, **kw
) -> tuple[np.ndarray, np.ndarray, list[Detection]]:
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
            rows.append(
                {
                    "keyword": k,
                    "spoken": len(occ),
                    "hits": hit,
                    "misses": len(occ) - hit,
                    "false_accepts": fa_k,
                    "hit_rate": hit / len(occ) if occ else None,
                }
            )
        return {
            "keywords_spoken": len(kws),
            "unknown_words_spoken": len(self.events) - len(kws),
            "detections": len(self.outcomes),
            "hits": self.hits,
            "misses": len(misses),
            "false_accepts": fa,
            "hit_rate": self.hits / len(kws) if kws else None,
            "false_reject_rate": len(misses) / len(kws) if kws else None,
            "precision": self.hits / len(self.outcomes) if self.outcomes else None,
            "false_accepts_per_hour": false_accepts_per_hour(fa, seconds),
            "false_accept_kinds": kinds,
            "missed_events": misses,
            "per_keyword": rows,
            "tolerance_s": self.tol,
        }


def false_accepts_per_hour(count: int, seconds: float) -> Optional[float]:
    return None if seconds <= 0 else count * 3600.0 / seconds


def match_detections(
    detections: Sequence[Detection], events, keywords, tolerance_s: float = 0.5, seconds: Optional[float] = None
) -> tuple[list[dict], dict]:
    """Score ``detections`` against ``events``: (per-detection outcomes, :meth:`Scorer.summary`)."""
    sc = Scorer(events, keywords, tolerance_s)
    dets = sorted(detections, key=lambda d: d.time_s)
    outs = [sc.add(d.keyword, d.time_s) for d in dets]
    span = seconds if seconds is not None else max([e[1] for e in sc.events] + [d.time_s for d in dets] + [0.0])
    return outs, sc.summary(span, [d.keyword for d in dets])


__all__ = [
    "Detection",
    "Detector",
    "FA_KINDS",
    "Scorer",
    "WindowPlan",
    "detect",
    "false_accepts_per_hour",
    "match_detections",
    "stream_features",
    "windows_of",
]
