"""TVM kernels of the window ops (their equations are the reference interpreter's,
:data:`edgeseq.ir.interpret.WINDOW`): ``Reverse`` and ``Lookahead`` are whole-sequence copies (B, T, n)
-> (B, T, n); ``SelfAttention`` is two whole-window kernels (softmax weights (B, H, T, T), then the
weighted sums of the values).

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


def attention_weights(name: str, e: int, heads: int, sched: Schedule) -> Kernel:
    """W[b, h, t, u] = softmax_u(q_t^h . k_u^h / sqrt(d)) of packed rows X[b, t] = [q, k, v] (3e)."""
    d = e // heads
    k = Kernel(name, sched)
    k.input("X", ("B", "T", 3 * e))
    k.output("W", ("B", heads, "T", "T"))
    s = k.scratch("stat", 2)
    with k.loop("b", "B"), k.loop("h", heads), k.loop("t", "TT"):
        with k.loop("u", "TT"):
            k.line(f"W[b, h, t, u] = {f32(0.0)}")
            with k.loop("j", d):
                k.line(f"W[b, h, t, u] = W[b, h, t, u] + X[b, t, h * {d} + j] * X[b, u, {e} + h * {d} + j]")
            k.line(f"W[b, h, t, u] = W[b, h, t, u] * {f32(1.0 / d**0.5)}")
        k.line(f"{s}[0] = W[b, h, t, 0]")
        with k.loop("u", "TT"):
            k.line(f"{s}[0] = T.max({s}[0], W[b, h, t, u])")
        k.line(f"{s}[1] = {f32(0.0)}")
        with k.loop("u", "TT"):
            k.line(f"W[b, h, t, u] = T.exp(W[b, h, t, u] - {s}[0])")
            k.line(f"{s}[1] = {s}[1] + W[b, h, t, u]")
        with k.loop("u", "TT"):
            k.line(f"W[b, h, t, u] = W[b, h, t, u] / {s}[1]")
    return k


def attention_mix(name: str, e: int, heads: int, sched: Schedule) -> Kernel:
    """Y[b, t, h d + j] = sum_u W[b, h, t, u] v_u^h[j] (v: the last e features of X[b, u])."""
    d = e // heads
    k = Kernel(name, sched)
    k.input("W", ("B", heads, "T", "T"))
    k.input("X", ("B", "T", 3 * e))
    k.output("Y", ("B", "T", e))
    with k.loop("b", "B"), k.loop("t", "TT"), k.loop("h", heads), k.loop("j", d):
        k.line(f"Y[b, t, h * {d} + j] = {f32(0.0)}")
        with k.loop("u", "TT"):
            k.line(f"Y[b, t, h * {d} + j] = Y[b, t, h * {d} + j] + W[b, h, t, u] * X[b, u, {2 * e} + h * {d} + j]")
    return k


def _self_attention(node, ins, sched):
    e, heads = ins[0].features // 3, int(node.op.num_heads)
    w = attention_weights(f"attention_weights_e{e}_h{heads}", e, heads, sched)
    y = attention_mix(f"attention_mix_e{e}_h{heads}", e, heads, sched)
    return [
        Call(w, ins={"X": "in0"}, outs={"W": "tmp:weights"}),
        Call(y, ins={"W": "tmp:weights", "X": "in0"}, outs={"Y": "out0"}),
    ]


def _reverse(node, ins, sched):
    n = ins[0].features
    return [Call(reverse(f"reverse_n{n}", n, sched), ins={"X": "in0"}, outs={"Y": "out0"})]


def _lookahead(node, ins, sched):
    op: O.Lookahead = node.op
    n = ins[0].features
    k = lookahead(f"lookahead_s{op.steps}_n{n}", n, int(op.steps), sched)
    return [Call(k, ins={"X": "in0"}, outs={"Y": "out0"})]


#: op kind -> lowering rule (merged into :data:`.rules.RULES`)
WINDOW_RULES = {"Reverse": _reverse, "Lookahead": _lookahead, "SelfAttention": _self_attention}
