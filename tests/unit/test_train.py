"""Training recipes and safe checkpoints, on the tiny HAR fixture (real HAPT windows)."""

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeseq.data import Dataset
from edgeseq.errors import ArtifactError, CheckpointError, ConfigError
from edgeseq.train import checkpoint as ck
from edgeseq.train.loop import TrainConfig, evaluate, predict, split_validation
from edgeseq.train.recipes import RECIPES, TASKS, recipe, train_task

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def har_tiny():
    return Dataset.load(FIXTURES / "har_tiny.npz")


@pytest.fixture(scope="module")
def trained(har_tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "run"
    m = train_task(
        "har",
        "lmu",
        out,
        datasets=(har_tiny, har_tiny, {}),
        progress=False,
        log=lambda *a: None,
        model_overrides={"hidden": 8, "memory_d": 2, "order": 4},
        train_overrides={"epochs": 3, "batch_size": 8, "val_fraction": 0.25},
    )
    return out, m


def test_every_recipe_builds_a_model():
    from edgeseq.nn import build_model
    from edgeseq.train.stream import StreamTrainConfig

    for task, table in RECIPES.items():
        assert task in TASKS
        for arch in table:
            model_cfg, train_cfg = recipe(task, arch)
            (StreamTrainConfig if TASKS[task].get("trainer") == "stream" else TrainConfig).from_dict(train_cfg)
            build_model(arch, 6, 6, **model_cfg)


def test_unknown_recipe_options_are_named():
    with pytest.raises(ConfigError, match="unknown task 'speech'"):
        recipe("speech", "lmu")
    with pytest.raises(ConfigError, match="no 'transformer' recipe"):
        recipe("har", "transformer")
    with pytest.raises(ConfigError, match=r"unknown training option\(s\) \['lr_max'\]"):
        TrainConfig.from_dict({"lr_max": 1})


def test_validation_split_holds_out_whole_subjects(har_tiny):
    train, val = split_validation(har_tiny, 0.25, seed=0)
    assert len(train) + len(val) == len(har_tiny)
    if har_tiny.groups is not None and len(np.unique(har_tiny.groups)) >= 4:
        assert not set(train.groups.tolist()) & set(val.groups.tolist())


def test_train_task_writes_checkpoint_metrics_and_plot(trained, har_tiny):
    out, m = trained
    assert {p.name for p in out.iterdir()} == {"model.ckpt", "metrics.json", "curves.png"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and len(metrics["history"]) == 3
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    assert metrics["command"].startswith("edgeseq train --task har --model lmu")
    model, doc = ck.load_checkpoint(out / "model.ckpt")
    # the reloaded model predicts exactly what was evaluated
    assert evaluate(model, har_tiny)["accuracy"] == pytest.approx(m["test"]["accuracy"])
    assert doc["metrics"]["task"] == "har"


def test_training_is_deterministic(trained, har_tiny, tmp_path):
    out, m = trained
    m2 = train_task(
        "har",
        "lmu",
        tmp_path / "again",
        datasets=(har_tiny, har_tiny, {}),
        progress=False,
        log=lambda *a: None,
        model_overrides={"hidden": 8, "memory_d": 2, "order": 4},
        train_overrides={"epochs": 3, "batch_size": 8, "val_fraction": 0.25},
    )
    a, _ = ck.load_checkpoint(out / "model.ckpt")
    b, _ = ck.load_checkpoint(tmp_path / "again" / "model.ckpt")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert m2["test"] == m["test"]


def test_existing_output_needs_force(trained, har_tiny):
    out, _ = trained
    with pytest.raises(ArtifactError, match="already exists"):
        train_task(
            "har",
            "lmu",
            out,
            datasets=(har_tiny, har_tiny, {}),
            progress=False,
            log=lambda *a: None,
            train_overrides={"epochs": 1},
        )


def test_checkpoint_has_no_pickle_and_detects_corruption(trained, tmp_path):
    out, _ = trained
    raw = (out / "model.ckpt").read_bytes()
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        names = z.namelist()
        assert "checkpoint.json" in names and all(n == "checkpoint.json" or n.endswith(".npy") for n in names)
        for n in names:
            if n.endswith(".npy"):
                np.load(io.BytesIO(z.read(n)), allow_pickle=False)  # plain arrays only
    # flip one byte inside a tensor: the checksum names the tensor
    bad = tmp_path / "bad.ckpt"
    with zipfile.ZipFile(io.BytesIO(raw)) as zin, zipfile.ZipFile(bad, "w") as zout:
        for n in zin.namelist():
            data = zin.read(n)
            if n == "tensors/0001.npy":
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            zout.writestr(n, data)
    with pytest.raises(CheckpointError, match="checksum"):
        ck.load_checkpoint(bad)
    trunc = tmp_path / "trunc.ckpt"
    trunc.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError):
        ck.load_checkpoint(trunc)
    pick = tmp_path / "pickle.ckpt"
    torch.save({"a": torch.zeros(2)}, pick)  # a torch pickle is refused, never unpickled
    with pytest.raises(CheckpointError):
        ck.load_checkpoint(pick)


def _rewrite_doc(src, doc, dst):
    raw = io.BytesIO()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(raw, "w") as zout:
        for n in zin.namelist():
            zout.writestr(n, json.dumps(doc) if n == "checkpoint.json" else zin.read(n))
    dst.write_bytes(raw.getvalue())
    return ck.load_checkpoint(dst)


def test_checkpoint_config_mismatch_is_named(trained, tmp_path):
    out, _ = trained
    doc, tensors = ck.read_checkpoint(out / "model.ckpt")
    doc = dict(doc)
    doc["config"] = dict(doc["config"], hidden=9)
    with pytest.raises(CheckpointError, match="modified after saving"):
        _rewrite_doc(out / "model.ckpt", doc, tmp_path / "edited.ckpt")
    doc.pop("content_sha256")  # a checkpoint without a content hash (older edgeseq): the shapes still catch it
    raw = io.BytesIO()
    with zipfile.ZipFile(out / "model.ckpt") as zin, zipfile.ZipFile(raw, "w") as zout:
        for n in zin.namelist():
            zout.writestr(n, json.dumps(doc) if n == "checkpoint.json" else zin.read(n))
    p = tmp_path / "mismatch.ckpt"
    p.write_bytes(raw.getvalue())
    with pytest.raises(CheckpointError, match="shape"):
        ck.load_checkpoint(p)


def test_predict_batches_match_whole(trained, har_tiny):
    out, _ = trained
    model, _ = ck.load_checkpoint(out / "model.ckpt")
    whole = predict(model, har_tiny.x, batch_size=len(har_tiny))
    parts = predict(model, har_tiny.x, batch_size=5)
    np.testing.assert_allclose(whole, parts, rtol=1e-5, atol=1e-5)


def test_cli_train_tiny(tmp_path, monkeypatch, har_tiny):
    from edgeseq.cli import main
    from edgeseq.train import recipes

    monkeypatch.setattr(recipes, "load_task_data", lambda task, kw=None, arch=None: (har_tiny, har_tiny, {}))
    rc = main(
        [
            "train",
            "--task",
            "har",
            "--model",
            "gru",
            "--out",
            str(tmp_path / "g"),
            "--epochs",
            "1",
            "--quiet",
            "--set",
            "hidden=8",
            "--train-set",
            "batch_size=8",
            "--train-set",
            "val_fraction=0.25",
        ]
    )
    assert rc == 0
    m = json.loads((tmp_path / "g" / "metrics.json").read_text())
    assert m["model_config"]["hidden"] == 8 and m["parameters"] < 2000
    assert main(["train", "--task", "har", "--model", "gru", "--out", str(tmp_path / "h"), "--set", "nonsense"]) == 2


def test_time_warp_keeps_length_and_ends_resamples_monotonically_and_is_seeded():
    from edgeseq.train.loop import _time_warp

    t = torch.arange(64, dtype=torch.float32)
    x = torch.stack([t, -t, torch.sin(t / 5)], dim=-1)[None].repeat(8, 1, 1)  # (8, 64, 3)
    a = _time_warp(x, 0.3, torch.Generator().manual_seed(3))
    b = _time_warp(x, 0.3, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b)
    torch.testing.assert_close(a[:, [0, -1]], x[:, [0, -1]])
    ramp = a[..., 0]
    assert (ramp[:, 1:] >= ramp[:, :-1]).all()  # a change of speed, never of direction
    assert (ramp - t).abs().max() > 1.0  # and the speed did change
    torch.testing.assert_close(_time_warp(x, 0.0, torch.Generator().manual_seed(0)), x)


def test_weight_average_follows_the_warmed_up_decay():
    from edgeseq.train.loop import _WeightAverage

    lin = torch.nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.fill_(0.0)
    avg = _WeightAverage(lin, 0.9)
    expect = torch.zeros_like(lin.weight)
    for n in range(1, 6):
        with torch.no_grad():
            lin.weight.fill_(float(n))
        avg.update(lin)
        d = min(0.9, (1 + n) / (10 + n))
        expect = d * expect + (1 - d) * n
    torch.testing.assert_close(avg.state["weight"], expect)
    # evaluate() runs with the average and restores the live weights
    seen = avg.evaluate(lin, lambda: lin.weight.detach().clone())
    torch.testing.assert_close(seen, expect)
    assert (lin.weight == 5.0).all()
    with pytest.raises(ConfigError, match="ema must lie in"):
        _WeightAverage(lin, 1.0)


def test_training_with_time_warp_and_weight_average_is_deterministic(har_tiny):
    from edgeseq.nn import build_model
    from edgeseq.train.loop import fit

    cfg = TrainConfig(epochs=2, batch_size=8, ema=0.9, augment_time_warp=0.2, augment_rotate=10.0)
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model("gru", 6, 6, hidden=8)
        hist = fit(model, har_tiny, har_tiny, cfg, progress=False, log=lambda *a: None)
        states.append(model.state_dict())
    assert len(hist.epochs) == 2 and 0.0 <= hist.best_val_accuracy <= 1.0
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_stop_after_ends_the_run_on_the_full_schedule(har_tiny):
    from edgeseq.nn import build_model
    from edgeseq.train.loop import fit

    runs = []
    for stop in (0, 2):
        torch.manual_seed(0)
        model = build_model("gru", 6, 6, hidden=8)
        cfg = TrainConfig(epochs=4, batch_size=8, stop_after=stop)
        runs.append(fit(model, har_tiny, har_tiny, cfg, progress=False, log=lambda *a: None))
    full, cut = runs
    assert len(full.epochs) == 4 and len(cut.epochs) == 2 and cut.stopped == "stopped after 2 of 4 epochs"
    # the cut run is the full run's first epochs: the learning-rate schedule spans all 4 epochs in both
    assert [r["loss"] for r in cut.epochs] == [r["loss"] for r in full.epochs[:2]]
