"""Float graph passes run before quantization.

:func:`fold_batchnorm` removes inference-mode BatchNorm nodes by folding their per-channel affine
map ``y = a x + c`` (a = weight / sqrt(var + eps), c = bias - mean * a) into a neighbouring linear
map, exactly (in float64):

- into the **producer** when it is a Linear, a Conv1d, or a scan whose output is a matrix product
  (no activation, not a state; e.g. an LMU with a dense identity hidden cell), and the BatchNorm is
  its only consumer: rows of the weights scale by ``a``, the bias becomes ``a b + c``;
- else into **every consumer** when all of them are linear in that input (Linear; scans whose step
  program reads the input only through matrix products): columns scale by ``a`` and ``W c`` joins the
  bias. (A Conv1d consumer is not folded into: its zero padding is in the normalised domain.)

A scan folded into becomes a generic Scan op carrying the rewritten step program.

A BatchNorm that fits neither stays and is quantized as a per-channel affine op.

:func:`place_scan_points` gives every scan whose step program declares no quantization points (loops
captured from Python) the points :class:`~edgeseq.ir.step.points.PlacePoints` derives.

Contract of :func:`fold_batchnorm`: requires a verified graph; guarantees a verified graph computing the same function up to
float64 rounding, with the same node names (minus folded BatchNorms) and the same state keys of
the remaining nodes.
"""

from __future__ import annotations

import numpy as np

from ..ir import ops as O
from ..ir.cells import has_step_program, step_program
from ..ir.graph import Graph, Node
from ..ir.step.analysis import fold_input, fold_output
from ..ir.step.points import has_points, place_points


def bn_affine(op: O.BatchNorm) -> tuple[np.ndarray, np.ndarray]:
    var = np.asarray(op.var, np.float64)
    a = 1.0 / np.sqrt(var + op.eps)
    if op.weight is not None:
        a = a * np.asarray(op.weight, np.float64)
    c = -np.asarray(op.mean, np.float64) * a
    if op.bias is not None:
        c = c + np.asarray(op.bias, np.float64)
    return a, c


def _f(a):
    return None if a is None else np.asarray(a, np.float64)


def _scan_fold(graph: Graph, node: Node, fold, a, c) -> O.Op | None:
    if not has_step_program(node.op):
        return None
    prog = fold(step_program(node.op, graph.type_of(node.inputs[0]).features), a, c)
    return None if prog is None else O.Scan(program=prog)


def _fold_into_producer(graph: Graph, node: Node, a, c) -> O.Op | None:
    op = node.op
    if isinstance(op, O.Linear):
        b = _f(op.bias) if op.bias is not None else np.zeros(op.weight.shape[0])
        return op.replace(weight=a[:, None] * _f(op.weight), bias=a * b + c)
    if isinstance(op, O.Conv1d):
        b = _f(op.bias) if op.bias is not None else np.zeros(op.weight.shape[0])
        return op.replace(weight=a[:, None, None] * _f(op.weight), bias=a * b + c)
    return _scan_fold(graph, node, fold_output, a, c)


def _fold_into_consumer(graph: Graph, node: Node, a, c) -> O.Op | None:
    op = node.op
    if isinstance(op, O.Linear):
        w = _f(op.weight)
        b = np.zeros(w.shape[0]) if op.bias is None else _f(op.bias)
        return op.replace(weight=w * a[None, :], bias=b + w @ c)
    return _scan_fold(graph, node, fold_input, a, c)


def fold_batchnorm(graph: Graph) -> Graph:
    """Fold every BatchNorm that can be folded exactly (see the module docstring)."""
    nodes = list(graph.nodes)
    changed = True
    while changed:
        changed = False
        g = graph.with_nodes(nodes)
        producers = g.producers()
        consumers = g.consumers()
        for k, node in enumerate(nodes):
            if not isinstance(node.op, O.BatchNorm):
                continue
            a, c = bn_affine(node.op)
            src, dst = node.inputs[0], node.outputs[0]
            if dst in g.outputs:
                continue
            prod = producers.get(src)
            if (
                prod is not None
                and len(prod.outputs) == 1
                and src not in g.outputs
                and len(consumers.get(src, [])) == 1
            ):
                new_op = _fold_into_producer(g, prod, a, c)
                if new_op is not None:
                    new_op.check()
                    nodes = [
                        Node(n.name, new_op, n.inputs, n.outputs) if n is prod else n for n in nodes if n is not node
                    ]
                    nodes = [
                        Node(n.name, n.op, tuple(src if i == dst else i for i in n.inputs), n.outputs) for n in nodes
                    ]
                    changed = True
                    break
            cons = consumers.get(dst, [])
            if cons and all(sum(i == dst for i in n.inputs) == 1 for n in cons):
                folded = {n.name: _fold_into_consumer(g, n, a, c) for n in cons}
                if all(v is not None for v in folded.values()):
                    out = []
                    for n in nodes:
                        if n is node:
                            continue
                        op = folded.get(n.name, n.op)
                        out.append(Node(n.name, op, tuple(src if i == dst else i for i in n.inputs), n.outputs))
                    nodes = out
                    changed = True
                    break
    return graph.with_nodes(nodes)


def place_scan_points(graph: Graph) -> Graph:
    """Every scan without quantization points gets them (same function, same names and states)."""
    nodes = []
    for n in graph.nodes:
        if has_step_program(n.op):
            prog = step_program(n.op, graph.type_of(n.inputs[0]).features)
            if not has_points(prog):
                n = Node(n.name, O.Scan(program=place_points(prog)), n.inputs, n.outputs)
        nodes.append(n)
    return graph.with_nodes(nodes)
