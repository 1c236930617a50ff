"""Float evaluation of step programs: the semantics of every primitive, one function each.

:func:`run_step` runs one step on (B, n) arrays; :func:`run_sequence` runs a (B, T, I) sequence
step by step with explicit state, like the reference interpreter. A *hook* observes or rounds the
values at quantization points: ``hook(name, x, point) -> x'`` with ``name`` the qualified point
name. A hook with a ``table`` method evaluates ``Quant(Activate(fn, Quant(x)))`` chains the way an
integer lookup table does (fake quantization).
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from ...errors import VerificationError
from ..activations import activation
from .program import Activate, Add, Affine, Concat, Div, Gather, Gt, Mul, Prim, Quant, Select, Slice, StepProgram, Sub

Env = dict
SEMANTICS: dict[type, Callable[[Prim, Callable[[str], np.ndarray]], np.ndarray]] = {}


def semantics(cls):
    def deco(fn):
        SEMANTICS[cls] = fn
        return fn

    return deco


@semantics(Affine)
def _affine(op: Affine, v):
    y = None
    for t in op.terms:
        w = v(t.w)
        x = v(t.x)
        if t.blocks == 1:
            p = x @ w.T
        else:
            b = x.shape[0]
            p = (x.reshape(b, t.blocks, w.shape[1]) @ w.T).reshape(b, -1)
        y = p if y is None else y + p
    return y if op.bias is None else y + v(op.bias)


@semantics(Activate)
def _activate(op: Activate, v):
    return activation(op.fn, v(op.x), op.slope, op.lo, op.hi)


@semantics(Add)
def _add(op, v):
    return v(op.a) + v(op.b)


@semantics(Sub)
def _sub(op, v):
    return v(op.a) - v(op.b)


@semantics(Mul)
def _mul(op, v):
    return v(op.a) * v(op.b)


@semantics(Div)
def _div(op, v):
    a, b = np.broadcast_arrays(v(op.a), v(op.b))
    return np.divide(a, b, out=np.zeros(np.broadcast_shapes(a.shape, b.shape)), where=b != 0)


@semantics(Gt)
def _gt(op, v):
    a = v(op.a)
    return (a - v(op.b) > 0).astype(a.dtype)


@semantics(Select)
def _select(op, v):
    return np.where(v(op.c) != 0, v(op.a), v(op.b))


@semantics(Concat)
def _concat(op: Concat, v):
    xs = [v(x) for x in op.xs]
    if op.blocks == 1:
        return np.concatenate(xs, axis=-1)
    b = xs[0].shape[0]
    return np.concatenate([x.reshape(b, op.blocks, -1) for x in xs], axis=-1).reshape(b, -1)


@semantics(Slice)
def _slice(op: Slice, v):
    return v(op.x)[:, op.start : op.start + op.n]


@semantics(Gather)
def _gather(op: Gather, v):
    return v(op.x)[:, v(op.index).astype(np.int64)]


@semantics(Quant)
def _quant(op, v):
    return v(op.x)


def _param_view(a: np.ndarray, dtype) -> np.ndarray:
    return a.astype(dtype, copy=False) if a.ndim != 1 or a.size != 1 else a.reshape(()).astype(dtype)


def run_step(
    prog: StepProgram,
    inputs: Sequence[np.ndarray],
    state: Mapping[str, np.ndarray],
    *,
    params: Optional[Mapping[str, np.ndarray]] = None,
    hook=None,
    node: str = "",
    node_outputs: Sequence[str] = (),
    env: Optional[Env] = None,
):
    """One step: ``(outputs, new_state)``. ``params`` overrides program parameters (fake-quantized
    weights); ``hook`` is called at every Quant with the point's qualified name."""
    x0 = inputs[0] if len(inputs) else next(iter(state.values()))
    dtype = x0.dtype
    prm = prog.params if params is None else {**prog.params, **params}
    vals: Env = {} if env is None else env
    for port, x in zip(prog.inputs, inputs):
        vals[port.name] = x
    for s in prog.states:
        vals[s.name] = state[s.name]

    def v(name):
        if name in vals:
            return vals[name]
        return _param_view(np.asarray(prm[name]), dtype)

    table = getattr(hook, "table", None) if hook is not None else None
    producers = prog.producers() if table is not None else None
    points = prog.qualified_points(node, node_outputs) if hook is not None else None
    for op in prog.body:
        if points is not None and isinstance(op, Quant):
            name, point = points[op.out]
            src = producers.get(op.x) if producers is not None else None
            pre = producers.get(src.x) if producers is not None and isinstance(src, Activate) else None
            if table is not None and isinstance(src, Activate) and isinstance(pre, Quant):
                vals[op.out] = table(src.fn, vals[src.x], points[pre.out][0], name, point, src.slope, src.lo, src.hi)
            else:
                vals[op.out] = hook(name, vals[op.x], point)
            continue
        fn = SEMANTICS.get(type(op))
        if fn is None:  # pragma: no cover - every registered primitive has semantics
            raise VerificationError(f"no semantics for step primitive {op.kind}")
        vals[op.out] = fn(op, v)
    outs = tuple(vals[o] for o in prog.outputs)
    new_state = {s: vals[v_] for s, v_ in prog.next_state.items()}
    return outs, new_state


def init_state(prog: StepProgram, batch: int, dtype=np.float64) -> dict[str, np.ndarray]:
    return {s.name: np.zeros((batch, s.n), dtype=dtype) for s in prog.states}


def run_sequence(prog: StepProgram, xs: Sequence[np.ndarray], state: Optional[Mapping[str, np.ndarray]] = None, **kw):
    """Run (B, T, n) inputs step by step: ``(outputs (B, T, n) each, final state)``."""
    b, steps = xs[0].shape[:2]
    st = dict(state) if state is not None else init_state(prog, b, xs[0].dtype)
    rec: list[list[np.ndarray]] = [[] for _ in prog.outputs]
    for t in range(steps):
        outs, st = run_step(prog, [x[:, t] for x in xs], st, **kw)
        for r, o in zip(rec, outs):
            r.append(o)
    return tuple(np.stack(r, axis=1) for r in rec), st
