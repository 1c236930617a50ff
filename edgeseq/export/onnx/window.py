"""ONNX lowerings of the window ops (:mod:`edgeseq.ir.ops` ``Reverse``, ``Lookahead``): whole-window
tensor ops on (B, T, F); the equations are the interpreter's (:data:`edgeseq.ir.interpret.WINDOW`).
A window graph lowers whole-window only (``streaming=True`` is refused by :func:`.lower.build_onnx`)."""

from __future__ import annotations

import numpy as np

from ...ir.graph import Node
from .lower import INT64_MAX, _Ctx, _lower


@_lower("Reverse")
def _reverse(c: _Ctx, n: Node) -> None:
    e = c.e
    e.op(
        "Slice",
        n.inputs[0],
        e.ints([-1], "minus_one"),
        e.ints([np.iinfo(np.int64).min], "int64_min"),
        e.ints([1], "time_axis"),
        e.ints([-1], "minus_one"),
        outputs=[n.outputs[0]],
    )


@_lower("Lookahead")
def _lookahead(c: _Ctx, n: Node) -> None:
    e, s = c.e, int(n.op.steps)
    padded = e.op("Pad", n.inputs[0], e.ints([0, 0, 0, 0, s, 0], f"{n.name}/pads"), hint=f"{n.name}/padded")
    e.op(
        "Slice",
        padded,
        e.ints([s], f"{n.name}/start"),
        e.ints([INT64_MAX], "int64_max"),
        e.ints([1], "time_axis"),
        outputs=[n.outputs[0]],
    )
