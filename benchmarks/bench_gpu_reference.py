"""Throughput of the reference kernels (edgeseq.validate.gpu) per scan family.

On a CUDA machine it times the Triton kernels and the plain-torch kernels on the GPU (float32 and
float64), and the float64 CPU interpreter as the baseline; on a machine without CUDA it times the
torch kernels on the CPU against the interpreter. Each configuration is first checked against the
float64 interpreter (max relative error recorded). Throughput = B*T / median seconds, in steps/s.

Self-contained for a bare GPU box: run from the repository root with only torch, triton and numpy
installed (``python benchmarks/bench_gpu_reference.py``); when scipy is missing a minimal stand-in
(expit / erf / expm from torch) is registered so that edgeseq's IR imports. Results are merged per
device into benchmarks/results/gpu_reference.json (a CPU run does not erase a GPU run).

    python -m benchmarks.bench_gpu_reference [--quick] [--families gru,lmu] [--batch 64] [--steps 1024]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a plain script from a bare checkout
    sys.path.insert(0, str(ROOT))

FAMILIES = ("rnn", "gru", "lstm", "mingru", "minlstm", "lmu", "lif", "cubalif")


def _scipy_standin() -> bool:
    """Register a minimal ``scipy`` (special.expit / erf, linalg.expm) backed by torch when scipy is
    not installed. Returns True when the stand-in is in use."""
    if importlib.util.find_spec("scipy") is not None:
        return False
    import numpy as np
    import torch

    def expit(x):
        return torch.sigmoid(torch.as_tensor(np.asarray(x, dtype=np.float64))).numpy()

    def erf(x):
        return torch.special.erf(torch.as_tensor(np.asarray(x, dtype=np.float64))).numpy()

    def expm(a):
        return torch.linalg.matrix_exp(torch.as_tensor(np.asarray(a, dtype=np.float64))).numpy()

    scipy = types.ModuleType("scipy")
    special = types.ModuleType("scipy.special")
    special.expit, special.erf = expit, erf
    linalg = types.ModuleType("scipy.linalg")
    linalg.expm = expm
    scipy.special, scipy.linalg = special, linalg
    sys.modules.update({"scipy": scipy, "scipy.special": special, "scipy.linalg": linalg})
    return True


def family_graph(family: str, inputs: int, hidden: int, seed: int = 0):
    """A one-layer graph of ``family`` with random weights scaled for a stable recurrence."""
    import numpy as np

    from edgeseq.ir import GraphBuilder, NeuronParams
    from edgeseq.ir import ops as O

    rng = np.random.default_rng(seed)

    def w(rows, cols, gain=1.0):
        return rng.standard_normal((rows, cols)) * gain / np.sqrt(cols)

    def b(n):
        return rng.standard_normal(n) * 0.1

    g = GraphBuilder(inputs)
    h = hidden
    if family == "rnn":
        y = g.add(O.RNN(w_ih=w(h, inputs), w_hh=w(h, h, 0.9), b_ih=b(h), b_hh=b(h)), "x")
    elif family == "gru":
        y = g.add(O.GRU(w_ih=w(3 * h, inputs), w_hh=w(3 * h, h), b_ih=b(3 * h), b_hh=b(3 * h)), "x")
    elif family == "lstm":
        y = g.add(O.LSTM(w_ih=w(4 * h, inputs), w_hh=w(4 * h, h), b_ih=b(4 * h), b_hh=b(4 * h)), "x")
    elif family == "mingru":
        y = g.add(O.MinGRU(w_z=w(h, inputs), w_h=w(h, inputs), b_z=b(h), b_h=b(h)), "x")
    elif family == "minlstm":
        y = g.add(O.MinLSTM(w_f=w(h, inputs), w_i=w(h, inputs), w_h=w(h, inputs), b_f=b(h), b_i=b(h), b_h=b(h)), "x")
    elif family == "lmu":
        d, order = 4, 16
        y = g.add(
            O.LMU(
                e_x=w(d, inputs),
                order=order,
                theta=128.0,
                w_m=w(h, d * order),
                w_x=w(h, inputs),
                b_h=b(h),
                discretizer="zoh",
            ),
            "x",
        )
    elif family in ("lif", "cubalif"):
        cur = g.add(O.Linear(weight=w(h, inputs, 1.5), bias=b(h) + 0.2), "x")
        neuron = NeuronParams(
            beta=rng.uniform(0.8, 0.95, h),
            threshold=np.ones(h),
            alpha=rng.uniform(0.5, 0.9, h) if family == "cubalif" else None,
        )
        cls = O.LIF if family == "lif" else O.CuBaLIF
        y = g.add(cls(neuron=neuron, recurrence="all_to_all", w_rec=w(h, h, 0.3), b_rec=b(h), emit="membrane"), cur)
    else:
        raise SystemExit(f"unknown family '{family}'; known: {', '.join(FAMILIES)}")
    return g.build(y, {"family": family})


def _time(fn, sync, repeats: int, budget_s: float) -> dict:
    import statistics

    fn()
    sync()
    samples = []
    start = time.perf_counter()
    while len(samples) < repeats and (len(samples) < 3 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(samples), "min_s": min(samples), "n": len(samples)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--inputs", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch", type=int, default=None, help="default 64 on cuda, 16 on cpu")
    ap.add_argument("--steps", type=int, default=None, help="default 1024 on cuda, 256 on cpu")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--budget", type=float, default=3.0, help="seconds of timing per method at most")
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats (smoke test)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)

    standin = _scipy_standin()
    import numpy as np
    import torch

    from edgeseq.ir.interpret import run as interpret
    from edgeseq.validate.gpu import ReferenceRunner, status, triton_available

    cuda = torch.cuda.is_available()
    if not cuda:  # a shared CPU: oversubscribed intra-op threads make timings swing by 10x
        torch.set_num_threads(1)
    dev_name = f"cuda:{torch.cuda.get_device_name(0)}" if cuda else "cpu"
    batch = args.batch or (64 if cuda else 16)
    steps = args.steps or (1024 if cuda else 256)
    hidden, repeats, budget = args.hidden, args.repeats, args.budget
    if args.quick:
        batch, steps, hidden, repeats, budget = min(batch, 4), min(steps, 64), min(hidden, 16), 3, 0.5
    torch.manual_seed(0)
    methods = []
    if cuda:
        if triton_available():
            methods += [("triton", "cuda", "float32"), ("triton", "cuda", "float64")]
        methods += [("torch", "cuda", "float32"), ("torch", "cuda", "float64")]
    elif status()["triton_interpret_env"] and triton_available():  # smoke test of the Triton path, no GPU
        methods += [("triton", "cpu", "float32")]
    methods += [("torch", "cpu", "float32"), ("torch", "cpu", "float64")]
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rng = np.random.default_rng(0)
    rows = {}
    for fam in args.families.split(","):
        g = family_graph(fam, args.inputs, hidden)
        x = rng.standard_normal((batch, steps, args.inputs)).astype(np.float32)
        # correctness on a short prefix against the float64 interpreter
        xc = x[: min(batch, 4), : min(steps, 256)]
        want = interpret(g, xc.astype(np.float64))[0][0]
        row: dict = {"graph": g.nodes[-1].op.kind, "params": g.num_params(), "methods": {}}
        t_int = min(steps, 128)
        x_int = x[:, :t_int].astype(np.float64)
        tm = _time(lambda: interpret(g, x_int), lambda: None, 3, budget)
        row["methods"]["interpreter/cpu/float64"] = {
            "steps_per_s": batch * t_int / tm["median_s"],
            **tm,
            "note": f"timed over T={t_int} (the interpreter's cost is linear in T)",
        }
        for kernels, device, dtype in methods:
            name = f"{kernels}/{device}/{dtype}"
            try:
                r = ReferenceRunner(g, device=device, dtype=dtype, kernels=kernels)
                got = r.run(xc)[0][0]
                rel = float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))
                xt = r.tensor(x)
                tm = _time(lambda: r(xt), sync if device == "cuda" else (lambda: None), repeats, budget)
                row["methods"][name] = {
                    "steps_per_s": batch * steps / tm["median_s"],
                    **tm,
                    "max_rel_error_vs_interpreter": rel,
                }
            except Exception as e:  # noqa: BLE001 - a failing configuration is recorded, not fatal
                row["methods"][name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
        base = row["methods"]["interpreter/cpu/float64"]["steps_per_s"]
        for v in row["methods"].values():
            if "steps_per_s" in v:
                v["speedup_vs_interpreter"] = v["steps_per_s"] / base
        rows[fam] = row
        print(
            f"{fam:8s} "
            + " | ".join(
                f"{k} {v['steps_per_s']:,.0f} steps/s" if "steps_per_s" in v else f"{k} ERROR {v['error'][:60]}"
                for k, v in row["methods"].items()
            ),
            flush=True,
        )
    run = {
        "device": dev_name,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "config": {"batch": batch, "steps": steps, "hidden": hidden, "inputs": args.inputs, "quick": args.quick},
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "scipy_standin": standin,
            **status(),
        },
        "families": rows,
    }
    if args.no_write:
        return run
    results = Path(os.environ.get("EDGESEQ_BENCH_RESULTS") or ROOT / "benchmarks" / "results") / "gpu_reference.json"
    data = {}
    if results.exists():
        try:
            data = json.loads(results.read_text())
        except ValueError:
            data = {}
    data.setdefault("benchmark", "gpu_reference")
    data["method"] = (
        "steps/s = B*T / median wall time of one whole-graph reference run (cuda synchronised); "
        "correctness: max relative error vs the float64 interpreter on a prefix"
    )
    runs = data.setdefault("runs", {})
    runs[dev_name + (" (quick)" if args.quick else "")] = run
    results.parent.mkdir(parents=True, exist_ok=True)
    tmp = results.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, results)
    print(f"wrote {results}")
    return run


def run(quick: bool = False, write: bool = True) -> dict:
    """The benchmark as a function: default settings, or a seconds-long smoke run with ``quick``."""
    return main((["--quick"] if quick else []) + ([] if write else ["--no-write"]))


if __name__ == "__main__":
    main()
