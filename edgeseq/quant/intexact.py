"""The integer-exact interpreter: executes a :class:`~edgeseq.quant.program.Program` with numpy int64.

This is the oracle every integer backend (C, TVM, ONNX) is matched against bit for bit. Each
micro-op is implemented exactly as documented in :mod:`edgeseq.quant.program` (and
``edgeseq/quant/README.md``), and after every op the result is checked against the declared width
of its output vector: a value outside it raises :class:`~edgeseq.errors.NumericsError` naming the
IR node and the micro-op.

Execution is step by step with explicit state, so running a sequence in chunks (passing the state
along) gives exactly the same integers as running it whole. Matrix products are computed exactly:
through float64 BLAS when the worst-case magnitude is below 2^53 (every partial sum is then an
exactly representable integer, whatever the summation order), else in int64.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

import numpy as np

from ..errors import NumericsError, ShapeError
from .program import (
    WINDOW_MICRO_OPS,
    Add,
    Clamp,
    CmpGe,
    Concat,
    Div,
    Gather,
    Isqrt,
    Load,
    Lut,
    MatVec,
    MicroOp,
    Mul,
    Program,
    Requant,
    Select,
    Store,
    Sub,
    int_range,
    segments,
)

IntState = dict[str, np.ndarray]

_EXACT_F64 = float(2**53)


class _Exec:
    def __init__(self, prog: Program, check: bool = True):
        self.p = prog
        self.check = check
        self.c = {k: np.asarray(v, dtype=np.int64) for k, v in prog.consts.items()}
        # cached per-matvec data: float64 weights when exact, else None
        self._mv: dict[int, tuple] = {}
        self._lut: dict[str, tuple] = {}

    # operands: vectors (B, n) or constants broadcast as (1, n)
    def val(self, env, name):
        if name in self.c:
            return self.c[name].reshape(1, -1) if self.c[name].ndim <= 1 else self.c[name]
        return env[name]

    def fail(self, op: MicroOp, msg: str):
        raise NumericsError(f"micro-op {op.kind} -> '{op.out}': {msg}", where=f"node '{op.node}'")

    def put(self, env, op: MicroOp, y: np.ndarray):
        if self.check:
            bits = self.p.vectors[op.out].bits
            lo, hi = int_range(bits)
            if y.size and (int(y.min()) < lo or int(y.max()) > hi):
                bad = int(y.min()) if int(y.min()) < lo else int(y.max())
                self.fail(op, f"value {bad} outside the declared int{bits} range [{lo}, {hi}]")
        env[op.out] = y

    def matvec(self, env, op: MatVec):
        x = env[op.x]
        key = id(op)
        if key not in self._mv:
            w = self.c[op.w]
            b = self.c[op.bias] if op.bias else None
            lo, hi = self.p.intervals_cache.get(op.x, int_range(self.p.vectors[op.x].bits))
            bound = float(np.abs(w).sum(axis=1).max()) * max(abs(lo), abs(hi)) + (
                float(np.abs(b).max()) if b is not None else 0.0
            )
            wf = w.T.astype(np.float64) if bound < _EXACT_F64 else None
            self._mv[key] = (w, b, wf)
        w, b, wf = self._mv[key]
        bsz = x.shape[0]
        xb = x.reshape(bsz * op.blocks, -1)
        if wf is not None:
            y = (xb.astype(np.float64) @ wf).astype(np.int64)
        else:
            y = xb @ w.T
        if b is not None:
            y = y + b
        return y.reshape(bsz, -1)

    def requant(self, env, op: Requant):
        x = self.val(env, op.x)
        if op.pre > 0:
            x = (x + (1 << (op.pre - 1))) >> op.pre
        if self.check and x.size and (int(x.min()) < -(1 << 31) or int(x.max()) >= (1 << 31)):
            self.fail(op, "input after the pre-shift exceeds 32 bits")
        m = self.val(env, op.mult)
        s = self.val(env, op.shift)
        y = (x * m + (np.int64(1) << (s - 1))) >> s
        lo, hi = int_range(self.p.vectors[op.out].bits)
        return np.clip(y, lo, hi)

    def lut(self, env, op: Lut):
        x = env[op.x]
        t = self.c[op.table]
        if self.check and x.size:
            lim = 128 if t.size == 256 else 32768
            if int(x.min()) < -lim or int(x.max()) > lim - 1:
                self.fail(op, f"input outside int{8 if lim == 128 else 16} for a {t.size}-entry table")
        return lut_apply(t, x)

    def run_ops(self, ops, env, state):
        for op in ops:
            if isinstance(op, Store):
                state[op.out] = env[op.x].copy()
                continue
            y = SEMANTICS[type(op)](self, env, state, op)
            n = self.p.vectors[op.out].n
            if y.shape[-1] != n:
                y = np.broadcast_to(y, y.shape[:-1] + (n,)).copy()
            self.put(env, op, y)


#: micro-op type -> its integer semantics (interpreter, env, state, op) -> int64 array; the
#: specification every integer backend (ONNX, TVM, C) is checked against bit for bit
SEMANTICS: dict[type, Callable[["_Exec", dict, dict, MicroOp], np.ndarray]] = {}


def semantics(*classes):
    def deco(fn):
        for c in classes:
            SEMANTICS[c] = fn
        return fn

    return deco


semantics(MatVec)(lambda ex, env, st, op: ex.matvec(env, op))
semantics(Requant)(lambda ex, env, st, op: ex.requant(env, op))
semantics(Lut)(lambda ex, env, st, op: ex.lut(env, op))
semantics(Add)(lambda ex, env, st, op: ex.val(env, op.a) + ex.val(env, op.b))
semantics(Sub)(lambda ex, env, st, op: ex.val(env, op.a) - ex.val(env, op.b))
semantics(Mul)(lambda ex, env, st, op: ex.val(env, op.a) * ex.val(env, op.b))
semantics(CmpGe)(lambda ex, env, st, op: (ex.val(env, op.a) >= ex.val(env, op.b)).astype(np.int64))
semantics(Gather)(lambda ex, env, st, op: ex.val(env, op.x)[:, ex.c[op.index]])
semantics(Load)(lambda ex, env, st, op: st[op.state])


@semantics(Div)
def _div(ex, env, st, op):
    a, b = ex.val(env, op.a), ex.val(env, op.b)
    if b.size and int(b.min()) <= 0:
        ex.fail(op, f"non-positive divisor {int(b.min())}")
    return (2 * a + b) // (2 * b)


@semantics(Isqrt)
def _isqrt(ex, env, st, op):
    x = ex.val(env, op.x)
    if x.size and int(x.min()) < 0:
        ex.fail(op, f"square root of negative value {int(x.min())}")
    y = np.floor(np.sqrt(x.astype(np.float64))).astype(np.int64)
    y = y - (y * y > x)
    return y + ((y + 1) * (y + 1) <= x)


@semantics(Clamp)
def _clamp(ex, env, st, op):
    return np.minimum(np.maximum(ex.val(env, op.x), ex.val(env, op.lo)), ex.val(env, op.hi))


@semantics(Select)
def _select(ex, env, st, op):
    return np.where(ex.val(env, op.c) != 0, ex.val(env, op.a), ex.val(env, op.b))


@semantics(Concat)
def _concat(ex, env, st, op):
    bsz = next(env[x].shape[0] for x in op.xs if x in env) if any(x in env for x in op.xs) else 1
    parts = []
    for x in op.xs:
        v = ex.val(env, x)
        parts.append(np.broadcast_to(v, (bsz, v.shape[-1])).reshape(bsz, op.blocks, -1))
    return np.concatenate(parts, axis=2).reshape(bsz, -1)


def lut_apply(t: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The Lut micro-op: 256 entries: T[x + 128]; 2^k + 1 entries: interpolated int16 lookup."""
    t = np.asarray(t, dtype=np.int64)
    x = np.asarray(x, dtype=np.int64)
    if t.size == 256:
        return t[x + 128]
    k = int(t.size - 1).bit_length() - 1
    s = 16 - k
    u = x + 32768
    i = u >> s
    if s == 0:
        return t[i]
    f = u & ((1 << s) - 1)
    t0 = t[i]
    t1 = t[i + 1]
    return t0 + (((t1 - t0) * f + (1 << (s - 1))) >> s)


