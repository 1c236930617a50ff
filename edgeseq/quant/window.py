"""The schedule of a window program, the one pass every integer backend renders.

A window program (:attr:`Program.is_window`) runs on a whole window: its step micro-ops, cut at the
window micro-ops (``reverse``, ``lookahead``), form *segments*; each segment runs over every step
before the window micro-ops after it map whole sequences (see ``edgeseq/quant/README.md``, "Window
programs"). :func:`window_plan` says what a backend has to hold over the window and when:

- ``buffers``: every vector held as a sequence (T x n values in its storage type): the quantized
  input, the vectors a segment makes that a later stage or a temporal output reads, and the window
  micro-ops' outputs;
- ``stages``: :class:`Segment` (per-step micro-ops, the buffers they read at step t and the ones they
  write at step t) and window micro-ops (buffer -> buffer), in order.

A backend renders a segment with its ordinary per-step code (its reads loaded from the buffers' row
t, its writes stored to row t) and a window micro-op as a copy over the window (an index flip, a
shift with zero fill). The program's states all belong to one segment each (``Program.verify``), and
``final`` runs after the last stage on the states as they are then.
"""

from __future__ import annotations

from ..errors import UnsupportedOpError
from ..ir.window import Segment, WindowStages, schedule
from .program import Program, Store

__all__ = ["Segment", "WindowStages", "window_plan"]


def window_plan(prog: Program) -> WindowStages:
    """The stages (segments of step micro-ops, window micro-ops) and sequence buffers of the window
    program ``prog`` (see the module docstring): :func:`edgeseq.ir.window.schedule` over its step."""
    if not prog.is_window:
        raise UnsupportedOpError("window_plan needs a window program (one with window micro-ops)")
    made = {s.vec for s in prog.inputs} | {op.out for op in prog.step if not isinstance(op, Store)}
    for op in prog.final:
        for r in op.reads():
            if r in made:
                raise UnsupportedOpError(
                    f"the final program reads the step vector '{r}'; a window program's final program reads states only",
                    where=f"node '{op.node}'",
                )
    return schedule(
        prog.step,
        is_window=lambda op: op.window,
        reads=lambda op: [r for r in op.reads() if r not in prog.consts],
        makes=lambda op: [] if isinstance(op, Store) else [op.out],
        first=[s.vec for s in prog.inputs],
        needed=[o.vec for o in prog.outputs if o.temporal],
    )
