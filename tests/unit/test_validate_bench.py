"""The benchmark suite entry points (``python -m benchmarks`` / ``edgeseq bench``): a quick run of two
benchmarks into a temporary results folder renders BENCHMARKS.md with the machine description,
and a quantization results file written by another stage becomes a table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeseq.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("TRITON_INTERPRET", None)
    return env


def test_quick_suite_renders_benchmarks_md(tmp_path):
    out = tmp_path / "results"
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "gpu_reference,parallel", "--out", str(out)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    suite = json.loads((out / "suite.json").read_text())
    ran = {n: b for n, b in suite["benchmarks"].items() if b["status"] != "not run"}
    assert suite["quick"] is True and set(ran) == {"gpu_reference", "parallel"}
    assert all(b["status"] == "ok" for b in ran.values())
    assert {"latency", "onnx", "tvm", "targets"} <= set(suite["benchmarks"])  # listed as not run
    assert suite["threads"]["OPENBLAS_NUM_THREADS"] == "1"
    gpu = json.loads((out / "gpu_reference.json").read_text())
    run = next(iter(gpu["runs"].values()))
    assert {"rnn", "gru", "lstm", "mingru", "minlstm", "lmu", "lif", "cubalif"} <= set(run["families"])
    for fam in run["families"].values():
        for name, m in fam["methods"].items():
            assert "error" not in m, (name, m)
            if "max_rel_error_vs_interpreter" in m:
                assert m["max_rel_error_vs_interpreter"] < 1e-5
    md = (out / "BENCHMARKS.md").read_text()
    for heading in (
        "## Machine",
        "## Parallel vs sequential training",
        "## Reference kernels throughput",
        "## Quantized accuracy",
        "## Suite run",
    ):
        assert heading in md
    assert "cores" in md and "memory" in md and "torch" in md and "Not measured in this run" in md

    # a quant.json from the quantization stage is rendered as a table
    (out / "quant.json").write_text(
        json.dumps(
            {
                "benchmark": "quant",
                "results": {
                    "gru/int8": {"accuracy": 0.91, "float_accuracy": 0.92, "agreement": 0.98},
                    "lmu/int16": {"accuracy": 0.90, "float_accuracy": 0.90, "agreement": 1.0},
                },
            }
        )
    )
    assert (
        subprocess.run(
            [sys.executable, "-m", "benchmarks", "--render", "--out", str(out)],
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            timeout=120,
        ).returncode
        == 0
    )
    md = (out / "BENCHMARKS.md").read_text()
    assert "| name | accuracy | float_accuracy | agreement |" in md and "| gru/int8 | 0.91 |" in md


def test_cli_bench_rejects_unknown_benchmarks(capsys):
    assert cli(["bench", "--only", "gpu_reference,warp"]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark 'warp'" in err and "latency" in err


@pytest.mark.parametrize(
    "script", ["bench_onnx", "bench_tvm", "bench_targets", "bench_parallel", "bench_latency", "bench_gpu_reference"]
)
def test_every_benchmark_is_callable_with_a_quick_mode(script):
    import importlib
    import inspect

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    mod = importlib.import_module(f"benchmarks.{script}")
    assert list(inspect.signature(mod.run).parameters) == ["quick", "write"]
