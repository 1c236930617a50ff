"""The shipped default models: each loads safely by name, records the command that reproduces it,
stays small, and its recorded test accuracy is what the reference interpreter measures today (HAR:
the whole UCI HAPT test split, recomputed here)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeseq.models import load_model, shipped

EXPECTED = {
    "har_gru": ("har", "gru"),
    "har_lmu": ("har", "lmu"),
    "har_l2mu": ("har", "l2mu"),
    "kws_lmu": ("kws", "lmu"),
    "kws_lmuformer": ("kws", "lmuformer"),
}


def test_the_defaults_are_shipped_and_small():
    ships = shipped()
    assert set(EXPECTED) <= set(ships)
    total = sum(p.stat().st_size for d in ships.values() for p in d.iterdir() if p.is_file())
    assert total <= 1600 * 1024, f"shipped models take {total} bytes"  # ~200 KB each with their curves


# the spoken-digits models (FSDD, real speech): (recipe task, arch, protocol, test clips)
DIGITS = {
    "digits_lmu": ("digits", "lmu", "own", 300),
    "digits_lmu_heldout": ("digits-heldout-theo", "lmu", "holdout:theo", 500),
    "digits_lmuformer": ("digits", "lmuformer", "own", 300),
}


@pytest.mark.parametrize("name", list(DIGITS))
def test_digits_models_record_protocol_folds_and_command(name):
    import importlib.util
    import shlex
    from pathlib import Path

    script = Path(__file__).parents[2] / "scripts" / "train_models.py"
    spec = importlib.util.spec_from_file_location("train_models", script)
    tm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tm)
    m = json.loads((shipped()[name] / "metrics.json").read_text())
    task, arch, protocol, n = DIGITS[name]
    assert (m["task"], m["recipe_task"], m["arch"], m["protocol"]) == ("digits", task, arch, protocol)
    assert m["command"] == shlex.join(tm.command(name)) and m["test"]["n"] == n
    assert m["front_end"]["sample_rate"] == 8000 and m["streaming"]["frame_rate"] == 50.0
    lm = load_model(name)
    assert sum(p.numel() for p in lm.module.parameters()) == m["parameters"]
    if arch != "lmu" and "leave_speakers_out" not in m:  # the spiking model's folds: scripts/train_models.py
        return
    folds = m["leave_speakers_out"]["folds"]
    assert sorted(folds) == sorted(tm.DIGITS_SPEAKERS)
    assert m["leave_speakers_out_mean"] == pytest.approx(np.mean(list(folds.values())))
    if protocol.startswith("holdout:"):  # the shipped fold is one of the folds
        assert folds[protocol.split(":")[1]] == m["test"]["accuracy"]


def test_streaming_kws_model_records_its_recipe_and_detection_rule():
    """kws_stream_lmu, the model `edgeseq demo kws` runs on one continuous state: its command, the
    50 frames/s front end it streams at, and the detection rule chosen on held-out validation voices."""
    m = json.loads((shipped()["kws_stream_lmu"] / "metrics.json").read_text())
    assert (m["task"], m["recipe_task"], m["arch"]) == ("kws", "kws-stream", "lmu")
    assert (
        m["command"]
        == "edgeseq train --task kws-stream --model lmu --out edgeseq/models/kws_stream_lmu --force --quiet"
    )
    assert m["front_end"]["sample_rate"] == 16000 and m["streaming"]["frame_rate"] == 50.0
    det = m["streaming"]["detector"]
    assert 0.0 < det["threshold"] < 1.0 and det["smooth"] >= 1
    assert m.get("train_cpu_seconds", m["train_seconds"]) <= 15 * 60
    lm = load_model("kws_stream_lmu")
    assert list(lm.labels) == m["labels"]
    assert sum(p.numel() for p in lm.module.parameters()) == m["parameters"] <= 80_000


@pytest.mark.parametrize("name", list(EXPECTED))
def test_metrics_record_the_reproducing_command(name):
    d = shipped()[name]
    m = json.loads((d / "metrics.json").read_text())
    task, arch = EXPECTED[name]
    assert m["task"] == task and m["arch"] == arch
    assert m["command"] == f"edgeseq train --task {task} --model {arch} --out edgeseq/models/{name} --force --quiet"
    # the training's own CPU time where recorded (single-threaded recipes: the wall time of an idle machine;
    # wall time on a shared, loaded machine measures the load)
    assert m.get("train_cpu_seconds", m["train_seconds"]) <= 15 * 60
    assert 0 < m["parameters"] <= 80_000 and 0.0 <= m["test"]["accuracy"] <= 1.0
    lm = load_model(name)
    assert lm.task == task and sum(p.numel() for p in lm.module.parameters()) == m["parameters"]
    assert (d / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", ["har_gru", "har_lmu", "har_l2mu"])
def test_recorded_har_accuracy_is_reproduced_by_the_reference(name):
    from edgeseq.data import load_dataset
    from edgeseq.ir.interpret import run

    lm = load_model(name)
    test = load_dataset("har", "test", classes=6)
    pred = np.concatenate(
        [run(lm.graph, test.x[i : i + 512].astype(np.float64))[0][0].argmax(-1) for i in range(0, len(test.x), 512)]
    )
    acc = float(np.mean(pred == test.y))
    assert acc == pytest.approx(lm.metrics["test"]["accuracy"], abs=0.002)
    assert len(test.y) == lm.metrics["test"]["n"]


def test_export_quant_edgeseq_calibrates_on_the_models_task(tmp_path):
    import subprocess
    import sys

    from edgeseq.quant import load_quantized

    out = tmp_path / "q"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeseq",
            "export",
            "har_lmu",
            "--target",
            "onnx",
            "--quant",
            "edgeseq",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "calibration data of task 'har'" in r.stderr
    q = load_quantized(out / "quantized.esq")
    assert q.info["calibration"]["sequences"] == 512 and q.info["search"]["validation_sequences"] == 1024
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeseq",
            "export",
            "har_lmu",
            "--target",
            "onnx",
            "--quant",
            "edgeseq",
            "--data",
            "kws",
            "--out",
            str(tmp_path / "bad"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 2 and "40 features per step; the model expects 6" in r.stderr
    assert not (tmp_path / "bad").exists()
