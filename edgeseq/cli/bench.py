"""edgeseq bench: run the benchmark suite of a source checkout and render BENCHMARKS.md."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import ConfigError


def _checkout_root() -> Path:
    """The source checkout that holds ``benchmarks/`` (edgeseq installed in editable mode)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "suite.py").is_file():
        raise ConfigError(
            "edgeseq bench runs the benchmarks of a source checkout; this installation has none",
            where=str(root),
            hint="git clone the edgeseq repository and pip install -e it, "
            "then run edgeseq bench (or python -m benchmarks) there",
        )
    return root


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="run the benchmark suite and render benchmarks/BENCHMARKS.md",
        description="Latency (torch eager, onnxruntime, TVM), instructions on arm / Cortex-M, "
        "parallel training speedup, sizes, reference-kernel throughput. "
        "Same as python -m benchmarks.",
    )
    p.add_argument("--quick", action="store_true", help="small smoke settings (results in benchmarks/results/quick/)")
    p.add_argument("--only", help="comma list of benchmarks: parallel, latency, onnx, tvm, targets, gpu_reference")
    p.add_argument("--skip", help="comma list of benchmarks to leave out")
    p.add_argument("--out", help="results directory (default benchmarks/results)")
    p.add_argument("--render", action="store_true", help="only re-render BENCHMARKS.md from existing results")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``python -m benchmarks`` in a child process from the checkout: it sets one thread per
    runtime before numpy and torch load (this process has loaded them already)."""
    import importlib
    import os
    import subprocess

    root = _checkout_root()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    known = tuple(importlib.import_module("benchmarks.suite").BENCHES)
    for name in (args.only or "").split(",") + (args.skip or "").split(","):
        if name and name not in known:
            raise ConfigError(f"unknown benchmark '{name}'; known: {', '.join(known)}")
    argv = [sys.executable, "-m", "benchmarks"]
    for flag in ("quick", "render"):
        if getattr(args, flag):
            argv.append(f"--{flag}")
    for opt in ("only", "skip", "out"):
        if getattr(args, opt):
            argv += [f"--{opt}", str(Path(getattr(args, opt)).resolve()) if opt == "out" else getattr(args, opt)]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run(argv, cwd=root, env=env).returncode
