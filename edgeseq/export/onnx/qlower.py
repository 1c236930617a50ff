"""Integer programs (:mod:`edgeseq.quant.program`) -> ONNX models that compute the same integers.

A quantized graph is lowered from its integer :class:`~edgeseq.quant.program.Program`, not from
the float graph: every micro-op becomes a few standard ONNX integer ops with exactly the
semantics of ``edgeseq/quant/README.md``, so onnxruntime reproduces the integer-exact interpreter
bit for bit (float appears only at the two boundaries, exactly as the program specifies them).

Structure of the model
======================

- **Input boundary**: the float input ``x`` (B, T, F) is made time-major and quantized per input
  part exactly like :meth:`InputSpec.quantize` (float32 ``(x - offset) * inv_scale``, ``Round``
  (half to even), ``Clip``), once for the whole sequence.
- **Stages**: the step program is split by its data flow. Micro-ops that depend on no state
  (input projections, the first layer's feed-forward part) run once over the whole sequence as
  (T, B, n) tensors; every group of mutually dependent states (one recurrent / spiking layer, a
  convolution history, a readout accumulator) becomes one ``Scan`` whose body holds only the
  micro-ops on that group's recurrence; micro-ops between two recurrences (the next layer's input
  projection) run over the whole sequence between the two ``Scan`` nodes. States whose next
  value does not depend on their own value (a ``last`` readout) need no loop at all.
- **Kernels**: a ``matvec`` whose input is declared 8 bits (or narrower: spikes) and whose
  weights are int8 is ``MatMulInteger`` (int8 x int8 -> int32; the only exact int8 kernel: uint8 x
  int8 saturates on AVX2 machines without VNNI, measured) with the weights as int8 initializers of
  the scope that uses them (inside a ``Scan`` body: the body's own initializers). Wider inputs
  (int16 recurrent states, int16 LMU memories: onnxruntime has no int8 x int16 kernel) use an
  integer ``MatMul`` (int64 for small matrices, int32 for large ones), exact because the program
  declares the accumulator width. Requantisation is an int64 ``Mul`` by the 31-bit multiplier and a
  floor division by 2^s (``Add`` + ``Div``: an offset makes the numerator non-negative, and the
  offset is left pending for the next addition, requantisation, lookup, comparison or clamp to
  absorb into its own constant); a power-of-two multiplier is a plain shift in int32. Tables are
  one ``Gather`` (interpolated int16 tables are evaluated at every input the program can give them,
  ``expand_tables``); running sums (mean / sum readouts, step counters) are ``ReduceSum`` /
  ``CumSum`` over the sequence. Values keep the type they were computed in (int32, int64, bool for
  0/1 vectors) and are cast only where an op needs another; states cross the model boundary in
  their declared storage type (int8 / int16 / int32).
- **Output boundary**: every graph output is ``DequantizeLinear(q, scale, axis=-1)`` of its integer
  vector (float32); the integer vector itself is an extra output ``q.<name>`` in its storage type.

Streaming models add one integer input ``state_in.<key>`` and output ``state_out.<key>`` (B, n)
per program state (flat like the program's state, storage dtype); zeros start a sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ... import __version__
from ...errors import ConfigError, UnsupportedOpError
from ...quant import program as P
from .lower import BATCH, STATE_IN, STATE_OUT, TIME, ir_version_for, max_opset, state_input_name, state_output_name

INT8, INT16, INT32, INT64 = TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64
BOOL, FLOAT, DOUBLE = TensorProto.BOOL, TensorProto.FLOAT, TensorProto.DOUBLE
NP = {
    INT8: np.int8,
    INT16: np.int16,
    INT32: np.int32,
    INT64: np.int64,
    BOOL: np.bool_,
    FLOAT: np.float32,
    DOUBLE: np.float64,
}
STORAGE = {8: INT8, 16: INT16, 32: INT32, 64: INT64}
INT_OUT = "q."
PROBE = "probe."
EXPAND_BUDGET = 1 << 20  # expand_tables='auto': expanded tables up to 1 MiB in all, the rest interpolate
SMALL_MATVEC = 4096  # weights up to this size multiply in int64 (measured: as fast as int32 at this size)
I64_MAX = (1 << 63) - 1
MIN_OPSET = 21  # DequantizeLinear with int32 input and axis, Where/GreaterOrEqual on int32


def output_names(program, input_name: str) -> list[str]:
    """ONNX names of the float outputs: the program's output names, made unique (``name:k``) where
    a name repeats or is the input's; the integer output of ``name`` is ``q.<name>``."""
    seen = {input_name}
    out = []
    for k, o in enumerate(program.outputs):
        name = o.name if o.name not in seen else f"{o.name}:{k}"
        seen.add(name)
        out.append(name)
    return out


def compute_type(bits: int) -> int:
    """The ONNX type a ``bits``-bit program vector is carried in between ops."""
    return INT32 if bits <= 32 else INT64


def storage_type(bits: int) -> int:
    """The ONNX type of a ``bits``-bit vector at rest (state, integer outputs): int8/16/32/64."""
    return STORAGE[P.container_bits(bits)]


# ----------------------------------------------------------------------------------------------
# emission scopes


class _Graph:
    """Nodes and initializers of one ONNX graph (the main graph or one Scan body)."""

    def __init__(self, names: "_Names", scope: str):
        self.names, self.scope = names, scope
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.types: dict[str, int] = {}
        self._consts: dict[tuple, str] = {}

    def op(
        self,
        op_type: str,
        *inputs: str,
        out_type: int,
        hint: Optional[str] = None,
        n_out: int = 1,
        out_types: Optional[list[int]] = None,
        outputs: Optional[list[str]] = None,
        **attrs,
    ):
        outs = outputs or [self.names.fresh(f"{self.scope}/{hint or op_type.lower()}") for _ in range(n_out)]
        node = helper.make_node(
            op_type, list(inputs), outs, name=self.names.fresh(f"{self.scope}/n.{hint or op_type}"), **attrs
        )
        self.nodes.append(node)
        for o, t in zip(outs, out_types or [out_type] * len(outs)):
            self.types[o] = t
        return outs[0] if len(outs) == 1 else outs

    def const(self, value, elem: int, hint: str = "c") -> str:
        src = np.asarray(value)
        a = np.array(src.astype(NP[elem]), order="C")
        if elem not in (FLOAT, DOUBLE, BOOL) and src.size and not np.array_equal(a.astype(object), src.astype(object)):
            raise RuntimeError(
                f"constant '{hint}' does not fit {NP[elem].__name__}"
            )  # pragma: no cover - a lowering bug
        key = (elem, a.shape, a.tobytes())
        if key not in self._consts:
            name = self.names.fresh(f"{self.scope}/k.{hint}")
            self.inits.append(numpy_helper.from_array(a, name))
            self.types[name] = elem
            self._consts[key] = name
        return self._consts[key]

    def ints(self, values, hint: str = "shape") -> str:
        return self.const(np.asarray(values, np.int64), INT64, hint)


def _live(nodes: list, outputs: list[str], inits: list) -> tuple[list, list]:
    """The nodes (and initializers) the outputs depend on, in their original order (lowering leaves
    a few unused values behind, e.g. the flat form of a blocked concat)."""
    need = set(outputs)
    keep = []
    for n in reversed(nodes):
        if any(o in need for o in n.output):
            keep.append(n)
            need.update(i for i in n.input if i)
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:  # outer-scope values a body reads
                    need.update(i for sub in a.g.node for i in sub.input if i)
    keep.reverse()
    return keep, [t for t in inits if t.name in need]


class _Names:
    """Value and node names unique across the whole model (the main graph and every body)."""

    def __init__(self):
        self._count: dict[str, int] = {}

    def fresh(self, base: str) -> str:
        base = base.replace(" ", "_")
        k = self._count.get(base, 0)
        self._count[base] = k + 1
        return base if k == 0 else f"{base}#{k}"


