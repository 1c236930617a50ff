#!/usr/bin/env python
"""Train the shipped default models and the reported baselines, and write the training results file.

    .venv/bin/python scripts/train_models.py                 # everything (about an hour on 2 cores)
    .venv/bin/python scripts/train_models.py har_lmu kws_lmu # only these runs
    .venv/bin/python scripts/train_models.py --list          # the runs and their exact commands

Each run is one ``edgeseq train`` command (printed, and recorded in the run's metrics.json), so any
single model can be reproduced without this script. Shipped models go to ``edgeseq/models/<name>/``
(model.ckpt, metrics.json, curves.png); the other runs (baselines the issues ask to report, e.g. the
HAR GRU and the smartwatch models) go to ``runs/models/<name>/``. The summary of every run that exists
is written to ``benchmarks/results/training.json`` and ``docs/MODELS.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_DIR = ROOT / "edgeseq" / "models"
RUNS_DIR = ROOT / "runs" / "models"
RESULTS = ROOT / "benchmarks" / "results" / "training.json"
DOC = ROOT / "docs" / "MODELS.md"

# name -> (task, arch, shipped, targets[, extra `edgeseq train` arguments])
RUNS: dict[str, tuple] = {
    # HAR: the demo's default (conv front end + GRU, sized for a Cortex-M4) and the LMU / L2MU alternatives;
    # har_lmu's goal: 1.5 points above the 92.83% of its previous recipe
    "har_gru": ("har", "gru", True, {"test": 0.955, "max_parameters": 50_000}),
    "har_lmu": ("har", "lmu", True, {"test": 0.9433, "max_parameters": 50_000}),
    "har_l2mu": ("har", "l2mu", True, {"test": 0.88}),
    "kws_lmu": ("kws", "lmu", True, {"test": 0.95, "max_parameters": 80_000, "test_flite": 0.70}),
    "kws_lmuformer": ("kws", "lmuformer", True, {}),
    # the GRU baseline the HAR default is measured against: GRU 64 on the raw channels, the same training
    "har_gru64": ("har", "gru", False, {}, ["--set", "hidden=64", "--set", "stem=0"]),
    "smartwatch_gru": ("smartwatch", "gru", False, {}),
    "smartwatch_lmu": ("smartwatch", "lmu", False, {}),
    "smartwatch_l2mu": ("smartwatch", "l2mu", False, {}),
}


def out_dir(name: str) -> Path:
    return (SHIPPED_DIR if RUNS[name][2] else RUNS_DIR) / name


def command(name: str) -> list[str]:
    task, arch, *_ = RUNS[name]
    extra = RUNS[name][4] if len(RUNS[name]) > 4 else []
    rel = out_dir(name).relative_to(ROOT).as_posix()
    return ["edgeseq", "train", "--task", task, "--model", arch, *extra, "--out", rel, "--force", "--quiet"]


def summarize() -> dict:
    rows = {}
    for name, (task, arch, shipped, targets, *_) in RUNS.items():
        mf = out_dir(name) / "metrics.json"
        if not mf.is_file():
            continue
        m = json.loads(mf.read_text())
        row = {"task": task, "arch": arch, "shipped": shipped, "parameters": m["parameters"],
               "test_accuracy": m["test"]["accuracy"], "validation_accuracy": m["validation_accuracy"],
               "train_seconds": m["train_seconds"], "train_cpu_seconds": m.get("train_cpu_seconds"),
               "epochs_run": m["epochs_run"], "best_epoch": m["best_epoch"],
               "stopped": m["stopped"], "command": m["command"], "model_config": m["model_config"],
               "train_config": m["train_config"], "per_class_accuracy": m["test"]["per_class_accuracy"]}
        for k, v in m.items():
            if k.startswith("test_") and isinstance(v, dict) and "accuracy" in v:
                row[f"{k}_accuracy"] = v["accuracy"]
        met = {}
        if "test" in targets:
            met["test_accuracy"] = row["test_accuracy"] >= targets["test"]
        if "max_parameters" in targets:
            met["parameters"] = row["parameters"] <= targets["max_parameters"]
        if "test_flite" in targets and "test_flite_accuracy" in row:
            met["test_flite_accuracy (goal)"] = row["test_flite_accuracy"] >= targets["test_flite"]
        # the run's own CPU time where recorded (single-threaded: an idle machine's wall time)
        met["train_within_15_min"] = (row["train_cpu_seconds"] or row["train_seconds"]) <= 15 * 60
        row["targets"], row["targets_met"] = targets, met
        rows[name] = row
    return rows


def _train_time(r: dict) -> str:
    if r.get("train_cpu_seconds") is None:
        return f"{r['train_seconds'] / 60:.1f} min"
    return f"{r['train_cpu_seconds'] / 60:.1f} min CPU ({r['train_seconds'] / 60:.0f} min wall)"


def write_results(rows: dict) -> None:
    sys.path.insert(0, str(ROOT))
    from edgeseq.util.fs import atomic_write_json, atomic_write_text

    import torch

    doc = {"benchmark": "training", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
           "machine": {"cpu": platform.processor() or platform.machine(), "cores": torch.get_num_threads(),
                       "python": platform.python_version(), "torch": torch.__version__},
           "protocol": "edgeseq train with the recipe defaults (fixed seeds); validation = held-out training "
                       "subjects / stratified 15%; test = UCI-HAR test subjects (har), held-out subjects "
                       "(smartwatch), held-out espeak-ng voice variants and accents (kws 'test') and the flite "
                       "engine never used in training (kws 'test_flite')",
           "results": rows}
    atomic_write_json(RESULTS, doc)
    lines = ["# Trained models", "",
             "Generated by `scripts/train_models.py` from the runs' metrics.json. Shipped models live in "
             "`edgeseq/models/<name>/` and load by name (`edgeseq info --models`). Accuracies are on held-out "
             "data (see the protocol in `benchmarks/results/training.json`); synthetic keyword accuracy is not "
             "comparable to published Speech Commands numbers.", "",
             "| model | shipped | task | arch | parameters | test accuracy | other held-out | train time | command |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        other = ", ".join(f"{k[5:-9]} {100 * v:.2f}%" for k, v in r.items()
                          if k.startswith("test_") and k.endswith("_accuracy") and k != "test_accuracy")
        lines.append(f"| {name} | {'yes' if r['shipped'] else 'no'} | {r['task']} | {r['arch']} | {r['parameters']:,} | "
                     f"{100 * r['test_accuracy']:.2f}% | {other or '-'} | {_train_time(r)} "
                     f"({r['epochs_run']} epochs) | `{r['command']}` |")
    lines += ["", "Targets and whether they are met:", ""]
    for name, r in rows.items():
        lines.append(f"- {name}: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in r["targets_met"].items()))
    from har_study import markdown as har_study_markdown

    lines += har_study_markdown()
    atomic_write_text(DOC, "\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="*", help=f"runs to train (default: all): {', '.join(RUNS)}")
    ap.add_argument("--list", action="store_true", help="print the runs and their commands")
    ap.add_argument("--summary-only", action="store_true", help="only rewrite the results file and docs/MODELS.md")
    args = ap.parse_args(argv)
    unknown = [r for r in args.runs if r not in RUNS]
    if unknown:
        ap.error(f"unknown run(s) {unknown}; known: {', '.join(RUNS)}")
    if args.list:
        for name in RUNS:
            print(f"{name:18s} {shlex.join(command(name))}")
        return 0
    if not args.summary_only:
        exe = Path(sys.executable).parent / "edgeseq"
        for name in args.runs or list(RUNS):
            argv_ = [str(exe), *command(name)[1:]]
            print("$", shlex.join(command(name)), flush=True)
            subprocess.run(argv_, check=True, cwd=ROOT)
    write_results(summarize())
    print(f"wrote {RESULTS.relative_to(ROOT)} and {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
