"""IR graph -> ONNX model.

Feed-forward ops map to standard ONNX ops applied to whole (B, T, F) sequences (or pooled (B, F)
values). Every scan op becomes one node ``edgeseq.<Kind>`` defined by a model-local ``FunctionProto``
rendered from the op's step program (:mod:`.render`): the input-only work runs once over the whole
sequence, the recurrence in a standard ``Scan``, so onnxruntime needs no plugin and
``onnx.inliner.inline_local_functions`` flattens it for runtimes without function support.
Function signature (float32, batch-first like the IR)::

    edgeseq.<Kind>(x[B, T, I], <state>_in[B, n] ...) -> (y0[B, T, N] (, y1), <state>_out[B, n] ...)

with one state input and output per state of the op (``state_shapes`` order). Parameters are tensor
attributes of the node, read by ``Constant`` nodes in the scope that uses them (recurrent weights
inside the Scan body: onnxruntime then makes them initializers of that body). Nodes whose functions
have identical bodies share one; the overload names the step program and a digest of the body.

Naming in the ONNX model:

- the graph input keeps the IR input name (``x``), dims ``["batch", "time", F]``;
- outputs keep the IR output value names, dims ``["batch", "time", F]`` or ``["batch", F]``;
- streaming models add one input ``state_in.<key>`` and one output ``state_out.<key>`` per entry
  ``<key> = "<node>/<state>"`` of ``graph.state_spec()``, dims ``["batch", *shape]``;
- values edgeseq generates start with ``/`` (IR names cannot contain ``/``).
"""

from __future__ import annotations

import hashlib
import re
from typing import Callable, Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ... import __version__
from ...errors import ConfigError, UnsupportedOpError
from ...ir import ops as O
from ...ir.cells import cell_kinds, step_program
from ...ir.graph import Graph, Node
from ...ir.step import StepProgram
from ...ir.step.passes import StripQuant
from ...ir.types import ReadoutMode
from ._emit import DOMAIN, DOMAIN_VERSION, FLOAT, Emitter, activation, f32, prune, value_info
from .fused import FusedKernel, fused_kernel
from .render import Numerics, Scope, Val, render_scan, whole

STATE_IN = "state_in."
STATE_OUT = "state_out."
BATCH, TIME = "batch", "time"
MIN_OPSET = 18
INT64_MAX = np.iinfo(np.int64).max


def state_input_name(key: str) -> str:
    return STATE_IN + key


def state_output_name(key: str) -> str:
    return STATE_OUT + key


def max_opset() -> int:
    """Highest default-domain opset that onnx and (when installed) onnxruntime here understand."""
    known = onnx.defs.onnx_opset_version()
    try:
        import onnxruntime
    except ImportError:
        return known
    # onnxruntime runs opset 21 from 1.18 and opset 23 from 1.20 on
    ver = tuple(int(p) for p in onnxruntime.__version__.split("+")[0].split(".")[:2])
    return min(known, 23 if ver >= (1, 20) else 21)