class _Env:
    """Program vectors -> ONNX values in one graph, for tensors of rank ``rank`` ((T, B, n) = 3,
    (B, n) = 2), with cached casts, boolean forms of 0/1 vectors and pending offsets.

    A pending offset ``off[name] = c`` (an integer constant per channel) means the vector's true
    value is ``vals[name] + c``: the floor divisions of requantisation leave one, and additions,
    requantisations, table lookups, comparisons and clamps absorb it into their own constants
    (``get_raw``); any other consumer materialises it with one ``Add`` (``get``)."""

    def __init__(self, lw: "_Lowering", g: _Graph, rank: int):
        self.lw, self.g, self.rank = lw, g, rank
        self.vals: dict[str, str] = {}
        self.bools: dict[str, str] = {}
        self.off: dict[str, np.ndarray] = {}
        self.blocked: dict[tuple[str, int], str] = {}
        self._casts: dict[tuple[str, int], str] = {}

    def cast(self, v: str, elem: int) -> str:
        if self.g.types[v] == elem:
            return v
        key = (v, elem)
        if key not in self._casts:
            self._casts[key] = self.g.op("Cast", v, to=elem, out_type=elem, hint="cast")
        return self._casts[key]

    def has(self, name: str) -> bool:
        return name in self.vals or name in self.bools

    def const(self, name: str, elem: Optional[int] = None) -> str:
        p = self.lw.p
        elem = elem or compute_type(P.bits_for(*P._const_iv(p.consts[name])) if p.consts[name].size else 2)
        return self.g.const(np.asarray(p.consts[name]).reshape(-1), elem, _short(name))

    def get(self, name: str, elem: Optional[int] = None) -> str:
        """The (true) value of vector or constant ``name`` (constants: 1-D, broadcast along the features)."""
        p = self.lw.p
        if name in p.consts:
            return self.const(name, elem)
        if name in self.off:
            v, c = self.vals[name], self.off.pop(name)
            t = self.g.types[v]
            self.vals[name] = self.g.op("Add", v, self.g.const(c, t, "offset"), out_type=t, hint="materialise")
        if name in self.vals:
            v = self.vals[name]
        else:
            b = self.bools[name]
            if elem is not None:
                key = (b, elem)
                if key not in self._casts:
                    self._casts[key] = self.g.op("Cast", b, to=elem, out_type=elem, hint="cast")
                return self._casts[key]
            v = self.vals[name] = self.cast(b, compute_type(p.vectors[name].bits))
        return v if elem is None else self.cast(v, elem)

    def get_raw(self, name: str, elem: Optional[int] = None) -> tuple[str, np.ndarray]:
        """(value, c) with true = value + c, leaving a pending offset pending."""
        if name in self.off:
            v = self.vals[name]
            return (v if elem is None else self.cast(v, elem)), self.off[name]
        return self.get(name, elem), np.zeros(1, dtype=object)

    def get_bool(self, name: str) -> str:
        if name in self.bools:
            return self.bools[name]
        return self.cast(self.get(name), BOOL)  # Cast to bool is ``!= 0``, the Select rule

    def set(self, name: str, value: str, off=None) -> None:
        self.vals[name] = value
        self.off.pop(name, None)
        if off is not None and np.any(np.asarray(off, dtype=object) != 0):
            self.off[name] = np.asarray(off, dtype=object).reshape(-1)

    def alias(self, name: str, other: str) -> None:
        """``name`` is the same vector as ``other`` (a load of a value stored earlier in the step)."""
        if other in self.vals:
            self.vals[name] = self.vals[other]
        if other in self.bools:
            self.bools[name] = self.bools[other]
        if other in self.off:
            self.off[name] = self.off[other]


def _short(name: str) -> str:
    return name.replace("/", ".").replace(":", ".")


# ----------------------------------------------------------------------------------------------
# stages: which micro-ops run over the whole sequence and which inside which Scan


@dataclass
class _Stage:
    kind: str  # 'scan' (a recurrence), 'accumulate' (a running sum), 'shift' (next
    states: list[str]  # value independent of the state) or 'frozen' (never stored in a step)
    ops: list[int] = field(default_factory=list)  # step op indices inside the Scan body
    post: list[int] = field(default_factory=list)  # step op indices run over the sequence after it


@dataclass
class _Plan:
    alias: dict[str, str]  # load outputs that read a value stored earlier in the same step
    carried: dict[str, str]  # load outputs that read the previous step's state -> state key
    stored: dict[str, str]  # state -> vector stored last in a step
    pre: list[int]  # step op indices that depend on no state
    stages: list[_Stage]
    placement: dict[int, object]  # step op index -> 'pre' | (stage index, 'scan' | 'post')


def plan_stages(p: P.Program) -> _Plan:
    """Split the step program into sequence-wide parts and Scans (see the module docstring)."""
    alias: dict[str, str] = {}
    carried: dict[str, str] = {}
    cur: dict[str, str] = {}
    producer: dict[str, int] = {}

    def res(v: str) -> str:
        while v in alias:
            v = alias[v]
        return v

    for i, op in enumerate(p.step):
        if isinstance(op, P.Load):
            if op.state in cur:
                alias[op.out] = cur[op.state]
            else:
                carried[op.out] = op.state
        elif isinstance(op, P.Store):
            cur[op.out] = res(op.x)
        else:
            producer[op.out] = i

    deps: dict[str, frozenset] = {s.vec: frozenset() for s in p.inputs}
    for v, k in carried.items():
        deps[v] = frozenset([k])
    for i, op in enumerate(p.step):
        if isinstance(op, (P.Load, P.Store)):
            continue
        d: set = set()
        for r in op.reads():
            if r not in p.consts:
                d |= deps[res(r)]
        deps[op.out] = frozenset(d)

    # state graph: k -> states its next value depends on; strongly connected components, dependencies first
    keys = list(p.states)
    edges = {k: (deps[cur[k]] if k in cur else frozenset()) for k in keys}
    sccs = _tarjan(keys, edges)
    scc_of = {k: i for i, comp in enumerate(sccs) for k in comp}
    stages = []
    for comp in sccs:
        comp = [k for k in keys if k in comp]
        if not any(k in cur for k in comp):
            stages.append(_Stage("frozen", comp))
        elif len(comp) > 1 or comp[0] in edges[comp[0]]:
            stages.append(_Stage("scan", comp))
        else:
            stages.append(_Stage("shift", comp))

    level = {}
    for i, op in enumerate(p.step):
        if not isinstance(op, (P.Load, P.Store)):
            level[i] = max((scc_of[k] for k in deps[op.out]), default=-1)
    # ops on a recurrence: reachable backwards from the stores of a 'scan' stage, at that stage's level
    on_loop: dict[int, int] = {}
    for c, st in enumerate(stages):
        if st.kind != "scan":
            continue
        todo = [cur[k] for k in st.states]
        while todo:
            v = todo.pop()
            i = producer.get(v)
            if i is None or i in on_loop or level[i] != c:
                continue
            on_loop[i] = c
            todo.extend(res(r) for r in p.step[i].reads() if r not in p.consts)
    placement: dict[int, object] = {}
    pre = []
    for i in sorted(level):
        if level[i] < 0:
            pre.append(i)
            placement[i] = "pre"
        elif i in on_loop:
            stages[level[i]].ops.append(i)
            placement[i] = (level[i], "scan")
        else:
            stages[level[i]].post.append(i)
            placement[i] = (level[i], "post")
    # a running sum (readout accumulators, step counters) needs no loop: s_T = s_0 + sum_t v_t
    for st in stages:
        if st.kind == "scan" and len(st.states) == 1 and len(st.ops) == 1:
            op = p.step[st.ops[0]]
            k = st.states[0]
            if isinstance(op, P.Add) and cur.get(k) == op.out:
                a, b = res(op.a), res(op.b)
                if carried.get(a) == k and carried.get(b) != k or carried.get(b) == k and carried.get(a) != k:
                    st.kind = "accumulate"
    return _Plan(alias, carried, cur, pre, stages, placement)


