"""edgeseq validate on ONNX artifacts (no toolchain needed): checks, tolerance policy, data slices,
report files, the CLI, and failures that name the check on perturbed or modified artifacts.
The same on every other artifact kind: tests/integration/test_validate_targets.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import edgeseq
from edgeseq.cli import main as cli
from edgeseq.errors import ArtifactError, ConfigError, DatasetError, ShapeError, ToleranceError
from edgeseq.ir import GraphBuilder, NeuronParams
from edgeseq.ir import ops as O
from edgeseq.util.fs import sha256_file
from edgeseq.validate import FormatTolerance, NumberFormat, TolerancePolicy, detect_kind, open_artifact, validate
from edgeseq.validate.tolerance import format_of

from .zoo_cases import build

# ------------------------------------------------------------------------------------------- helpers


def model_file(art_dir: Path) -> Path:
    """The file of an artifact that holds its weights (model.onnx, model.so, the C binary)."""
    manifest = json.loads((art_dir / "manifest.json").read_text())
    kind = detect_kind(manifest)
    rel = {
        "onnx": manifest.get("model", "model.onnx"),
        "tvm": manifest.get("library", "model.so"),
        "c": manifest.get("binary"),
    }[kind]
    return art_dir / rel


def perturb_weights(art_dir, *, rehash: bool = True, count: int = 12, factor: float = 3.0) -> int:
    """Scale ``count`` stored float32 values of the largest weight matrix inside the artifact's model
    file (each located by its exact bytes, used only where they occur once). With ``rehash`` the
    manifest's sha256 is updated too, as a buggy exporter would leave it: only the numbers can tell."""
    art_dir = Path(art_dir)
    from edgeseq.ir.serialize import load

    g = load(art_dir / "graph.esq")
    mats = [a for n in g.nodes for a in n.op.arrays().values() if a.ndim == 2]
    w = max(mats, key=lambda a: a.size).astype(np.float32).ravel()
    path = model_file(art_dir)
    data = bytearray(path.read_bytes())
    changed = 0
    for v in w:
        pattern = v.tobytes()
        if abs(float(v)) < 0.05 or data.count(pattern) != 1:
            continue
        i = data.find(pattern)
        data[i : i + 4] = np.float32(float(v) * factor + 0.5).tobytes()
        changed += 1
        if changed == count:
            break
    assert changed == count, f"found only {changed} weights to perturb in {path.name}"
    path.write_bytes(bytes(data))
    if rehash:
        mpath = art_dir / "manifest.json"
        manifest = json.loads(mpath.read_text())
        rel = path.relative_to(art_dir).as_posix()
        digest = sha256_file(path)
        manifest["files"][rel] = {"sha256": digest, "bytes": path.stat().st_size}
        mpath.write_text(json.dumps(manifest, indent=2))
    return changed


def copy_artifact(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def gru_graph():
    torch.manual_seed(0)
    return edgeseq.capture(build("gru", in_features=6, n_classes=6), torch.randn(1, 8, 6))


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory, gru_graph):
    from edgeseq.export.onnx import export_onnx

    d = tmp_path_factory.mktemp("art") / "gru_onnx"
    export_onnx(gru_graph, d, example_seq_len=24)
    return d


def spiking_graph():
    rng = np.random.default_rng(0)
    b = GraphBuilder(4)
    cur = b.add(O.Linear(weight=rng.standard_normal((8, 4)), bias=np.full(8, 0.4)), "x")
    spk = b.add(O.LIF(neuron=NeuronParams(beta=np.full(8, 0.9), threshold=np.ones(8))), cur)
    count = b.add(O.Readout(mode="sum"), spk)
    head = b.add(O.Linear(weight=rng.standard_normal((3, 8)) * 0.3), count)
    return b.build([spk, head])


# ------------------------------------------------------------------------------------------- policy


