"""Structured and unstructured pruning of trained zoo checkpoints: parameters and test accuracy
before and after pruning and short fine-tuning.

For each checkpoint (``--ckpt NAME=PATH``, default the shipped HAR LMU and the HAR GRU trained by scripts/train_models.py):

- ``acceptance``: structured pruning of ``--sparsity`` (0.5) of the hidden units of every layer
  (default config: reconstruction criterion, least-squares compensation, 512 training sequences
  for calibration), ``--epochs`` (3) of fine-tuning; target: >= 40% fewer parameters and <= 1 point
  test-accuracy loss. The pruned model is checkpointed and reloaded, captured to the IR and compared
  with the reference interpreter on test sequences (max |logit| difference).
- ``criteria``: test accuracy right after pruning (no fine-tuning) for every criterion (weight,
  activation, reconstruction, random) x compensation (none, mean, lstsq).
- ``memory``: for LMU models, hidden units and memory dimensions both at ``--sparsity``, fine-tuned.
- ``sweep``: structured sparsities ``--sweep`` with ``--sweep-epochs`` of fine-tuning each, and
  unstructured magnitude pruning at ``--unstructured``.

Fine-tuning uses the training recipe's augmentation, lr 1e-3, the same train/validation split as
``edgeseq train``; torch runs on one thread. Results: benchmarks/results/prune.json.

    python -m benchmarks.bench_prune [--ckpt har_gru=edgeseq/models/har_gru/model.ckpt ...] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
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
QUICK = ["--epochs", "1", "--skip-sweep", "--skip-memory"]


def _log(*a):
    print(*a, flush=True)


def bench_checkpoint(name: str, path: str, args) -> dict:
    import edgeseq
    from edgeseq.ir.interpret import run as reference
    from edgeseq.prune import StructuredConfig, count_parameters, evaluate_accuracy, prune, prune_and_finetune, sweep
    from edgeseq.prune.recipe import recipe_overrides, task_data
    from edgeseq.train import load_checkpoint, save_checkpoint

    model, doc = load_checkpoint(path)
    task = (doc.get("metrics") or {}).get("task", "har")
    arch = model.config["arch"]
    train, val, test = task_data(task)
    over = recipe_overrides(model, task)
    base_acc = evaluate_accuracy(model, test)
    out: dict = {
        "checkpoint": path,
        "task": task,
        "arch": arch,
        "model_config": {k: v for k, v in model.config.items() if not k.startswith("input_")},
        "parameters": count_parameters(model),
        "test_accuracy": base_acc,
        "n_test": len(test),
    }
    _log(f"== {name}: {arch}, {out['parameters']} parameters, test accuracy {base_acc:.4f}")

    # acceptance: 50% of hidden units, fine-tuned
    t0 = time.perf_counter()
    cfg = StructuredConfig(sparsity=args.sparsity)
    pm, _, rep = prune_and_finetune(
        model, cfg, train, val, test, finetune_epochs=args.epochs, train_overrides=over, log=_log
    )
    with tempfile.TemporaryDirectory() as d:
        save_checkpoint(pm, Path(d) / "p.ckpt")
        back, _ = load_checkpoint(Path(d) / "p.ckpt")
    reload_acc = evaluate_accuracy(back, test)
    xs = test.x[:16]
    g = edgeseq.capture(back, xs[:2])
    (y_ir,), _ = reference(g, xs.astype(np.float64))
    with torch.no_grad():
        y_t = back(torch.from_numpy(xs)).double().numpy()
    red = 1.0 - rep["parameters_after"] / rep["parameters_before"]
    drop = 100.0 * (base_acc - rep["accuracy_after"])
    out["acceptance"] = {
        "config": cfg.to_dict(),
        "finetune_epochs": args.epochs,
        "parameters_before": rep["parameters_before"],
        "parameters_after": rep["parameters_after"],
        "parameter_reduction": red,
        "accuracy_before": base_acc,
        "accuracy_pruned": rep["accuracy_pruned"],
        "accuracy_finetuned": rep["accuracy_after"],
        "accuracy_loss_points": drop,
        "config_changes": rep["config_changes"],
        "finetune": rep["finetune"],
        "reloaded_checkpoint_accuracy": reload_acc,
        "ir_parameters": g.num_params(),
        "ir_vs_torch_max_abs_diff": float(np.abs(y_ir - y_t).max()),
        "target": ">= 40% fewer parameters, <= 1 point accuracy loss after fine-tuning",
        "target_met": bool(red >= 0.4 and drop <= 1.0),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    _log(
        f"acceptance: {rep['parameters_before']} -> {rep['parameters_after']} parameters ({100 * red:.1f}% fewer), "
        f"accuracy {base_acc:.4f} -> {rep['accuracy_pruned']:.4f} pruned -> {rep['accuracy_after']:.4f} fine-tuned "
        f"({-drop:+.2f} points); IR max diff {out['acceptance']['ir_vs_torch_max_abs_diff']:.2e}"
    )

    # criteria, no fine-tuning
    idx = np.sort(np.random.default_rng(0).permutation(len(train))[:512])
    calib = train.x[idx]
    crit = []
    for c in ("weight", "activation", "reconstruction", "random"):
        for comp in ("none", "mean", "lstsq"):
            t1 = time.perf_counter()
            res = prune(model, StructuredConfig(sparsity=args.sparsity, criterion=c, compensate=comp), calib_x=calib)
            crit.append(
                {
                    "criterion": c,
                    "compensation": comp,
                    "accuracy_pruned": evaluate_accuracy(res.model, test),
                    "prune_seconds": round(time.perf_counter() - t1, 2),
                }
            )
    out["criteria_without_finetuning"] = {"sparsity": args.sparsity, "calibration_sequences": len(calib), "rows": crit}
    _log("criteria: " + ", ".join(f"{r['criterion']}/{r['compensation']} {r['accuracy_pruned']:.4f}" for r in crit))

    if arch == "lmu" and not args.skip_memory:
        cfg = StructuredConfig(sparsity=args.sparsity, memory_sparsity=args.sparsity)
        pm, _, rep = prune_and_finetune(
            model, cfg, train, val, test, finetune_epochs=args.epochs, train_overrides=over, log=_log
        )
        out["memory"] = {
            "config": cfg.to_dict(),
            "parameters_after": rep["parameters_after"],
            "parameter_reduction": 1.0 - rep["parameters_after"] / rep["parameters_before"],
            "accuracy_pruned": rep["accuracy_pruned"],
            "accuracy_finetuned": rep["accuracy_after"],
            "accuracy_loss_points": 100.0 * (base_acc - rep["accuracy_after"]),
            "config_changes": rep["config_changes"],
        }
        _log(f"hidden+memory: {rep['parameters_after']} parameters, accuracy {rep['accuracy_after']:.4f}")

    if not args.skip_sweep:
        sw = [float(s) for s in args.sweep.split(",")]
        res = sweep(
            model,
            sw,
            train,
            val,
            test,
            structured=True,
            memory_sparsity=0.0,
            finetune_epochs=args.sweep_epochs,
            train_overrides=over,
            log=_log,
        )
        out["sweep_structured"] = {"finetune_epochs": args.sweep_epochs, "rows": res["rows"]}
        un = [float(s) for s in args.unstructured.split(",")]
        res = sweep(
            model,
            un,
            train,
            val,
            test,
            structured=False,
            finetune_epochs=args.sweep_epochs,
            train_overrides=over,
            log=_log,
        )
        out["sweep_unstructured"] = {"finetune_epochs": args.sweep_epochs, "rows": res["rows"]}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", action="append", metavar="NAME=PATH", help="checkpoint (repeatable)")
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs of the acceptance run")
    ap.add_argument("--sweep", default="0.25,0.5,0.75")
    ap.add_argument("--unstructured", default="0.5,0.8")
    ap.add_argument("--sweep-epochs", type=int, default=2)
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="print only, do not write the results file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ckpts = dict(item.split("=", 1) for item in args.ckpt) if args.ckpt else dict(DEFAULT)
    results, missing = {}, {}
    for name, path in ckpts.items():
        if not Path(path).exists():
            missing[name] = path
            _log(f"skip {name}: {path} not found (train it with edgeseq train)")
            continue
        results[name] = bench_checkpoint(name, path, args)
    out = {
        "config": {k: v for k, v in vars(args).items() if k != "no_write"},
        "threads": 1,
        "load_average_1_5_15min": list(os.getloadavg()),
        "missing_checkpoints": missing,
        "target": "structured 50% hidden units: >= 40% fewer parameters, <= 1 point accuracy loss after fine-tuning",
        "target_met": {k: r["acceptance"]["target_met"] for k, r in results.items()},
        "results": results,
    }
    if not args.no_write:
        print(f"wrote {write_results('prune', out)}")
    return out


def run(quick: bool = False, write: bool = True) -> dict:
    """The benchmark as a function: default settings, or a short smoke run with ``quick``."""
    return main((QUICK if quick else []) + ([] if write else ["--no-write"]))


if __name__ == "__main__":
    main()
