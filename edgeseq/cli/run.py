"""edgeseq run: execute an IR file with the float64 reference interpreter on a .npy input."""

from __future__ import annotations

import numpy as np

from ..errors import EdgeseqError


def register(sub) -> None:
    p = sub.add_parser("run", help="run the reference interpreter on an input array (.npy, shape B,T,F)")
    p.add_argument("model", help="IR file (.esq)")
    p.add_argument("input", help=".npy file with a (B, T, F) float array")
    p.add_argument("--out", help="write the output to this .npy file")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import ShapeError
    from ..ir.interpret import reference
    from ..models import load_graph as load
    from ..util.fs import atomic_write_bytes, check_output_file
    from ..util.safeio import read_npy

    if args.out:
        check_output_file(args.out, force=True)
    g = load(args.model)
    x = read_npy(args.input, ShapeError, what="input array")
    try:
        y, _ = reference(g, x)
    except EdgeseqError as e:
        e.where = e.where or args.input
        raise
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
