"""The schedule of a window graph, the one pass every step-by-step backend renders it with.

A window graph (:attr:`Graph.is_window`) runs on whole windows. Its per-step nodes, cut at the
window nodes (``Reverse``, ``Lookahead``), form *segments*: each segment runs over every step of the
window (its nodes in graph order, each from its zero state) before the window nodes after it map
whole sequences, then the next segment runs; the pooled nodes run once at the end. This is exactly
the layered execution of :func:`edgeseq.ir.interpret.run` (every node over the whole window), with the
nodes between two window nodes fused into one pass over time. :func:`window_stages` says what a
backend holds over the window and when:

- ``buffers``: every value held as a sequence (T x features): the input, the temporal values a
  segment makes that a later stage or a temporal output reads, and the window nodes' outputs;
- ``stages``: :class:`Segment` (nodes, the buffers they read at step t, the ones they write at step t)
  and window nodes (buffer -> buffer), in order.

:func:`schedule` is this pass over any sequence of per-step items.

The integer programs of quantized window graphs have the same shape
(:func:`edgeseq.quant.window.window_plan`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from .graph import Graph


@dataclass(frozen=True)
class Segment:
    """Per-step items (graph nodes, or micro-ops) run over the window; ``reads`` / ``writes``: the
    buffers read / written at step t."""

    items: tuple
    reads: tuple[str, ...]
    writes: tuple[str, ...]


@dataclass(frozen=True)
class WindowStages:
    stages: tuple  # Segment | a window item (node or micro-op), in order
    buffers: tuple[str, ...]  # values held over the window, in the order they are first made

    def segments(self) -> list[Segment]:
        return [s for s in self.stages if isinstance(s, Segment)]


def cut(items: Sequence, is_window: Callable[[Any], bool]) -> list[tuple[tuple, tuple]]:
    """``items`` cut at the window items: [(per-step items of a segment, window items after it)]; one
    segment and no window items when there is none."""
    groups: list[tuple[list, list]] = [([], [])]
    for it in items:
        if is_window(it):
            groups[-1][1].append(it)
            continue
        if groups[-1][1]:
            groups.append(([], []))
        groups[-1][0].append(it)
    return [(tuple(a), tuple(b)) for a, b in groups]


def schedule(
    items: Sequence,
    *,
    is_window: Callable[[Any], bool],
    reads: Callable[[Any], Iterable[str]],
    makes: Callable[[Any], Iterable[str]],
    first: Sequence[str],
    needed: Iterable[str],
) -> WindowStages:
    """Segments and window items of the per-step ``items`` (in order), and the buffers: ``first``
    (the input), every value a segment makes (``makes``) that a later stage reads (``reads``) or that
    is ``needed`` as a sequence (temporal outputs), and every window item's output. The one
    definition of the window schedule, for graphs (:func:`window_stages`) and integer programs
    (:func:`edgeseq.quant.window.window_plan`)."""
    groups = cut(items, is_window)
    want = set(needed)
    reads_of = []
    for seg, wins in groups:
        own = {v for it in seg for v in makes(it)}
        rd = list(dict.fromkeys(r for it in seg for r in reads(it) if r not in own))
        reads_of.append(rd)
        want.update(rd)
        want.update(r for w in wins for r in reads(w))
    stages: list = []
    buffers = list(first)
    for (seg, wins), rd in zip(groups, reads_of):
        writes = [v for it in seg for v in makes(it) if v in want]
        if seg:
            stages.append(Segment(tuple(seg), tuple(rd), tuple(writes)))
        buffers += writes
        for w in wins:
            stages.append(w)
            buffers += list(makes(w))
    return WindowStages(tuple(stages), tuple(dict.fromkeys(buffers)))


def window_stages(graph: Graph) -> WindowStages:
    """The segments (of nodes), window nodes and sequence buffers of ``graph`` (see the module
    docstring); the pooled nodes run after the window."""
    types = graph.value_types
    return schedule(
        [n for n in graph.nodes if all(types[i].temporal for i in n.inputs)],
        is_window=lambda n: n.op.category == "window",
        reads=lambda n: n.inputs,
        makes=lambda n: [o for o in n.outputs if types[o].temporal],
        first=[graph.inputs[0].name],
        needed=[o for o in graph.outputs if types[o].temporal],
    )