class _Ctx:
    """Lowering state of one model: the main-graph emitter, value types, state names, functions."""

    def __init__(self, graph: Graph, streaming: bool, opset: int, fused_rnn: bool = True):
        self.graph, self.streaming, self.opset, self.fused_rnn = graph, streaming, opset, fused_rnn
        self.fused_used = False
        self.e = Emitter(prefix="/", initializers=True)
        self.types = graph.value_types
        self.x = graph.inputs[0].name
        self.functions: dict[tuple[str, str], onnx.FunctionProto] = {}
        self.function_users: dict[tuple[str, str], list[str]] = {}
        self.produced_states: set[str] = set()
        self._batch: Optional[str] = None
        self._zeros: dict[tuple, str] = {}
        # scan outputs read only by last-step readouts (a whole-sequence model): a fused kernel then gives
        # its final hidden state instead of the whole sequence; ``last_done``: those lowered so
        self.last_only = set() if streaming else _last_only(graph)
        self.last_done: set[str] = set()

    # -- helpers ---------------------------------------------------------------------------------
    def batch_dim(self) -> str:
        if self._batch is None:
            self._batch = self.e.op("Shape", self.x, start=0, end=1, hint="batch")
        return self._batch

    def state_in(self, node: Node, name: str) -> str:
        key = f"{node.name}/{name}"
        if self.streaming:
            return state_input_name(key)
        shape = tuple(self.graph.state_spec()[key])
        if shape not in self._zeros:  # zeros of one shape are shared by every state that starts from them
            dims = self.e.op("Concat", self.batch_dim(), self.e.ints(list(shape), "state_shape"), axis=0)
            self._zeros[shape] = self.e.op(
                "ConstantOfShape", dims, hint="zeros", value=numpy_helper.from_array(np.zeros(1, np.float32))
            )
        return self._zeros[shape]

    def state_out(self, node: Node, name: str) -> str:
        key = f"{node.name}/{name}"
        self.produced_states.add(key)
        return state_output_name(key) if self.streaming else self.e.fresh(f"{node.name}/{name}.final")

    def w(self, node: Node, name: str, a) -> str:
        return self.e.const(f32(a), f"{node.name}/{name}")


# ----------------------------------------------------------------------------------------------
# feed-forward ops

Lowering = Callable[[_Ctx, Node], None]
LOWER: dict[str, Lowering] = {}


def _lower(kind: str):
    def deco(fn):
        LOWER[kind] = fn
        return fn

    return deco


@_lower("Linear")
def _linear(c: _Ctx, n: Node) -> None:
    op: O.Linear = n.op
    w = c.w(n, "weight_t", np.asarray(op.weight).T)
    if not c.types[n.inputs[0]].temporal and op.bias is not None:  # (B, F): one Gemm
        c.e.op("Gemm", n.inputs[0], w, c.w(n, "bias", op.bias), outputs=[n.outputs[0]])
        return
    y = c.e.op(
        "MatMul", n.inputs[0], w, outputs=[c.e.fresh(f"{n.name}/matmul")] if op.bias is not None else [n.outputs[0]]
    )
    if op.bias is not None:
        c.e.op("Add", y, c.w(n, "bias", op.bias), outputs=[n.outputs[0]])


@_lower("Conv1d")
def _conv1d(c: _Ctx, n: Node) -> None:
    op: O.Conv1d = n.op
    e, hist = c.e, op.history
    x = n.inputs[0]
    attrs = dict(dilations=[op.dilation], group=op.groups, kernel_shape=[op.weight.shape[2]])
    if hist and c.streaming:
        x = e.op("Concat", c.state_in(n, "buf"), x, axis=1, hint=f"{n.name}/window")
        e.op("Slice", x, e.ints([-hist]), e.ints([INT64_MAX]), e.ints([1]), outputs=[c.state_out(n, "buf")])
        attrs["pads"] = [0, 0]
    else:
        attrs["pads"] = [hist, 0]
    xc = e.op("Transpose", x, perm=[0, 2, 1], hint=f"{n.name}/ncw")
    args = [xc, c.w(n, "weight", op.weight)] + ([c.w(n, "bias", op.bias)] if op.bias is not None else [])
    y = e.op("Conv", *args, hint=f"{n.name}/conv", **attrs)
    e.op("Transpose", y, perm=[0, 2, 1], outputs=[n.outputs[0]])
    if hist and not c.streaming:
        c.produced_states.add(f"{n.name}/buf")


@_lower("LayerNorm")
def _layernorm(c: _Ctx, n: Node) -> None:
    op: O.LayerNorm = n.op
    f = c.types[n.inputs[0]].features
    scale = c.w(n, "weight", op.weight if op.weight is not None else np.ones(f))
    args = [n.inputs[0], scale] + ([c.w(n, "bias", op.bias)] if op.bias is not None else [])
    c.e.op("LayerNormalization", *args, axis=-1, epsilon=float(op.eps), outputs=[n.outputs[0]])


