"""aarch64 Linux target: every zoo model exported with ``export_c(target="arm")``, cross-compiled by
aarch64-linux-gnu-gcc (static) and run under qemu-aarch64, compared with the reference interpreter
at several sequence lengths and batch sizes; CPU variants; instruction counts; artifact integrity."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from edgeseq.errors import ArtifactError
from edgeseq.export.c import CArtifact, export_c
from edgeseq.targets.driver import read_output

from ..conftest import need_tool
from ..unit.test_c_backend import (
    CELL_GROUPS,
    SHAPES,
    cells_graph,
    check_cell_cases,
    check_outputs,
    make_input,
    zoo_graph,
)
from ..unit.zoo_cases import ZOO

pytestmark = pytest.mark.toolchain


@pytest.fixture(scope="module")
def arm_tools():
    need_tool("aarch64-linux-gnu-gcc")
    need_tool("qemu-aarch64")
    need_tool("gcc")


@pytest.fixture(scope="module")
def exported(arm_tools, tmp_path_factory):
    cache = {}

    def get(case, target="arm"):
        key = (case, target)
        if key not in cache:
            graph = zoo_graph(case)
            art = export_c(graph, tmp_path_factory.mktemp(f"{case}-{target.replace(':', '-')}") / "art", target=target)
            cache[key] = (graph, art)
        return cache[key]

    return get


@pytest.mark.parametrize("case", sorted(ZOO))
def test_zoo_model_on_aarch64_matches_reference(exported, case):
    graph, art = exported(case)
    ver = art.manifest["golden"]["verification"]
    assert ver["max_abs_error"] <= 1e-4 and ver["spike_mismatches"] == 0
    for k, (batch, steps) in enumerate(SHAPES):
        x = make_input(graph, batch, steps, seed=100 + k)
        res = art.target.run(art.binary, x, mode="step", state=True)
        check_outputs(graph, art.manifest, x, res)


@pytest.mark.parametrize("case", ["lmuformer", "l2mu", "lstm"])
def test_step_api_equals_whole_and_chunked_on_aarch64(exported, case):
    graph, art = exported(case)
    x = make_input(graph, 2, 33, seed=5)
    runs = [art.target.run(art.binary, x, mode=m, state=True) for m in ("step", "run", "chunk:4")]
    for r in runs[1:]:
        np.testing.assert_array_equal(r.step, runs[0].step)
        np.testing.assert_array_equal(r.pooled, runs[0].pooled)
        np.testing.assert_array_equal(r.state, runs[0].state)
    check_outputs(graph, art.manifest, x, runs[0])


@pytest.mark.parametrize("cpu", ["cortex-a72", "cortex-a76"])
def test_cpu_variants(exported, cpu):
    graph, art = exported("gru", f"arm:{cpu}")
    assert art.target.options["cpu"] == cpu and f"-mcpu={cpu}" in art.manifest["cflags"]
    x = make_input(graph, 2, 40, seed=3)
    check_outputs(graph, art.manifest, x, art.target.run(art.binary, x))
    assert f"-cpu {cpu}" in (art.path / "run.sh").read_text()


def test_artifact_api_run_script_and_cost(exported):
    graph, art = exported("lmu")
    x = make_input(graph, 2, 16, seed=9)
    (y,) = art.run(x)[:1]
    from edgeseq.ir.interpret import run

    (ref, *_), _ = run(graph, x.astype(np.float64))
    assert y.shape == ref.shape and np.max(np.abs(y - ref)) <= 1e-4
    # the one-line run script reproduces the golden vectors
    subprocess.run(
        [str(art.path / "run.sh"), "step", "golden/input.bin", "out.bin"], cwd=art.path, check=True, capture_output=True
    )
    got, want = read_output(art.path / "out.bin"), read_output(art.path / "golden" / "expected.bin")
    assert np.max(np.abs(got["pooled"] - want["pooled"])) <= 1e-4
    (art.path / "out.bin").unlink()
    # with no arguments, from any directory: the artifact's own golden input, output.bin in the cwd
    elsewhere = art.path.parent / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    subprocess.run([str(art.path / "run.sh")], cwd=elsewhere, check=True, capture_output=True)
    got = read_output(elsewhere / "output.bin")
    assert np.max(np.abs(got["pooled"] - want["pooled"])) <= 1e-4
    cost = art.cost(make_input(graph, 1, 64, seed=1))
    ins = cost["instructions"]
    assert ins["per_step"] > 100 and ins["per_inference"] > 64 * ins["per_step"] * 0.99
    assert ins["per_inference"] == pytest.approx(64 * ins["per_step"] + ins["per_sequence_fixed"])
    assert cost["sizes"]["model"]["const_bytes"] >= 4 * graph.num_params()


def test_artifact_integrity(exported, tmp_path):
    graph, art = exported("rnn")
    assert CArtifact.load(art.path).manifest["target"]["name"] == "arm"
    m = art.manifest
    assert m["toolchain"]["aarch64-linux-gnu-gcc"].startswith("aarch64-linux-gnu-gcc")
    assert set(m["state_spec"]) == set(graph.state_spec())
    assert all(len(h["sha256"]) == 64 for h in m["files"].values()) and "bin/model" in m["files"]
    with pytest.raises(ArtifactError, match="already exists"):
        export_c(graph, art.path, target="arm")
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(art.path), str(copy)], check=True)
    with open(copy / "src" / "model.c", "a") as f:
        f.write("/* edited */\n")
    with pytest.raises(ArtifactError, match="sha256 differs"):
        CArtifact.load(copy)


@pytest.mark.parametrize("group", CELL_GROUPS)
def test_every_cell_case_on_aarch64(arm_tools, tmp_path, group):
    """Every case of cell_cases.py (step programs rendered to C) under QEMU: whole, per step and
    chunked runs agree bit for bit and match the reference at two lengths and batch sizes."""
    graph = cells_graph(group)
    art = export_c(graph, tmp_path / "art", target="arm")
    check_cell_cases(art.target, art.binary, graph, art.manifest)