def _prep(prog: Program) -> None:
    if not hasattr(prog, "intervals_cache"):
        try:
            object.__setattr__(prog, "intervals_cache", prog.intervals())
        except Exception:  # noqa: BLE001 - a cache only; verify() reports real problems
            object.__setattr__(prog, "intervals_cache", {})


def init_state(prog: Program, batch: int) -> IntState:
    """All-zero integer state for ``batch`` sequences (flat (B, n) per state)."""
    return {k: np.zeros((batch, s.n), dtype=np.int64) for k, s in prog.states.items()}


def _inputs(prog: Program, xq) -> dict[str, np.ndarray]:
    if isinstance(xq, Mapping):
        d = {k: np.asarray(v) for k, v in xq.items()}
    else:
        if len(prog.inputs) != 1:
            raise ShapeError(
                f"the program has {len(prog.inputs)} input parts; pass a dict "
                f"{{{', '.join(s.vec for s in prog.inputs)}}}"
            )
        d = {prog.inputs[0].vec: np.asarray(xq)}
    out = {}
    shape = None
    for s in prog.inputs:
        if s.vec not in d:
            raise ShapeError(f"missing integer input part '{s.vec}'")
        a = d[s.vec]
        if a.ndim != 3 or a.shape[2] != len(s.channels):
            raise ShapeError(f"integer input '{s.vec}' must be (B, T, {len(s.channels)}), got {a.shape}")
        if a.dtype.kind not in "iu":
            raise ShapeError(f"integer input '{s.vec}' must have an integer dtype, got {a.dtype}")
        lo, hi = int_range(s.bits)
        if a.size and (int(a.min()) < lo or int(a.max()) > hi):
            raise NumericsError(f"integer input '{s.vec}' has values outside int{s.bits}")
        if shape is not None and a.shape[:2] != shape:
            raise ShapeError("integer input parts differ in batch or length")
        shape = a.shape[:2]
        out[s.vec] = a.astype(np.int64)
    return out


