"""The Free Spoken Digit Dataset shipped inside edgeseq: the file (lossless, hash-checked, typed errors
when corrupt), the two protocols (the dataset's own split, leave-speakers-out) and the one-speaker
one, word-end-aligned clips, the demo's digit stream, and the frame targets and training sequences of
streaming training."""

from __future__ import annotations

import io
import wave
import zipfile

import numpy as np
import pytest

from edgeseq.data import digits as D
from edgeseq.data import streams as S
from edgeseq.data.features import LogMel, feature_config
from edgeseq.data.registry import load_dataset
from edgeseq.errors import ConfigError, DatasetError


@pytest.fixture(scope="module")
def fs():
    return D.fsdd()


def test_shipped_file_is_the_whole_dataset(fs):
    assert D.FSDD_FILE.stat().st_size < 16e6 and (D.FSDD_FILE.parent / "LICENSE").is_file()
    assert "CC BY-SA 4.0" in (D.FSDD_FILE.parent / "LICENSE").read_text()
    assert len(fs) == 3000 and fs.speakers == ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
    assert fs.info["sample_rate"] == 8000 and fs.info["commit"] == "26eb9aa"
    counts = np.zeros((6, 10, 50), int)
    np.add.at(counts, (fs.speaker, fs.digit, fs.take), 1)
    assert (counts == 1).all()  # every speaker x digit x take exactly once
    lengths = np.array([len(a) for a in fs.audio])
    assert lengths.sum() == 10_498_424 and lengths.min() >= 1000
    assert all(a.dtype == np.float32 and -1.0 <= a.min() and a.max() < 1.0 for a in fs.audio[:50])
    # int16 PCM scaled by 1/32768: every sample is an exact multiple
    q = fs.audio[0] * 32768.0
    np.testing.assert_array_equal(q, np.round(q))


def test_corrupt_or_foreign_files_raise_typed_errors(tmp_path):
    bad = tmp_path / "fsdd.npz"
    with zipfile.ZipFile(D.FSDD_FILE) as z, zipfile.ZipFile(bad, "w") as out:
        for info in z.infolist():
            data = z.read(info.filename)
            if info.filename == "pcm_lo.npy":  # a valid member with one changed sample byte
                data = data[:-1] + bytes([data[-1] ^ 1])
            out.writestr(info.filename, data, compress_type=zipfile.ZIP_STORED)
    with pytest.raises(DatasetError, match="sha256"):
        D.fsdd(bad)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="corrupt or truncated FSDD file"):
        D.fsdd(tmp_path / "junk.npz")
    with pytest.raises(DatasetError, match="missing"):
        D.fsdd(tmp_path / "absent.npz")
    other = tmp_path / "other.npz"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("x.npy", b"")
    with pytest.raises(DatasetError, match="not an FSDD file"):
        D.fsdd(other)


def test_a_checkout_of_the_dataset_loads_too(tmp_path, fs):
    rec = tmp_path / "recordings"
    rec.mkdir()
    for i in (0, 1, 1500):
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(np.round(fs.audio[i] * 32768).astype("<i2").tobytes())
        name = f"{fs.digit[i]}_{fs.speakers[fs.speaker[i]]}_{fs.take[i]}.wav"
        (rec / name).write_bytes(buf.getvalue())
    got = D.fsdd(tmp_path)
    assert len(got) == 3 and set(got.speakers) == {fs.speakers[fs.speaker[i]] for i in (0, 1, 1500)}
    for a in got.audio:
        assert any(len(a) == len(fs.audio[i]) and np.array_equal(a, fs.audio[i]) for i in (0, 1, 1500))


