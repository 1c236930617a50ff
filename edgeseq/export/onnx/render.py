"""Step programs as ONNX: one rule per primitive, shared by the float and the QDQ export.

A scan op's step program (:mod:`edgeseq.ir.step`) is rendered in three scopes:

- the *sequence* part (:func:`~edgeseq.ir.step.passes.hoist`: work on the step inputs only, input
  projections above all) over the whole time-major sequence (T, B, n), before the ``Scan``;
- the *loop*: the ``Scan`` body, (B, n) per step, carrying the program's states;
- the *post* part (:func:`~edgeseq.ir.step.passes.sink`: what only outputs need) over the Scan's
  (T, B, n) outputs.

A value is a :class:`Val` with up to three forms, each made on demand: float32 (``f``), boolean
(``mask``: comparisons) and integer parts (``parts``: quantized values of the QDQ export). A form is
a :class:`Ref`: some columns of a tensor. Ops of one kind whose operands are adjacent columns of the
same tensors run as one ONNX op (siblings are grouped while rendering: the gate pre-activations of
a GRU after its one recurrent product, ...), and matrix products with the same inputs share one
product with stacked rows. Products stay pending until used, so that a sum with another value
becomes ``Gemm``'s C input.

:class:`Numerics` says how parameters, products, quantization points, comparisons and states become
ONNX (float export: function attributes, :mod:`.lower`; QDQ export: :mod:`.qdq`). :data:`RULES`
maps each primitive class to its rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from ...ir.step import Activate, Add, Affine, Concat, Div, Gather, Gt, Mul, Prim, Quant, Select, Slice, StepProgram, Sub
from ...ir.step.passes import DeadCode, LinearState, SplitAffine, StripQuant, hoist, sink
from ._emit import Emitter, activation, prune

FLOAT, BOOL, INT64 = TensorProto.FLOAT, TensorProto.BOOL, TensorProto.INT64
KRON_MAX = 256  # a blocked product up to this many rows and columns uses one block-diagonal matrix


@dataclass(frozen=True)
class Ref:
    """Columns [start, start + n) of the last axis of tensor ``name`` (``width`` columns)."""

    name: str
    start: int
    n: int
    width: int

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.n == self.width

    def sub(self, start: int, n: int) -> "Ref":
        return Ref(self.name, self.start + start, n, self.width)


def whole(name: str, n: int) -> Ref:
    return Ref(name, 0, n, n)


@dataclass
class Part:
    """Channels ``idx`` of a value as integers ``q`` (real = q * scale (+ offset))."""

    q: Ref
    idx: np.ndarray
    bits: int
    scale: np.ndarray
    offset: Optional[np.ndarray] = None


@dataclass
class Val:
    """A value: (B, T, n) / (T, B, n) when temporal, else (B, n). A mask is 0/1 times the product of
    the parameters ``coef``."""

    n: int
    f: Optional[Ref] = None
    mask: Optional[Ref] = None
    parts: list = field(default_factory=list)
    temporal: bool = True
    coef: tuple = ()

    @property
    def single(self) -> Part:
        return self.parts[0]


@dataclass
class Pending:
    """Matrix products not yet emitted: the rows of ``ops`` stacked; term position k multiplies
    ``xs[k]`` (value, blocks) by the stacked weights ``ws[k]`` (one per op)."""

    ops: list
    xs: list
    ws: list
    biases: list

    @property
    def has_bias(self) -> bool:
        return any(b is not None for b in self.biases)


# ----------------------------------------------------------------------------------------------
# scopes


class Scope:
    """One ONNX graph being built (a function body, the main graph or a Scan body): its emitter,
    the element types of the tensors it makes, pending products and slices. ``rank`` is 3 for
    whole sequences (``lead``: a tensor and the axis of it whose length is the first dim of
    the sequences), 2 inside a loop."""

    def __init__(
        self, e: Emitter, num: "Numerics", rank: int, lead: Optional[tuple] = None, parent: Optional["Scope"] = None
    ):
        self.e, self.num, self.rank, self.lead, self.parent = e, num, rank, lead, parent
        self.types: dict[str, int] = {}
        self.pending: dict = {}
        self.slices: dict[str, list] = {}  # tensor -> [(start, n, Slice node)] made by tensor()
        self.whole: set[str] = set()  # tensors tensor() handed out whole
        self.scans = 0  # Scan bodies made in this scope (their names start with 's<k>.')
        self._cache: dict = {}

    # -- nodes ----------------------------------------------------------------------------------
    def op(self, op_type: str, *inputs, elem: Optional[int] = None, **kw):
        out = self.e.op(op_type, *inputs, **kw)
        if elem is not None:
            for o in [out] if isinstance(out, str) else out:
                self.types[o] = elem
        return out

    def const(self, value, hint: str = "c", dtype=np.float32) -> str:
        return self.e.const(value, hint, dtype)

    def ints(self, values, hint: str = "i") -> str:
        return self.e.ints(values, hint)

    def type_of(self, name: str) -> int:
        if name in self.types:
            return self.types[name]
        return self.parent.type_of(name) if self.parent is not None else FLOAT

    def cached(self, key, make: Callable[[], str]) -> str:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def shape(self, n: int) -> str:
        """Reshape target (..., n) for rows of this scope's values."""
        if self.rank == 2:
            return self.ints([-1, n], "rows")
        src, ax = self.lead
        return self.cached(
            ("shape", self.lead, n),
            lambda: self.op(
                "Concat",
                self.cached(("lead", self.lead), lambda: self.op("Shape", src, start=ax, end=ax + 1, elem=INT64)),
                self.ints([-1, n], "n"),
                axis=0,
                elem=INT64,
                hint="shape",
            ),
        )

    # -- forms ------------------------------------------------------------------------------------
    def tensor(self, r: Ref) -> str:
        """The tensor of ``r`` (a pending product or lazy value is emitted, partial columns sliced)."""
        name = self.resolve(r.name)
        if r.whole:
            self.whole.add(name)
            return name

        def cut():
            out = self.op(
                "Slice",
                name,
                self.ints([r.start]),
                self.ints([r.start + r.n]),
                self.ints([-1], "last"),
                elem=self.type_of(name),
                hint="lane",
            )
            self.slices.setdefault(name, []).append((r.start, r.n, self.e.nodes[-1], r.width))
            return out

        return self.cached(("lane", name, r.start, r.n), cut)

    def merge_slices(self) -> None:
        """Disjoint slices of one tensor become one ``Split`` (gaps get unused outputs)."""
        for name, cuts in self.slices.items():
            cuts = sorted(cuts, key=lambda c: c[0])
            if len(cuts) < 2 or any(a[0] + a[1] > b[0] for a, b in zip(cuts, cuts[1:])):
                continue
            sizes, outs, pos = [], [], 0
            for start, n, node, _ in cuts + [(cuts[0][3], 0, None, 0)]:
                if start > pos:
                    sizes.append(start - pos)
                    outs.append(self.e.fresh("gap"))
                if node is not None:
                    sizes.append(n)
                    outs.append(node.output[0])
                pos = start + n
            at = min(self.e.nodes.index(c[2]) for c in cuts)
            for c in cuts:
                self.e.nodes.remove(c[2])
            t = numpy_helper.from_array(np.asarray(sizes, np.int64), self.e.fresh("split"))
            made = [helper.make_node("Split", [name, t.name], outs, axis=-1, name=self.e.fresh("n_split"))]
            if self.e.use_initializers:
                self.e.initializers.append(t)
            else:
                made.insert(0, helper.make_node("Constant", [], [t.name], value=t, name=self.e.fresh("n_split_sizes")))
            self.e.nodes[at:at] = made
        self.slices = {}

    def resolve(self, name: str) -> str:
        """``name``, or the tensor a pending product / lazy value registered under it becomes."""
        p = self.pending.pop(name, None)
        if p is not None:
            self._cache[("pending", name)] = self.num.affine(self, p, None) if isinstance(p, Pending) else p()
        return self._cache.get(("pending", name), name)

    def lazy(self, make: Callable[[], str], hint: str) -> str:
        """A name for the tensor ``make()`` emits when first used."""
        token = self.e.fresh(hint)
        self.pending[token] = make
        return token

    def f(self, v: Val) -> str:
        """The float32 tensor of ``v``."""
        if v.f is None:
            v.f = whole(self.num.to_float(self, v), v.n)
        return self.tensor(v.f)

    def boolean(self, v: Val) -> str:
        if v.mask is not None:
            return self.tensor(v.mask)
        return self.op("Cast", self.f(v), to=BOOL, elem=BOOL, hint="mask")

    def lane_vals(self, ops: Sequence[Prim], name: str, make: Callable[[Ref], Val]) -> list:
        """Values for ``ops`` as consecutive columns of tensor ``name``."""
        total = sum(o.n for o in ops)
        out, off = [], 0
        for o in ops:
            out.append(make(Ref(name, off, o.n, total)))
            off += o.n
        return out


