"""TIR kernels for edgeseq integer programs (:mod:`edgeseq.quant.program`).

A :class:`~edgeseq.quant.program.Program` becomes up to four generated PrimFuncs (TVMScript text,
built with :class:`.emit.Kernel`):

``int_quantize``  the input boundary: float32 ``X`` (B, T, F) -> one integer tensor per
                  ``InputSpec``, in IEEE single: ``clamp(nearbyint((x - offset) * inv_scale))``
                  (``llvm.nearbyint``: round half to even, no fused multiply-add possible)
``int_hoist``     the step micro-ops that depend only on the inputs (input projections and what
                  follows them before the first state read), over every (b, t) row of the whole
                  chunk at once, ``row_block`` rows sharing each weight load
``int_scan``      ``for b: load state; for t in T.serial(T): step ops; store state; final ops``
                  with the state in on-chip ``alloc_buffer`` s; writes the temporal outputs every
                  step, the pooled outputs after ``final``, and the new state
``int_dequant``   integer outputs -> float32 ``(double) q * scale[c]`` rounded once to float32

One loop nest per micro-op, vectorised over the features (``Kernel.vec``: full vectors plus a
vectorised tail); matrix-vector products are register-blocked against pre-transposed weights.
Arithmetic follows ``edgeseq/quant/README.md`` exactly:

- exact ops (add, sub, mul, matvec, concat, gather, select, cmp_ge) compute in the widest of the
  operands' and the output's storage types, never narrower than int32 (the program's declared
  widths guarantee the result fits, so nothing can overflow); the result is cast to the output's
  storage type;
- ``requant`` in int64: ``x1 = (x + 2^(pre-1)) >> pre``, ``(x1 * M + 2^(s-1)) >> s`` (arithmetic
  shifts), then saturation to the declared width; ``lut`` with both table rules (int32
  interpolation products, int64 for wider tables); ``div`` as ``floordiv(2a + b, 2b)`` in int64;
  ``isqrt`` from a float64 square root with the interpreter's two exact integer corrections.

Constants (transposed weights, biases, multipliers, tables, limits) are packed into one flat
array per integer type (``c_int8`` ... ``c_int64``, Relax constants); constants whose values are
all equal become literals. Divisions and square roots whose declared operand range admits an
invalid value get a run-time ``assert`` that names the micro-op (it surfaces as NumericsError).

Nothing here imports TVM: the output is source text and numpy arrays (:class:`IntKernels`).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import numpy as np

from ...errors import UnsupportedOpError
from ...quant.program import (
    Add,
    Clamp,
    CmpGe,
    Concat,
    Div,
    Gather,
    Isqrt,
    Load,
    Lookahead,
    Lut,
    MatVec,
    MicroOp,
    Mul,
    Program,
    Requant,
    Reverse,
    Select,
    Store,
    Sub,
    container_bits,
    int_range,
)
from .emit import Kernel, Param, Schedule

LOWERED_MICRO_OPS = (
    "matvec",
    "requant",
    "add",
    "sub",
    "mul",
    "div",
    "isqrt",
    "lut",
    "clamp",
    "cmp_ge",
    "select",
    "concat",
    "gather",
    "load",
    "store",
)
ASSERT_PREFIX = "edgeseq-int:"
PAIR_WEIGHTS_INT8 = True  # pmaddwd path: keep int8 weights int8 in memory (widen on load)


def sdt(bits: int) -> str:
    """Storage dtype of a ``bits``-wide vector."""
    return f"int{container_bits(int(bits))}"


def _bits(dt: str) -> int:
    return int(dt[3:])


def wider(*dts: str, floor: int = 32) -> str:
    return f"int{max([floor] + [_bits(d) for d in dts])}"


def lit(v: int, dt: str) -> str:
    lo, hi = int_range(_bits(dt))
    v = int(v)
    if not lo <= v <= hi:
        raise ValueError(f"literal {v} does not fit {dt}")
    return f"T.{dt}({v})"


def cast(expr: str, src: str, dst: str) -> str:
    return expr if src == dst else f'T.Cast("{dst}", {expr})'


def f64(v: float) -> str:
    v = float(v)
    if not np.isfinite(v):
        raise ValueError(f"non-finite constant {v}")
    return f"T.float64({v!r})"


def _int_array(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind == "u":  # unsigned constants: the narrowest signed type that holds them
        v = a.astype(np.int64)
        for dt in (np.int8, np.int16, np.int32, np.int64):
            if v.size == 0 or (v.max() <= np.iinfo(dt).max):
                return v.astype(dt)
    return a


# ----------------------------------------------------------------------------------------------
# constants


class ConstPool:
    """Integer constants of one kernel, packed into one flat parameter per dtype."""

    def __init__(self):
        self._parts: dict[str, list[np.ndarray]] = {}
        self._size: dict[str, int] = {}
        self._cache: dict[tuple, tuple[str, int]] = {}

    def put(self, key, arr: np.ndarray, dtype: Optional[str] = None) -> tuple[str, int]:
        """(parameter name, element offset) of ``arr`` (flattened) in the pool of ``dtype``."""
        a = np.ravel(np.asarray(arr))
        dt = dtype or a.dtype.name
        ck = (key, dt)
        if ck in self._cache:
            return self._cache[ck]
        if not a.size:
            a = np.zeros(1, dt)
        conv = a.astype(dt)
        if not np.array_equal(conv.astype(np.int64), a.astype(np.int64)):
            raise ValueError(f"constant {key} does not fit {dt}")
        off = self._size.get(dt, 0)
        pad = (-off) % 16  # 16-element alignment of every constant (vector loads)
        if pad:
            self._parts.setdefault(dt, []).append(np.zeros(pad, dt))
            off += pad
        self._parts.setdefault(dt, []).append(conv)
        self._size[dt] = off + conv.size
        self._cache[ck] = (f"c_{dt}", off)
        return self._cache[ck]

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"c_{dt}": np.ascontiguousarray(np.concatenate(parts)) for dt, parts in sorted(self._parts.items())}


# ----------------------------------------------------------------------------------------------
# program analysis


@dataclass
class Layout:
    """How the program's step ops are split between the hoisted kernel and the time loop."""

    hoisted: tuple[MicroOp, ...]
    scan: tuple[MicroOp, ...]
    edges: tuple[str, ...]  # input / hoisted vectors the time loop reads (per step)
    hoist_outputs: tuple[str, ...]  # the hoisted ones among them (outputs of int_hoist)
    alias: dict[str, str] = field(default_factory=dict)  # loaded vector -> state key (no copy)


