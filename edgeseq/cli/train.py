"""edgeseq train: train a zoo model on a task with its recipe; writes a safe checkpoint + metrics."""

from __future__ import annotations

import json
import shlex
import sys

from ..errors import ConfigError
from . import args as A


def _parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def register(sub) -> None:
    from ..train.recipes import TASKS

    p = sub.add_parser("train", help="train a zoo model (writes model.ckpt, metrics.json, curves.png)")
    p.add_argument("--task", required=True, choices=sorted(TASKS))
    p.add_argument(
        "--model",
        required=True,
        metavar="ARCH",
        choices=A.LazyChoices("edgeseq.nn.models", "ARCHS"),
        help="architecture: %(choices)s",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.add_argument("--epochs", type=A.count)
    p.add_argument("--max-minutes", type=A.positive)
    p.add_argument("--seed", type=A.seed)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a model setting (repeatable)")
    p.add_argument("--train-set", action="append", metavar="KEY=VALUE", help="override a training setting")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..train.recipes import train_task

    train_over = _parse_sets(args.train_set)
    for k in ("epochs", "seed"):
        if getattr(args, k) is not None:
            train_over[k] = getattr(args, k)
    if args.max_minutes is not None:
        train_over["max_minutes"] = args.max_minutes
    command = "edgeseq " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else None
    m = train_task(
        args.task,
        args.model,
        args.out,
        force=args.force,
        model_overrides=_parse_sets(args.set),
        train_overrides=train_over,
        progress=not args.quiet,
        command=command,
    )
    print(f"wrote {args.out}/model.ckpt  (test accuracy {m['test']['accuracy']:.4f}, {m['parameters']} parameters)")
    return 0
