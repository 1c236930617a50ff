"""edgeseq sweep: find the model for a device. Trains, prunes, quantizes, exports and measures
candidate models proposed by Optuna (TPE), on Ray when it is installed; writes results.json /
results.csv, report.html with the Pareto fronts, and the chosen model's artifact. Resumable."""

from __future__ import annotations

import re

from ..errors import ConfigError

_BYTES = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20}
_COUNT = {"": 1, "K": 1_000, "M": 1_000_000, "G": 1_000_000_000}


def _number(text: str, units: dict, flag: str) -> int:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", text or "")
    if not m or m.group(2).upper() not in units:
        raise ConfigError(
            f"cannot read '{text}' (examples: {'64K, 32KB, 1M, 20000' if units is _BYTES else '5M, 500K, 2e6'})",
            where=flag,
        )
    value = float(m.group(1)) * units[m.group(2).upper()]
    if value <= 0:
        raise ConfigError(f"must be positive, got '{text}'", where=flag)
    return int(round(value))


def parse_bytes(text: str, flag: str = "--max-flash") -> int:
    """'64K' / '64KB' / '64KiB' -> 65536 bytes (K = 1024), '1M' -> 1048576, '20000' -> 20000."""
    return _number(text, _BYTES, flag)


def parse_count(text: str, flag: str = "--max-instructions") -> int:
    """'5M' -> 5,000,000 (K = 1000), '2e6' -> 2,000,000."""
    return _number(text, _COUNT, flag)


def parse_accuracy(text: str) -> float:
    """'0.92' or '92%' -> 0.92."""
    t = (text or "").strip()
    try:
        v = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise ConfigError(f"cannot read '{text}' (a fraction such as 0.92, or 92%)", where="--min-accuracy") from None
    if not t.endswith("%") and v > 1:
        raise ConfigError(f"'{text}' is above 1: give a fraction (0.92) or a percentage (92%)", where="--min-accuracy")
    return v


