"""Prune -> fine-tune -> evaluate, and sparsity sweeps (sparsity-vs-accuracy table and plot)."""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import numpy as np

from ..errors import ConfigError, ShapeError
from .config import StructuredConfig, UnstructuredConfig


def task_data(task: str, data_kw: Optional[dict] = None, seed: int = 0, val_fraction: float = 0.15):
    """(train, validation, test) of a training task, split exactly as ``edgeseq train`` splits it."""
    from ..train.loop import split_validation
    from ..train.recipes import load_task_data

    train_all, test, _ = load_task_data(task, data_kw)
    train, val = split_validation(train_all, val_fraction, seed)
    return train, val, test


def check_data(model, ds, where: str = "dataset") -> None:
    cfg = getattr(model, "config", None) or {}
    fin, ncls = cfg.get("in_features"), cfg.get("n_classes")
    if fin is not None and ds.in_features != fin:
        raise ShapeError(f"the model takes {fin} input features, the data has {ds.in_features}", where=where)
    if ncls is not None and ds.n_classes != ncls:
        raise ShapeError(f"the model has {ncls} classes, the data has {ds.n_classes}", where=where)


def evaluate_accuracy(model, ds) -> float:
    from ..train.loop import accuracy, predict

    return accuracy(predict(model, ds.x), ds.y)


def finetune(
    model,
    train,
    val,
    epochs: int = 3,
    *,
    lr: float = 1e-3,
    masks=None,
    train_overrides=None,
    progress: bool = False,
    log: Callable = print,
) -> dict:
    """Fine-tune ``model`` in place for a few epochs with :func:`edgeseq.train.fit` (AdamW, one-cycle,
    best validation epoch kept; the weights before fine-tuning are kept instead when no epoch beats
    their validation accuracy). ``masks`` (:class:`PruneMasks`) keep pruned weights at zero."""
    from ..train.loop import TrainConfig, accuracy, fit, predict

    if epochs < 1:
        raise ConfigError(f"fine-tuning needs at least 1 epoch, got {epochs}")
    opts = {"epochs": int(epochs), "lr": float(lr), "patience": int(epochs), "max_minutes": 30.0}
    opts.update(train_overrides or {})
    cfg = TrainConfig.from_dict(opts)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    val_before = accuracy(predict(model, val.x), val.y)
    if masks is not None:
        masks.attach(model)
    try:
        hist = fit(model, train, val, cfg, progress=progress, log=log)
    finally:
        if masks is not None:
            masks.detach()
            masks.apply(model)
    kept_before = hist.best_val_accuracy < val_before
    if kept_before:
        model.load_state_dict(before)
        model.eval()
    return {
        "epochs": len(hist.epochs),
        "best_epoch": hist.best_epoch,
        "best_val_accuracy": hist.best_val_accuracy,
        "val_accuracy_before": val_before,
        "kept_weights_before_finetuning": kept_before,
        "seconds": round(hist.seconds, 1),
        "train_config": opts,
    }


def recipe_overrides(model, task: str) -> dict:
    """The augmentation settings of the training recipe of ``task`` for the model's architecture."""
    from ..train.recipes import RECIPES

    arch = (getattr(model, "config", None) or {}).get("arch")
    _, train_cfg = RECIPES.get(task, {}).get(arch, ({}, {}))
    return {k: v for k, v in train_cfg.items() if k.startswith("augment_")}


def prune_and_finetune(
    model,
    config,
    train=None,
    val=None,
    test=None,
    *,
    finetune_epochs: int = 0,
    lr: float = 1e-3,
    calib: int = 512,
    train_overrides=None,
    progress: bool = False,
    log: Callable = print,
):
    """Prune ``model`` with ``config``, optionally fine-tune, and measure test accuracy at each stage.

    Returns (pruned model, masks or None, report). Calibration data (activation criterion) is the
    first ``calib`` training sequences of a fixed permutation."""
    from . import prune

    calib_x = None
    if train is not None:
        idx = np.random.default_rng(0).permutation(len(train))[:calib]
        calib_x = train.x[np.sort(idx)]
    res = prune(model, config, calib_x=calib_x)
    report = dict(res.report)
    if test is not None:
        report["accuracy_before"] = evaluate_accuracy(model, test)
        report["accuracy_pruned"] = evaluate_accuracy(res.model, test)
    if finetune_epochs:
        if train is None or val is None:
            raise ConfigError("fine-tuning needs training and validation data")
        report["finetune"] = finetune(
            res.model,
            train,
            val,
            finetune_epochs,
            lr=lr,
            masks=res.masks,
            train_overrides=train_overrides,
            progress=progress,
            log=log,
        )
        if test is not None:
            report["accuracy_finetuned"] = evaluate_accuracy(res.model, test)
    if test is not None:
        final = report.get("accuracy_finetuned", report["accuracy_pruned"])
        report["accuracy_after"] = final
        report["accuracy_change_points"] = 100.0 * (final - report["accuracy_before"])
    if res.masks is not None:
        from .unstructured import nonzero_parameters

        report["nonzero_after"] = nonzero_parameters(res.model)
    return res.model, res.masks, report