def _check_state(prog: Program, state: Mapping[str, np.ndarray], batch: int) -> IntState:
    missing = sorted(set(prog.states) - set(state))
    extra = sorted(set(state) - set(prog.states))
    if missing or extra:
        raise ShapeError(
            "integer state does not match the program's states"
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + (f"; unexpected: {', '.join(extra)}" if extra else "")
        )
    out = {}
    for k, s in prog.states.items():
        a = np.asarray(state[k])
        if a.shape != (batch, s.n) or a.dtype.kind not in "iu":
            raise ShapeError(
                f"integer state '{k}' must be an integer array of shape {(batch, s.n)}, got {a.dtype} {a.shape}"
            )
        lo, hi = int_range(s.bits)
        if a.size and (int(a.min()) < lo or int(a.max()) > hi):
            raise NumericsError(f"integer state '{k}' has values outside int{s.bits}")
        out[k] = a.astype(np.int64, copy=True)
    return out


def run(
    prog: Program, xq, state: Optional[Mapping[str, np.ndarray]] = None, *, check: bool = True, trace: bool = False
):
    """Run ``prog`` on integer input ``xq`` ((B, T, n) array, or a dict of input parts).

    Returns ``(outputs, new_state)``: ``outputs`` one int64 array per program output ((B, T, n)
    for temporal outputs, (B, n) for pooled ones); with ``trace=True`` a third item maps every step
    vector to its (B, T, n) sequence and every final vector to its (B, n) value."""
    _prep(prog)
    xs = _inputs(prog, xq)
    bsz, steps = next(iter(xs.values())).shape[:2]
    if prog.is_window:
        if state is not None:
            raise ShapeError(
                "a window program runs on whole windows from its zero state; it takes no state",
                hint="pass the whole window (no state)",
            )
        return _run_window(prog, xs, bsz, steps, _Exec(prog, check), trace)
    st = init_state(prog, bsz) if state is None else _check_state(prog, state, bsz)
    ex = _Exec(prog, check)
    temporal = [o for o in prog.outputs if o.temporal]
    rec: dict[str, list] = {o.vec: [] for o in temporal}
    tr: dict[str, list] = {}
    for t in range(steps):
        env = {k: v[:, t] for k, v in xs.items()}
        ex.run_ops(prog.step, env, st)
        for k in rec:
            rec[k].append(env[k])
        if trace:
            for k, v in env.items():
                tr.setdefault(k, []).append(v)
    fenv: dict[str, np.ndarray] = {}
    ex.run_ops(prog.final, fenv, dict(st))
    outs = []
    for o in prog.outputs:
        if o.temporal:
            outs.append(np.stack(rec[o.vec], axis=1) if steps else np.zeros((bsz, 0, prog.vectors[o.vec].n), np.int64))
        else:
            outs.append(fenv[o.vec])
    if trace:
        values = {k: np.stack(v, axis=1) for k, v in tr.items()}
        values.update(fenv)
        return tuple(outs), st, values
    return tuple(outs), st


