"""TVM backend latency: edgeseq's TVM-compiled models vs the same model in torch eager, x86 host.

For each zoo model (default GRU and LMU; hidden H, input I, T steps, batch B=1) this runs, side by
side in one process and interleaved round by round, with one thread everywhere:

- ``torch_eager``: the torch model itself (``torch.set_num_threads(1)``, inference mode, eval);
- ``tvm``: ``edgeseq.capture`` -> ``compile_tvm(graph, "x86")``, the compiled Relax VM function
  called on a prepared TVM tensor (``TVM_NUM_THREADS=1``; the kernels are single-threaded);
- ``tvm_run``: the same through ``TvmModule.run`` (numpy in and out, argument checks included).

Correctness is recorded next to the speed (max abs difference of the TVM output vs torch and vs
the float64 reference interpreter). Per-sequence latency is the median over ``--repeats`` rounds.
The x86 library size, and the aarch64 one when aarch64-linux-gnu-gcc is installed, are recorded.
Results: benchmarks/results/tvm.json.

    python -m benchmarks.bench_tvm [--hidden 128] [--steps 128] [--inputs 64] [--repeats 50]
"""

from __future__ import annotations

import os

os.environ["TVM_NUM_THREADS"] = "1"  # before TVM starts its thread pool

import argparse  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import write_results  # noqa: E402

MODELS = {
    "gru": lambda a: dict(hidden=a.hidden),
    "lmu": lambda a: dict(hidden=a.hidden, memory_d=1, order=64, theta=float(a.steps)),
    "lstm": lambda a: dict(hidden=a.hidden),
    "rnn": lambda a: dict(hidden=a.hidden),
    "mingru": lambda a: dict(hidden=a.hidden),
    "lif": lambda a: dict(hidden=a.hidden),
}


def _cpu_features() -> dict:
    import tvm
    from tvm.target import codegen

    cpu = codegen.llvm_get_system_cpu()
    feats = set(codegen.llvm_get_cpu_features(tvm.target.Target({"kind": "llvm", "mcpu": cpu})))
    return {"llvm_cpu": cpu, "isa": sorted(f for f in feats if f.startswith(("avx", "fma", "sse4", "f16c")))}


def bench_model(arch: str, args) -> dict:
    import tvm

    from edgeseq import capture
    from edgeseq.export.tvm import compile_tvm
    from edgeseq.ir.interpret import run as reference
    from edgeseq.nn import build_model

    torch.manual_seed(0)
    model = build_model(arch, args.inputs, 10, **MODELS[arch](args)).eval()
    x = torch.randn(args.batch, args.steps, args.inputs)
    graph = capture(model, x[:, :16])
    t0 = time.perf_counter()
    module = compile_tvm(graph, "x86")
    compile_s = time.perf_counter() - t0
    xn = x.numpy()
    sizes = {}
    with tempfile.TemporaryDirectory() as d:  # export before the first run (a VM holds the constants)
        sizes["x86_library_bytes"] = module.export_library(Path(d) / "model.so").stat().st_size
        if shutil.which("aarch64-linux-gnu-gcc"):
            arm = compile_tvm(graph, "arm")
            sizes["aarch64_library_bytes"] = arm.export_library(Path(d) / "arm.so").stat().st_size
    with torch.inference_mode():
        want = model(x).numpy()
    got, _ = module.run(xn)
    ref = reference(graph, xn)[0][0]
    row: dict = {
        "config": MODELS[arch](args),
        "params": graph.num_params(),
        "compile_s": compile_s,
        "kernels": list(module.kernels),
        **sizes,
        "max_abs_diff_vs_torch": float(np.abs(got - want).max()),
        "max_abs_diff_vs_reference": float(np.abs(got - ref).max()),
        "methods": {},
    }

    vm_fn = module.vm["main"]
    xt = tvm.runtime.tensor(xn)
    runners = {"torch_eager": lambda: model(x), "tvm": lambda: vm_fn(xt), "tvm_run": lambda: module.run(xn)}
    samples: dict[str, list[float]] = {k: [] for k in runners}
    with torch.inference_mode():
        for fn in runners.values():
            for _ in range(args.warmup):
                fn()
        for _ in range(args.repeats):  # interleaved rounds: every method sees the same machine state
            for k, fn in runners.items():
                t0 = time.perf_counter()
                fn()
                samples[k].append(time.perf_counter() - t0)
    eager = statistics.median(samples["torch_eager"])
    for k, v in samples.items():
        med = statistics.median(v)
        row["methods"][k] = {
            "median_us": med * 1e6,
            "p10_us": float(np.percentile(v, 10)) * 1e6,
            "p90_us": float(np.percentile(v, 90)) * 1e6,
            "speedup_vs_torch_eager": eager / med,
        }
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--inputs", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--models", default="gru,lmu", help=f"comma list of {', '.join(MODELS)}")
    ap.add_argument("--no-write", action="store_true", help="print only, do not write the results file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import tvm

    results = {}
    for arch in args.models.split(","):
        row = bench_model(arch, args)
        results[arch] = row
        m = row["methods"]
        print(
            f"{arch:7s} torch_eager {m['torch_eager']['median_us']:9.1f} us | tvm {m['tvm']['median_us']:8.1f} us "
            f"({m['tvm']['speedup_vs_torch_eager']:.1f}x) | tvm_run {m['tvm_run']['median_us']:8.1f} us "
            f"({m['tvm_run']['speedup_vs_torch_eager']:.1f}x) | err vs ref {row['max_abs_diff_vs_reference']:.1e}"
        )
    out = {
        "config": {k: v for k, v in vars(args).items() if k != "no_write"},
        "threads": 1,
        "env": {"TVM_NUM_THREADS": os.environ.get("TVM_NUM_THREADS"), "torch_threads": torch.get_num_threads()},
        "versions": {"tvm": tvm.__version__},
        "cpu_features": _cpu_features(),
        "target": "tvm >= 3x faster than torch_eager (B=1, one thread)",
        "results": results,
    }
    if not args.no_write:
        print(f"wrote {write_results('tvm', out)}")
    return out


QUICK = ["--hidden", "32", "--steps", "32", "--inputs", "16", "--repeats", "5", "--warmup", "1", "--models", "gru,lmu"]


FULL = ["--models", ",".join(MODELS)]


def run(quick: bool = False, write: bool = True) -> dict:
    """The benchmark as a function: every model, or a seconds-long smoke run with ``quick``."""
    return main((QUICK if quick else FULL) + ([] if write else ["--no-write"]))


if __name__ == "__main__":
    main()
