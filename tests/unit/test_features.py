"""Log-mel / MFCC: against an independent reference, streaming == batch bit for bit, torch == numpy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import scipy.signal

from edgeseq.data import features as F
from edgeseq.errors import ConfigError, ShapeError


def _audio(rng, n=16000, scale=0.1):
    x = (rng.standard_normal(n) * scale).astype(np.float32)
    x[: n // 8] = 0.0  # digital silence exercises the eps floor
    return x


def _reference_logmel(x: np.ndarray, c: F.LogMel) -> np.ndarray:
    """Straightforward float64 implementation with scipy's window and a dense matrix product."""
    x = x.astype(np.float64)
    n = 1 + (len(x) - c.win_length) // c.hop_length
    frames = np.stack([x[k * c.hop_length : k * c.hop_length + c.win_length] for k in range(n)])
    frames = frames * scipy.signal.get_window("hann", c.win_length, fftbins=True)
    power = np.abs(scipy.fft.rfft(frames, n=c.n_fft, axis=-1)) ** 2
    return np.log(power @ F.mel_filterbank(c) + c.eps)


def test_frame_count_and_shapes(rng):
    c = F.LogMel()
    assert (c.n_frames(16000), c.n_frames(400), c.n_frames(399), c.n_frames(560)) == (98, 1, 0, 2)
    x = _audio(rng)
    assert F.logmel(x).shape == (98, 40) and F.logmel(x).dtype == np.float32
    assert F.mfcc(x).shape == (98, 10)
    assert F.mfcc(x, F.MFCC(n_mfcc=13)).shape == (98, 13)
    assert F.logmel(np.zeros((2, 3, 16000), np.float32)).shape == (2, 3, 98, 40)
    assert F.logmel(np.zeros(300, np.float32)).shape == (0, 40)
    np.testing.assert_array_equal(F.logmel(np.zeros(800, np.float32)), np.float32(np.log(1e-6)))


def test_logmel_matches_reference(rng):
    for c in (F.LogMel(), F.LogMel(n_mels=32, fmin=60.0, fmax=7000.0)):
        x = _audio(rng)
        np.testing.assert_allclose(F.logmel(x, c), _reference_logmel(x, c), rtol=0, atol=1e-5)


def test_mfcc_is_orthonormal_dct_of_logmel(rng):
    x = _audio(rng)
    for n in (10, 13):
        c = F.MFCC(n_mfcc=n)
        ref = scipy.fft.dct(_reference_logmel(x, c), type=2, norm="ortho", axis=-1)[:, :n]
        np.testing.assert_allclose(F.mfcc(x, c), ref, rtol=0, atol=1e-4)


def test_filterbank_is_htk_triangles():
    c = F.LogMel()
    fb = F.mel_filterbank(c)
    assert fb.shape == (257, 40) and fb.min() >= 0.0 and fb.max() <= 1.0
    freqs = np.arange(257) * 16000 / 512
    centres = F.mel_to_hz(np.linspace(F.hz_to_mel(20.0), F.hz_to_mel(8000.0), 42))[1:-1]
    peak_bins = fb.argmax(axis=0)
    assert np.all(np.diff(peak_bins) >= 0)
    assert np.all(np.abs(freqs[peak_bins] - centres) <= 16000 / 512)
    # between the first and last centre, adjacent triangles sum to one
    inner = (freqs > centres[0]) & (freqs < centres[-1])
    np.testing.assert_allclose(fb[inner].sum(axis=1), 1.0, atol=1e-12)
    assert fb[freqs < 20.0].sum() == 0.0


def test_a_tone_lights_up_its_band():
    t = np.arange(16000) / 16000
    x = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    c = F.LogMel()
    band = int(np.median(F.logmel(x, c).argmax(axis=1)))
    centres = F.mel_to_hz(np.linspace(F.hz_to_mel(20.0), F.hz_to_mel(8000.0), 42))[1:-1]
    assert abs(centres[band] - 1000.0) < 60.0


@pytest.mark.parametrize(
    "config", [F.LogMel(), F.MFCC(), F.MFCC(n_mfcc=13, n_mels=32), F.LogMel(cmn_frames=30.0), F.MFCC(cmn_frames=8.0)]
)
def test_streaming_is_bit_identical_to_batch(rng, config):
    x = np.concatenate([_audio(rng, 12345), (rng.standard_normal(20000) * 0.5).astype(np.float32)])
    batch = F.compute(x, config)
    s = F.StreamingFeatures(config)
    out, i = [], 0
    sizes = [0, 1, 399, 1, 159, 1, 160, 7000, 3]
    k = 0
    while i < len(x):
        n = sizes[k] if k < len(sizes) else int(rng.integers(1, 900))
        k += 1
        out.append(s.push(x[i : i + n]))
        i += n
    stream = np.concatenate(out)
    assert stream.shape == batch.shape and s.frames_emitted == len(batch)
    np.testing.assert_array_equal(stream, batch)
    assert s.pending_samples == len(x) - len(batch) * config.hop_length
    s.reset()
    np.testing.assert_array_equal(s.push(x[:1000]), batch[: config.n_frames(1000)])


