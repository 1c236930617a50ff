"""The quantization audit report: renders every section of a synthetic audit.json into one
self-contained HTML file (embedded PNGs, no external assets), derives the budget verdict, and
rejects malformed audits with an error naming the bad key."""

from __future__ import annotations

import base64
import copy
import json
import re

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from edgeseq.audit.report import render_report, validate_audit, verdict, write_report  # noqa: E402
from edgeseq.errors import ConfigError  # noqa: E402
from edgeseq.reports import html as H  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def synthetic_audit() -> dict:
    t = list(range(0, 128, 8))
    labels = ["walk", "up", "down", "sit", "stand", "lay"]
    rng = np.random.default_rng(0)
    conf = (np.eye(6) * 80 + rng.integers(0, 5, (6, 6))).astype(int).tolist()
    return {
        "model": {
            "name": "har/lmu",
            "arch": "lmu",
            "task": "har",
            "parameters": 13198,
            "checkpoint": "runs/har_lmu/model.ckpt",
        },
        "dataset": {"name": "har", "split": "test", "n": 2874, "steps": 128, "labels": labels},
        "budget": {"max_accuracy_drop_points": 1.0, "max_flip_rate": 0.03, "max_bytes": 20000},
        "accuracy": [
            {"variant": "float32", "kind": "float", "accuracy": 0.913, "bytes": 52792},
            {"variant": "naive_int8", "kind": "naive", "accuracy": 0.62, "agreement_with_float": 0.66, "bytes": 13198},
            {
                "variant": "ort:edgeseq_inline_init/dynamic_subgraph",
                "kind": "ort_baseline",
                "accuracy": 0.87,
                "agreement_with_float": 0.9,
                "note": "12 quantization nodes (3 in loop bodies)",
            },
            {
                "variant": "ort:edgeseq_fused/static_qdq",
                "kind": "ort_baseline",
                "accuracy": None,
                "status": "failed",
                "error": "load: output_dtype INT8 does not match y_zero_point type UINT8",
            },
            {
                "variant": "edgeseq_plan",
                "kind": "plan",
                "accuracy": 0.909,
                "agreement_with_float": 0.985,
                "bytes": 14600,
            },
        ],
        "sqnr": [
            {"tensor": "layers.0/e_x", "layer": "layers.0", "kind": "weight", "sqnr_db": 41.2, "bits": 8},
            {"tensor": "layers.0/A", "layer": "layers.0", "kind": "weight", "sqnr_db": 22.5, "bits": 8},
            {"tensor": "layers.0/m", "layer": "layers.0", "kind": "state", "sqnr_db": 17.9, "bits": 8},
            {"tensor": "head/out", "layer": "head", "kind": "output", "sqnr_db": 28.0, "bits": 8},
        ],
        "error_growth": [
            {
                "layer": "layers.0",
                "state": "m",
                "metric": "rms",
                "t": t,
                "error": [0.001 * (1 + k) for k in range(len(t))],
            },
            {"layer": "layers.0", "state": "h", "metric": "rms", "t": t, "error": [0.002] * len(t)},
        ],
        "outliers": [
            {"tensor": "x", "channel": 0, "absmax": 2.9, "median_absmax": 0.5, "ratio": 5.8},
            {"tensor": "x", "channel": 4, "absmax": 0.6, "median_absmax": 0.5},
        ],
        "decision_flips": [
            {"variant": "naive_int8", "rate": 0.34, "flips": 977, "n": 2874},
            {"variant": "edgeseq_plan", "rate": 0.015, "flips": 43, "n": 2874},
        ],
        "sensitivity": [
            {"name": "layers.0/A", "accuracy_drop_points": 3.4, "how": "int8 per tensor, rest float"},
            {"name": "x (input)", "accuracy_drop_points": 12.0, "sqnr_db": 15.2},
            {"name": "head.weight", "accuracy_drop_points": 0.1},
        ],
        "sizes": [
            {"variant": "float32", "bytes": 52792},
            {"variant": "edgeseq_plan", "bytes": 14600, "float_bytes": 52792, "note": "A/B int16"},
        ],
        "plan": [
            {"tensor": "layers.0/e_x", "dtype": "int8", "granularity": "per_channel", "reason": "weights"},
            {"tensor": "layers.0/A", "dtype": "int16", "granularity": "per_tensor", "reason": "state matrix <tag>"},
            {
                "tensor": "layers.0/m",
                "dtype": "int16",
                "state_policy": "int16 state, int32 accumulate",
                "reason": "error grows over time",
            },
        ],
        "confusion": {"float32": conf, "edgeseq_plan": conf},
        "notes": ["calibrated on 512 training sequences", "scores are <escaped> & safe"],
    }


SECTIONS = (
    "Summary",
    "Accuracy",
    "Decision flips",
    "SQNR per tensor",
    "Error growth over time",
    "Outlier channels",
    "Sensitivity ranking",
    "Sizes",
    "Recommended plan",
    "Confusion matrices",
    "Notes",
)