def sweep(
    model,
    sparsities: Sequence[float],
    train=None,
    val=None,
    test=None,
    *,
    structured: bool = True,
    criterion: str = "reconstruction",
    compensate: str = "lstsq",
    memory_sparsity: Optional[float] = None,
    finetune_epochs: int = 0,
    lr: float = 1e-3,
    train_overrides=None,
    progress: bool = False,
    log: Callable = print,
    keep_models: bool = False,
) -> dict:
    """Prune at every sparsity (0, always included, is the original model, not fine-tuned) and
    tabulate parameters and test accuracy before and after fine-tuning. ``memory_sparsity=None``
    prunes memory dimensions at the same sparsity as hidden units when the architecture has them;
    a number fixes it.

    Returns {"rows": [...], "baseline_accuracy", "models" (when keep_models)}."""
    from .structured import count_parameters, unit_groups
    from .unstructured import nonzero_parameters

    if test is None:
        raise ConfigError("a sweep needs test data")
    values = sorted({float(s) for s in sparsities} | {0.0})
    base_acc = evaluate_accuracy(model, test)
    base_params = count_parameters(model)
    has_memory = structured and any(g.kind == "memory" for g in unit_groups(model))
    rows, models = [], {}
    for s in values:
        t0 = time.perf_counter()
        if s == 0.0:
            row = {
                "sparsity": 0.0,
                "memory_sparsity": 0.0,
                "parameters": base_params,
                "nonzero_parameters": nonzero_parameters(model),
                "parameter_reduction": 0.0,
                "accuracy_pruned": base_acc,
                "accuracy_finetuned": base_acc,
                "accuracy_change_points": 0.0,
                "finetune_seconds": 0.0,
            }
            rows.append(row)
            models[s] = model
            continue
        if structured:
            ms = (s if has_memory else 0.0) if memory_sparsity is None else float(memory_sparsity)
            cfg = StructuredConfig(sparsity=s, memory_sparsity=ms, criterion=criterion, compensate=compensate)
        else:
            ms = 0.0
            cfg = UnstructuredConfig(sparsity=s)
        pruned, _, rep = prune_and_finetune(
            model,
            cfg,
            train,
            val,
            test,
            finetune_epochs=finetune_epochs,
            lr=lr,
            train_overrides=train_overrides,
            progress=progress,
            log=log,
        )
        params = count_parameters(pruned)
        nz = nonzero_parameters(pruned)
        row = {
            "sparsity": s,
            "memory_sparsity": ms,
            "parameters": params,
            "nonzero_parameters": nz,
            "parameter_reduction": 1.0 - (params if structured else nz) / base_params,
            "accuracy_pruned": rep["accuracy_pruned"],
            "accuracy_finetuned": rep.get("accuracy_finetuned"),
            "accuracy_change_points": rep["accuracy_change_points"],
            "finetune_seconds": rep.get("finetune", {}).get("seconds", 0.0),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        log(
            f"sparsity {s:.2f}: {params} parameters ({nz} nonzero), accuracy {row['accuracy_pruned']:.4f} pruned"
            + (f", {row['accuracy_finetuned']:.4f} fine-tuned" if row["accuracy_finetuned"] is not None else "")
        )
        rows.append(row)
        if keep_models:
            models[s] = pruned
    out = {
        "structured": structured,
        "criterion": criterion if structured else "magnitude",
        "compensate": compensate if structured else None,
        "finetune_epochs": finetune_epochs,
        "baseline_accuracy": base_acc,
        "baseline_parameters": base_params,
        "rows": rows,
    }
    if keep_models:
        out["models"] = models
    return out


def sweep_markdown(result: dict) -> str:
    """The sweep as a Markdown table."""
    lines = [
        "| sparsity | memory sparsity | parameters | nonzero | reduction | acc. pruned | acc. fine-tuned "
        "| change (points) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        ft = "-" if r["accuracy_finetuned"] is None else f"{r['accuracy_finetuned']:.4f}"
        lines.append(
            f"| {r['sparsity']:.2f} | {r['memory_sparsity']:.2f} | {r['parameters']} | "
            f"{r['nonzero_parameters']} | {100 * r['parameter_reduction']:.1f}% | "
            f"{r['accuracy_pruned']:.4f} | "
            f"{ft} | {r['accuracy_change_points']:+.2f} |"
        )
    return "\n".join(lines) + "\n"


def sweep_plot(result: dict, title: str = "") -> bytes:
    """PNG: test accuracy against sparsity (pruned, fine-tuned, original), x labels with parameter counts."""
    from ..reports.html import line_png

    rows = result["rows"]
    xs = [r["sparsity"] for r in rows]
    series = {"pruned": [r["accuracy_pruned"] for r in rows]}
    if any(r["sparsity"] > 0 and r["accuracy_finetuned"] is not None for r in rows) and result.get("finetune_epochs"):
        series[f"pruned + fine-tuned ({result['finetune_epochs']} ep)"] = [r["accuracy_finetuned"] for r in rows]
    key = "parameters" if result.get("structured", True) else "nonzero_parameters"
    labels = [f"{r['sparsity']:.2f}\n{r[key] / 1000:.1f}k" for r in rows]
    kind = "structured" if result.get("structured", True) else "unstructured"
    return line_png(
        xs,
        series,
        title=title or f"{kind} pruning sweep",
        xlabel=f"sparsity ({key})",
        ylabel="test accuracy",
        hlines={"original": result["baseline_accuracy"]},
        xticklabels=labels,
    )
