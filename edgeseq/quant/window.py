"""The schedule of a window program, the one pass every integer backend renders.

A window program (:attr:`Program.is_window`) runs on a whole window: its step micro-ops, cut at the
window micro-ops (``reverse``, ``lookahead``), form *segments*; each segment runs over every step
before the window micro-ops after it map whole sequences (see ``edgeseq/quant/README.md``, "Window
programs"). :func:`window_plan` says what a backend has to hold over the window and when:

- ``buffers``: every vector held as a sequence (T x n values in its storage type): the quantized
  input, the vectors a segment makes that a later stage, the final program or a temporal output reads,
  and the window micro-ops' outputs;
- ``stages``: :class:`Segment` (per-step micro-ops, the buffers they read at step t and the ones they
  write at step t) and window micro-ops (buffer -> buffer), in order.

A backend renders a segment with its ordinary per-step code (its reads loaded from the buffers' row
t, its writes stored to row t) and a window micro-op as a copy over the window (an index flip, a
shift with zero fill). The program's states all belong to one segment each (``Program.verify``), and
``final`` runs after the last stage on the states as they are then.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnsupportedOpError
from .program import Load, MicroOp, Program, Store, segments


@dataclass(frozen=True)
class Segment:
    """Per-step micro-ops run over the window; ``reads`` / ``writes``: buffers read / written at step t."""

    ops: tuple[MicroOp, ...]
    reads: tuple[str, ...]
    writes: tuple[str, ...]


@dataclass(frozen=True)
class WindowPlan:
    stages: tuple  # Segment | window micro-op, in order
    buffers: tuple[str, ...]  # vectors held over the window, in the order they are first made

    def segments(self) -> list[Segment]:
        return [s for s in self.stages if isinstance(s, Segment)]


def window_plan(prog: Program) -> WindowPlan:
    """The stages and sequence buffers of the window program ``prog`` (see the module docstring)."""
    if not prog.is_window:
        raise UnsupportedOpError("window_plan needs a window program (one with window micro-ops)")
    cut = segments(prog.step)
    made_in: dict[str, int] = {s.vec: -1 for s in prog.inputs}  # vector -> stage index that makes it
    wins: dict[str, int] = {}
    for k, (ops, win) in enumerate(cut):
        for op in ops:
            if not isinstance(op, Store):
                made_in[op.out] = k
        for op in win:
            wins[op.out] = k
    needed: set[str] = {o.vec for o in prog.outputs if o.temporal}
    reads_of: list[list[str]] = []
    for k, (ops, win) in enumerate(cut):
        own = {op.out for op in ops if not isinstance(op, Store)}
        rd: list[str] = []
        for op in ops:
            if isinstance(op, Load):
                continue
            for r in op.reads():
                if r in prog.consts or r in own:
                    continue
                if r not in rd:
                    rd.append(r)
        reads_of.append(rd)
        needed.update(rd)
        needed.update(op.x for op in win)
    for op in prog.final:
        for r in op.reads():
            if r in made_in or r in wins:
                raise UnsupportedOpError(
                    f"the final program reads the step vector '{r}'; a window program's final program reads states only",
                    where=f"node '{op.node}'",
                )
    stages: list = []
    buffers: list[str] = [s.vec for s in prog.inputs]
    for k, (ops, win) in enumerate(cut):
        writes = [op.out for op in ops if not isinstance(op, Store) and op.out in needed]
        if ops:
            stages.append(Segment(tuple(ops), tuple(reads_of[k]), tuple(writes)))
        buffers += writes
        for op in win:
            stages.append(op)
            buffers.append(op.out)
    return WindowPlan(tuple(stages), tuple(dict.fromkeys(buffers)))
