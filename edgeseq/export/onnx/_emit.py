"""Small ONNX graph-building helpers shared by the edgeseq ONNX lowering.

An :class:`Emitter` collects the nodes of one ONNX scope (the main graph, a function body or a
``Scan`` body) and hands out unique value names inside it. Constants become initializers in the
main graph and ``Constant`` nodes inside functions and loop bodies (onnxruntime turns those into
initializers of the scope they live in, which is what lets quantized weights stay local to a
``Scan`` body).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from ...ir.types import Act

FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
DOMAIN = "edgeseq"
DOMAIN_VERSION = 1


def f32(a) -> np.ndarray:
    return np.array(a, dtype=np.float32, order="C")


class Emitter:
    """Nodes of one ONNX scope with unique value names.

    ``initializers=True`` (the main graph) stores constants as initializers; otherwise (function and
    loop bodies) as ``Constant`` nodes. ``prefix`` keeps generated names apart from user names."""

    def __init__(self, prefix: str = "", initializers: bool = False):
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.use_initializers = initializers
        self._count: dict[str, int] = {}
        self._used: set[str] = set()
        self._consts: dict[tuple, str] = {}

    def fresh(self, hint: str) -> str:
        """A name not handed out before in this scope (``hint``, else ``hint_<k>``)."""
        base = f"{self.prefix}{hint}"
        k = self._count.get(base, 0)
        while True:
            name = base if k == 0 else f"{base}_{k}"
            k += 1
            if name not in self._used:
                break
        self._count[base] = k
        self._used.add(name)
        return name

    def op(
        self,
        op_type: str,
        *inputs: Optional[str],
        outputs: int | Sequence[str] = 1,
        hint: Optional[str] = None,
        domain: str = "",
        overload: str = "",
        node_name: Optional[str] = None,
        **attrs,
    ) -> str | list[str]:
        """Append a node; returns its output name (or the list of names for several outputs)."""
        if isinstance(outputs, int):
            outs = [self.fresh(hint or op_type.lower()) for _ in range(outputs)]
        else:
            outs = list(outputs)
        node = helper.make_node(
            op_type,
            [i or "" for i in inputs],
            outs,
            domain=domain or None,
            name=node_name or self.fresh("n_" + (hint or op_type.lower())),
            **attrs,
        )
        if overload:
            node.overload = overload
        self.nodes.append(node)
        return outs[0] if len(outs) == 1 else outs

    def const(self, value, hint: str = "c", dtype=np.float32) -> str:
        """A constant tensor (deduplicated by value)."""
        a = np.array(value, dtype=dtype, order="C")
        key = (a.dtype.str, a.shape, a.tobytes())
        if key in self._consts:
            return self._consts[key]
        name = self.fresh(hint)
        t = numpy_helper.from_array(a, name)
        if self.use_initializers:
            self.initializers.append(t)
        else:
            self.nodes.append(helper.make_node("Constant", [], [name], value=t, name=self.fresh("n_" + hint)))
        self._consts[key] = name
        return name

    def ints(self, values: Sequence[int], hint: str = "i") -> str:
        return self.const(np.asarray(values, dtype=np.int64), hint, dtype=np.int64)

    def attr_ref(self, attr: str, kind: int = AttributeProto.TENSOR) -> str:
        """A ``Constant`` whose value is the enclosing function's attribute ``attr``."""
        out = self.fresh(attr)
        node = helper.make_node("Constant", [], [out], name=self.fresh("n_" + attr))
        field = {
            AttributeProto.TENSOR: "value",
            AttributeProto.INTS: "value_ints",
            AttributeProto.FLOAT: "value_float",
        }[kind]
        a = AttributeProto()
        a.name = field
        a.type = kind
        a.ref_attr_name = attr
        node.attribute.append(a)
        self.nodes.append(node)
        return out


def prune(e: Emitter, keep=()) -> None:
    """Drop the nodes and initializers of ``e`` whose outputs nothing reads (nodes of subgraphs
    included) and that are not in ``keep``."""
    used = set(keep)

    def reads(n, acc):
        acc.update(n.input)
        for a in n.attribute:
            if a.type == AttributeProto.GRAPH:
                for m in a.g.node:
                    reads(m, acc)

    live = []
    for n in reversed(e.nodes):
        if any(o in used for o in n.output):
            live.append(n)
            reads(n, used)
    e.nodes[:] = live[::-1]
    e.initializers[:] = [t for t in e.initializers if t.name in used]


def value_info(name: str, shape: Optional[Sequence] = None, elem=FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, None if shape is None else list(shape))


# ----------------------------------------------------------------------------------------------
# pointwise activations (exactly the formulas of edgeseq.ir.interpret.activation)


def _gelu(e: Emitter, x: str, *_) -> str:
    erf = e.op("Erf", e.op("Mul", x, e.const(1.0 / np.sqrt(2.0), "inv_sqrt2")))
    return e.op("Mul", e.op("Mul", x, e.const(0.5, "half")), e.op("Add", erf, e.const(1.0, "one")))


def _gelu_tanh(e: Emitter, x: str, *_) -> str:
    inner = e.op("Add", x, e.op("Mul", e.op("Mul", e.op("Mul", x, x), x), e.const(0.044715, "gelu_c")))
    t = e.op("Tanh", e.op("Mul", inner, e.const(np.sqrt(2.0 / np.pi), "gelu_k")))
    return e.op("Mul", e.op("Mul", x, e.const(0.5, "half")), e.op("Add", t, e.const(1.0, "one")))


def _minrnn_g(e: Emitter, x: str, *_) -> str:
    pos = e.op("GreaterOrEqual", x, e.const(0.0, "zero"))
    return e.op("Where", pos, e.op("Add", x, e.const(0.5, "half")), e.op("Sigmoid", x))


#: each activation (exactly the formulas of edgeseq.ir.activations): fn(emitter, x, slope, lo, hi)
ACTIVATIONS: dict[Act, Callable[..., str]] = {
    Act.IDENTITY: lambda e, x, *_: x,
    Act.RELU: lambda e, x, *_: e.op("Relu", x),
    Act.TANH: lambda e, x, *_: e.op("Tanh", x),
    Act.SIGMOID: lambda e, x, *_: e.op("Sigmoid", x),
    Act.HARDSIGMOID: lambda e, x, *_: e.op("HardSigmoid", x, alpha=1.0 / 6.0, beta=0.5),
    Act.SILU: lambda e, x, *_: e.op("Mul", x, e.op("Sigmoid", x)),
    Act.GELU: _gelu,
    Act.GELU_TANH: _gelu_tanh,
    Act.LEAKY_RELU: lambda e, x, slope, lo, hi: e.op("LeakyRelu", x, alpha=float(slope)),
    Act.HARDTANH: lambda e, x, slope, lo, hi: e.op("Clip", x, e.const(lo, "lo"), e.const(hi, "hi")),
    Act.SOFTPLUS: lambda e, x, *_: e.op("Softplus", x),
    Act.EXP: lambda e, x, *_: e.op("Exp", x),
    Act.MINRNN_G: _minrnn_g,
}


def activation(e: Emitter, fn: Act, x: str, slope: float = 0.01, lo: float = -1.0, hi: float = 1.0) -> str:
    return ACTIVATIONS[fn](e, x, slope, lo, hi)
