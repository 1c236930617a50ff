"""Per-op lowering rules of the TVM backend: IR node -> list of kernel calls (:class:`.plan.Call`).

``RULES`` maps every supported op kind to its rule: the feed-forward ops here, and every op kind
with a step program to the generic scan renderer (:mod:`.scan`). :func:`plan_node` raises
:class:`~edgeseq.errors.UnsupportedOpError` (naming the node, the op kind and target "tvm") for
anything else, before any compilation starts.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Callable, Sequence

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import ops as O
from ...ir.cells import cell_kinds
from ...ir.graph import Node
from ...ir.types import ReadoutMode, ValueType
from . import ff
from .emit import Schedule
from .plan import Call, f32
from .window import WINDOW_RULES

Rule = Callable[[Node, Sequence[ValueType], Schedule], list]


def _lead(t: ValueType):
    return ff.TEMPORAL if t.temporal else ff.POOLED


def _lt(t: ValueType) -> str:
    return "seq" if t.temporal else "vec"


def _linear(node, ins, sched):
    op: O.Linear = node.op
    n_out, n_in = op.weight.shape
    has_b = op.bias is not None
    k = ff.linear(
        f"linear_{_lt(ins[0])}_i{n_in}_o{n_out}{'_b' if has_b else ''}", n_in, n_out, _lead(ins[0]), sched, bias=has_b
    )
    consts = {"Wt": f32(np.asarray(op.weight, dtype=np.float64).T)}
    if has_b:
        consts["bias"] = f32(op.bias)
    return [Call(k, consts=consts, ins={"X": "in0"}, outs={"Y": "out0"})]


def _conv1d(node, ins, sched):
    op: O.Conv1d = node.op
    n_out, cg, ks = op.weight.shape
    has_b = op.bias is not None
    k = ff.conv1d(
        f"conv1d_i{op.in_features}_o{n_out}_k{ks}_d{op.dilation}_g{op.groups}{'_b' if has_b else ''}",
        op.in_features,
        n_out,
        ks,
        op.dilation,
        op.groups,
        sched,
        bias=has_b,
    )
    w = np.asarray(op.weight, dtype=np.float64)  # (O, Cg, K) -> (K*Cg, O), row k*Cg + c
    consts = {"Wt": f32(w.transpose(2, 1, 0).reshape(ks * cg, n_out))}
    if has_b:
        consts["bias"] = f32(op.bias)
    ins_map = {"X": "in0"}
    outs = {"Y": "out0"}
    if op.history:
        ins_map["BUF"] = "state:buf"
        outs["BUFO"] = "state:buf"
    return [Call(k, consts=consts, ins=ins_map, outs=outs)]


def _batchnorm(node, ins, sched):
    op: O.BatchNorm = node.op
    n = op.mean.shape[0]
    scale = 1.0 / np.sqrt(np.asarray(op.var, dtype=np.float64) + op.eps)
    if op.weight is not None:
        scale = scale * np.asarray(op.weight, dtype=np.float64)
    shift = -np.asarray(op.mean, dtype=np.float64) * scale
    if op.bias is not None:
        shift = shift + np.asarray(op.bias, dtype=np.float64)
    k = ff.scale_shift(f"scale_shift_{_lt(ins[0])}_n{n}", n, _lead(ins[0]), sched)
    return [Call(k, consts={"SS": f32(np.stack([scale, shift]))}, ins={"X": "in0"}, outs={"Y": "out0"})]


def _layernorm(node, ins, sched):
    op: O.LayerNorm = node.op
    n = ins[0].features
    hw, hb = op.weight is not None, op.bias is not None
    k = ff.layernorm(f"layernorm_{_lt(ins[0])}_n{n}_{int(hw)}{int(hb)}", n, _lead(ins[0]), float(op.eps), hw, hb, sched)
    consts = {}
    if hw:
        consts["w"] = f32(op.weight)
    if hb:
        consts["bb"] = f32(op.bias)
    return [Call(k, consts=consts, ins={"X": "in0"}, outs={"Y": "out0"})]


def _activation(node, ins, sched):
    op: O.Activation = node.op
    n = ins[0].features
    k = ff.activation(
        f"act_{op.fn.value}_{_lt(ins[0])}_n{n}",
        n,
        _lead(ins[0]),
        op.fn,
        float(op.slope),
        float(op.lo),
        float(op.hi),
        sched,
    )
    return [Call(k, ins={"X": "in0"}, outs={"Y": "out0"})]


def _add(node, ins, sched):
    n = ins[0].features
    k = ff.add(f"add_{_lt(ins[0])}_n{n}", n, _lead(ins[0]), sched)
    return [Call(k, ins={"X0": "in0", "X1": "in1"}, outs={"Y": "out0"})]


def _concat(node, ins, sched):
    sizes = [t.features for t in ins]
    k = ff.concat(f"concat_{_lt(ins[0])}_" + "_".join(map(str, sizes)), sizes, _lead(ins[0]), sched)
    return [Call(k, ins={f"X{i}": f"in{i}" for i in range(len(sizes))}, outs={"Y": "out0"})]


def _readout(node, ins, sched):
    op: O.Readout = node.op
    n = ins[0].features
    k = ff.readout(f"readout_{op.mode.value}_n{n}", n, op.mode, sched)
    if op.mode is ReadoutMode.LAST:
        return [Call(k, ins={"X": "in0", "LAST": "state:last"}, outs={"LASTO": "state:last|out0"})]
    if op.mode is ReadoutMode.SUM:
        return [Call(k, ins={"X": "in0", "SUM": "state:sum"}, outs={"SUMO": "state:sum|out0"})]
    return [
        Call(
            k,
            ins={"X": "in0", "SUM": "state:sum", "CNT": "state:count"},
            outs={"SUMO": "state:sum", "CNTO": "state:count", "VAL": "out0"},
        )
    ]


def _scan(node, ins, sched):
    from .scan import plan_scan

    return plan_scan(node.op, ins[0].features, sched)


def _scan_kinds() -> set[str]:
    """Op kinds lowered through a step program: the named cells and ops carrying their own."""
    own = {k for k, cls in O.OP_REGISTRY.items() if any(f.metadata.get("kind") == "program" for f in fields(cls))}
    return cell_kinds() | own


RULES: dict[str, Rule] = {
    "Linear": _linear,
    "Conv1d": _conv1d,
    "BatchNorm": _batchnorm,
    "LayerNorm": _layernorm,
    "Activation": _activation,
    "Add": _add,
    "Concat": _concat,
    "Readout": _readout,
    **WINDOW_RULES,
    **{kind: _scan for kind in sorted(_scan_kinds())},
}


def plan_node(node: Node, ins: Sequence[ValueType], sched: Schedule) -> list[Call]:
    """Kernel calls for ``node`` or UnsupportedOpError."""
    kind = node.op.kind
    rule = RULES.get(kind)
    if rule is None:
        raise UnsupportedOpError(
            f"op kind '{kind}' has no TVM lowering",
            where=f"{node.name} ({kind}) [target tvm]",
            hint=f"supported kinds: {', '.join(sorted(RULES))}",
        )
    calls = rule(node, ins, sched)
    for c in calls:
        c.check()
    return calls
