"""ONNX export latency: edgeseq-exported models in onnxruntime vs the same model in torch eager.

For each zoo model (GRU, LSTM, Elman RNN, LMU, minGRU, LIF; hidden H, input I, T steps, batch 1) this
runs, side by side in one process, with one thread everywhere:

- ``torch_eager``: the torch model itself (``torch.set_num_threads(1)``, ``torch.no_grad()``, eval);
- ``edgeseq_onnx``: ``edgeseq.capture`` -> ``build_onnx`` (edgeseq-domain functions rendered from the
  step programs: ``Scan``, or ONNX's own GRU / LSTM op where the program computes exactly that, the
  default), onnxruntime with ``intra_op_num_threads=1``;
- ``edgeseq_onnx_scan``: the same with ``fused_rnn=False`` (every recurrence over ``Scan``), for the
  models whose default export uses a fused kernel;
- ``edgeseq_onnx_int8``: the model quantized with ``edgeseq.quant.quantize(..., "edgeseq")`` (calibrated
  on random sequences) and exported as its integer program (``build_onnx_quantized``: int8
  ``MatMulInteger`` kernels, integer ops inside the ``Scan`` bodies), same onnxruntime setup; its
  outputs are checked bit for bit against the integer-exact interpreter (``exact_vs_integer_interpreter``)
  and ``max_abs_diff_vs_torch`` is then the quantization error (skip it with ``--no-int``);
- ``edgeseq_onnx_qdq``: the same quantized graph as its QDQ model (``build_onnx_qdq``: the float
  model with QuantizeLinear/DequantizeLinear at the plan's points, int8 x int8 products fused by
  onnxruntime into ``QGemm``), same onnxruntime setup; ``max_lsb_vs_integer_interpreter`` (integer
  output error in output LSBs) and ``decisions_agree`` compare it with the integer-exact interpreter,
  ``products`` counts where its matrix products run and whether onnxruntime has an integer kernel
  for them (skip it with ``--no-qdq``);
- ``edgeseq_onnx_qdq_fused``: the QDQ model with ``fused_rnn=True``, for the models where it applies
  (LSTM: onnxruntime's ``DynamicQuantizeLSTM`` instead of a ``Scan``, within the wider
  ``recurrent_fused`` tolerance);
- ``torch_onnx``: torch's legacy exporter (``torch.onnx.export(dynamo=False, dynamic_axes=...)``)
  in the same onnxruntime setup, as a baseline. It is also run at a second length: a model whose
  time loop was unrolled at export time gives wrong answers there, which is recorded
  (``correct_at_other_length``), and its speed is then not a valid comparison.

Per-sequence latency is the median of all timed runs; the methods run in alternating warm blocks
(``--rounds`` blocks of ``--repeats`` runs each, after ``--warmup`` untimed runs), so they share the
machine's slow drift without evicting each other's caches on every call. ``--clock cpu`` times the
calling thread's CPU time instead of wall time (every method here runs on that one thread): on a
shared, loaded machine it leaves out the time the process waits for a core.
Results: benchmarks/results/onnx.json.

    python -m benchmarks.bench_onnx [--hidden 128] [--steps 128] [--inputs 64] [--rounds 5] [--repeats 20]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
import warnings

import numpy as np
import torch

from benchmarks.common import write_results

MODELS = {
    "gru": lambda a: dict(hidden=a.hidden),
    "lstm": lambda a: dict(hidden=a.hidden),
    "rnn": lambda a: dict(hidden=a.hidden),
    "lmu": lambda a: dict(hidden=a.hidden, memory_d=1, order=64, theta=float(a.steps)),
    "mingru": lambda a: dict(hidden=a.hidden),
    "lif": lambda a: dict(hidden=a.hidden),
}


def _session(model_bytes: bytes):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 4
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


@contextlib.contextmanager
def _quiet_fds():
    """Silence stdout/stderr at the file-descriptor level (torch's exporter logs from C++)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _torch_onnx(model: torch.nn.Module, x: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), _quiet_fds():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            buf,
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            opset_version=17,
            dynamic_axes={"x": {0: "batch", 1: "time"}, "y": {0: "batch"}},
        )
    return buf.getvalue()


