"""Log-mel and MFCC audio features, in numpy, in torch, and streaming (frame by frame).

Definition (the same in all three forms):

* framing without centre padding: frame ``k`` covers samples ``[k*hop, k*hop + win)``, so a signal
  of ``n`` samples has ``1 + (n - win) // hop`` frames (0 when ``n < win``); the first frame is
  complete when sample ``win`` arrives, which is what lets :class:`StreamingFeatures` emit exactly
  the batch frames;
* periodic Hann window of ``win_length`` samples, zero-padded at the end to ``n_fft``; power
  spectrum ``|rfft|^2``;
* triangular mel filters on the HTK mel scale (``2595 * log10(1 + f / 700)``) between ``fmin`` and
  ``fmax`` (default Nyquist), unnormalised (peak weight 1);
* log-mel ``log(mel + eps)``; MFCC = orthonormal DCT-II of the log-mel, first ``n_mfcc`` coefficients;
* optional streaming mean normalisation (``cmn_frames`` > 0): a running mean of every feature, an
  exponential moving average ``m_t = m_{t-1} + (f_t - m_{t-1}) / cmn_frames`` started at the first frame
  (``m_0 = f_0``), is subtracted, ``f_t - m_t``: cepstral-mean normalisation that needs no look-ahead and
  one state value per feature, so it runs on a stream (a microphone's or room's fixed colouring is a
  constant offset per log-mel band, which it removes).

Audio is float32 in [-1, 1]; it is cast to float32 first and every step runs in float64, with a
float32 result. Every frame is computed independently of the others (elementwise products and
per-row reductions, no matrix products whose rounding depends on the batch), so the numpy batch
and streaming results are bit-identical; torch (float64 internally) matches numpy to ~1e-12. The mean
normalisation is the only stage that links frames: it runs frame after frame in float64 on the float32
features in every form, so batch and streaming stay bit-identical.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ..errors import ConfigError, ShapeError

_CHUNK_FRAMES = 2048


@dataclass(frozen=True)
class LogMel:
    """Log-mel feature configuration (defaults: 40 bands, 25 ms / 10 ms at 16 kHz, n_fft 512)."""

    sample_rate: int = 16000
    n_mels: int = 40
    win_length: int = 400
    hop_length: int = 160
    n_fft: int = 512
    fmin: float = 20.0
    fmax: float | None = None
    eps: float = 1e-6
    cmn_frames: float = 0.0  # time constant (frames) of the streaming mean normalisation; 0: off

    def __post_init__(self) -> None:
        where = type(self).__name__
        if self.cmn_frames != 0 and not self.cmn_frames >= 1:
            raise ConfigError(f"cmn_frames must be 0 (off) or >= 1, got {self.cmn_frames}", where=where)
        if self.win_length < 1 or self.hop_length < 1 or self.n_mels < 1:
            raise ConfigError("win_length, hop_length and n_mels must be positive", where=where)
        if self.n_fft < self.win_length:
            raise ConfigError(f"n_fft ({self.n_fft}) must be >= win_length ({self.win_length})", where=where)
        if not 0.0 <= self.fmin < self.f_max <= self.sample_rate / 2:
            raise ConfigError(
                f"need 0 <= fmin < fmax <= {self.sample_rate / 2} Hz, got {self.fmin}..{self.f_max}", where=where
            )
        if self.eps <= 0:
            raise ConfigError("eps must be positive", where=where)
        _tables(_key(self))  # validates that every mel band holds at least one FFT bin

    @property
    def kind(self) -> str:
        return "logmel"

    @property
    def f_max(self) -> float:
        return float(self.sample_rate) / 2 if self.fmax is None else float(self.fmax)

    @property
    def n_features(self) -> int:
        return self.n_mels

    def n_frames(self, n_samples: int) -> int:
        """Frames produced by ``n_samples`` samples (no padding)."""
        return 0 if n_samples < self.win_length else 1 + (int(n_samples) - self.win_length) // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not self.cmn_frames:  # front ends without the normalisation keep their earlier form
            del d["cmn_frames"]
        return {"kind": self.kind, **d}


@dataclass(frozen=True)
class MFCC(LogMel):
    """MFCC configuration: :class:`LogMel` fields plus ``n_mfcc`` (default 10) DCT-II coefficients."""

    n_mfcc: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.n_mfcc <= self.n_mels:
            raise ConfigError(f"n_mfcc must be in 1..n_mels ({self.n_mels}), got {self.n_mfcc}", where="MFCC")

    @property
    def kind(self) -> str:
        return "mfcc"

    @property
    def n_features(self) -> int:
        return self.n_mfcc


FeatureConfig = LogMel  # LogMel or its subclass MFCC


def feature_config(kind: str | LogMel | dict | None = "logmel", **kw: Any) -> LogMel:
    """``"logmel"`` -> :class:`LogMel`, ``"mfcc"`` -> :class:`MFCC` (``kw`` overrides fields); configs pass
    through; a dict is the :meth:`LogMel.to_dict` form (``{"kind": "logmel", "n_mels": 32, ...}``)."""
    if isinstance(kind, LogMel):
        return kind
    if isinstance(kind, dict):
        d = dict(kind)
        k = d.pop("kind", "logmel")
        known = {f for f in (MFCC if k == "mfcc" else LogMel).__dataclass_fields__}
        bad = sorted(set(d) - known)
        if bad:
            raise ConfigError(f"unknown front-end field(s) {bad}; known: {sorted(known)}", where="features")
        return feature_config(k, **{**d, **kw})
    if kind in (None, "logmel"):
        return LogMel(**kw)
    if kind == "mfcc":
        return MFCC(**kw)
    raise ConfigError(f"unknown feature kind '{kind}'; choose logmel or mfcc", where="features")


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(config: LogMel) -> np.ndarray:
    """Triangular HTK-mel filters, float64 (n_fft // 2 + 1, n_mels)."""
    return _tables(_key(config))[0].copy()


def hann_window(n: int) -> np.ndarray:
    """Periodic Hann window, float64: ``0.5 - 0.5 cos(2 pi k / n)``."""
    k = np.arange(n, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * k / n)


def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Orthonormal DCT-II basis, float64 (n_out, n_in)."""
    k = np.arange(n_out, dtype=np.float64)[:, None]
    n = np.arange(n_in, dtype=np.float64)[None, :]
    d = np.cos(np.pi * k * (2.0 * n + 1.0) / (2.0 * n_in)) * np.sqrt(2.0 / n_in)
    d[0] *= 1.0 / np.sqrt(2.0)
    return d


def _key(c: LogMel) -> tuple:
    return (c.sample_rate, c.n_mels, c.win_length, c.n_fft, c.fmin, c.f_max)


@lru_cache(maxsize=16)
def _tables(key: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(dense filterbank, gather index (n_mels, w), gather weights (n_mels, w), window)."""
    sr, n_mels, win, n_fft, fmin, fmax = key
    freqs = np.arange(n_fft // 2 + 1, dtype=np.float64) * sr / n_fft
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fb = np.zeros((freqs.size, n_mels))
    for b in range(n_mels):
        lo, mid, hi = edges[b], edges[b + 1], edges[b + 2]
        up = (freqs - lo) / (mid - lo)
        down = (hi - freqs) / (hi - mid)
        fb[:, b] = np.maximum(0.0, np.minimum(up, down))
    empty = np.flatnonzero(fb.max(axis=0) <= 0.0)
    if empty.size:
        raise ConfigError(
            f"mel bands {empty.tolist()} contain no FFT bin; use fewer mels, a larger n_fft or a higher fmin",
            where="LogMel",
        )
    support = [np.flatnonzero(fb[:, b] > 0.0) for b in range(n_mels)]
    width = max(len(s) for s in support)
    idx = np.zeros((n_mels, width), dtype=np.int64)
    wts = np.zeros((n_mels, width), dtype=np.float64)
    for b, s in enumerate(support):
        idx[b, :] = s[0]
        idx[b, : len(s)] = s
        wts[b, : len(s)] = fb[s, b]
    for a in (fb, idx, wts):
        a.setflags(write=False)
    w = hann_window(win)
    w.setflags(write=False)
    return fb, idx, wts, w


@lru_cache(maxsize=16)
def _dct(n_out: int, n_in: int) -> np.ndarray:
    d = dct_matrix(n_out, n_in)
    d.setflags(write=False)
    return d


# --------------------------------------------------------------------------------------------
# numpy
# --------------------------------------------------------------------------------------------


def _frames(audio: np.ndarray, c: LogMel) -> np.ndarray:
    n = audio.shape[-1]
    nf = c.n_frames(n)
    if nf == 0:
        return np.zeros((*audio.shape[:-1], 0, c.win_length), dtype=np.float32)
    view = np.lib.stride_tricks.sliding_window_view(audio, c.win_length, axis=-1)
    return view[..., : (nf - 1) * c.hop_length + 1 : c.hop_length, :]


def _frame_features(frames: np.ndarray, c: LogMel) -> np.ndarray:
    """(M, win) float32 frames -> (M, n_features) float32; each row computed on its own.

    The mel and DCT projections are sequences of elementwise multiply-adds over a frame-minor
    layout (bands x frames), so a frame's result never depends on the other frames in the call.
    """
    _fb, _idx, _wts, window = _tables(_key(c))
    terms = _terms(_key(c))
    dct = _dct(c.n_mfcc, c.n_mels) if isinstance(c, MFCC) else None
    out = np.empty((frames.shape[0], c.n_features), dtype=np.float32)
    for s in range(0, frames.shape[0], _CHUNK_FRAMES):
        f = frames[s : s + _CHUNK_FRAMES].astype(np.float64) * window
        m = f.shape[0]
        spec = np.fft.rfft(f, n=c.n_fft, axis=-1)
        power = np.ascontiguousarray((spec.real * spec.real + spec.imag * spec.imag).T)  # (bins, m)
        mel = np.zeros((c.n_mels, m))
        tmp = np.empty(m)
        for b, pairs in enumerate(terms):
            row = mel[b]
            for j, w in pairs:
                np.multiply(power[j], w, out=tmp)
                np.add(row, tmp, out=row)
        np.add(mel, c.eps, out=mel)
        np.log(mel, out=mel)
        if dct is not None:
            feat = np.zeros((c.n_mfcc, m))
            for k in range(c.n_mfcc):
                row = feat[k]
                for b in range(c.n_mels):
                    np.multiply(mel[b], dct[k, b], out=tmp)
                    np.add(row, tmp, out=row)
            mel = feat
        out[s : s + m] = mel.T
    return out


@lru_cache(maxsize=16)
def _terms(key: tuple) -> tuple[tuple[tuple[int, float], ...], ...]:
    """Per mel band, the (bin, weight) pairs with non-zero weight, in ascending bin order."""
    fb = _tables(key)[0]
    return tuple(tuple((int(j), float(fb[j, b])) for j in np.flatnonzero(fb[:, b] > 0.0)) for b in range(fb.shape[1]))


def _as_audio(audio: Any, where: str) -> np.ndarray:
    x = np.asarray(audio)
    if x.ndim < 1:
        raise ShapeError(f"audio must be (..., samples), got shape {x.shape}", where=where)
    if not np.issubdtype(x.dtype, np.floating):
        raise ShapeError(
            f"audio must be floating point in [-1, 1], got {x.dtype}", where=where, hint="divide int16 PCM by 32768"
        )
    return np.ascontiguousarray(x, dtype=np.float32)


def compute(audio: np.ndarray, config: LogMel | str | None = None) -> np.ndarray:
    """Features of ``audio`` (..., samples) -> float32 (..., frames, n_features) for a LogMel or MFCC config."""
    c = feature_config(config)
    x = _as_audio(audio, "features")
    lead, n = x.shape[:-1], x.shape[-1]
    nf = c.n_frames(n)
    flat = x.reshape(-1, n)
    out = np.empty((flat.shape[0], nf, c.n_features), dtype=np.float32)
    if nf:
        per = max(1, _CHUNK_FRAMES // nf)  # signals per chunk, so frame copies stay small
        for s in range(0, flat.shape[0], per):
            frames = _frames(flat[s : s + per], c)
            out[s : s + per] = _frame_features(frames.reshape(-1, c.win_length), c).reshape(-1, nf, c.n_features)
        if c.cmn_frames:
            mean_normalise(out, c.cmn_frames)
    return out.reshape(*lead, nf, c.n_features)


def mean_normalise(feats: np.ndarray, cmn_frames: float, state: np.ndarray | None = None) -> np.ndarray:
    """Streaming mean normalisation in place: ``feats`` float32 (n, frames, F) becomes ``f_t - m_t`` with
    ``m_t = m_{t-1} + (f_t - m_{t-1}) / cmn_frames`` in float64, frame after frame. ``state``: the running
    means (n, F) float64 before the first frame, updated in place; None starts them at the first frame.
    Returns the running means after the last frame."""
    a = 1.0 / float(cmn_frames)
    n, t, f = feats.shape
    m = state if state is not None else (feats[:, 0, :].astype(np.float64) if t else np.zeros((n, f)))
    for k in range(t):
        x = feats[:, k, :].astype(np.float64)
        m += a * (x - m)
        feats[:, k, :] = x - m
    return m


def logmel(audio: np.ndarray, config: LogMel | None = None) -> np.ndarray:
    """Log-mel energies of ``audio`` (..., samples): float32 (..., frames, n_mels)."""
    c = LogMel() if config is None else config
    if isinstance(c, MFCC):
        c = LogMel(**{k: v for k, v in asdict(c).items() if k != "n_mfcc"})
    return compute(audio, c)


def mfcc(audio: np.ndarray, config: MFCC | None = None) -> np.ndarray:
    """MFCCs of ``audio`` (..., samples): float32 (..., frames, n_mfcc)."""
    c = MFCC() if config is None else config
    if not isinstance(c, MFCC):
        raise ConfigError("mfcc() needs an MFCC config", where="features.mfcc")
    return compute(audio, c)


class StreamingFeatures:
    """Incremental features: :meth:`push` returns the frames completed by the new samples.

    The concatenation of everything :meth:`push` returned equals, bit for bit, the batch
    :func:`compute` of the concatenated input (the first frame appears once ``win_length``
    samples have arrived, then one frame per ``hop_length`` samples).
    """

    def __init__(self, config: LogMel | str | None = None):
        self.config = feature_config(config)
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros(0, dtype=np.float32)
        self._means: np.ndarray | None = None  # the mean normalisation's running means (1, F)
        self.frames_emitted = 0
        self.samples_seen = 0

    @property
    def pending_samples(self) -> int:
        return int(self._buf.size)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Append mono ``samples`` (n,) and return the new frames, float32 (k, n_features)."""
        s = _as_audio(samples, "StreamingFeatures.push")
        if s.ndim != 1:
            raise ShapeError(f"push() takes mono samples (n,), got shape {s.shape}", where="StreamingFeatures")
        c = self.config
        buf = np.concatenate([self._buf, s]) if self._buf.size else s
        self.samples_seen += s.size
        k = c.n_frames(buf.size)
        if k == 0:
            self._buf = buf.copy()
            return np.zeros((0, c.n_features), dtype=np.float32)
        frames = _frames(buf, c)
        out = _frame_features(np.ascontiguousarray(frames), c)
        if c.cmn_frames:
            self._means = mean_normalise(out[None], c.cmn_frames, self._means)
        self._buf = buf[k * c.hop_length :].copy()
        self.frames_emitted += k
        return out


# --------------------------------------------------------------------------------------------
# torch
# --------------------------------------------------------------------------------------------


def compute_torch(audio, config: LogMel | str | None = None):
    """Torch version of :func:`compute`: ``audio`` (..., samples) tensor -> (..., frames, n_features).

    Runs in float64 on the tensor's device and returns the input's floating dtype (float32 for
    float32 audio); differentiable with respect to ``audio``.
    """
    import torch

    c = feature_config(config)
    if not torch.is_tensor(audio):
        audio = torch.as_tensor(np.asarray(audio, dtype=np.float32))
    if audio.ndim < 1 or not audio.is_floating_point():
        raise ShapeError(
            f"audio must be a floating tensor (..., samples), got {tuple(audio.shape)} {audio.dtype}",
            where="features_torch",
        )
    out_dtype = audio.dtype
    dev = audio.device
    _fb, idx, wts, window = _tables(_key(c))
    x = audio.to(torch.float32).to(torch.float64)
    nf = c.n_frames(x.shape[-1])
    if nf == 0:
        return torch.zeros((*x.shape[:-1], 0, c.n_features), dtype=out_dtype, device=dev)
    frames = x.unfold(-1, c.win_length, c.hop_length)[..., :nf, :]
    frames = frames * torch.tensor(window, device=dev)
    spec = torch.fft.rfft(frames, n=c.n_fft, dim=-1)
    power = spec.real * spec.real + spec.imag * spec.imag
    mel = (power[..., torch.tensor(idx, device=dev)] * torch.tensor(wts, device=dev)).sum(dim=-1)
    feat = torch.log(mel + c.eps)
    if isinstance(c, MFCC):
        feat = (feat[..., None, :] * torch.tensor(_dct(c.n_mfcc, c.n_mels), device=dev)).sum(dim=-1)
    if c.cmn_frames:
        f32 = feat.to(torch.float32).to(torch.float64)  # the normalisation runs on float32 features
        a, m, steps = 1.0 / float(c.cmn_frames), f32[..., 0, :], []
        for k in range(nf):
            m = m + a * (f32[..., k, :] - m)
            steps.append(f32[..., k, :] - m)
        feat = torch.stack(steps, dim=-2)
    return feat.to(out_dtype)


def logmel_torch(audio, config: LogMel | None = None):
    """Torch log-mel: same numbers as :func:`logmel`."""
    c = LogMel() if config is None else config
    if isinstance(c, MFCC):
        c = LogMel(**{k: v for k, v in asdict(c).items() if k != "n_mfcc"})
    return compute_torch(audio, c)


def mfcc_torch(audio, config: MFCC | None = None):
    """Torch MFCC: same numbers as :func:`mfcc`."""
    c = MFCC() if config is None else config
    if not isinstance(c, MFCC):
        raise ConfigError("mfcc_torch() needs an MFCC config", where="features.mfcc_torch")
    return compute_torch(audio, c)
