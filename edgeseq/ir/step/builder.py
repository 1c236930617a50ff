"""A small builder for step programs, the way cell lowerings write them.

    b = StepBuilder("gru", inputs={"x": 6}, states={"h": (16, QPoint(QRole.STATE))})
    r = b.quant("r", b.act(Act.SIGMOID, b.quant("r_pre", b.affine(...), pre("sigmoid"))), unit("sigmoid"))
    ...
    prog = b.build(outputs=[h], next_state={"h": h})

Parameters are added with :meth:`param` (``source`` names the op field a matrix comes from);
:meth:`const` adds (and shares) small constants. Value names are generated unless given.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from ..types import Act
from .program import (
    Activate,
    Add,
    Affine,
    Concat,
    Div,
    Gather,
    Gt,
    Mul,
    ParamInfo,
    PointKind,
    PointName,
    Port,
    Prim,
    QPoint,
    QRole,
    Quant,
    Select,
    Slice,
    StateSlot,
    StepProgram,
    Sub,
    Term,
    WeightKind,
)


def pre(fn, state: bool = False) -> QPoint:
    return QPoint(QRole.PRE, fn=fn, state=state)


def unit(fn, state: bool = False) -> QPoint:
    return QPoint(QRole.UNIT, fn=fn, state=state)


def share(ref: str, bits: Optional[int] = None, widen: bool = False) -> QPoint:
    return QPoint(QRole.SHARE, ref=ref, bits=bits, widen=widen)


STATE = QPoint(QRole.STATE)
ACT = QPoint(QRole.ACT)
INNER = QPoint(QRole.INNER)
SPIKES = QPoint(QRole.SPIKES)


class StepBuilder:
    def __init__(self, name: str, inputs: Mapping[str, int], states: Mapping[str, int] | None = None):
        self.name = name
        self.inputs = [Port(k, int(n)) for k, n in inputs.items()]
        self.states: list[StateSlot] = []
        self.params: dict[str, np.ndarray] = {}
        self.info: dict[str, ParamInfo] = {}
        self.body: list[Prim] = []
        self.sizes: dict[str, int] = {p.name: p.n for p in self.inputs}
        self._consts: dict[tuple, str] = {}
        self._k = 0
        for k, n in dict(states or {}).items():
            self.state(k, n)

    def state(self, name: str, n: int, point: Optional[QPoint] = None, amplitude: Optional[str] = None) -> str:
        """Declare a carried state (in the op's state order). Spike states give a SPIKES ``point``
        and the parameter holding their ``amplitude`` (None: 1)."""
        self.states.append(StateSlot(name, int(n), point, amplitude))
        self.sizes[name] = int(n)
        return name

    # -- names and parameters -------------------------------------------------------------------
    def _fresh(self, base: str) -> str:
        while True:
            self._k += 1
            name = f"{base}{self._k}"
            if name not in self.sizes and name not in self.params:
                return name

    def size(self, name: str) -> int:
        return int(self.params[name].size) if name in self.params else self.sizes[name]

    def param(self, name: str, value, source: Optional[str] = None, kind: WeightKind = WeightKind.WEIGHT) -> str:
        a = np.asarray(value, dtype=np.float64)
        self.params[name] = a
        if source is not None:
            self.info[name] = ParamInfo(source, kind)
        return name

    def const(self, value) -> str:
        a = np.atleast_1d(np.asarray(value, dtype=np.float64))
        key = (a.shape, a.tobytes())
        if key not in self._consts:
            self._consts[key] = self.param(self._fresh("k"), a)
        return self._consts[key]

    def _emit(self, op: Prim) -> str:
        self.body.append(op)
        self.sizes[op.out] = op.n
        return op.out

    def _out(self, name: Optional[str], base: str) -> str:
        return name if name is not None else self._fresh(base)

    def _n2(self, a: str, b: str) -> int:
        return max(self.size(a), self.size(b))

    # -- primitives ------------------------------------------------------------------------------
    def affine(self, terms: Sequence[tuple], bias: Optional[str] = None, name: Optional[str] = None) -> str:
        """``terms``: (weight param, value) or (weight param, value, blocks)."""
        ts = tuple(Term(*t) for t in terms)
        n = self.params[ts[0].w].shape[0] * ts[0].blocks
        return self._emit(Affine(out=self._out(name, "a"), n=n, terms=ts, bias=bias))

    def act(self, fn: Act, x: str, name: Optional[str] = None, **kw) -> str:
        return self._emit(Activate(out=self._out(name, "f"), n=self.size(x), fn=Act(fn), x=x, **kw))

    def add(self, a: str, b: str, name: Optional[str] = None) -> str:
        return self._emit(Add(out=self._out(name, "s"), n=self._n2(a, b), a=a, b=b))

    def sub(self, a: str, b: str, name: Optional[str] = None) -> str:
        return self._emit(Sub(out=self._out(name, "d"), n=self._n2(a, b), a=a, b=b))

    def mul(self, a: str, b: str, name: Optional[str] = None) -> str:
        return self._emit(Mul(out=self._out(name, "p"), n=self._n2(a, b), a=a, b=b))

    def div(self, a: str, b: str, name: Optional[str] = None) -> str:
        return self._emit(Div(out=self._out(name, "q"), n=self._n2(a, b), a=a, b=b))

    def gt(self, a: str, b: str, name: Optional[str] = None) -> str:
        return self._emit(Gt(out=self._out(name, "g"), n=self._n2(a, b), a=a, b=b))

    def select(self, c: str, a: str, b: str, name: Optional[str] = None) -> str:
        n = max(self.size(c), self.size(a), self.size(b))
        return self._emit(Select(out=self._out(name, "sel"), n=n, c=c, a=a, b=b))

    def concat(self, xs: Sequence[str], blocks: int = 1, name: Optional[str] = None) -> str:
        n = sum(self.size(x) for x in xs)
        return self._emit(Concat(out=self._out(name, "cat"), n=n, xs=tuple(xs), blocks=blocks))

    def slice(self, x: str, start: int, stop: int, name: Optional[str] = None) -> str:
        return self._emit(Slice(out=self._out(name, "sl"), n=stop - start, x=x, start=start))

    def gather(self, x: str, index, name: Optional[str] = None) -> str:
        idx = self.const(np.asarray(index, dtype=np.float64))
        return self._emit(Gather(out=self._out(name, "gt"), n=self.size(idx), x=x, index=idx))

    def lerp(self, z: str, a: str, b: str) -> str:
        """(1 - z) a + z b, written a + z (b - a) (the form integer programs compute)."""
        return self.add(a, self.mul(z, self.sub(b, a)))

    # -- quantization points --------------------------------------------------------------------
    def quant(self, name: str, x: str, point: QPoint, out: Optional[str] = None) -> str:
        """A point of the node, planned as ``<node>:<name>``."""
        return self._emit(
            Quant(out=out or name, n=self.size(x), x=x, point=point, name=PointName(PointKind.INNER, name))
        )

    def quant_state(self, state: str, x: str, point: QPoint, out: Optional[str] = None) -> str:
        """The point of state ``state`` (planned as ``<node>/<state>``)."""
        return self._emit(
            Quant(
                out=self._out(out, f"{state}_q"),
                n=self.size(x),
                x=x,
                point=point,
                name=PointName(PointKind.STATE, state),
            )
        )

    def quant_output(self, index: int, x: str, point: QPoint, out: Optional[str] = None) -> str:
        """The point of the node's output ``index`` (planned under that value's name)."""
        return self._emit(
            Quant(
                out=self._out(out, f"y{index}_q"),
                n=self.size(x),
                x=x,
                point=point,
                name=PointName(PointKind.OUTPUT, index=index),
            )
        )

    def act_q(
        self,
        fn: Act,
        x: str,
        pre_name: str,
        out_name: str,
        out_point: QPoint,
        pre_point: Optional[QPoint] = None,
        state: Optional[str] = None,
    ) -> str:
        """fn(x) with its input quantized at ``<node>:<pre_name>`` and its output at ``out_name``
        (or at state ``state``)."""
        p = self.quant(pre_name, x, pre_point or pre(Act(fn).value))
        y = self.act(fn, p)
        return self.quant_state(state, y, out_point) if state else self.quant(out_name, y, out_point)

    # -- result ----------------------------------------------------------------------------------
    def build(self, outputs: Sequence[str], next_state: Mapping[str, str]) -> StepProgram:
        return StepProgram(
            self.name,
            tuple(self.inputs),
            tuple(self.states),
            self.params,
            tuple(self.body),
            tuple(outputs),
            dict(next_state),
            self.info,
        )