# ----------------------------------------------------------------------------------------------
# numerics


class Numerics:
    """How a rendering turns parameters, products, points and states into ONNX. This base class is
    the float semantics; :mod:`.lower` adds where parameters live, :mod:`.qdq` the quantization."""

    strip = True  # render the program without its quantization points

    def __init__(self, prog: StepProgram):
        self.prog = prog

    def start(self, prog: StepProgram) -> None:
        """Called with the program as rendered (:func:`prepare`) before rendering starts."""
        self.prog = prog

    def value_of(self, name: str) -> np.ndarray:
        return np.asarray(self.prog.params[name], np.float64)

    def array(self, sc: Scope, key: str, value: np.ndarray, dtype=np.float32) -> str:
        """A constant tensor in ``sc`` (``key`` names it where the backend keeps constants by name)."""
        return sc.const(np.asarray(value, dtype), key.replace("+", "_"), dtype)

    def param(self, sc: Scope, name: str) -> str:
        return self.array(sc, name, np.ravel(self.value_of(name)))

    def params(self, sc: Scope, names: Sequence[str], ns: Sequence[int]) -> str:
        """Parameters of sibling ops side by side (each broadcast to its op's length)."""
        if len(names) == 1:
            return self.param(sc, names[0])
        vals = [np.broadcast_to(np.ravel(self.value_of(k)), (n,)) for k, n in zip(names, ns)]
        return self.array(sc, "+".join(f"{k}.{n}" for k, n in zip(names, ns)), np.concatenate(vals))

    def to_float(self, sc: Scope, v: Val) -> str:
        if v.mask is not None:
            m = sc.tensor(v.mask)
            if v.coef:
                y = sc.op("Where", m, self.param(sc, v.coef[0]), sc.const(0.0, "zero"), hint="spikes")
            else:
                y = sc.op("Cast", m, to=FLOAT, hint="spikes")
            for c in v.coef[1:]:
                y = sc.op("Mul", y, self.param(sc, c))
            return y
        raise RuntimeError("a value without a float, mask or integer form")  # pragma: no cover

    # -- products ----------------------------------------------------------------------------------
    def weight(self, sc: Scope, ws: Sequence[str], blocks: int) -> str:
        """The stacked weights ``ws`` transposed (in, out), block-diagonal for ``blocks`` > 1."""
        w = np.vstack([self.value_of(k) for k in ws])
        key = "+".join(ws) + ("" if blocks == 1 else f".kron{blocks}") + "_t"
        return self.array(sc, key, np.kron(np.eye(blocks), w).T if blocks > 1 else w.T)

    def bias(self, sc: Scope, p: Pending) -> Optional[str]:
        if not p.has_bias:
            return None
        if len(p.ops) == 1:
            return self.param(sc, p.biases[0])
        vals = [np.zeros(o.n) if b is None else np.ravel(self.value_of(b)) for o, b in zip(p.ops, p.biases)]
        return self.array(sc, "+".join(b or f"0.{o.n}" for o, b in zip(p.ops, p.biases)), np.concatenate(vals))

    def affine(self, sc: Scope, p: Pending, addend: Optional[str]) -> str:
        """sum_k xs[k] W_k^T + bias (+ addend): a chain of Gemms (C = the running sum) in a loop, MatMul
        and Add over sequences (a sequence input read by MatMuls only: onnxruntime then propagates no
        Q/DQ pair into it when its own quantizer quantized the model)."""
        bias = self.bias(sc, p)
        acc = addend if addend is not None else bias
        if addend is not None and bias is not None:
            acc = sc.op("Add", addend, bias)
        for (xv, blocks), ws in zip(p.xs, p.ws):
            acc = self.product(sc, sc.f(xv), ws, blocks, acc)
        return acc

    def product(self, sc: Scope, x: str, ws: Sequence[str], blocks: int, acc: Optional[str]) -> str:
        o, i = sum(self.value_of(k).shape[0] for k in ws), self.value_of(ws[0]).shape[1]
        if blocks > 1 and blocks * max(o, i) > KRON_MAX:  # one (in, out) product per block
            lead = [0] * (sc.rank - 1)
            xb = sc.op("Reshape", x, sc.ints(lead + [blocks, i], "blocks"))
            y = sc.op("Reshape", sc.op("MatMul", xb, self.weight(sc, ws, 1)), sc.ints(lead + [-1], "flat"))
        elif sc.rank == 2:
            return sc.op("Gemm", x, self.weight(sc, ws, blocks), *([acc] if acc is not None else []))
        else:
            y = sc.op("MatMul", x, self.weight(sc, ws, blocks))
        return y if acc is None else sc.op("Add", y, acc)

    def fusable(self, p: Pending) -> bool:
        """Whether a sum with another value may be the products' addend."""
        return not p.has_bias

    # -- points, comparisons, states ----------------------------------------------------------------
    def quant_key(self, op: Quant, sc: Optional[Scope] = None):
        """Sibling points with equal keys may share one quantization (None: never)."""
        return ("identity",)

    def quant(self, R: "Renderer", sc: Scope, ops: Sequence[Quant], env: dict) -> list:
        return [env[o.x] for o in ops]

    def gt(self, R: "Renderer", sc: Scope, op: Gt, env: dict) -> Val:
        a, b = R.operand(sc, op.a, env), R.operand(sc, op.b, env)
        return Val(op.n, mask=whole(sc.op("Greater", a, b, elem=BOOL, hint="gt"), op.n))

    def carrier(self, k: int) -> int:
        """Element type state ``k`` has inside the loop."""
        return FLOAT

    def storage(self, k: int) -> int:
        """Element type state ``k`` has outside the loop."""
        return FLOAT

    def state_val(self, sc: Scope, k: int, name: str) -> Val:
        return Val(self.prog.states[k].n, f=whole(name, self.prog.states[k].n))

    def state_next(self, sc: Scope, k: int, v: Val) -> str:
        return sc.f(v)

    def state_final(self, sc: Scope, k: int, name: str, out: Optional[str]) -> str:
        return sc.op("Identity", name, outputs=[out]) if out is not None and out != name else name

    def single(self, sc: Scope, v: Val) -> Part:
        """``v`` as one integer tensor holding every channel in order (QDQ)."""
        raise NotImplementedError  # pragma: no cover - float values have no integer form


