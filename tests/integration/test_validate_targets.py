"""edgeseq validate on every artifact kind the export stages produce besides ONNX (unit tests):
TVM x86, TVM aarch64 under qemu-aarch64, C x86, C aarch64 under qemu-aarch64, C Cortex-M4 firmware
under qemu-system-arm. Each passes on the exported artifact, reports latency (native) or
instruction counts (emulated), and fails naming the check once its stored weights are perturbed."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import edgeseq  # noqa: E402
from edgeseq.errors import EdgeseqError  # noqa: E402
from edgeseq.validate import validate  # noqa: E402

from ..conftest import IN_CI  # noqa: E402
from ..unit.test_validate import copy_artifact, perturb_weights  # noqa: E402
from ..unit.zoo_cases import build  # noqa: E402

pytestmark = pytest.mark.toolchain

# kind -> tools it needs (build and run)
KINDS = {
    "tvm-x86": ("gcc",),
    "tvm-arm": ("aarch64-linux-gnu-gcc", "qemu-aarch64"),
    "c-x86": ("gcc",),
    "c-arm": ("aarch64-linux-gnu-gcc", "qemu-aarch64"),
    "c-cortex-m4": ("arm-none-eabi-gcc", "qemu-system-arm"),
}


@pytest.fixture(scope="module")
def graph():
    return edgeseq.capture(build("gru", in_features=6, n_classes=6), torch.randn(1, 8, 6))


def _tvm_arm_runtime():
    if shutil.which("aarch64-linux-gnu-g++") is None:
        msg = "'aarch64-linux-gnu-g++' is not installed (hint: sudo apt-get install -y g++-aarch64-linux-gnu)"
        pytest.fail(f"CI=true but {msg}") if IN_CI else pytest.skip(msg)
    from edgeseq.export.tvm.runtime_arm import driver_path, fetch_runtime

    try:
        fetch_runtime()
        driver_path()
    except EdgeseqError as e:
        pytest.fail(f"CI=true but {e}") if IN_CI else pytest.skip(str(e))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, graph):
    cache = {}

    def get(kind, need_tool):
        for tool in KINDS[kind]:
            need_tool(tool)
        if kind == "tvm-arm":
            _tvm_arm_runtime()
        if kind not in cache:
            d = tmp_path_factory.mktemp(kind) / "art"
            backend, target = kind.split("-", 1)
            if backend == "tvm":
                from edgeseq.export.tvm import export_tvm

                export_tvm(graph, d, target)
            else:
                from edgeseq.export.c import export_c

                export_c(graph, d, target=target)
            cache[kind] = d
        return cache[kind]

    return get


@pytest.mark.parametrize("kind", list(KINDS))
def test_validate_passes(exported, need_tool, kind, tmp_path):
    d = exported(kind, need_tool)
    rep = validate(d, reference="cpu", out=tmp_path / "v")
    assert rep.passed, rep.summary()
    backend, target = kind.split("-", 1)
    assert rep.artifact["kind"] == backend and rep.artifact["target"] == target
    assert rep.golden["outputs"]["head"]["max_abs_error"] < 1e-5
    perf = rep.performance
    if target == "x86":
        lat = perf["latency"]
        assert lat["per_sequence"]["p50_s"] > 0 and lat["per_step"]["p99_s"] > 0, perf
    else:
        ins = perf["instructions"]
        assert ins is not None, perf.get("instructions_error")
        assert ins["per_step"] > 100 and ins["steps"] == rep.golden["input_shape"][1]
    assert (tmp_path / "v" / "report.html").is_file()


@pytest.mark.parametrize("kind", ["c-cortex-m4", "tvm-arm", "c-x86", "tvm-x86"])
def test_perturbed_weights_fail(exported, need_tool, kind, tmp_path):
    bad = copy_artifact(exported(kind, need_tool), tmp_path / "bad")
    perturb_weights(bad)
    rep = validate(bad, reference="cpu", measure=False)
    failed = [c.name for c in rep.failed]
    assert "golden.head.max_abs_error" in failed, rep.summary()
    assert "integrity" not in failed and "golden.consistency" not in failed
    assert rep.golden["outputs"]["head"]["max_abs_error"] > 1e-4


def test_data_slice_on_cortex_m4(exported, need_tool, tmp_path):
    d = exported("c-cortex-m4", need_tool)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((6, 50, 6)).astype(np.float32), y=rng.integers(0, 6, 6))
    rep = validate(d, reference="cpu", data=tmp_path / "d.npz", measure=False)
    assert rep.passed, rep.summary()
    assert rep.data["sequences"] == 6 and rep.data["accuracy"]["artifact"] == rep.data["accuracy"]["reference"]


@pytest.mark.parametrize("target", ["x86", "arm"])
def test_export_bundles_are_validated_part_by_part(graph, need_tool, target, tmp_path):
    tools = ("gcc",) if target == "x86" else ("aarch64-linux-gnu-gcc", "qemu-aarch64")
    for tool in tools:
        need_tool(tool)
    if target == "arm":
        _tvm_arm_runtime()
    d = tmp_path / target
    edgeseq.export(graph, target, d)
    rep = validate(d, reference="cpu", out=tmp_path / "v")
    assert rep.passed, rep.summary()
    assert rep.artifact["kind"] == "bundle" and set(rep.parts) == {"tvm", "c"}
    names = [c.name for c in rep.checks]
    assert names[0] == "integrity" and "tvm/golden.head.max_abs_error" in names and "c/integrity" in names
    key = "latency" if target == "x86" else "instructions"
    assert rep.parts["tvm"].performance[key] and rep.parts["c"].performance[key]
    perturb_weights(d / "c")
    failed = [c.name for c in validate(d, reference="cpu", measure=False).failed]
    assert failed == ["c/golden.head.max_abs_error"] or "c/golden.head.max_abs_error" in failed
    assert not any(n.startswith("tvm/") for n in failed)