def test_a_clip_alone_equals_the_clip_inside_a_batch(rng):
    x = np.stack([_audio(rng) for _ in range(5)])
    for c in (F.LogMel(), F.MFCC(), F.LogMel(cmn_frames=20.0)):
        batch = F.compute(x, c)
        for i in (0, 3):
            np.testing.assert_array_equal(F.compute(x[i], c), batch[i])


@pytest.mark.parametrize("config", [F.LogMel(), F.MFCC(), F.MFCC(n_mfcc=13), F.LogMel(cmn_frames=12.5)])
def test_torch_matches_numpy(rng, config):
    torch = pytest.importorskip("torch")
    x = np.stack([_audio(rng, 16000) for _ in range(6)]).reshape(2, 3, 16000)
    ref = F.compute(x, config)
    got = F.compute_torch(torch.from_numpy(x), config)
    assert got.dtype == torch.float32 and tuple(got.shape) == ref.shape
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-5)
    fn = F.mfcc_torch if isinstance(config, F.MFCC) else F.logmel_torch
    np.testing.assert_allclose(fn(torch.from_numpy(x[0, 0]), config).numpy(), ref[0, 0], rtol=0, atol=1e-5)


def test_torch_is_differentiable(rng):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy((rng.standard_normal(4000) * 0.1).astype(np.float32)).requires_grad_(True)
    F.logmel_torch(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def _reference_cmn(f: np.ndarray, tau: float) -> np.ndarray:
    """Streaming mean normalisation written out plainly: m_0 = f_0, m_t = (1 - 1/tau) m_{t-1} + f_t / tau."""
    out, m = np.empty_like(f, dtype=np.float64), f[0].astype(np.float64)
    for t in range(len(f)):
        m = (1.0 - 1.0 / tau) * m + f[t] / tau
        out[t] = f[t] - m
    return out


@pytest.mark.parametrize("n", [240 + 160 * 3, 8000, 13337])
def test_mean_normalisation_matches_reference(rng, n):
    base = F.LogMel(sample_rate=8000, n_mels=32, win_length=240, hop_length=160, n_fft=256, fmin=60.0)
    c = F.feature_config({**base.to_dict(), "cmn_frames": 25.0})
    for shape in ((), (3,), (2, 2)):
        x = (rng.standard_normal((*shape, n)) * 0.1).astype(np.float32)
        raw, got = F.compute(x, base), F.compute(x, c)
        assert got.shape == raw.shape
        flat_raw, flat = raw.reshape(-1, *raw.shape[-2:]), got.reshape(-1, *got.shape[-2:])
        for r, g in zip(flat_raw, flat):
            np.testing.assert_allclose(g, _reference_cmn(r, 25.0), rtol=0, atol=2e-5)
            np.testing.assert_array_equal(g[0], 0.0)  # the running mean starts at the first frame


def test_mean_normalisation_removes_a_fixed_channel_colouring(rng):
    """A microphone's fixed gain per band is a constant offset per log-mel band: normalised away exactly
    (up to float rounding), while the raw features move by the offset."""
    c = F.LogMel(sample_rate=8000, n_mels=32, win_length=240, hop_length=160, n_fft=256, fmin=60.0)
    f = F.compute((rng.standard_normal((2, 6000)) * 0.1).astype(np.float32), c)
    offset = np.linspace(-3.0, 2.0, 32, dtype=np.float32)  # a strong tilt, in natural-log units
    a, b = f.copy(), f + offset
    F.mean_normalise(a, 40.0)
    F.mean_normalise(b, 40.0)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    # the running means carry over between calls: two halves equal the whole
    whole, h1, h2 = f.copy(), f[:, :10].copy(), f[:, 10:].copy()
    F.mean_normalise(whole, 40.0)
    F.mean_normalise(h2, 40.0, F.mean_normalise(h1, 40.0))
    np.testing.assert_array_equal(np.concatenate([h1, h2], axis=1), whole)


def test_mean_normalisation_config():
    assert "cmn_frames" not in F.LogMel().to_dict()  # front ends without it keep their earlier form
    c = F.MFCC(cmn_frames=50.0)
    assert F.feature_config(c.to_dict()) == c
    for bad in (0.5, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="cmn_frames"):
            F.LogMel(cmn_frames=bad)


def test_config_errors():
    with pytest.raises(ConfigError):
        F.LogMel(n_fft=256)  # shorter than the 400-sample window
    with pytest.raises(ConfigError, match="no FFT bin"):
        F.LogMel(n_mels=128, n_fft=512, fmin=0.0)
    with pytest.raises(ConfigError):
        F.MFCC(n_mfcc=41)
    with pytest.raises(ConfigError):
        F.feature_config("spectrogram")
    with pytest.raises(ShapeError):
        F.logmel(np.zeros(16000, dtype=np.int16))
    with pytest.raises(ShapeError):
        F.StreamingFeatures().push(np.zeros((10, 2), np.float32))
    assert F.LogMel().to_dict()["kind"] == "logmel" and F.MFCC().to_dict()["n_mfcc"] == 10
