"""edgeseq validate on integer artifacts: a quantized zoo model (edgeseq preset, calibrated on random
data) exported as integer C (x86, aarch64 under qemu-aarch64, Cortex-M4 firmware under
qemu-system-arm), integer TVM (x86, aarch64), ONNX (the exact integer program and its QDQ form)
and the integer x86 bundle. Each is compared with the integer-exact interpreter running the
quantized graph stored with it: bit exact (QDQ: within the LSBs its manifest declares) on the
golden vectors and on a data slice, with latency (native) or instruction counts (emulated); and
each fails naming the golden check once integer weights inside its binary / library / model are
perturbed (the manifest re-hashed, as a buggy exporter would leave it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import edgeseq  # noqa: E402
from edgeseq.cli import main as cli  # noqa: E402
from edgeseq.errors import ToleranceError  # noqa: E402
from edgeseq.quant import load_quantized, quantize  # noqa: E402
from edgeseq.util.fs import sha256_file  # noqa: E402
from edgeseq.validate import validate  # noqa: E402
from edgeseq.validate.compare import output_metrics  # noqa: E402

from ..unit.test_validate import model_file, spiking_graph  # noqa: E402
from ..unit.zoo_cases import build  # noqa: E402
from .test_validate_targets import _tvm_arm_runtime  # noqa: E402

pytestmark = pytest.mark.toolchain

# kind -> tools it needs (build and run)
KINDS = {
    "c-x86": ("gcc",),
    "c-arm": ("aarch64-linux-gnu-gcc", "qemu-aarch64"),
    "c-cortex-m4": ("arm-none-eabi-gcc", "qemu-system-arm"),
    "tvm-x86": ("gcc",),
    "tvm-arm": ("aarch64-linux-gnu-gcc", "qemu-aarch64"),
    "onnx-exact": (),
    "onnx-qdq": (),
    "bundle-x86": ("gcc",),
}
NATIVE = {"c-x86", "tvm-x86", "onnx-exact", "onnx-qdq"}


# ------------------------------------------------------------------------------------------- helpers


def _rehash(art_dir: Path, path: Path) -> None:
    """Record ``path``'s new sha256 in the manifest (the integrity check then cannot tell)."""
    mpath = art_dir / "manifest.json"
    manifest = json.loads(mpath.read_text())
    rel = path.relative_to(art_dir).as_posix()
    digest = sha256_file(path)
    manifest["files"][rel] = {"sha256": digest, "bytes": path.stat().st_size}
    mpath.write_text(json.dumps(manifest, indent=2))


def dsp_table(w: np.ndarray) -> np.ndarray:
    """The Cortex-M4/M7 (DSP) layout of a matvec weight read as one input vector."""
    from edgeseq.export.c import intkernels as K

    part = K.Part("x", "int16_t", w.shape[1], w.shape[1], 0)
    return K.dsp_layout(K.MatVecCall(w, (part,), 1, "y", None))


def perturb_int_weights(art_dir, *, matrices: int = 2, rehash: bool = True) -> list[str]:
    """Change one stored row (or column) of each of ``matrices`` integer weight matrices of the
    artifact's program inside the file that holds them (the C binary / firmware, the TVM library,
    model.onnx): the row is located by its exact bytes in the program's storage type, in either
    layout (W rows or W^T rows, whichever the backend stores), and used only where those bytes
    occur exactly once in the file; each of its values moves by half the weight range (64 for
    int8, 2^14 for int16), staying inside it. Layouts tried: W rows (C), W^T rows (ONNX, TVM on
    aarch64), column pairs ``W[:, 2j:2j+2]`` row-major (TVM's x86 pmaddwd packing), W^T rows
    widened to int16 (the C backend's NEON tables), the whole DSP table (Cortex-M4 / M7). With
    ``rehash`` the manifest's sha256 is updated, as a buggy exporter would leave it: only the
    numbers can tell. Returns what was changed."""
    art_dir = Path(art_dir)
    prog = load_quantized(art_dir / "quantized.esq").program
    path = model_file(art_dir)
    data = bytearray(path.read_bytes())
    mats = sorted(
        ((k, a) for k, a in prog.consts.items() if a.ndim == 2 and a.dtype.kind == "i" and a.dtype.itemsize <= 2),
        key=lambda kv: -kv[1].size,
    )
    changed: list[str] = []
    for name, w in mats:
        pairs = [w[:, j : j + 2].ravel() for j in range(0, w.shape[1] - 1, 2)]
        widened = w.T.astype(np.int16)  # the C backend's aarch64 (NEON) tables: int16 columns
        dsp = [dsp_table(w)]  # the C backend's Cortex-M4/M7 table (4-row groups), as a whole
        for layout, rows in (
            ("row", w),
            ("column", w.T),
            ("column pair", pairs),
            ("int16 column", widened),
            ("DSP table", dsp),
        ):
            hit = None
            for i, r in enumerate(rows):
                r = np.ascontiguousarray(r)
                pattern = r.tobytes()
                if r.size >= 6 and np.count_nonzero(r) * 2 >= r.size and data.count(pattern) == 1:
                    hit = i, r, data.find(pattern)
                    break
            if hit is not None:
                i, r, at = hit
                half = np.int64(1 << (8 * w.dtype.itemsize - 2))
                new = np.where(r >= 0, r.astype(np.int64) - half, r.astype(np.int64) + half).astype(r.dtype)
                data[at : at + r.nbytes] = new.tobytes()
                changed.append(f"{name} {layout} {i}")
                break
        if len(changed) == matrices:
            break
    assert len(changed) == matrices, f"found only {changed} as unique weight rows in {path.name}"
    path.write_bytes(bytes(data))
    if rehash:
        _rehash(art_dir, path)
    return changed


