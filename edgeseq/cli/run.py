"""edgeseq run: execute an IR file with the float64 reference interpreter on a .npy input."""

from __future__ import annotations

import numpy as np


def register(sub) -> None:
    p = sub.add_parser("run", help="run the reference interpreter on an input array (.npy, shape B,T,F)")
    p.add_argument("model", help="IR file (.esq)")
    p.add_argument("input", help=".npy file with a (B, T, F) float array")
    p.add_argument("--out", help="write the output to this .npy file")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import ShapeError
    from ..ir.interpret import reference
    from ..ir.serialize import load
    from ..util.fs import atomic_write_bytes

    g = load(args.model)
    try:
        x = np.load(args.input, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ShapeError(f"cannot read input array ({e})", where=args.input) from None
    y, _ = reference(g, x)
    ys = y if isinstance(y, tuple) else (y,)
    if args.out:
        import io

        buf = io.BytesIO()
        np.save(buf, ys[0])
        atomic_write_bytes(args.out, buf.getvalue())
    for name, v in zip(g.outputs, ys):
        print(f"{name}: shape {v.shape}")
        if v.ndim == 2:
            print("  argmax:", v.argmax(-1).tolist())
    return 0
