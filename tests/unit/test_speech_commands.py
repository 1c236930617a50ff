"""Speech Commands v2 loader on a small directory with the real layout, and WAV I/O."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from edgeseq.data import audio as A
from edgeseq.data.kws import KWS_KEYWORDS, KWS_LABELS, SILENCE_LABEL, UNKNOWN_LABEL
from edgeseq.data.registry import load_dataset
from edgeseq.data.speech_commands import load_speech_commands, speech_commands_files
from edgeseq.errors import DatasetError

OTHER_WORDS = ("bed", "marvin")
PER_WORD = 4  # files per word folder: index 0 -> validation, 1 -> test, 2 and 3 -> train


def _pcm(rng, n):
    return np.clip(np.round(rng.standard_normal(n) * 3000), -32768, 32767).astype(np.int16)


def _write_pcm(path: Path, samples: np.ndarray, rate: int = 16000, channels: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())


@pytest.fixture
def sc_root(tmp_path, rng):
    root = tmp_path / "speech_commands_v0.02"
    val, test, written = [], [], {}
    for w in KWS_KEYWORDS + OTHER_WORDS:
        for i in range(PER_WORD):
            name = f"{w}/{i:08x}_nohash_0.wav"
            n = 16000 if i != 2 else 11025  # one short clip per word: zero-padded to 1 s
            pcm = _pcm(rng, n)
            _write_pcm(root / name, pcm)
            written[name] = pcm
            (val if i == 0 else test if i == 1 else []).append(name)
    (root / "validation_list.txt").write_text("\n".join(val) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    for k in range(2):
        _write_pcm(root / "_background_noise_" / f"noise{k}.wav", _pcm(rng, 16000 * 30 + 123))
    (root / "_background_noise_" / "README.md").write_text("noise\n")
    return root, written


def test_split_lists_and_class_mapping(sc_root):
    root, _ = sc_root
    for split, per_word in (("train", 2), ("validation", 1), ("test", 1)):
        paths, y = speech_commands_files(root, split)
        counts = np.bincount(y, minlength=12)
        assert counts[:10].tolist() == [per_word] * 10
        assert counts[KWS_LABELS.index(UNKNOWN_LABEL)] == per_word * len(OTHER_WORDS)
        assert counts[KWS_LABELS.index(SILENCE_LABEL)] == 0
        for p, label in zip(paths, y):
            word = p.parent.name
            assert KWS_LABELS[label] == (word if word in KWS_KEYWORDS else UNKNOWN_LABEL)


def test_audio_values_padding_and_silence(sc_root):
    root, written = sc_root
    d = load_speech_commands(root, "train", features="audio")
    assert d.x.shape[1:] == (16000, 1) and d.labels == KWS_LABELS and d.n_classes == 12
    counts = d.class_counts()
    assert [counts[k] for k in KWS_KEYWORDS] == [2] * 10 and counts[UNKNOWN_LABEL] == 4
    assert counts[SILENCE_LABEL] == 2  # default: mean keyword-class size
    paths, _ = speech_commands_files(root, "train")
    for i in (0, 5):
        rel = f"{paths[i].parent.name}/{paths[i].name}"
        pcm = written[rel].astype(np.float32) / 32768.0
        np.testing.assert_array_equal(d.x[i, : len(pcm), 0], pcm)
        assert not d.x[i, len(pcm) :, 0].any()
    sil = d.x[d.y == KWS_LABELS.index(SILENCE_LABEL), :, 0]
    assert np.all(np.abs(sil).max(axis=1) > 0)
    # silence segments are disjoint between splits
    all_sil = [load_speech_commands(root, s, features="audio", n_silence=1000) for s in ("train", "validation", "test")]
    sets = [{r.tobytes() for r in ds.x[ds.y == KWS_LABELS.index(SILENCE_LABEL), :, 0]} for ds in all_sil]
    assert sum(len(s) for s in sets) == 60  # 2 files x 30 whole seconds
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])


def test_features_and_dispatch(sc_root):
    root, _ = sc_root
    d = load_dataset("speech_commands", "test", root=root)
    assert d.x.shape[1:] == (98, 40) and d.meta["split"] == "test"
    m = load_speech_commands(root, "validation", features="mfcc", max_per_class=1)
    assert m.x.shape[1:] == (98, 10) and max(m.class_counts().values()) == 1


def test_missing_keyword_folders_are_named(sc_root):
    root, _ = sc_root
    for w in ("stop", "go"):
        for f in (root / w).iterdir():
            f.unlink()
        (root / w).rmdir()
    with pytest.raises(DatasetError, match="stop, go"):
        load_speech_commands(root, "train")


def test_wrong_rate_or_channels_are_refused_with_the_sox_fix(sc_root, rng):
    root, _ = sc_root
    bad = root / "yes" / "ffffffff_nohash_0.wav"
    _write_pcm(bad, _pcm(rng, 44100), rate=44100)
    with pytest.raises(DatasetError) as e:
        load_speech_commands(root, "train", features="audio")
    msg = str(e.value)
    assert str(bad) in msg and "44100" in msg and "sox" in msg and "-r 16000 -c 1" in msg
    _write_pcm(bad, _pcm(rng, 32000), rate=16000, channels=2)
    with pytest.raises(DatasetError, match="2 channels") as e:
        load_speech_commands(root, "train", features="audio")
    assert "-c 1" in str(e.value)


def test_pcm16_and_float_wav_round_trip(tmp_path, rng):
    x = np.clip(rng.standard_normal(5000) * 0.3, -1, 1).astype(np.float32)
    A.write_wav(tmp_path / "a.wav", x, 16000)
    y, sr = A.read_wav(tmp_path / "a.wav", sample_rate=16000)
    assert sr == 16000 and y.dtype == np.float32
    np.testing.assert_array_equal(y, np.round(x * 32768).clip(-32768, 32767) / 32768)
    with wave.open(str(tmp_path / "a.wav")) as w:  # readable by the stdlib
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()) == (16000, 1, 2, 5000)
    A.write_wav(tmp_path / "f.wav", x, 16000, subtype="FLOAT")
    z, _ = A.read_wav(tmp_path / "f.wav")
    np.testing.assert_array_equal(z, x)
    st = np.stack([x, -x], axis=1)
    A.write_wav(tmp_path / "s.wav", st, 8000, subtype="FLOAT")
    s2, sr2 = A.read_wav(tmp_path / "s.wav", channels=2)
    assert sr2 == 8000
    np.testing.assert_array_equal(s2, st)
    with pytest.raises(DatasetError, match="sox"):
        A.read_wav(tmp_path / "s.wav", sample_rate=16000)


def test_streamed_header_with_placeholder_sizes():
    pcm = np.arange(-50, 50, dtype="<i2") * 300
    fmt = struct.pack("<HHIIHH", 1, 1, 22050, 44100, 2, 16)
    data = b"RIFF" + struct.pack("<I", 0x7FFFF024) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
    data += b"data" + struct.pack("<I", 0x7FFFF000) + pcm.tobytes()
    x, rate = A.parse_wav_bytes(data)
    assert rate == 22050 and x.shape == (100, 1)
    np.testing.assert_array_equal(x[:, 0], pcm / 32768.0)
    with pytest.raises(DatasetError):
        A.parse_wav_bytes(b"not a wav file at all")


def test_resample_keeps_the_tone():
    t = np.arange(22050) / 22050
    x = np.sin(2 * np.pi * 440.0 * t).astype(np.float32)
    y = A.resample(x, 22050, 16000)
    assert y.shape == (16000,) and y.dtype == np.float32
    spec = np.abs(np.fft.rfft(y[1000:-1000] * np.hanning(14000)))
    assert abs(np.argmax(spec) * 16000 / 14000 - 440.0) < 2.0
    np.testing.assert_array_equal(A.resample(x, 16000, 16000), x)
