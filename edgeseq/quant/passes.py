"""Float graph passes run before quantization.

:func:`fold_batchnorm` removes inference-mode BatchNorm nodes by folding their per-channel affine
map ``y = a x + c`` (a = weight / sqrt(var + eps), c = bias - mean * a) into a neighbouring linear
map, exactly (in float64):

- into the **producer** when it is a Linear, a Conv1d, or an LMU with identity activation and no
  hidden state, and the BatchNorm is its only consumer: rows of the weights scale by ``a``, the bias
  becomes ``a b + c``;
- else into **every consumer** when all of them are linear in that input (Linear, RNN / GRU / LSTM /
  minGRU / minLSTM input weights, LMU ``e_x`` / ``w_x``): columns scale by ``a`` and ``W c`` joins the
  bias. (A Conv1d consumer is not folded into: its zero padding is in the normalised domain.)

A BatchNorm that fits neither stays and is quantized as a per-channel affine op.
Contract: requires a verified graph; guarantees a verified graph computing the same function up to
float64 rounding, with the same node names (minus folded BatchNorms) and the same state keys of
the remaining nodes.
"""

from __future__ import annotations

import numpy as np

from ..ir import ops as O
from ..ir.graph import Graph, Node
from ..ir.types import Act


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


def _fold_into_producer(op: O.Op, a, c) -> O.Op | None:
    if isinstance(op, O.Linear):
        b = _f(op.bias) if op.bias is not None else np.zeros(op.weight.shape[0])
        return op.replace(weight=a[:, None] * _f(op.weight), bias=a * b + c)
    if isinstance(op, O.Conv1d):
        b = _f(op.bias) if op.bias is not None else np.zeros(op.weight.shape[0])
        return op.replace(weight=a[:, None, None] * _f(op.weight), bias=a * b + c)
    if isinstance(op, O.LMU) and op.has_hidden and op.act is Act.IDENTITY and op.w_h is None and op.e_h is None:
        b = _f(op.b_h) if op.b_h is not None else np.zeros(op.hidden_size)
        return op.replace(w_m=a[:, None] * _f(op.w_m),
                          w_x=None if op.w_x is None else a[:, None] * _f(op.w_x), b_h=a * b + c)
    return None


def _absorb_cols(w, b, a, c, rows: int):
    w = _f(w)
    b = np.zeros(rows) if b is None else _f(b)
    return w * a[None, :], b + w @ c


def _fold_into_consumer(op: O.Op, a, c) -> O.Op | None:
    if isinstance(op, O.Linear):
        w, b = _absorb_cols(op.weight, op.bias, a, c, op.weight.shape[0])
        return op.replace(weight=w, bias=b)
    if isinstance(op, (O.RNN, O.GRU, O.LSTM)):
        w, b = _absorb_cols(op.w_ih, op.b_ih, a, c, op.w_ih.shape[0])
        return op.replace(w_ih=w, b_ih=b)
    if isinstance(op, O.MinGRU):
        wz, bz = _absorb_cols(op.w_z, op.b_z, a, c, op.w_z.shape[0])
        wh, bh = _absorb_cols(op.w_h, op.b_h, a, c, op.w_h.shape[0])
        return op.replace(w_z=wz, b_z=bz, w_h=wh, b_h=bh)
    if isinstance(op, O.MinLSTM):
        ch = {}
        for g in ("f", "i", "h"):
            w, b = _absorb_cols(getattr(op, f"w_{g}"), getattr(op, f"b_{g}"), a, c, op.w_f.shape[0])
            ch[f"w_{g}"], ch[f"b_{g}"] = w, b
        return op.replace(**ch)
    if isinstance(op, O.LMU):
        ex, bu = _absorb_cols(op.e_x, op.b_u, a, c, op.memory_d)
        ch = {"e_x": ex, "b_u": bu}
        if op.w_x is not None:
            ch["w_x"], ch["b_h"] = _absorb_cols(op.w_x, op.b_h, a, c, op.hidden_size)
        return op.replace(**ch)
    return None


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
            if (prod is not None and len(prod.outputs) == 1 and src not in g.outputs
                    and len(consumers.get(src, [])) == 1):
                new_op = _fold_into_producer(prod.op, a, c)
                if new_op is not None:
                    new_op.check()
                    nodes = [Node(n.name, new_op, n.inputs, n.outputs) if n is prod else n
                             for n in nodes if n is not node]
                    nodes = [Node(n.name, n.op, tuple(src if i == dst else i for i in n.inputs), n.outputs)
                             for n in nodes]
                    changed = True
                    break
            cons = consumers.get(dst, [])
            if cons and all(sum(i == dst for i in n.inputs) == 1 for n in cons):
                folded = {n.name: _fold_into_consumer(n.op, a, c) for n in cons}
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
