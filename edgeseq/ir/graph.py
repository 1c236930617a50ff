"""The IR graph: named inputs, nodes in topological order, named outputs, JSON-able metadata.

Values are named strings. A node's op consumes its ``inputs`` and produces its ``outputs`` (one
name per op output). Streaming state is addressed as ``"<node>/<state>"`` (see
:meth:`Graph.state_spec`); node names therefore may not contain '/'.

Graphs are immutable and verified on construction, so every pass boundary is checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import ConfigError
from .ops import Op
from .types import ValueType
from .verify import verify


@dataclass(frozen=True)
class Input:
    """A graph input: a temporal (B, T, features) float tensor."""

    name: str
    features: int


@dataclass(frozen=True, eq=False)
class Node:
    name: str
    op: Op
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))


@dataclass(frozen=True, eq=False)
class Graph:
    inputs: tuple[Input, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[str, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "metadata", dict(self.metadata))
        object.__setattr__(self, "_types", verify(self))

    # -- structure ------------------------------------------------------------------------------
    @property
    def value_types(self) -> dict[str, ValueType]:
        return dict(self._types)

    def type_of(self, value: str) -> ValueType:
        return self._types[value]

    @property
    def in_features(self) -> int:
        return self.inputs[0].features

    @property
    def output_types(self) -> tuple[ValueType, ...]:
        return tuple(self._types[o] for o in self.outputs)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise ConfigError(f"graph has no node '{name}'; nodes: {', '.join(n.name for n in self.nodes)}")

    def producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                out.setdefault(i, []).append(n)
        return out

    def input_types(self, node: Node) -> list[ValueType]:
        return [self._types[i] for i in node.inputs]

    def num_params(self) -> int:
        return sum(n.op.num_params() for n in self.nodes)

    def param_bytes(self) -> int:
        return sum(a.nbytes for n in self.nodes for a in n.op.arrays().values())

    # -- state ----------------------------------------------------------------------------------
    @cached_property
    def _state_spec(self) -> dict[str, tuple[int, ...]]:
        spec: dict[str, tuple[int, ...]] = {}
        for n in self.nodes:
            for k, shape in n.op.state_shapes(self.input_types(n)).items():
                spec[f"{n.name}/{k}"] = tuple(shape)
        return spec

    def state_spec(self) -> dict[str, tuple[int, ...]]:
        """Per-example shape of every state tensor, keyed '<node>/<state>' (batch axis first at run time)."""
        return dict(self._state_spec)

    def init_state(self, batch: int, dtype=np.float64) -> dict[str, np.ndarray]:
        """The all-zero initial state for ``batch`` sequences."""
        return {k: np.zeros((batch,) + s, dtype=dtype) for k, s in self._state_spec.items()}

    # -- window graphs --------------------------------------------------------------------------
    @property
    def window_nodes(self) -> tuple[Node, ...]:
        """Nodes that read future steps of the window (category 'window'). A graph with any runs on
        whole windows, node by node over the window, and cannot stream."""
        return tuple(n for n in self.nodes if n.op.category == "window")

    @property
    def is_window(self) -> bool:
        return bool(self.window_nodes)

    def require_streaming(self, what: str, hint: str | None = None) -> None:
        """Raise a one-line :class:`UnsupportedOpError` if this is a window graph (``what`` runs graphs
        step by step)."""
        if not self.is_window:
            return
        from ..errors import UnsupportedOpError

        n = self.window_nodes[0]
        why = self.metadata.get("window") or f"node '{n.name}' ({n.op.kind}) reads future steps"
        raise UnsupportedOpError(
            f"{what} needs a streaming graph, and this is a window graph ({why}): it runs on whole windows",
            hint=hint
            or "run or export it on whole windows (any target, without --streaming); or make "
            "the model causal (a unidirectional RNN, left-only padding) to stream it",
        )

    # -- derived graphs -------------------------------------------------------------------------
    def with_nodes(self, nodes: Iterable[Node], outputs: Sequence[str] | None = None, **meta: Any) -> "Graph":
        md = dict(self.metadata)
        md.update(meta)
        return Graph(self.inputs, tuple(nodes), tuple(outputs or self.outputs), md)

    def replace_op(self, name: str, op: Op) -> "Graph":
        return self.with_nodes(Node(n.name, op, n.inputs, n.outputs) if n.name == name else n for n in self.nodes)

    # -- io ---------------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the graph to ``path`` (JSON + arrays in one zip file, no pickle), atomically."""
        from .serialize import save

        save(self, path)

    def summary(self) -> str:
        rows = [("node", "op", "inputs", "output", "params")]
        for n in self.nodes:
            t = self._types[n.outputs[0]]
            rows.append((n.name, n.op.kind, ",".join(n.inputs), t.describe(), str(n.op.num_params())))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"total parameters: {self.num_params()}  state tensors: {len(self._state_spec)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        kinds = ", ".join(n.op.kind for n in self.nodes)
        return f"Graph(in={self.in_features}, nodes=[{kinds}], outputs={list(self.outputs)})"


class GraphBuilder:
    """Incremental construction of a graph with unique, readable node names."""

    def __init__(self, in_features: int, input_name: str = "x"):
        self.inputs = (Input(input_name, int(in_features)),)
        self.nodes: list[Node] = []
        self._names: set[str] = {input_name}
        self.types: dict[str, ValueType] = {input_name: ValueType(int(in_features))}

    def _unique(self, base: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_.:\-]", "_", base) or "node"
        name, i = base, 1
        while name in self._names:
            name = f"{base}_{i}"
            i += 1
        self._names.add(name)
        return name

    def add(self, op: Op, inputs: str | Sequence[str], name: str | None = None):
        """Append ``op`` (checked and typed now); returns its output value name, or a tuple of names
        for ops with several outputs."""
        from ..errors import EdgeseqError

        inputs = (inputs,) if isinstance(inputs, str) else tuple(inputs)
        nm = self._unique(name or op.kind.lower())
        try:
            op.check()
            out_types = op.infer([self.types[i] for i in inputs])
        except EdgeseqError as e:
            if e.where is None:
                e.where = f"{nm} ({op.kind})"
            raise
        outs = (nm,) + tuple(self._unique(f"{nm}.{k}") for k in range(1, len(out_types)))
        self.types.update(zip(outs, out_types))
        self.nodes.append(Node(nm, op, inputs, outs))
        return outs[0] if len(outs) == 1 else outs

    def features(self, value: str) -> int:
        return self.types[value].features

    def build(self, outputs: str | Sequence[str], metadata: Mapping[str, Any] | None = None) -> Graph:
        outputs = (outputs,) if isinstance(outputs, str) else tuple(outputs)
        return Graph(self.inputs, tuple(self.nodes), outputs, dict(metadata or {}))