def _export(q, kind: str, d: Path) -> None:
    if kind.startswith("c-"):
        from edgeseq.export.c.intexport import export_c_int

        export_c_int(q, d, target=kind[2:])
    elif kind.startswith("tvm-"):
        from edgeseq.export.tvm.intexport import export_tvm_int

        export_tvm_int(q, d, kind[4:])
    elif kind.startswith("onnx-"):
        from edgeseq.export.onnx.quant import export_onnx_quantized

        export_onnx_quantized(q, d, numerics=kind[5:])
    elif kind == "bundle-x86":
        edgeseq.export(q, target="x86", out=d)
    else:  # pragma: no cover
        raise AssertionError(kind)


def _graph(case: str):
    if case == "spikes":  # a temporal spike-train output next to class scores
        return spiking_graph()
    return edgeseq.capture(build(case, in_features=6, n_classes=5), torch.zeros(1, 8, 6))


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """case -> (quantized graph, data .npz): x random, y the float model's decisions."""
    cache: dict = {}

    def get(case: str):
        if case not in cache:
            g = _graph(case)
            rng = np.random.default_rng(7)
            q = quantize(g, rng.normal(size=(48, 16, g.in_features)) * 1.3, "edgeseq")
            x = (rng.standard_normal((8, 24, g.in_features)) * 1.3).astype(np.float32)
            outs, _ = q.run(x, mode="float")
            k = max(i for i, t in enumerate(g.output_types) if not t.temporal)
            path = tmp_path_factory.mktemp(f"data-{case}") / "slice.npz"
            np.savez(path, x=x, y=np.asarray(outs[k]).argmax(-1))
            cache[case] = (q, path)
        return cache[case]

    return get


@pytest.fixture(scope="module")
def exported(tmp_path_factory, models):
    """(case, kind) -> artifact directory, each exported once per module."""
    cache: dict = {}

    def get(case: str, kind: str, need_tool):
        for tool in KINDS[kind]:
            need_tool(tool)
        if kind == "tvm-arm":
            _tvm_arm_runtime()
        if (case, kind) not in cache:
            d = tmp_path_factory.mktemp(f"{case}-{kind}") / "art"
            _export(models(case)[0], kind, d)
            cache[case, kind] = d
        return cache[case, kind]

    return get


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _by_name(rep) -> dict:
    return {c.name: c for c in rep.checks}


# ------------------------------------------------------------------------------------------- passing