def test_protocols(fs):
    tr, te = D.select(fs, "train"), D.select(fs, "test")
    assert len(tr) == 2700 and len(te) == 300 and set(fs.take[te]) == set(range(5))
    assert not set(tr) & set(te)
    for spk in fs.speakers:
        tr, te = D.select(fs, "train", holdout=spk), D.select(fs, "test", holdout=spk)
        assert len(tr) == 2500 and len(te) == 500
        assert set(fs.speaker[te]) == {fs.speaker_id(spk)} and fs.speaker_id(spk) not in set(fs.speaker[tr])
        tr, te = D.select(fs, "train", only=spk), D.select(fs, "test", only=spk)
        assert len(tr) == 500 and len(te) == 2500 and set(fs.speaker[tr]) == {fs.speaker_id(spk)}
    assert len(D.select(fs, "all")) == 3000
    with pytest.raises(ConfigError, match="unknown FSDD speaker 'bob'"):
        D.select(fs, "test", holdout="bob")
    with pytest.raises(ConfigError, match="choose one of holdout"):
        D.select(fs, "test", holdout="theo", only="theo")
    with pytest.raises(ConfigError, match="unknown split"):
        D.select(fs, "val")


def test_load_digits_clips_are_word_end_aligned(fs):
    ds = load_dataset("digits", "test", holdout="theo")
    assert ds.x.shape == (500, 74, 32) and ds.labels == D.DIGITS_LABELS and ds.n_classes == 11
    assert ds.meta["protocol"] == "holdout:theo" and ds.meta["speakers_in_split"] == ["theo"]
    assert set(ds.groups) == {fs.speaker_id("theo")} and ds.meta["features"]["sample_rate"] == 8000
    a = load_dataset("digits", "test", features="audio", holdout="theo")
    assert a.x.shape == (500, 12000, 1)
    idx = D.select(fs, "test", holdout="theo")
    n, tail = D.clip_samples()
    for k in (0, 7):
        u = fs.words[idx[k]]
        m = min(len(u), n - tail)
        np.testing.assert_array_equal(a.x[k, n - tail - m : n - tail, 0], u[-m:])
        assert not a.x[k, n - tail :, 0].any() and not a.x[k, : n - tail - m, 0].any()
    # the features are those of the front end, computed on the clip
    from edgeseq.data.features import compute

    np.testing.assert_array_equal(ds.x[:3], compute(a.x[:3, :, 0], D.FRONT_END))


def test_aligned_clips_crop_long_words_at_their_start():
    u = np.arange(1, 11, dtype=np.float32)
    c = S.aligned_clips([u, u[:3]], 8, 2)
    np.testing.assert_array_equal(c[0], [5, 6, 7, 8, 9, 10, 0, 0])
    np.testing.assert_array_equal(c[1], [0, 0, 0, 1, 2, 3, 0, 0])
    with pytest.raises(ConfigError):
        S.aligned_clips([u], 8, 8)


def test_digit_stream(fs):
    a, sr, ev = D.digit_stream(40.0, speakers=["theo"], seed=3, snr_db=None)
    b, _, ev2 = D.digit_stream(40.0, speakers=["theo"], seed=3, snr_db=None)
    assert sr == 8000 and a.shape == (320000,) and np.array_equal(a, b) and ev == ev2
    assert len(ev) >= 10 and all(lab in D.DIGIT_WORDS for _, _, lab in ev)
    assert all(e1 <= s2 for (_, e1, _), (s2, _, _) in zip(ev, ev[1:])) and ev[-1][1] <= 40.0
    mask = np.zeros(a.size, bool)
    for s, e, _ in ev:
        mask[int(round(s * sr)) : int(round(e * sr))] = True
    assert not a[~mask].any()  # no noise asked for: silence between the words
    # every word is one of theo's recordings (scaled)
    s, e, lab = ev[0]
    seg = a[int(round(s * sr)) : int(round(e * sr))].astype(np.float64)
    cands = [
        u
        for u, d, spk in zip(fs.words, fs.digit, fs.speaker)
        if len(u) == seg.size and D.DIGIT_WORDS[d] == lab and spk == fs.speaker_id("theo")
    ]
    assert any(abs(np.corrcoef(seg, u)[0, 1]) > 0.999 for u in cands)
    noisy, _, ev3 = D.digit_stream(40.0, speakers=["theo"], seed=3, snr_db=10.0)
    assert ev3 == ev and noisy[~mask].std() > 0
    t, _, evt = D.digit_stream(20.0, takes=range(5), seed=0, snr_db=None)
    assert len(evt) >= 5
    with pytest.raises(ConfigError, match="no FSDD recordings"):
        D.digit_stream(10.0, speakers=["theo"], takes=[99])