# ----------------------------------------------------------------------------------------------
# rules, one per primitive


RULES: dict[type, Callable] = {}
GROUPED = (Affine, Activate, Add, Sub, Mul, Quant)  # sibling ops of these kinds may run as one
COMMUTATIVE = (Add, Mul)


def rule(*classes):
    def deco(fn):
        for c in classes:
            RULES[c] = fn
        return fn

    return deco


@rule(Affine)
def _affine(R: "Renderer", sc: Scope, grp, env) -> list:
    ops = [g[0] for g in grp]
    first = ops[0]
    xs = [(env[t.x], t.blocks) for t in first.terms]
    ws = [[next(u.w for u in o.terms if u.x == t.x) for o in ops] for t in first.terms]
    token = sc.e.fresh("affine")
    sc.pending[token] = Pending(ops, xs, ws, [o.bias for o in ops])
    return sc.lane_vals(ops, token, lambda r: Val(r.n, f=r))


def _elementwise(R: "Renderer", sc: Scope, grp, env, make: Callable[[list], str]) -> list:
    """Render a group of sibling elementwise ops: ``make(operand tensors) -> output tensor``."""
    ops = [g[0] for g in grp]
    args = [R.args(o, orient) for o, orient in ((g[0], g[1]) for g in grp)]
    operands = []
    for j, name in enumerate(args[0]):
        if R.prog.is_param(name):
            operands.append(sc.num.params(sc, [a[j] for a in args], [o.n for o in ops]))
        elif len(ops) == 1:
            operands.append(sc.f(env[name]))
        else:
            r = env[name].f
            operands.append(sc.tensor(Ref(r.name, r.start, sum(o.n for o in ops), r.width)))
    return sc.lane_vals(ops, make(operands), lambda r: Val(r.n, f=r))


