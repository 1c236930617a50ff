"""edgeseq info: summary of a model (nodes, types, parameters, state contract), or the shipped models."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("info", help="summarise a model (.esq, .ckpt, shipped name) or list the shipped models")
    p.add_argument(
        "model", nargs="?", help="shipped model name, .ckpt checkpoint, training directory, .esq graph or .nir graph"
    )
    p.add_argument("--models", action="store_true", help="list the shipped trained models")
    from . import args as A

    A.add_nir_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import ConfigError
    from ..models import load_model, shipped_info

    if args.models or not args.model:
        if not args.models:
            raise ConfigError("give a model (name, .ckpt or .esq) or --models")
        rows = shipped_info()
        if not rows:
            print("no shipped models installed")
        for r in rows:
            acc = r["test_accuracy"]
            print(
                f"{r['name']:<16} {r['task'] or '-':<6} {r['arch'] or '-':<10} {r['parameters'] or 0:>7} params  "
                f"test accuracy {'-' if acc is None else f'{100 * acc:.2f}%'}"
            )
            print(f"{'':16} reproduce: {r['command']}")
        return 0
    from .args import nir_options

    lm = load_model(args.model, nir_options=nir_options(args))
    g = lm.graph
    print(g.summary())
    spec = g.state_spec()
    if g.is_window:
        print(
            f"\nwindow graph: runs on whole windows, node by node ({g.metadata.get('window', 'window ops')}); "
            "exports whole-window to every target (float and int8), cannot stream"
        )
    elif spec:
        print("\nstreaming state (per sequence):")
        for k, s in spec.items():
            print(f"  {k:<32} {s}")
    if g.metadata:
        print("\nmetadata:", {k: v for k, v in g.metadata.items() if k != "model_config"})
    if lm.metrics.get("test"):
        print(f"\ntest accuracy {100 * lm.metrics['test']['accuracy']:.2f}% ({lm.metrics.get('dataset', '')})")
    return 0
