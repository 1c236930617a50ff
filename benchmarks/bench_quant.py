"""Quantization accuracy: float vs naive int8 vs the edgeseq outlier-aware plan, on trained models.

For each model (a shipped model name, a training directory or a .ckpt, with its task):

- calibration: ``--calib`` random sequences of the task's training split (seed 0);
- ``naive``: per-tensor int8 everywhere (weights, activations, int8 state, int8 LMU matrices,
  256-entry tables, min/max ranges, per-tensor symmetric input);
- ``edgeseq``: the default preset (per-channel weights, 16-bit state and LMU matrices, 16-bit gate
  tables, per-channel input quantizer with offsets, SmoothQuant-style migration of outlier
  channels), plus the greedy mixed-precision search on ``--val`` further training sequences with a
  0.5-point budget;
- every accuracy is measured on the task's test split (and on the held-out speech engine for KWS)
  with the **integer program** run by the integer-exact interpreter; the fake-quant simulation is
  run too and its decisions are compared with the integer program's (decision agreement).

Results: benchmarks/results/quant.json.

    python -m benchmarks.bench_quant [--model har:har_lmu --model kws:kws_lmu ...] [--calib 512] [--val 1024]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from benchmarks.common import write_results

DEFAULT_MODELS = ["har:har_lmu", "kws:kws_lmu", "har:har_l2mu", "kws:kws_lmuformer"]
BUDGET = 0.5


def _resolve(spec: str) -> str:
    """A shipped model name, or a training output of the same name under $EDGESEQ_TRAINED."""
    from edgeseq.models import shipped

    if spec in shipped() or os.path.exists(spec):
        return spec
    root = os.environ.get("EDGESEQ_TRAINED")
    if root and os.path.exists(os.path.join(root, spec, "model.ckpt")):
        return os.path.join(root, spec, "model.ckpt")
    return spec


def _short(spec: str) -> str:
    if spec.endswith(".ckpt"):
        return os.path.basename(os.path.dirname(os.path.abspath(spec)))
    return os.path.basename(spec.rstrip("/")) or spec


def _eval(qg, x, y, modes=("float", "int", "fake")) -> dict:
    preds = {m: qg.predict(x, m) for m in modes}
    out = {f"{m}_accuracy": float(np.mean(p == y)) for m, p in preds.items()}
    if "int" in preds and "fake" in preds:
        out["int_fake_agreement"] = float(np.mean(preds["int"] == preds["fake"]))
    if "int" in preds and "float" in preds:
        out["int_float_agreement"] = float(np.mean(preds["int"] == preds["float"]))
    out["n"] = int(len(y))
    return out


def bench_model(task: str, spec: str, args) -> dict:
    from edgeseq.data import load_dataset
    from edgeseq.models import load_model
    from edgeseq.quant import quantize
    from edgeseq.train.recipes import TASKS

    lm = load_model(_resolve(spec))
    g = lm.graph
    t = TASKS[task]
    train = load_dataset(t["dataset"], "train", **t["kw"])
    test = load_dataset(t["dataset"], "test", **t["kw"])
    extra = {s: load_dataset(t["dataset"], s, **t["kw"]) for s in t["extra_splits"]}
    rng = np.random.default_rng(0)
    order = rng.permutation(len(train.x))
    calib = train.x[order[: args.calib]]
    vi = order[args.calib : args.calib + args.val]
    val = (train.x[vi], train.y[vi])
    if args.max_test:
        test = test.subset(np.arange(min(args.max_test, len(test))))
        extra = {k: v.subset(np.arange(min(args.max_test, len(v)))) for k, v in extra.items()}
    row: dict = {
        "task": task,
        "model": _short(spec),
        "source": spec,
        "arch": (lm.metrics or {}).get("arch") or g.metadata.get("arch"),
        "parameters": int(g.num_params()),
        "calibration_sequences": int(len(calib)),
        "validation_sequences": int(len(vi)),
        "test_sequences": int(len(test.y)),
        "trained_test_accuracy": (lm.metrics.get("test") or {}).get("accuracy"),
    }
    plans = {}
    for name, kw in (("naive", {}), ("edgeseq", {"val": val, "budget": BUDGET})):
        t0 = time.perf_counter()
        qg = quantize(g, calib, name, **kw)
        t_q = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = _eval(qg, test.x, test.y)
        res["eval_seconds"] = round(time.perf_counter() - t0, 1)
        res["quantize_seconds"] = round(t_q, 1)
        for k, ds in extra.items():
            res[k] = _eval(qg, ds.x, ds.y)
        sz = qg.sizes()
        res.update(
            const_bytes=sz["const_bytes"],
            weight_bytes=sz["weights_bytes"],
            float32_param_bytes=sz["float_param_bytes"],
            state_bytes=sz["state_bytes"],
            micro_ops_per_step=sz["micro_ops_per_step"],
            macs_per_step=sz["macs_per_step"],
            micro_op_counts=qg.program.op_counts(),
        )
        res["drop_points"] = round(100 * (res["float_accuracy"] - res["int_accuracy"]), 3)
        if qg.plan.outliers:
            res["outliers"] = qg.plan.outliers
        s = qg.info.get("search")
        if s:
            res["search"] = {
                k: s[k]
                for k in (
                    "float_accuracy",
                    "start_accuracy",
                    "final_accuracy",
                    "promoted",
                    "met",
                    "validation_sequences",
                )
            }
        plans[name] = res
        print(
            f"  {task}:{_short(spec)} {name:8s} float {100 * res['float_accuracy']:.2f}%  int {100 * res['int_accuracy']:.2f}%"
            f"  (drop {res['drop_points']:+.2f})  fake {100 * res['fake_accuracy']:.2f}%  int/fake agreement "
            f"{100 * res['int_fake_agreement']:.2f}%"
            + "".join(
                f"  [{k}: float {100 * res[k]['float_accuracy']:.2f}% int {100 * res[k]['int_accuracy']:.2f}%]"
                for k in extra
            ),
            flush=True,
        )
    row["float_accuracy"] = plans["edgeseq"]["float_accuracy"]
    row["plans"] = plans
    row["edgeseq_within_budget"] = plans["edgeseq"]["drop_points"] <= BUDGET
    row["agreement_target_met"] = plans["edgeseq"]["int_fake_agreement"] >= 0.999
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--model",
        action="append",
        metavar="TASK:MODEL",
        help=f"task and model spec (repeatable; default {' '.join(DEFAULT_MODELS)})",
    )
    ap.add_argument("--calib", type=int, default=512)
    ap.add_argument("--val", type=int, default=1024)
    ap.add_argument("--max-test", type=int, default=0, help="evaluate on at most this many test sequences")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    from edgeseq.errors import ConfigError, EdgeseqError

    results, skipped = {}, {}
    for item in args.model or DEFAULT_MODELS:
        task, _, spec = item.partition(":")
        label = f"{task}:{_short(spec)}"
        print(label, flush=True)
        try:
            results[label] = bench_model(task, spec, args)
        except EdgeseqError as e:
            skipped[item] = str(e)
            print(f"  skipped: {e}")
    if not results:
        raise ConfigError(
            "no trained model could be loaded (" + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + ")",
            hint="install the shipped models, set EDGESEQ_TRAINED to a folder of training "
            "outputs, or pass --model TASK:PATH",
        )
    out = {
        "config": {k: v for k, v in vars(args).items() if k != "no_write"},
        "budget_points": BUDGET,
        "protocol": "calibration and search on the training split, accuracies of the integer program "
        "(integer-exact interpreter) on the test split",
        "targets": {"edgeseq_drop_points_max": BUDGET, "int_fake_agreement_min": 0.999},
        "load_average_1_5_15min": list(os.getloadavg()),
        "results": results,
        "skipped": skipped,
    }
    if not args.no_write:
        print(f"wrote {write_results('quant', out)}")
    return out


QUICK = ["--calib", "64", "--val", "128", "--max-test", "256"]


def run(quick: bool = False, write: bool = True) -> dict:
    """The benchmark as a function: default settings, or a short smoke run with ``quick``."""
    return main((QUICK if quick else []) + ([] if write else ["--no-write"]))


if __name__ == "__main__":
    main()
