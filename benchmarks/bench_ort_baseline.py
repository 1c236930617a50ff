"""onnxruntime's own quantizer on trained zoo checkpoints: the incumbent baseline for edgeseq's
quantization plans.

For each checkpoint (``--ckpt NAME=PATH``, default the shipped HAR LMU and the HAR GRU trained by scripts/train_models.py), runs
:func:`edgeseq.audit.ort_baseline.ort_baseline`: every ONNX form (edgeseq functions, inlined,
inlined with weights as initializers, fused GRU/LSTM, torch's legacy export) x every onnxruntime
method (quantize_static QDQ per tensor / per channel / EnableSubgraph, quantize_dynamic with and
without EnableSubgraph), calibrated on ``--calib`` training sequences and evaluated on the whole
test split. Records accuracy, agreement with the float model, what got quantized (also inside
Scan bodies), the integer kernels onnxruntime actually runs, and every failure with its reason.
Results: benchmarks/results/ort_baseline.json (models are written to a temporary directory).

    python -m benchmarks.bench_ort_baseline [--ckpt har_lmu=edgeseq/models/har_lmu/model.ckpt ...] [--calib 256]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import write_results

_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
# the shipped HAR LMU and the shipped HAR default (conv front end + GRU)
DEFAULT = {
    "har_lmu": str(_ROOT / "edgeseq/models/har_lmu/model.ckpt"),
    "har_gru": str(_ROOT / "edgeseq/models/har_gru/model.ckpt"),
}
QUICK = ["--calib", "32", "--eval-limit", "256"]


def bench_checkpoint(name: str, path: str, args) -> dict:
    from edgeseq.audit.ort_baseline import ort_baseline
    from edgeseq.prune.recipe import task_data
    from edgeseq.train import load_checkpoint

    model, doc = load_checkpoint(path)
    task = (doc.get("metrics") or {}).get("task", "har")
    train, _, test = task_data(task)
    idx = np.sort(np.random.default_rng(0).permutation(len(train))[: args.calib])
    n = len(test) if not args.eval_limit else min(len(test), args.eval_limit)
    with tempfile.TemporaryDirectory() as work:
        res = ort_baseline(model, train.x[idx], test.x[:n], test.y[:n], work, log=lambda s: print(f"  {s}", flush=True))
    res["checkpoint"] = path
    res["task"] = task
    res["arch"] = model.config["arch"]
    return res


def compact(res: dict) -> list[dict]:
    """One line per variant: the table a reader wants first."""
    rows = []
    for v in res["variants"]:
        row = {"variant": f"{v['export']}/{v['method']}", "status": v["status"]}
        if v["status"] == "ok":
            rc = v["recurrent_compute"]
            ff = v["feedforward_compute"]
            row.update(
                {
                    "accuracy": round(v["accuracy"], 4),
                    "agreement": round(v["agreement_with_float"], 4),
                    "quant_nodes": sum(v["quant_nodes"].values()),
                    "quant_nodes_in_loop_bodies": v["quant_nodes_in_subgraphs"],
                    "recurrent_matmuls_quantized": f"{rc['integer'] + rc['qdq'] + rc['weight_qdq']}/{rc['total']}",
                    "feedforward_matmuls_quantized": f"{ff['integer'] + ff['qdq'] + ff['weight_qdq']}/{ff['total']}",
                    "runtime_integer_ops": v["runtime_integer_ops"],
                }
            )
        else:
            row["error"] = f"{v['stage']}: {v['error']}"
        rows.append(row)
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", action="append", metavar="NAME=PATH", help="checkpoint (repeatable)")
    ap.add_argument("--calib", type=int, default=256, help="calibration sequences from the training split")
    ap.add_argument("--eval-limit", type=int, default=0, help="evaluate on the first N test sequences (0: all)")
    ap.add_argument("--no-write", action="store_true", help="print only, do not write the results file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import onnx
    import onnxruntime

    ckpts = dict(item.split("=", 1) for item in args.ckpt) if args.ckpt else dict(DEFAULT)
    results, missing, tables = {}, {}, {}
    for name, path in ckpts.items():
        if not Path(path).exists():
            missing[name] = path
            print(f"skip {name}: {path} not found (train it with edgeseq train)")
            continue
        print(f"== {name}")
        results[name] = bench_checkpoint(name, path, args)
        tables[name] = compact(results[name])
        s = results[name]["summary"]
        print(
            f"{name}: float {s['float_accuracy']:.4f}; best {s['best']}; recurrence quantized by "
            f"{s['recurrence_quantized_by'] or 'nothing'}; {s['variants_failed']} variants failed"
        )
    out = {
        "config": {k: v for k, v in vars(args).items() if k != "no_write"},
        "threads": 1,
        "load_average_1_5_15min": list(os.getloadavg()),
        "missing_checkpoints": missing,
        "versions": {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        "tables": tables,
        "results": results,
    }
    if not args.no_write:
        print(f"wrote {write_results('ort_baseline', out)}")
    return out


def run(quick: bool = False, write: bool = True) -> dict:
    """The benchmark as a function: default settings, or a short smoke run with ``quick``."""
    return main((QUICK if quick else []) + ([] if write else ["--no-write"]))


if __name__ == "__main__":
    main()
