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

The integer programs of quantized window graphs have the same shape
(:func:`edgeseq.quant.window.window_plan`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .graph import Graph, Node


@dataclass(frozen=True)
class Segment:
    """Per-step nodes run over the window; ``reads`` / ``writes``: buffers read / written at step t."""

    nodes: tuple[Node, ...]
    reads: tuple[str, ...]
    writes: tuple[str, ...]


@dataclass(frozen=True)
class WindowStages:
    stages: tuple  # Segment | Node (a window node), in order
    buffers: tuple[str, ...]  # values held over the window, in the order they are first made


def window_stages(graph: Graph) -> WindowStages:
    """The segments, window nodes and sequence buffers of ``graph`` (see the module docstring)."""
    types = graph.value_types
    groups: list[tuple[list[Node], list[Node]]] = [([], [])]
    for n in graph.nodes:
        if not all(types[i].temporal for i in n.inputs):
            continue  # pooled: once, after the window
        if n.op.category == "window":
            groups[-1][1].append(n)
            continue
        if groups[-1][1]:
            groups.append(([], []))
        groups[-1][0].append(n)
    needed = {o for o in graph.outputs if types[o].temporal}
    reads_of = []
    for nodes, wins in groups:
        own = {o for n in nodes for o in n.outputs}
        rd = list(dict.fromkeys(i for n in nodes for i in n.inputs if i not in own))
        reads_of.append(rd)
        needed.update(rd)
        needed.update(w.inputs[0] for w in wins)
    stages: list = []
    buffers = [graph.inputs[0].name]
    for (nodes, wins), rd in zip(groups, reads_of):
        writes = [o for n in nodes for o in n.outputs if o in needed and types[o].temporal]
        if nodes:
            stages.append(Segment(tuple(nodes), tuple(rd), tuple(writes)))
        buffers += writes
        for w in wins:
            stages.append(w)
            buffers.append(w.outputs[0])
    return WindowStages(tuple(stages), tuple(dict.fromkeys(buffers)))