def bench_model(arch: str, args) -> dict:
    from edgeseq import capture
    from edgeseq.export.onnx import build_onnx
    from edgeseq.nn import build_model

    torch.manual_seed(0)
    model = build_model(arch, args.inputs, 10, **MODELS[arch](args)).eval()
    x = torch.randn(args.batch, args.steps, args.inputs)
    x_other = torch.randn(args.batch, args.steps // 2 + 7, args.inputs)
    graph = capture(model, x[:, :16])
    with torch.no_grad():
        want, want_other = model(x).numpy(), model(x_other).numpy()

    runners: dict[str, callable] = {}
    row: dict = {"params": graph.num_params(), "methods": {}}

    def torch_eager():
        with torch.no_grad():
            return model(x)

    runners["torch_eager"] = torch_eager
    xn = x.numpy()
    variants = [("edgeseq_onnx", build_onnx(graph))]
    if {p.key: p.value for p in variants[0][1].metadata_props}.get("edgeseq.fused_rnn") == "true":
        variants.append(("edgeseq_onnx_scan", build_onnx(graph, fused_rnn=False)))
    for name, m in variants:
        s = _session(m.SerializeToString())
        (y,) = s.run(None, {"x": xn})
        (y2,) = s.run(None, {"x": x_other.numpy()})
        row["methods"][name] = {
            "max_abs_diff_vs_torch": float(np.abs(y - want).max()),
            "correct_at_other_length": bool(np.abs(y2 - want_other).max() < 1e-4),
        }
        runners[name] = (lambda s: lambda: s.run(None, {"x": xn}))(s)
    if args.int8 or args.qdq:
        from edgeseq.export.onnx import build_onnx_quantized
        from edgeseq.quant import intexact, quantize

        calib = np.random.default_rng(0).standard_normal((16, min(args.steps, 64), args.inputs))
        qg = quantize(graph, calib, "edgeseq")
        ref, _ = intexact.run(qg.program, qg.quantize_input(xn))
    if args.int8:
        s = _session(build_onnx_quantized(qg).SerializeToString())
        y, yq = s.run([qg.program.outputs[0].name, "q." + qg.program.outputs[0].name], {"x": xn})
        row["methods"]["edgeseq_onnx_int8"] = {
            "max_abs_diff_vs_torch": float(np.abs(y - want).max()),
            "exact_vs_integer_interpreter": bool(np.array_equal(yq.astype(np.int64), ref[0])),
            "correct_at_other_length": bool(
                np.array_equal(
                    s.run(["q." + qg.program.outputs[0].name], {"x": x_other.numpy()})[0].astype(np.int64),
                    intexact.run(qg.program, qg.quantize_input(x_other.numpy()))[0][0],
                )
            ),
            "micro_ops_per_step": len(qg.program.step),
        }
        runners["edgeseq_onnx_int8"] = (lambda s: lambda: s.run(None, {"x": xn}))(s)
    if args.qdq:
        from collections import Counter

        from edgeseq.export.onnx import build_onnx_qdq

        info: dict = {}
        sq = _session(build_onnx_qdq(qg, info=info).SerializeToString())
        oname = qg.program.outputs[0].name
        yq = sq.run(["q." + oname], {"x": xn})[0].astype(np.int64)
        y = sq.run([oname], {"x": xn})[0]
        yq2 = sq.run(["q." + oname], {"x": x_other.numpy()})[0].astype(np.int64)
        ref2, _ = intexact.run(qg.program, qg.quantize_input(x_other.numpy()))
        row["methods"]["edgeseq_onnx_qdq"] = {
            "max_abs_diff_vs_torch": float(np.abs(y - want).max()),
            "max_lsb_vs_integer_interpreter": int(np.abs(yq - ref[0]).max()),
            "decisions_agree": bool(np.array_equal(yq.argmax(-1), ref[0].argmax(-1))),
            "correct_at_other_length": bool(np.array_equal(yq2.argmax(-1), ref2[0].argmax(-1))),
            "max_lsb_at_other_length": int(np.abs(yq2 - ref2[0]).max()),
            "products": dict(
                Counter(f"{p['where']}:{'integer' if p['integer_kernel'] else 'float'}" for p in info["products"])
            ),
        }
        runners["edgeseq_onnx_qdq"] = (lambda s: lambda: s.run(None, {"x": xn}))(sq)
        finfo: dict = {}
        fused = build_onnx_qdq(qg, info=finfo, fused_rnn=True)
        if any(p["where"] == "fused" for p in finfo["products"]):  # an LSTM: onnxruntime's quantized kernel
            sf = _session(fused.SerializeToString())
            yq = sf.run(["q." + oname], {"x": xn})[0].astype(np.int64)
            yq2 = sf.run(["q." + oname], {"x": x_other.numpy()})[0].astype(np.int64)
            row["methods"]["edgeseq_onnx_qdq_fused"] = {
                "max_abs_diff_vs_torch": float(np.abs(sf.run([oname], {"x": xn})[0] - want).max()),
                "max_lsb_vs_integer_interpreter": int(np.abs(yq - ref[0]).max()),
                "decisions_agree": bool(np.array_equal(yq.argmax(-1), ref[0].argmax(-1))),
                "correct_at_other_length": bool(np.array_equal(yq2.argmax(-1), ref2[0].argmax(-1))),
                "max_lsb_at_other_length": int(np.abs(yq2 - ref2[0]).max()),
            }
            runners["edgeseq_onnx_qdq_fused"] = (lambda s: lambda: s.run(None, {"x": xn}))(sf)
    try:
        s = _session(_torch_onnx(model, x))
        (y,) = s.run(None, {"x": xn})
        try:
            (y2,) = s.run(None, {"x": x_other.numpy()})
            other_ok = bool(np.abs(y2 - want_other).max() < 1e-4)
        except Exception as e:  # noqa: BLE001 - a fixed-length graph may refuse other lengths
            other_ok, row["torch_onnx_other_length_error"] = False, str(e).splitlines()[0][:200]
        row["methods"]["torch_onnx"] = {
            "max_abs_diff_vs_torch": float(np.abs(y - want).max()),
            "correct_at_other_length": other_ok,
        }
        runners["torch_onnx"] = lambda: s.run(None, {"x": xn})
        if arch in ("gru", "lstm"):  # A/A control: a second session of the same model, timed alike
            s_aa = _session(_torch_onnx(model, x))
            row["methods"]["torch_onnx_aa"] = {"note": "a second session of torch_onnx (run-to-run spread)"}
            runners["torch_onnx_aa"] = lambda: s_aa.run(None, {"x": xn})
    except Exception as e:  # noqa: BLE001 - recorded: torch's exporter does not handle every model
        row["methods"]["torch_onnx"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}

    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    samples: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(args.rounds):  # alternating blocks: methods share slow machine drift, each block runs warm
        for k, fn in runners.items():
            for _ in range(args.warmup):
                fn()
            for _ in range(args.repeats):
                t0 = clock()
                fn()
                samples[k].append(clock() - t0)
    eager = statistics.median(samples["torch_eager"])
    row["methods"].setdefault("torch_eager", {})
    for k, v in samples.items():
        med = statistics.median(v)
        row["methods"][k].update(
            {
                "median_ms": med * 1e3,
                "p10_ms": np.percentile(v, 10) * 1e3,
                "p90_ms": np.percentile(v, 90) * 1e3,
                "speedup_vs_torch_eager": eager / med,
            }
        )
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--inputs", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5, help="alternating blocks per method")
    ap.add_argument("--repeats", type=int, default=20, help="timed runs per block")
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs before each block")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time, or the calling thread's CPU time (robust on a loaded machine)",
    )
    ap.add_argument(
        "--no-int",
        dest="int8",
        action="store_false",
        help="skip the quantized graph's integer program model (edgeseq_onnx_int8)",
    )
    ap.add_argument(
        "--no-qdq", dest="qdq", action="store_false", help="skip the quantized graph's QDQ model (edgeseq_onnx_qdq)"
    )
    ap.add_argument("--out-name", default="onnx", help="results file benchmarks/results/<name>.json")
    ap.add_argument("--no-write", action="store_true", help="print only, do not write the results file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import onnx
    import onnxruntime

    results = {}
    for arch in args.models.split(","):
        row = bench_model(arch, args)
        results[arch] = row
        parts = [
            f"{k} {v['median_ms']:.3f} ms ({v['speedup_vs_torch_eager']:.2f}x)"
            for k, v in row["methods"].items()
            if "median_ms" in v
        ]
        bad = [k for k, v in row["methods"].items() if v.get("correct_at_other_length") is False]
        print(f"{arch:7s} " + " | ".join(parts) + (f"  [wrong at other T: {', '.join(bad)}]" if bad else ""))
        if "error" in row["methods"].get("torch_onnx", {}):
            print(f"        torch_onnx: {row['methods']['torch_onnx']['error']}")
    summary = {
        arch: {
            k: round(v["speedup_vs_torch_eager"], 2)
            for k, v in row["methods"].items()
            if "median_ms" in v and k != "torch_eager"
        }
        for arch, row in results.items()
    }
    out = {
        "config": {k: v for k, v in vars(args).items() if k not in ("no_write", "out_name")},
        "threads": 1,
        "load_average_1_5_15min": list(os.getloadavg()),
        "versions": {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        "target": "edgeseq_onnx >= 3x faster than torch_eager (B=1, one thread)",
        "speedup_vs_torch_eager": summary,
        "target_met": {arch: s.get("edgeseq_onnx", 0) >= 3.0 for arch, s in summary.items()},
        "edgeseq_onnx_speedup_vs_torch_onnx": {
            arch: round(r["methods"]["torch_onnx"]["median_ms"] / r["methods"]["edgeseq_onnx"]["median_ms"], 2)
            for arch, r in results.items()
            if "median_ms" in r["methods"].get("torch_onnx", {})
        },
        **host_goals(results),
        "results": results,
    }
    if not args.no_write:
        print(f"wrote {write_results(args.out_name, out)}")
    return out


def host_goals(results: dict) -> dict:
    """The host goals on onnxruntime: a quantized export (QDQ or integer program) faster than the float
    export of the same graph, and the whole-sequence GRU / LSTM export at least as fast as torch's."""
    ratios, met, spreads = {}, {}, {}
    for arch, r in results.items():
        ms = r["methods"]
        f = ms.get("edgeseq_onnx", {}).get("median_ms")
        if f is None:
            continue
        q = {
            k: ms[k]["median_ms"]
            for k in ("edgeseq_onnx_qdq", "edgeseq_onnx_qdq_fused", "edgeseq_onnx_int8")
            if "median_ms" in ms.get(k, {})
        }
        if q:
            ratios[arch] = {k: round(f / v, 3) for k, v in q.items()}
            met[f"{arch}: quantized faster than float"] = min(q.values()) < f
        t = ms.get("torch_onnx", {}).get("median_ms")
        if arch in ("gru", "lstm") and t is not None:
            # two sessions of one model differ by the run-to-run spread: within it, a tie counts as met
            aa = ms.get("torch_onnx_aa", {}).get("median_ms", t)
            spread = abs(t - aa) / min(t, aa)
            spreads[arch] = round(spread, 4)
            met[f"{arch}: edgeseq ORT at least as fast as torch-exported ORT"] = f <= max(t, aa)
    return {
        "host_goals": "a quantized export (QDQ or integer program) faster than the float export of the same "
        "graph in onnxruntime; the whole-sequence GRU / LSTM export at least as fast as onnxruntime on torch's "
        "(the slower of two sessions of torch's export: their difference is the run-to-run spread)",
        "float_over_quantized_time": ratios,
        "torch_onnx_aa_spread": spreads,
        "host_goals_met": met,
    }


QUICK = [
    "--hidden",
    "32",
    "--steps",
    "32",
    "--inputs",
    "16",
    "--rounds",
    "1",
    "--repeats",
    "5",
    "--models",
    "gru,lstm,lmu,lif",
]


def run(quick: bool = False, write: bool = True) -> dict:
    """The benchmark as a function: default settings, or a seconds-long smoke run with ``quick``."""
    return main((QUICK if quick else []) + ([] if write else ["--no-write"]))


if __name__ == "__main__":
    main()