def window_apply(op: MicroOp, seq: np.ndarray) -> np.ndarray:
    """A window micro-op on the integer sequence (B, T, n) of its input: the IR window op's equation
    (:data:`edgeseq.ir.interpret.WINDOW`, the one definition) on integers."""
    from ..ir.interpret import WINDOW

    ir = op.ir_op()
    return WINDOW[type(ir)](ir, seq)


#: window micro-op type -> its semantics on whole integer sequences (:func:`window_apply`)
WINDOW_SEMANTICS: dict[type, Callable[[MicroOp, np.ndarray], np.ndarray]] = {
    cls: window_apply for cls in WINDOW_MICRO_OPS.values()
}
#: every micro-op this interpreter defines (step and window)
DEFINED = (*SEMANTICS, *WINDOW_SEMANTICS)


def _run_window(prog: Program, xs: dict, bsz: int, steps: int, ex: _Exec, trace: bool):
    """A window program, segment by segment: each segment's micro-ops over every step (vectors of
    earlier segments read at the same step), then the window micro-ops on whole sequences."""
    st = init_state(prog, bsz)
    seqs: dict[str, np.ndarray] = dict(xs)
    for ops, wins in segments(prog.step):
        made: dict[str, list] = {}
        for t in range(steps):
            env = {k: v[:, t] for k, v in seqs.items()}
            ex.run_ops(ops, env, st)
            for k, v in env.items():
                if k not in seqs:
                    made.setdefault(k, []).append(v)
        for k, v in made.items():
            seqs[k] = np.stack(v, axis=1)
        for op in wins:
            y = WINDOW_SEMANTICS[type(op)](op, seqs[op.x])
            ex.put({}, op, y)
            seqs[op.out] = y
    fenv: dict[str, np.ndarray] = {}
    ex.run_ops(prog.final, fenv, dict(st))
    outs = tuple(seqs[o.vec] if o.temporal else fenv[o.vec] for o in prog.outputs)
    if trace:
        return outs, st, {**seqs, **fenv}
    return outs, st


def run_chunked(prog: Program, xq, chunk: int, state=None, check: bool = True):
    """Run in chunks of ``chunk`` steps, carrying the integer state; same results as :func:`run`."""
    if prog.is_window:
        raise ShapeError("a window program runs on whole windows, not in chunks", hint="pass the whole window")
    xs = xq if isinstance(xq, Mapping) else {prog.inputs[0].vec: np.asarray(xq)}
    steps = next(iter(xs.values())).shape[1]
    parts = []
    for s in range(0, steps, chunk):
        outs, state = run(prog, {k: v[:, s : s + chunk] for k, v in xs.items()}, state, check=check)
        parts.append(outs)
    outputs = tuple(
        np.concatenate([p[i] for p in parts], axis=1) if o.temporal else parts[-1][i]
        for i, o in enumerate(prog.outputs)
    )
    return outputs, state


def dequantize_outputs(prog: Program, outputs) -> tuple[np.ndarray, ...]:
    """Integer outputs -> float64 (q * scale)."""
    return tuple(np.asarray(q, np.float64) * o.scale for q, o in zip(outputs, prog.outputs))