def test_report_has_every_section_and_embedded_images(tmp_path):
    audit = synthetic_audit()
    path = write_report(audit, tmp_path / "out")
    assert path.name == "report.html"
    doc = path.read_text()
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in doc, title
    assert 'class="banner pass"' in doc and "accuracy budget met" in doc
    imgs = re.findall(r'<img class="plot" alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', doc)
    # accuracy, flips, sqnr, growth, sensitivity, sizes, 2 confusion matrices
    assert len(imgs) == 8
    for b64 in imgs:
        assert base64.b64decode(b64)[:8] == PNG
    # self-contained: no external references at all
    assert not re.search(r'(src|href)="(?!data:)', doc)
    assert "<script" not in doc and "<link" not in doc and "@import" not in doc
    # values and escaping
    assert "91.30%" in doc and "90.90%" in doc and "-0.40" in doc
    assert "output_dtype INT8 does not match" in doc
    assert "&lt;escaped&gt; &amp; safe" in doc and "state matrix &lt;tag&gt;" in doc
    assert "<escaped>" not in doc
    # audit.json is written next to it and re-renders
    saved = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert saved["schema"] == "edgeseq-audit" and saved["version"] == 1
    assert saved["accuracy"] == audit["accuracy"]
    assert "<h2>Accuracy</h2>" in render_report(saved)


def test_budget_verdicts():
    a = synthetic_audit()
    assert verdict(a)[0] is True
    b = copy.deepcopy(a)
    b["budget"]["max_accuracy_drop_points"] = 0.2
    ok, reasons = verdict(b)
    assert ok is False and any("0.40 points > budget 0.2" in r for r in reasons)
    assert 'class="banner fail"' in render_report(b)
    c = copy.deepcopy(a)
    c["budget"]["max_bytes"] = 1000
    assert verdict(c)[0] is False
    d = copy.deepcopy(a)
    d["decision_flips"] = []
    d["budget"] = {"max_flip_rate": 0.01}
    ok, reasons = verdict(d)  # falls back to 1 - agreement_with_float = 0.015
    assert ok is False and "1.50%" in reasons[0]
    e = copy.deepcopy(a)
    del e["budget"]
    assert verdict(e)[0] is None and 'class="banner info"' in render_report(e)
    f = copy.deepcopy(a)
    f["verdict"] = {"pass": False, "reasons": ["explicit"]}
    assert verdict(f) == (False, ["explicit"])


def test_minimal_audit_marks_missing_sections():
    doc = render_report({"model": {"name": "m"}, "accuracy": [{"variant": "f", "kind": "float", "accuracy": 0.5}]})
    for title in (
        "SQNR per tensor",
        "Error growth over time",
        "Outlier channels",
        "Sensitivity ranking",
        "Recommended plan",
    ):
        assert f"<h2>{title}</h2>" in doc
    assert doc.count("not measured in this audit") >= 5
    assert "BUDGET NOT JUDGED" in doc


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda a: a.pop("model"), "audit.model"),
        (lambda a: a.update(accuracy=[]), "audit.accuracy"),
        (lambda a: a["accuracy"][1].update(kind="magic"), "audit.accuracy[1].kind"),
        (lambda a: a["accuracy"][1].update(accuracy=1.5), "audit.accuracy[1].accuracy"),
        (lambda a: a["accuracy"][2].update(variant="float32"), "audit.accuracy[2].variant"),
        (lambda a: a["sqnr"][0].update(sqnr_db="high"), "audit.sqnr[0].sqnr_db"),
        (lambda a: a["sqnr"][0].update(sqnr_db=float("nan")), "audit.sqnr[0].sqnr_db"),
        (lambda a: a["error_growth"][0].update(t=[0, 1]), "audit.error_growth[0]"),
        (lambda a: a["outliers"][0].pop("channel"), "audit.outliers[0].channel"),
        (lambda a: a["decision_flips"][0].update(rate=2), "audit.decision_flips[0].rate"),
        (lambda a: a["confusion"].update(bad=[[1, 2]]), "audit.confusion.bad"),
        (lambda a: a.update(schema="other"), "audit.schema"),
        (lambda a: a.update(version=99), "audit.version"),
        (lambda a: a.update(notes="x"), "audit.notes"),
    ],
)
def test_malformed_audits_name_the_key(mutate, where):
    a = synthetic_audit()
    mutate(a)
    with pytest.raises(ConfigError) as ei:
        validate_audit(a)
    assert ei.value.where == where


def test_write_report_is_atomic_on_bad_input(tmp_path):
    with pytest.raises(ConfigError):
        write_report({"model": {"name": "m"}, "accuracy": "x"}, tmp_path / "o")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_html_helpers():
    assert H.bar_png(["a", "b"], {"s1": [1, 2], "s2": [2, None]})[:8] == PNG
    assert H.line_png([0, 1, 2], {"x": [1, 2, 3]}, logy=True, hlines={"ref": 2})[:8] == PNG
    assert H.confusion_png([[3, 1], [0, 4]], ["a", "b"])[:8] == PNG
    t = H.table(
        [{"a": 1, "b": 0.123456, "c": "<x>"}, {"a": None, "b": float("nan"), "c": True}],
        highlight=[False, True],
        caption="cap",
    )
    assert "<caption>cap</caption>" in t and "&lt;x&gt;" in t and '<tr class="hl">' in t
    assert '<td class="num">0.1235</td>' in t and "<td>-</td>" in t and "<td>yes</td>" in t
    assert H.fmt(1.5e-6) == "1.500e-06" and H.fmt(12345678.0) == "1.235e+07" and H.fmt(3) == "3"
    page = H.page("T <1>", [H.section("S", H.banner(True, "ok"), sid="s")], subtitle="sub")
    assert page.startswith("<!DOCTYPE html>") and "<title>T &lt;1&gt;</title>" in page and 'id="s"' in page