@rule(Activate)
def _activate(R, sc, grp, env):
    op = grp[0][0]
    if op.fn.value == "identity":
        return [env[g[0].x] for g in grp]
    return _elementwise(R, sc, grp, env, lambda a: activation(sc.e, op.fn, a[0], op.slope, op.lo, op.hi))


@rule(Add)
def _add(R, sc, grp, env):
    ops = [g[0] for g in grp]
    args = [R.args(g[0], g[1]) for g in grp]
    for j in (0, 1):  # a pending product read whole, by these ops only: the other operand is its addend
        p = R.pending_read(sc, [a[j] for a in args], env)
        if p is not None and sc.num.fusable(sc.pending[p]):
            other = [a[1 - j] for a in args]
            if R.prog.is_param(other[0]):
                addend = sc.num.params(sc, other, [o.n for o in ops])
            else:
                r = env[other[0]].f if len(ops) > 1 else None
                addend = (
                    sc.tensor(Ref(r.name, r.start, sum(o.n for o in ops), r.width))
                    if r is not None
                    else sc.f(env[other[0]])
                )
            out = sc.num.affine(sc, sc.pending.pop(p), addend)
            sc._cache[("pending", p)] = out
            return sc.lane_vals(ops, out, lambda r: Val(r.n, f=r))
    return _elementwise(R, sc, grp, env, lambda a: sc.op("Add", *a))


