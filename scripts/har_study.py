#!/usr/bin/env python
"""The HAR recipe study: what each architecture / training change buys on the validation split.

    .venv/bin/python scripts/har_study.py --list              # the variants
    .venv/bin/python scripts/har_study.py gru40 gru40_warp    # train these (every fold), resumable
    .venv/bin/python scripts/har_study.py --summary           # the table (benchmarks/results/har_study.json)

Validation only: the UCI-HAR test subjects are never loaded here. Each variant is trained once per
fold; fold ``k`` holds out the training subjects that ``split_validation(..., 0.15, seed=k)`` picks
(folds 0, 1 and 3 are disjoint: subjects {17, 26, 28}, {3, 19, 30}, {15, 16, 27}) and also seeds the
initialisation and data order. The validation windows are always the standard grid (128 samples, hop
64, label-pure), whatever windowing the variant trains on. Reported per fold: the best validation
accuracy (the epoch a training run keeps) and the mean of the last five epochs (less selection bias).

Every variant is fully explicit (model and training settings, not "the recipe of the day"), so the
table stays reproducible while the recipes move on. Runs go to ``runs/har_study/<variant>-f<fold>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "har_study"
RESULTS = ROOT / "benchmarks" / "results" / "har_study.json"

# the IMU recipe before the study: gain, sensor noise and a 15 degree rotation of the sensor frame
AUG0 = {"augment_scale": 0.1, "augment_noise": 0.05, "augment_rotate": 15.0}
LMU0 = {"hidden": 64, "memory_d": 12, "order": 16, "theta": 128.0, "hidden_cell": "dense", "input_to_hidden": True,
        "readout": "mean"}

G40 = {"hidden": 40, "readout": "last"}
T40 = {"lr": 4e-3, **AUG0}

# name -> (task, arch, model settings, training settings, data settings of the training windows, what changed)
VARIANTS: dict[str, tuple[str, str, dict, dict, dict, str]] = {
    # --- architectures with the previous recipe ---------------------------------------------------
    "lmu": ("har", "lmu", LMU0, AUG0, {}, "har_lmu as shipped before (6.4 M Cortex-M4 instructions)"),
    "gru64": ("har", "gru", {"hidden": 64, "readout": "last"}, {"lr": 4e-3, **AUG0}, {},
              "GRU baseline (6.1 M instructions)"),
    "gru40": ("har", "gru", {"hidden": 40, "readout": "last"}, {"lr": 4e-3, **AUG0}, {}, "GRU sized to 3.2 M"),
    "stem24_gru32": ("har", "gru", {"hidden": 32, "readout": "last", "stem": 24, "stem_kernel": 5},
                     {"lr": 4e-3, **AUG0}, {}, "causal conv front end (24 x 5 taps) + GRU 32"),
    "mingru48x2": ("har", "mingru", {"hidden": 48, "layers": 2, "readout": "mean"}, AUG0, {}, "2 x minGRU 48"),
    # --- training changes, one at a time, on the GRU 40 ------------------------------------------
    "gru40_rot5": ("har", "gru", G40, {**T40, "augment_rotate": 5.0}, {}, "rotation of the sensor frame 15 -> 5 deg"),
    "gru40_rot0": ("har", "gru", G40, {**T40, "augment_rotate": 0.0}, {}, "no rotation"),
    "gru40_warp": ("har", "gru", G40, {**T40, "augment_time_warp": 0.2}, {}, "+ time warp (sigma 0.2)"),
    "gru40_ema": ("har", "gru", G40, {**T40, "ema": 0.998}, {}, "+ weight averaging (EMA 0.998)"),
    "gru40_ov75": ("har", "gru", G40, {**T40, "epochs": 20}, {"overlap": 0.75},
                   "training windows every 32 samples (twice the windows, half the epochs)"),
    "gru40_ls0": ("har", "gru", G40, {**T40, "label_smoothing": 0.0}, {}, "label smoothing 0.05 -> 0"),
    "gru40_ls15": ("har", "gru", G40, {**T40, "label_smoothing": 0.15}, {}, "label smoothing 0.05 -> 0.15"),
    "gru40_e80": ("har", "gru", G40, {**T40, "epochs": 80}, {}, "80 epochs instead of 40"),
    "gru40_mean": ("har", "gru", {**G40, "readout": "mean"}, T40, {}, "mean readout instead of the last step"),
}


def _variant_runs(names, folds):
    return [(n, f) for n in names for f in folds]


def _load(task: str, data_kw: dict):
    from edgeseq.train.recipes import TASKS, load_task_data

    from edgeseq.data import load_dataset

    t = TASKS[task]
    std = load_dataset(t["dataset"], "train", **t["kw"])
    train = load_dataset(t["dataset"], "train", **{**t["kw"], **data_kw}) if data_kw else std
    return std, train


def run_one(name: str, fold: int, log=print) -> dict:
    import numpy as np
    import torch

    from edgeseq.nn import build_model
    from edgeseq.train.loop import TrainConfig, channel_stats, fit, split_validation

    task, arch, model_cfg, train_cfg, data_kw, note = VARIANTS[name]
    torch.set_num_threads(1)
    cfg = TrainConfig.from_dict({**train_cfg, "seed": fold})
    std, train_all = _load(task, data_kw)
    _, val = split_validation(std, cfg.val_fraction, fold)
    held = set(np.unique(val.groups).tolist())
    train = train_all.subset(~np.isin(train_all.groups, list(held)))
    torch.manual_seed(cfg.seed)
    mean, sd = channel_stats(train)
    model = build_model(arch, train.in_features, train.n_classes, input_mean=mean, input_std=sd, **model_cfg)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"{name} fold {fold}: {n_params} parameters, {len(train)} train / {len(val)} validation windows "
        f"(validation subjects {sorted(held)})")
    t0 = time.perf_counter()
    hist = fit(model, train, val, cfg, progress=False, log=lambda *a: None)
    vals = [r["val_accuracy"] for r in hist.epochs]
    row = {"variant": name, "fold": fold, "task": task, "arch": arch, "parameters": int(n_params),
           "validation_subjects": sorted(held), "validation_windows": len(val), "train_windows": len(train),
           "best_validation_accuracy": hist.best_val_accuracy, "best_epoch": hist.best_epoch,
           "last5_validation_accuracy": float(np.mean(vals[-5:])), "epochs_run": len(hist.epochs),
           "train_seconds": round(time.perf_counter() - t0, 1), "model_config": model_cfg, "train_config": train_cfg,
           "data_config": data_kw, "note": note, "history": vals}
    log(f"{name} fold {fold}: best {hist.best_val_accuracy:.4f} (epoch {hist.best_epoch}), last-5 "
        f"{row['last5_validation_accuracy']:.4f}, {row['train_seconds'] / 60:.1f} min")
    return row


def summary() -> dict:
    import numpy as np

    rows = {}
    for name in VARIANTS:
        runs = [json.loads(p.read_text()) for p in sorted(RUNS.glob(f"{name}-f*.json"))]
        if not runs:
            continue
        task, arch, model_cfg, train_cfg, data_kw, note = VARIANTS[name]
        rows[name] = {"task": task, "arch": arch, "note": note, "parameters": runs[0]["parameters"],
                      "folds": {str(r["fold"]): {k: r[k] for k in ("best_validation_accuracy", "best_epoch",
                                                                    "last5_validation_accuracy", "train_seconds")}
                                for r in runs},
                      "mean_best_validation_accuracy": float(np.mean([r["best_validation_accuracy"] for r in runs])),
                      "mean_last5_validation_accuracy": float(np.mean([r["last5_validation_accuracy"] for r in runs])),
                      "model_config": model_cfg, "train_config": train_cfg, "data_config": data_kw}
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("variants", nargs="*")
    ap.add_argument("--folds", default="0,1", help="comma-separated validation folds (default: 0,1)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--summary", action="store_true", help="write benchmarks/results/har_study.json and print it")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.list:
        for n, v in VARIANTS.items():
            print(f"{n:22s} {v[5]}")
        return 0
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}")
    RUNS.mkdir(parents=True, exist_ok=True)
    from edgeseq.util.fs import atomic_write_json

    for name, fold in _variant_runs(args.variants, [int(f) for f in args.folds.split(",")]):
        out = RUNS / f"{name}-f{fold}.json"
        if out.is_file():
            continue
        atomic_write_json(out, run_one(name, fold, log=lambda m: print(m, flush=True)))
    if args.summary:
        rows = summary()
        atomic_write_json(RESULTS, {"benchmark": "har_study", "protocol": __doc__.split("\n\n")[2].strip(),
                                    "variants": rows})
        for n, r in rows.items():
            folds = "  ".join(f"f{k} {100 * v['best_validation_accuracy']:.2f}/{100 * v['last5_validation_accuracy']:.2f}"
                              for k, v in r["folds"].items())
            print(f"{n:22s} {r['parameters']:>6}  best {100 * r['mean_best_validation_accuracy']:.2f}  "
                  f"last5 {100 * r['mean_last5_validation_accuracy']:.2f}   {folds}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
