"""TVM kernels of the window ops (``Reverse``, ``Lookahead``; their equations are the reference
interpreter's, :data:`edgeseq.ir.interpret.WINDOW`): whole-sequence copies (B, T, n) -> (B, T, n).

The "main" function runs every node over the whole sequence, node after node, so a window graph
needs nothing else there; its "stream" function is refused (:func:`edgeseq.export.tvm.compile_tvm`)."""

from __future__ import annotations

from ...ir import ops as O
from .emit import Kernel, Schedule, f32
from .plan import Call


def reverse(name: str, n: int, sched: Schedule) -> Kernel:
    """Y[b, t] = X[b, T-1-t]."""
    k = Kernel(name, sched)
    k.input("X", ("B", "T", n))
    k.output("Y", ("B", "T", n))
    with k.loop("b", "B"):
        with k.loop("t", "TT"):
            k.vec(n, lambda j: [f"Y[b, t, {j}] = X[b, TT - 1 - t, {j}]"])
    return k


def lookahead(name: str, n: int, steps: int, sched: Schedule) -> Kernel:
    """Y[b, t] = X[b, t + steps] while t + steps < T, else 0."""
    k = Kernel(name, sched)
    k.input("X", ("B", "T", n))
    k.output("Y", ("B", "T", n))
    with k.loop("b", "B"):
        with k.loop("t", "TT"):
            k.vec(
                n,
                lambda j: [
                    f"Y[b, t, {j}] = T.if_then_else(t + {steps} < TT, "
                    f"X[b, T.min(t + {steps}, TT - 1), {j}], {f32(0.0)})"
                ],
            )
    return k


def _reverse(node, ins, sched):
    n = ins[0].features
    return [Call(reverse(f"reverse_n{n}", n, sched), ins={"X": "in0"}, outs={"Y": "out0"})]


def _lookahead(node, ins, sched):
    op: O.Lookahead = node.op
    n = ins[0].features
    k = lookahead(f"lookahead_s{op.steps}_n{n}", n, int(op.steps), sched)
    return [Call(k, ins={"X": "in0"}, outs={"Y": "out0"})]


#: op kind -> lowering rule (merged into :data:`.rules.RULES`)
WINDOW_RULES = {"Reverse": _reverse, "Lookahead": _lookahead}