@rule(Sub)
def _sub(R, sc, grp, env):
    return _elementwise(R, sc, grp, env, lambda a: sc.op("Sub", *a))


@rule(Mul)
def _mul(R, sc, grp, env):
    if len(grp) == 1:
        op = grp[0][0]
        for m, o in ((op.a, op.b), (op.b, op.a)):
            v = env.get(m)
            if v is not None and v.mask is not None:  # spikes / resets
                if R.prog.is_param(o):
                    return [Val(op.n, mask=v.mask, coef=v.coef + (o,))]
                if not v.coef:
                    return [
                        Val(op.n, f=whole(sc.op("Where", sc.tensor(v.mask), sc.f(env[o]), sc.const(0.0, "zero")), op.n))
                    ]
    return _elementwise(R, sc, grp, env, lambda a: sc.op("Mul", *a))


@rule(Div)
def _div(R, sc, grp, env):
    op = grp[0][0]
    a, b = R.operand(sc, op.a, env), R.operand(sc, op.b, env)
    zero = sc.op("Equal", b, sc.const(0.0, "zero"), elem=BOOL)
    q = sc.op("Div", a, sc.op("Where", zero, sc.const(1.0, "one"), b))
    return [Val(op.n, f=whole(sc.op("Where", zero, sc.const(0.0, "zero"), q), op.n))]


@rule(Gt)
def _gt(R, sc, grp, env):
    return [sc.num.gt(R, sc, grp[0][0], env)]


@rule(Select)
def _select(R, sc, grp, env):
    op = grp[0][0]
    c = sc.boolean(env[op.c])
    y = sc.op("Where", c, R.operand(sc, op.a, env), R.operand(sc, op.b, env))
    return [Val(op.n, f=whole(y, op.n))]


@rule(Concat)
def _concat(R, sc, grp, env):
    op = grp[0][0]
    xs = [R.operand(sc, x, env) for x in op.xs]
    if op.blocks == 1:
        return [Val(op.n, f=whole(sc.op("Concat", *xs, axis=-1), op.n))]
    lead = [0] * (sc.rank - 1)
    xs = [sc.op("Reshape", x, sc.ints(lead + [op.blocks, -1], "blocks")) for x in xs]
    y = sc.op("Reshape", sc.op("Concat", *xs, axis=-1), sc.ints(lead + [-1], "flat"))
    return [Val(op.n, f=whole(y, op.n))]


@rule(Slice)
def _slice(R, sc, grp, env):
    op = grp[0][0]
    v = env[op.x]
    parts = [
        Part(p.q.sub(op.start, op.n), np.arange(op.n), p.bits, p.scale[op.start : op.start + op.n])
        for p in v.parts
        if np.array_equal(p.idx, np.arange(v.n)) and p.offset is None
    ]
    return [
        Val(
            op.n,
            f=v.f.sub(op.start, op.n) if v.f is not None else None,
            mask=v.mask.sub(op.start, op.n) if v.mask is not None else None,
            parts=parts,
            coef=v.coef,
        )
    ]


@rule(Gather)
def _gather(R, sc, grp, env):
    op = grp[0][0]
    idx = sc.ints(np.asarray(sc.num.value_of(op.index), np.int64).ravel(), "index")
    return [Val(op.n, f=whole(sc.op("Gather", sc.f(env[op.x]), idx, axis=-1), op.n))]


@rule(Quant)
def _quant(R, sc, grp, env):
    return sc.num.quant(R, sc, [g[0] for g in grp], env)


# ----------------------------------------------------------------------------------------------
# the renderer