def test_tolerance_defaults_overrides_and_errors(tmp_path):
    p = TolerancePolicy()
    assert p.for_format("float32").max_abs == 1e-4
    assert p.for_format(NumberFormat.INT8).lsb == 0 and p.spike_mismatches == 0
    assert p.for_format("int8").limit(0.05) == (0.0, "bit exact")
    assert FormatTolerance(lsb=2).limit(0.5) == (1.0, "2 LSB")
    q = p.merged({"formats": {"float32": {"max_abs": 1e-3}}, "min_decision_agreement": 0.9})
    assert q.for_format("float32").max_abs == 1e-3 and q.min_decision_agreement == 0.9
    assert p.for_format("float32").max_abs == 1e-4  # the default is untouched
    f = tmp_path / "tol.json"
    f.write_text(json.dumps(q.to_dict()))
    assert TolerancePolicy.load(f).to_dict() == q.to_dict()
    with pytest.raises(ConfigError, match="unknown tolerance key.*max_ab"):
        p.merged({"max_ab": 1})
    with pytest.raises(ConfigError, match="unknown number format 'float8'"):
        p.merged({"formats": {"float8": {"max_abs": 1}}})
    with pytest.raises(ConfigError, match="non-negative"):
        p.merged({"formats": {"float32": {"max_abs": -1}}})
    with pytest.raises(ConfigError, match=r"in \[0, 1\]"):
        p.merged({"max_accuracy_drop": 2})
    f.write_text("{not json")
    with pytest.raises(ConfigError, match="tolerance file is not valid JSON"):
        TolerancePolicy.load(f)
    with pytest.raises(ConfigError, match="missing.json: no such file"):
        TolerancePolicy.load(tmp_path / "missing.json")


def test_number_format_from_exporter_numerics():
    assert format_of(None) is NumberFormat.FLOAT32
    assert format_of({"a": "f32", "b": "f32"}) is NumberFormat.FLOAT32
    assert format_of({"a": "f32", "b": "i16"}) is NumberFormat.INT16
    assert format_of({"a": "int8", "b": "i16"}) is NumberFormat.INT8
    with pytest.raises(ConfigError, match="unknown numeric format"):
        format_of({"a": "posit"})


# ------------------------------------------------------------------------------------------- validate


def test_onnx_artifact_passes_and_writes_the_report(onnx_dir, tmp_path):
    out = tmp_path / "report"
    rep = validate(onnx_dir, reference="cpu", out=out)
    assert rep.passed, rep.summary()
    names = [c.name for c in rep.checks]
    assert names[:2] == ["integrity", "golden.consistency"]
    assert "golden.head.max_abs_error" in names and "golden.head.decision_agreement" in names
    assert rep.artifact["kind"] == "onnx" and rep.artifact["graph_source"].startswith("graph.esq")
    assert rep.reference["used"] == "cpu" and rep.reference["throughput"]["steps_per_s"] > 0
    g = rep.golden["outputs"]["head"]
    assert g["max_abs_error"] < 1e-5 and g["decision_agreement"] == 1.0
    assert [c["steps"] for c in rep.golden["pooled_error_vs_length"]][-1] == 24
    lat = rep.performance["latency"]
    assert lat["per_sequence"]["p50_s"] > 0 and lat["per_sequence"]["p99_s"] >= lat["per_sequence"]["p50_s"]
    assert lat["per_step"]["p50_s"] > 0 and rep.performance["sizes"]["model_bytes"] > 0
    data = json.loads((out / "validation.json").read_text())
    assert data["passed"] is True and data["failed_checks"] == []
    html = (out / "report.html").read_text()
    assert "PASS: every check" in html and "data:image/png;base64," in html and "golden.head.max_abs_error" in html


def test_custom_reference_callable(onnx_dir, gru_graph):
    from edgeseq.validate.gpu import ReferenceRunner

    runner = ReferenceRunner(gru_graph, device="cpu", dtype="float32", kernels="torch")

    def torch_kernels(x):
        """torch reference kernels in float32"""
        return runner.run(x)[0]

    rep = validate(onnx_dir, reference=torch_kernels, measure=False)
    assert rep.passed, rep.summary()
    assert rep.reference["name"] == "torch reference kernels in float32" and rep.reference["used"] == "custom"


