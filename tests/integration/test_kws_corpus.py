"""Synthetic KWS corpus with the real espeak-ng and flite: determinism, splits, cache integrity, stream."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeseq.data import kws
from edgeseq.data.features import LogMel, compute
from edgeseq.errors import ToolchainMissingError

CFG = kws.KWSConfig.tiny()
SIL = kws.KWS_LABELS.index(kws.SILENCE_LABEL)
UNK = kws.KWS_LABELS.index(kws.UNKNOWN_LABEL)


@pytest.fixture
def engines(need_tool):
    """Skips (or fails under CI=true) when espeak-ng or flite is missing."""
    need_tool("espeak-ng")
    need_tool("flite")


class _Corpus:
    """The tiny corpus of every split, generated once per module on first use."""

    def __init__(self, cache):
        self.cache = cache
        self._data = None

    def get(self):
        if self._data is None:
            self._data = {
                s: kws.load_kws(s, features="audio", config=CFG, cache_dir=self.cache, workers=2)
                for s in kws.KWS_SPLITS
            }
        return self.cache, self._data


@pytest.fixture(scope="module")
def lazy_corpus(tmp_path_factory):
    return _Corpus(tmp_path_factory.mktemp("kws-cache"))


@pytest.fixture
def corpus(engines, lazy_corpus):
    return lazy_corpus.get()


def test_shapes_labels_and_balance(corpus):
    _, data = corpus
    for split, d in data.items():
        n = CFG.n_for(split)
        assert d.x.shape == (12 * n, 16000, 1) and d.x.dtype == np.float32
        assert d.labels == kws.KWS_LABELS and list(d.class_counts().values()) == [n] * 12
        assert np.abs(d.x).max() <= 1.0
        clips, y, info = kws.kws_clips(split, config=CFG, cache_dir=corpus[0])
        np.testing.assert_array_equal(clips, d.x[:, :, 0])
        np.testing.assert_array_equal(y, d.y)
        words = [i["word"] for i in info]
        for i, label in enumerate(d.y):
            if label < 10:
                assert words[i] == kws.KWS_LABELS[label]
            elif label == UNK:
                assert words[i] in CFG.unknown_words
            else:
                assert words[i] is None
    assert data["flite"].meta["engine"] == "flite" and data["test"].meta["engine"] == "espeak-ng"


def test_test_voices_are_held_out(corpus):
    _, data = corpus
    train_v = {v.split("+")[1] for v in data["train"].meta["voices"]}
    test_v = {v.split("+")[1] for v in data["test"].meta["voices"]}
    assert train_v == set(CFG.train_variants) and test_v == set(CFG.test_variants) and not train_v & test_v
    assert {v.split("+")[0] for v in data["test"].meta["voices"]} - set(kws.TRAIN_ACCENTS) == {"en-029", "en-us-nyc"}
    assert set(data["flite"].meta["voices"]) == set(kws.FLITE_VOICES)


def test_speech_is_louder_than_its_surroundings_and_silence_is_noise(corpus):
    _, data = corpus
    d = data["train"]
    x = d.x[:, :, 0].astype(np.float64)
    frame_rms = np.sqrt((x.reshape(len(x), 100, 160) ** 2).mean(axis=2))
    spoken = d.y != SIL
    # a spoken clip has a loud part: its loudest 10 ms is well above its quietest 10 ms
    ratio = frame_rms[spoken].max(axis=1) / (frame_rms[spoken].min(axis=1) + 1e-9)
    assert np.all(ratio > 2.0)
    sil_db = 20 * np.log10(np.sqrt((x[~spoken] ** 2).mean(axis=1)))
    assert np.all(sil_db >= CFG.silence_dbfs[0] - 1.0) and np.all(sil_db <= CFG.silence_dbfs[1] + 1.0)
    # clean clips (snr None) are exactly zero outside the word
    assert any((row == 0).mean() > 0.1 for row in x[spoken])


def test_generation_is_deterministic_and_prefix_stable(corpus, tmp_path):
    _, data = corpus
    again = kws.load_kws("train", features="audio", config=CFG, cache_dir=tmp_path, workers=1)
    np.testing.assert_array_equal(again.x, data["train"].x)
    kws.load_kws("val", features="audio", n_per_class=1, config=CFG, cache_dir=tmp_path)
    assert kws.synth_cache(CFG, "val", tmp_path).entry("yes.npz")["n"] == 1
    bigger = kws.load_kws("val", features="audio", n_per_class=3, config=CFG, cache_dir=tmp_path)  # extends the cache
    assert kws.synth_cache(CFG, "val", tmp_path).entry("yes.npz")["n"] == 3
    n = CFG.n_val
    for c in range(12):
        np.testing.assert_array_equal(bigger.x[bigger.y == c][:n], data["val"].x[data["val"].y == c])
    other = kws.load_kws("val", features="audio", config=kws.KWSConfig.tiny(seed=1), cache_dir=tmp_path)
    assert not np.array_equal(other.x, data["val"].x)


def test_a_tampered_cache_file_is_detected_and_regenerated(corpus):
    cache, data = corpus
    cd = kws.synth_cache(CFG, "test", cache)
    name = "yes.npz"
    assert cd.status(name) == "ok"
    manifest = json.loads(cd.manifest_path.read_text())
    assert manifest["key"]["engine_version"].startswith("espeak-ng") and manifest["key"]["split"] == "test"
    f = cd.path / name
    blob = bytearray(f.read_bytes())
    blob[-200] ^= 0x55
    f.write_bytes(bytes(blob))
    assert cd.status(name) == "corrupt"
    again = kws.load_kws("test", features="audio", config=CFG, cache_dir=cache)
    assert cd.status(name) == "ok"
    np.testing.assert_array_equal(again.x, data["test"].x)
    f.write_bytes(b"garbage")
    assert cd.status(name) == "corrupt"
    np.testing.assert_array_equal(kws.load_kws("test", features="audio", config=CFG, cache_dir=cache).x, data["test"].x)


def test_feature_outputs_match_features_of_the_audio(corpus):
    cache, data = corpus
    lm = kws.load_kws("flite", features="logmel", config=CFG, cache_dir=cache)
    assert lm.x.shape == (24, 98, 40) and lm.meta["features"]["kind"] == "logmel"
    np.testing.assert_array_equal(lm.x, compute(data["flite"].x[:, :, 0], LogMel()))
    mf = kws.load_kws("flite", features="mfcc", config=CFG, cache_dir=cache)
    assert mf.x.shape == (24, 98, 10)


def test_stream_events(engines):
    audio, sr, events = kws.synth_stream(20.0, seed=3, config=CFG, workers=2)
    again, _, events2 = kws.synth_stream(20.0, seed=3, config=CFG, workers=1)
    assert sr == 16000 and audio.shape == (320000,) and audio.dtype == np.float32
    np.testing.assert_array_equal(audio, again)
    assert events == events2 and len(events) >= 4
    labels = {e[2] for e in events}
    assert labels <= set(kws.KWS_KEYWORDS) | {kws.UNKNOWN_LABEL}
    for (s0, e0, _), (s1, _, _) in zip(events, events[1:]):
        assert s0 < e0 <= s1
    assert events[-1][1] <= 20.0
    x = audio.astype(np.float64)
    inside = np.zeros(len(x), bool)
    for s, e, _ in events:
        inside[int(s * sr) : int(e * sr)] = True
    assert np.sqrt((x[inside] ** 2).mean()) > 3 * np.sqrt((x[~inside] ** 2).mean())


def test_missing_engine_names_the_apt_command(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolchainMissingError, match="apt-get install -y espeak-ng"):
        kws.load_kws("train", config=CFG)
    with pytest.raises(ToolchainMissingError, match="apt-get install -y flite"):
        kws.synth_stream(5.0, split="flite", config=CFG)