def signatures(prog: StepProgram, depth: int = 4) -> dict[str, tuple[str, str]]:
    """Each value's chain of single consumers up to its first nonlinearity (kinds, the function,
    point roles) as (grouping key, order key). Sibling products with equal grouping keys share one
    product: the chain before the nonlinearity where it holds a quantization point (sibling points
    then share one QuantizeLinear), else the whole chain. Rows are ordered by the whole chains, so
    that gates of one function sit side by side."""
    cons = prog.consumers()
    out = {}
    for op in prog.body:
        sig, v = [], op.out
        for _ in range(depth):
            cs = cons.get(v, [])
            if len(cs) != 1:
                break
            c = cs[0]
            sig.append(
                c.kind
                + (f":{c.fn.value}" if isinstance(c, Activate) else "")
                + (f":{c.point.role.value}" if isinstance(c, Quant) else "")
            )
            if isinstance(c, Activate):
                break
            v = c.out
        pre = [k for k in sig if not k.startswith("Activate")]
        out[op.out] = (",".join(pre if any(k.startswith("Quant") for k in pre) else sig), ",".join(sig))
    return out


class Renderer:
    """Renders ops of a prepared program into scopes; ``prog`` is the whole prepared program
    (consumers, signatures)."""

    def __init__(self, prog: StepProgram):
        self.prog = prog
        self.sig = signatures(prog)
        self.uses: dict[str, int] = {}
        for op in prog.body:
            for r in op.reads():
                self.uses[r] = self.uses.get(r, 0) + 1
        for v in list(prog.outputs) + list(prog.next_state.values()):
            self.uses[v] = self.uses.get(v, 0) + 1

    # -- operands -------------------------------------------------------------------------------
    def operand(self, sc: Scope, name: str, env) -> str:
        return sc.num.param(sc, name) if self.prog.is_param(name) else sc.f(env[name])

    @staticmethod
    def args(op: Prim, orient: int) -> list:
        r = list(op.reads())
        return r[::-1] if orient else r

    def pending_read(self, sc: Scope, names, env) -> Optional[str]:
        """The pending product that ``names`` (one per op of a group) read whole, if nothing else
        reads its rows."""
        if any(self.prog.is_param(n) or env[n].f is None for n in names):
            return None
        refs = [env[n].f for n in names]
        p = sc.pending.get(refs[0].name)
        if (
            not isinstance(p, Pending)
            or any(r.name != refs[0].name for r in refs)
            or refs[0].start != 0
            or sum(r.n for r in refs) != refs[0].width
            or any(self.uses.get(o.out) != 1 for o in p.ops)
        ):
            return None
        return refs[0].name

    # -- grouping ---------------------------------------------------------------------------------
    def key(self, sc: Scope, op: Prim, env):
        if not isinstance(op, GROUPED):
            return None
        if isinstance(op, Affine):
            xs = [t.x for t in op.terms]
            if len(set(xs)) != len(xs) or any(t.blocks > 1 for t in op.terms):
                return None
            # in a loop, or in float: with equal signatures; quantized sequences: every product of one input
            return ("Affine", tuple(sorted(xs))) + ((self.sig[op.out][0],) if sc.rank == 2 or sc.num.strip else ())
        for r in op.reads():
            v = env.get(r)
            if v is not None and v.f is None:
                return None
        if isinstance(op, Quant):
            k = sc.num.quant_key(op, sc)
            return None if k is None else ("Quant",) + tuple(k)
        if isinstance(op, Activate):
            return ("Activate", op.fn, op.slope, op.lo, op.hi)
        return (op.kind,)

    def group(self, sc: Scope, ops, i: int, env, done) -> list:
        """``ops[i]`` and the later sibling ops that can run with it now: [(op, orientation, lanes)]."""
        op = ops[i]
        key = self.key(sc, op, env)
        single = [(op, 0, None)]
        if key is None:
            return single
        ready = [
            o
            for o in ops[i + 1 :]
            if o.out not in done
            and self.key(sc, o, env) == key
            and all(self.prog.is_param(r) or r in env for r in o.reads())
        ]
        if not ready:
            return single
        if isinstance(op, Affine):
            members = [(o, 0, None) for o in [op] + ready]
            return sorted(members, key=lambda m: self.sig[m[0].out][1])
        base = self._lanes(op, 0, env)
        if base is None:
            return single
        members = [(op, 0, base)]
        for o in ready:
            for orient in (0, 1) if isinstance(o, COMMUTATIVE) else (0,):
                ln = self._lanes(o, orient, env)
                if ln is not None and all(a[0] == b[0] for a, b in zip(ln, base)):
                    members.append((o, orient, ln))
                    break
        slots = [j for j, s in enumerate(base) if s[0] != "p"]
        members.sort(key=lambda m: m[2][slots[0]][1].start)
        k = next(j for j, m in enumerate(members) if m[0] is op)

        def next_to(a, b) -> bool:
            return all(b[2][j][1].start == a[2][j][1].start + a[0].n for j in slots)

        lo, hi = k, k
        while lo > 0 and next_to(members[lo - 1], members[lo]):
            lo -= 1
        while hi + 1 < len(members) and next_to(members[hi], members[hi + 1]):
            hi += 1
        return members[lo : hi + 1]

    def _lanes(self, op: Prim, orient: int, env):
        """Per operand: ('p', None) for a parameter, (tensor, Ref) for a value's float columns."""
        out = []
        for name in self.args(op, orient):
            if self.prog.is_param(name):
                out.append(("p", None))
                continue
            r = env[name].f
            if r is None or r.n != op.n:
                return None
            out.append((r.name, r))
        return out

    # -- rendering --------------------------------------------------------------------------------
    def render(self, sc: Scope, ops: Sequence[Prim], env: dict) -> None:
        done: set[str] = set()
        for i, op in enumerate(ops):
            if op.out in done:
                continue
            grp = self.group(sc, ops, i, env, done)
            for g, v in zip(grp, RULES[type(op)](self, sc, grp, env)):
                env[g[0].out] = v
                done.add(g[0].out)