def _check_supported(prog: Program, target: str) -> None:
    if not prog.inputs:
        raise UnsupportedOpError("the integer program has no input (no InputSpec)", where=f"target tvm/{target}")
    for section, ops in (("step", prog.step), ("final", prog.final)):
        for i, op in enumerate(ops):
            if op.window and type(op) in WINDOW_COPIES:
                continue  # rendered over the window by the scan kernel (_window_scan)
            if op.kind not in LOWERED_MICRO_OPS or type(op) not in _EMITTERS:
                raise UnsupportedOpError(
                    f"micro-op '{op.kind}' ({section} #{i} -> '{op.out}') has no integer TVM kernel",
                    where=f"node '{op.node}' [target tvm/{target}]",
                    hint=f"the integer TVM backend lowers: {', '.join(LOWERED_MICRO_OPS)}",
                )
            if isinstance(op, Lut):
                t = prog.consts[op.table]
                if t.size != 256:
                    kk = int(t.size - 1).bit_length() - 1
                    if t.size != (1 << kk) + 1 or not 1 <= kk <= 16:
                        raise UnsupportedOpError(
                            f"lut table of {t.size} entries (expected 256 or 2^k + 1)",
                            where=f"node '{op.node}' [target tvm/{target}]",
                        )
    step_vecs = {s.vec for s in prog.inputs} | {op.out for op in prog.step if not isinstance(op, Store)}
    final_vecs = {op.out for op in prog.final}
    for o in prog.outputs:
        if (o.temporal and o.vec not in step_vecs) or (not o.temporal and o.vec not in final_vecs):
            raise UnsupportedOpError(
                f"output '{o.name}' ({'temporal' if o.temporal else 'pooled'}) names vector "
                f"'{o.vec}', which the {'step' if o.temporal else 'final'} program does not "
                "produce",
                where=f"target tvm/{target}",
            )


def _load_aliases(ops, end_reads: set[str]) -> dict[str, str]:
    """Loads whose vector can read the state buffer directly: no store to that state happens
    between the load and the vector's last read (``end_reads`` are read after the last op)."""
    last: dict[str, int] = {}
    for i, op in enumerate(ops):
        for r in op.reads():
            last[r] = i
    for v in end_reads:
        last[v] = len(ops)
    alias = {}
    for p, op in enumerate(ops):
        if not isinstance(op, Load):
            continue
        end = last.get(op.out, p)
        if not any(isinstance(o, Store) and o.out == op.state for o in ops[p + 1 : end]):
            alias[op.out] = op.state
    return alias


def layout(prog: Program, hoist: bool = True) -> Layout:
    inputs = {s.vec for s in prog.inputs}
    hoisted_vecs: set[str] = set()
    hoisted, scan = [], []
    for op in prog.step:
        if (
            hoist
            and not isinstance(op, (Load, Store))
            and all(r in prog.consts or r in inputs or r in hoisted_vecs for r in op.reads())
        ):
            hoisted.append(op)
            hoisted_vecs.add(op.out)
        else:
            scan.append(op)
    temporal = [o.vec for o in prog.outputs if o.temporal]
    reads = {r for op in scan for r in op.reads()} | set(temporal)
    order = [s.vec for s in prog.inputs] + [op.out for op in hoisted]
    edges = tuple(v for v in order if v in reads)
    if not edges:  # a program that never reads its input per step: the input still sets T
        edges = (prog.inputs[0].vec,)
    hoist_out = tuple(v for v in edges if v in hoisted_vecs)
    alias = _load_aliases(scan, set(temporal))
    alias.update(_load_aliases(list(prog.final), set()))
    return Layout(tuple(hoisted), tuple(scan), edges, hoist_out, alias)


# ----------------------------------------------------------------------------------------------
# addressing


class Loc:
    """Where the values of one vector live in a kernel."""

    dtype: str

    def at(self, rr: str, j: str) -> str:
        raise NotImplementedError


@dataclass
class BufLoc(Loc):
    buf: str
    n: int
    dtype: str
    rows: int = 1

    def at(self, rr: str, j: str) -> str:
        return f"{self.buf}[{j}]" if self.rows == 1 else f"{self.buf}[{rr} * {self.n} + {j}]"


@dataclass
class RowLoc(Loc):
    """A row of a parameter tensor: ``row(rr)`` gives the leading indices."""

    param: str
    dtype: str
    row: Callable[[str], str]

    def at(self, rr: str, j: str) -> str:
        return f"{self.param}[{self.row(rr)}, {j}]"


# ----------------------------------------------------------------------------------------------
# micro-op emitters


