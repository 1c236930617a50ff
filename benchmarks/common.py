"""Shared helpers for edgeseq benchmarks: machine description, timing, results files."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).resolve().parent / "results"


def results_dir() -> Path:
    """Where results files go: $EDGESEQ_BENCH_RESULTS (set by ``python -m benchmarks --out``) or
    benchmarks/results."""
    return Path(os.environ.get("EDGESEQ_BENCH_RESULTS") or RESULTS)


def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    flags = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("unknown", "", "x86_64"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                flags = sorted(f for f in ("avx2", "avx512f", "fma", "neon", "asimd") if f in have)
                break
    except OSError:
        pass
    import numpy

    info = {
        "cpu": cpu,
        "cpu_flags": flags,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": numpy.__version__,
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


def time_fn(fn: Callable[[], object], repeats: int = 20, warmup: int = 3, min_time: float = 0.0) -> dict:
    """Median / p10 / p90 wall time of fn() in seconds."""
    for _ in range(warmup):
        fn()
    samples = []
    start = time.perf_counter()
    while len(samples) < repeats or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    samples.sort()
    q = lambda p: samples[min(len(samples) - 1, int(p * len(samples)))]  # noqa: E731
    return {"median_s": statistics.median(samples), "p10_s": q(0.1), "p90_s": q(0.9), "n": len(samples)}


def write_results(name: str, data: dict) -> Path:
    from edgeseq.util.fs import atomic_write_json

    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "machine": machine_info(), "date": time.strftime("%Y-%m-%d %H:%M:%S"), **data}
    return atomic_write_json(out / f"{name}.json", data)
