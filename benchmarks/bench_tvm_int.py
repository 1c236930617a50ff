"""Integer TVM kernels vs float TVM kernels, x86 host, one thread.

For each zoo model (default LMU and GRU; hidden H, input I, T steps, batch B=1) this compiles

- ``tvm_float``: ``compile_tvm(graph, "x86")`` (float32 TIR scan kernels), function ``main``;
- ``tvm_int``: ``compile_tvm_int(quantize(graph, calib, "edgeseq"), "x86")``, function ``main``
  (float32 in, the input quantizer, the integer program, dequantized float32 out);
- ``tvm_int_core``: the same library's ``main_int`` (integer in / out: the program alone);
- ``tvm_int_no_pmaddwd``: the integer program compiled with ``pair_products=False`` (plain
  widening multiply-adds, what aarch64 gets), ``main_int``;

and times the Relax VM functions on prepared TVM tensors, interleaved round by round
(``TVM_NUM_THREADS=1``). Bit-exactness of the integer outputs against the integer-exact
interpreter is recorded next to the speed. Results: benchmarks/results/tvm_int.json.

    python -m benchmarks.bench_tvm_int [--hidden 128] [--steps 128] [--inputs 64] [--repeats 50]
"""

from __future__ import annotations

import os

os.environ["TVM_NUM_THREADS"] = "1"  # before TVM starts its thread pool

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import write_results  # noqa: E402

MODELS = {
    "lmu": lambda a: dict(hidden=a.hidden, memory_d=1, order=64, theta=float(a.steps)),
    "gru": lambda a: dict(hidden=a.hidden),
    "lstm": lambda a: dict(hidden=a.hidden),
    "lif": lambda a: dict(hidden=a.hidden),
}


def bench_model(arch: str, args) -> dict:
    import tvm

    from edgeseq import capture
    from edgeseq.export.tvm import compile_tvm
    from edgeseq.export.tvm.intexport import compile_tvm_int
    from edgeseq.nn import build_model
    from edgeseq.quant import intexact, quantize

    torch.manual_seed(0)
    model = build_model(arch, args.inputs, 10, **MODELS[arch](args)).eval()
    x = torch.randn(args.batch, args.steps, args.inputs)
    graph = capture(model, x[:, :16])
    q = quantize(graph, np.random.default_rng(0).normal(size=(64, 64, args.inputs)), "edgeseq")
    t0 = time.perf_counter()
    fmod = compile_tvm(graph, "x86")
    t1 = time.perf_counter()
    imod = compile_tvm_int(q, "x86")
    t2 = time.perf_counter()
    pmod = compile_tvm_int(q, "x86", pair_products=False, functions=("main_int",))
    xn = x.numpy()
    xq = q.quantize_input(xn.astype(np.float64))
    (ref,), _ = intexact.run(q.program, xq)
    exact = {}
    for name, m in (("tvm_int", imod), ("tvm_int_no_pmaddwd", pmod)):
        y, _ = m.run_int(xq)
        exact[name] = bool(np.array_equal(np.asarray(y, np.int64), ref))
    yf, _ = imod.run(xn)
    exact["tvm_int_float_boundary"] = bool(
        np.array_equal(yf, intexact.dequantize_outputs(q.program, (ref,))[0].astype(np.float32))
    )
    xt = tvm.runtime.tensor(xn)
    xqt = tvm.runtime.tensor(np.ascontiguousarray(xq, dtype=imod.signature.check_int_inputs(xq)[0].dtype))
    fns = {
        "tvm_float": (fmod.vm["main"], xt),
        "tvm_int": (imod.vm["main"], xt),
        "tvm_int_core": (imod.vm["main_int"], xqt),
        "tvm_int_no_pmaddwd": (pmod.vm["main_int"], xqt),
    }
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for fn, a in fns.values():
        for _ in range(args.warmup):
            fn(a)
    for _ in range(args.repeats):
        for k, (fn, a) in fns.items():
            t = time.perf_counter()
            fn(a)
            samples[k].append(time.perf_counter() - t)
    base = statistics.median(samples["tvm_float"])
    row = {
        "config": MODELS[arch](args),
        "params": graph.num_params(),
        "macs_per_step": q.program.macs_per_step(),
        "micro_ops_per_step": len(q.program.step),
        "compile_s": {"float": t1 - t0, "int": t2 - t1},
        "bit_exact_vs_intexact": exact,
        "kernels": list(imod.kernels),
        "methods": {},
    }
    for k, v in samples.items():
        med = statistics.median(v)
        row["methods"][k] = {
            "median_us": med * 1e6,
            "p10_us": float(np.percentile(v, 10)) * 1e6,
            "p90_us": float(np.percentile(v, 90)) * 1e6,
            "speedup_vs_float": base / med,
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
    ap.add_argument("--models", default="lmu,gru", help=f"comma list of {', '.join(MODELS)}")
    ap.add_argument("--no-write", action="store_true", help="print only, do not write the results file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import tvm
    from tvm.target import codegen

    results = {}
    for arch in args.models.split(","):
        row = bench_model(arch, args)
        results[arch] = row
        m = row["methods"]
        print(
            f"{arch:5s} float {m['tvm_float']['median_us']:8.1f} us | int {m['tvm_int']['median_us']:8.1f} us "
            f"({m['tvm_int']['speedup_vs_float']:.2f}x) | int core {m['tvm_int_core']['median_us']:8.1f} us | "
            f"no pmaddwd {m['tvm_int_no_pmaddwd']['median_us']:8.1f} us | exact {row['bit_exact_vs_intexact']}"
        )
    out = {
        "config": {k: v for k, v in vars(args).items() if k != "no_write"},
        "threads": 1,
        "versions": {"tvm": tvm.__version__},
        "llvm_cpu": codegen.llvm_get_system_cpu(),
        "results": results,
    }
    if not args.no_write:
        print(f"wrote {write_results('tvm_int', out)}")
    return out


def run(quick: bool = False, write: bool = True) -> dict:
    quick_args = ["--hidden", "32", "--steps", "32", "--inputs", "16", "--repeats", "5", "--warmup", "1"]
    return main((quick_args if quick else []) + ([] if write else ["--no-write"]))


if __name__ == "__main__":
    main()