def test_frame_targets_label_the_end_of_each_word():
    win, hop = 240, 160
    words = [(1000, 4000, 3), (9000, 9500, 7)]
    t = S.frame_targets(words, 80, win, hop, background=10, pre=2, post=5)
    e1 = S.word_end_frame(4000, win, hop)
    assert e1 * hop + win >= 4000 > (e1 - 1) * hop + win
    assert (t[e1 - 2 : e1 + 5] == 3).all() and t[e1 + 5] == 10 and (t[e1 - 5 : e1 - 2] == S.IGNORE).all()
    assert (t[: e1 - 5] == 10).all()  # before the word and inside it: background
    e2 = S.word_end_frame(9500, win, hop)
    assert (t[e2 - 2 : e2 + 5] == 7).all() and (t[e2 + 5 :] == 10).all()


def test_training_sequences_are_seeded_and_labelled(fs):
    cfg = S.SequenceConfig(seconds=2.0)
    audio = list(fs.audio[:40])
    y = fs.digit[:40]
    x1, t1 = S.training_sequences(audio, y, 6, cfg, 8000, 240, 160, 10, np.random.default_rng(5))
    x2, t2 = S.training_sequences(audio, y, 6, cfg, 8000, 240, 160, 10, np.random.default_rng(5))
    assert x1.shape == (6, 16000) and t1.shape == (6, 99) and np.array_equal(x1, x2) and np.array_equal(t1, t2)
    assert np.abs(x1).max() <= 1.0
    words = t1[(t1 >= 0) & (t1 < 10)]
    assert set(np.unique(words)) <= set(y.tolist()) and (t1 == 10).any() and (t1 == S.IGNORE).any()
    x3, _ = S.training_sequences(audio, y, 6, cfg, 8000, 240, 160, 10, np.random.default_rng(6))
    assert not np.array_equal(x1, x3)
    np.testing.assert_allclose(S.change_speed(np.arange(100, dtype=np.float32), 2.0).size, 50)


def test_front_end_from_its_dict_form():
    assert feature_config(D.FRONT_END.to_dict()) == D.FRONT_END
    assert feature_config({"kind": "mfcc", "n_mfcc": 13}).n_features == 13
    assert isinstance(feature_config({"kind": "logmel"}), LogMel)
    with pytest.raises(ConfigError, match="unknown front-end field"):
        feature_config({"kind": "logmel", "bands": 3})


def test_words_are_the_recordings_with_their_silence_trimmed(fs):
    cut = np.array([len(a) - len(w) for a, w in zip(fs.audio, fs.words)])
    assert (cut >= 0).all() and cut.sum() > 5 * 8000  # up to 0.7 s of room noise after some words
    for i in (0, 1234, int(np.argmax(cut))):
        a, w = fs.audio[i], fs.words[i]
        starts = [j for j in range(0, len(a) - len(w) + 1, 80) if np.array_equal(a[j : j + len(w)], w)]
        assert starts, i  # a contiguous piece, cut on the 10 ms grid


def test_calibration_features_follow_the_models_front_end():
    """A model trained on mean-normalised features is calibrated on them (the task's split recomputed
    with its front end); a model on the standard front end gets the task's own features."""
    from types import SimpleNamespace

    from edgeseq.quant.tasks import task_data

    g = SimpleNamespace(in_features=32)
    plain = task_data("digits-only-theo", g, calib=8, val=0)
    same = task_data("digits-only-theo", g, calib=8, val=0, front_end=D.FRONT_END.to_dict())
    np.testing.assert_array_equal(plain.x, same.x)
    fe = feature_config({**D.FRONT_END.to_dict(), "cmn_frames": 50.0})
    cmn = task_data("digits-only-theo", g, calib=8, val=0, front_end=fe.to_dict())
    audio = load_dataset("digits", "train", features="audio", only="theo")
    from edgeseq.data.features import compute

    np.testing.assert_array_equal(cmn.x[:3], compute(audio.x[:3, :, 0], fe))
    assert not np.allclose(cmn.x, plain.x)
