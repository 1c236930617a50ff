"""edgeseq info: summary of an IR file (nodes, types, parameters, state contract)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("info", help="summarise an IR file (.esq)")
    p.add_argument("model", help="IR file written by Graph.save / edgeseq capture")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..ir.serialize import load

    g = load(args.model)
    print(g.summary())
    spec = g.state_spec()
    if spec:
        print("\nstreaming state (per sequence):")
        for k, s in spec.items():
            print(f"  {k:<32} {s}")
    if g.metadata:
        print("\nmetadata:", {k: v for k, v in g.metadata.items() if k != "model_config"})
    return 0
