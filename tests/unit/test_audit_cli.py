"""``edgeseq audit`` end to end on a small model: every section of audit.json is measured (not
synthetic), the report embeds its plots, the exit status follows the budget verdict, and bad input
(NaN calibration data, wrong shapes, missing arrays, an existing output) fails with one clear line
and leaves nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import edgeseq

from .zoo_cases import build


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("audit")
    g = edgeseq.capture(build("lmu_dense", in_features=6, n_classes=4), torch.zeros(1, 8, 6))
    g.save(d / "m.esq")
    return d / "m.esq"


@pytest.fixture(scope="module")
def data_file(tmp_path_factory, model_file):
    d = tmp_path_factory.mktemp("audit-data")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 24, 6)).astype(np.float32)
    x[..., 0] = x[..., 0] * 8 + 3  # a raw-scale outlier channel, as accelerometer g with gravity
    g = edgeseq.load(model_file)
    out, _ = edgeseq.reference(g, x.astype(np.float64))
    logits = out[0] if isinstance(out, (tuple, list)) else out
    y = logits.argmax(-1)  # the float model is right by construction: every quantization flip costs accuracy
    np.savez(d / "d.npz", x=x[48:96], y=y[48:96], calib_x=x[:48], val_x=x[96:], val_y=y[96:])
    return d / "d.npz"


def cli(*args):
    return subprocess.run([sys.executable, "-m", "edgeseq", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def audited(model_file, data_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit-out") / "a"
    p = cli("audit", model_file, "--data", data_file, "--out", out, "--budget", "0.5", "--quiet")
    return p, out


def test_audit_writes_every_measured_section(audited):
    p, out = audited
    assert p.returncode in (0, 1), p.stderr
    assert sorted(f.name for f in out.iterdir()) == ["audit.json", "plan.q.esq", "report.html"]
    a = json.loads((out / "audit.json").read_text())
    kinds = {r["kind"] for r in a["accuracy"]}
    assert {"float", "naive", "plan", "ort_baseline"} <= kinds
    fl = next(r for r in a["accuracy"] if r["kind"] == "float")
    assert fl["accuracy"] == 1.0  # labels are the float model's decisions
    plan = next(r for r in a["accuracy"] if r["kind"] == "plan")
    flips = {r["variant"]: r for r in a["decision_flips"]}
    # accuracy and flip rate are two views of the same decisions here
    assert abs((1 - plan["accuracy"]) - flips["edgeseq_plan"]["rate"]) < 1e-12
    assert a["fake_vs_int"]["edgeseq_plan"] >= 0.999
    # the raw-scale channel 0 is found as the input's outlier
    inp = [r for r in a["outliers"] if r["tensor"].startswith("x")]
    assert len(inp) == 6 and max(inp, key=lambda r: r["ratio"])["channel"] == 0
    growth = [r for r in a["error_growth"] if r["variant"] == "edgeseq_plan"]
    assert growth and all(len(r["t"]) == 24 == len(r["error"]) for r in growth)
    assert any(r["kind"] == "weight" for r in a["sqnr"]) and any(r["kind"] != "weight" for r in a["sqnr"])
    assert a["sensitivity"] and a["sensitivity"][0]["rank"] == 1
    assert {r["variant"] for r in a["sizes"]} >= {"naive_int8", "edgeseq_plan"}
    ours = [r for r in a["sizes"] if r["variant"] in ("naive_int8", "edgeseq_plan")]
    assert all(0 < r["weight_bytes"] < 0.5 * r["float_bytes"] for r in ours), ours
    assert a["plan"] and a["ort_baseline"]["variants"]
    # every working onnxruntime variant was measured on the validation data too; the plan's search was
    # asked to match the best of them there (never more lenient than the budget)
    ok = [v for v in a["ort_baseline"]["variants"] if v.get("status") == "ok"]
    assert ok and all(0.0 <= v["validation_accuracy"] <= 1.0 for v in ok)
    ps = a["plan_search"]
    assert ps["budget_points"] == 0.5 and 0.0 <= ps["search_budget_points"] <= 0.5
    comp = a["comparison"]["any"]
    assert comp["selection"] == "chosen on validation data"
    chosen = next(v for v in ok if f"ort:{v['export']}/{v['method']}" == comp["best_ort_variant"])
    assert chosen["validation_accuracy"] == max(v["validation_accuracy"] for v in ok)
    assert comp["oracle_ort_accuracy"] == max(v["accuracy"] for v in ok)
    # the exit status is the verdict, and the verdict is the budget check on the measured numbers
    drop = 100 * (fl["accuracy"] - plan["accuracy"])
    assert a["verdict"]["pass"] == (drop <= 0.5)
    assert p.returncode == (0 if a["verdict"]["pass"] else 1)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4 and "http://" not in html.replace("http://www.w3.org", "")


def test_plan_file_reloads_and_runs(audited, data_file):
    from edgeseq.quant import load_quantized

    _, out = audited
    qg = load_quantized(out / "plan.q.esq")
    x = np.load(data_file)["x"][:3]
    (y,), _ = qg.run(x)
    assert y.shape == (3, 4) and np.all(np.isfinite(y))


def test_a_zero_budget_that_is_missed_exits_one(model_file, data_file, tmp_path):
    """With budget 0 on data the float model gets 100% right, any flip by the plan fails the audit."""
    out = tmp_path / "a"
    p = cli("audit", model_file, "--data", data_file, "--out", out, "--budget", "0", "--no-ort", "--quiet")
    a = json.loads((out / "audit.json").read_text())
    plan = next(r for r in a["accuracy"] if r["kind"] == "plan")
    assert p.returncode == (0 if plan["accuracy"] == 1.0 else 1)
    assert a["verdict"]["pass"] == (plan["accuracy"] == 1.0)


@pytest.mark.parametrize(
    "case,msg",
    [
        ("nan", "calibration data contains a NaN/Inf value (first: nan at index (2, 3, 1))"),
        ("missing_y", "missing array(s) ['y']"),
        ("features", "has 5 features per step; the model expects 6"),
        ("labels", "integer class ids"),
    ],
)
def test_bad_data_is_one_line_and_leaves_nothing(model_file, tmp_path, case, msg):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 10, 6)).astype(np.float32)
    arrays = {"x": x, "y": np.zeros(8, np.int64)}
    if case == "nan":
        arrays["calib_x"] = x.copy()
        arrays["calib_x"][2, 3, 1] = np.nan
    elif case == "missing_y":
        del arrays["y"]
    elif case == "features":
        arrays["x"] = rng.normal(size=(8, 10, 5)).astype(np.float32)
    elif case == "labels":
        arrays["y"] = np.zeros(8, np.float32)
    np.savez(tmp_path / "d.npz", **arrays)
    out = tmp_path / "out"
    p = cli("audit", model_file, "--data", tmp_path / "d.npz", "--out", out, "--no-ort", "--quiet")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith("edgeseq: error: ") and msg in line, p.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_existing_output_needs_force(model_file, data_file, tmp_path):
    out = tmp_path / "a"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    p = cli("audit", model_file, "--data", data_file, "--out", out, "--no-ort", "--quiet")
    assert p.returncode == 2 and "--force" in p.stderr
    assert (out / "keep.txt").read_text() == "mine"


def test_unknown_data_name(model_file, tmp_path):
    p = cli("audit", model_file, "--data", "mnist", "--out", tmp_path / "a", "--quiet")
    assert p.returncode == 2 and "--data must be har, kws, smartwatch or an .npz file" in p.stderr
