"""Quantization points for step programs that declare none (loops captured from Python, any
hand-built program): :class:`PlacePoints` marks every place the integer lowering must round,
following the typed points the named cells declare.

Each value is classified by what the integer lowering makes of it
(:mod:`edgeseq.quant.steplower`):

- ``NARROW``  an integer vector at a planned scale (a step input, a state, a point's value, and
  concatenations / slices / selections / clamps of those);
- ``BINARY``  0/1 spikes or masks (a comparison ``Gt``);
- ``MASKED``  spikes times parameters (exact coefficients);
- ``WIDE``    an exact product (two vectors, or a vector and a fixed-point parameter): many bits;
- ``SUM``     a sum not lowered yet (Affine, Add, Sub): it exists only where it is quantized.

The points, primitive by primitive (a point is placed once, where the value is made, and every
reader reads it):

- a table activation (anything but identity / relu / hardtanh) reads a ``PRE`` point of its
  function and is followed by a ``UNIT`` point (tanh, sigmoid, hardsigmoid: fixed scale) or an
  ``INNER`` point (exp, silu, ...: calibrated at state precision);
- a ``Div`` is followed by an ``INNER`` point (the integer ratio is requantized there);
- a ``SUM`` is quantized where something other than Add / Sub reads it (``PRE`` when only one
  table function reads it, else ``INNER``); a ``WIDE`` value where a matrix product or another
  product reads it;
- the two vector branches of a ``Select`` (and the two sides of a vector ``Gt``) share one scale
  (an ``INNER`` point and a ``SHARE`` of it);
- every state takes its new value through its own ``STATE`` point (``UNIT`` with the state width
  after tanh / sigmoid); a state whose new value is 0/1 spikes is a spike state (``SPIKES``, no
  rounding);
- every output is an ``OUTPUT`` point (``SPIKES`` for spikes, ``ACT`` for sums, a ``SHARE`` of the
  point it already has), or the state point it equals.

The pass adds Quant primitives only (identities in float): the stripped program equals the input.
"""

from __future__ import annotations

import enum
from dataclasses import replace
from typing import Optional

import numpy as np

from ...errors import VerificationError
from ..types import CLAMP_ACTS, UNIT_ACTS, Act
from .passes import DeadCode, Pass, StripQuant, _rename
from .program import (
    Activate,
    Add,
    Affine,
    Concat,
    Div,
    Gather,
    Gt,
    Mul,
    PointKind,
    PointName,
    Prim,
    QPoint,
    QRole,
    Quant,
    Select,
    Slice,
    StepProgram,
    Sub,
)


class Cls(str, enum.Enum):
    NARROW = "narrow"
    BINARY = "binary"
    MASKED = "masked"
    WIDE = "wide"
    SUM = "sum"
    TABLE = "table"
    RATIO = "ratio"


def has_points(prog: StepProgram) -> bool:
    return any(isinstance(op, Quant) for op in prog.body)


def spike_states(prog: StepProgram) -> dict[str, Optional[str]]:
    """States whose new value is 0/1 spikes (a comparison, or selections / products of comparisons),
    or spikes times a positive parameter (their amplitude): state -> amplitude parameter or None."""
    found: dict[str, Optional[str]] = {}
    while True:
        binary = _binary_values(prog, {s for s, a in found.items() if a is None})
        new = dict(found)
        for s in prog.states:
            v = prog.next_state[s.name]
            if v in binary:
                new[s.name] = None
            elif (amp := _amplitude(prog, v, binary)) is not None:
                new[s.name] = amp
        if new == found:
            return found
        found = new


def _amplitude(prog: StepProgram, value: str, binary: set[str]) -> Optional[str]:
    """The positive parameter p of ``value = spikes * p``, if it is one."""
    op = prog.producers().get(value)
    if not isinstance(op, Mul):
        return None
    for a, b in ((op.a, op.b), (op.b, op.a)):
        if a in binary and prog.is_param(b) and bool(np.all(prog.params[b] > 0)):
            return b
    return None


def _binary_values(prog: StepProgram, states: set[str]) -> set[str]:
    out = set(states)
    for op in prog.body:
        vec = [r for r in op.reads() if not prog.is_param(r)]
        if isinstance(op, Gt):
            out.add(op.out)
        elif isinstance(op, (Slice, Gather, Concat, Mul)) and all(r in out for r in vec):
            if not isinstance(op, Mul) or len(vec) == 2:
                out.add(op.out)
        elif isinstance(op, Activate) and op.fn in (Act.IDENTITY, Act.RELU) and op.x in out:
            out.add(op.out)
        elif isinstance(op, Select) and op.a in out and op.b in out:
            out.add(op.out)
    return out


