"""edgeseq.export(): one call for every target, artifacts that reload and run, errors that name the problem."""

import json

import numpy as np
import pytest
import torch

import edgeseq
from edgeseq.errors import ArtifactError, CheckpointError, ConfigError
from edgeseq.export import Artifact, load_artifact

from .zoo_cases import build


@pytest.fixture(scope="module")
def lmu_graph():
    return edgeseq.capture(build("lmu_dense"), torch.zeros(1, 8, 6))


def _check(art, graph, shapes=((1, 7), (3, 19))):
    rng = np.random.default_rng(1)
    for b, t in shapes:
        x = rng.standard_normal((b, t, graph.in_features)).astype(np.float32)
        ref, _ = edgeseq.reference(graph, x.astype(np.float64))
        y = art.run(x)
        assert y.shape == ref.shape
        assert float(np.max(np.abs(y - ref))) <= 1e-4


def test_onnx_from_torch_module(tmp_path):
    m = build("gru")
    x = torch.randn(2, 10, 6)
    art = edgeseq.export(m, target="onnx", out=tmp_path / "a", example_input=x)
    assert isinstance(art, Artifact) and art.kind == "onnx"
    assert (tmp_path / "a" / "graph.esq").is_file()
    _check(art, art.graph)
    # golden input is the example input the user gave
    assert np.load(tmp_path / "a" / "golden" / "input.npy").shape == (2, 10, 6)


def test_x86_bundle_has_both_runtimes_and_reloads(tmp_path, lmu_graph):
    art = edgeseq.export(lmu_graph, target="x86", out=tmp_path / "x")
    assert art.kind == "bundle" and set(art.parts) == {"tvm", "c"}
    again = load_artifact(tmp_path / "x")
    _check(again, lmu_graph)
    _check(again.runner("c"), lmu_graph)
    mf = json.loads((tmp_path / "x" / "manifest.json").read_text())
    assert mf["target"] == "x86" and mf["ir_graph"] == "graph.esq"


@pytest.mark.toolchain
def test_arm_bundle_runs_under_qemu(tmp_path, lmu_graph, need_tool):
    need_tool("aarch64-linux-gnu-gcc")
    need_tool("aarch64-linux-gnu-g++")
    need_tool("qemu-aarch64")
    art = edgeseq.export(lmu_graph, target="arm", out=tmp_path / "arm")
    assert art.target == "arm" and (tmp_path / "arm" / "run.sh").stat().st_mode & 0o111
    _check(art, lmu_graph)  # the zero-dependency static executable under qemu-aarch64
    _check(art.runner("tvm"), lmu_graph, shapes=((2, 9),))  # the TVM runtime library under qemu-aarch64


@pytest.mark.toolchain
def test_cortex_m4_firmware(tmp_path, lmu_graph, need_tool):
    need_tool("arm-none-eabi-gcc")
    need_tool("qemu-system-arm")
    art = edgeseq.export(lmu_graph, target="cortex-m4", out=tmp_path / "m4")
    assert art.kind == "c" and art.target == "cortex-m4"
    _check(art, lmu_graph, shapes=((2, 11),))


def test_unknown_target_and_missing_out(tmp_path, lmu_graph):
    with pytest.raises(ConfigError, match="unknown export target 'riscv'"):
        edgeseq.export(lmu_graph, target="riscv", out=tmp_path / "r")
    with pytest.raises(ConfigError, match="output directory"):
        edgeseq.export(lmu_graph, target="onnx")
    with pytest.raises(ConfigError, match="cannot export a int"):
        edgeseq.export(3, target="onnx", out=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_existing_output_is_kept_without_force(tmp_path, lmu_graph):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="already exists"):
        edgeseq.export(lmu_graph, target="x86", out=out)
    assert (out / "keep.txt").read_text() == "mine"
    art = edgeseq.export(lmu_graph, target="onnx", out=out, force=True)
    assert not (out / "keep.txt").exists() and art.kind == "onnx"


def test_tampered_bundle_is_rejected(tmp_path, lmu_graph):
    art = edgeseq.export(lmu_graph, target="x86", out=tmp_path / "x")
    with open(art.path / "graph.esq", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactError, match="graph.esq"):
        load_artifact(tmp_path / "x")


def test_missing_model_spec_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="no such model"):
        edgeseq.export(str(tmp_path / "nope.ckpt"), target="onnx", out=tmp_path / "o")


def test_cli_export_and_errors(tmp_path, lmu_graph, capsys):
    from edgeseq.cli import main

    g = tmp_path / "m.esq"
    lmu_graph.save(g)
    assert main(["export", str(g), "--target", "onnx", "--out", str(tmp_path / "o")]) == 0
    assert "wrote" in capsys.readouterr().out
    rc = main(["export", str(g), "--target", "onnx", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc != 0 and "already exists" in err and "Traceback" not in err
    assert main(["export", str(g), "--target", "nope", "--out", str(tmp_path / "p")]) != 0
    assert "unknown export target" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["gru", "lstm"])
def test_onnx_fused_rnn_bodies_match_the_reference(tmp_path, case):
    import onnx

    graph = edgeseq.capture(build(case), torch.zeros(1, 8, 6))
    art = edgeseq.export(graph, target="onnx", out=tmp_path / case, fused_rnn=True)
    _check(art, graph, shapes=((1, 1), (3, 50), (1, 200)))
    m = onnx.load(str(tmp_path / case / "model.onnx"))
    body_ops = {n.op_type for f in m.functions for n in f.node}
    assert case.upper() in body_ops and "Scan" not in body_ops
    with pytest.raises(ConfigError, match="fused_rnn applies to ONNX exports only"):
        edgeseq.export(graph, target="x86", out=tmp_path / "x", fused_rnn=True)


def test_cli_fused_rnn_flag(tmp_path):
    import subprocess
    import sys

    g = edgeseq.capture(build("gru"), torch.zeros(1, 8, 6))
    g.save(tmp_path / "g.esq")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeseq",
            "export",
            str(tmp_path / "g.esq"),
            "--target",
            "onnx",
            "--fused-rnn",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["fused_rnn"] is True