# ----------------------------------------------------------------------------------------------
# a whole scan


def prepare(prog: StepProgram, strip: bool) -> StepProgram:
    """The program as rendered: input terms split off; in float (``strip``) without quantization
    points and with linear state updates in their multiply-add form."""
    p = DeadCode()(SplitAffine()(StripQuant()(prog) if strip else prog))
    return LinearState()(p) if strip else p


@dataclass
class ScanResult:
    outputs: list  # one time-major Val per program output, in the outer scope
    finals: list  # final state tensors


def render_scan(
    num: Numerics,
    sc: Scope,
    prog: StepProgram,
    x: Val,
    init: Sequence[str],
    finals: Sequence[Optional[str]],
    hint: str,
    probes: Sequence[str] = (),
) -> ScanResult:
    """Render ``prog`` on the time-major input ``x`` (T, B, I) in scope ``sc`` (rank 3, ``lead``
    set): the sequence part, one ``Scan`` carrying the states from ``init``, the post part. ``finals``
    names the final state tensors (None: generated); ``probes`` are program values also returned
    per step (in ``ScanResult.outputs`` after the program's outputs)."""
    p = prepare(prog, num.strip)
    num.start(p)
    R = Renderer(p)
    h = hoist(p, strip=False)
    sk = sink(h.loop)
    env: dict[str, Val] = {p.inputs[0].name: x}
    R.render(sc, h.seq.body, env)

    sc.scans += 1
    body = Scope(Emitter(prefix=f"s{sc.scans}.", initializers=sc.e.use_initializers), num, 2, parent=sc)
    s_in, s_init = [], []
    benv: dict[str, Val] = {}
    for k, s in enumerate(p.states):
        nm = body.e.fresh("state." + s.name)
        body.types[nm] = num.carrier(k)
        s_in.append(nm)
        t = init[k]
        if sc.type_of(t) != num.carrier(k):
            t = sc.op("Cast", t, to=num.carrier(k), elem=num.carrier(k), hint="carry")
        s_init.append(t)
        benv[s.name] = num.state_val(body, k, nm)
    ints = set(p.next_state.values())  # what the loop reads as integers (products, comparisons, states)
    for op in sk.loop.body:
        ints.update([t.x for t in op.terms] if isinstance(op, Affine) else op.reads() if isinstance(op, Gt) else ())
    seq_in, x_in = _carry(sc, body, [i.name for i in sk.loop.inputs], env, benv, num, ints)
    if not seq_in:  # a loop that reads no step input still needs the sequence's length
        seq_in.append(sc.f(x))
        x_in.append(body.e.fresh("step"))
        body.types[x_in[-1]] = FLOAT
    R.render(body, sk.loop.body, benv)
    seq_in, x_in = _lift_slices(sc, body, seq_in, x_in)
    outs = [num.state_next(body, k, benv[p.next_state[s.name]]) for k, s in enumerate(p.states)]
    out_types = [num.carrier(k) for k in range(len(p.states))]
    ship = [v for v in sk.keep] + [v for v in probes if v in benv and v not in sk.keep]
    rebuild = []
    for v in ship:
        t, elem, make = _ship(body, benv[v], num)
        outs.append(t)
        out_types.append(elem)
        rebuild.append((v, make, elem))
    body.merge_slices()
    names: list[str] = []
    made = {o for nd in body.e.nodes for o in nd.output}
    for t in outs:
        if t in names or t not in made:
            t = body.op("Identity", t, elem=body.type_of(t), hint="out")
        names.append(t)
    prune(body.e, names)
    g = helper.make_graph(
        body.e.nodes,
        f"{hint}_step",
        [helper.make_tensor_value_info(n, body.type_of(n), None) for n in s_in + x_in],
        [helper.make_tensor_value_info(n, t, None) for n, t in zip(names, out_types)],
        initializer=body.e.initializers,
    )
    fin = [
        f if f is not None and num.carrier(k) == num.storage(k) else sc.e.fresh(f"{hint}.final")
        for k, f in enumerate(finals)
    ]
    seq_out = [sc.e.fresh(f"{hint}.seq") for _ in ship]
    sc.op(
        "Scan",
        *s_init,
        *seq_in,
        outputs=fin + seq_out,
        num_scan_inputs=len(seq_in),
        body=g,
        hint="scan",
        node_name=sc.e.fresh(f"{hint}/scan"),
    )
    for n, t in zip(fin + seq_out, out_types):
        sc.types[n] = t
    for (v, make, _), t in zip(rebuild, seq_out):
        env[v] = make(t)
    R.render(sc, sk.post.body, env)
    finals = [t if t == f else num.state_final(sc, k, t, f) for k, (t, f) in enumerate(zip(fin, finals))]
    return ScanResult([env[o] for o in p.outputs] + [env[v] for v in probes if v in env], finals)