def unshare_params(prog: StepProgram) -> StepProgram:
    """Every vector parameter (constants, biases, thresholds, indices) read at one place only: a
    copy for each further reader, so that each place can round its own copy (matrices stay shared)."""
    params = dict(prog.params)
    seen: set[str] = set()
    body = []
    for op in prog.body:
        sub = {}
        for r in dict.fromkeys(op.reads()):
            if not prog.is_param(r) or prog.params[r].ndim == 2:
                continue
            if r in seen:
                k = 2
                while f"{r}.{k}" in params:
                    k += 1
                sub[r] = f"{r}.{k}"
                params[sub[r]] = prog.params[r]
            seen.add(r)
        body.append(_rename(op, sub))
    return prog.replace(params=params, body=tuple(body)) if len(params) != len(prog.params) else prog


class _Placer:
    def __init__(self, prog: StepProgram):
        prog = unshare_params(prog)
        self.prog = prog
        self.spikes = spike_states(prog)
        self.body: list[Prim] = []
        self.cls: dict[str, Cls] = {p.name: Cls.NARROW for p in prog.inputs}
        for s in prog.states:
            spiking = s.name in self.spikes
            self.cls[s.name] = Cls.NARROW if not spiking else Cls.BINARY if self.spikes[s.name] is None else Cls.MASKED
        self.sub: dict[str, str] = {}  # a value -> the point every later reader reads
        self.cache: dict[tuple, str] = {}  # (value, what) -> point made for one kind of reader
        self.shared: dict[tuple[str, str], tuple[str, str]] = {}  # two operands -> their points at one scale
        self.points: dict[str, Quant] = {}
        self.taken = set(self.cls) | set(prog.params) | {op.out for op in prog.body}
        self.readers = prog.consumers()
        self.state_of: dict[str, str] = {}
        for s in prog.states:
            if s.name not in self.spikes:
                self.state_of.setdefault(prog.next_state[s.name], s.name)
        self.output_of: dict[str, int] = {}
        for i, o in enumerate(prog.outputs):
            self.output_of.setdefault(o, i)
        self.named_outputs: set[int] = set()
        self.named_states: set[str] = set()

    # -- helpers ----------------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            k += 1
            name = f"{base}{k}"
        self.taken.add(name)
        return name

    def size(self, name: str) -> int:
        if self.prog.is_param(name):
            return int(self.prog.params[name].size)
        q = self.points.get(name)
        return q.n if q is not None else self.prog.size(name)

    def quant(self, x: str, point: QPoint, name: PointName, base: str) -> str:
        q = Quant(out=self.fresh(base), n=self.size(x), x=x, point=point, name=name)
        self.body.append(q)
        self.points[q.out] = q
        self.cls[q.out] = Cls.BINARY if point.role is QRole.SPIKES else Cls.NARROW
        return q.out

    def inner(self, x: str, point: QPoint, label: str) -> str:
        return self.quant(x, point, PointName(PointKind.INNER, self.fresh(label)), f"{label}.q")

    def spiky(self, v: str) -> bool:
        """0/1 spikes, or a comparison times a positive parameter (spikes with an amplitude)."""
        if self.cls.get(v) is Cls.BINARY:
            return True
        op = self.made(v)
        return isinstance(op, Mul) and any(
            isinstance(self.made(a), Gt) and self.prog.is_param(b) and bool(np.all(self.prog.params[b] > 0))
            for a, b in ((op.a, op.b), (op.b, op.a))
        )

    def made(self, v: str) -> Optional[Prim]:
        return next((p for p in reversed(self.body) if p.out == v), None)

    def vec(self, name: str) -> bool:
        return not self.prog.is_param(name)

    def get(self, name: str) -> str:
        return self.sub.get(name, name)

    # -- what readers need ----------------------------------------------------------------------
    def narrow(self, name: str) -> str:
        """An operand of a matrix product or a product: few bits, lowered."""
        v = self.get(name)
        if self.vec(v) and self.cls[v] in (Cls.WIDE, Cls.SUM):
            key = (v, "inner")
            if key not in self.cache:
                self.cache[key] = self.inner(v, QPoint(QRole.INNER), f"{name}_q")
            return self.cache[key]
        return v

    def lowered(self, name: str) -> str:
        """An operand that must be one integer vector (not a pending sum)."""
        v = self.get(name)
        return self.narrow(name) if self.vec(v) and self.cls[v] is Cls.SUM else v

    def table_input(self, name: str, fn: Act) -> str:
        v = self.get(name)
        q = self.points.get(v)
        if q is not None and q.point.role is QRole.PRE and q.point.fn == fn.value:
            return v
        key = (v, "pre", fn.value)
        if key not in self.cache:
            self.cache[key] = self.inner(v, QPoint(QRole.PRE, fn=fn.value), f"{name}_pre")
        return self.cache[key]

    def same_scale(self, a: str, b: str) -> tuple[str, str]:
        """Two vector operands that an integer Select / comparison needs at one scale."""
        a, b = self.lowered(a), self.lowered(b)
        if a == b or (self.cls[a] is Cls.BINARY and self.cls[b] is Cls.BINARY):
            return a, b
        if (a, b) not in self.shared:
            qa = self.inner(a, QPoint(QRole.INNER), "sel")
            self.shared[(a, b)] = (qa, self.inner(b, QPoint(QRole.SHARE, ref=qa), "sel"))
        return self.shared[(a, b)]

    # -- one op -----------------------------------------------------------------------------------
    def operands(self, op: Prim) -> Prim:
        if isinstance(op, Affine):
            return replace(op, terms=tuple(replace(t, x=self.narrow(t.x)) for t in op.terms))
        if isinstance(op, (Add, Sub)):
            return _rename(op, {r: self.get(r) for r in op.reads()})
        if isinstance(op, Mul):
            return replace(op, a=self.narrow(op.a), b=self.narrow(op.b))
        if isinstance(op, Activate):
            return replace(op, x=self.lowered(op.x) if op.fn in CLAMP_ACTS else self.table_input(op.x, op.fn))
        if isinstance(op, Gt) and self.vec(op.a) and self.vec(op.b):
            a, b = self.same_scale(op.a, op.b)
            return replace(op, a=a, b=b)
        if isinstance(op, Select):
            c = self.lowered(op.c)
            if self.vec(op.a) and self.vec(op.b):
                a, b = self.same_scale(op.a, op.b)
            else:
                a, b = self.lowered(op.a), self.lowered(op.b)
            return replace(op, c=c, a=a, b=b)
        return _rename(op, {r: self.lowered(r) for r in op.reads()})

    def classify(self, op: Prim) -> Cls:
        c = {r: self.cls[r] for r in op.reads() if self.vec(r)}
        vals = list(c.values())
        if isinstance(op, (Affine, Add, Sub)):
            return Cls.SUM
        if isinstance(op, Mul):
            if len(vals) == 1:
                return Cls.MASKED if vals[0] in (Cls.BINARY, Cls.MASKED) else Cls.WIDE
            return Cls.BINARY if all(v is Cls.BINARY for v in vals) else Cls.WIDE
        if isinstance(op, Gt):
            return Cls.BINARY
        if isinstance(op, Div):
            return Cls.RATIO
        if isinstance(op, Activate):
            return c[op.x] if op.fn in CLAMP_ACTS else Cls.TABLE
        if isinstance(op, Select):
            branches = [c[x] for x in (op.a, op.b) if x in c]
            if all(v is Cls.BINARY for v in branches):
                return Cls.BINARY
            return Cls.WIDE if Cls.WIDE in branches else Cls.NARROW
        if vals and all(v is Cls.BINARY for v in vals):
            return Cls.BINARY
        return Cls.WIDE if Cls.WIDE in vals else Cls.NARROW

    def point_of(self, orig: str, cls: Cls, op: Prim) -> Optional[tuple[QPoint, PointName, str]]:
        """The point made right after ``orig`` is computed, or None (readers decide)."""
        readers = self.readers.get(orig, [])
        state = self.state_of.get(orig)
        out = self.output_of.get(orig)
        fn = op.fn if isinstance(op, Activate) else None
        if state is not None:
            self.named_states.add(state)
            name = PointName(PointKind.STATE, state)
            if cls is Cls.TABLE and fn in UNIT_ACTS:
                return QPoint(QRole.UNIT, fn=UNIT_ACTS[fn], state=True), name, f"{state}_q"
            return QPoint(QRole.STATE), name, f"{state}_q"
        need = cls in (Cls.TABLE, Cls.RATIO) or out is not None
        if cls is Cls.SUM:
            need = need or any(not isinstance(r, (Add, Sub)) for r in readers)
        if cls is Cls.WIDE:
            need = need or any(isinstance(r, (Affine, Mul)) for r in readers)
        if not need:
            return None
        if out is not None:
            self.named_outputs.add(out)
            name = PointName(PointKind.OUTPUT, index=out)
            if cls is Cls.TABLE and fn in UNIT_ACTS:
                return QPoint(QRole.UNIT, fn=UNIT_ACTS[fn]), name, f"y{out}_q"
            if self.spiky(op.out):
                return QPoint(QRole.SPIKES), name, f"y{out}_q"
            return QPoint(QRole.ACT), name, f"y{out}_q"
        inner = PointName(PointKind.INNER, self.fresh(orig))
        if cls is Cls.TABLE and fn in UNIT_ACTS:
            return QPoint(QRole.UNIT, fn=UNIT_ACTS[fn]), inner, f"{orig}_q"
        tables = {r.fn for r in readers if isinstance(r, Activate) and r.fn not in CLAMP_ACTS}
        if cls is Cls.SUM and len(tables) == 1 and all(isinstance(r, (Activate, Add, Sub)) for r in readers):
            return QPoint(QRole.PRE, fn=tables.pop().value), inner, f"{orig}_q"
        return QPoint(QRole.INNER), inner, f"{orig}_q"

    # -- the program --------------------------------------------------------------------------------
    def run(self) -> StepProgram:
        prog = self.prog
        for op in prog.body:
            new = self.operands(op)
            self.body.append(new)
            cls = self.classify(new)
            self.cls[new.out] = cls
            made = self.point_of(op.out, cls, new)
            if made is not None:
                point, name, base = made
                self.sub[op.out] = self.quant(new.out, point, name, base)
        nxt = {}
        for s in prog.states:
            v = self.get(prog.next_state[s.name])
            q = self.points.get(v)
            done = q is not None and q.name == PointName(PointKind.STATE, s.name)
            if s.name not in self.spikes and not done:
                v = self.quant(self.lowered(v), QPoint(QRole.STATE), PointName(PointKind.STATE, s.name), f"{s.name}_q")
            nxt[s.name] = v
        outs = []
        for i, o in enumerate(prog.outputs):
            v = self.get(o)
            q = self.points.get(v)
            if q is None or not (
                q.name == PointName(PointKind.OUTPUT, index=i) or q.name.kind is PointKind.STATE and v in nxt.values()
            ):
                v = self.lowered(v)
                if self.spiky(v):
                    point = QPoint(QRole.SPIKES)
                elif v in self.points or v in prog.state_names:
                    point = QPoint(QRole.SHARE, ref=v)
                else:
                    point = QPoint(QRole.ACT)
                v = self.quant(v, point, PointName(PointKind.OUTPUT, index=i), f"y{i}_q")
            outs.append(v)
        states = tuple(
            replace(s, point=QPoint(QRole.SPIKES), amplitude=self.spikes[s.name]) if s.name in self.spikes else s
            for s in prog.states
        )
        return prog.replace(states=states, body=tuple(self.body), outputs=tuple(outs), next_state=nxt)


