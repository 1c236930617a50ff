#!/usr/bin/env python
"""The HAR recipe study: what each architecture / training change buys on the validation split.

    .venv/bin/python scripts/har_study.py --list              # the variants
    .venv/bin/python scripts/har_study.py gru40 gru40_warp    # train these (every fold), resumable
    .venv/bin/python scripts/har_study.py s24_warp --stop-after 14   # a short screening run
    .venv/bin/python scripts/har_study.py --adopt edgeseq/models/har_gru stem24_gru30   # a recipe run = fold <seed>
    .venv/bin/python scripts/har_study.py --summary           # the table (benchmarks/results/har_study.json)

Validation only: the UCI-HAR test subjects are never loaded here. Each variant is trained once per
fold; fold ``k`` holds out the training subjects that ``split_validation(..., 0.15, seed=k)`` picks
(folds 0, 1 and 3 are disjoint: subjects {17, 26, 28}, {3, 19, 30}, {15, 16, 27}) and also seeds the
initialisation and data order. The validation windows are always the standard grid (128 samples, hop
64, label-pure), whatever windowing the variant trains on. Reported per fold: the best validation
accuracy (the epoch a training run keeps) and the mean of the last five epochs (less selection bias).
Every run follows its whole schedule (no wall-clock cut; early stopping as in the recipes); a
screening run (``--stop-after K``) ends after K epochs of that schedule and is compared with its base
over the same K epochs.

Every variant is fully explicit (model and training settings, not "the recipe of the day"), so the
table stays reproducible while the recipes move on. Runs go to ``runs/har_study/<variant>-f<fold>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "har_study"
# short screening runs (their schedule cut after N epochs): compared with their base over the same epochs
SHORT = ROOT / "runs" / "har_study_short"
RESULTS = ROOT / "benchmarks" / "results" / "har_study.json"

# the IMU recipe before the study: gain, sensor noise and a 15 degree rotation of the sensor frame
AUG0 = {"augment_scale": 0.1, "augment_noise": 0.05, "augment_rotate": 15.0}
LMU0 = {
    "hidden": 64,
    "memory_d": 12,
    "order": 16,
    "theta": 128.0,
    "hidden_cell": "dense",
    "input_to_hidden": True,
    "readout": "mean",
}

S24 = {"hidden": 32, "readout": "last", "stem": 24, "stem_kernel": 5}
T40 = {"lr": 4e-3, **AUG0}


@dataclass(frozen=True)
class Variant:
    """One row of the study: full model / training / training-window settings, what changed, and the
    variant it is compared with (``base``)."""

    arch: str
    model: dict
    train: dict
    note: str
    base: Optional[str] = None
    data: dict = field(default_factory=dict)
    task: str = "har"


VARIANTS: dict[str, Variant] = {
    # --- architectures with the previous recipe ---------------------------------------------------
    "lmu": Variant("lmu", LMU0, AUG0, "har_lmu's previous recipe"),
    "gru64": Variant("gru", {"hidden": 64, "readout": "last"}, T40, "GRU 64 (the previous GRU baseline)", "lmu"),
    "gru40": Variant("gru", {"hidden": 40, "readout": "last"}, T40, "GRU 40", "gru64"),
    "mingru48x2": Variant("mingru", {"hidden": 48, "layers": 2, "readout": "mean"}, AUG0, "2 x minGRU 48", "gru64"),
    "stem24_gru32": Variant("gru", S24, T40, "causal conv front end (24 channels x 5 taps, ReLU) + GRU 32", "gru40"),
    "stem24_gru30": Variant(
        "gru",
        {**S24, "hidden": 30},
        T40,
        "GRU 30 (sized for the 3.3 M budget of earlier integer kernels: the trained GRU 32 build took 3.43 M)",
        "stem24_gru32",
    ),
    "stem24_gru28": Variant("gru", {**S24, "hidden": 28}, T40, "GRU 28", "stem24_gru32"),
    "stem24_gru40": Variant("gru", {**S24, "hidden": 40}, T40, "GRU 40", "stem24_gru32"),
    "stem24_gru48": Variant("gru", {**S24, "hidden": 48}, T40, "GRU 48", "stem24_gru32"),
    "stem16_gru32": Variant("gru", {**S24, "stem": 16}, T40, "front end with 16 channels", "stem24_gru32"),
    "stem24k9_gru32": Variant("gru", {**S24, "stem_kernel": 9}, T40, "front end with 9 taps", "stem24_gru32"),
    # --- training changes, one at a time, on the conv front end + GRU 32 ----------------------------
    "s24_rot5": Variant(
        "gru", S24, {**T40, "augment_rotate": 5.0}, "rotation of the sensor frame 15 -> 5 deg", "stem24_gru32"
    ),
    "s24_rot30": Variant(
        "gru", S24, {**T40, "augment_rotate": 30.0}, "rotation of the sensor frame 15 -> 30 deg", "stem24_gru32"
    ),
    "s24_warp": Variant("gru", S24, {**T40, "augment_time_warp": 0.2}, "+ time warp (sigma 0.2)", "stem24_gru32"),
    "s24_ema": Variant("gru", S24, {**T40, "ema": 0.998}, "+ weight averaging (EMA 0.998)", "stem24_gru32"),
    "s24_ov75": Variant(
        "gru",
        S24,
        {**T40, "epochs": 20},
        "training windows every 32 samples (twice the windows, half the epochs)",
        "stem24_gru32",
        {"overlap": 0.75},
    ),
    "s24_ls0": Variant("gru", S24, {**T40, "label_smoothing": 0.0}, "label smoothing 0.05 -> 0", "stem24_gru32"),
    "s24_e60": Variant("gru", S24, {**T40, "epochs": 60}, "60 epochs instead of 40", "stem24_gru32"),
    # --- the LMU: front end, readout and training changes ----------------------------------------
    "lmu_stem": Variant("lmu", {**LMU0, "stem": 24, "stem_kernel": 5}, AUG0, "+ causal conv front end (24 x 5)", "lmu"),
    "lmu_last": Variant("lmu", {**LMU0, "readout": "last"}, AUG0, "last-step readout instead of the mean", "lmu"),
    "lmu_rot5": Variant("lmu", LMU0, {**AUG0, "augment_rotate": 5.0}, "rotation 15 -> 5 deg", "lmu"),
    "lmu_rot30": Variant("lmu", LMU0, {**AUG0, "augment_rotate": 30.0}, "rotation 15 -> 30 deg", "lmu"),
    "lmu_warp": Variant("lmu", LMU0, {**AUG0, "augment_time_warp": 0.2}, "+ time warp (sigma 0.2)", "lmu"),
    "lmu_ema": Variant("lmu", LMU0, {**AUG0, "ema": 0.998}, "+ weight averaging (EMA 0.998)", "lmu"),
    "lmu_ov75": Variant(
        "lmu",
        LMU0,
        {**AUG0, "epochs": 20},
        "training windows every 32 samples (twice the windows, half the epochs)",
        "lmu",
        {"overlap": 0.75},
    ),
}


def _variant_runs(names, folds):
    return [(n, f) for n in names for f in folds]


def _load(task: str, data_kw: dict):
    from edgeseq.data import load_dataset
    from edgeseq.train.recipes import TASKS

    t = TASKS[task]
    std = load_dataset(t["dataset"], "train", **t["kw"])
    train = load_dataset(t["dataset"], "train", **{**t["kw"], **data_kw}) if data_kw else std
    return std, train


def run_one(name: str, fold: int, log=print, stop_after: int = 0) -> dict:
    import numpy as np
    import torch

    from edgeseq.nn import build_model
    from edgeseq.train.loop import TrainConfig, channel_stats, fit, split_validation

    v = VARIANTS[name]
    torch.set_num_threads(1)
    # no wall-clock cut: on a loaded machine it would end the schedule early and make the row depend on the load
    cfg = TrainConfig.from_dict({**v.train, "seed": fold, "max_minutes": 600.0, "stop_after": stop_after})
    std, train_all = _load(v.task, v.data)
    _, val = split_validation(std, cfg.val_fraction, fold)
    held = set(np.unique(val.groups).tolist())
    train = train_all.subset(~np.isin(train_all.groups, list(held)))
    torch.manual_seed(cfg.seed)
    mean, sd = channel_stats(train)
    model = build_model(v.arch, train.in_features, train.n_classes, input_mean=mean, input_std=sd, **v.model)
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"{name} fold {fold}: {n_params} parameters, {len(train)} train / {len(val)} validation windows "
        f"(validation subjects {sorted(held)})"
    )
    t0 = time.perf_counter()
    hist = fit(model, train, val, cfg, progress=False, log=lambda *a: None)
    vals = [r["val_accuracy"] for r in hist.epochs]
    row = {
        "variant": name,
        "fold": fold,
        "task": v.task,
        "arch": v.arch,
        "parameters": int(n_params),
        "validation_subjects": sorted(held),
        "validation_windows": len(val),
        "train_windows": len(train),
        "best_validation_accuracy": hist.best_val_accuracy,
        "best_epoch": hist.best_epoch,
        "last5_validation_accuracy": float(np.mean(vals[-5:])),
        "epochs_run": len(hist.epochs),
        "train_seconds": round(time.perf_counter() - t0, 1),
        "model_config": v.model,
        "train_config": v.train,
        "data_config": v.data,
        "note": v.note,
        "history": vals,
    }
    log(
        f"{name} fold {fold}: best {hist.best_val_accuracy:.4f} (epoch {hist.best_epoch}), last-5 "
        f"{row['last5_validation_accuracy']:.4f}, {row['train_seconds'] / 60:.1f} min"
    )
    return row


# what a recipe run records in model_config beyond the architecture settings
_RECORDED = {"arch", "in_features", "n_classes", "input_mean", "input_std"}


def _arch_settings(cfg: dict) -> dict:
    """The architecture settings of a model config (``stem=0``: no front end, whatever its kernel)."""
    out = {k: x for k, x in cfg.items() if k not in _RECORDED}
    if not out.get("stem", 0):
        out.pop("stem", None)
        out.pop("stem_kernel", None)
    return out


def adopt(run_dir: Path, name: str) -> tuple[int, dict]:
    """A finished ``edgeseq train`` run whose settings are exactly the variant's is that variant's fold
    ``seed`` (the same validation subjects, initialisation and data order: ``train_task`` splits and
    seeds as ``run_one`` does); returns (fold, row) from its validation history. Its test result is not
    read."""
    import numpy as np

    from edgeseq.errors import ConfigError

    v = VARIANTS[name]
    m = json.loads((Path(run_dir) / "metrics.json").read_text())
    arch_cfg = _arch_settings(m["model_config"])
    train_cfg = {k: x for k, x in m["train_config"].items() if k not in ("max_minutes", "seed")}
    if v.data or (m["task"], m["arch"], arch_cfg, train_cfg) != (v.task, v.arch, _arch_settings(v.model), v.train):
        raise ConfigError(
            f"{run_dir}: trained {m['task']}/{m['arch']} {arch_cfg} {train_cfg}, not variant '{name}' "
            f"({v.task}/{v.arch} {v.model} {v.train} {v.data})"
        )
    fold = int(m["train_config"].get("seed", 0))
    vals = [r["val_accuracy"] for r in m["history"]]
    row = {
        "variant": name,
        "fold": fold,
        "task": v.task,
        "arch": v.arch,
        "parameters": m["parameters"],
        "best_validation_accuracy": m["validation_accuracy"],
        "best_epoch": m["best_epoch"],
        "last5_validation_accuracy": float(np.mean(vals[-5:])),
        "epochs_run": len(vals),
        "train_seconds": m["train_seconds"],
        "model_config": v.model,
        "train_config": v.train,
        "data_config": v.data,
        "note": v.note,
        "history": vals,
        "adopted_from": str(run_dir),
    }
    return fold, row


def measure_cost(v: Variant) -> dict:
    """Cortex-M4 cost of the variant's architecture, as ``benchmarks.bench_c_int`` measures it: untrained
    weights (the cost does not depend on training), the ``edgeseq`` int8 preset calibrated on IMU-like
    noise, the firmware under qemu-system-arm on one 128-sample sequence."""
    import tempfile

    import numpy as np
    import torch

    import edgeseq
    from benchmarks.bench_targets import har_like_input
    from edgeseq.export.c.intexport import export_c_int
    from edgeseq.nn import build_model
    from edgeseq.quant import quantize

    x = har_like_input(128)
    rng = np.random.default_rng(0)
    calib = (rng.normal(size=(64, 128, 6)) * [0.6, 0.4, 0.3, 1, 1, 0.3] + [0, 0, 1, 0, 0, 0]).astype(np.float32)
    torch.manual_seed(0)
    graph = edgeseq.capture(build_model(v.arch, 6, 6, **v.model).eval(), torch.as_tensor(x[:, :16]))
    q = quantize(graph, calib, "edgeseq")
    with tempfile.TemporaryDirectory(prefix="har-study-") as tmp:
        art = export_c_int(q, Path(tmp) / "m4", target="cortex-m4", golden_input=x[:, :32])
        cost = art.cost(x)
    return {
        "instructions_per_inference": int(cost["instructions"]["per_inference"]),
        "macs_per_inference": int(q.program.macs_per_step()) * 128,
        "flash_bytes": int(cost["sizes"]["flash_bytes"]),
        "ram_bytes": int(cost["sizes"]["ram_bytes"]),
    }


def _arch_key(v: Variant) -> str:
    return json.dumps([v.arch, v.model], sort_keys=True)


def _recorded_rows() -> dict:
    """The variants' rows of the results file whose settings are still the variant's (a fold recorded
    there stays in the table when its run file is not in this checkout)."""
    if not RESULTS.is_file():
        return {}
    rows = json.loads(RESULTS.read_text()).get("variants", {})
    return {
        n: r
        for n, r in rows.items()
        if n in VARIANTS
        and (r.get("model_config"), r.get("train_config"), r.get("data_config"))
        == (VARIANTS[n].model, VARIANTS[n].train, VARIANTS[n].data)
    }


def summary(costs: dict) -> dict:
    import numpy as np

    keys = ("best_validation_accuracy", "best_epoch", "last5_validation_accuracy", "train_seconds")
    recorded = _recorded_rows()
    rows = {}
    for name, v in VARIANTS.items():
        runs = [json.loads(p.read_text()) for p in sorted(RUNS.glob(f"{name}-f*.json"))]
        folds = dict((recorded.get(name) or {}).get("folds", {}))
        folds.update({str(r["fold"]): {k: r[k] for k in keys} for r in runs})
        if not folds:
            continue
        folds = dict(sorted(folds.items(), key=lambda kv: int(kv[0])))
        rows[name] = {
            "task": v.task,
            "arch": v.arch,
            "note": v.note,
            "base": v.base,
            "parameters": runs[0]["parameters"] if runs else recorded[name]["parameters"],
            "folds": folds,
            "mean_best_validation_accuracy": float(np.mean([f["best_validation_accuracy"] for f in folds.values()])),
            "mean_last5_validation_accuracy": float(np.mean([f["last5_validation_accuracy"] for f in folds.values()])),
            "cortex_m4": costs.get(_arch_key(v)),
            "model_config": v.model,
            "train_config": v.train,
            "data_config": v.data,
        }
    return rows


def short_runs() -> list[dict]:
    """Each short screening run against its base over the same epochs (same seed, same schedule up to
    the cut, so the two differ only by the variant's change)."""
    import numpy as np

    rows = []
    for p in sorted(SHORT.glob("*-f*.json")):
        r = json.loads(p.read_text())
        v = VARIANTS[r["variant"]]
        base = RUNS / f"{v.base}-f{r['fold']}.json"
        if not base.is_file() or (RUNS / p.name).is_file():  # no base yet, or the whole run exists
            continue
        k = len(r["history"])
        h, b = np.array(r["history"]), np.array(json.loads(base.read_text())["history"][:k])
        rows.append(
            {
                "variant": r["variant"],
                "fold": r["fold"],
                "base": v.base,
                "note": v.note,
                "epochs": k,
                "best": float(h.max()),
                "base_best": float(b.max()),
                "mean_second_half": float(h[k // 2 :].mean()),
                "base_mean_second_half": float(b[k // 2 :].mean()),
            }
        )
    return rows


def _delta(row: dict, base: Optional[dict]) -> str:
    """Mean change of the best validation accuracy against the base row, over the folds both have."""
    shared = sorted(set(row["folds"]) & set(base["folds"])) if base else []
    if not shared:
        return "-"
    d = sum(row["folds"][f]["best_validation_accuracy"] - base["folds"][f]["best_validation_accuracy"] for f in shared)
    return f"{100 * d / len(shared):+.2f} ({len(shared)})"


def _with_recorded_short_runs(rows: list[dict]) -> list[dict]:
    """The screening runs of this checkout, and those of the results file whose run files are absent."""
    have = {(r["variant"], r["fold"]) for r in rows}
    old = json.loads(RESULTS.read_text()).get("short_runs", []) if RESULTS.is_file() else []
    kept = [r for r in old if r["variant"] in VARIANTS and (r["variant"], r["fold"]) not in have]
    return sorted(kept + rows, key=lambda r: (r["variant"], r["fold"]))


def markdown(path: Path = RESULTS) -> list[str]:
    """The study as a docs/MODELS.md section (empty when the results file is absent)."""
    if not path.is_file():
        return []
    doc = json.loads(path.read_text())
    rows = doc["variants"]
    folds = sorted({k for r in rows.values() for k in r["folds"]}, key=int)
    lines = [
        "",
        "## HAR recipe study (validation folds, before the test split)",
        "",
        "`scripts/har_study.py` (results: `benchmarks/results/har_study.json`). " + doc["protocol"],
        "",
        "Each cell: best / mean of the last five epochs' validation accuracy. Delta: mean change of the best "
        "accuracy against the row named in 'vs' over the folds both have (their number in brackets). Cortex-M4: instructions per 128-sample inference of the int8 "
        "build under qemu (`bench_c_int`'s method, untrained weights: a trained build's per-channel requantization "
        "can cost more, see `benchmarks/results/har_models.json`), flash and RAM of the whole firmware.",
        "",
        "| variant | what changed | vs | parameters | "
        + " | ".join(f"fold {f}" for f in folds)
        + " | mean | delta | Cortex-M4 instructions | flash / RAM |",
        "|---|---|---|---|" + "---|" * len(folds) + "---|---|---|---|",
    ]
    for name, r in rows.items():
        cells = []
        for f in folds:
            c = r["folds"].get(f)
            cells.append(
                "-"
                if c is None
                else f"{100 * c['best_validation_accuracy']:.2f} / {100 * c['last5_validation_accuracy']:.2f}"
            )
        delta = _delta(r, rows.get(r["base"]) if r.get("base") else None)
        m4 = r.get("cortex_m4") or {}
        ins = f"{m4['instructions_per_inference'] / 1e6:.2f} M" if m4 else "-"
        mem = f"{m4['flash_bytes'] / 1024:.1f} / {m4['ram_bytes'] / 1024:.1f} KB" if m4 else "-"
        lines.append(
            f"| {name} | {r['note']} | {r.get('base') or '-'} | {r['parameters']:,} | "
            + " | ".join(cells)
            + f" | {100 * r['mean_best_validation_accuracy']:.2f} / {100 * r['mean_last5_validation_accuracy']:.2f}"
            f" | {delta} | {ins} | {mem} |"
        )
    short = doc.get("short_runs") or []
    if short:
        lines += [
            "",
            "Short screening runs (the 40-epoch schedule cut after the given epochs) against their base "
            "over the same epochs (best / mean of the second half of the epochs):",
            "",
            "| variant | what changed | fold | epochs | variant | base |",
            "|---|---|---|---|---|---|",
        ]
        for r in short:
            lines.append(
                f"| {r['variant']} | {r['note']} | {r['fold']} | {r['epochs']} | {100 * r['best']:.2f} / "
                f"{100 * r['mean_second_half']:.2f} | {100 * r['base_best']:.2f} / "
                f"{100 * r['base_mean_second_half']:.2f} |"
            )
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("variants", nargs="*")
    ap.add_argument("--folds", default="0,1", help="comma-separated validation folds (default: 0,1)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument(
        "--adopt",
        nargs=2,
        metavar=("RUN_DIR", "VARIANT"),
        help="record a finished edgeseq train run with exactly the variant's settings as its fold <seed>",
    )
    ap.add_argument(
        "--stop-after",
        type=int,
        default=0,
        metavar="K",
        help="screening: end each run after K epochs of its schedule (runs/har_study_short)",
    )
    ap.add_argument(
        "--summary",
        action="store_true",
        help="measure each architecture's Cortex-M4 cost, write benchmarks/results/har_study.json, print it",
    )
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.list:
        for n, v in VARIANTS.items():
            print(f"{n:22s} {v.note}" + (f" (vs {v.base})" if v.base else ""))
        return 0
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}")
    runs_dir = SHORT if args.stop_after else RUNS
    runs_dir.mkdir(parents=True, exist_ok=True)
    from edgeseq.util.fs import atomic_write_json

    if args.adopt:
        fold, row = adopt(Path(args.adopt[0]), args.adopt[1])
        print(f"{args.adopt[1]} fold {fold}: adopted {args.adopt[0]}")
        atomic_write_json(RUNS / f"{args.adopt[1]}-f{fold}.json", row)
    for name, fold in _variant_runs(args.variants, [int(f) for f in args.folds.split(",")]):
        out = runs_dir / f"{name}-f{fold}.json"
        if out.is_file():
            continue
        atomic_write_json(out, run_one(name, fold, log=lambda m: print(m, flush=True), stop_after=args.stop_after))
    if args.summary:
        # each architecture's cost on this checkout's integer kernels (a few seconds each: measured afresh,
        # so the table never shows a cost of earlier kernels)
        costs: dict = {}
        recorded = _recorded_rows()
        for name, v in VARIANTS.items():
            if (name in recorded or any(RUNS.glob(f"{name}-f*.json"))) and _arch_key(v) not in costs:
                costs[_arch_key(v)] = measure_cost(v)
        rows = summary(costs)
        atomic_write_json(
            RESULTS,
            {
                "benchmark": "har_study",
                "protocol": " ".join(__doc__.split("\n\n")[2].split()),
                "variants": rows,
                "short_runs": _with_recorded_short_runs(short_runs()),
            },
        )
        print("\n".join(markdown()))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