@_lower("BatchNorm")
def _batchnorm(c: _Ctx, n: Node) -> None:
    op: O.BatchNorm = n.op
    scale = 1.0 / np.sqrt(np.asarray(op.var, np.float64) + op.eps)
    if op.weight is not None:
        scale = scale * np.asarray(op.weight, np.float64)
    y = c.e.op("Sub", n.inputs[0], c.w(n, "mean", op.mean), hint=f"{n.name}/centered")
    last = op.bias is None
    y = c.e.op("Mul", y, c.w(n, "scale", scale), outputs=[n.outputs[0]] if last else [c.e.fresh(f"{n.name}/scaled")])
    if not last:
        c.e.op("Add", y, c.w(n, "bias", op.bias), outputs=[n.outputs[0]])


@_lower("Activation")
def _activation(c: _Ctx, n: Node) -> None:
    op: O.Activation = n.op
    y = activation(c.e, op.fn, n.inputs[0], op.slope, op.lo, op.hi)
    c.e.op("Identity", y, outputs=[n.outputs[0]])


@_lower("Add")
def _add(c: _Ctx, n: Node) -> None:
    c.e.op("Add", *n.inputs, outputs=[n.outputs[0]])


@_lower("Concat")
def _concat(c: _Ctx, n: Node) -> None:
    c.e.op("Concat", *n.inputs, axis=-1, outputs=[n.outputs[0]])


@_lower("Readout")
def _readout(c: _Ctx, n: Node) -> None:
    """Readouts reduce over time; streaming models carry the running sum / count / last step."""
    op: O.Readout = n.op
    e, x, out = c.e, n.inputs[0], n.outputs[0]
    if op.mode is ReadoutMode.LAST:
        if x in c.last_done:  # the scan gave its last step only
            e.op("Identity", x, outputs=[out])
        else:
            e.op("Gather", x, e.ints(-1, "last_index"), axis=1, outputs=[out])
        if c.streaming:
            e.op("Identity", out, outputs=[c.state_out(n, "last")])
        else:
            c.produced_states.add(f"{n.name}/last")
        return
    if not c.streaming:
        if op.mode is ReadoutMode.MEAN:
            e.op("ReduceMean", x, e.ints([1]), keepdims=0, outputs=[out])
            c.produced_states.update({f"{n.name}/sum", f"{n.name}/count"})
        else:
            e.op("ReduceSum", x, e.ints([1]), keepdims=0, outputs=[out])
            c.produced_states.add(f"{n.name}/sum")
        return
    chunk = e.op("ReduceSum", x, e.ints([1]), keepdims=0, hint=f"{n.name}/chunk_sum")
    total = e.op("Add", c.state_in(n, "sum"), chunk, outputs=[c.state_out(n, "sum")])
    if op.mode is ReadoutMode.SUM:
        e.op("Identity", total, outputs=[out])
        return
    steps = e.op("Cast", e.op("Shape", x, start=1, end=2, hint=f"{n.name}/steps"), to=FLOAT)
    count = e.op("Add", c.state_in(n, "count"), steps, outputs=[c.state_out(n, "count")])
    e.op("Div", total, e.op("Max", count, e.const(1.0, "one")), outputs=[out])


# window ops (:mod:`edgeseq.ir.ops` ``Reverse``, ``Lookahead``, ``SelfAttention``): whole-window tensor ops on (B, T, F); the
# equations are the interpreter's (:data:`edgeseq.ir.interpret.WINDOW`). A window graph lowers whole-window
# only (``streaming=True`` is refused by :func:`build_onnx`).
@_lower("Reverse")
def _reverse(c: _Ctx, n: Node) -> None:
    e = c.e
    e.op(
        "Slice",
        n.inputs[0],
        e.ints([-1], "minus_one"),
        e.ints([np.iinfo(np.int64).min], "int64_min"),
        e.ints([1], "time_axis"),
        e.ints([-1], "minus_one"),
        outputs=[n.outputs[0]],
    )