class OpEmitter:
    """Writes the loop nests of micro-ops into a kernel for ``rows`` rows at a time."""

    def __init__(
        self,
        prog: Program,
        k: Kernel,
        pool: ConstPool,
        sched: Schedule,
        rows: int,
        locs: dict[str, Loc],
        state_locs: dict[str, Loc],
        intervals: dict,
        target: str,
        dot: Optional[tuple[str, int]] = None,
    ):
        self.p, self.k, self.pool, self.sched, self.rows = prog, k, pool, sched, rows
        self.locs, self.state_locs = locs, state_locs
        self.iv = intervals
        self.target = target
        self.dot = dot  # (LLVM pair-product intrinsic, int32 lanes) or None

    # -- helpers ----------------------------------------------------------------------------------
    def dtype(self, name: str) -> str:
        if name in self.p.consts:
            return _int_array(self.p.consts[name]).dtype.name
        return self.locs[name].dtype

    def width(self, name: str) -> int:
        return self.p.width(name)

    def const_ref(self, name: str, j: str, cd: str, arr=None, key=None) -> str:
        a = _int_array(self.p.consts[name] if arr is None else arr)
        flat = np.ravel(a)
        if flat.size == 1 or (flat.size and np.all(flat == flat[0])):
            return lit(int(flat[0]), cd)
        pname, off = self.pool.put(key or name, flat)
        return cast(f"{pname}[{off} + {j}]", flat.dtype.name, cd)

    def ref(self, name: str, rr: str, j: str, cd: str) -> str:
        """Element ``j`` of operand ``name`` (broadcast when it has one value) as type ``cd``."""
        if name in self.p.consts:
            return self.const_ref(name, j, cd)
        loc = self.locs[name]
        jj = "0" if self.p.vectors[name].n == 1 else j
        return cast(loc.at(rr, jj), loc.dtype, cd)

    def out(self, op: MicroOp) -> Loc:
        return self.locs[op.out]

    @contextmanager
    def row_loop(self) -> Iterator[str]:
        if self.rows == 1:
            yield "0"
        else:
            rr = self.k.fresh("rr")
            with self.k.loop(rr, self.rows):
                yield rr

    def elementwise(self, op: MicroOp, expr: Callable[[str, str], str]) -> None:
        """out[j] = expr(rr, j) (already in the output storage type), vectorised over features."""
        loc = self.out(op)
        n = self.p.vectors[op.out].n
        with self.row_loop() as rr:
            self.k.vec(n, lambda j: [f"{loc.at(rr, j)} = {expr(rr, j)}"])

    def where(self, op: MicroOp) -> str:
        return f"micro-op {op.kind} -> '{op.out}' (node '{op.node}')"

    def check(self, op: MicroOp, operand: str, cond: Callable[[str], str], what: str) -> None:
        """A scalar run-time check of every value of ``operand`` (outside vectorised loops)."""
        n = self.width(operand)
        if operand in self.p.consts:
            return
        with self.row_loop() as rr:
            jc = self.k.fresh("jc")
            with self.k.loop(jc, n):
                v = self.ref(operand, rr, jc, "int64")
                msg = f"{ASSERT_PREFIX} {self.where(op)}: {what}"
                self.k.line(f"assert {cond(v)}, {msg!r}")

    # -- ops --------------------------------------------------------------------------------------
    def emit(self, op: MicroOp) -> None:
        self.k.line(f"# {op.describe()}"[:200].replace("\n", " "))
        _EMITTERS[type(op)](self, op)

    def binary(self, op, fn: Callable[[str, str], str]) -> None:
        od = self.out(op).dtype
        cd = wider(od, self.dtype(op.a), self.dtype(op.b))
        self.elementwise(op, lambda rr, j: cast(fn(self.ref(op.a, rr, j, cd), self.ref(op.b, rr, j, cd)), cd, od))

    def e_add(self, op: Add):
        self.binary(op, lambda a, b: f"({a} + {b})")

    def e_sub(self, op: Sub):
        self.binary(op, lambda a, b: f"({a} - {b})")

    def e_mul(self, op: Mul):
        self.binary(op, lambda a, b: f"({a} * {b})")

    def e_div(self, op: Div):
        lo = self.iv.get(op.b, (None,))[0] if op.b not in self.p.consts else int(np.min(self.p.consts[op.b]))
        if op.b in self.p.consts and lo <= 0:
            raise UnsupportedOpError(
                f"div by the constant '{op.b}', which is not positive",
                where=f"node '{op.node}' [target tvm/{self.target}]",
            )
        if lo is None or lo <= 0:
            self.check(op, op.b, lambda v: f"{v} > T.int64(0)", "non-positive divisor")
        od = self.out(op).dtype
        cd = "int64"
        self.elementwise(
            op,
            lambda rr, j: cast(
                f"T.floordiv({self.ref(op.a, rr, j, cd)} * T.int64(2) + {self.ref(op.b, rr, j, cd)}, "
                f"{self.ref(op.b, rr, j, cd)} * T.int64(2))",
                cd,
                od,
            ),
        )

    def e_isqrt(self, op: Isqrt):
        lo = self.iv.get(op.x, (None,))[0] if op.x not in self.p.consts else int(np.min(self.p.consts[op.x]))
        if lo is None or lo < 0:
            self.check(op, op.x, lambda v: f"{v} >= T.int64(0)", "square root of a negative value")
        n = self.p.vectors[op.out].n
        y0 = self.k.scratch(self.k.fresh("sq"), n * self.rows, "int64")
        y1 = self.k.scratch(self.k.fresh("sq"), n * self.rows, "int64")
        t0, t1 = BufLoc(y0, n, "int64", self.rows), BufLoc(y1, n, "int64", self.rows)
        od = self.out(op).dtype
        loc = self.out(op)
        with self.row_loop() as rr:
            x = lambda j: self.ref(op.x, rr, j, "int64")
            # x >= 0 (checked above when its range allows otherwise); the float64 clamps keep the
            # conversion back to int64 in range whatever happens (sqrt(2^63) < 2^32)
            self.k.vec(
                n,
                lambda j: [
                    f'{t0.at(rr, j)} = T.Cast("int64", T.min(T.max(T.floor(T.sqrt('
                    f'T.Cast("float64", {x(j)}))), T.float64(0.0)), T.float64(4294967296.0)))'
                ],
            )
            self.k.vec(
                n,
                lambda j: [
                    f'{t1.at(rr, j)} = {t0.at(rr, j)} - T.Cast("int64", {t0.at(rr, j)} * {t0.at(rr, j)} > {x(j)})'
                ],
            )
            self.k.vec(
                n,
                lambda j: [
                    f"{loc.at(rr, j)} = "
                    + cast(
                        f'({t1.at(rr, j)} + T.Cast("int64", ({t1.at(rr, j)} + T.int64(1)) * ({t1.at(rr, j)} + T.int64(1)) '
                        f"<= {x(j)}))",
                        "int64",
                        od,
                    )
                ],
            )

    def e_requant(self, op: Requant):
        od = self.out(op).dtype
        bits = self.p.vectors[op.out].bits
        m = _int_array(self.p.consts[op.mult]).astype(np.int64)
        s = _int_array(self.p.consts[op.shift]).astype(np.int64)
        if m.size != s.size and m.size > 1 and s.size > 1:
            raise UnsupportedOpError(
                "requant multiplier and shift sizes differ", where=f"node '{op.node}' [target tvm/{self.target}]"
            )
        rnd = np.left_shift(np.int64(1), s - 1)
        lo, hi = int_range(bits)

        def expr(rr, j):
            x = self.ref(op.x, rr, j, "int64")
            if op.pre > 0:
                x = f"T.shift_right({x} + {lit(1 << (op.pre - 1), 'int64')}, {lit(op.pre, 'int64')})"
            # M < 2^31 and s <= 62 are stored narrow and sign-extended here, so LLVM sees a
            # 32 x 32 -> 64-bit product (pmuldq / smull) instead of a full 64-bit multiply
            mm = self.const_ref(op.mult, j, "int64", m.astype(np.int32), key=("m32", op.mult))
            ss = self.const_ref(op.shift, j, "int64", s.astype(np.int8), key=("s8", op.shift))
            rn = self.const_ref(op.shift, j, "int64", rnd, key=("rnd64", op.shift))
            v = f"T.shift_right({x} * {mm} + {rn}, {ss})"
            if bits < 64:
                v = f"T.max(T.min({v}, {lit(hi, 'int64')}), {lit(lo, 'int64')})"
            return cast(v, "int64", od)

        self.elementwise(op, expr)

    def e_lut(self, op: Lut):
        t = _int_array(self.p.consts[op.table])
        od = self.out(op).dtype
        if t.dtype.itemsize < 4:  # 32-bit table entries: the lookups become hardware gathers
            t = t.astype(np.int32)
        tdt = t.dtype.name
        pname, off = self.pool.put(op.table, t)
        if t.size == 256:
            self.elementwise(
                op, lambda rr, j: cast(f"{pname}[{off + 128} + {self.ref(op.x, rr, j, 'int32')}]", tdt, od)
            )
            return
        kk = int(t.size - 1).bit_length() - 1
        sh = 16 - kk
        ct = wider(tdt)  # int32 for int8/int16 tables, int64 for wider ones

        if sh == 0:
            self.elementwise(
                op, lambda rr, j: cast(f"{pname}[{off} + {self.ref(op.x, rr, j, 'int32')} + T.int32(32768)]", tdt, od)
            )
            return
        # two passes over lane-indexed scratch: u = x + 32768 -> i = u >> S, f = u & (2^S - 1);
        # then T[i] + (((T[i+1] - T[i]) * f + 2^(S-1)) >> S)
        n = self.p.vectors[op.out].n
        ib = BufLoc(self.k.scratch(self.k.fresh("li"), n * self.rows, "int32"), n, "int32", self.rows)
        fb = BufLoc(self.k.scratch(self.k.fresh("lf"), n * self.rows, ct), n, ct, self.rows)
        loc = self.out(op)
        with self.row_loop() as rr:
            self.k.vec(
                n,
                lambda j: [
                    f"{ib.at(rr, j)} = T.shift_right({self.ref(op.x, rr, j, 'int32')} + T.int32(32768), T.int32({sh}))",
                    f"{fb.at(rr, j)} = "
                    + cast(
                        f"T.bitwise_and({self.ref(op.x, rr, j, 'int32')} + T.int32(32768), T.int32({(1 << sh) - 1}))",
                        "int32",
                        ct,
                    ),
                ],
            )

            def body(j):
                t0 = cast(f"{pname}[{off} + {ib.at(rr, j)}]", tdt, ct)
                t1 = cast(f"{pname}[{off + 1} + {ib.at(rr, j)}]", tdt, ct)
                v = f"({t0} + T.shift_right(({t1} - {t0}) * {fb.at(rr, j)} + {lit(1 << (sh - 1), ct)}, {lit(sh, ct)}))"
                return [f"{loc.at(rr, j)} = {cast(v, ct, od)}"]

            self.k.vec(n, body)

    def e_clamp(self, op: Clamp):
        od = self.out(op).dtype
        cd = wider(od, self.dtype(op.x), self.dtype(op.lo), self.dtype(op.hi))
        self.elementwise(
            op,
            lambda rr, j: cast(
                f"T.min(T.max({self.ref(op.x, rr, j, cd)}, {self.ref(op.lo, rr, j, cd)}), {self.ref(op.hi, rr, j, cd)})",
                cd,
                od,
            ),
        )

    def e_cmp_ge(self, op: CmpGe):
        od = self.out(op).dtype
        cd = wider(self.dtype(op.a), self.dtype(op.b))
        self.elementwise(
            op,
            lambda rr, j: (
                f"T.Select({self.ref(op.a, rr, j, cd)} >= {self.ref(op.b, rr, j, cd)}, {lit(1, od)}, {lit(0, od)})"
            ),
        )

    def e_select(self, op: Select):
        od = self.out(op).dtype
        cd = wider(od, self.dtype(op.a), self.dtype(op.b))
        ccd = wider(self.dtype(op.c))
        self.elementwise(
            op,
            lambda rr, j: cast(
                f"T.Select({self.ref(op.c, rr, j, ccd)} != {lit(0, ccd)}, {self.ref(op.a, rr, j, cd)}, "
                f"{self.ref(op.b, rr, j, cd)})",
                cd,
                od,
            ),
        )

    def copy(self, dst: Loc, dst_off: int, src: str, src_off: int, count: int, rr: str) -> None:
        """dst[dst_off + i] = src[src_off + i] for i < count (cast to dst's type)."""
        if count <= 0:
            return
        if src in self.p.consts:
            flat = np.ravel(_int_array(self.p.consts[src]))
            seg = flat[src_off : src_off + count]
            self.k.vec(
                count,
                lambda i: [
                    f"{dst.at(rr, f'{dst_off} + {i}')} = "
                    f"{self.const_ref(src, i, dst.dtype, seg, key=('seg', src, src_off, count))}"
                ],
            )
            return
        loc = self.locs[src]
        self.k.vec(
            count,
            lambda i: [
                f"{dst.at(rr, f'{dst_off} + {i}')} = {cast(loc.at(rr, f'{src_off} + {i}'), loc.dtype, dst.dtype)}"
            ],
        )

    def e_concat(self, op: Concat):
        dst = self.out(op)
        g = op.blocks
        n = self.p.vectors[op.out].n
        per = n // g
        with self.row_loop() as rr:
            for blk in range(g):
                off = blk * per
                for x in op.xs:
                    w = self.width(x) // g
                    if self.width(x) == 1 and g == 1 and x in self.p.vectors:
                        self.copy(dst, off, x, 0, 1, rr)
                    else:
                        self.copy(dst, off, x, blk * w, w, rr)
                    off += w

    def e_gather(self, op: Gather):
        idx = np.ravel(np.asarray(self.p.consts[op.index], np.int64))
        dst = self.out(op)
        runs = []  # (dst start, src start, length) of contiguous index runs
        for j, v in enumerate(idx.tolist()):
            if runs and runs[-1][1] + runs[-1][2] == v and runs[-1][0] + runs[-1][2] == j:
                runs[-1][2] += 1
            else:
                runs.append([j, v, 1])
        with self.row_loop() as rr:
            if len(runs) <= 8:
                for d, s, c in runs:
                    self.copy(dst, d, op.x, s, c, rr)
                return
            pname, off = self.pool.put(op.index, idx.astype(np.int32), "int32")
            if op.x in self.p.consts:
                flat = np.ravel(_int_array(self.p.consts[op.x]))
                self.k.vec(
                    idx.size,
                    lambda j: [f"{dst.at(rr, j)} = {self.const_ref(op.x, j, dst.dtype, flat[idx], key=('g', op.out))}"],
                )
                return
            loc = self.locs[op.x]
            self.k.vec(
                idx.size,
                lambda j: [f"{dst.at(rr, j)} = {cast(loc.at(rr, f'{pname}[{off} + {j}]'), loc.dtype, dst.dtype)}"],
            )

    def e_load(self, op: Load):
        dst = self.locs[op.out]
        src = self.state_locs[op.state]
        if isinstance(dst, BufLoc) and isinstance(src, BufLoc) and dst.buf == src.buf:
            return  # aliased: reads the state buffer directly
        n = self.p.vectors[op.out].n
        self.k.vec(n, lambda j: [f"{dst.at('0', j)} = {cast(src.at('0', j), src.dtype, dst.dtype)}"])

    def e_store(self, op: Store):
        dst = self.state_locs[op.out]
        n = self.p.states[op.out].n
        if self.width(op.x) == 1 and n > 1:
            self.k.vec(n, lambda j: [f"{dst.at('0', j)} = {self.ref(op.x, '0', '0', dst.dtype)}"])
            return
        if op.x in self.p.consts:
            self.k.vec(n, lambda j: [f"{dst.at('0', j)} = {self.ref(op.x, '0', j, dst.dtype)}"])
            return
        src = self.locs[op.x]
        if isinstance(src, BufLoc) and isinstance(dst, BufLoc) and src.buf == dst.buf:
            return
        self.k.vec(n, lambda j: [f"{dst.at('0', j)} = {cast(src.at('0', j), src.dtype, dst.dtype)}"])

    def e_matvec(self, op: MatVec):
        w = _int_array(self.p.consts[op.w])
        if w.ndim != 2:
            raise UnsupportedOpError(
                "matvec weight must be a 2-D constant", where=f"node '{op.node}' [target tvm/{self.target}]"
            )
        n_out, n_in = w.shape
        acc_dt = wider(self.out(op).dtype)
        bias = np.ravel(_int_array(self.p.consts[op.bias])) if op.bias else None
        dot = self.dot
        x_bits = self.p.vectors[op.x].bits if op.x in self.p.vectors else 64
        # pair products (pmaddwd): int16 x int16 pairs summed in int32. Exact when the output is
        # an int32 accumulator and no pair can reach 2 * (-2^15)^2 = 2^31 (a weight of -32768)
        use_dot = (
            dot is not None
            and acc_dt == "int32"
            and x_bits <= 16
            and op.x in self.locs
            and w.dtype.itemsize <= 2
            and (w.size == 0 or int(w.min()) > -32768)
            and n_out >= dot[1]
        )
        gctx = self.k.loop(self.k.fresh("g"), op.blocks) if op.blocks > 1 else nullcontext("0")
        with gctx as g:
            c0 = 0
            if use_dot:
                c0 = n_out // dot[1] * dot[1]
                self._matvec_dot(op, w, bias, g, c0)
            if c0 < n_out:
                self._matvec_cols(op, w, bias, g, c0, n_out - c0)

    def _col_blocks(self, acc_dt: str, start: int, count: int, unit: int = 1):
        cb = self.sched.col_block if acc_dt == "int32" else max(self.sched.col_block // 2, self.sched.lanes)
        if self.rows > 1:
            cb = max(cb // 2, self.sched.lanes)
        cb = max(cb // unit * unit, unit)
        full, rem = divmod(count, cb)
        blocks = ([(True, full, cb)] if full else []) + ([(False, full * cb, rem)] if rem else [])
        return cb, [(is_loop, ext, width, start) for is_loop, ext, width in blocks]

    def _matvec_cols(self, op: MatVec, w, bias, g: str, col0: int, ncols: int) -> None:
        """Columns [col0, col0 + ncols): broadcast x[k] times a contiguous row of the transposed
        weight, ``col_block`` accumulators per row kept in registers."""
        n_out, n_in = w.shape
        od = self.out(op).dtype
        acc_dt = wider(od)
        xdt = self.dtype(op.x)
        wname, woff = self.pool.put(("wt", op.w), np.ascontiguousarray(w.T), w.dtype.name)
        dst = self.out(op)
        rows = self.rows
        cb, blocks = self._col_blocks(acc_dt, col0, ncols)
        accs = [self.k.scratch(f"acc{acc_dt[3:]}_{cb}_{r}", cb, acc_dt) for r in range(rows)]
        for is_loop, ext, width, start in blocks:
            jb = self.k.fresh("jb")
            ctx = self.k.loop(jb, ext) if is_loop else nullcontext()
            base = f"{start} + {jb} * {width}" if is_loop else str(start + ext)
            with ctx:
                ji = self.k.fresh("ja")
                with self.k.loop(ji, width, "vectorized"):
                    init = (
                        self.const_ref(op.bias, f"{base} + {ji}", acc_dt, bias, key=("bias", op.bias))
                        if bias is not None
                        else lit(0, acc_dt)
                    )
                    for r in range(rows):
                        self.k.line(f"{accs[r]}[{ji}] = {init}")
                kk = self.k.fresh("kk")
                with self.k.loop(kk, n_in):
                    jc = self.k.fresh("jc")
                    with self.k.loop(jc, width, "vectorized"):
                        wv = cast(f"{wname}[{woff} + {kk} * {n_out} + {base} + {jc}]", w.dtype.name, acc_dt)
                        for r in range(rows):
                            xv = (
                                cast(self.locs[op.x].at(str(r), f"{g} * {n_in} + {kk}"), xdt, acc_dt)
                                if op.x in self.locs
                                else self.const_ref(op.x, f"{g} * {n_in} + {kk}", acc_dt)
                            )
                            self.k.line(f"{accs[r]}[{jc}] = {accs[r]}[{jc}] + {xv} * {wv}")
                jd = self.k.fresh("jd")
                with self.k.loop(jd, width, "vectorized"):
                    for r in range(rows):
                        self.k.line(
                            f"{dst.at(str(r), f'{g} * {n_out} + {base} + {jd}')} = "
                            f"{cast(f'{accs[r]}[{jd}]', acc_dt, od)}"
                        )

    def _matvec_dot(self, op: MatVec, w, bias, g: str, ncols: int) -> None:
        """Columns [0, ncols) (a multiple of the intrinsic's lanes L) with a pair-product
        intrinsic: the weights are stored as int16 pairs ``W2[p, j, e] = W[j, 2p + e]`` (a zero
        row pads an odd input size), x[2p], x[2p + 1] are packed into one int32 that is broadcast
        and reinterpreted as int16 lanes, and each intrinsic call adds L outputs' two products."""
        intrin, L = self.dot
        n_out, n_in = w.shape
        od = self.out(op).dtype
        npair = (n_in + 1) // 2
        # int8 weights stay int8 in memory (half the bytes) and are widened to int16 pairs on load
        wdt = "int8" if (w.dtype.itemsize == 1 and PAIR_WEIGHTS_INT8) else "int16"
        w2 = np.zeros((npair * 2, n_out), wdt)
        w2[:n_in] = w.T
        w2 = np.ascontiguousarray(w2.reshape(npair, 2, n_out).transpose(0, 2, 1))  # (p, j, e)
        wname, woff = self.pool.put(("wpair", op.w), w2, wdt)
        xloc, xdt = self.locs[op.x], self.dtype(op.x)
        dst = self.out(op)
        rows = self.rows
        cb, blocks = self._col_blocks("int32", 0, ncols, unit=L)
        accs = [self.k.scratch(f"acc32_{cb}_{r}", cb, "int32") for r in range(rows)]

        def x_at(r, k):
            return cast(xloc.at(str(r), f"{g} * {n_in} + {k}"), xdt, "int32")

        def pair_expr(r, p, odd_tail):
            lo = f"T.bitwise_and({x_at(r, f'({p}) * 2')}, T.int32(65535))"
            if odd_tail:
                return lo
            return f"({x_at(r, f'({p}) * 2 + 1')} * T.int32(65536) + {lo})"

        packed = None
        if n_in // 2:
            # pack the pairs of x once per row into int32 (one load per pair below; for an int16
            # x LLVM turns the packing into plain 32-bit copies)
            packed = self.k.scratch(self.k.fresh("xpair"), rows * (n_in // 2), "int32")
            for r in range(rows):
                self.k.vec(n_in // 2, lambda j, r=r: [f"{packed}[{r * (n_in // 2)} + {j}] = {pair_expr(r, j, False)}"])

        def pair(r, p, odd_tail):
            if packed is not None and not odd_tail:
                return f"{packed}[{r * (n_in // 2)} + {p}]"
            return pair_expr(r, p, odd_tail)

        for is_loop, ext, width, start in blocks:
            jb = self.k.fresh("jb")
            ctx = self.k.loop(jb, ext) if is_loop else nullcontext()
            base = f"{start} + {jb} * {width}" if is_loop else str(start + ext)
            with ctx:
                ji = self.k.fresh("ja")
                with self.k.loop(ji, width, "vectorized"):
                    init = (
                        self.const_ref(op.bias, f"{base} + {ji}", "int32", bias, key=("bias", op.bias))
                        if bias is not None
                        else lit(0, "int32")
                    )
                    for r in range(rows):
                        self.k.line(f"{accs[r]}[{ji}] = {init}")

                def step(p: str, odd_tail: bool):
                    for r in range(rows):
                        xb = f'T.reinterpret(T.broadcast({pair(r, p, odd_tail)}, {L}), dtype="int16x{2 * L}")'
                        for lane0 in range(0, width, L):
                            wv = f'{wname}.vload([{woff} + ({p} * {n_out} + {base} + {lane0}) * 2], "{wdt}x{2 * L}")'
                            if wdt != "int16":
                                wv = f'T.Cast("int16x{2 * L}", {wv})'
                            acc = f"{accs[r]}[T.ramp({lane0}, 1, {L})]"
                            self.k.line(
                                f"{acc} = {acc} + T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("
                                f'"{intrin}"), {xb}, {wv}, dtype="int32x{L}")'
                            )

                if n_in // 2:
                    pp = self.k.fresh("pp")
                    with self.k.loop(pp, n_in // 2):
                        step(pp, False)
                if n_in % 2:
                    step(str(n_in // 2), True)
                jd = self.k.fresh("jd")
                with self.k.loop(jd, width, "vectorized"):
                    for r in range(rows):
                        self.k.line(
                            f"{dst.at(str(r), f'{g} * {n_out} + {base} + {jd}')} = "
                            f"{cast(f'{accs[r]}[{jd}]', 'int32', od)}"
                        )


_EMITTERS: dict[type, Callable] = {
    MatVec: OpEmitter.e_matvec,
    Requant: OpEmitter.e_requant,
    Add: OpEmitter.e_add,
    Sub: OpEmitter.e_sub,
    Mul: OpEmitter.e_mul,
    Div: OpEmitter.e_div,
    Isqrt: OpEmitter.e_isqrt,
    Lut: OpEmitter.e_lut,
    Clamp: OpEmitter.e_clamp,
    CmpGe: OpEmitter.e_cmp_ge,
    Select: OpEmitter.e_select,
    Concat: OpEmitter.e_concat,
    Gather: OpEmitter.e_gather,
    Load: OpEmitter.e_load,
    Store: OpEmitter.e_store,
}


# ----------------------------------------------------------------------------------------------
# kernels


@dataclass
class GenKernel:
    kernel: Kernel
    consts: dict[str, np.ndarray]  # parameter name -> value (passed as Relax constants)

    @property
    def name(self) -> str:
        return self.kernel.name

    def source(self) -> str:
        return self.kernel.source()


@dataclass
class IntKernels:
    """The generated kernels of one program plus what the Relax lowering needs to wire them."""

    layout: Layout
    quantize: GenKernel
    hoist: Optional[GenKernel]
    scan: GenKernel
    dequant: GenKernel
    input_dtypes: tuple[str, ...]
    output_dtypes: tuple[str, ...]
    state_dtypes: tuple[str, ...]

    def all(self) -> list[GenKernel]:
        return [k for k in (self.quantize, self.hoist, self.scan, self.dequant) if k is not None]


def _add_consts(k: Kernel, consts: dict[str, np.ndarray]) -> None:
    """Insert the constant parameters after the last input parameter."""
    n_in = len(k.inputs())
    for i, (name, a) in enumerate(consts.items()):
        k.params.insert(n_in + i, Param(name, (int(a.size),), a.dtype.name, False))


def dot_intrinsic(cpu_features) -> Optional[tuple[str, int]]:
    """The widest x86 pmaddwd of a CPU with these LLVM features: (intrinsic, int32 lanes)."""
    f = set(cpu_features)
    if "avx512bw" in f:
        return "llvm.x86.avx512.pmaddw.d.512", 16
    if "avx2" in f:
        return "llvm.x86.avx2.pmadd.wd", 8
    if "sse2" in f:
        return "llvm.x86.sse2.pmadd.wd", 4
    return None


def _vec_name(i: int) -> str:
    return f"v{i}"


def quantize_kernel(prog: Program, in_features: int, sched: Schedule) -> GenKernel:
    k = Kernel("int_quantize", sched)
    k.input("X", ("B", "T", in_features), "float32")
    consts: dict[str, np.ndarray] = {}
    for i, s in enumerate(prog.inputs):
        consts[f"off{i}"] = np.ascontiguousarray(np.broadcast_to(np.asarray(s.offset, np.float32), (len(s.channels),)))
        consts[f"inv{i}"] = np.ascontiguousarray(
            np.broadcast_to(np.asarray(s.inv_scale, np.float32), (len(s.channels),))
        )
        ch = np.asarray(s.channels, np.int64)
        if not (ch.size and np.array_equal(ch, np.arange(ch[0], ch[0] + ch.size))):
            consts[f"ch{i}"] = ch.astype(np.int32)
    for i, s in enumerate(prog.inputs):
        k.output(f"Q{i}", ("B", "T", len(s.channels)), sdt(s.bits))
    with k.loop("b", "B"):
        with k.loop("t", "TT"):
            for i, s in enumerate(prog.inputs):
                lo, hi = int_range(s.bits)
                # float64 limits inside the integer range (2^63 - 1 is not a double: the largest
                # double below it), so the final conversion never sees an out-of-range value
                hi = float(hi) if float(hi) <= hi else float(np.nextafter(float(hi), -np.inf))
                ch = np.asarray(s.channels, np.int64)
                dt = sdt(s.bits)

                def body(j, i=i, ch=ch, lo=lo, hi=hi, dt=dt):
                    src = f"ch{i}[{j}]" if f"ch{i}" in consts else f"{int(ch[0])} + {j}"
                    t = f"(X[b, t, {src}] - off{i}[{j}]) * inv{i}[{j}]"  # float32, as InputSpec specifies
                    r = f'T.Cast("float64", T.nearbyint({t}))'  # exact; the limits are exact in float64
                    return [f'Q{i}[b, t, {j}] = T.Cast("{dt}", T.max(T.min({r}, {f64(hi)}), {f64(lo)}))']

                k.vec(len(s.channels), body)
    _add_consts(k, consts)
    return GenKernel(k, consts)


def dequant_kernel(prog: Program, dtypes: tuple[str, ...], sched: Schedule) -> GenKernel:
    k = Kernel("int_dequant", sched)
    consts: dict[str, np.ndarray] = {}
    for i, o in enumerate(prog.outputs):
        n = prog.vectors[o.vec].n
        k.input(f"D{i}", ("B", "T", n) if o.temporal else ("B", n), dtypes[i])
        consts[f"sc{i}"] = np.ascontiguousarray(np.broadcast_to(np.asarray(np.ravel(o.scale), np.float64), (n,)))
    for i, o in enumerate(prog.outputs):
        n = prog.vectors[o.vec].n
        k.output(f"Y{i}", ("B", "T", n) if o.temporal else ("B", n), "float32")
    for i, o in enumerate(prog.outputs):
        n = prog.vectors[o.vec].n
        with k.loop(k.fresh("b"), "B") as b:
            ctx = k.loop(k.fresh("t"), "TT") if o.temporal else nullcontext(None)
            with ctx as t:
                idx = f"{b}, {t}" if o.temporal else b
                k.vec(
                    n,
                    lambda j, i=i, idx=idx: [
                        f'Y{i}[{idx}, {j}] = T.Cast("float32", T.Cast("float64", D{i}[{idx}, {j}]) * sc{i}[{j}])'
                    ],
                )
    _add_consts(k, consts)
    return GenKernel(k, consts)


def generate(
    prog: Program,
    in_features: int,
    sched: Schedule,
    target: str = "x86",
    hoist: bool = True,
    row_block: Optional[int] = None,
    dot: Optional[tuple[str, int]] = None,
) -> IntKernels:
    """Every kernel of ``prog`` (raises UnsupportedOpError naming a micro-op that cannot be lowered).

    ``dot``: (LLVM intrinsic, lanes) of a pair product int16 x int16 -> int32 (x86 pmaddwd, see
    :func:`dot_intrinsic`) for the matrix-vector products it can compute exactly; None: plain
    widening multiply-adds everywhere (what LLVM makes of them on aarch64: smlal)."""
    _check_supported(prog, target)
    hoist = hoist and not prog.is_window  # a window program: every segment in the scan kernel
    lay = layout(prog, hoist)
    try:
        intervals = prog.intervals()
    except Exception:  # noqa: BLE001 - a hand-made program without ranges: runtime checks everywhere
        intervals = {}
    in_dt = tuple(sdt(s.bits) for s in prog.inputs)
    out_dt = tuple(sdt(prog.vectors[o.vec].bits) for o in prog.outputs)
    st_keys = list(prog.states)
    st_dt = tuple(sdt(prog.states[s].bits) for s in st_keys)
    vec_ids = {name: i for i, name in enumerate(prog.vectors)}
    input_idx = {s.vec: i for i, s in enumerate(prog.inputs)}

    # ---- hoisted kernel ----------------------------------------------------------------------
    hoist_k = None
    if lay.hoisted:
        rb = row_block or sched.row_block
        k = Kernel("int_hoist", sched)
        used_inputs = [s.vec for s in prog.inputs if any(s.vec in op.reads() for op in lay.hoisted)]
        for v in used_inputs:
            k.input(f"Q{input_idx[v]}", ("B", "T", prog.vectors[v].n), in_dt[input_idx[v]])
        for v in lay.hoist_outputs:
            k.output(f"H{vec_ids[v]}", ("B", "T", prog.vectors[v].n), sdt(prog.vectors[v].bits))
        flat = {}
        for v in used_inputs:
            flat[v] = k.flat(f"Q{input_idx[v]}f", f"Q{input_idx[v]}")
        for v in lay.hoist_outputs:
            flat[v] = k.flat(f"H{vec_ids[v]}f", f"H{vec_ids[v]}")
        pool = ConstPool()
        rows_total = "B * TT"

        def emit_rows(nrows: int, row0: Callable[[str], str], tag: str):
            locs: dict[str, Loc] = {}
            for v in list(flat):
                locs[v] = RowLoc(flat[v], sdt(prog.vectors[v].bits), (lambda rr, v=v: row0(rr)))
            for op in lay.hoisted:
                if op.out not in locs:
                    buf = k.scratch(
                        f"{tag}{_vec_name(vec_ids[op.out])}",
                        prog.vectors[op.out].n * nrows,
                        sdt(prog.vectors[op.out].bits),
                    )
                    locs[op.out] = BufLoc(buf, prog.vectors[op.out].n, sdt(prog.vectors[op.out].bits), nrows)
            em = OpEmitter(prog, k, pool, sched, nrows, locs, {}, intervals, target, dot)
            for op in lay.hoisted:
                em.emit(op)

        if rb > 1:
            with k.loop("r0", f"{rows_total} // {rb}"):
                emit_rows(rb, lambda rr: f"r0 * {rb} + {rr}", "h")
            tail_start, tail_n = f"{rows_total} // {rb} * {rb}", f"{rows_total} - {rows_total} // {rb} * {rb}"
        else:
            tail_start, tail_n = "0", rows_total
        with k.loop("r1", tail_n):
            emit_rows(1, lambda rr: f"{tail_start} + r1", "t")
        consts = pool.arrays()
        _add_consts(k, consts)
        hoist_k = GenKernel(k, consts)

    # ---- scan kernel ---------------------------------------------------------------------------
    scan_k = _scan_kernel(prog, lay, sched, intervals, target, dot, in_dt, out_dt, st_dt, vec_ids)

    return IntKernels(
        lay,
        quantize_kernel(prog, in_features, sched),
        hoist_k,
        scan_k,
        dequant_kernel(prog, out_dt, sched),
        in_dt,
        out_dt,
        st_dt,
    )


# ----------------------------------------------------------------------------------------------
# window programs


def _copy_reverse(k: Kernel, dst: str, src: str, n: int, dt: str) -> None:
    with k.loop("t", "TT"):
        k.vec(n, lambda j: [f"{dst}[b, t, {j}] = {src}[b, TT - 1 - t, {j}]"])


def _copy_lookahead(k: Kernel, dst: str, src: str, n: int, dt: str, steps: int) -> None:
    with k.loop("t", "TT"):
        k.vec(
            n,
            lambda j: [
                f"{dst}[b, t, {j}] = T.if_then_else(t + {steps} < TT, {src}[b, T.min(t + {steps}, TT - 1), {j}], "
                f'T.Cast("{dt}", 0))'
            ],
        )


#: window micro-op -> its copy over the window (the interpreter's equation on integer sequences)
WINDOW_COPIES: dict[type, Callable] = {
    Reverse: lambda k, op, dst, src, n, dt: _copy_reverse(k, dst, src, n, dt),
    Lookahead: lambda k, op, dst, src, n, dt: _copy_lookahead(k, dst, src, n, dt, int(op.steps)),
}
#: every micro-op type this backend renders (the per-step emitters and the window copies)
RENDERED = (*_EMITTERS, *WINDOW_COPIES)


def _scan_kernel(prog, lay, sched, intervals, target, dot, in_dt, out_dt, st_dt, vec_ids) -> GenKernel:
    """``int_scan``: per sequence, load the state, the time loop of the scan micro-ops (temporal
    outputs every step), store the state, the final program (pooled outputs).

    A window program (:func:`edgeseq.quant.window.window_plan`) has one time loop per segment and its
    window micro-ops as copies between them; every buffer (a vector held over the window) is an extra
    (B, T, n) output ``W<i>`` of the kernel, read and written at row (b, t)."""
    from ...quant.window import Segment, window_plan

    plan = window_plan(prog) if prog.is_window else None
    k = Kernel("int_scan", sched)
    pool = ConstPool()
    locs: dict[str, Loc] = {}
    param: dict[str, str] = {}
    input_idx = {s.vec: i for i, s in enumerate(prog.inputs)}
    st_keys = list(prog.states)
    for v in [s.vec for s in prog.inputs] if plan else lay.edges:
        param[v] = f"Q{input_idx[v]}" if v in input_idx else f"H{vec_ids[v]}"
        k.input(param[v], ("B", "T", prog.vectors[v].n), sdt(prog.vectors[v].bits))
        locs[v] = RowLoc(param[v], sdt(prog.vectors[v].bits), lambda rr: "b, t")
    for i, key in enumerate(st_keys):
        k.input(f"S{i}", ("B", prog.states[key].n), st_dt[i])
    for i, o in enumerate(prog.outputs):
        n = prog.vectors[o.vec].n
        k.output(f"O{i}", ("B", "T", n) if o.temporal else ("B", n), out_dt[i])
    for i, key in enumerate(st_keys):
        k.output(f"SO{i}", ("B", prog.states[key].n), st_dt[i])
    for v in plan.buffers if plan else ():
        if v not in input_idx:
            param[v] = f"W{vec_ids[v]}"
            k.output(param[v], ("B", "T", prog.vectors[v].n), sdt(prog.vectors[v].bits))
            locs[v] = RowLoc(param[v], sdt(prog.vectors[v].bits), lambda rr: "b, t")
    state_locs: dict[str, Loc] = {}
    for i, key in enumerate(st_keys):
        buf = k.scratch(f"st{i}", prog.states[key].n, st_dt[i])
        state_locs[key] = BufLoc(buf, prog.states[key].n, st_dt[i])
    for op in list(lay.scan) + list(prog.final):
        if isinstance(op, Store) or op.out in locs:
            continue
        if op.out in lay.alias:
            locs[op.out] = state_locs[lay.alias[op.out]]
            continue
        dt = sdt(prog.vectors[op.out].bits)
        buf = k.scratch(_vec_name(vec_ids[op.out]), prog.vectors[op.out].n, dt)
        locs[op.out] = BufLoc(buf, prog.vectors[op.out].n, dt)
    em = OpEmitter(prog, k, pool, sched, 1, locs, state_locs, intervals, target, dot)

    def temporal_outputs():
        for i, o in enumerate(prog.outputs):
            if o.temporal:
                loc = locs[o.vec]
                k.vec(
                    prog.vectors[o.vec].n,
                    lambda j, i=i, loc=loc: [f"O{i}[b, t, {j}] = {cast(loc.at('0', j), loc.dtype, out_dt[i])}"],
                )

    with k.loop("b", "B"):
        for i, key in enumerate(st_keys):
            k.vec(prog.states[key].n, lambda j, i=i: [f"st{i}[{j}] = S{i}[b, {j}]"])
        for st in plan.stages if plan else [Segment(tuple(lay.scan), (), ())]:
            if isinstance(st, Segment):
                with k.loop("t", "TT"):
                    for op in st.items:
                        em.emit(op)
                    if not plan:
                        temporal_outputs()
            else:
                dt = sdt(prog.vectors[st.out].bits)
                WINDOW_COPIES[type(st)](k, st, param[st.out], param[st.x], prog.vectors[st.x].n, dt)
        if plan and any(o.temporal for o in prog.outputs):
            with k.loop("t", "TT"):
                temporal_outputs()
        for i, key in enumerate(st_keys):
            k.vec(prog.states[key].n, lambda j, i=i: [f"SO{i}[b, {j}] = st{i}[{j}]"])
        for op in prog.final:
            em.emit(op)
        for i, o in enumerate(prog.outputs):
            if not o.temporal:
                loc = locs[o.vec]
                k.vec(
                    prog.vectors[o.vec].n,
                    lambda j, i=i, loc=loc: [f"O{i}[b, {j}] = {cast(loc.at('0', j), loc.dtype, out_dt[i])}"],
                )
    consts = pool.arrays()
    _add_consts(k, consts)
    return GenKernel(k, consts)