@pytest.mark.parametrize("kind", list(KINDS))
def test_integer_artifact_passes_against_the_integer_exact_interpreter(exported, models, need_tool, kind, tmp_path):
    d = exported("gru", kind, need_tool)
    _, data = models("gru")
    rep = validate(d, reference="cpu", data=data, out=tmp_path / "v", prefix_points=3)
    assert rep.passed, rep.summary()
    reports = rep.parts if kind.startswith("bundle") else {"": rep}
    if kind.startswith("bundle"):
        assert rep.artifact["kind"] == "bundle" and set(rep.parts) == {"c", "tvm"}
        assert {"integrity", "c/golden.consistency", "tvm/golden.head.max_abs_error", "c/data.accuracy_drop"} <= set(
            _by_name(rep)
        )
    qdq = kind == "onnx-qdq"
    for part, r in reports.items():
        assert r.artifact["number_format"] == ("qdq" if qdq else "integer")
        assert r.artifact["quantized_graph"] == "quantized.esq"
        assert r.reference["used"] == "integer" and "intexact" in r.reference["name"]
        by = _by_name(r)
        # the stored golden outputs are the interpreter's, exactly
        assert by["golden.consistency"].status == "pass" and by["golden.consistency"].value == 0.0
        g = r.golden["outputs"]["head"]
        assert g["lsb"] == pytest.approx(float(load_quantized(d / "quantized.esq").program.outputs[0].scale[0]))
        check = by["golden.head.max_abs_error"]  # decided in LSBs of the output's quantisation step
        assert check.detail.startswith(f"{g['max_lsb_error']:.4g} LSB, allowed: ")
        if qdq:  # within the LSBs the exporter declares for the recurrent family (16)
            assert "allowed: 16 LSB, declared by the exporter for the recurrent family" in check.detail
            assert check.limit == pytest.approx(16 * g["lsb"])
            assert g["max_lsb_error"] <= 16 and r.artifact["declared_lsb"] == 16
        else:
            assert check.limit == 0 and "allowed: bit exact" in check.detail
            assert g["max_lsb_error"] == 0 and g["max_abs_error"] == 0.0 and g["lsb_mismatches"] == 0
        assert r.golden["pooled_error_vs_length"][-1]["steps"] == r.golden["input_shape"][1]
        # the data slice, against the interpreter on the same inputs
        m = r.data["outputs"]["head"]
        assert r.data["sequences"] == 8 and m["decision_agreement"] == 1.0
        assert (m["max_lsb_error"] <= 16) if qdq else (m["max_lsb_error"] == 0)
        acc = r.data["accuracy"]
        assert acc["artifact"] == acc["reference"] and acc["float_model"] == 1.0  # y = the float decisions
        assert acc["reference"] >= 0.75
        perf = r.performance
        native = kind in NATIVE or (kind == "bundle-x86")
        if native:
            lat = perf["latency"]
            assert lat is not None, perf.get("latency_error")
            assert lat["per_sequence"]["p50_s"] > 0 and lat["per_step"]["p50_s"] > 0
        else:
            ins = perf["instructions"]
            assert ins is not None, perf.get("instructions_error")
            assert ins["per_step"] > 100 and ins["steps"] == r.data["steps"]  # measured on the data slice
            if kind.startswith("c-"):  # integer C: the step's instructions per micro-op
                per_op = ins["per_op"]
                assert per_op and any("matvec" in e["region"] for e in per_op), ins.get("per_op_error")
                assert sum(e["share"] for e in per_op) == pytest.approx(1.0, abs=1e-3)
                assert 0.5 * ins["per_step"] < sum(e["instructions_per_step"] for e in per_op) <= ins["per_step"]
    saved = json.loads((tmp_path / "v" / "validation.json").read_text())
    assert saved["passed"] is True
    html = (tmp_path / "v" / "report.html").read_text()
    assert "max_lsb_error" in html and "integer-exact interpreter" in html
    if not native and kind.startswith("c-"):
        assert "where the instructions of a step go" in html


@pytest.mark.parametrize(
    "case,kind",
    [
        ("lif", "c-x86"),
        ("lif", "c-cortex-m4"),
        ("lif", "onnx-qdq"),
        ("spikes", "c-x86"),
        ("spikes", "onnx-exact"),
        ("spikes", "onnx-qdq"),
    ],
)
def test_spiking_models(exported, models, need_tool, case, kind):
    d = exported(case, kind, need_tool)
    rep = validate(d, reference="cpu", data=models(case)[1], measure=False, prefix_points=0)
    assert rep.passed, rep.summary()
    by = _by_name(rep)
    assert by["golden.consistency"].value == 0.0
    if case == "spikes":  # the spike train output: spike by spike, amplitudes in LSBs (the step is 1)
        m = rep.golden["outputs"]["lif"]
        assert m["spikes_reference"] > 0 and m["spike_mismatches"] == 0 and m["lsb"] == 1.0
        assert by["golden.lif.spike_mismatches"].status == "pass"
        assert by["data.lif.spike_amplitude_error"].status == "pass"
        assert rep.data["outputs"]["lif"]["spike_agreement"] == 1.0
        assert by["data.linear_1.max_abs_error"].status == "pass"
    else:
        assert by["golden.readout.max_abs_error"].status == "pass"
        assert rep.data["accuracy"]["artifact"] == rep.data["accuracy"]["reference"]