def test_data_slice_from_an_npz_dataset(onnx_dir, tmp_path):
    from edgeseq.data.dataset import Dataset

    rng = np.random.default_rng(0)
    ds = Dataset(
        x=rng.standard_normal((40, 30, 6)).astype(np.float32),
        y=rng.integers(0, 6, 40),
        labels=[f"c{i}" for i in range(6)],
        name="synthetic",
    )
    ds.save(tmp_path / "ds.npz")
    rep = validate(onnx_dir, reference="cpu", data=tmp_path / "ds.npz", samples=16, measure=False)
    assert rep.passed, rep.summary()
    assert rep.data["sequences"] == 16 and rep.data["of"] == 40 and rep.data["steps"] == 30
    acc = rep.data["accuracy"]
    assert acc["artifact"] == acc["reference"]
    assert {"data.head.max_abs_error", "data.head.decision_agreement", "data.accuracy_drop"} <= {
        c.name for c in rep.checks
    }
    np.savez(tmp_path / "plain.npz", x=rng.standard_normal((5, 12, 6)).astype(np.float32))  # x only: no accuracy
    rep = validate(onnx_dir, reference="cpu", data=tmp_path / "plain.npz", measure=False)
    assert rep.passed and "accuracy" not in rep.data
    np.savez(tmp_path / "wrong.npz", x=np.zeros((5, 12, 4), np.float32))
    with pytest.raises(ShapeError, match="4 features per step; the model expects 6"):
        validate(onnx_dir, reference="cpu", data=tmp_path / "wrong.npz", measure=False)
    with pytest.raises(DatasetError, match="not a dataset name"):
        validate(onnx_dir, reference="cpu", data=tmp_path / "nope.npz", measure=False)


def test_har_test_split(onnx_dir):
    try:
        rep = validate(onnx_dir, reference="cpu", data="har", samples=48, measure=False, prefix_points=0)
    except DatasetError as e:
        pytest.skip(str(e))
    assert rep.passed, rep.summary()
    assert rep.data["steps"] == 128 and rep.data["sequences"] == 48 and rep.data["of"] > 2000
    assert 0.0 <= rep.data["accuracy"]["reference"] <= 1.0


def test_spiking_outputs_are_compared_spike_by_spike(tmp_path):
    from edgeseq.export.onnx import export_onnx

    export_onnx(spiking_graph(), tmp_path / "lif", example_seq_len=40)
    rep = validate(tmp_path / "lif", reference="cpu", measure=False)
    assert rep.passed, rep.summary()
    spk = rep.golden["outputs"][list(rep.golden["outputs"])[0]]
    assert spk["spike_mismatches"] == 0 and spk["spikes_reference"] > 0 and spk["spike_agreement"] == 1.0
    assert any(c.name.endswith(".spike_mismatches") for c in rep.checks)
    assert "error_per_step" in spk and len(spk["error_per_step"]) == 40


