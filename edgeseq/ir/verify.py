"""IR verifier: names, topological order, op parameters, finiteness, types and the state contract.

Runs on every :class:`Graph` construction. Errors name the node and op they concern.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

from ..errors import EdgeseqError, NumericsError, VerificationError
from .ops import OP_REGISTRY
from .types import ValueType

if TYPE_CHECKING:
    from .graph import Graph

_NAME_OK = re.compile(r"^[A-Za-z0-9_.:\-]+$")


def valid_name(name: str) -> bool:
    return bool(_NAME_OK.match(name))


def verify(graph: "Graph") -> dict[str, ValueType]:
    if not graph.inputs:
        raise VerificationError("graph has no inputs")
    types: dict[str, ValueType] = {}
    for inp in graph.inputs:
        if not valid_name(inp.name) or inp.name in types:
            raise VerificationError(f"invalid or duplicate input name '{inp.name}'")
        if int(inp.features) < 1:
            raise VerificationError(f"input '{inp.name}' must have at least one feature")
        types[inp.name] = ValueType(int(inp.features))
    seen_nodes: set[str] = set()
    for node in graph.nodes:
        where = f"node '{node.name}' ({type(node.op).__name__})"
        if not valid_name(node.name) or "/" in node.name:
            raise VerificationError(f"invalid node name '{node.name}' (letters, digits, _ . : - only)")
        if node.name in seen_nodes:
            raise VerificationError(f"duplicate node name '{node.name}'")
        seen_nodes.add(node.name)
        op = node.op
        if OP_REGISTRY.get(op.kind) is not type(op):
            raise VerificationError(f"op {type(op).__name__} is not a registered IR op", where=where)
        n_in = op.n_inputs
        if (n_in is not None and len(node.inputs) != n_in) or (n_in is None and len(node.inputs) < 2):
            raise VerificationError(
                f"expects {n_in if n_in is not None else 'two or more'} inputs, got {len(node.inputs)}",
                where=where,
            )
        for i in node.inputs:
            if i not in types:
                raise VerificationError(
                    f"input '{i}' is not defined before this node (nodes must be in topological order)",
                    where=where,
                )
        for name, a in op.arrays().items():
            if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
                raise NumericsError(f"parameter '{name}' has {bad} NaN/Inf value(s)", where=where)
        try:
            op.check()
            out_types = op.infer([types[i] for i in node.inputs])
            op.state_shapes([types[i] for i in node.inputs])
        except EdgeseqError as e:
            if e.where is None:
                e.where = where
                e.args = (str(e),)
            raise
        if len(out_types) != len(node.outputs):
            raise VerificationError(
                f"op produces {len(out_types)} output(s) but the node names {len(node.outputs)}", where=where
            )
        for o, t in zip(node.outputs, out_types):
            if not valid_name(o) or o in types:
                raise VerificationError(f"invalid or duplicate value name '{o}'", where=where)
            types[o] = t
    if not graph.outputs:
        raise VerificationError("graph has no outputs")
    for o in graph.outputs:
        if o not in types:
            raise VerificationError(f"graph output '{o}' is not produced by any node")
    return types