# ------------------------------------------------------------------------------------------- failing


@pytest.mark.parametrize("kind", list(KINDS))
def test_perturbed_integer_weights_fail_naming_the_golden_check(exported, need_tool, kind, tmp_path):
    bad = _copy(exported("gru", kind, need_tool), tmp_path / "bad")
    part = ""
    if kind.startswith("bundle"):
        part = "c/"
        changed = perturb_int_weights(bad / "c")
    else:
        changed = perturb_int_weights(bad)
    assert len(changed) == 2
    rep = validate(bad, reference="cpu", measure=False, prefix_points=0)
    failed = [c.name for c in rep.failed]
    assert f"{part}golden.head.max_abs_error" in failed, rep.summary()
    assert not {"integrity", f"{part}integrity", f"{part}golden.consistency"} & set(failed), rep.summary()
    if part:
        assert not any(n.startswith("tvm/") for n in failed)
    limit = 16 if kind == "onnx-qdq" else 0
    reports = rep.parts["c"] if part else rep
    assert reports.golden["outputs"]["head"]["max_lsb_error"] > max(limit, 1)
    allowed = "16 LSB, declared by the exporter" if limit else "bit exact; LSB"
    with pytest.raises(
        ToleranceError,
        match=rf"check\(s\) failed: .*{part}golden\.head\.max_abs_error = \S+ > "
        rf"\S+ \(\d+ LSB, allowed: {allowed}",
    ):
        rep.raise_for_failure()