def test_perturbed_weights_fail_naming_the_check(onnx_dir, tmp_path, capsys):
    bad = copy_artifact(onnx_dir, tmp_path / "bad")
    perturb_weights(bad)
    rep = validate(bad, reference="cpu", measure=False)
    failed = [c.name for c in rep.failed]
    assert "golden.head.max_abs_error" in failed and "integrity" not in failed
    with pytest.raises(ToleranceError, match=r"check\(s\) failed: .*golden\.head\.max_abs_error = .* > 0\.0001"):
        rep.raise_for_failure()
    out = tmp_path / "rep"
    assert cli(["validate", str(bad), "--reference", "cpu", "--out", str(out), "--no-measure", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "validation failed" in err and "golden.head.max_abs_error" in err and "Traceback" not in err
    data = json.loads((out / "validation.json").read_text())
    assert data["passed"] is False and "golden.head.max_abs_error" in data["failed_checks"]
    assert "check(s) failed" in (out / "report.html").read_text()
    # a looser policy from a JSON file accepts the same artifact
    tol = tmp_path / "loose.json"
    tol.write_text(json.dumps({"formats": {"float32": {"max_abs": 100.0}}, "min_decision_agreement": 0.0}))
    assert validate(bad, reference="cpu", tolerance=tol, measure=False).passed


def test_modified_file_fails_the_integrity_check(onnx_dir, tmp_path):
    bad = copy_artifact(onnx_dir, tmp_path / "edited")
    perturb_weights(bad, rehash=False)
    rep = validate(bad, reference="cpu", measure=False)
    integrity = rep.checks[0]
    assert integrity.name == "integrity" and integrity.failed and "model.onnx" in integrity.detail
    assert "golden.head.max_abs_error" in [c.name for c in rep.failed]  # and it still ran, to show the damage


def test_integer_artifact_is_checked_bit_exactly_against_its_stored_golden_outputs(onnx_dir, tmp_path):
    """An integer artifact's golden outputs come from the integer-exact interpreter: without that
    interpreter as the reference, they are the reference, compared bit exactly (0 LSB)."""
    from edgeseq.export.onnx import OnnxArtifact

    d = copy_artifact(onnx_dir, tmp_path / "int")
    m = json.loads((d / "manifest.json").read_text())
    x = np.load(d / m["golden"]["input"])
    y = OnnxArtifact(d, m).run(x)[0]  # stands in for the integer interpreter's (bit-exact) outputs
    np.save(d / m["golden"]["outputs"][0], y.astype(np.float64))
    m["numerics"] = {"rnn.l0": "i8", "rnn.l1": "i8", "head": "i16"}
    m["files"][m["golden"]["outputs"][0]] = {"sha256": sha256_file(d / m["golden"]["outputs"][0])}
    (d / "manifest.json").write_text(json.dumps(m))
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 10, 6), np.float32))
    rep = validate(d, data=tmp_path / "d.npz", measure=False)
    assert rep.passed, rep.summary()
    assert rep.artifact["number_format"] == "int8" and rep.reference["used"] == "stored golden outputs"
    by = {c.name: c for c in rep.checks}
    assert by["golden.consistency"].status == "skip" and by["data"].status == "skip"
    assert by["golden.head.max_abs_error"].value == 0.0 and "bit exact" in by["golden.head.max_abs_error"].detail
    perturb_weights(d)
    assert "golden.head.max_abs_error" in [c.name for c in validate(d, measure=False).failed]


def test_graph_missing_from_the_artifact(onnx_dir, tmp_path, gru_graph):
    d = copy_artifact(onnx_dir, tmp_path / "nograph")
    (d / "graph.esq").unlink()
    m = json.loads((d / "manifest.json").read_text())
    m.pop("ir_graph", None)
    m["files"].pop("graph.esq", None)
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="onnx artifact does not store the IR graph") as e:
        open_artifact(d)
    assert "graph.esq" in e.value.hint and "--graph" in e.value.hint
    gfile = tmp_path / "model.esq"
    gru_graph.save(gfile)
    rep = validate(d, reference="cpu", graph=gfile, measure=False)
    assert rep.passed and "--graph" in rep.artifact["graph_source"]
    shutil.copyfile(gfile, tmp_path / "nograph.esq")  # next to the artifact, named after it
    assert validate(d, reference="cpu", measure=False).artifact["graph_source"].endswith("(next to the artifact)")


def test_not_an_artifact(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        validate(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        validate(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text(json.dumps({"format": "tflite"}))
    with pytest.raises(ArtifactError, match="unknown artifact format 'tflite'.*edgeseq-onnx"):
        validate(tmp_path / "other")
    with pytest.raises(ConfigError, match="unknown reference"):
        validate(tmp_path / "other", reference="tpu")


def test_cli_validate(onnx_dir, tmp_path, capsys):
    out = tmp_path / "v"
    assert cli(["validate", str(onnx_dir), "--reference", "cpu", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "PASSED" in text and "golden.head.max_abs_error" in text and "latency per sequence" in text
    assert (out / "report.html").is_file() and (out / "validation.json").is_file()
    if not torch.cuda.is_available():
        assert cli(["validate", str(onnx_dir), "--reference", "gpu", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "no CUDA device" in err and "--reference cpu" in err and "Traceback" not in err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"spikes": 3}))
    assert cli(["validate", str(onnx_dir), "--tolerance", str(bad), "--out", str(out)]) == 2
    assert "unknown tolerance key(s): spikes" in capsys.readouterr().err
    assert cli(["validate", str(tmp_path / "none")]) == 2
    assert "artifact directory not found" in capsys.readouterr().err