def _ship(sc: Scope, v: Val, num: Numerics):
    """A loop value as one per-step Scan output: (tensor, element type, rebuild from the outer
    (T, B, n) tensor)."""
    n = v.n
    if v.parts:
        p = num.single(sc, v)
        return (
            sc.tensor(p.q),
            sc.type_of(sc.tensor(p.q)),
            lambda t: Val(n, parts=[Part(whole(t, n), np.arange(n), p.bits, p.scale)]),
        )
    if v.mask is not None:
        coef = v.coef
        return sc.tensor(v.mask), BOOL, lambda t: Val(n, mask=whole(t, n), coef=coef)
    return sc.f(v), FLOAT, lambda t: Val(n, f=whole(t, n))


def _carry(sc: Scope, body: Scope, names, env, benv, num, ints):
    """The sequence values the loop reads, as Scan inputs: integer forms where the loop reads
    integers, else float columns of one tensor as one input (see :func:`_lift_slices`)."""
    seq_in: list[str] = []
    x_in: list[str] = []
    bases: dict[str, str] = {}

    def add(t: str, elem: int) -> str:
        bn = body.e.fresh("step")
        body.types[bn] = elem
        seq_in.append(t)
        x_in.append(bn)
        return bn

    for nm in names:
        v = env[nm]
        if v.parts and (nm in ints or v.f is None):
            p = num.single(sc, v)
            t = sc.tensor(p.q)
            benv[nm] = Val(v.n, parts=[Part(whole(add(t, sc.type_of(t)), v.n), np.arange(v.n), p.bits, p.scale)])
        elif v.f is None and v.mask is not None:
            benv[nm] = Val(v.n, mask=whole(add(sc.tensor(v.mask), BOOL), v.n), coef=v.coef)
        else:
            if v.f is None:
                sc.f(v)
            base = sc.resolve(v.f.name)
            if base not in bases:
                bases[base] = add(base, FLOAT)
            benv[nm] = Val(v.n, f=Ref(bases[base], v.f.start, v.f.n, v.f.width))
    return seq_in, x_in


def _lift_slices(sc: Scope, body: Scope, seq_in, x_in):
    """A loop input the body reads only in disjoint slices becomes one Scan input per slice (cut
    once over the whole sequence instead of at every step)."""
    new_seq, new_x = [], []
    for t, bn in zip(seq_in, x_in):
        cuts = sorted(body.slices.pop(bn, []), key=lambda c: c[0])
        if bn in body.whole or not cuts or any(a[0] + a[1] > b[0] for a, b in zip(cuts, cuts[1:])):
            if cuts:
                body.slices[bn] = cuts
            new_seq.append(t)
            new_x.append(bn)
            continue
        for start, n, node, width in cuts:
            body.e.nodes.remove(node)
            new_seq.append(sc.tensor(Ref(t, start, n, width)))
            new_x.append(node.output[0])
            body.types[node.output[0]] = body.type_of(bn)
    return new_seq, new_x
