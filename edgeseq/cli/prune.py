"""edgeseq prune: prune a trained checkpoint (structured or unstructured), optionally fine-tune, or sweep
sparsities; writes the pruned checkpoint(s), a JSON report and, for a sweep, a table and a plot."""

from __future__ import annotations

import shlex
import sys

from ..errors import ConfigError
from . import args as A


def _sparsities(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--sweep expects comma-separated numbers, got '{text}'") from None
    if not values:
        raise ConfigError("--sweep needs at least one sparsity")
    return values


def register(sub) -> None:
    from ..prune.config import Compensation, Criterion
    from ..train.recipes import TASKS

    p = sub.add_parser(
        "prune",
        help="prune a checkpoint (structured hidden units or unstructured weights), fine-tune, or sweep sparsities",
    )
    p.add_argument("model", help="checkpoint written by edgeseq train (model.ckpt)")
    p.add_argument(
        "--data",
        choices=sorted(TASKS),
        help="task whose data fine-tunes and evaluates the model (default: the task recorded in the checkpoint)",
    )
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--structured",
        action="store_true",
        help="remove whole hidden units (a smaller dense model); default: unstructured magnitude",
    )
    how.add_argument("--unstructured", action="store_true", help="zero the smallest weights of every layer")
    p.add_argument("--sparsity", type=A.fraction, default=0.5, help="fraction of units / weights removed (default 0.5)")
    p.add_argument(
        "--memory-sparsity",
        type=A.fraction,
        default=0.0,
        help="structured: fraction of LMU/L2MU memory dimensions removed (default 0)",
    )
    p.add_argument(
        "--criterion",
        choices=[c.value for c in Criterion],
        default="reconstruction",
        help="structured unit importance (default reconstruction)",
    )
    p.add_argument(
        "--compensate",
        choices=[c.value for c in Compensation],
        default="lstsq",
        help="structured: how the layers reading removed units are corrected (default lstsq)",
    )
    p.add_argument("--finetune-epochs", type=A.count0, default=0, help="fine-tuning epochs after pruning (default 0)")
    p.add_argument("--lr", type=A.positive, default=1e-3, help="fine-tuning peak learning rate (default 1e-3)")
    p.add_argument("--sweep", metavar="S1,S2,...", help="prune at each sparsity; writes sweep.json/.md/.png")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..prune import StructuredConfig, UnstructuredConfig, prune_and_finetune, sweep, sweep_markdown, sweep_plot
    from ..prune.recipe import check_data, recipe_overrides, task_data
    from ..train.checkpoint import load_checkpoint, save_checkpoint
    from ..util.fs import atomic_write_bytes, atomic_write_json, atomic_write_text, check_output_dir, output_dir

    check_output_dir(args.out, args.force)
    if args.finetune_epochs < 0:
        raise ConfigError(f"--finetune-epochs must be >= 0, got {args.finetune_epochs}")
    model, doc = load_checkpoint(args.model)
    task = args.data or (doc.get("metrics") or {}).get("task")
    if not task:
        raise ConfigError("the checkpoint does not record its task", where=args.model, hint="pass --data har|kws|...")
    log = (lambda *a, **k: None) if args.quiet else print
    train, val, test = task_data(task)
    for ds, what in ((train, "train"), (test, "test")):
        check_data(model, ds, where=f"{task} {what} data")
    overrides = recipe_overrides(model, task)
    command = "edgeseq " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else None
    arch = model.config["arch"]

    def make_config(s: float):
        if args.structured:
            return StructuredConfig(
                sparsity=s, memory_sparsity=args.memory_sparsity, criterion=args.criterion, compensate=args.compensate
            )
        return UnstructuredConfig(sparsity=s)

    with output_dir(args.out, args.force) as stage:
        if args.sweep:
            result = sweep(
                model,
                _sparsities(args.sweep),
                train,
                val,
                test,
                structured=args.structured,
                criterion=args.criterion,
                compensate=args.compensate,
                memory_sparsity=args.memory_sparsity,
                finetune_epochs=args.finetune_epochs,
                lr=args.lr,
                train_overrides=overrides,
                progress=not args.quiet,
                log=log,
                keep_models=True,
            )
            models = result.pop("models")
            for row in result["rows"]:
                s = row["sparsity"]
                if s == 0:
                    continue
                acc = row["accuracy_finetuned"] if row["accuracy_finetuned"] is not None else row["accuracy_pruned"]
                save_checkpoint(
                    models[s],
                    stage / f"s{s:.2f}" / "model.ckpt",
                    metrics={"task": task, "arch": arch, "parameters": row["parameters"], "test": {"accuracy": acc}},
                    extra={"pruned_from": str(args.model), "sweep_row": row},
                )
            result.update({"checkpoint": str(args.model), "task": task, "arch": arch, "command": command})
            atomic_write_json(stage / "sweep.json", result)
            atomic_write_text(stage / "sweep.md", sweep_markdown(result))
            kind = "structured" if args.structured else "unstructured"
            atomic_write_bytes(stage / "sweep.png", sweep_plot(result, title=f"{task}/{arch}: {kind} pruning"))
            print(sweep_markdown(result), end="")
            print(f"wrote {args.out}/sweep.json, sweep.md, sweep.png")
            return 0
        pruned, _, report = prune_and_finetune(
            model,
            make_config(args.sparsity),
            train,
            val,
            test,
            finetune_epochs=args.finetune_epochs,
            lr=args.lr,
            train_overrides=overrides,
            progress=not args.quiet,
            log=log,
        )
        report.update({"checkpoint": str(args.model), "task": task, "command": command})
        metrics = {
            "task": task,
            "arch": arch,
            "parameters": report["parameters_after"],
            "test": {"accuracy": report["accuracy_after"]},
        }
        save_checkpoint(
            pruned,
            stage / "model.ckpt",
            metrics=metrics,
            extra={"pruning": {k: v for k, v in report.items() if k != "kept_indices"}},
        )
        atomic_write_json(stage / "prune.json", report)
    nz = f", {report['nonzero_after']} nonzero" if "nonzero_after" in report else ""
    print(
        f"{report['method']} pruning at sparsity {args.sparsity}: {report['parameters_before']} -> "
        f"{report['parameters_after']} parameters{nz}; test accuracy {report['accuracy_before']:.4f} -> "
        f"{report['accuracy_after']:.4f} ({report['accuracy_change_points']:+.2f} points)"
    )
    print(f"wrote {args.out}/model.ckpt and prune.json")
    return 0