def _tarjan(nodes: list[str], edges: dict[str, frozenset]) -> list[list[str]]:
    """Strongly connected components, each after every component it has edges to."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # recursion depth is bounded by the number of states (small)
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    for v in nodes:
        if v not in index:
            visit(v)
    return out


# ----------------------------------------------------------------------------------------------
# micro-op lowerings

MicroLowering = Callable[["_Lowering", _Env, P.MicroOp], None]
LOWER: dict[str, MicroLowering] = {}


def _micro(kind: str):
    def deco(fn):
        LOWER[kind] = fn
        return fn

    return deco


def _out_type(lw: "_Lowering", op: P.MicroOp) -> int:
    return compute_type(lw.p.vectors[op.out].bits)


def _cur(lw: "_Lowering", e: _Env, name: str) -> Optional[int]:
    """INT64 if the value of vector ``name`` is currently carried in int64, else INT32 (None for a
    constant: it adopts the type of its op)."""
    if name in lw.p.consts:
        return None
    if name in e.bools and name not in e.vals:
        return INT32
    return INT64 if e.g.types[e.vals[name]] == INT64 else INT32


def _pick(lw: "_Lowering", e: _Env, op: P.MicroOp, *names: str) -> int:
    """Type an op computes in: int64 when its output is declared wider than 32 bits or an operand
    already is int64 (no cast down and up again), else int32 (exact: the program declares the
    output width). Values keep the type they were computed in; consumers cast on demand."""
    if lw.p.vectors[op.out].bits > 32 or any(_cur(lw, e, n) == INT64 for n in names):
        return INT64
    return INT32


def _blocks_reshape(e: _Env, v: str, blocks: int, width: int, elem: int) -> str:
    return e.g.op("Reshape", v, e.g.ints([0] * (e.rank - 1) + [blocks, width]), out_type=elem, hint="blocks")


def _flatten_blocks(e: _Env, v: str, total: int, elem: int, out: Optional[str] = None) -> str:
    return e.g.op("Reshape", v, e.g.ints([0] * (e.rank - 1) + [total]), out_type=elem, hint="unblock")


def _with_width(lw: "_Lowering", e: _Env, op: P.MicroOp, v: str, elem: int, operands) -> str:
    """Broadcast an elementwise result to the declared width when every operand had one value."""
    n = lw.p.vectors[op.out].n
    if n > 1 and all(lw.p.width(o) == 1 for o in operands):
        v = e.g.op("Add", v, e.g.const(np.zeros(n), elem, "zeros"), out_type=elem, hint="widen")
    return v


@_micro("matvec")
def _matvec(lw: "_Lowering", e: _Env, op: P.MatVec) -> None:
    p = lw.p
    w = np.asarray(p.consts[op.w], np.int64)
    n_out, n_in = w.shape
    xbits = p.vectors[op.x].bits if op.x in p.vectors else 64
    acc = _out_type(lw, op)  # int32 when the program declares an accumulator of at most 32 bits
    if xbits <= 8 and w.min() >= -128 and w.max() <= 127 and acc == INT32:
        xt, wt, kernel, elem = INT8, e.g.const(w.T, INT8, _short(op.w)), "MatMulInteger", INT32
    else:
        # int32 products for large matrices (faster kernel); small ones in int64, which saves the cast
        # in front of the 64-bit requantisation that usually follows
        elem = INT64 if acc == INT64 or w.size <= SMALL_MATVEC else INT32
        xt, wt, kernel = elem, e.g.const(w.T, elem, _short(op.w)), "MatMul"
    if op.blocks == 1:
        xin = e.get(op.x, xt)
    elif (op.x, op.blocks) in e.blocked and op.x not in e.off:
        xin = e.cast(e.blocked[(op.x, op.blocks)], xt)
    else:
        xin = _blocks_reshape(e, e.get(op.x, xt), op.blocks, n_in, xt)
    y = e.g.op(kernel, xin, wt, out_type=elem, hint=f"{_short(op.out)}")
    if op.blocks > 1:
        y = _flatten_blocks(e, y, op.blocks * n_out, elem)
    if op.bias:
        y = e.g.op("Add", y, e.get(op.bias, elem), out_type=elem, hint="bias")
    e.set(op.out, y)


def _floordiv_pow2(e: _Env, n: str, shift, n_lo, n_hi, extra, elem: int = INT64, lazy: bool = False):
    """floor((n + extra) / 2^shift) for per-channel ``shift`` (arrays broadcast together), computed in
    ``elem`` (int32 or int64); ``n_lo``/``n_hi`` bound n. A non-negative offset K = k 2^s folded into
    ``extra`` makes the truncating ``Div`` a floor division where that cannot overflow (the result
    is then ``q - k``: with ``lazy`` returned as ``(q, -k)`` for the consumer to absorb); otherwise
    ``Mod`` (sign of the divisor) is subtracted first."""
    v, off = _floordiv_pow2_raw(e, n, shift, n_lo, n_hi, extra, elem)
    if lazy:
        return v, off
    if off is not None and np.any(off != 0):
        v = e.g.op(
            "Add", v, e.g.const(np.asarray(off, dtype=np.int64).reshape(-1), elem, "unbias"), out_type=elem, hint="shr"
        )
    return v


def _floordiv_pow2_raw(e: _Env, n: str, shift, n_lo, n_hi, extra, elem: int):
    top_ok = (1 << (31 if elem == INT32 else 63)) - 1
    shift = np.asarray(shift, dtype=np.int64)
    d = np.asarray([1 << int(v) for v in shift.reshape(-1)], dtype=object).reshape(shift.shape)
    lo = np.asarray(n_lo, dtype=object) + np.asarray(extra, dtype=object)
    hi = np.asarray(n_hi, dtype=object) + np.asarray(extra, dtype=object)
    shape = np.broadcast(lo, d).shape
    k = np.asarray([max(0, -(int(v) // int(dd))) for v, dd in np.broadcast(lo, d)], dtype=object).reshape(shape)
    g = e.g

    def c(a, hint):
        return g.const(
            np.asarray(np.broadcast_to(np.asarray(a, dtype=object), np.shape(a)), dtype=np.int64).reshape(-1),
            elem,
            hint,
        )

    dv = c(d, "pow2")
    ext = np.asarray(extra, dtype=object)
    if not np.any(k > 0):
        if np.any(ext != 0):
            n = g.op("Add", n, c(ext, "round"), out_type=elem, hint="round")
        return g.op("Div", n, dv, out_type=elem, hint="shr"), None
    if all(int(v) <= top_ok for v in np.ravel(np.asarray(hi, dtype=object) + k * d)):
        q = g.op(
            "Div", g.op("Add", n, c(ext + k * d, "round"), out_type=elem, hint="round"), dv, out_type=elem, hint="shr"
        )
        return q, np.asarray(-k, dtype=object).reshape(-1)
    if np.any(ext != 0):
        n = g.op("Add", n, c(ext, "round"), out_type=elem, hint="round")
    m = g.op("Mod", n, dv, fmod=0, out_type=elem, hint="mod")
    return g.op("Div", g.op("Sub", n, m, out_type=elem, hint="floor"), dv, out_type=elem, hint="shr"), None


def _fits32(*bounds) -> bool:
    return all(-(1 << 31) <= int(b) < (1 << 31) - (1 << 20) for b in bounds)


def _uniform(c) -> bool:
    c = np.asarray(c, dtype=object).reshape(-1)
    return bool(np.all(c == c[0]))


def _ints_fit(elem: int, *values) -> bool:
    lo, hi = P.int_range(32 if elem == INT32 else 64)
    return all(lo <= int(v) <= hi for v in np.ravel(np.asarray(values, dtype=object)))


@_micro("requant")
def _requant(lw: "_Lowering", e: _Env, op: P.Requant) -> None:
    p = lw.p
    m = np.asarray(p.consts[op.mult], np.int64).reshape(-1)
    s = np.asarray(p.consts[op.shift], np.int64).reshape(-1)
    lo_x, hi_x = lw.interval(op.x)
    bits = p.vectors[op.out].bits
    lo, hi = P.int_range(bits)
    r = P.requant_interval((lo_x, hi_x), p.consts[op.mult], p.consts[op.shift], op.pre)
    saturates = r[0] < lo or r[1] > hi
    if np.all(m == m[0]) and np.all(s == s[0]):  # per tensor: scalars keep the constants small
        m, s = m[:1], s[:1]
    xv, cx = e.get_raw(op.x)  # true x = xv + cx
    raw_lo, raw_hi = lo_x - cx, hi_x - cx  # per channel bounds of xv
    if op.pre == 0 and m.size == 1 and m[0] > 0 and int(m[0]) & (int(m[0]) - 1) == 0:
        # M = 2^a: (x 2^a + 2^(s-1)) >> s == (x + 2^(s-a-1)) >> (s-a): no 64-bit product needed
        sh = int(s[0]) - (int(m[0]).bit_length() - 1)
        wide = [v * (1 << max(0, -sh)) for v in (*raw_lo, *raw_hi)]
        elem = INT32 if _pick(lw, e, op, op.x) == INT32 and _fits32(*raw_lo, *raw_hi, *wide) else INT64
        x = e.cast(xv, elem)
        if sh <= 0:
            y = (
                x
                if sh == 0
                else e.g.op("Mul", x, e.g.const(np.int64(1 << -sh), elem, "pow2"), out_type=elem, hint="shl")
            )
            off = cx * (1 << -sh)
        else:
            y, off = _floordiv_pow2(e, x, np.asarray([sh]), raw_lo, raw_hi, cx + (1 << (sh - 1)), elem, lazy=True)
    else:
        elem = INT64
        x = e.cast(xv, INT64)
        if op.pre > 0:
            x, c1 = _floordiv_pow2(e, x, np.asarray([op.pre]), raw_lo, raw_hi, cx + (1 << (op.pre - 1)), lazy=True)
            lo_x = (lo_x + (1 << (op.pre - 1))) >> op.pre
            hi_x = (hi_x + (1 << (op.pre - 1))) >> op.pre
            cx = np.zeros(1, dtype=object) if c1 is None else c1
            raw_lo, raw_hi = lo_x - cx, hi_x - cx
        mo = m.astype(object)
        xm = e.g.op("Mul", x, e.g.const(m, INT64, "mult"), out_type=INT64, hint="mul")
        rnd = np.asarray([1 << (int(v) - 1) for v in s], dtype=object)
        y, off = _floordiv_pow2(e, xm, s, raw_lo * mo, raw_hi * mo, cx * mo + rnd, lazy=True)
    off = np.zeros(1, dtype=object) if off is None else np.asarray(off, dtype=object)
    if saturates:
        if _uniform(off) and _ints_fit(elem, lo - off[0], hi - off[0]):
            y = e.g.op(
                "Clip",
                y,
                e.g.const(np.int64(lo - off[0]), elem, "lo"),
                e.g.const(np.int64(hi - off[0]), elem, "hi"),
                out_type=elem,
                hint="sat",
            )
        else:
            y = e.g.op("Add", y, e.g.const(np.asarray(off, dtype=np.int64), elem, "unbias"), out_type=elem, hint="shr")
            off = np.zeros(1, dtype=object)
            y = e.g.op(
                "Clip",
                y,
                e.g.const(np.int64(lo), elem, "lo"),
                e.g.const(np.int64(hi), elem, "hi"),
                out_type=elem,
                hint="sat",
            )
    e.set(op.out, y, off)


def _binary(onnx_op: str):
    def fn(lw: "_Lowering", e: _Env, op) -> None:
        p = lw.p
        if onnx_op == "Mul":
            elem = _pick(lw, e, op, op.a, op.b)
            y = e.g.op(onnx_op, e.get(op.a, elem), e.get(op.b, elem), out_type=elem, hint=_short(op.out))
            e.set(op.out, _with_width(lw, e, op, y, elem, (op.a, op.b)))
            return
        sign = 1 if onnx_op == "Add" else -1
        ac, bc = op.a in p.consts, op.b in p.consts
        lo, hi = lw.interval(op.out)
        if bc and not ac or ac and not bc and sign > 0:
            # vector +- constant: nothing to compute, the constant joins the pending offset
            vec, k = (op.a, op.b) if bc else (op.b, op.a)
            v, c = e.get_raw(vec)
            kv = np.asarray(p.consts[k], dtype=object).reshape(-1)
            off = c + (sign * kv if bc else kv)
            elem = e.g.types[v] if e.g.types[v] in (INT32, INT64) else INT32
            if lw.p.vectors[op.out].n > 1 and p.width(vec) == 1 and np.asarray(off).size == 1:
                v = e.g.op(
                    "Add",
                    e.cast(v, elem),
                    e.g.const(np.zeros(lw.p.vectors[op.out].n), elem, "zeros"),
                    out_type=elem,
                    hint="widen",
                )
            if elem == INT32 and not _ints_fit(INT32, lo - off, hi - off):
                v = e.cast(v, INT64)
            e.set(op.out, v, off)
            return
        va, ca = (e.const(op.a), np.zeros(1, dtype=object)) if ac else e.get_raw(op.a)
        vb, cb = (e.const(op.b), np.zeros(1, dtype=object)) if bc else e.get_raw(op.b)
        off = ca + sign * cb
        elem = _pick(lw, e, op, op.a, op.b)
        if elem == INT32 and not _ints_fit(INT32, lo - off, hi - off):
            elem = INT64
        if ac:
            va = e.const(op.a, elem)
        if bc:
            vb = e.const(op.b, elem)
        y = e.g.op(onnx_op, e.cast(va, elem), e.cast(vb, elem), out_type=elem, hint=_short(op.out))
        e.set(op.out, _with_width(lw, e, op, y, elem, (op.a, op.b)), off)

    return fn


LOWER["add"] = _binary("Add")
LOWER["sub"] = _binary("Sub")
LOWER["mul"] = _binary("Mul")


@_micro("div")
def _div(lw: "_Lowering", e: _Env, op: P.Div) -> None:
    g = e.g
    two = g.const(np.int64(2), INT64, "two")
    a, b = e.get(op.a, INT64), e.get(op.b, INT64)
    num = g.op("Add", g.op("Mul", a, two, out_type=INT64, hint="div2a"), b, out_type=INT64, hint="div_num")
    den = g.op("Mul", b, two, out_type=INT64, hint="div_den")
    mod = g.op("Mod", num, den, fmod=0, out_type=INT64, hint="div_mod")  # in [0, 2b): the sign of the divisor
    q = g.op("Div", g.op("Sub", num, mod, out_type=INT64, hint="div_floor"), den, out_type=INT64, hint="div")
    e.set(op.out, _with_width(lw, e, op, q, INT64, (op.a, op.b)))


@_micro("isqrt")
def _isqrt(lw: "_Lowering", e: _Env, op: P.Isqrt) -> None:
    g = e.g
    x = e.get(op.x, INT64)
    y = g.op(
        "Cast",
        g.op("Floor", g.op("Sqrt", e.cast(x, DOUBLE), out_type=DOUBLE, hint="sqrt"), out_type=DOUBLE, hint="floor"),
        to=INT64,
        out_type=INT64,
        hint="isqrt0",
    )
    over = g.op(
        "Cast",
        g.op("Greater", g.op("Mul", y, y, out_type=INT64, hint="sq"), x, out_type=BOOL, hint="over"),
        to=INT64,
        out_type=INT64,
        hint="over",
    )
    y = g.op("Sub", y, over, out_type=INT64, hint="isqrt1")
    y1 = g.op("Add", y, g.const(np.int64(1), INT64, "one"), out_type=INT64, hint="next")
    under = g.op(
        "Cast",
        g.op("LessOrEqual", g.op("Mul", y1, y1, out_type=INT64, hint="sq"), x, out_type=BOOL, hint="under"),
        to=INT64,
        out_type=INT64,
        hint="under",
    )
    e.set(op.out, g.op("Add", y, under, out_type=INT64, hint="isqrt"))


@_micro("lut")
def _lut(lw: "_Lowering", e: _Env, op: P.Lut) -> None:
    g = e.g
    t = np.asarray(lw.p.consts[op.table], np.int64)
    store = storage_type(lw.p.vectors[op.out].bits)  # tables at rest in the output's storage type

    def lookup(vals: np.ndarray, first: int, hint: str) -> None:
        """y = vals[true x - first]. With a uniform pending offset c (true x = v + c) the table is
        rotated so that the raw value v indexes it directly (``Gather`` takes negative indices from
        the end): one node; a per-channel offset needs one ``Add`` of (c - first) first."""
        v, c = e.get_raw(op.x)
        xt = INT64 if e.g.types[v] == INT64 else INT32
        v = e.cast(v, xt)
        c = np.asarray(c, dtype=object).reshape(-1)
        size = len(vals)
        if _uniform(c) and -size <= first - int(c[0]) and first + size - 1 - int(c[0]) <= size - 1:
            j = np.arange(first - int(c[0]), first + size - int(c[0]), dtype=np.int64)
            table = np.empty(size, dtype=np.int64)
            table[j % size] = vals
            idx = v
        else:
            table = vals
            idx = g.op(
                "Add", v, g.const(np.asarray(c - first, dtype=np.int64), xt, "lut_idx"), out_type=xt, hint="lut_idx"
            )
        e.set(op.out, g.op("Gather", g.const(table, store, hint), idx, axis=0, out_type=store, hint=_short(op.out)))

    if t.size == 256:
        lookup(t, -128, _short(op.table))
        return
    elem = INT32
    lo, hi = lw.interval(op.x)
    lo, hi = max(lo, -32768), min(hi, 32767)
    size = (hi - lo + 1) * np.dtype(NP[store]).itemsize
    if lw.expand_tables is True or (lw.expand_tables == "auto" and lw.expanded_bytes + size <= EXPAND_BUDGET):
        # every possible input of the interpolated table, evaluated with the Lut rule at export time
        from ...quant.intexact import lut_apply

        lw.expanded_bytes += size
        lookup(lut_apply(t, np.arange(lo, hi + 1, dtype=np.int64)), lo, _short(op.table) + ".full")
        return
    x = e.get(op.x, INT32)
    k = int(t.size - 1).bit_length() - 1
    sh = 16 - k
    u = g.op("Add", x, g.const(np.int32(32768), INT32, "c32768"), out_type=INT32, hint="lut_u")  # >= 0
    if sh == 0:
        e.set(op.out, g.op("Gather", g.const(t, elem, _short(op.table)), u, axis=0, out_type=elem, hint=_short(op.out)))
        return
    step = g.const(np.int32(1 << sh), INT32, "lut_step")
    i = g.op("Div", u, step, out_type=INT32, hint="lut_i")  # u >= 0: truncation is the floor
    f = g.op("Mod", u, step, fmod=0, out_type=INT32, hint="lut_f")
    t0 = g.op("Gather", g.const(t[:-1], INT32, _short(op.table)), i, axis=0, out_type=INT32, hint="lut_t0")
    dt = g.op(
        "Gather", g.const(t[1:] - t[:-1], INT32, _short(op.table) + ".diff"), i, axis=0, out_type=INT32, hint="lut_dt"
    )
    prod = g.op("Mul", dt, f, out_type=INT32, hint="lut_prod")
    span = int(np.abs(t[1:] - t[:-1]).max()) * ((1 << sh) - 1)
    frac = _floordiv_pow2(
        e,
        prod,
        np.asarray([sh]),
        np.asarray([-span], dtype=object),
        np.asarray([span], dtype=object),
        np.asarray([1 << (sh - 1)], dtype=object),
        INT32,
    )
    y = g.op("Add", t0, frac, out_type=INT32, hint=_short(op.out))
    e.set(op.out, e.cast(y, elem))


@_micro("clamp")
def _clamp(lw: "_Lowering", e: _Env, op: P.Clamp) -> None:
    p, g = lw.p, e.g
    elem = _pick(lw, e, op, op.x)
    lo, hi = np.asarray(p.consts[op.lo]).reshape(-1), np.asarray(p.consts[op.hi]).reshape(-1)
    v, c = e.get_raw(op.x)
    lo_c, hi_c = lo.astype(object) - c, hi.astype(object) - c
    if np.any(c != 0) and lo_c.size == 1 and hi_c.size == 1 and _ints_fit(elem, lo_c, hi_c):
        # clamp(v + c, lo, hi) == clamp(v, lo - c, hi - c) + c: the offset stays pending
        y = g.op(
            "Clip",
            e.cast(v, elem),
            g.const(lo_c[0], elem, "lo"),
            g.const(hi_c[0], elem, "hi"),
            out_type=elem,
            hint=_short(op.out),
        )
        e.set(op.out, _with_width(lw, e, op, y, elem, (op.x,)), c)
        return
    x = e.get(op.x, elem)
    if lo.size == 1 and hi.size == 1:
        y = g.op("Clip", x, g.const(lo[0], elem, "lo"), g.const(hi[0], elem, "hi"), out_type=elem, hint=_short(op.out))
    else:
        y = g.op(
            "Min",
            g.op("Max", x, g.const(lo, elem, "lo"), out_type=elem, hint="clamp_lo"),
            g.const(hi, elem, "hi"),
            out_type=elem,
            hint=_short(op.out),
        )
    e.set(op.out, _with_width(lw, e, op, y, elem, (op.x,)))


@_micro("cmp_ge")
def _cmp_ge(lw: "_Lowering", e: _Env, op: P.CmpGe) -> None:
    p = lw.p
    elem = INT64 if INT64 in (_cur(lw, e, op.a), _cur(lw, e, op.b)) else INT32
    if (op.a in p.consts) != (op.b in p.consts):
        # a pending offset of the vector side moves into the constant: a + c >= k  <=>  a >= k - c
        vec, k = (op.a, op.b) if op.b in p.consts else (op.b, op.a)
        v, c = e.get_raw(vec)
        kc = np.asarray(p.consts[k], dtype=object).reshape(-1) - c
        if not _ints_fit(elem, kc):
            elem = INT64
        kv = e.g.const(np.asarray(kc, dtype=np.int64), elem, _short(k))
        ins = (e.cast(v, elem), kv) if vec == op.a else (kv, e.cast(v, elem))
        y = e.g.op("GreaterOrEqual", *ins, out_type=BOOL, hint=_short(op.out))
    else:
        y = e.g.op("GreaterOrEqual", e.get(op.a, elem), e.get(op.b, elem), out_type=BOOL, hint=_short(op.out))
    if lw.p.vectors[op.out].n > 1 and lw.p.width(op.a) == 1 and lw.p.width(op.b) == 1:
        e.set(op.out, _with_width(lw, e, op, e.cast(y, INT32), INT32, (op.a, op.b)))
    else:
        e.bools[op.out] = y


@_micro("select")
def _select(lw: "_Lowering", e: _Env, op: P.Select) -> None:
    elem = _pick(lw, e, op, op.a, op.b)
    y = e.g.op("Where", e.get_bool(op.c), e.get(op.a, elem), e.get(op.b, elem), out_type=elem, hint=_short(op.out))
    e.set(op.out, _with_width(lw, e, op, y, elem, (op.c, op.a, op.b)))


@_micro("concat")
def _concat(lw: "_Lowering", e: _Env, op: P.Concat) -> None:
    p, g = lw.p, e.g
    elem = _pick(lw, e, op, *op.xs)
    ref = next((x for x in op.xs if x not in p.consts), None)
    parts = []
    for x in op.xs:
        v = e.get(x, elem)
        if x in p.consts:  # a constant block: broadcast to the batch (and time) dims of a vector operand
            if ref is None:
                raise UnsupportedOpError("concat of constants only", where=f"micro-op concat -> '{op.out}'")
            lead = g.op("Shape", e.get(ref), start=0, end=e.rank - 1, out_type=INT64, hint="lead")
            shape = g.op("Concat", lead, g.ints([p.width(x)]), axis=0, out_type=INT64, hint="shape")
            v = g.op("Expand", v, shape, out_type=elem, hint="bcast")
        if op.blocks > 1:
            v = _blocks_reshape(e, v, op.blocks, p.width(x) // op.blocks, elem)
        parts.append(v)
    y = g.op("Concat", *parts, axis=-1, out_type=elem, hint=_short(op.out))
    if op.blocks > 1:
        e.blocked[(op.out, op.blocks)] = y  # a blocked matvec reads the (..., blocks, width) form directly
        y = _flatten_blocks(e, y, p.vectors[op.out].n, elem)
    e.set(op.out, y)


@_micro("gather")
def _gather(lw: "_Lowering", e: _Env, op: P.Gather) -> None:
    x = e.get(op.x)
    idx = e.g.const(np.asarray(lw.p.consts[op.index], np.int64).reshape(-1), INT64, _short(op.index))
    e.set(op.out, e.g.op("Gather", x, idx, axis=-1, out_type=e.g.types[x], hint=_short(op.out)))


def _window_seq(e: _Env, op: P.MicroOp) -> str:
    """The whole (T, B, n) sequence a window micro-op reads (window ops never sit in a Scan body:
    they read no state, so :func:`plan_stages` runs them over the sequence)."""
    if e.rank != 3:  # pragma: no cover - a staging bug
        raise UnsupportedOpError(f"window micro-op '{op.kind}' inside a Scan body", where=f"node '{op.node}'")
    return e.get(op.x)


@_micro("reverse")
def _reverse(lw: "_Lowering", e: _Env, op: P.Reverse) -> None:
    g, x = e.g, _window_seq(e, op)
    lo = g.ints([np.iinfo(np.int64).min], "int64_min")
    e.set(
        op.out, g.op("Slice", x, g.ints([-1]), lo, g.ints([0]), g.ints([-1]), out_type=g.types[x], hint=_short(op.out))
    )


@_micro("lookahead")
def _lookahead(lw: "_Lowering", e: _Env, op: P.Lookahead) -> None:
    g, x, s = e.g, _window_seq(e, op), int(op.steps)
    padded = g.op("Pad", x, g.ints([0, 0, 0, s, 0, 0], "pads"), out_type=g.types[x], hint="padded")
    e.set(
        op.out,
        g.op("Slice", padded, g.ints([s]), g.ints([I64_MAX]), g.ints([0]), out_type=g.types[x], hint=_short(op.out)),
    )


# load / store are structural (state variables of the Scans); they need no lowering of their own
STRUCTURAL = ("load", "store")


# ----------------------------------------------------------------------------------------------
# the model


def supported_micro_ops() -> set[str]:
    return set(LOWER) | set(STRUCTURAL)


def supported_kinds() -> set[str]:
    """IR op kinds a quantized graph may contain for this backend: those the quantizer lowers to
    an integer program, when every micro-op it can emit has an ONNX lowering here."""
    from ...quant.lowering import kinds_rendered_by

    return kinds_rendered_by(supported_micro_ops())


def check_supported(q) -> None:
    """Every micro-op of the program has a lowering, else :class:`UnsupportedOpError` naming the
    micro-op and the IR node it implements."""
    p = q.program
    kinds = {
        n.name: n.op.kind + (f" '{n.op.program.name}'" if getattr(n.op, "program", None) is not None else "")
        for n in q.graph.nodes
    }  # a generic Scan names its step program (e.g. 'GRU.after')
    for section, ops in (("step", p.step), ("final", p.final)):
        for i, op in enumerate(ops):
            if op.kind in LOWER or op.kind in STRUCTURAL:
                continue
            node = op.node or "?"
            raise UnsupportedOpError(
                f"micro-op '{op.kind}' is not supported by the onnx integer backend",
                where=f"node '{node}' ({kinds.get(node, 'unknown op')}), {section} micro-op #{i} -> '{op.out}', "
                "target onnx",
                hint=f"the onnx integer backend lowers: {', '.join(sorted(supported_micro_ops()))}",
            )


class _Lowering:
    def __init__(self, q, streaming: bool, opset: int, expand_tables="auto", probes=()):
        self.q, self.p, self.streaming, self.opset = q, q.program, streaming, opset
        self.expand_tables = expand_tables
        self.expanded_bytes = 0
        self.probes = list(probes)
        self.names = _Names()
        self.main = _Graph(self.names, "")
        self.seq = _Env(self, self.main, 3)  # (T, B, n) values of the main graph
        self.fin = _Env(self, self.main, 2)  # (B, n) values: initial / final states, the final program
        self.x = q.graph.inputs[0].name
        self.stage_info: list[dict] = []
        self._iv = self.p.intervals()

    def interval(self, name: str) -> tuple[int, int]:
        if name in self.p.consts:
            return P._const_iv(self.p.consts[name])
        return self._iv[name]

    def emit(self, e: _Env, op: P.MicroOp) -> None:
        LOWER[op.kind](self, e, op)

    # -- boundaries --------------------------------------------------------------------------------
    def quantize_inputs(self) -> None:
        g = self.main
        f = self.q.graph.in_features
        g.types[self.x] = FLOAT
        xt = g.op("Transpose", self.x, perm=[1, 0, 2], out_type=FLOAT, hint="x_tm")
        for s in self.p.inputs:
            ch = np.asarray(s.channels, np.int64)
            v = (
                xt
                if np.array_equal(ch, np.arange(f))
                else g.op("Gather", xt, g.ints(ch, "channels"), axis=-1, out_type=FLOAT, hint="channels")
            )
            # float32 arithmetic, as InputSpec specifies: a subtraction, then a multiplication
            v = g.op(
                "Sub", v, g.const(np.asarray(s.offset, np.float32), FLOAT, "offset"), out_type=FLOAT, hint="centred"
            )
            v = g.op(
                "Mul",
                v,
                g.const(np.asarray(s.inv_scale, np.float32), FLOAT, "inv_scale"),
                out_type=FLOAT,
                hint="scaled",
            )
            lo, hi = P.int_range(s.bits)
            # round half to even in float32 (exact), clip in float64 (every int32 limit exact)
            v = g.op("Cast", g.op("Round", v, out_type=FLOAT, hint="rint"), to=DOUBLE, out_type=DOUBLE, hint="rint64")
            v = g.op(
                "Clip",
                v,
                g.const(np.float64(lo), DOUBLE, "lo"),
                g.const(np.float64(hi), DOUBLE, "hi"),
                out_type=DOUBLE,
                hint="sat",
            )
            self.seq.set(
                s.vec, g.op("Cast", v, to=compute_type(s.bits), out_type=compute_type(s.bits), hint=_short(s.vec))
            )

    def batch(self) -> str:
        if not hasattr(self, "_batch"):
            self._batch = self.main.op("Shape", self.x, start=0, end=1, out_type=INT64, hint="batch")
        return self._batch

    def initial_states(self) -> dict[str, str]:
        g = self.main
        init = {}
        zeros: dict[tuple, str] = {}
        for k, s in self.p.states.items():
            carrier = compute_type(s.bits)
            if self.streaming:
                g.types[state_input_name(k)] = storage_type(s.bits)
                init[k] = self.fin.cast(state_input_name(k), carrier)
            else:
                key = (s.n, carrier)
                if key not in zeros:
                    dims = g.op("Concat", self.batch(), g.ints([s.n]), axis=0, out_type=INT64, hint="state_shape")
                    zeros[key] = g.op(
                        "ConstantOfShape",
                        dims,
                        out_type=carrier,
                        hint="zeros",
                        value=numpy_helper.from_array(np.zeros(1, NP[carrier])),
                    )
                init[k] = zeros[key]
        return init

    # -- stages ------------------------------------------------------------------------------------
    def build(self) -> onnx.ModelProto:
        p = self.p
        plan = plan_stages(p)
        self.quantize_inputs()
        state = self.initial_states()  # current (B, n) value of each state: initial, then final
        initial = dict(state)
        step_ops = p.step

        def seq_get_ready(v: str) -> None:
            """Make the sequence value of step vector v available in the main graph (aliases of
            earlier stores, and carried loads of shift / frozen states)."""
            r = self._res(plan, v)
            if not self.seq.has(v) and self.seq.has(r):
                self.seq.alias(v, r)

        def run_seq(indices: list[int]) -> None:
            for i in indices:
                op = step_ops[i]
                for r in op.reads():
                    if r not in p.consts:
                        seq_get_ready(r)
                self.emit(self.seq, op)

        run_seq(plan.pre)
        for c, st in enumerate(plan.stages):
            if st.kind == "scan":
                self._scan(plan, c, st, state)
            elif st.kind == "accumulate":
                self._accumulate(plan, st, state, initial)
            elif st.kind == "shift":
                k = st.states[0]
                v = plan.stored[k]
                seq_get_ready(v)
                sv = self.seq.get(v, compute_type(p.states[k].bits))
                state[k] = self.main.op(
                    "Gather",
                    sv,
                    self.main.ints(-1, "last"),
                    axis=0,
                    out_type=self.main.types[sv],
                    hint=f"{_short(k)}.last",
                )
                if any(s == k for s in plan.carried.values()):
                    head = self.main.op(
                        "Unsqueeze", initial[k], self.main.ints([0]), out_type=self.main.types[sv], hint="first"
                    )
                    body = self.main.op(
                        "Slice",
                        sv,
                        self.main.ints([0]),
                        self.main.ints([-1]),
                        self.main.ints([0]),
                        out_type=self.main.types[sv],
                        hint="shifted",
                    )
                    prev = self.main.op("Concat", head, body, axis=0, out_type=self.main.types[sv], hint="prev")
                    for lv, sk in plan.carried.items():
                        if sk == k:
                            self.seq.set(lv, prev)
                self.stage_info.append({"kind": "sequence", "states": [k], "note": "no recurrence: last value"})
            else:  # frozen: never stored during a step
                for k in st.states:
                    if any(s == k for s in plan.carried.values()):
                        sv = state[k]
                        tshape = self.main.op(
                            "Shape", self.seq.get(p.inputs[0].vec), start=0, end=1, out_type=INT64, hint="steps"
                        )
                        full = self.main.op(
                            "Concat",
                            tshape,
                            self.main.op("Shape", sv, out_type=INT64, hint="sshape"),
                            axis=0,
                            out_type=INT64,
                            hint="shape",
                        )
                        rep = self.main.op(
                            "Expand",
                            self.main.op(
                                "Unsqueeze", sv, self.main.ints([0]), out_type=self.main.types[sv], hint="first"
                            ),
                            full,
                            out_type=self.main.types[sv],
                            hint="frozen",
                        )
                        for lv, sk in plan.carried.items():
                            if sk == k:
                                self.seq.set(lv, rep)
                self.stage_info.append({"kind": "frozen", "states": list(st.states)})
            run_seq(st.post)

        # final program on the (B, n) states after the last step
        for k in p.states:
            self.fin.vals.pop(k, None)
        for op in p.final:
            if isinstance(op, P.Load):
                self.fin.set(op.out, state[op.state])
            else:
                self.emit(self.fin, op)
        return self._model(plan, state)

    def _accumulate(self, plan: _Plan, st: _Stage, state: dict[str, str], initial: dict[str, str]) -> None:
        """s_t = s_{t-1} + v_t over the chunk: ReduceSum for the final value, CumSum for the steps
        when a micro-op outside needs them (integer sums are exact in any order)."""
        p, g = self.p, self.main
        op = p.step[st.ops[0]]
        k = st.states[0]
        load = next(r for r in (op.a, op.b) if plan.carried.get(self._res(plan, r)) == k)
        other = op.b if load == op.a else op.a
        elem = compute_type(p.states[k].bits)
        if other in p.consts:
            steps = g.op(
                "Cast",
                g.op("Shape", self.seq.get(p.inputs[0].vec), start=0, end=1, out_type=INT64, hint="steps"),
                to=elem,
                out_type=elem,
                hint="steps",
            )
            v = self.seq.get(other, elem)
            total = g.op("Mul", v, steps, out_type=elem, hint=f"{_short(k)}.total")
            seq_v = None
        else:
            seq_v = self.seq.get(self._res(plan, other), elem)
            total = g.op("ReduceSum", seq_v, g.ints([0]), keepdims=0, out_type=elem, hint=f"{_short(k)}.total")
        state[k] = g.op("Add", initial[k], total, out_type=elem, hint=f"{_short(k)}.final")
        needed = self._outside_reads(plan, set(st.ops))
        carried_k = [lv for lv, sk in plan.carried.items() if sk == k]
        if op.out in needed or any(lv in needed for lv in carried_k):
            if seq_v is None:
                seq_v = g.op(
                    "Expand",
                    self.seq.get(other, elem),
                    g.op(
                        "Concat",
                        g.op("Shape", self.seq.get(p.inputs[0].vec), start=0, end=2, out_type=INT64, hint="tb"),
                        g.ints([p.vectors[op.out].n]),
                        axis=0,
                        out_type=INT64,
                        hint="shape",
                    ),
                    out_type=elem,
                    hint="bcast",
                )
            start = g.op("Unsqueeze", initial[k], g.ints([0]), out_type=elem, hint="first")
            run = g.op(
                "Add",
                start,
                g.op("CumSum", seq_v, g.const(np.int64(0), INT64, "axis0"), out_type=elem, hint="cumsum"),
                out_type=elem,
                hint=_short(op.out),
            )
            self.seq.set(op.out, run)
            prev = g.op("Sub", run, seq_v, out_type=elem, hint="prev")
            for lv in carried_k:
                self.seq.set(lv, prev)
        self.stage_info.append(
            {
                "kind": "accumulate",
                "states": [k],
                "ir_nodes": [op.node],
                "note": "running sum without a loop (ReduceSum / CumSum)",
            }
        )

    def _outside_reads(self, plan: _Plan, inside: set) -> set:
        p = self.p
        reads: set[str] = set()
        for j, op in enumerate(p.step):
            if j in inside or isinstance(op, (P.Load, P.Store)):
                continue
            reads.update(self._res(plan, r) for r in op.reads() if r not in p.consts)
        reads.update(self._res(plan, o.vec) for o in p.outputs if o.temporal)
        reads.update(self._res(plan, v) for v in self.probes)
        return reads

    @staticmethod
    def _res(plan: _Plan, v: str) -> str:
        while v in plan.alias:
            v = plan.alias[v]
        return v

    def _natural(self, e: _Env, v: str) -> int:
        if v in e.bools and v not in e.vals:
            return BOOL
        return INT64 if e.g.types[e.vals[v]] == INT64 else INT32

    def _scan(self, plan: _Plan, c: int, st: _Stage, state: dict[str, str]) -> None:
        """One Scan for the recurrence of stage c. The state variables are carried in the type their
        next value is computed in (int32, int64, or bool for 0/1 spikes), found by a first pass."""
        p = self.p
        carriers = {k: compute_type(p.states[k].bits) for k in st.states}
        expanded = self.expanded_bytes
        for _ in range(3):
            self.expanded_bytes = expanded  # a discarded pass leaves no tables behind
            body, be, s_in = self._body(plan, c, st, carriers)
            natural = {k: (self._natural(be, plan.stored[k]) if plan.stored.get(k) else carriers[k]) for k in st.states}
            if natural == carriers:
                break
            carriers = natural
        for k in st.states:
            state[k] = self.fin.cast(state[k], carriers[k])
        self._finish_scan(plan, c, st, state, body, be, s_in, carriers)

    def _body(self, plan: _Plan, c: int, st: _Stage, carriers: dict[str, int]):
        p = self.p
        g = self.main
        body = _Graph(self.names, f"scan{c}")
        be = _Env(self, body, 2)
        inside = set(st.ops)
        ops = [p.step[i] for i in st.ops]
        # body inputs: states (carried), then every sequence value read by a body op and made outside
        s_in = {k: self.names.fresh(f"scan{c}/{_short(k)}.prev") for k in st.states}
        for k, name in s_in.items():
            body.types[name] = carriers[k]
        for lv, k in plan.carried.items():
            if k in s_in:
                if carriers[k] == BOOL:
                    be.bools[lv] = s_in[k]
                else:
                    be.set(lv, s_in[k])
        seq_in: dict[str, str] = {}
        outer_vals: dict[str, str] = {}
        produced = {p.step[i].out for i in inside}
        for op in ops:
            for r in op.reads():
                if r in p.consts:
                    continue
                rr = self._res(plan, r)
                if rr in produced or (rr in plan.carried and plan.carried[rr] in s_in):
                    continue
                if rr not in seq_in:
                    name = self.names.fresh(f"scan{c}/{_short(rr)}")
                    seq_in[rr] = name
                    if not self.seq.has(rr):  # pragma: no cover - staging guarantees it was computed
                        raise RuntimeError(f"scan {c}: '{rr}' is not available before the loop")
                    if rr in self.seq.bools and rr not in self.seq.vals:
                        outer = self.seq.bools[rr]
                        be.bools[rr] = name
                    else:  # a pending offset travels into the body with the value
                        outer, off = self.seq.get_raw(rr)
                        be.set(rr, name, off)
                    outer_vals[rr] = outer
                    body.types[name] = g.types[outer]
        if not seq_in:  # Scan needs one scan input: the step count comes from the quantized input
            rr = p.inputs[0].vec
            seq_in[rr] = self.names.fresh(f"scan{c}/steps")
            outer_vals[rr] = self.seq.get_raw(rr)[0]
            body.types[seq_in[rr]] = g.types[outer_vals[rr]]
        for op in ops:
            for r in op.reads():
                if r not in p.consts and not be.has(r):
                    rr = self._res(plan, r)
                    if be.has(rr):
                        be.alias(r, rr)
            self.emit(be, op)
        be.seq_in, be.outer_vals = seq_in, outer_vals
        return body, be, s_in

    def _finish_scan(
        self,
        plan: _Plan,
        c: int,
        st: _Stage,
        state: dict[str, str],
        body: _Graph,
        be: _Env,
        s_in: dict[str, str],
        carriers: dict[str, int],
    ) -> None:
        p = self.p
        g = self.main
        seq_in = be.seq_in
        inside = set(st.ops)
        ops = [p.step[i] for i in st.ops]
        produced = {p.step[i].out for i in inside}
        # body outputs: next states, then sequences needed outside the loop
        outside_reads = self._outside_reads(plan, inside)
        outside_reads.update(plan.stored[k] for k in plan.stored if k not in s_in)
        scan_outs = [v for v in sorted(outside_reads) if be.has(v) and (v in produced or v in plan.carried)]
        names_out: list[str] = []
        types_out: list[int] = []
        body_inputs = set(s_in.values()) | set(seq_in.values())
        for k in st.states:
            if not plan.stored.get(k):
                v = s_in[k]
            elif carriers[k] == BOOL:
                v = be.get_bool(plan.stored[k])
            else:
                v = be.get(plan.stored[k], carriers[k])
            names_out.append(v)
        out_offsets = []
        for v in scan_outs:  # sequences leave the loop as they are: 0/1 vectors as bool, offsets pending
            if v in be.bools and v not in be.vals:
                names_out.append(be.bools[v])
                out_offsets.append("bool")
            else:
                val, off = be.get_raw(v)
                names_out.append(val)
                out_offsets.append(off)
        final_names = []
        for v in names_out:
            if v in body_inputs or v in final_names:
                v = body.op("Identity", v, out_type=body.types[v], hint="out")
            final_names.append(v)
        types_out = [body.types[v] for v in final_names]
        body.nodes, body.inits = _live(body.nodes, final_names, body.inits)
        bg = helper.make_graph(
            body.nodes,
            f"scan{c}_step",
            [
                helper.make_tensor_value_info(n, body.types[n], None)
                for n in list(s_in.values()) + list(seq_in.values())
            ],
            [helper.make_tensor_value_info(n, t, None) for n, t in zip(final_names, types_out)],
            initializer=body.inits,
        )
        outer_in = [state[k] for k in st.states] + [be.outer_vals[rr] for rr in seq_in]
        nodes_of = sorted({p.step[i].node for i in inside if p.step[i].node})
        outs = [self.names.fresh(f"{_short(k)}.final") for k in st.states] + [
            self.names.fresh(f"{_short(v)}.seq") for v in scan_outs
        ]
        res = g.op(
            "Scan",
            *outer_in,
            outputs=outs,
            out_type=INT32,
            out_types=types_out,
            body=bg,
            num_scan_inputs=len(seq_in),
            hint=f"scan{c}",
        )
        res = [res] if isinstance(res, str) else res
        for k, v in zip(st.states, res[: len(st.states)]):
            state[k] = v
        for v, sv, off in zip(scan_outs, res[len(st.states) :], out_offsets):
            if isinstance(off, str):
                self.seq.bools[v] = sv
            else:
                self.seq.set(v, sv, off)
        kinds: dict[str, int] = {}
        for n in body.nodes:
            kinds[n.op_type] = kinds.get(n.op_type, 0) + 1
        self.stage_info.append(
            {
                "kind": "scan",
                "scan_node": g.nodes[-1].name,
                "states": list(st.states),
                "ir_nodes": nodes_of,
                "micro_ops": len(ops),
                "onnx_nodes": len(body.nodes),
                "scan_inputs": len(seq_in),
                "scan_outputs": len(scan_outs),
                "body_op_types": kinds,
            }
        )

    def _model(self, plan: _Plan, state: dict[str, str]) -> onnx.ModelProto:
        p, g = self.p, self.main
        graph = self.q.graph
        f = graph.in_features
        outputs = []
        q_outputs = []
        for o, name in zip(p.outputs, output_names(p, self.x)):
            bits = p.vectors[o.vec].bits
            if o.temporal:
                v = self.seq.get(self._res(plan, o.vec), compute_type(bits))
                v = g.op("Transpose", v, perm=[1, 0, 2], out_type=g.types[v], hint=f"{_short(o.name)}.bt")
                dims = [BATCH, TIME, p.vectors[o.vec].n]
            else:
                v = self.fin.get(o.vec, compute_type(bits))
                dims = [BATCH, p.vectors[o.vec].n]
            scale = np.asarray(o.scale, np.float64).reshape(-1).astype(np.float32)
            if g.types[v] == INT64:
                fv = g.op("Cast", v, to=FLOAT, out_type=FLOAT, hint="f32")
                g.op("Mul", fv, g.const(scale, FLOAT, "scale"), out_type=FLOAT, outputs=[name])
            else:
                sc = g.const(scale if scale.size > 1 else scale[0], FLOAT, "scale")
                g.op("DequantizeLinear", v, sc, axis=-1, out_type=FLOAT, outputs=[name])
            g.op("Cast", v, to=storage_type(bits), out_type=storage_type(bits), outputs=[INT_OUT + name])
            outputs.append(helper.make_tensor_value_info(name, FLOAT, dims))
            q_outputs.append(helper.make_tensor_value_info(INT_OUT + name, storage_type(bits), dims))
        for v in self.probes:  # step vectors exposed for debugging (e.g. spike trains)
            sv = self.seq.get(self._res(plan, v))
            bits = p.vectors[v].bits
            g.op(
                "Cast",
                g.op("Transpose", sv, perm=[1, 0, 2], out_type=g.types[sv], hint="probe"),
                to=storage_type(bits),
                out_type=storage_type(bits),
                outputs=[PROBE + v],
            )
            q_outputs.append(
                helper.make_tensor_value_info(PROBE + v, storage_type(bits), [BATCH, TIME, p.vectors[v].n])
            )
        inputs = [helper.make_tensor_value_info(self.x, FLOAT, [BATCH, TIME, f])]
        s_outputs = []
        if self.streaming:
            for k, s in p.states.items():
                inputs.append(helper.make_tensor_value_info(state_input_name(k), storage_type(s.bits), [BATCH, s.n]))
                g.op(
                    "Cast",
                    state[k],
                    to=storage_type(s.bits),
                    out_type=storage_type(s.bits),
                    outputs=[state_output_name(k)],
                )
                s_outputs.append(
                    helper.make_tensor_value_info(state_output_name(k), storage_type(s.bits), [BATCH, s.n])
                )
        out_names = [v.name for v in outputs + q_outputs + s_outputs]
        g.nodes, g.inits = _live(g.nodes, out_names, g.inits)
        gp = helper.make_graph(
            g.nodes,
            "edgeseq_int_" + str(graph.metadata.get("source", "graph")).split(".")[-1],
            inputs,
            outputs + q_outputs + s_outputs,
            initializer=g.inits,
            doc_string="edgeseq integer program: " + self.q.plan.config.name + " plan",
        )
        model = helper.make_model(
            gp,
            opset_imports=[helper.make_opsetid("", self.opset)],
            ir_version=ir_version_for(self.opset),
            producer_name="edgeseq",
            producer_version=__version__,
        )
        helper.set_model_props(
            model,
            {
                "edgeseq.numerics": "integer",
                "edgeseq.streaming": str(bool(self.streaming)).lower(),
                "edgeseq.state_input_prefix": STATE_IN,
                "edgeseq.state_output_prefix": STATE_OUT,
                "edgeseq.integer_output_prefix": INT_OUT,
            },
        )
        return model


def kernel_summary(model: onnx.ModelProto) -> dict[str, dict[str, int]]:
    """Matrix kernels of a lowered model by type and place: {'MatMulInteger': {'sequence': n,
    'scan': m}, 'MatMul(int32)': ...} ('scan': inside a Scan body, run once per step)."""
    names = {INT8: "int8", INT16: "int16", INT32: "int32", INT64: "int64"}
    out: dict[str, dict[str, int]] = {}

    def walk(graph, where):
        inits = {t.name: t.data_type for t in graph.initializer}
        for n in graph.node:
            if n.op_type in ("MatMulInteger", "MatMul"):
                key = n.op_type if n.op_type == "MatMulInteger" else f"MatMul({names.get(inits.get(n.input[1]), '?')})"
                out.setdefault(key, {"sequence": 0, "scan": 0})[where] += 1
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g, "scan")

    walk(model.graph, "sequence")
    return out


def build_onnx_quantized(
    q, *, streaming: bool = False, opset: int = 21, expand_tables="auto", probes=(), info: Optional[dict] = None
) -> onnx.ModelProto:
    """Lower the integer program of the quantized graph ``q`` to an ONNX model (see the module
    docstring). ``expand_tables`` evaluates interpolated (int16) tables at every input the program
    can give them, so a lookup is one ``Gather`` instead of ten interpolation ops (same integers,
    larger model): True for every table, False for none, 'auto' (default) while the expanded
    tables stay within 1 MiB in all.
    ``probes`` names step vectors to expose as extra integer outputs ``probe.<name>`` (B, T, n)
    (spike trains, internal states) for debugging and tests.
    ``info``, when given, receives a description of the stages and kernels. Raises
    :class:`UnsupportedOpError` for a micro-op this backend has no lowering for."""
    if not (hasattr(q, "program") and hasattr(q, "graph") and hasattr(q, "plan")):
        raise ConfigError(
            f"build_onnx_quantized expects a quantized graph, got {type(q).__name__}",
            hint="quantize the graph first: edgeseq.quant.quantize(graph, calib_x)",
        )
    top = max_opset()
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
        raise ConfigError(f"opset must be an integer from {MIN_OPSET} to {top}, got {opset!r}", where="target onnx")
    if streaming and q.program.is_window:
        q.graph.require_streaming("a streaming ONNX export")
    check_supported(q)
    step_vectors = {op.out for op in q.program.step if not isinstance(op, P.Store)} | {s.vec for s in q.program.inputs}
    for v in probes:
        if v not in step_vectors:
            raise ConfigError(
                f"probe '{v}' is not a vector of the step program",
                where="target onnx",
                hint="probe names come from qgraph.program.listing()",
            )
    if expand_tables not in (True, False, "auto"):
        raise ConfigError(f"expand_tables must be True, False or 'auto', got {expand_tables!r}", where="target onnx")
    lw = _Lowering(q, bool(streaming), opset, expand_tables if expand_tables == "auto" else bool(expand_tables), probes)
    model = lw.build()
    if info is not None:
        info["stages"] = lw.stage_info
        info["kernels"] = kernel_summary(model)
        info["main_nodes"] = len(lw.main.nodes)
    return model
