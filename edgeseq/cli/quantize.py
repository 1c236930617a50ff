"""edgeseq quantize: calibrate a model on task data, plan, lower to an integer program, save .esq.

    edgeseq quantize MODEL --data har --out model.q.esq [--config naive|edgeseq|FILE.json] [--calib N]
    edgeseq quantize model.esq --data calib.npz --out model.q.esq

MODEL is a shipped model name, a .ckpt checkpoint (or training directory) or an .esq graph.
Calibration uses N sequences of the task's training split; the mixed-precision search (skipped
with --no-search) uses a disjoint part of the training split as validation data; ``--eval``
reports float / integer / fake-quant accuracy on the test split. ``--data FILE.npz`` calibrates
on the file's ``x`` (N, T, F) instead (a model of your own: no labels, so no search and no --eval).
"""

from __future__ import annotations

import numpy as np

from . import args as A


def register(sub) -> None:
    from ..train.recipes import TASKS

    p = sub.add_parser("quantize", help="quantize a model to an integer program (.esq) with calibration data")
    p.add_argument("model", help="shipped model name, .ckpt checkpoint / training directory, or .esq graph")
    p.add_argument(
        "--data",
        required=True,
        metavar="TASK|FILE.npz",
        help=f"task whose data calibrates the model ({', '.join(sorted(TASKS))}), or an .npz holding "
        "x (N, T, F) calibration sequences",
    )
    p.add_argument("--out", required=True, help="output file (.esq)")
    p.add_argument("--config", default="edgeseq", help="preset (edgeseq, naive) or a .json config file")
    p.add_argument("--calib", type=A.count, default=512, help="number of calibration sequences (default 512)")
    p.add_argument("--val", type=A.count0, default=1024, help="validation sequences for the mixed-precision search")
    p.add_argument("--budget", type=A.nonnegative, default=0.5, help="accuracy budget in points vs float (default 0.5)")
    p.add_argument("--no-search", action="store_true", help="no mixed-precision search")
    p.add_argument(
        "--max-promotions",
        type=A.count0,
        default=8,
        metavar="N",
        help="mixed-precision search: at most N tensors promoted to 16 bits (default 8)",
    )
    p.add_argument(
        "--allow-miss",
        action="store_true",
        help="write the most accurate plan found even when it misses --budget (default: error, no file)",
    )
    p.add_argument(
        "--qat-epochs",
        type=A.count0,
        default=0,
        metavar="N",
        help="when the post-training plan misses --budget, fine-tune the checkpoint for N epochs with "
        "fake-quantized weights and inputs (straight-through) and plan again (default 0: off)",
    )
    p.add_argument("--qat-lr", type=A.positive, default=3e-4, help="QAT peak learning rate (default 3e-4)")
    p.add_argument("--eval", action="store_true", help="report float / int / fake accuracy on the test split")
    p.add_argument("--plan", action="store_true", help="print the full quantization plan")
    p.add_argument("--seed", type=A.seed, default=0)
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..data import load_dataset
    from ..errors import BudgetError, ConfigError
    from ..models import load_model
    from ..quant import accuracy, resolve_config
    from ..quant.tasks import qat_on_task, quantize_on_task, task_data
    from ..train.recipes import TASKS
    from ..util.fs import check_output_file

    out = check_output_file(args.out, args.force)
    if out.suffix != ".esq":
        raise ConfigError(f"the output must be an .esq file, got '{out.name}'", where="--out")
    if args.calib < 1:
        raise ConfigError("--calib must be at least 1", where="--calib")
    cfg = resolve_config(args.config)
    lm = load_model(args.model)
    g = lm.graph
    if args.qat_epochs < 0:
        raise ConfigError("--qat-epochs must be >= 0", where="--qat-epochs")
    if args.qat_epochs and args.no_search:
        raise ConfigError("--qat-epochs needs the accuracy check of the search; drop --no-search", where="--qat-epochs")
    if args.qat_epochs and lm.module is None:
        raise ConfigError(
            "QAT fine-tunes the torch model: pass a checkpoint (.ckpt or shipped name), not an .esq graph",
            where=args.model,
        )
    if args.max_promotions < 0:
        raise ConfigError("--max-promotions must be >= 0", where="--max-promotions")
    if args.data.endswith(".npz"):
        return _from_npz(args, g, cfg, out)
    if args.data not in TASKS:
        raise ConfigError(
            f"unknown task '{args.data}'; one of: {', '.join(sorted(TASKS))}, or a FILE.npz of calibration sequences",
            where="--data",
        )
    data = task_data(
        args.data,
        g,
        calib=args.calib,
        val=0 if args.no_search else args.val,
        seed=args.seed,
        where=args.model,
        front_end=lm.metrics.get("front_end"),
    )
    kw = dict(
        budget=None if args.no_search else args.budget, progress=not args.quiet, max_promotions=args.max_promotions
    )
    try:
        qg = quantize_on_task(g, data, cfg, strict=not args.allow_miss or bool(args.qat_epochs), **kw)
    except BudgetError as e:
        if not args.qat_epochs:
            raise
        print(f"post-training plan: {e.args[0] if e.args else e}; fine-tuning with QAT ({args.qat_epochs} epochs)")
        g, qat_hist = qat_on_task(lm, data, args.qat_epochs, args.qat_lr, seed=args.seed, progress=not args.quiet)
        qg = quantize_on_task(g, data, cfg, strict=not args.allow_miss, **kw)
        qg.info["qat"] = qat_hist
    qg.info.update(model=str(args.model), task=args.data)
    if args.eval:
        task = TASKS[args.data]
        test = load_dataset(task["dataset"], "test", **task["kw"])
        res = {m: accuracy(qg, test.x, test.y, m) for m in ("float", "int", "fake")}
        agree = float(np.mean(qg.predict(test.x, "int") == qg.predict(test.x, "fake")))
        qg.info["test"] = {**res, "int_fake_agreement": agree, "n": int(len(test.y))}
    qg.save(out)
    _report(qg, cfg, out)
    if args.plan:
        print(qg.plan.summary())
    return 0


