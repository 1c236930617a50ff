"""Kernel generators for the feed-forward IR ops (Linear, Conv1d, LayerNorm, BatchNorm, Activation,
Add, Concat) and the streaming Readout.

A temporal value is a (B, T, F) buffer, a pooled value (after a Readout) a (B, F) buffer; both
run through the same generators with ``lead`` = ("B", "T") or ("B",). Weights arrive
pre-transposed (in, out) so every product is a register-blocked, vectorised loop over the output
features (:meth:`Kernel.matvec`), with ``row_block`` sequence steps sharing each weight load in
the whole-sequence projections.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Sequence

from ...ir.types import Act, ReadoutMode
from .emit import Dim, Kernel, Schedule, f32
from .numerics import act

TEMPORAL: tuple[Dim, ...] = ("B", "T")
POOLED: tuple[Dim, ...] = ("B",)


def _rows(lead: Sequence[Dim]) -> str:
    return " * ".join("TT" if d == "T" else str(d) for d in lead)


def linear(name: str, n_in: int, n_out: int, lead: Sequence[Dim], sched: Schedule, bias: bool = True) -> Kernel:
    """Y = X @ Wt + bias over every row (every step of every sequence): the hoisted input
    projection of the recurrent cells and the Linear op. Params: X, Wt (n_in, n_out), [bias], Y."""
    k = Kernel(name, sched)
    k.input("X", (*lead, n_in))
    k.input("Wt", (n_in, n_out))
    if bias:
        k.input("bias", (n_out,))
    k.output("Y", (*lead, n_out))
    xf, yf = k.flat("Xf", "X"), k.flat("Yf", "Y")
    rows = _rows(lead)
    rb, cb = sched.row_block, sched.col_block
    init = (lambda j: f"bias[{j}]") if bias else (lambda j: f32(0.0))

    # row-blocked main part: rb rows x col_block outputs of accumulators (one local buffer per
    # row, small enough to stay an alloca that LLVM keeps in registers)
    if rb > 1:
        accs = [k.scratch(f"accr{i}", cb) for i in range(rb)]
        with k.loop("r0", f"{rows} // {rb}"):
            full, rem = divmod(n_out, cb)
            for base, width in ([("jb * %d" % cb, cb)] if full else []) + ([(str(full * cb), rem)] if rem else []):
                ctx = k.loop("jb", full) if base.startswith("jb") else nullcontext()
                with ctx:
                    for i, acc in enumerate(accs):
                        with k.loop("ja", width, "vectorized"):
                            k.line(f"{acc}[ja] = {init(f'{base} + ja')}")
                    with k.loop("kk", n_in):
                        for i, acc in enumerate(accs):
                            with k.loop("jc", width, "vectorized"):
                                k.line(f"{acc}[jc] = {acc}[jc] + {xf}[r0 * {rb} + {i}, kk] * Wt[kk, {base} + jc]")
                    for i, acc in enumerate(accs):
                        with k.loop("jd", width, "vectorized"):
                            k.line(f"{yf}[r0 * {rb} + {i}, {base} + jd] = {acc}[jd]")
        tail_start, tail_n = f"{rows} // {rb} * {rb}", f"{rows} - {rows} // {rb} * {rb}"
    else:
        tail_start, tail_n = "0", rows
    with k.loop("r1", tail_n):
        k.matvec(
            n_out=n_out,
            terms=[(n_in, lambda kk, j: f"Wt[{kk}, {j}]", lambda kk: f"{xf}[{tail_start} + r1, {kk}]")],
            init=init,
            store=lambda j, v: [f"{yf}[{tail_start} + r1, {j}] = {v}"],
        )
    return k


def conv1d(
    name: str, n_in: int, n_out: int, ksize: int, dilation: int, groups: int, sched: Schedule, bias: bool = True
) -> Kernel:
    """Causal Conv1d with its streaming state (the last (K-1)*dilation inputs, oldest first).

    Params: X (B,T,I), Wt (K*Cg, O) with row k*Cg + c, [bias], BUF (B,hist,I) -> Y (B,T,O), BUFO.
    Tap k of step t reads the input of step t - (K-1-k)*dilation: from X, or from BUF when that
    step precedes the chunk."""
    hist = (ksize - 1) * dilation
    cg, og = n_in // groups, n_out // groups
    k = Kernel(name, sched)
    k.input("X", ("B", "T", n_in))
    k.input("Wt", (ksize * cg, n_out))
    if bias:
        k.input("bias", (n_out,))
    if hist:
        k.input("BUF", ("B", hist, n_in))
    k.output("Y", ("B", "T", n_out))
    if hist:
        k.output("BUFO", ("B", hist, n_in))
    win = k.scratch("win", groups * ksize * cg)  # grouped window: [g][k][c]
    with k.loop("b", "B"):
        with k.loop("t", "TT"):
            for tap in range(ksize):
                shift = (ksize - 1 - tap) * dilation
                for g in range(groups):
                    dst = g * ksize * cg + tap * cg
                    src_c = g * cg
                    if shift == 0:
                        k.vec(cg, lambda j: [f"{win}[{dst} + {j}] = X[b, t, {src_c} + {j}]"])
                        continue
                    with k.block(f"if t >= {shift}:"):
                        k.vec(cg, lambda j: [f"{win}[{dst} + {j}] = X[b, t - {shift}, {src_c} + {j}]"])
                    with k.block("else:"):
                        k.vec(cg, lambda j: [f"{win}[{dst} + {j}] = BUF[b, t + {hist - shift}, {src_c} + {j}]"])
            for g in range(groups):
                base_in, base_out = g * ksize * cg, g * og
                init = (lambda j, bo=base_out: f"bias[{bo} + {j}]") if bias else None
                k.matvec(
                    n_out=og,
                    terms=[
                        (
                            ksize * cg,
                            lambda kk, j, bo=base_out: f"Wt[{kk}, {bo} + {j}]",
                            lambda kk, bi=base_in: f"{win}[{bi} + {kk}]",
                        )
                    ],
                    init=init,
                    store=lambda j, v, bo=base_out: [f"Y[b, t, {bo} + {j}] = {v}"],
                )
        if hist:
            with k.loop("i", hist):
                with k.block(f"if TT + i < {hist}:"):
                    k.vec(n_in, lambda j: [f"BUFO[b, i, {j}] = BUF[b, TT + i, {j}]"])
                with k.block("else:"):
                    k.vec(n_in, lambda j: [f"BUFO[b, i, {j}] = X[b, TT + i - {hist}, {j}]"])
    return k


def scale_shift(name: str, n: int, lead: Sequence[Dim], sched: Schedule) -> Kernel:
    """Y = X * scale + shift per feature (inference BatchNorm, folded in float64 at lowering)."""
    k = Kernel(name, sched)
    k.input("X", (*lead, n))
    k.input("SS", (2, n))
    k.output("Y", (*lead, n))
    xf, yf = k.flat("Xf", "X"), k.flat("Yf", "Y")
    with k.loop("r", _rows(lead)):
        k.vec(n, lambda j: [f"{yf}[r, {j}] = {xf}[r, {j}] * SS[0, {j}] + SS[1, {j}]"])
    return k


def layernorm(
    name: str, n: int, lead: Sequence[Dim], eps: float, affine_w: bool, affine_b: bool, sched: Schedule
) -> Kernel:
    """Y = (X - mean) / sqrt(var + eps) [* w] [+ b] over the feature axis, two-pass statistics."""
    k = Kernel(name, sched)
    k.input("X", (*lead, n))
    if affine_w:
        k.input("w", (n,))
    if affine_b:
        k.input("bb", (n,))
    k.output("Y", (*lead, n))
    xf, yf = k.flat("Xf", "X"), k.flat("Yf", "Y")
    s = k.scratch("stat", 3)
    with k.loop("r", _rows(lead)):
        k.line(f"{s}[0] = {f32(0.0)}")
        with k.loop("c", n):
            k.line(f"{s}[0] = {s}[0] + {xf}[r, c]")
        k.line(f"{s}[0] = {s}[0] / {f32(n)}")
        k.line(f"{s}[1] = {f32(0.0)}")
        with k.loop("c", n):
            k.line(f"{s}[1] = {s}[1] + ({xf}[r, c] - {s}[0]) * ({xf}[r, c] - {s}[0])")
        k.line(f"{s}[2] = {f32(1.0)} / T.sqrt({s}[1] / {f32(n)} + {f32(eps)})")

        def body(j):
            y = f"({xf}[r, {j}] - {s}[0]) * {s}[2]"
            if affine_w:
                y = f"{y} * w[{j}]"
            if affine_b:
                y = f"{y} + bb[{j}]"
            return [f"{yf}[r, {j}] = {y}"]

        k.vec(n, body)
    return k


def activation(
    name: str, n: int, lead: Sequence[Dim], fn: Act, slope: float, lo: float, hi: float, sched: Schedule
) -> Kernel:
    k = Kernel(name, sched)
    k.input("X", (*lead, n))
    k.output("Y", (*lead, n))
    xf, yf = k.flat("Xf", "X"), k.flat("Yf", "Y")
    with k.loop("r", _rows(lead)):
        k.vec(n, lambda j: [f"{yf}[r, {j}] = {act(fn, f'{xf}[r, {j}]', slope, lo, hi)}"])
    return k


def add(name: str, n: int, lead: Sequence[Dim], sched: Schedule) -> Kernel:
    k = Kernel(name, sched)
    k.input("X0", (*lead, n))
    k.input("X1", (*lead, n))
    k.output("Y", (*lead, n))
    a, b, y = k.flat("Af", "X0"), k.flat("Bf", "X1"), k.flat("Yf", "Y")
    with k.loop("r", _rows(lead)):
        k.vec(n, lambda j: [f"{y}[r, {j}] = {a}[r, {j}] + {b}[r, {j}]"])
    return k


def concat(name: str, sizes: Sequence[int], lead: Sequence[Dim], sched: Schedule) -> Kernel:
    k = Kernel(name, sched)
    for i, n in enumerate(sizes):
        k.input(f"X{i}", (*lead, n))
    k.output("Y", (*lead, sum(sizes)))
    flats = [k.flat(f"F{i}", f"X{i}") for i in range(len(sizes))]
    y = k.flat("Yf", "Y")
    with k.loop("r", _rows(lead)):
        off = 0
        for f, n in zip(flats, sizes):
            k.vec(n, lambda j, f=f, off=off: [f"{y}[r, {off} + {j}] = {f}[r, {j}]"])
            off += n
    return k


def readout(name: str, n: int, mode: ReadoutMode, sched: Schedule) -> Kernel:
    """Streaming readout over a chunk. LAST: (X, LAST) -> LASTO = X[:, T-1]. SUM: (X, SUM) -> SUMO.
    MEAN: (X, SUM, CNT) -> SUMO, CNTO, VAL = SUMO / max(CNTO, 1). Sums run step by step in
    order, so a chunked run accumulates exactly as a whole one."""
    k = Kernel(name, sched)
    k.input("X", ("B", "T", n))
    if mode is ReadoutMode.LAST:
        k.input("LAST", ("B", n))
        k.output("LASTO", ("B", n))
        with k.loop("b", "B"):
            k.vec(n, lambda j: [f"LASTO[b, {j}] = X[b, TT - 1, {j}]"])
        return k
    k.input("SUM", ("B", n))
    if mode is ReadoutMode.MEAN:
        k.input("CNT", ("B", 1))
    k.output("SUMO", ("B", n))
    if mode is ReadoutMode.MEAN:
        k.output("CNTO", ("B", 1))
        k.output("VAL", ("B", n))
    with k.loop("b", "B"):
        k.vec(n, lambda j: [f"SUMO[b, {j}] = SUM[b, {j}]"])
        with k.loop("t", "TT"):
            k.vec(n, lambda j: [f"SUMO[b, {j}] = SUMO[b, {j}] + X[b, t, {j}]"])
        if mode is ReadoutMode.MEAN:
            k.line('CNTO[b, 0] = CNT[b, 0] + T.Cast("float32", TT)')
            k.vec(n, lambda j: [f"VAL[b, {j}] = SUMO[b, {j}] / T.max(CNTO[b, 0], {f32(1.0)})"])
    return k
