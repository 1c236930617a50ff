"""Step programs: the body of a scan as a small typed graph of primitive ops.

A :class:`StepProgram` says what one time step of a recurrence computes:

- ``inputs``: the per-step input vectors (``x_t``), each (B, n);
- ``states``: named vectors carried from one step to the next, zero at the start of a sequence;
  inside the body a state's name denotes its value from the previous step;
- ``params``: named float64 constants (weights, biases, decays, thresholds, tables of constants);
- ``body``: primitive ops in topological order, each writing one new value (single assignment);
- ``outputs``: the values emitted at every step; ``next_state``: the value each state takes.

Every value is a (B, n) float array; ``n`` is declared by the op that writes it. Operands name a
value (a step input, a state, a body output) or a parameter. Elementwise operands broadcast a
parameter of one element, or of the operand length.

The primitive ops and their float semantics (the evaluator in :mod:`.evaluate` implements
exactly these; every backend renders them one by one):

``Affine``    y = sum_k blocks(x_k) W_k^T (+ bias): term k applies W_k (O, I) to each of its
              ``blocks`` consecutive slices of x_k (x_k has blocks*I values, y has blocks*O)
``Activate``  y = fn(x) for an :class:`~edgeseq.ir.types.Act` (tanh, sigmoid, relu, exp, ...)
``Add`` ``Sub`` ``Mul``   elementwise a + b, a - b, a * b
``Div``       y = a / b where b != 0, else 0
``Gt``        y = 1 where a > b else 0 (the strict Heaviside step of spiking neurons)
``Select``    y = a where c != 0 else b
``Concat``    y = [x_0 | x_1 | ...] per block of ``blocks``
``Slice``     y = x[start:stop]
``Gather``    y[j] = x[index[j]]
``Quant``     y = x: a quantization point (:class:`QPoint`); the float program is unchanged by
              it, a quantized rendering rounds here to the point's planned bits and scale.

A quantization point is typed: its :class:`QRole` says how the plan chooses bits and scale, and
its :class:`PointName` where the point lives (``inner``: ``<node>:<name>``; ``state``:
``<node>/<state>``; ``output``: the node's output value).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Mapping, Optional, Sequence

import numpy as np
from typing_extensions import dataclass_transform

from ...errors import VerificationError
from ..types import Act

# ----------------------------------------------------------------------------------------------
# quantization points


class QRole(str, enum.Enum):
    """How a quantization point is planned.

    INPUT   the graph input (boundary quantizer; may be per channel with an offset)
    ACT     an activation value (activation bits, calibrated)
    STATE   a recurrent state (state bits, calibrated over time)
    INNER   a value inside a cell kept at state precision (e.g. the LMU memory input u)
    PRE     the input of the lookup table of ``fn`` (range capped where fn saturates)
    UNIT    the output of tanh (signed) or sigmoid (unsigned): fixed power-of-two scale
    SHARE   the scale of point ``ref`` (``bits`` wide); ``widen`` makes ref's range cover this one
    MEAN    a mean readout: the scale of ``ref`` (its input) refined by 2^8 for 8-bit inputs
    CONCAT  a concatenation (its scale is the concatenation of the inputs' scales)
    SPIKES  0/1 spikes (the scale is the spike amplitude)
    """

    INPUT = "input"
    ACT = "act"
    STATE = "state"
    INNER = "inner"
    PRE = "pre"
    UNIT = "unit"
    SHARE = "share"
    MEAN = "mean"
    CONCAT = "concat"
    SPIKES = "spikes"


@dataclass(frozen=True)
class QPoint:
    """Role of a quantization point. ``ref`` names another point: inside a step program a state
    or a Quant value of the same program; in a graph-level point a global point name.
    ``state=True`` selects the state bit width for UNIT / ACT / PRE points carried as state."""

    role: QRole
    fn: Optional[str] = None
    ref: Optional[str] = None
    bits: Optional[int] = None
    widen: bool = False
    state: bool = False
    refs: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "role", QRole(self.role))
        if isinstance(self.fn, Act):
            object.__setattr__(self, "fn", self.fn.value)

    def to_json(self) -> dict:
        d: dict[str, Any] = {"role": self.role.value}
        for k in ("fn", "ref", "bits"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        for k in ("widen", "state"):
            if getattr(self, k):
                d[k] = True
        if self.refs:
            d["refs"] = list(self.refs)
        return d

    @classmethod
    def from_json(cls, d: Mapping) -> "QPoint":
        return cls(
            QRole(d["role"]),
            d.get("fn"),
            d.get("ref"),
            d.get("bits"),
            bool(d.get("widen", False)),
            bool(d.get("state", False)),
            tuple(d.get("refs", ())),
        )


class PointKind(str, enum.Enum):
    INNER = "inner"
    STATE = "state"
    OUTPUT = "output"


@dataclass(frozen=True)
class PointName:
    """Where a quantization point lives: ``inner`` points are ``<node>:<name>``, ``state`` points
    ``<node>/<name>`` (the state's key), ``output`` points the node's output ``index``."""

    kind: PointKind
    name: str = ""
    index: int = 0

    def __post_init__(self):
        object.__setattr__(self, "kind", PointKind(self.kind))

    def qualify(self, node: str, outputs: Sequence[str]) -> str:
        if self.kind is PointKind.INNER:
            return f"{node}:{self.name}"
        if self.kind is PointKind.STATE:
            return f"{node}/{self.name}"
        return outputs[self.index]

    def to_json(self) -> dict:
        return {"kind": self.kind.value, "name": self.name, "index": self.index}

    @classmethod
    def from_json(cls, d: Mapping) -> "PointName":
        return cls(PointKind(d["kind"]), str(d.get("name", "")), int(d.get("index", 0)))


# ----------------------------------------------------------------------------------------------
# primitives

PRIMS: dict[str, type["Prim"]] = {}


@dataclass_transform(frozen_default=True, kw_only_default=True)
def prim(cls):
    """Class decorator: a frozen, keyword-only primitive registered under ``cls.kind``."""
    cls = dataclass(frozen=True, kw_only=True)(cls)
    PRIMS[cls.kind] = cls
    return cls


@dataclass(frozen=True, kw_only=True)
class Prim:
    """Base class. ``out`` names the value written; ``n`` its length."""

    kind: ClassVar[str] = "Prim"
    elementwise: ClassVar[bool] = False
    out: str
    n: int

    def reads(self) -> tuple[str, ...]:
        """Operand names (values, states or params) this op reads."""
        return ()

    def to_json(self) -> dict:
        d: dict[str, Any] = {"op": self.kind}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (QPoint, PointName)):
                v = v.to_json()
            elif isinstance(v, Act):
                v = v.value
            elif isinstance(v, tuple):
                v = [t.to_json() if isinstance(t, Term) else t for t in v]
            d[f.name] = v
        return d

    def describe(self) -> str:
        args = ", ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self) if f.name not in ("out", "n"))
        return f"{self.out}[{self.n}] = {self.kind}({args})"


class WeightKind(str, enum.Enum):
    """Which configured bit width quantizes a matrix: ordinary weights, or the LMU / L2MU memory
    matrices (``lmu_matrix_bits``)."""

    WEIGHT = "weight"
    MEMORY = "memory"


@dataclass(frozen=True)
class Term:
    """One matrix product of an Affine: parameter ``w`` (O, I) applied to each of ``blocks``
    consecutive I-slices of value ``x``."""

    w: str
    x: str
    blocks: int = 1

    def to_json(self) -> dict:
        return {"w": self.w, "x": self.x, "blocks": self.blocks}


@prim
class Affine(Prim):
    kind = "Affine"
    terms: tuple
    bias: Optional[str] = None

    def reads(self):
        return tuple(t.w for t in self.terms) + tuple(t.x for t in self.terms) + ((self.bias,) if self.bias else ())


@prim
class Activate(Prim):
    kind = "Activate"
    elementwise = True
    fn: Act
    x: str
    slope: float = 0.01
    lo: float = -1.0
    hi: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "fn", Act(self.fn))

    def reads(self):
        return (self.x,)


class _Binary(Prim):
    elementwise = True
    a: str
    b: str

    def reads(self):
        return (self.a, self.b)


@prim
class Add(_Binary):
    kind = "Add"
    a: str
    b: str


@prim
class Sub(_Binary):
    kind = "Sub"
    a: str
    b: str


@prim
class Mul(_Binary):
    kind = "Mul"
    a: str
    b: str


@prim
class Div(_Binary):
    kind = "Div"
    a: str
    b: str


@prim
class Gt(_Binary):
    kind = "Gt"
    a: str
    b: str


@prim
class Select(Prim):
    kind = "Select"
    elementwise = True
    c: str
    a: str
    b: str

    def reads(self):
        return (self.c, self.a, self.b)


@prim
class Concat(Prim):
    kind = "Concat"
    xs: tuple
    blocks: int = 1

    def reads(self):
        return tuple(self.xs)


@prim
class Slice(Prim):
    kind = "Slice"
    x: str
    start: int

    def reads(self):
        return (self.x,)


@prim
class Gather(Prim):
    kind = "Gather"
    x: str
    index: str

    def reads(self):
        return (self.x, self.index)


@prim
class Quant(Prim):
    kind = "Quant"
    elementwise = True
    x: str
    point: QPoint
    name: PointName

    def reads(self):
        return (self.x,)


def prim_from_json(d: Mapping) -> Prim:
    cls = PRIMS.get(str(d.get("op")))
    if cls is None:
        raise VerificationError(f"unknown step primitive '{d.get('op')}'; known: {', '.join(sorted(PRIMS))}")
    kw = {k: v for k, v in d.items() if k != "op"}
    if cls is Affine:
        kw["terms"] = tuple(Term(t["w"], t["x"], int(t.get("blocks", 1))) for t in kw["terms"])
    if cls is Quant:
        kw["point"] = QPoint.from_json(kw["point"])
        kw["name"] = PointName.from_json(kw["name"])
    if cls is Concat:
        kw["xs"] = tuple(kw["xs"])
    return cls(**kw)


# ----------------------------------------------------------------------------------------------
# the program


@dataclass(frozen=True)
class Port:
    """A named per-step vector of ``n`` values (a step input or a state)."""

    name: str
    n: int


@dataclass(frozen=True)
class StateSlot(Port):
    """A carried state. ``point`` is its quantization point (planned under ``<node>/<name>``), or,
    for spike states, a SPIKES point whose amplitude is the parameter ``amplitude`` (1 if None)."""

    point: Optional[QPoint] = None
    amplitude: Optional[str] = None


@dataclass(frozen=True)
class ParamInfo:
    """Provenance of a matrix parameter: the op field it comes from (``source``, used to name its
    weight plan and bit-width overrides) and which configured width quantizes it."""

    source: str
    kind: WeightKind = WeightKind.WEIGHT


@dataclass(frozen=True, eq=False)
class StepProgram:
    name: str
    inputs: tuple[Port, ...]
    states: tuple[StateSlot, ...]
    params: Mapping[str, np.ndarray]
    body: tuple[Prim, ...]
    outputs: tuple[str, ...]
    next_state: Mapping[str, str]
    param_info: Mapping[str, ParamInfo] = field(default_factory=dict)

    def __post_init__(self):
        ps = {}
        for k, v in self.params.items():
            a = np.array(v, dtype=np.float64, copy=True)
            a.setflags(write=False)
            ps[k] = a
        object.__setattr__(self, "params", ps)
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "states", tuple(self.states))
        object.__setattr__(self, "body", tuple(self.body))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "next_state", dict(self.next_state))
        object.__setattr__(self, "param_info", dict(self.param_info))
        object.__setattr__(self, "_sizes", verify(self))

    # -- structure ------------------------------------------------------------------------------
    def size(self, name: str) -> int:
        """Length of a value, state or (flattened) parameter."""
        if name in self.params:
            return int(self.params[name].size)
        return self._sizes[name]  # type: ignore[attr-defined]  # set in __post_init__ (frozen)

    def is_param(self, name: str) -> bool:
        return name in self.params

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.states)

    def producers(self) -> dict[str, Prim]:
        return {p.out: p for p in self.body}

    def consumers(self) -> dict[str, list[Prim]]:
        out: dict[str, list[Prim]] = {}
        for p in self.body:
            for r in p.reads():
                out.setdefault(r, []).append(p)
        return out

    def qualified_points(self, node: str, outputs: Sequence[str]) -> dict[str, tuple[str, QPoint]]:
        """Quant value -> (global point name, point with its ``ref`` qualified) for the program
        placed as graph node ``node`` with output values ``outputs``."""
        key = (node, tuple(outputs))
        cache = self.__dict__.setdefault("_qualified", {})
        if key not in cache:
            states = set(self.state_names)
            names = {p.out: p.name.qualify(node, outputs) for p in self.body if isinstance(p, Quant)}
            out = {}
            for p in self.body:
                if isinstance(p, Quant):
                    pt = p.point
                    if pt.ref is not None:
                        ref = f"{node}/{pt.ref}" if pt.ref in states else names.get(pt.ref)
                        if ref is None:
                            raise VerificationError(
                                f"step program '{self.name}': point '{p.out}' refers to "
                                f"'{pt.ref}', which is neither a state nor a Quant value"
                            )
                        pt = QPoint(pt.role, pt.fn, ref, pt.bits, pt.widen, pt.state, pt.refs)
                    out[p.out] = (names[p.out], pt)
            cache[key] = out
        return cache[key]

    def replace(self, **changes) -> "StepProgram":
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        kw.update(changes)
        return StepProgram(**kw)

    def describe(self) -> str:
        lines = [
            f"step program {self.name}: inputs {[(p.name, p.n) for p in self.inputs]}, "
            f"states {[(s.name, s.n) for s in self.states]}"
        ]
        lines += ["  " + p.describe() for p in self.body]
        lines.append(f"  outputs {list(self.outputs)}; next {self.next_state}")
        return "\n".join(lines)

    # -- serialisation (arrays go to the caller's array store) ----------------------------------
    def to_json(self) -> dict:
        return {
            "name": self.name,
            "inputs": [{"name": p.name, "n": p.n} for p in self.inputs],
            "states": [
                {"name": s.name, "n": s.n, "point": s.point.to_json() if s.point else None, "amplitude": s.amplitude}
                for s in self.states
            ],
            "params": sorted(self.params),
            "param_info": {k: {"source": v.source, "kind": v.kind.value} for k, v in self.param_info.items()},
            "body": [p.to_json() for p in self.body],
            "outputs": list(self.outputs),
            "next_state": dict(self.next_state),
        }

    @classmethod
    def from_json(cls, d: Mapping, arrays: Mapping[str, np.ndarray]) -> "StepProgram":
        try:
            return cls(
                name=str(d["name"]),
                inputs=tuple(Port(str(p["name"]), int(p["n"])) for p in d["inputs"]),
                states=tuple(
                    StateSlot(
                        str(s["name"]),
                        int(s["n"]),
                        QPoint.from_json(s["point"]) if s.get("point") else None,
                        s.get("amplitude"),
                    )
                    for s in d["states"]
                ),
                params={k: arrays[k] for k in d["params"]},
                body=tuple(prim_from_json(p) for p in d["body"]),
                outputs=tuple(str(o) for o in d["outputs"]),
                next_state={str(k): str(v) for k, v in d["next_state"].items()},
                param_info={
                    k: ParamInfo(str(v["source"]), WeightKind(v.get("kind", "weight")))
                    for k, v in d.get("param_info", {}).items()
                },
            )
        except (KeyError, TypeError, ValueError) as e:
            raise VerificationError(f"malformed step program: {e}") from None


# ----------------------------------------------------------------------------------------------
# verification


def _elementwise_len(prog_sizes: dict, params: Mapping[str, np.ndarray], name: str, n: int, where: str) -> None:
    if name in params:
        k = params[name].size
        if k not in (1, n):
            raise VerificationError(f"{where}: parameter '{name}' has {k} values, expected 1 or {n}")
        return
    if prog_sizes[name] not in (1, n):
        raise VerificationError(f"{where}: operand '{name}' has {prog_sizes[name]} values, expected {n}")


def verify(p: StepProgram) -> dict[str, int]:
    """Check single assignment, topological order, sizes and the state contract; return the size
    of every value. Raises :class:`VerificationError` naming the offending op."""
    sizes: dict[str, int] = {}
    for port in list(p.inputs) + list(p.states):
        if port.name in sizes or port.name in p.params:
            raise VerificationError(f"step program '{p.name}': name '{port.name}' declared twice")
        if port.n < 1:
            raise VerificationError(f"step program '{p.name}': '{port.name}' must have at least one value")
        sizes[port.name] = port.n
    for op in p.body:
        where = f"step program '{p.name}', {op.kind} -> '{op.out}'"
        if op.out in sizes or op.out in p.params:
            raise VerificationError(f"{where}: value written twice")
        for r in op.reads():
            if r not in sizes and r not in p.params:
                raise VerificationError(f"{where}: reads '{r}' before it is defined")
        _check_op(op, sizes, p.params, where)
        sizes[op.out] = op.n
    for o in p.outputs:
        if o not in sizes:
            raise VerificationError(f"step program '{p.name}': output '{o}' is not defined")
    names = {s.name for s in p.states}
    if set(p.next_state) != names:
        raise VerificationError(
            f"step program '{p.name}': next_state must name every state exactly "
            f"({sorted(names)}), got {sorted(p.next_state)}"
        )
    for s in p.states:
        v = p.next_state[s.name]
        if sizes.get(v) != s.n:
            raise VerificationError(f"step program '{p.name}': state '{s.name}' ({s.n}) takes '{v}' ({sizes.get(v)})")
    return sizes


def _check_op(op: Prim, sizes: dict, params: Mapping[str, np.ndarray], where: str) -> None:
    def size(name):
        return params[name].size if name in params else sizes[name]

    if isinstance(op, Affine):
        if not op.terms:
            raise VerificationError(f"{where}: an Affine needs at least one term")
        for t in op.terms:
            if t.w not in params or params[t.w].ndim != 2:
                raise VerificationError(f"{where}: term weight '{t.w}' must be a 2-D parameter")
            o, i = params[t.w].shape
            if t.blocks < 1 or t.x in params or sizes[t.x] != t.blocks * i or op.n != t.blocks * o:
                raise VerificationError(
                    f"{where}: term {t.w} {params[t.w].shape} x {t.blocks} blocks does not "
                    f"fit '{t.x}' ({size(t.x)}) -> {op.n}"
                )
        if op.bias is not None and size(op.bias) != op.n:
            raise VerificationError(f"{where}: bias '{op.bias}' has {size(op.bias)} values, expected {op.n}")
    elif isinstance(op, Concat):
        if op.blocks < 1 or sum(size(x) for x in op.xs) != op.n or any(size(x) % op.blocks for x in op.xs):
            raise VerificationError(
                f"{where}: concatenation of {[size(x) for x in op.xs]} in {op.blocks} blocks cannot have {op.n} values"
            )
    elif isinstance(op, Slice):
        if not (0 <= op.start and op.start + op.n <= size(op.x)):
            raise VerificationError(f"{where}: slice [{op.start}:{op.start + op.n}] of {size(op.x)} values")
    elif isinstance(op, Gather):
        idx = params.get(op.index)
        if (
            idx is None
            or idx.size != op.n
            or np.any(idx < 0)
            or np.any(idx >= size(op.x))
            or np.any(idx != np.round(idx))
        ):
            raise VerificationError(
                f"{where}: index '{op.index}' must be {op.n} integer positions in [0, {size(op.x)})"
            )
    elif op.elementwise:
        for r in op.reads():
            _elementwise_len(sizes, params, r, op.n, where)
        if not any(r not in params for r in op.reads()):
            raise VerificationError(f"{where}: an elementwise op needs at least one value operand")
