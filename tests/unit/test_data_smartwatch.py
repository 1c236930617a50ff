"""Smartwatch exercises from seglearn's packaged file: restricted reading, leave-subjects-out windows, fixture."""

from __future__ import annotations

import io
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeseq.data import smartwatch as sw
from edgeseq.data.dataset import Dataset
from edgeseq.data.registry import load_dataset
from edgeseq.errors import ConfigError, DatasetError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("edgeseq-cache")


@pytest.fixture(scope="module")
def reference():
    """The packaged file read the trusted way (test only): numpy's own pickle loading."""
    d = np.load(sw.packaged_source(), allow_pickle=True).item()
    return [np.asarray(x, dtype=np.float32) for x in d["X"]], np.asarray(d["y"]), np.asarray(d["subject"])


def test_series_equal_the_packaged_arrays(cache, reference):
    series, y, subject = sw.smartwatch_series(cache_dir=cache)
    rx, ry, rs = reference
    assert len(series) == 140 and all(s.shape[1] == 6 and s.dtype == np.float32 for s in series)
    for a, b in zip(series, rx):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(subject, rs)
    assert np.bincount(y).tolist() == [20] * 7
    assert sorted(set(subject.tolist())) == list(range(1, 11))
    assert "seglearn" not in sys.modules and "sklearn" not in sys.modules


def test_leave_subjects_out_windows(cache, reference):
    rx, ry, rs = reference
    tr = sw.load_smartwatch("train", cache_dir=cache)
    te = sw.load_smartwatch("test", cache_dir=cache)
    assert set(tr.groups.tolist()).isdisjoint(te.groups.tolist())
    assert sorted(set(te.groups.tolist())) == list(sw.SMARTWATCH_TEST_SUBJECTS)
    assert tr.labels == sw.SMARTWATCH_LABELS and tr.n_classes == 7
    assert tr.x.shape[1:] == (128, 6) and tr.x.dtype == np.float32
    expected = {"train": 0, "test": 0}
    for s, subj in zip(rx, rs):
        expected["test" if subj in sw.SMARTWATCH_TEST_SUBJECTS else "train"] += (len(s) - 128) // 64 + 1
    assert (len(tr), len(te)) == (expected["train"], expected["test"])
    assert min(te.class_counts().values()) > 50 and min(tr.class_counts().values()) > 150
    # window k of the first training series is samples [64k, 64k + 128) of that series
    first = next(i for i, subj in enumerate(rs) if subj not in sw.SMARTWATCH_TEST_SUBJECTS)
    for k in (0, 1, 5):
        np.testing.assert_array_equal(tr.x[k], rx[first][64 * k : 64 * k + 128])
        assert tr.y[k] == ry[first]


def test_other_split_and_window(cache):
    d = sw.load_smartwatch("test", window=100, overlap=0.0, test_subjects=(1, 2), cache_dir=cache)
    assert d.x.shape[1] == 100 and sorted(set(d.groups.tolist())) == [1, 2] and d.meta["step"] == 100
    with pytest.raises(ConfigError):
        sw.load_smartwatch("test", test_subjects=(11,), cache_dir=cache)
    with pytest.raises(ConfigError):
        sw.load_smartwatch("val", cache_dir=cache)
    parts = sum(len(sw.load_smartwatch(s, cache_dir=cache)) for s in ("train", "test"))
    assert len(load_dataset("smartwatch", "all", cache_dir=cache)) == parts


def test_fixture_is_what_the_loader_gives(cache):
    fx = Dataset.load(FIXTURES / "smartwatch_tiny.npz")
    assert len(fx) == 2 * 7 * 2 and sorted(set(fx.groups.tolist())) == [1, 8]
    full = sw.load_smartwatch("all", cache_dir=cache)
    for g in (1, 8):
        for c in range(7):
            want = full.x[(full.groups == g) & (full.y == c)][:2]
            got = fx.x[(fx.groups == g) & (fx.y == c)]
            np.testing.assert_array_equal(got, want)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch evil-was-here",))


def test_a_tampered_npy_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "watch_dataset.npy"
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    bad.write_bytes(buf.getvalue() + pickle.dumps({"X": [_Evil()]}, protocol=2))
    with pytest.raises(DatasetError, match="refusing"):
        sw.smartwatch_series(source=bad, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "evil-was-here").exists()
    with pytest.raises(DatasetError, match="does not exist"):
        sw.smartwatch_series(source=tmp_path / "nope.npy", cache_dir=tmp_path / "cache")
