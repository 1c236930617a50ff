"""The edgeseq command line: help, version, doctor, ops table from the registry, and one-line
typed errors with a non-zero exit (never a traceback) on bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from edgeseq import __version__
from edgeseq.ir import GraphBuilder
from edgeseq.ir import ops as O
from edgeseq.ir.ops import OP_REGISTRY


def cli(*args, check_rc=None):
    p = subprocess.run([sys.executable, "-m", "edgeseq", *args], capture_output=True, text=True)
    if check_rc is not None:
        assert p.returncode == check_rc, (p.returncode, p.stdout, p.stderr)
    return p


def test_help_and_version():
    p = cli("--help", check_rc=0)
    for cmd in ("doctor", "ops", "info", "run"):
        assert cmd in p.stdout
    assert cli("--version", check_rc=0).stdout.strip() == f"edgeseq {__version__}"


def test_doctor_lists_dependencies_and_toolchains():
    info = json.loads(cli("doctor", "--json", check_rc=0).stdout)
    mods = {d["module"] for d in info["python_deps"]}
    assert {"torch", "onnxruntime", "tvm", "snntorch", "numpy", "onnx"} <= mods
    tools = {t["tool"]: t for t in info["toolchains"]}
    assert "qemu-system-arm" in tools and tools["qemu-system-arm"]["install"].startswith("sudo apt-get install")
    text = cli("doctor", check_rc=0).stdout
    assert "Toolchains:" in text


def test_doctor_strict_reports_missing_tools(tmp_path):
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}
    p = subprocess.run([sys.executable, "-m", "edgeseq", "doctor", "--strict"], capture_output=True, text=True, env=env)
    assert p.returncode == 1
    assert "MISSING" in p.stdout and "apt-get install -y qemu-user" in p.stdout


def test_ops_table_is_generated_from_registry():
    out = cli("ops", check_rc=0).stdout
    for kind in OP_REGISTRY:
        assert kind in out
    md = cli("ops", "--markdown", "--table", "ops", check_rc=0).stdout.splitlines()
    assert md[0].startswith("| op | category | reference")
    assert len(md) == 2 + len(OP_REGISTRY)


def test_every_renderer_covers_every_primitive_and_micro_op():
    """The primitive and micro-op tables come from the renderers' registries; every renderer
    handles every primitive (float) / micro-op (integer), so any cell renders everywhere."""
    from edgeseq.backends import micro_op_table, primitive_table
    from edgeseq.ir.step.evaluate import SEMANTICS
    from edgeseq.quant.program import MICRO_OPS

    for (header, rows), universe in (
        (primitive_table(), {c.__name__ for c in SEMANTICS}),
        (micro_op_table(), set(MICRO_OPS)),
    ):
        assert {r[0] for r in rows} == universe
        for r in rows:
            assert r[1:] == ["yes"] * (len(header) - 1), r
    out = cli("ops", "--table", "primitives", check_rc=0).stdout
    assert "Affine" in out and "quantizer" in out


@pytest.fixture
def ir_file(tmp_path):
    rng = np.random.default_rng(0)
    b = GraphBuilder(3)
    h = b.add(O.RNN(w_ih=rng.standard_normal((4, 3)), w_hh=rng.standard_normal((4, 4)) * 0.3), "x", "rnn")
    g = b.build(b.add(O.Readout(mode="last"), h))
    path = tmp_path / "m.esq"
    g.save(path)
    return path


def test_info_and_run(ir_file, tmp_path):
    out = cli("info", str(ir_file), check_rc=0).stdout
    assert "rnn" in out and "rnn/h" in out
    x = np.random.default_rng(1).standard_normal((2, 5, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    cli("run", str(ir_file), str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy"), check_rc=0)
    assert np.load(tmp_path / "y.npy").shape == (2, 4)


@pytest.mark.parametrize(
    "args,msg",
    [
        (["info", "/nonexistent/model.esq"], "no such model file"),
        (["run", "{ir}", "{bad_npy}"], "5 features per step; the model expects 3"),
        (["info", "{garbage}"], "corrupt or truncated IR file"),
    ],
)
def test_errors_are_one_line_without_traceback(args, msg, ir_file, tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((1, 4, 5)))
    (tmp_path / "garbage.esq").write_bytes(b"\x00" * 100)
    args = [a.format(ir=ir_file, bad_npy=tmp_path / "bad.npy", garbage=tmp_path / "garbage.esq") for a in args]
    p = cli(*args)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeseq: error: ") and msg in lines[0]