def _from_npz(args, g, cfg, out) -> int:
    """Calibration on an .npz of sequences (no labels: no accuracy search, no evaluation)."""
    from ..errors import ConfigError
    from ..quant import quantize
    from ..quant.tasks import npz_calibration

    for flag, used in (("--eval", args.eval), ("--qat-epochs", args.qat_epochs)):
        if used:
            raise ConfigError(f"{flag} needs a task's labelled data, not an .npz of sequences", where=flag)
    x = npz_calibration(args.data, g, max_sequences=args.calib)
    qg = quantize(g, x, cfg, budget=None, progress=not args.quiet)
    qg.info.update(model=str(args.model), calibration_file=str(args.data))
    qg.save(out)
    _report(qg, cfg, out)
    if args.plan:
        print(qg.plan.summary())
    return 0


def _report(qg, cfg, out) -> None:
    sz = qg.sizes()
    print(
        f"wrote {out}  ({cfg.name}: {len(qg.program.step)} micro-ops per step, constants {sz['const_bytes']} B, "
        f"float32 parameters {sz['float_param_bytes']} B, state {sz['state_bytes']} B)"
    )
    qh = qg.info.get("qat")
    if qh:
        print(
            f"QAT: fake-quant validation {100 * (qh['start_validation_accuracy'] or 0):.2f}% -> "
            f"{100 * (qh['best_validation_accuracy'] or 0):.2f}% over {len(qh['epochs'])} epochs"
        )
    s = qg.info.get("search")
    if s:
        print(
            f"mixed precision: float {100 * s['float_accuracy']:.2f}%  8-bit plan {100 * s['start_accuracy']:.2f}%"
            f"  final {100 * s['final_accuracy']:.2f}%  promoted to 16 bits: {', '.join(s['promoted']) or 'none'}"
            + ("" if s["met"] else "  (budget NOT met)")
        )
    t = qg.info.get("test")
    if t:
        print(
            f"test accuracy: float {100 * t['float']:.2f}%  int {100 * t['int']:.2f}%  fake {100 * t['fake']:.2f}%"
            f"  int/fake decision agreement {100 * t['int_fake_agreement']:.2f}%  (n={t['n']})"
        )
    if qg.plan.outliers:
        from ..quant.outliers import format_report

        print("outlier channels:\n  " + format_report(qg.plan.outliers).replace("\n", "\n  "))
