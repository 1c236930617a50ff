"""Streaming step on the host: edgeseq's x86 C artifacts called through their native step API against onnxruntime's step on torch's own ONNX export, side by side in one process.

For each model of the latency benchmark (hidden 128, 64 inputs, 10 classes, B = 1):

- ``torch_onnx_step``: torch's exporter on a one-step module with explicit state (the latency
  benchmark's ``TorchStep``), run by onnxruntime (one thread) one step per ``session.run``, the
  state outputs fed back;
- ``edgeseq_c_float``, ``edgeseq_c_int8``: the float C artifact (``export_c``) and the integer one
  (``export_c_int``, edgeseq plan calibrated on noise) for ``x86`` (-march=native), built as a
  shared library and called through ctypes, one ``esq_step`` per call
  (:class:`edgeseq.export.c.native.NativeModel`), each checked against its artifact's executable.

Each method runs in alternating blocks (``--rounds`` of ``--calls`` calls), so all share the
machine's load; the latency is the median block's mean per call. Target: the integer C step at least
2x faster than onnxruntime's (the float C step is measured alongside). aarch64 is not timed here (onnxruntime under qemu is an emulator, not a
device: the arm comparison is by instruction count in ``bench_device``).

    python -m benchmarks.bench_host [--models gru,lstm,lmu] [--rounds 7] [--calls 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import write_results

MODELS = {"gru": dict(hidden=128), "lstm": dict(hidden=128), "lmu": dict(hidden=128, memory_d=1, order=64, theta=128.0)}


def _block(fn, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--no-write", action="store_true", help="print only, do not write the results file")
    args = ap.parse_args(argv)

    import torch

    import edgeseq
    from benchmarks.bench_latency import TorchStep, _session, _torch_export
    from edgeseq.export.c import export_c
    from edgeseq.export.c.intexport import export_c_int
    from edgeseq.export.c.native import NativeModel
    from edgeseq.nn import build_model
    from edgeseq.quant import quantize

    torch.set_num_threads(1)
    rows, met = [], {}
    with tempfile.TemporaryDirectory(prefix="edgeseq-host-") as tmp:
        for arch in args.models.split(","):
            torch.manual_seed(0)
            model = build_model(arch, 64, 10, **MODELS[arch]).eval()
            x = np.random.default_rng(0).standard_normal((1, 128, 64)).astype(np.float32)
            graph = edgeseq.capture(model, torch.as_tensor(x[:, :16]))
            q = quantize(graph, np.random.default_rng(1).standard_normal((32, 64, 64)), "edgeseq")
            stepper = TorchStep(model).eval()
            st0 = stepper.init_state(1)
            names = [f"s{i}" for i in range(len(st0))]
            dyn = {n: {0 if st0[i].dim() == 2 else 1: "batch"} for i, n in enumerate(names)}
            sess = _session(
                _torch_export(
                    stepper,
                    (torch.as_tensor(x[:, 0]), *st0),
                    ["x"] + names,
                    ["y"] + [f"o{i}" for i in range(len(st0))],
                    {"x": {0: "batch"}, **dyn},
                )
            )
            feeds = {"x": x[:, 0], **{n: t.numpy() for n, t in zip(names, st0)}}

            def ort_step():
                res = sess.run(None, feeds)
                feeds.update(zip(names, res[1:]))

            methods = {"torch_onnx_step": ort_step}
            checks = {}
            for name, art in (
                ("edgeseq_c_float", export_c(graph, Path(tmp) / f"{arch}-f", target="x86", golden_input=x[:, :16])),
                ("edgeseq_c_int8", export_c_int(q, Path(tmp) / f"{arch}-i", target="x86", golden_input=x[:, :16])),
            ):
                nm = NativeModel(art, build_dir=Path(tmp) / f"{arch}-{name}-lib")
                _, pooled = nm.run(x[0])
                want = art.run(x)[0][0]
                checks[name] = float(np.abs(pooled - want).max())
                nm.reset()
                nm.step_buffer()[:] = x[0, 0]
                methods[name] = nm.step_in_place
            samples = {k: [] for k in methods}
            for _ in range(args.rounds):
                for k, fn in methods.items():
                    _block(fn, args.calls // 10)
                    samples[k].append(_block(fn, args.calls))
            med = {k: float(np.median(v)) * 1e6 for k, v in samples.items()}
            row = {"model": arch, "params": graph.num_params(), "torch_onnx_step_us": round(med["torch_onnx_step"], 2)}
            for k in ("edgeseq_c_float", "edgeseq_c_int8"):
                row[f"{k}_us"] = round(med[k], 2)
                row[f"{k}_speedup"] = round(med["torch_onnx_step"] / med[k], 2)
                row[f"{k}_native_vs_executable_max_abs_diff"] = checks[k]
            met[arch] = row["edgeseq_c_int8_speedup"] >= 2.0
            rows.append(row)
            print(
                f"{arch:5} ort {med['torch_onnx_step']:7.2f} us   C float {med['edgeseq_c_float']:7.2f} us "
                f"({row['edgeseq_c_float_speedup']:.2f}x)   C int8 {med['edgeseq_c_int8']:7.2f} us "
                f"({row['edgeseq_c_int8_speedup']:.2f}x)",
                flush=True,
            )
    result = {
        "config": {
            "hidden": 128,
            "inputs": 64,
            "classes": 10,
            "batch": 1,
            "rounds": args.rounds,
            "calls": args.calls,
            "threads": 1,
            "c_flags": "x86 target: -O2 -march=native",
        },
        "target": "streaming step (B=1, H=128): edgeseq's x86 integer C artifact through its native step API >= 2x "
        "faster than onnxruntime's step on torch's export (the float C artifact is listed too)",
        "target_met": met,
        "method": "alternating blocks in one process; per-call mean of each block, median over blocks; both "
        "called from Python (ctypes / session.run), one step per call, state carried",
        "tables": {"streaming step latency (us per call) and speedup over onnxruntime": rows},
    }
    if not args.no_write:
        print(f"wrote {write_results('host', result)}")
    return result


QUICK = ["--models", "gru", "--rounds", "3", "--calls", "200"]


def run(quick: bool = False, write: bool = True) -> dict:
    """The benchmark as a function: default settings, or a smoke run with ``quick``."""
    return main((QUICK if quick else []) + ([] if write else ["--no-write"]))


if __name__ == "__main__":
    main()