class FoldThreshold(Pass):
    """``Gt(Sub(a, p), 0)`` -> ``Gt(a, p)`` for a parameter p (exact in floating point: a - p > 0
    exactly when a > p), so a spiking membrane is compared with its threshold at its own scale
    instead of through a rounded difference. The difference stays if anything else reads it."""

    name = "fold-threshold"

    def run(self, prog):
        prod = prog.producers()
        body = []
        for op in prog.body:
            sub = prod.get(op.a) if isinstance(op, Gt) else None
            if (
                isinstance(sub, Sub)
                and prog.is_param(op.b)
                and not np.any(prog.params[op.b])
                and prog.is_param(sub.b)
                and not prog.is_param(sub.a)
                and prog.size(sub.a) == op.n
            ):
                op = replace(op, a=sub.a, b=sub.b)
            body.append(op)
        return DeadCode()(prog.replace(body=tuple(body)))


class PlacePoints(Pass):
    """Quantization points for a program without any (see the module docstring)."""

    name = "place-points"

    def requires(self, prog):
        if has_points(prog):
            raise VerificationError(f"place-points: step program '{prog.name}' already has quantization points")

    def run(self, prog):
        return _Placer(prog).run()

    def ensures(self, before, after):
        stripped, before = StripQuant()(after), unshare_params(before)
        if [op.to_json() for op in stripped.body] != [op.to_json() for op in before.body]:
            raise VerificationError("place-points changed a primitive")
        if stripped.outputs != before.outputs or stripped.next_state != before.next_state:
            raise VerificationError("place-points changed the outputs or next states")


def place_points(prog: StepProgram) -> StepProgram:
    """``prog`` with quantization points (unchanged if it declares its own)."""
    return prog if has_points(prog) else PlacePoints()(FoldThreshold()(prog))