def test_perturbed_weights_fail_the_data_check_and_the_cli(exported, models, need_tool, tmp_path, capsys):
    bad = _copy(exported("gru", "c-x86", need_tool), tmp_path / "bad")
    perturb_int_weights(bad)
    _, data = models("gru")
    out = tmp_path / "rep"
    assert (
        cli(
            [
                "validate",
                str(bad),
                "--reference",
                "cpu",
                "--data",
                str(data),
                "--out",
                str(out),
                "--no-measure",
                "--quiet",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "validation failed" in err and "golden.head.max_abs_error" in err and "Traceback" not in err
    saved = json.loads((out / "validation.json").read_text())
    assert {"golden.head.max_abs_error", "data.head.max_abs_error"} <= set(saved["failed_checks"])
    assert saved["data"]["outputs"]["head"]["lsb_mismatches"] > 0


def test_modified_integer_weights_fail_the_integrity_check(exported, need_tool, tmp_path):
    bad = _copy(exported("gru", "onnx-exact", need_tool), tmp_path / "edited")
    perturb_int_weights(bad, rehash=False)
    rep = validate(bad, reference="cpu", measure=False, prefix_points=0)
    integrity = rep.checks[0]
    assert integrity.name == "integrity" and integrity.failed and "model.onnx" in integrity.detail
    assert "golden.head.max_abs_error" in [c.name for c in rep.failed]  # and it still ran, to show the damage


def test_a_different_stored_quantized_graph_fails_the_consistency_check(exported, need_tool, tmp_path):
    """The reference is the quantized graph stored with the artifact: one quantized differently
    (another calibration) no longer reproduces the stored golden outputs."""
    d = _copy(exported("gru", "onnx-exact", need_tool), tmp_path / "swapped")
    other = quantize(_graph("gru"), np.random.default_rng(3).normal(size=(16, 12, 6)) * 4.0, "edgeseq")
    other.save(d / "quantized.esq")
    _rehash(d, d / "quantized.esq")
    rep = validate(d, reference="cpu", measure=False, prefix_points=0)
    failed = [c.name for c in rep.failed]
    assert "golden.consistency" in failed and "integrity" not in failed, rep.summary()


def test_without_a_stored_quantized_graph_the_golden_outputs_are_the_reference(exported, models, need_tool, tmp_path):
    d = _copy(exported("gru", "c-x86", need_tool), tmp_path / "noq")
    (d / "quantized.esq").unlink()
    m = json.loads((d / "manifest.json").read_text())
    m.pop("quantized_graph")
    m["files"].pop("quantized.esq")
    (d / "manifest.json").write_text(json.dumps(m))
    rep = validate(d, reference="cpu", data=models("gru")[1], measure=False)
    assert rep.passed, rep.summary()
    by = _by_name(rep)
    assert rep.reference["used"] == "stored golden outputs" and rep.artifact["quantized_graph"] is None
    assert by["golden.consistency"].status == "skip" and by["data"].status == "skip"
    assert "quantized.esq" in by["data"].detail
    # the manifest's output scales still give the comparison in LSBs, bit exact
    assert by["golden.head.max_abs_error"].value == 0.0 and by["golden.head.max_abs_error"].limit == 0.0
    assert rep.golden["outputs"]["head"]["max_lsb_error"] == 0.0
    perturb_int_weights(_copy(exported("gru", "c-x86", need_tool), tmp_path / "noq2"))
    (tmp_path / "noq2" / "quantized.esq").unlink()
    assert "golden.head.max_abs_error" in [c.name for c in validate(tmp_path / "noq2", measure=False).failed]


def test_qdq_limit_comes_from_the_manifest_unless_a_tolerance_file_says_otherwise(exported, need_tool, tmp_path):
    d = _copy(exported("gru", "onnx-qdq", need_tool), tmp_path / "qdq")
    base = validate(d, reference="cpu", measure=False, prefix_points=0)
    err = base.golden["outputs"]["head"]["max_lsb_error"]
    lsb = base.golden["outputs"]["head"]["lsb"]
    assert _by_name(base)["golden.head.max_abs_error"].limit == pytest.approx(16 * lsb)
    strict = validate(d, reference="cpu", measure=False, prefix_points=0, tolerance={"formats": {"qdq": {"lsb": 0}}})
    assert _by_name(strict)["golden.head.max_abs_error"].limit == 0
    assert strict.passed == (err == 0)
    m = json.loads((d / "manifest.json").read_text())  # a manifest declaring a tighter limit for the family
    m["quantization"]["tolerance"]["lsb"]["recurrent"] = 0
    (d / "manifest.json").write_text(json.dumps(m))
    declared = _by_name(validate(d, reference="cpu", measure=False, prefix_points=0))["golden.head.max_abs_error"]
    assert declared.limit == 0 and "allowed: bit exact, declared by the exporter" in declared.detail


def test_gpu_reference_request_on_an_integer_artifact(exported, need_tool):
    rep = validate(exported("gru", "onnx-exact", need_tool), reference="gpu", measure=False, prefix_points=0)
    assert rep.passed, rep.summary()
    assert rep.reference["requested"] == "gpu" and rep.reference["used"] == "integer"
    assert "integer-exact interpreter" in rep.reference["note"]


# ------------------------------------------------------------------------------------------- metrics


def test_lsb_metrics():
    scale = np.array([0.5, 0.25])
    ref = np.array([[3.0, -1.0], [0.0, 2.0]]) * scale
    got = ref + np.array([[0.0, 2.0], [-1.0, 0.0]]) * scale
    m = output_metrics(got, ref, temporal=False, spikes=False, lsb=scale)
    assert m["max_lsb_error"] == 2.0 and m["lsb_mismatches"] == 2 and m["lsb"] == [0.5, 0.25]
    assert output_metrics(ref, ref, False, False, lsb=0.25)["max_lsb_error"] == 0.0
    # a float32 output q * scale: its rounding is no LSB error, a whole step is
    s = 1.0920673667339525e-05
    q = np.array([[12345.0, -3.0, 7.0]])
    exact = q * s
    f32 = (q.astype(np.float32) * np.float32(s)).astype(np.float32)
    assert np.any(f32.astype(np.float64) != exact)
    assert output_metrics(f32, exact, False, False, lsb=s)["max_lsb_error"] == 0.0
    off = ((q + [[0, 0, 16]]).astype(np.float32) * np.float32(s)).astype(np.float32)
    assert output_metrics(off, exact, False, False, lsb=s)["max_lsb_error"] == 16.0
    half = (exact + 0.5 * s).astype(np.float32)
    assert output_metrics(half, exact, False, False, lsb=s)["max_lsb_error"] == pytest.approx(0.5, abs=1e-3)
