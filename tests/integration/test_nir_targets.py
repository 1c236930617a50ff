"""NIR graphs on every target kind, with the checks every artifact gets: a graph written by snntorch's
export_to_nir (snntorch semantics: LIF / RLeaky / CuBaLIF ops) and the same file read with NIR's
equations (LeakyNeuron populations and a recurrent cycle as a Scan), exported to ONNX and x86 (float),
and to aarch64 and Cortex-M4 firmware (float and int8, calibrated on random spike trains), each compared
with the reference by `edgeseq validate` (the float ones also at two lengths and batch sizes here). Also the command line a user types:
edgeseq info / export --quant edgeseq / validate on a .nir file, and --target nir with the int8 plan."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

nir = pytest.importorskip("nir")
torch = pytest.importorskip("torch")

import edgeseq  # noqa: E402
from edgeseq.frontends.nir import NirOptions  # noqa: E402
from edgeseq.ir.interpret import run  # noqa: E402
from edgeseq.validate import validate  # noqa: E402

from ..conftest import need_tool  # noqa: E402
from ..unit.test_nir import SHAPES, _snntorch_net, spikes  # noqa: E402

pytestmark = pytest.mark.toolchain


@pytest.fixture(scope="module")
def nir_file(tmp_path_factory):
    from snntorch.export_nir import export_to_nir

    path = tmp_path_factory.mktemp("nir") / "snn.nir"
    net = _snntorch_net("zero", True, True, seed=11)
    nir.write(path, export_to_nir(net, torch.zeros(1, 3), ignore_dims=[0]))
    return path


SEMANTICS = {"snntorch": NirOptions(), "nir": NirOptions(semantics="nir", method="exact", dt=1e-3)}


def _check_runs(graph, art):
    for batch, steps in SHAPES:
        x = spikes(batch, steps, graph.in_features, rate=0.5, seed=steps) * 2.0
        got = art.run(x.astype(np.float32))
        got = got[0] if isinstance(got, tuple) else got
        want = run(graph, x)[0][0]
        assert np.array_equal(np.asarray(got, np.float64), want), f"{np.sum(got != want)} spikes differ"


@pytest.mark.parametrize("semantics", sorted(SEMANTICS))
def test_nir_graph_float_onnx_and_x86(tmp_path, nir_file, semantics):
    need_tool("gcc")
    graph = edgeseq.capture(str(nir_file), nir=SEMANTICS[semantics])
    for target in ("onnx", "x86"):
        art = edgeseq.export(graph, target=target, out=tmp_path / target)
        _check_runs(graph, art)
        rep = validate(tmp_path / target, reference="cpu", measure=False)
        assert rep.passed, rep.failure_message()


TOOLS = {"cortex-m4": ("arm-none-eabi-gcc", "qemu-system-arm"), "arm": ("aarch64-linux-gnu-gcc", "qemu-aarch64")}


@pytest.mark.parametrize(
    "target,semantics,int8",
    [
        ("cortex-m4", "snntorch", True),
        ("cortex-m4", "nir", True),
        ("cortex-m4", "nir", False),
        ("arm", "nir", False),
        ("arm", "snntorch", True),
    ],
)
def test_nir_graph_on_arm_and_cortex_m4(tmp_path, nir_file, target, semantics, int8):
    for tool in TOOLS[target]:
        need_tool(tool)
    from edgeseq.quant import quantize
    from edgeseq.quant.tasks import spike_calibration

    graph = edgeseq.capture(str(nir_file), nir=SEMANTICS[semantics])
    q = quantize(graph, spike_calibration(graph), "edgeseq", progress=False) if int8 else None
    edgeseq.export(graph, target=target, quant=q, out=tmp_path / "art")
    rep = validate(tmp_path / "art", reference="cpu", measure=False)
    assert rep.passed, rep.failure_message()


def test_command_line_nir_to_cortex_m4_int8_and_nir(tmp_path, nir_file):
    need_tool("arm-none-eabi-gcc")
    need_tool("qemu-system-arm")
    es = [sys.executable, "-m", "edgeseq"]
    info = subprocess.run(es + ["info", str(nir_file)], capture_output=True, text=True)
    assert info.returncode == 0 and "CuBaLIF" in info.stdout and "'semantics': 'snntorch'" in info.stdout
    x = spikes(32, 40, 3, rate=0.4, seed=1) * 2.0
    np.savez(tmp_path / "calib.npz", x=x)
    for data, warned in ((None, True), (str(tmp_path / "calib.npz"), False)):
        out = tmp_path / ("m4" if data is None else "m4-npz")
        cmd = es + ["export", str(nir_file), "--target", "cortex-m4", "--quant", "edgeseq", "--out", str(out)]
        p = subprocess.run(cmd + ([] if data is None else ["--data", data]), capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert ("random spike trains" in p.stderr) == warned
        v = subprocess.run(es + ["validate", str(out), "--quiet", "--no-measure"], capture_output=True, text=True)
        assert v.returncode == 0 and "validation passed" in v.stdout, v.stdout + v.stderr
    # the int8 plan travels in the NIR file's metadata
    p = subprocess.run(
        es
        + [
            "export",
            str(nir_file),
            "--target",
            "nir",
            "--quant",
            "edgeseq",
            "--data",
            str(tmp_path / "calib.npz"),
            "--out",
            str(tmp_path / "nir"),
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    g = nir.read(tmp_path / "nir" / "model.nir")
    plan = json.loads(g.metadata["edgeseq_int8_plan"])
    assert plan["entries"] and any(k.startswith("int8_scale.") for k in g.nodes["1"].metadata)