@_lower("Lookahead")
def _lookahead(c: _Ctx, n: Node) -> None:
    e, s = c.e, int(n.op.steps)
    padded = e.op("Pad", n.inputs[0], e.ints([0, 0, 0, 0, s, 0], f"{n.name}/pads"), hint=f"{n.name}/padded")
    e.op(
        "Slice",
        padded,
        e.ints([s], f"{n.name}/start"),
        e.ints([INT64_MAX], "int64_max"),
        e.ints([1], "time_axis"),
        outputs=[n.outputs[0]],
    )


@_lower("SelfAttention")
def _self_attention(c: _Ctx, n: Node) -> None:
    e, h = c.e, int(n.op.num_heads)
    f = c.graph.type_of(n.inputs[0]).features
    d = f // 3 // h
    heads = e.op("Reshape", n.inputs[0], e.ints([0, 0, 3, h, d], f"{n.name}/qkv_shape"), hint=f"{n.name}/heads")
    qkv = e.op("Transpose", heads, perm=[2, 0, 3, 1, 4], hint=f"{n.name}/qkv")  # (3, B, H, T, d)
    q, k, v = (
        e.op("Gather", qkv, e.const(i, f"idx{i}", np.int64), axis=0, hint=f"{n.name}/{w}") for i, w in enumerate("qkv")
    )
    scores = e.op("MatMul", q, e.op("Transpose", k, perm=[0, 1, 3, 2], hint=f"{n.name}/kt"), hint=f"{n.name}/dot")
    scaled = e.op("Mul", scores, e.const(1.0 / np.sqrt(d), f"{n.name}/scale"), hint=f"{n.name}/scaled")
    w = e.op("Softmax", scaled, axis=-1, hint=f"{n.name}/weights")
    y = e.op("Transpose", e.op("MatMul", w, v, hint=f"{n.name}/mix"), perm=[0, 2, 1, 3], hint=f"{n.name}/steps")
    e.op("Reshape", y, e.ints([0, 0, f // 3], f"{n.name}/out_shape"), outputs=[n.outputs[0]])


def _lower_scan(c: _Ctx, n: Node) -> None:
    op = n.op
    prog = step_program(op, c.graph.type_of(n.inputs[0]).features)
    expected = tuple(op.state_shapes(c.graph.input_types(n)))
    if prog.state_names != expected:  # pragma: no cover - internal consistency of the lowering
        raise RuntimeError(f"{n.name}: state order {prog.state_names} != {expected}")
    kernel = fused_kernel(StripQuant()(prog)) if c.fused_rnn else None
    if kernel is not None and not c.streaming:  # the final states are unused
        last = n.outputs[0] in c.last_only and len(n.outputs) == 1
        fn, attrs = _fused_function(op.kind, prog, kernel, c.opset, finals=False, last=last)
        c.last_done |= {n.outputs[0]} if last else set()
        c.produced_states.update(f"{n.name}/{s}" for s in prog.state_names)
        _call(c, n, fn, attrs, [n.inputs[0]] + [c.state_in(n, s) for s in prog.state_names], list(n.outputs))
        c.fused_used = True
        return
    fn, attrs = (_fused_function if kernel is not None else _scan_function)(op.kind, prog, kernel, c.opset)
    c.fused_used |= kernel is not None
    ins = [n.inputs[0]] + [c.state_in(n, s) for s in prog.state_names]
    _call(c, n, fn, attrs, ins, list(n.outputs) + [c.state_out(n, s) for s in prog.state_names])


def _last_only(graph: Graph) -> set[str]:
    """Values read only by last-step readouts (and not graph outputs)."""
    readers: dict[str, list] = {}
    for n in graph.nodes:
        for v in n.inputs:
            readers.setdefault(v, []).append(n.op)
    return {
        v
        for v, ops in readers.items()
        if v not in graph.outputs and all(isinstance(o, O.Readout) and o.mode is ReadoutMode.LAST for o in ops)
    }


def _call(c: _Ctx, n: Node, fn, attrs: dict, ins: list, outs: list) -> None:
    """Node ``n`` as a call of the function ``fn`` (one function per distinct body)."""
    key = (fn.name, fn.overload)
    if key in c.functions and not _same_body(c.functions[key], fn):  # pragma: no cover - a digest collision
        fn.overload += "." + hashlib.sha256(fn.SerializeToString(deterministic=True)).hexdigest()[:16]
        key = (fn.name, fn.overload)
    c.functions.setdefault(key, fn)
    c.function_users.setdefault(key, []).append(n.name)
    attrs = {k: v if isinstance(v, int) else numpy_helper.from_array(np.array(v, order="C")) for k, v in attrs.items()}
    c.e.op(fn.name, *ins, outputs=outs, domain=DOMAIN, overload=fn.overload, node_name=n.name, **attrs)


class _Attrs(Numerics):
    """Float rendering inside an ``edgeseq`` function: every parameter is a node attribute, read
    where it is used (weights of the input projections before the Scan, recurrent ones in its body)."""

    def __init__(self, prog: StepProgram):
        super().__init__(prog)
        self.attrs: dict[str, np.ndarray] = {}

    def array(self, sc: Scope, key: str, value, dtype=np.float32) -> str:
        name = re.sub(r"[^0-9A-Za-z_]", "_", key)
        self.attrs[name] = np.array(value, dtype=dtype, order="C")
        return sc.cached(("attr", name), lambda: sc.e.attr_ref(name))


def _signature(family: str, prog: StepProgram, ins, outs, nodes, attrs, opset: int, doc: str):
    """The function, its overload named by the program and a digest of its body: nodes of identical
    structure share one function, sizes and weights come from the attributes."""
    fn = helper.make_function(
        DOMAIN, family, ins, outs, nodes, opset_imports=[helper.make_opsetid("", opset)], attributes=sorted(attrs)
    )
    digest = hashlib.sha256(fn.SerializeToString(deterministic=True)).hexdigest()[:8]
    fn.overload = ".".join(prog.name.split(".")[1:] + [digest])
    fn.doc_string = doc
    return fn


def _scan_function(family: str, prog: StepProgram, kernel, opset: int):
    num = _Attrs(prog)
    e = Emitter(prefix="t.")
    xt = e.op("Transpose", "x", perm=[1, 0, 2], hint="tm")
    sc = Scope(e, num, 3, lead=(xt, 0))
    ins = ["x"] + [f"{s}_in" for s in prog.state_names]
    outs = [f"y{k}" for k in range(len(prog.outputs))]
    finals = [f"{s}_out" for s in prog.state_names]
    res = render_scan(num, sc, prog, Val(prog.inputs[0].n, f=whole(xt, prog.inputs[0].n)), ins[1:], finals, family)
    for v, y in zip(res.outputs, outs):
        e.op("Transpose", sc.f(v), perm=[1, 0, 2], outputs=[y])
    sc.merge_slices()
    prune(e, outs + finals)
    attrs = {k: v for k, v in num.attrs.items() if k in _attr_refs(e.nodes)}
    doc = f"edgeseq step program '{prog.name}' over the standard Scan (edgeseq.ir.step)"
    return _signature(family, prog, ins, outs + finals, e.nodes, attrs, opset, doc), attrs


def _attr_refs(nodes) -> set[str]:
    out: set[str] = set()
    for n in nodes:
        for a in n.attribute:
            out.add(a.ref_attr_name)
            if a.type == onnx.AttributeProto.GRAPH:
                out |= _attr_refs(a.g.node)
    return out


def _fused_function(
    family: str, prog: StepProgram, k: FusedKernel, opset: int, finals: bool = True, last: bool = False
):
    """The program as ONNX's ``k.op_type`` (inputs: x and the initial states). ``finals``: the final
    states are outputs too (a streaming model); else only ``y0``: the whole sequence, or with ``last``
    its last step (the operator's final hidden state, (B, H): the sequence is not materialized)."""
    e = Emitter(prefix="t.")
    ins = ["x"] + [f"{s}_in" for s in prog.state_names]
    outs = [f"{s}_out" for s in prog.state_names] if finals else []
    attrs = {"W": f32(k.w), "R": f32(k.r), "B": f32(k.b)}
    ax0 = e.ints([0], "ax0")
    states = [e.op("Unsqueeze", s, ax0, hint="s3") for s in ins[1:]]
    res = e.op(
        k.op_type,
        e.op("Transpose", "x", perm=[1, 0, 2], hint="tm"),
        *(e.attr_ref(a) for a in "WRB"),
        "",
        *states,
        outputs=["", "t.yh"] if last else 1 + len(outs),
        hidden_size=k.hidden,
        **k.attrs,
    )
    res = [res] if isinstance(res, str) else res
    if last:
        e.op("Squeeze", res[1], ax0, outputs=["y0"])
    else:
        e.op("Transpose", e.op("Squeeze", res[0], e.ints([1], "ax1")), perm=[1, 0, 2], outputs=["y0"])
    for f, out in zip(res[1:], outs):  # none with ``last`` (a whole-sequence model has no final states)
        e.op("Squeeze", f, ax0, outputs=[out])
    doc = f"edgeseq step program '{prog.name}' as ONNX {k.op_type} (a pattern rewrite, edgeseq.export.onnx.fused)"
    prog = prog.replace(name=f"{prog.name.split('.')[0]}.onnx_{k.op_type.lower()}{'' if finals else '_seq'}")
    return _signature(family, prog, ins, ["y0"] + outs, e.nodes, attrs, opset, doc), attrs


def _same_body(a: onnx.FunctionProto, b: onnx.FunctionProto) -> bool:
    return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


for _kind in cell_kinds():
    LOWER[_kind] = _lower_scan


def _lowering(op) -> Optional[Lowering]:
    """The lowering of ``op``: by kind, or its own step program's (a scan op that carries one)."""
    return LOWER.get(op.kind) or (_lower_scan if getattr(op, "program", None) is not None else None)


def supported_kinds() -> set[str]:
    """IR op kinds the ONNX backend lowers."""
    return set(LOWER)


# ----------------------------------------------------------------------------------------------
# the model


def check_supported(graph: Graph) -> None:
    kinds = supported_kinds()
    for n in graph.nodes:
        if _lowering(n.op) is None:
            raise UnsupportedOpError(
                f"op kind '{n.op.kind}' is not supported by the onnx backend",
                where=f"node '{n.name}' ({n.op.kind}), target onnx",
                hint=f"the onnx backend lowers: {', '.join(sorted(kinds))}",
            )


def ir_version_for(opset: int) -> int:
    """IR version for a default-domain opset (10 at least: function overloads need IR 10)."""
    try:
        v = helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
    except Exception:  # noqa: BLE001 - unknown opset: fall back to the newest known IR version
        v = onnx.IR_VERSION
    return max(10, v)


def build_onnx(
    graph: Graph, *, streaming: bool = False, inline: bool = False, opset: int = 21, fused_rnn: bool = True
) -> onnx.ModelProto:
    """Lower ``graph`` to an ONNX model with symbolic ``batch`` and ``time`` dimensions.

    ``streaming=True`` gives a model that processes one chunk (B, T_chunk, F) per call with one
    state input/output per entry of ``graph.state_spec()`` (``state_in.<key>`` / ``state_out.<key>``);
    chained over chunks it computes exactly what the whole-sequence model computes.
    ``inline=True`` flattens the ``edgeseq`` functions into plain ONNX (for runtimes without
    function support). With ``fused_rnn`` (the default) a step program that computes exactly what
    ONNX's GRU or LSTM op computes becomes that op (onnxruntime's fused float32 kernels; a pattern
    rewrite, :mod:`.fused`), every other one a ``Scan``; ``fused_rnn=False`` renders every scan op over
    ``Scan`` (what onnxruntime's own quantizer can work on). Raises :class:`UnsupportedOpError` for ops
    this backend cannot lower."""
    if not isinstance(graph, Graph):
        raise ConfigError(f"build_onnx expects an edgeseq IR Graph, got {type(graph).__name__}")
    top = max_opset()
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
        raise ConfigError(
            f"opset must be an integer from {MIN_OPSET} to {top}, got {opset!r}",
            where="target onnx",
            hint="the default, 21, works with onnxruntime >= 1.18",
        )
    check_supported(graph)
    if streaming:
        graph.require_streaming("a streaming ONNX export")
    c = _Ctx(graph, streaming, opset, bool(fused_rnn))
    spec = graph.state_spec()
    f = graph.in_features
    inputs = [value_info(c.x, [BATCH, TIME, f])]
    outputs = []
    if streaming:
        inputs += [value_info(state_input_name(k), [BATCH, *s]) for k, s in spec.items()]
    for n in graph.nodes:
        _lowering(n.op)(c, n)
    if set(spec) != c.produced_states:  # pragma: no cover - internal consistency of the lowering
        raise RuntimeError(f"state mismatch: {sorted(set(spec) ^ c.produced_states)}")

    seen: set[str] = set()
    for k, name in enumerate(graph.outputs):
        t = graph.type_of(name)
        onnx_name = name
        if name in seen or name == c.x:
            onnx_name = c.e.op("Identity", name, outputs=[f"{name}:{k}"])
        seen.add(onnx_name)
        dims = [BATCH, TIME, t.features] if t.temporal else [BATCH, t.features]
        outputs.append(value_info(onnx_name, dims))
    if streaming:
        outputs += [value_info(state_output_name(k), [BATCH, *s]) for k, s in spec.items()]

    g = helper.make_graph(
        c.e.nodes,
        _graph_name(graph),
        inputs,
        outputs,
        initializer=c.e.initializers,
        doc_string="edgeseq IR graph: " + repr(graph),
    )
    model = helper.make_model(
        g,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, DOMAIN_VERSION)],
        functions=list(c.functions.values()),
        ir_version=ir_version_for(opset),
        producer_name="edgeseq",
        producer_version=__version__,
    )
    helper.set_model_props(
        model,
        {
            "edgeseq.streaming": str(bool(streaming)).lower(),
            "edgeseq.fused_rnn": str(c.fused_used).lower(),
            "edgeseq.state_input_prefix": STATE_IN,
            "edgeseq.state_output_prefix": STATE_OUT,
            "edgeseq.functions": ", ".join(
                f"{fam}[{ov}]: {','.join(c.function_users[(fam, ov)])}" for fam, ov in c.functions
            ),
        },
    )
    if inline:
        model = inline_functions(model)
    return model


def inline_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """Flatten the model-local ``edgeseq`` functions into plain ONNX (Scan bodies included)."""
    import onnx.inliner

    out = onnx.inliner.inline_local_functions(model)
    keep = [o for o in out.opset_import if o.domain != DOMAIN]
    del out.opset_import[:]
    out.opset_import.extend(keep)
    return out


def _graph_name(graph: Graph) -> str:
    src = str(graph.metadata.get("source", "graph")).split(".")[-1]
    return f"edgeseq_{src}"


def function_summary(model: onnx.ModelProto) -> list[dict]:
    """The ``edgeseq`` functions of a model: name, overload, attributes and the nodes using them."""
    users: dict[tuple[str, str], list[str]] = {}
    for node in model.graph.node:
        if node.domain == DOMAIN:
            users.setdefault((node.op_type, node.overload), []).append(node.name)
    return [
        {
            "name": f.name,
            "overload": f.overload,
            "attributes": list(f.attribute),
            "nodes": users.get((f.name, f.overload), []),
        }
        for f in model.functions
        if f.domain == DOMAIN
    ]