def register(sub) -> None:
    from ..sweep.run import TARGETS
    from ..train.recipes import TASKS

    p = sub.add_parser(
        "sweep",
        help="find the model for a device: search architectures and plans, Pareto report, chosen artifact",
        description="Search architectures, sizes, pruning and quantization budgets for TASK on TARGET: every trial "
        "trains a candidate with the task's recipe, prunes, quantizes, exports it and measures it on the "
        "emulated device (int8 accuracy, flash, RAM, instructions per inference). Trials are proposed by "
        "Optuna's TPE sampler (seeded, in batches: the same trials whatever runs them) and run on Ray "
        "(pip install 'edgeseq[distributed]'; --address for an existing cluster) or one after another in "
        "this process. Every finished trial is saved at once: rerun the same command to resume.",
    )
    p.add_argument("--task", required=True, choices=sorted(TASKS))
    p.add_argument("--target", required=True, choices=TARGETS)
    p.add_argument("--trials", type=int, default=16, metavar="N", help="number of trials (default 16)")
    p.add_argument(
        "--out", metavar="DIR", help="sweep directory (default runs/sweep-TASK-TARGET); an existing one is resumed"
    )
    p.add_argument("--space", metavar="FILE.json", help="search space (default: the task's; see --show-space)")
    p.add_argument("--show-space", action="store_true", help="print the search space and exit")
    lim = p.add_argument_group("constraints (the chosen model must meet them; the sampler learns them)")
    lim.add_argument("--max-flash", metavar="BYTES", help="e.g. 64K (K = 1024)")
    lim.add_argument("--max-ram", metavar="BYTES", help="e.g. 32K")
    lim.add_argument("--max-instructions", metavar="N", help="per inference, e.g. 5M (M = 10^6)")
    lim.add_argument(
        "--min-accuracy",
        metavar="A",
        help="int8, on the held-out validation subjects: 0.92 or 92%%; "
        "with it the cheapest model that reaches it is chosen",
    )
    eng = p.add_argument_group("where trials run")
    eng.add_argument(
        "--engine",
        default="auto",
        choices=("auto", "ray", "sequential"),
        help="auto (default): Ray when installed, else sequential",
    )
    eng.add_argument("--address", help="an existing Ray cluster (HOST:PORT); default: a Ray instance on this machine")
    eng.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="trials at a time (default: the cluster's CPUs / --cpus-per-trial, at most --batch)",
    )
    eng.add_argument(
        "--cpus-per-trial", type=int, default=1, metavar="N", help="CPUs (and torch threads) per trial (default 1)"
    )
    eng.add_argument(
        "--retries",
        type=int,
        default=1,
        metavar="N",
        help="Ray: re-runs of a trial whose worker died before it is recorded as failed (default 1)",
    )
    srch = p.add_argument_group("search")
    srch.add_argument("--seed", type=int, default=0, metavar="N", help="sampler seed (default 0)")
    srch.add_argument(
        "--batch",
        type=int,
        default=4,
        metavar="N",
        help="trials proposed together (default 4): the proposals depend on seed and batch only",
    )
    srch.add_argument(
        "--startup",
        type=int,
        metavar="N",
        help="random trials before TPE (default: a third of --trials, at least a batch, at most 10)",
    )
    meas = p.add_argument_group("data and measurement")
    meas.add_argument("--train-data", metavar="FILE.npz", help="an edgeseq dataset file to train on (with --test-data)")
    meas.add_argument("--test-data", metavar="FILE.npz", help="an edgeseq dataset file to test on")
    meas.add_argument(
        "--device-windows",
        type=int,
        default=32,
        metavar="N",
        help="test windows each trial runs on the emulated device (default 32)",
    )
    meas.add_argument(
        "--chosen-device-windows",
        type=int,
        metavar="N",
        help="test windows the chosen model runs on the emulated device (default: all)",
    )
    meas.add_argument(
        "--baseline",
        action="append",
        metavar="MODEL",
        help="reference model measured like a trial (repeatable; default: the task's shipped models)",
    )
    meas.add_argument("--no-baseline", action="store_true", help="measure no reference model")
    p.add_argument("--no-export", action="store_true", help="do not export the chosen model")
    p.add_argument("--force", action="store_true", help="start over in an existing sweep directory")
    p.add_argument("--verbose", action="store_true", help="show every stage of every trial")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..sweep import Constraints, default_space, load_space, sweep

    if args.show_space:
        space = load_space(args.space, task=args.task) if args.space else default_space(args.task)
        print(f"search space ({space.source}):\n{space.describe()}")
        return 0
    if args.trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {args.trials}", where="--trials")
    if args.baseline and args.no_baseline:
        raise ConfigError("--baseline and --no-baseline contradict each other", where="--no-baseline")
    constraints = Constraints(
        max_flash=parse_bytes(args.max_flash, "--max-flash") if args.max_flash else None,
        max_ram=parse_bytes(args.max_ram, "--max-ram") if args.max_ram else None,
        max_instructions=parse_count(args.max_instructions) if args.max_instructions else None,
        min_accuracy=parse_accuracy(args.min_accuracy) if args.min_accuracy else None,
    )
    res = sweep(
        args.task,
        args.target,
        args.trials,
        args.out or f"runs/sweep-{args.task}-{args.target}",
        space=args.space,
        constraints=constraints,
        seed=args.seed,
        batch=args.batch,
        startup=args.startup,
        engine=args.engine,
        address=args.address,
        workers=args.workers,
        cpus_per_trial=args.cpus_per_trial,
        retries=args.retries,
        train_data=args.train_data,
        test_data=args.test_data,
        device_windows=args.device_windows,
        threads=args.cpus_per_trial,
        baselines=[] if args.no_baseline else args.baseline,
        chosen_device_eval=args.chosen_device_windows,
        export_chosen=not args.no_export,
        force=args.force,
        verbose=args.verbose,
    )
    if not res.complete:
        return 130
    if res.chosen is None:
        print(f"edgeseq sweep: no model chosen: {res.results['chosen']['why']}")
        return 1
    return 0
