"""Integer program -> self-contained C99 (``model.h`` / ``model.c``), bit-exact against
:func:`edgeseq.quant.intexact.run`.

The semantics implemented here are exactly those of ``edgeseq/quant/README.md``: every vector in its
declared storage type (int8/16/32/64), each op computed in a type wide enough for its declared
result, products and requantization in 64 bits where the README says so, ``>>`` as an arithmetic
(flooring) shift, ``div`` as floor division, the two ``lut`` rules, saturation only in ``requant`` /
``lut`` / ``clamp``, and the float boundaries (input quantization in IEEE single precision with round
half to even, output ``(float) q * scale`` in float32) without libm and without double precision, so
no software floating point runs on a core with a single-precision FPU.

Code shape: one loop nest per micro-op, except that a run of consecutive elementwise micro-ops of
one width is fused into a single loop whose intermediate values are scalars (no memory), 4 lanes at
a time on MVE and NEON (``esq_v4``, :data:`intkernels.V4_API`), and dead micro-ops are dropped.
``matvec`` is written out per instruction-set flavour (:mod:`edgeseq.export.c.intkernels`: DSP
``SMLAD`` on Cortex-M4 / M7, MVE ``VMLADAVA`` on Cortex-M55, NEON ``SMLAL`` on aarch64, portable
loops elsewhere) behind ``#if``, each with its weight table in its own layout, so one ``model.c``
builds everywhere; a ``concat`` read only by a matvec is never built (the matvec reads its operands in
place). Requantization runs in 32-bit arithmetic (``SMMLA`` / ``SSAT``, ``VQDMULH`` + rounding
shifts; :class:`intkernels.RequantPlan`) where the input range allows, exactly. The input boundary is
float32 (one round-half-even conversion where the FPU has it), the output ``(float) q * scale``.

Memory: the program's states are fields of the caller-owned ``esq_state`` struct; every per-step
vector that must live in memory gets a fixed offset in one arena per storage type inside that
struct (a first-fit plan over live ranges, :mod:`edgeseq.export.c.plan`), a fused loop may write
its outputs over operands it reads for the last time, a ``load`` reads the state field itself
when no ``store`` to that state can intervene, and a vector stored to a state is computed in the
state's field when the old value is dead by then (the ``store`` costs nothing). The ``final``
program (readouts and what follows them) runs on a stack arena inside ``esq_pooled_q``. Constants
are ``static const`` tables (flash on a microcontroller). Nothing is allocated at run time and no
buffer grows with the sequence length. ``info["profile_map"]`` says which lines of ``model.c`` each
micro-op occupies (per-op instruction profiles, :mod:`edgeseq.targets.profile`).

Generated API (``esq`` is the configurable prefix; ``ESQ_INT_API`` is defined)::

    void esq_reset(esq_state *s);                                   /* zero state: a new sequence */
    void esq_quantize(const float *x_t, int32_t *xq_t);             /* the input boundary */
    void esq_step_q(esq_state *s, const int32_t *xq_t, int32_t *yq_t);  /* one step, integers */
    void esq_pooled_q(const esq_state *s, int32_t *yq);             /* final program, integers */
    void esq_state_save_q(const esq_state *s, int32_t *out);        /* canonical integer state */
    void esq_state_load_q(esq_state *s, const int32_t *in);
    /* the float API of the float C backend (what the generated driver calls): */
    void esq_step(esq_state *s, const float *x_t, float *y_t);      /* quantize, step, q * scale */
    void esq_pooled(const esq_state *s, float *y);
    void esq_run(esq_state *s, const float *x, int T, float *y);
    void esq_state_save(const esq_state *s, float *out);            /* states as floats (exact below 2^24) */
    void esq_state_load(esq_state *s, const float *in);
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ...errors import ConfigError, NumericsError, UnsupportedOpError
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
    Mul,
    Program,
    Requant,
    Reverse,
    Select,
    Store,
    Sub,
    int_range,
)
from . import intkernels as K
from .cwriter import CSources, c_ident, c_int, check_prefix, indent, int_table
from .intkernels import PRELUDE, ctype_of_bits
from .plan import CTYPE_BYTES, CTYPE_SUFFIX, ArenaSet

DTYPE_CTYPES = {"int8": "int8_t", "int16": "int16_t", "int32": "int32_t", "int64": "int64_t"}
SUPPORTED = (
    MatVec,
    Requant,
    Add,
    Sub,
    Mul,
    Div,
    Isqrt,
    Lut,
    Clamp,
    CmpGe,
    Select,
    Concat,
    Gather,
    Load,
    Store,
    Reverse,  # window micro-ops: copies over the window (intwindow.py)
    Lookahead,
)
# y[i] depends on operand element i only: the output may overwrite an operand it is the last reader of
ELEMENTWISE = (Requant, Add, Sub, Mul, Div, Isqrt, Lut, Clamp, CmpGe, Select)


def supported_micro_ops() -> list[str]:
    return sorted(c.kind for c in SUPPORTED)


def supported_kinds() -> set[str]:
    """IR op kinds a quantized graph may contain for this backend: those the quantizer lowers to
    an integer program, when every micro-op it can emit has a C lowering here."""
    from ...quant.lowering import kinds_rendered_by

    return kinds_rendered_by(supported_micro_ops())


def c_double(v: float, where: str | None = None) -> str:
    """An exact C99 double literal (hexadecimal floating constant)."""
    f = float(v)
    if not np.isfinite(f):
        raise NumericsError(f"boundary constant {v!r} is not finite", where=where)
    return f.hex()


def _float_table(name: str, values, comment: str, where: str) -> str:
    """A float32 table written with exact hexadecimal literals."""
    vals = [c_double(float(np.float32(v)), where) + "f" for v in np.ravel(np.asarray(values, np.float64))]
    lines = [f"/* {comment} */", f"static const float {name}[{len(vals)}] = {{"]
    for i in range(0, len(vals), 4):
        lines.append("    " + ", ".join(vals[i : i + 4]) + ",")
    lines.append("};")
    return "\n".join(lines)


# elementwise micro-ops that are one esq_v4 call: kind -> (function, operand fields)
V4_CALLS = {
    "add": ("esq_v4_add", ("a", "b")),
    "sub": ("esq_v4_sub", ("a", "b")),
    "mul": ("esq_v4_mul", ("a", "b")),
    "cmp_ge": ("esq_v4_ge", ("a", "b")),
    "select": ("esq_v4_sel", ("c", "a", "b")),
}


class _NoVector(Exception):
    """An elementwise unit without a 4-lane vector form (it stays scalar)."""


class IntCodeGen:
    def __init__(
        self,
        prog: Program,
        in_features: int,
        prefix: str = "esq",
        target: str = "c",
        order: list[str] | None = None,
        window_steps: int | None = None,
    ):
        self.p = prog
        self.window_steps = window_steps
        self.out_specs = list(prog.outputs)
        if order is not None and sorted(order) == sorted(o.name for o in prog.outputs):
            by = {o.name: o for o in prog.outputs}
            self.out_specs = [by[n] for n in order]
        self.prefix = check_prefix(prefix)
        self.P = prefix.upper()
        self.target = target
        self.in_features = int(in_features)
        self._idents: set[str] = set()
        self.tables: dict = {}  # const name (or (name, layout)) -> C identifier
        self.table_text: list[str] = []
        self.flavour_bytes = {f: 0 for f in (*K.FLAVOURS, "c")}  # constant bytes per flavour
        self.flavour = K.target_flavour(target)
        try:
            self.iv = prog.intervals()
        except Exception:  # noqa: BLE001 - only used to narrow a few compute types
            self.iv = {}
        self.fields: dict[str, str] = {}  # state key -> struct field
        self.folded: dict[str, Concat] = {}  # concat outputs read in place by their matvec
        self.loc: dict[str, str] = {}  # vector -> C pointer expression in the current phase
        self._period: tuple[int, int] | None = None  # (P, n) while a channel-major loop is emitted
        self._check()

    # -- checks -----------------------------------------------------------------------------------
    def where(self, section: str, i: int, op) -> str:
        return f"{section} micro-op #{i} ({op.kind} -> '{op.out}', node '{op.node}'), target {self.target}"

    def _check(self) -> None:
        p = self.p
        for section, ops in (("step", p.step), ("final", p.final)):
            for i, op in enumerate(ops):
                if not isinstance(op, SUPPORTED):
                    raise UnsupportedOpError(
                        f"the integer C backend has no lowering for micro-op '{op.kind}'",
                        where=self.where(section, i, op),
                        hint="supported micro-ops: " + ", ".join(supported_micro_ops()),
                    )
        for s in p.inputs:
            if s.bits > 32:
                raise UnsupportedOpError(
                    f"input vector '{s.vec}' is int{s.bits}; the C API takes inputs of at most 32 bits",
                    where=f"target {self.target}",
                )
            if len(s.channels) and (int(np.min(s.channels)) < 0 or int(np.max(s.channels)) >= self.in_features):
                raise ConfigError(f"input '{s.vec}' reads channels outside the {self.in_features} input features")
        for k, s in p.states.items():
            if s.bits > 32:
                raise UnsupportedOpError(
                    f"state '{k}' is int{s.bits}; the C state API holds at most 32 bits per value",
                    where=f"target {self.target}",
                )
        for o in p.outputs:
            if p.vectors[o.vec].bits > 32:
                raise UnsupportedOpError(
                    f"output '{o.name}' is int{p.vectors[o.vec].bits}; the C API returns at most 32-bit outputs",
                    where=f"target {self.target}",
                )
        for name, a in p.consts.items():
            if a.dtype.name not in DTYPE_CTYPES:
                raise UnsupportedOpError(
                    f"constant '{name}' has dtype {a.dtype}; expected int8/16/32/64", where=f"target {self.target}"
                )

    # -- names, constants, operands ---------------------------------------------------------------
    def _unique(self, base: str) -> str:
        name, i = base, 1
        while name in self._idents:
            name = f"{base}_{i}"
            i += 1
        self._idents.add(name)
        return name

    def table(self, name: str) -> str:
        """The flash table holding constant ``name`` as the program stores it (emitted once)."""
        if name not in self.tables:
            a = self.p.consts[name]
            self.tables[name] = self.layout_table(
                name,
                name,
                {"c": (a.reshape(-1), DTYPE_CTYPES[a.dtype.name])},
                f"{name} ({a.dtype.name}, {'x'.join(map(str, a.shape)) or 'scalar'})",
            )
        return self.tables[name]

    def layout_table(self, key, base: str, layouts: dict, comment: str, derived: bool = False) -> str:
        """One C identifier for constant ``base`` in a layout per kernel flavour: ``layouts`` maps a
        flavour of :mod:`intkernels` (or ``"c"``, the portable one) to (flat values, C type); the
        table of each flavour sits behind its ``#if`` (only one is compiled in), and a flavour not
        listed gets none. Tables are 8-byte aligned for the kernels' word and vector loads.
        ``derived`` tables (per-channel shifts worked out from the program's constants) do not
        count towards ``weights_bytes``."""
        if key in self.tables:
            return self.tables[key]
        ident = self._unique("K_" + c_ident(base.replace("k:", "")))
        where = f"constant '{base}'"

        def one(flat, ctype, note):
            text = int_table(ident, flat, ctype, f"{comment}{note}", where=where)
            return text.replace(f"{ident}[{np.size(flat)}] = {{", f"{ident}[{np.size(flat)}] ESQ_TABLE = {{")

        flav = [f for f in K.FLAVOURS if f in layouts]
        for f in (*K.FLAVOURS, "c"):
            flat, ctype = layouts.get(f, layouts.get("c", (np.zeros(0), "int8_t")))
            if not derived:
                self.flavour_bytes[f] += int(np.size(flat)) * CTYPE_BYTES[ctype]
        if not flav:
            flat, ctype = layouts["c"]
            self.table_text.append(one(flat, ctype, ""))
        else:
            lines = []
            for i, f in enumerate(flav):
                flat, ctype = layouts[f]
                lines += [
                    ("#if " if i == 0 else "#elif ") + f"defined({K.FLAVOUR_MACRO[f]})",
                    one(flat, ctype, f", {f} layout"),
                ]
            if "c" in layouts:
                flat, ctype = layouts["c"]
                lines += ["#else", one(flat, ctype, "")]
            lines.append("#endif")
            self.table_text.append("\n".join(lines))
        self.tables[key] = ident
        return ident

    @staticmethod
    def column_form(N: int, I: int) -> bool:
        """Portable matvec as column updates (y += W[:, i] x[i] over a transposed W): better for
        compilers' vectorizers when the rows are short or of odd length and N is a multiple of 4."""
        return N % 4 == 0 and (I % 8 != 0 or I < 16)

    def is_const(self, name: str) -> bool:
        return name in self.p.consts

    def width(self, name: str) -> int:
        return self.p.width(name)

    def ctype(self, name: str) -> str:
        if self.is_const(name):
            return DTYPE_CTYPES[self.p.consts[name].dtype.name]
        return ctype_of_bits(self.p.vectors[name].bits)

    def rd(self, name: str, idx: str) -> str:
        """C expression of element ``idx`` of operand ``name`` (broadcast when it has one value)."""
        if self.is_const(name):
            a = self.p.consts[name]
            flat = a.reshape(-1)
            if a.size == 1 or bool(np.all(flat == flat[0])):  # one value (or all equal): a literal
                return c_int(int(flat[0]))
            if self._period is not None and idx == "i" and flat.size == self._period[1]:
                idx = "c"  # channel-major loop: the first period holds every channel's value
            return f"{self.table(name)}[{idx}]"
        if name in getattr(self, "tmp", {}):
            return self.tmp[name]  # a value of the fused loop being emitted
        base = self.loc[name]
        return f"{base}[0]" if self.p.vectors[name].n == 1 else f"{base}[{idx}]"

    def interval(self, name: str) -> tuple[int, int]:
        if self.is_const(name):
            a = self.p.consts[name]
            return int(a.min()), int(a.max())
        if name in self.iv:
            return self.iv[name]
        return int_range(self.p.vectors[name].bits)

    def compute_type(self, out: str, *operands: str) -> str:
        wide = any(self.ctype(x) == "int64_t" for x in (out, *operands))
        return "int64_t" if wide else "int32_t"

    # -- planning + emission of one section -------------------------------------------------------
    def live_ops(self, ops, keep: set[str]) -> list[int]:
        """Indices of the ops whose results matter (stores, and whatever they and the outputs
        read, transitively): dead micro-ops are not emitted."""
        need = set(keep)
        live = []
        for idx in range(len(ops) - 1, -1, -1):
            op = ops[idx]
            if isinstance(op, Store) or op.out in need:
                live.append(idx)
                need.update(r for r in op.reads() if r in self.p.vectors)
        return live[::-1]

    def units(self, ops, order: list[int]) -> list[list[int]]:
        """Live ops grouped into emission units: a run of consecutive elementwise ops of one
        width becomes one fused loop; every other op is a unit of its own."""
        out: list[list[int]] = []
        for idx in order:
            op = ops[idx]
            n = self.p.vectors[op.out].n if op.out in self.p.vectors else None
            if (
                isinstance(op, ELEMENTWISE)
                and out
                and isinstance(ops[out[-1][-1]], ELEMENTWISE)
                and self.p.vectors[ops[out[-1][-1]].out].n == n
            ):
                out[-1].append(idx)
            else:
                out.append([idx])
        return self.fuse_requant(ops, out)

    def fuse_requant(self, ops, units: list[list[int]]) -> list[list[int]]:
        """A kernel matvec followed by the elementwise loop that alone reads its accumulators (a
        requantization, and what follows it) becomes one unit: on DSP cores the loop's body runs on
        each row's accumulator in registers (fused requantization). Not where the loop's results
        are stored to a state: computing them in the state's field saves more (the matvec would
        still be reading the old value)."""
        readers: dict[str, set[int]] = {}
        stored = {ops[idx].x for grp in units for idx in grp if isinstance(ops[idx], Store)}
        for u, grp in enumerate(units):
            for idx in grp:
                for r in self.reads(ops[idx]):
                    readers.setdefault(r, set()).add(u)
        out: list[list[int]] = []
        for u, grp in enumerate(units):
            prev = out[-1] if out else None
            op = ops[grp[0]]
            if (
                prev is not None
                and len(prev) == 1
                and isinstance(ops[prev[0]], MatVec)
                and isinstance(op, Requant)
                and op.x == ops[prev[0]].out
                and readers.get(op.x, set()) == {u}
                and op.x not in self._keep
                and self.p.vectors[op.out].n == self.p.vectors[op.x].n
                and not any(ops[i].out in stored for i in grp)  # those are computed in their state's field
                and self.kernel_ok(ops[prev[0]], [p.ctype for p in self.mv_part_types(ops[prev[0]])])
            ):
                prev.extend(grp)
            else:
                out.append(list(grp))
        return out

    def mv_part_types(self, op: MatVec) -> list:
        """The input operands of a matvec (a folded concat's, or its input) as (name, ctype) parts."""
        from types import SimpleNamespace

        xs = self.folded[op.x].xs if op.x in self.folded else (op.x,)
        return [SimpleNamespace(ctype=self.ctype(x)) for x in xs]

    def fold_concats(self, ops, order: list[int], keep: set[str]) -> None:
        """Concats whose only reader is a kernel matvec over the same blocks are never built: the
        matvec reads each operand in place (``self.folded``)."""
        readers: dict[str, list] = {}
        for idx in order:
            for r in ops[idx].reads():
                readers.setdefault(r, []).append(ops[idx])
        for idx in order:
            op = ops[idx]
            if not isinstance(op, Concat) or op.out in keep:
                continue
            rd = readers.get(op.out, [])
            if (
                len(rd) == 1
                and isinstance(rd[0], MatVec)
                and rd[0].x == op.out
                and rd[0].blocks == op.blocks
                and all(not self.is_const(x) for x in op.xs)
                and self.kernel_ok(rd[0], [self.ctype(x) for x in op.xs])
            ):
                self.folded[op.out] = op

    def reads(self, op) -> list[str]:
        """Vectors ``op`` reads, with a folded concat replaced by its operands."""
        out = []
        for r in op.reads():
            out.extend(self.folded[r].xs if r in self.folded else (r,))
        return out

    def phase(self, section: str, ops, arenas: ArenaSet, pre_placed: list[str], keep: set[str]) -> list[str]:
        p = self.p
        order = self.live_ops(ops, keep)
        self.fold_concats(ops, order, keep)
        order = [i for i in order if ops[i].out not in self.folded]
        self._keep = keep
        units = self.units(ops, order)
        unit_of = {idx: u for u, grp in enumerate(units) for idx in grp}
        last: dict[str, int] = {}  # vector -> op index of its last reader (alias decisions)
        ulast: dict[str, int] = {}  # vector -> unit index of its last reader (buffer lifetimes)
        for idx in order:
            for r in self.reads(ops[idx]):
                if r in p.vectors:
                    last[r] = idx
                    ulast[r] = unit_of[idx]
        for k in keep:
            last[k] = len(ops)
            ulast[k] = len(units)
        owned: dict[str, tuple] = {}  # vector -> (arena, block) it owns
        self.loc = {}
        self.tmp: dict[str, str] = {}

        def alloc(v: str, reuse: list[str] = ()):
            for r in reuse:  # take over the block of an operand read for the last time here
                if r in owned and p.vectors[r].n == p.vectors[v].n and self.ctype(r) == self.ctype(v):
                    owned[v] = owned.pop(r)
                    self.loc[v] = self.loc[r]
                    return
            arena = arenas.get(self.ctype(v))
            blk = arena.alloc(p.vectors[v].n, v)
            owned[v] = (arena, blk)
            self.loc[v] = arena.expr(blk)

        def release(v: str):
            if v in owned:
                arena, blk = owned.pop(v)
                arena.free(blk)

        for v in pre_placed:
            alloc(v)
        inplace = self.store_in_place(ops, order, units, unit_of, ulast, set(pre_placed))
        alloc_arena = alloc

        def alloc(v: str, reuse: list[str] = ()):  # noqa: F811 - vectors stored to a state live in its field
            if v in inplace:
                self.loc[v] = inplace[v]
            else:
                alloc_arena(v, reuse)

        code: list[str] = []
        for u, grp in enumerate(units):
            first = ops[grp[0]]
            heads = []
            for idx in grp:
                op = ops[idx]
                text = op.describe() + (f"  [node {op.node}]" if op.node else "")
                heads.append("/* #%d %s */" % (idx, text.replace("*/", "* /").replace("/*", "/ *")))
            reads = [r for idx in grp for r in self.reads(ops[idx]) if r in p.vectors]
            made = {ops[idx].out for idx in grp}
            dying = [r for r in dict.fromkeys(reads) if r not in made and ulast.get(r) == u and r not in keep]
            if isinstance(first, Store):
                body = self.emit_store(first)
            elif isinstance(first, Load) and self._can_alias(ops, grp[0], first, last):
                self.loc[first.out] = f"s->{self.fields[first.state]}"
                body = []
            elif isinstance(first, ELEMENTWISE):
                # outputs read after this unit (or kept) go to memory; the others live in registers
                ext = [ops[idx].out for idx in grp if ulast.get(ops[idx].out, -1) > u]
                for v in ext:
                    alloc(v, dying)
                body = self.emit_fused(section, ops, grp, set(ext))
            elif isinstance(first, MatVec) and len(grp) > 1:  # a matvec with its requantization
                alloc(first.out)
                ext = [ops[idx].out for idx in grp[1:] if ulast.get(ops[idx].out, -1) > u]
                for v in ext:
                    alloc(v)  # never over an operand: the matvec may still read it
                body = self.emit_matvec(
                    first, self.where(section, grp[0], first), fused=(section, ops, grp[1:], set(ext))
                )
            else:
                alloc(first.out)
                body = self.emit(first, self.where(section, grp[0], first))
            if not body:  # an aliased load, a store in place: no code of its own
                heads = [h.replace("/* #", "/* (#", 1).replace(" */", ": no code) */") for h in heads]
            code.extend(heads)
            if body:
                code.append("{")
                code.extend(indent(body))
                code.append("}")
            for r in set(reads):
                if ulast.get(r) == u and r not in made:
                    release(r)
            for v in made:
                if v in p.vectors and ulast.get(v, -1) <= u:
                    release(v)
        return code

    def store_in_place(self, ops, order, units, unit_of, ulast, pre_placed: set[str]) -> dict[str, str]:
        """Vectors computed directly in the state field they are stored to (the ``store`` becomes
        a no-op): the only store to that state in the section, same storage type and size, and
        every load of the state's old value is dead by then (read last by an earlier unit, or by
        the producing unit itself when that is an elementwise loop, which reads element i
        before writing it)."""
        out: dict[str, str] = {}
        stores: dict[str, list[Store]] = {}
        for idx in order:
            if isinstance(ops[idx], Store):
                stores.setdefault(ops[idx].out, []).append(ops[idx])
        producer = {ops[idx].out: idx for idx in order if not isinstance(ops[idx], Store)}
        for key, sts in stores.items():
            v = sts[0].x
            if len(sts) != 1 or v not in producer or v in pre_placed or v in out or self.is_const(v):
                continue
            st = self.p.states[key]
            if self.ctype(v) != ctype_of_bits(st.bits) or self.p.vectors[v].n != st.n:
                continue
            pi = producer[v]
            pu = unit_of[pi]
            if isinstance(ops[pi], Load):
                continue
            elementwise = isinstance(ops[units[pu][0]], ELEMENTWISE)  # (a fused matvec reads x to the end)
            ok = True
            for idx in order:
                op = ops[idx]
                if isinstance(op, Load) and op.state == key:
                    lu = ulast.get(op.out, unit_of[idx])
                    if idx > pi or lu > pu or (lu == pu and not elementwise):
                        ok = False
            if ok:
                out[v] = f"s->{self.fields[key]}"
        return out

    def _can_alias(self, ops, idx: int, op: Load, last: dict[str, int]) -> bool:
        """A load may read the state field itself when no store to that state (of another value)
        happens before its last reader, and the storage types agree."""
        if self.ctype(op.out) != ctype_of_bits(self.p.states[op.state].bits):
            return False
        end = last.get(op.out, idx)
        for later in ops[idx + 1 : end + 1]:
            if isinstance(later, Store) and later.out == op.state and later.x != op.out:
                return False
        return True

    # -- micro-ops --------------------------------------------------------------------------------
    def emit(self, op, where: str) -> list[str]:
        fn = getattr(self, f"emit_{op.kind}")
        return fn(op, where)

    def _y(self, op) -> tuple[str, str, int]:
        v = self.p.vectors[op.out]
        return self.loc[op.out], ctype_of_bits(v.bits), v.n

    def _loop(self, n: int, body: list[str]) -> list[str]:
        return [f"for (int i = 0; i < {n}; ++i) {{", *indent(body), "}"]

    def emit_fused(self, section: str, ops, grp: list[int], ext: set[str]) -> list[str]:
        """One loop for a run of elementwise ops: each value is a scalar of its storage type,
        element i of every operand is read before element i of any output is written (so an
        output may share the block of an operand). Where the unit vectorises (MVE, NEON: every
        value fits int32 lanes) four elements go at a time, the scalar loop takes the rest."""
        n = self.p.vectors[ops[grp[0]].out].n
        scalar = self.scalar_loop(section, ops, grp, ext, n)
        vec = self.vec_fused(ops, grp, ext) if n >= 4 else None
        if vec is None:
            return scalar
        n4 = n - n % 4
        body = self.scalar_body(section, ops, grp, ext)
        tail = [f"for (int i = {n4}; i < {n}; ++i) {{", *indent(body), "}"] if n4 < n else []
        return [
            "#if defined(ESQ_V4)",
            f"for (int i = 0; i < {n4}; i += 4) {{",
            *indent(vec),
            "}",
            *tail,
            "#else",
            *scalar,
            "#endif",
        ]

    def scalar_loop(self, section: str, ops, grp: list[int], ext: set[str], n: int) -> list[str]:
        """The scalar loop of an elementwise unit. Where its per-element constants repeat with a
        period P (a requantization after a matvec over blocks: the same scales for every block),
        channel-major: for each channel ``c < P`` its constants are read once (entry ``c`` of their
        tables) and the unit runs on element ``i = g * P + c`` of every block g, unrolled."""
        P = self.const_period(ops, grp, n)
        if P is None:
            return self._loop(n, self.scalar_body(section, ops, grp, ext))
        self._period = (P, n)
        try:
            body = self.scalar_body(section, ops, grp, ext)
        finally:
            self._period = None
        blocks = []
        for g in range(n // P):
            blocks += ["{", f"    const int i = {g * P} + c;" if g else "    const int i = c;", *indent(body), "}"]
        return [f"for (int c = 0; c < {P}; ++c) {{", *indent(blocks), "}"]

    PERIOD_UNROLL = 16  # blocks unrolled per channel at most

    def const_period(self, ops, grp: list[int], n: int) -> int | None:
        """The smallest period P < n (n / P blocks, at most PERIOD_UNROLL) with which every
        per-element constant of the unit repeats, None when there is none or no constant varies."""
        arrays = []
        for idx in grp:
            for r in ops[idx].reads():
                if self.is_const(r):
                    flat = self.p.consts[r].reshape(-1)
                    if flat.size == n and not bool(np.all(flat == flat[0])):
                        arrays.append(flat)
        if not arrays:
            return None
        for P in range(1, n):
            if n % P or n // P > self.PERIOD_UNROLL:
                continue
            if all(np.array_equal(a, np.tile(a[:P], n // P)) for a in arrays):
                return P
        return None

    def scalar_body(self, section: str, ops, grp: list[int], ext: set[str], given: dict | None = None) -> list[str]:
        """Statements computing element ``i`` of every op of an elementwise unit (each value a
        scalar of its storage type) and storing the ``ext`` outputs; ``given`` maps vectors to
        scalar C expressions already at hand (a matvec's accumulator in a register)."""
        body: list[str] = []
        self.tmp.update(given or {})
        for k, idx in enumerate(grp):
            op = ops[idx]
            yt = ctype_of_bits(self.p.vectors[op.out].bits)
            t = f"e{k}"
            body.append(f"{yt} {t};")
            fn = getattr(self, f"elem_{op.kind}")
            body += fn(op, self.where(section, idx, op), t, yt)
            self.tmp[op.out] = t
        for idx in grp:
            v = ops[idx].out
            if v in ext:
                body.append(f"{self.loc[v]}[i] = {self.tmp[v]};")
        for v in [ops[idx].out for idx in grp] + list(given or {}):
            self.tmp.pop(v, None)
        return body

    # -- 4-lane vector form of an elementwise unit (intkernels.V4_API) ----------------------------
    def vec_fused(self, ops, grp: list[int], ext: set[str]) -> list[str] | None:
        """Statements computing lanes i .. i+3 of every op of the unit, or None when some value
        needs more than 32 bits or an op has no vector form (div, isqrt, int32 tables)."""
        body: list[str] = []
        names: dict[str, str] = {}

        def vrd(name: str) -> str:
            if name in names:
                return names[name]
            if self.is_const(name):
                a = self.p.consts[name]
                flat = a.reshape(-1)
                if a.size == 1 or bool(np.all(flat == flat[0])):
                    if not -(1 << 31) <= int(flat[0]) < (1 << 31):
                        raise _NoVector
                    return f"esq_v4_dup({c_int(int(flat[0]))})"
                ct = DTYPE_CTYPES[a.dtype.name]
                if ct == "int64_t":
                    raise _NoVector
                expr = f"esq_v4_ld{ct[3:-2]}({self.table(name)} + i)"
            else:
                v = self.p.vectors[name]
                ct = ctype_of_bits(v.bits)
                if ct == "int64_t":
                    raise _NoVector
                expr = (
                    f"esq_v4_dup((int32_t){self.loc[name]}[0])"
                    if v.n == 1
                    else f"esq_v4_ld{ct[3:-2]}({self.loc[name]} + i)"
                )
            nm = f"l{len(names)}"
            body.append(f"const esq_v4 {nm} = {expr};")
            names[name] = nm
            return nm

        try:
            for k, idx in enumerate(grp):
                op = ops[idx]
                if ctype_of_bits(self.p.vectors[op.out].bits) == "int64_t":
                    raise _NoVector
                if op.kind in V4_CALLS:  # one esq_v4 call on the operands
                    fn, args = V4_CALLS[op.kind]
                    expr = f"{fn}({', '.join(vrd(getattr(op, a)) for a in args)})"
                else:
                    expr = getattr(self, f"vec_{op.kind}", self._vec_none)(op, vrd, body)
                body.append(f"const esq_v4 v{k} = {expr};")
                names[op.out] = f"v{k}"
        except _NoVector:
            return None
        for idx in grp:
            v = ops[idx].out
            if v in ext:
                ct = ctype_of_bits(self.p.vectors[v].bits)
                body.append(f"esq_v4_st{ct[3:-2]}({self.loc[v]} + i, {names[v]});")
        return body

    def _vec_none(self, op, vrd, body):
        raise _NoVector

    def _vconst(self, values, key, comment: str) -> str:
        """Small per-channel constants of the vector loops (shift counts): int8 tables where the
        vector load widens them (MVE), int32 elsewhere (NEON)."""
        v = np.asarray(values, np.int64).reshape(-1)
        if np.all(v == v[0]):
            return f"esq_v4_dup({c_int(int(v[0]))})"
        tab = self.layout_table(key, str(key[0]), {"mve": (v, "int8_t"), "neon": (v, "int32_t")}, comment, derived=True)
        return f"esq_v4_ldc({tab} + i)"

    def _vsat(self, expr: str, bits: int) -> str:
        lo, hi = int_range(bits)
        return f"esq_v4_min(esq_v4_max({expr}, esq_v4_dup({c_int(lo)})), esq_v4_dup({c_int(hi)}))"

    def vec_requant(self, op: Requant, vrd, body) -> str:
        bits = self.p.vectors[op.out].bits
        if bits > 32:
            raise _NoVector
        x = vrd(op.x)
        xlo, xhi = self.interval(op.x)
        if op.pre > 0:
            x = f"esq_v4_rshr_n({x}, {op.pre})" if op.pre <= 32 else f"esq_v4_rshl({x}, esq_v4_dup({-op.pre}))"
            xlo = (xlo + (1 << (op.pre - 1))) >> op.pre
            xhi = (xhi + (1 << (op.pre - 1))) >> op.pre
        mc, sc = self.p.consts.get(op.mult), self.p.consts.get(op.shift)
        if mc is None or sc is None:
            raise _NoVector
        m1 = int(mc.reshape(-1)[0]) if np.all(mc == mc.reshape(-1)[0]) else None
        s1 = int(sc.reshape(-1)[0]) if np.all(sc == sc.reshape(-1)[0]) else None
        if m1 == 1 << 30 and s1 is not None:
            if s1 <= 30:
                raise _NoVector
            y = f"esq_v4_rshr_n({x}, {s1 - 30})" if s1 - 30 <= 32 else f"esq_v4_rshl({x}, esq_v4_dup({-(s1 - 30)}))"
            return self._vsat(y, bits) if bits < 32 else y
        plan = K.requant_plan(sc, max(abs(xlo), abs(xhi)))
        if plan is None:
            raise _NoVector
        if np.all(plan.d == plan.d[0]):
            if plan.d[0]:
                x = f"esq_v4_shl_n({x}, {int(plan.d[0])})"
        else:
            x = f"esq_v4_shl({x}, {self._vconst(plan.d, (op.shift, 'rq-vd'), f'{op.shift}: d')})"
        m = vrd(op.mult)
        if np.all(plan.k == plan.k[0]) and plan.k[0] + 1 <= 32:
            y = f"esq_v4_rshr_n(esq_v4_qdmulh({x}, {m}), {int(plan.k[0]) + 1})"
        else:
            y = (
                f"esq_v4_rshl(esq_v4_qdmulh({x}, {m}), "
                f"{self._vconst(-(plan.k + 1), (op.shift, 'rq-nk'), f'{op.shift}: -(k + 1)')})"
            )
        return self._vsat(y, bits) if bits < 31 else y

    def vec_clamp(self, op, vrd, body) -> str:
        return f"esq_v4_min(esq_v4_max({vrd(op.x)}, {vrd(op.lo)}), {vrd(op.hi)})"

    def vec_lut(self, op: Lut, vrd, body) -> str:
        tb = self.p.consts[op.table]
        ct = self.ctype(op.table)
        if ct not in ("int8_t", "int16_t"):
            raise _NoVector
        g = f"esq_v4_gather{ct[3:-2]}"
        tab = self.table(op.table)
        x = vrd(op.x)
        if tb.size == 256:
            return f"{g}({tab}, esq_v4_add({x}, esq_v4_dup(128)))"
        k = int(tb.size - 1).bit_length() - 1
        sh = 16 - k
        if sh == 0:
            return f"{g}({tab}, esq_v4_add({x}, esq_v4_dup(32768)))"
        n = len(body)
        body += [
            f"const esq_v4 u{n} = esq_v4_add({x}, esq_v4_dup(32768));",
            f"const esq_v4 j{n} = esq_v4_shr_n(u{n}, {sh});",
            f"const esq_v4 b{n} = {g}({tab}, j{n});",
            f"const esq_v4 d{n} = esq_v4_sub({g}({tab} + 1, j{n}), b{n});",
        ]
        return f"esq_v4_add(b{n}, esq_v4_rshr_n(esq_v4_mul(d{n}, esq_v4_and(u{n}, esq_v4_dup({(1 << sh) - 1}))), {sh}))"

    def mv_parts(self, op: MatVec) -> list[K.Part] | None:
        """The input parts of a matvec as the kernels read them (a folded concat: one per operand),
        None when the input is a constant."""
        if self.is_const(op.x):
            return None
        G = op.blocks
        if op.x in self.folded:
            parts, col = [], 0
            for x in self.folded[op.x].xs:
                m = self.width(x) // G
                parts.append(K.Part(self.loc[x], self.ctype(x), m, m, col, self._aligned(x, m, G)))
                col += m
            return parts
        I = self.p.consts[op.w].shape[1]
        return [K.Part(self.loc[op.x], self.ctype(op.x), I, I, 0, self._aligned(op.x, I, G))]

    def _aligned(self, x: str, stride: int, blocks: int) -> bool:
        """Every block of vector ``x`` starts on a 4-byte boundary: vectors themselves do (arena
        blocks of 4 elements, state fields padded to 8 bytes in an 8-byte aligned struct)."""
        return blocks == 1 or (stride * CTYPE_BYTES[self.ctype(x)]) % 4 == 0

    def kernel_ok(self, op: MatVec, part_ctypes) -> bool:
        """The flavoured kernels apply: int32 accumulators stored as int32, int8 / int16 operands."""
        return (
            self.ctype(op.out) == "int32_t"
            and not self.is_const(op.x)
            and K.supported(self.p.consts[op.w], part_ctypes)
        )

    def emit_matvec(self, op: MatVec, where: str, fused=None) -> list[str]:
        """``fused`` = (section, ops, unit, ext): the elementwise unit that consumes the
        accumulators, run on them in registers on DSP cores, after the product elsewhere."""
        y, yt, n = self._y(op)
        W = self.p.consts[op.w]
        if W.ndim != 2:
            raise UnsupportedOpError("matvec weight must be 2-D", where=where)
        N, I = W.shape
        G = op.blocks
        acc = "int64_t" if self.ctype(op.out) == "int64_t" else "int32_t"
        parts = self.mv_parts(op)
        if parts is None:
            parts = [K.Part(self.table(op.x), self.ctype(op.x), I, I, 0)]
        bias = self.table(op.bias) if op.bias else None
        if not self.kernel_ok(op, [p.ctype for p in parts]):
            return self._matvec_portable(op, parts, y, yt, acc, bias)
        call = K.MatVecCall(W, tuple(parts), G, y, bias)
        key = (op.w, tuple((p.col0, p.width, p.ctype) for p in parts))
        comment = f"{op.w} ({W.dtype.name}, {N}x{I})"
        wcols = self.column_form(N, I)
        pw = W.T if wcols else W
        ws = K._mve_ws_parts(call) is not None  # MVE: weights stationary over the blocks
        xs = K.mve_xs_applies(call)  # MVE: input stationary (one vector of input)
        mve_w = K.mve_ws_layout(call) if ws else (K.mve_xs_layout(call) if xs else K.mve_layout(call))
        tab = self.layout_table(
            key,
            op.w,
            {
                "mve": (mve_w, call.wctype),
                "dsp": (K.dsp_layout(call), call.wctype),
                "neon": (K.neon_layout(call), "int16_t"),
                "c": (pw.reshape(-1), call.wctype),
            },
            comment + (", transposed" if wcols else ""),
        )
        portable = self._matvec_portable(op, parts, y, yt, acc, bias, tab)
        dsp = []
        widened = {}
        for k, part in enumerate(parts):
            if part.ctype == "int8_t":  # the DSP kernels take int16 inputs: widen int8 parts once
                nm = f"xw{k}"
                tot = part.stride * (G - 1) + part.width
                dsp += [f"int16_t {nm}[{tot}] ESQ_ALIGN8;", f"esq_widen8({nm}, {part.x}, {tot});"]
                widened[k] = nm
        after: list[str] = []
        epilogue = None
        if fused is not None:
            section, ops, grp, ext = fused
            after = self.emit_fused(section, ops, grp, ext)

            def epilogue(index: str, acc: str) -> list[str]:
                return [f"const int i = {index};", *self.scalar_body(section, ops, grp, ext, {op.out: acc})]

        dsp += K.dsp_matvec(call, tab, widened, epilogue)
        neon = []
        if op.bias:
            b32 = self.layout_table(
                (op.bias, "neon-pad"),
                op.bias,
                {"neon": (K.neon_bias(call, self.p.consts[op.bias].astype(np.int64)), "int32_t")},
                f"{op.bias} (int32, padded)",
            )
            neon.append(f"const int32_t *const bias32 = {b32};")
        neon += K.neon_matvec(call, tab)
        mve = []
        if (ws or xs) and op.bias:
            b32 = self.layout_table(
                (op.bias, "mve-pad"),
                op.bias,
                {
                    "mve": (
                        K.mve_ws_bias(call, self.p.consts[op.bias].astype(np.int64))
                        if ws
                        else self.p.consts[op.bias].astype(np.int32),
                        "int32_t",
                    )
                },
                f"{op.bias} (int32" + (", padded)" if ws else ")"),
            )
            mve.append(f"const int32_t *const bias32 = {b32};")
        if ws:
            mve += K.mve_ws_matvec(call, tab)
        elif xs:
            mve += K.mve_xs_matvec(call, tab)
        else:
            mve = K.mve_matvec(call, tab)
        if after:  # the other flavours store the accumulators, then run the elementwise loop
            mve, neon, portable = ([*c, "{", *indent(after), "}"] for c in (mve, neon, portable))
        return [
            "#if defined(ESQ_MV_MVE)",
            *mve,
            "#elif defined(ESQ_MV_DSP)",
            *dsp,
            "#elif defined(ESQ_MV_NEON)",
            *neon,
            "#else",
            *portable,
            "#endif",
        ]

    def _matvec_portable(
        self, op: MatVec, parts, y: str, yt: str, acc: str, bias: str | None, table: str | None = None
    ) -> list[str]:
        """Portable loops: column updates over a transposed table where rows are short or odd,
        else one dot product per row; each input part read in place."""
        W = self.p.consts[op.w]
        N, I = W.shape
        G = op.blocks
        wct = self.ctype(op.w)
        b = f"({acc}){bias}[o]" if bias else "0"
        cols = self.column_form(N, I) and acc == yt
        if table is None:
            table = self.layout_table(
                (op.w, "c-cols" if cols else "c-rows"),
                op.w,
                {"c": ((W.T if cols else W).reshape(-1), wct)},
                f"{op.w} ({W.dtype.name}, {N}x{I})" + (", transposed" if cols else ""),
            )

        def xg(part) -> str:
            return part.x if G == 1 else f"({part.x} + g * {part.stride})"

        if cols:
            inner = [f"for (int o = 0; o < {N}; ++o)", f"    yg[o] = {b};"]
            for part in parts:
                inner += [
                    "{",
                    f"    const {part.ctype} *restrict xp = {xg(part)};",
                    f"    for (int i = 0; i < {part.width}; ++i) {{",
                    f"        const {acc} xi = ({acc})xp[i];",
                    f"        const {wct} *restrict wc = {table} + ({part.col0} + i) * {N};",
                    f"        for (int o = 0; o < {N}; ++o)",
                    f"            yg[o] += ({acc})wc[o] * xi;",
                    "    }",
                    "}",
                ]
        else:
            inner = [
                f"for (int o = 0; o < {N}; ++o) {{",
                f"    const {wct} *restrict wr = {table} + o * {I};",
                f"    {acc} acc = {b};",
            ]
            for part in parts:
                inner += [
                    "    {",
                    f"        const {part.ctype} *restrict xp = {xg(part)};",
                    f"        for (int i = 0; i < {part.width}; ++i)",
                    f"            acc += ({acc})wr[{part.col0} + i] * ({acc})xp[i];",
                    "    }",
                ]
            inner += [f"    yg[o] = ({yt})acc;", "}"]
        if G == 1:
            return [f"{yt} *restrict yg = {y};", *inner]
        return [f"for (int g = 0; g < {G}; ++g) {{", f"    {yt} *restrict yg = {y} + g * {N};", *indent(inner), "}"]

    # elementwise ops: statements computing element i into the scalar ``t`` (type ``yt``)
    def per_channel(self, values, key, ctype: str, comment: str) -> str:
        """A C expression for element ``i`` of derived per-channel constants: a literal when they
        are all equal, else a table (emitted once per ``key``)."""
        v = np.asarray(values, np.int64).reshape(-1)
        if np.all(v == v[0]):
            return c_int(int(v[0]))
        idx = "c" if self._period is not None and v.size == self._period[1] else "i"  # (channel-major loop)
        return f"{self.layout_table(key, str(key[0]), {'c': (v, ctype)}, comment, derived=True)}[{idx}]"

    def elem_requant(self, op: Requant, where: str, t: str, yt: str) -> list[str]:
        bits = self.p.vectors[op.out].bits
        lo, hi = int_range(bits)
        x = self.rd(op.x, "i")
        xlo, xhi = self.interval(op.x)
        body = []
        if op.pre > 0:
            body.append(f"const int64_t x0 = esq_asr64((int64_t){x} + ((int64_t)1 << {op.pre - 1}), {op.pre});")
            xv = "(int32_t)x0"
            xlo = (xlo + (1 << (op.pre - 1))) >> op.pre
            xhi = (xhi + (1 << (op.pre - 1))) >> op.pre
        else:
            xv = f"(int32_t){x}"
        mc, sc = self.p.consts.get(op.mult), self.p.consts.get(op.shift)
        m1 = int(mc.reshape(-1)[0]) if mc is not None and np.all(mc == mc.reshape(-1)[0]) else None
        s1 = int(sc.reshape(-1)[0]) if sc is not None and np.all(sc == sc.reshape(-1)[0]) else None
        if m1 == 1 << 30 and s1 is not None and bits <= 32:
            # M = 2^30 exactly: x * 2^(30 - s) (exact) for s <= 30, else (x + 2^(s-31)) >> (s - 30)
            if s1 <= 30:
                k = 30 - s1
                body.append(f"const int64_t v = (int64_t){xv} * {c_int(1 << k)};")
                body.append(f"{t} = ({yt})esq_sat64(v, {c_int(lo)}, {c_int(hi)});")
            else:
                r = 1 << (s1 - 31)
                wide = max(abs(xlo), abs(xhi)) + r >= 2**31
                ct = "int64_t" if wide else "int32_t"
                fn = "esq_asr64" if wide else "esq_asr32"
                body.append(f"const {ct} v = {fn}(({ct}){xv} + {c_int(r)}, {s1 - 30});")
                if wide or bits >= 31:
                    body.append(f"{t} = ({yt})(v < {c_int(lo)} ? {c_int(lo)} : (v > {c_int(hi)} ? {c_int(hi)} : v));")
                else:  # one SSAT on DSP cores
                    body.append(f"{t} = ({yt})ESQ_SAT(v, {bits}, {c_int(lo)}, {c_int(hi)});")
        elif bits <= 32 and (plan := K.requant_plan(self.p.consts[op.shift], max(abs(xlo), abs(xhi)))) is not None:
            m = self.rd(op.mult, "i")
            d = self.per_channel(
                plan.d, (op.shift, "rq-d"), "int8_t", f"{op.shift}: input pre-shift d = max(0, 33 - s)"
            )
            k = self.per_channel(plan.k, (op.shift, "rq-k"), "int8_t", f"{op.shift}: k = s + d - 32")
            rnd = self.per_channel(1 << (plan.k - 1), (op.shift, "rq-r"), "int32_t", f"{op.shift}: 2^(k-1)")
            xs = xv if d == "0" else f"(int32_t)((uint32_t){xv} << {d})"
            body.append(f"const int32_t v = esq_asr32(esq_smmla({xs}, (int32_t){m}, {rnd}), {k});")
            body.append(f"{t} = ({yt})" + (f"ESQ_SAT(v, {bits}, {c_int(lo)}, {c_int(hi)});" if bits < 31 else "v;"))
        elif bits <= 32:
            m, sh = self.rd(op.mult, "i"), self.rd(op.shift, "i")
            body.append(f"{t} = ({yt})esq_rq32({xv}, (int32_t){m}, (int){sh}, {c_int(lo)}, {c_int(hi)});")
        else:
            m, sh = self.rd(op.mult, "i"), self.rd(op.shift, "i")
            body.append(
                f"const int64_t v = esq_asr64((int64_t){xv} * (int64_t){m} + ((int64_t)1 << ((int){sh} - 1)), (int){sh});"
            )
            body.append(f"{t} = ({yt})esq_sat64(v, {c_int(lo)}, {c_int(hi)});")
        return ["{", *indent(body), "}"]

    def _binary(self, op, sym: str, t: str, yt: str) -> list[str]:
        ct = self.compute_type(op.out, op.a, op.b)
        a, b = self.rd(op.a, "i"), self.rd(op.b, "i")
        if isinstance(op, Add) and op.accumulate:
            ut = "uint64_t" if ct == "int64_t" else "uint32_t"  # a running sum past max_steps wraps, no UB
            expr = f"({ct})(({ut})({ct}){a} + ({ut})({ct}){b})"
        else:
            expr = f"({ct}){a} {sym} ({ct}){b}"
        return [f"{t} = ({yt})({expr});"]

    def elem_add(self, op, where, t, yt):
        return self._binary(op, "+", t, yt)

    def elem_sub(self, op, where, t, yt):
        return self._binary(op, "-", t, yt)

    def elem_mul(self, op, where, t, yt):
        return self._binary(op, "*", t, yt)

    def elem_div(self, op: Div, where: str, t: str, yt: str) -> list[str]:
        alo, ahi = self.interval(op.a)
        blo, bhi = self.interval(op.b)
        big = max(abs(2 * alo + blo), abs(2 * ahi + bhi), abs(2 * bhi), abs(2 * blo))
        fn, ct = ("esq_div32", "int32_t") if big < 2**31 else ("esq_div64", "int64_t")
        return [f"{t} = ({yt}){fn}(({ct}){self.rd(op.a, 'i')}, ({ct}){self.rd(op.b, 'i')});"]

    def elem_isqrt(self, op: Isqrt, where: str, t: str, yt: str) -> list[str]:
        fn, ct = ("esq_isqrt64", "int64_t") if self.ctype(op.x) == "int64_t" else ("esq_isqrt32", "int32_t")
        return [f"{t} = ({yt}){fn}(({ct}){self.rd(op.x, 'i')});"]

    def elem_lut(self, op: Lut, where: str, t: str, yt: str) -> list[str]:
        tb = self.p.consts[op.table]
        tab = self.table(op.table)
        x = self.rd(op.x, "i")
        if tb.size == 256:
            return [f"{t} = ({yt}){tab}[(int32_t){x} + 128];"]
        k = int(tb.size - 1).bit_length() - 1
        if tb.ndim != 1 or tb.size != (1 << k) + 1 or not 1 <= k <= 16:
            raise UnsupportedOpError(f"lut table of {tb.size} entries (expected 256 or 2^k + 1)", where=where)
        sh = 16 - k
        if sh == 0:
            return [f"{t} = ({yt}){tab}[(int32_t){x} + 32768];"]
        wide = self.ctype(op.table) in ("int32_t", "int64_t")  # a difference of int32 entries needs 64 bits
        bt = "int64_t" if self.ctype(op.table) == "int64_t" else "int32_t"
        if wide:
            interp = (
                f"{t} = ({yt})((int64_t)base + esq_asr64(((int64_t){tab}[j + 1] - (int64_t)base) * f "
                f"+ {1 << (sh - 1)}, {sh}));"
            )
        else:
            interp = f"{t} = ({yt})(base + esq_asr32(((int32_t){tab}[j + 1] - base) * f + {1 << (sh - 1)}, {sh}));"
        return [
            "{",
            f"    const int32_t u = (int32_t){x} + 32768;",
            f"    const int32_t j = u >> {sh}, f = u & {(1 << sh) - 1};",
            f"    const {bt} base = {tab}[j];",
            f"    {interp}",
            "}",
        ]

    def elem_clamp(self, op: Clamp, where: str, t: str, yt: str) -> list[str]:
        ct = self.compute_type(op.out, op.x, op.lo, op.hi)
        return [
            "{",
            f"    const {ct} v = ({ct}){self.rd(op.x, 'i')};",
            f"    const {ct} lo = ({ct}){self.rd(op.lo, 'i')}, hi = ({ct}){self.rd(op.hi, 'i')};",
            f"    {t} = ({yt})(v < lo ? lo : (v > hi ? hi : v));",
            "}",
        ]

    def elem_cmp_ge(self, op: CmpGe, where: str, t: str, yt: str) -> list[str]:
        ct = self.compute_type(op.a, op.b)
        return [f"{t} = ({yt})(({ct}){self.rd(op.a, 'i')} >= ({ct}){self.rd(op.b, 'i')});"]

    def elem_select(self, op: Select, where: str, t: str, yt: str) -> list[str]:
        ct = self.compute_type(op.out, op.a, op.b)
        return [f"{t} = ({yt})({self.rd(op.c, 'i')} != 0 ? ({ct}){self.rd(op.a, 'i')} : ({ct}){self.rd(op.b, 'i')});"]

    def emit_concat(self, op: Concat, where: str) -> list[str]:
        y, yt, n = self._y(op)
        G = op.blocks
        row = n // G
        lines, off = [], 0
        for x in op.xs:
            m = self.width(x) // G
            if G == 1:
                lines += [f"for (int i = 0; i < {m}; ++i)", f"    {y}[{off} + i] = ({yt}){self.rd(x, 'i')};"]
            else:
                lines += [
                    f"for (int g = 0; g < {G}; ++g)",
                    f"    for (int i = 0; i < {m}; ++i)",
                    f"        {y}[g * {row} + {off} + i] = ({yt}){self.rd(x, f'g * {m} + i')};",
                ]
            off += m
        return lines

    def emit_gather(self, op: Gather, where: str) -> list[str]:
        y, yt, n = self._y(op)
        idx = self.p.consts[op.index]
        if self.width(op.x) == 1 or idx.size == 1:
            src = self.rd(op.x, c_int(int(idx.reshape(-1)[0])) if idx.size == 1 else "0")
            return self._loop(n, [f"{y}[i] = ({yt}){src};"])
        return self._loop(n, [f"{y}[i] = ({yt}){self.rd(op.x, f'{self.table(op.index)}[i]')};"])

    def emit_load(self, op: Load, where: str) -> list[str]:
        y, yt, n = self._y(op)
        return self._loop(n, [f"{y}[i] = ({yt})s->{self.fields[op.state]}[i];"])

    def emit_store(self, op: Store) -> list[str]:
        st = self.p.states[op.out]
        fld = f"s->{self.fields[op.out]}"
        if not self.is_const(op.x) and self.loc.get(op.x) == fld:
            return []  # the value already is the state (an aliased load stored back)
        sct = ctype_of_bits(st.bits)
        return self._loop(st.n, [f"{fld}[i] = ({sct}){self.rd(op.x, 'i')};"])

    # -- the whole model --------------------------------------------------------------------------
    def input_layout(self) -> tuple[list[dict], int]:
        """The program's input parts, concatenated in order (the integer input row), and its width."""
        in_layout, off = [], 0
        for s in self.p.inputs:
            in_layout.append(
                {
                    "vec": s.vec,
                    "offset": off,
                    "size": len(s.channels),
                    "bits": s.bits,
                    "channels": [int(c) for c in s.channels],
                }
            )
            off += len(s.channels)
        return in_layout, off

    def output_layout(self) -> tuple[list[dict], int, int]:
        """Every output's place in the per-step / pooled output rows, and the two row widths."""
        p = self.p
        outputs, s_off, p_off = [], 0, 0
        for o in self.out_specs:
            n = p.vectors[o.vec].n
            sc = np.ravel(np.asarray(o.scale, np.float64))
            if sc.size not in (1, n):
                raise ConfigError(f"output '{o.name}' has {sc.size} scales for {n} values")
            ent = {
                "name": o.name,
                "temporal": bool(o.temporal),
                "features": n,
                "offset": s_off if o.temporal else p_off,
                "vec": o.vec,
                "bits": p.vectors[o.vec].bits,
                "scale": float(sc[0]) if np.all(sc == sc[0]) else [float(v) for v in sc],
                "scales": [float(v) for v in sc],
            }
            outputs.append(ent)
            if o.temporal:
                s_off += n
            else:
                p_off += n
        return outputs, s_off, p_off

    def generate(self) -> CSources:
        p, pre = self.p, self.prefix
        if p.is_window:
            from .intwindow import generate_window

            return generate_window(self, self.window_steps)
        for key in p.states:
            self.fields[key] = self._unique("st_" + c_ident(key.replace("/", "__")))
        in_layout, in_q = self.input_layout()
        temporal = [o for o in self.out_specs if o.temporal]
        pooled = [o for o in self.out_specs if not o.temporal]
        step_arena = ArenaSet("w")
        step_code = self.phase("step", p.step, step_arena, [s.vec for s in p.inputs], {o.vec for o in temporal})
        step_loc = dict(self.loc)
        final_arena = ArenaSet("pw")
        final_code = self.phase("final", p.final, final_arena, [], {o.vec for o in pooled})
        final_loc = dict(self.loc)

        outputs, s_off, p_off = self.output_layout()
        state_layout, z = [], 0
        for key, st in p.states.items():
            state_layout.append(
                {
                    "key": key,
                    "field": self.fields[key],
                    "shape": list(st.shape),
                    "offset": z,
                    "size": st.n,
                    "bits": st.bits,
                    "ctype": ctype_of_bits(st.bits),
                }
            )
            z += st.n

        # struct members, widest element first: no padding inside, so the size is predictable
        members = [
            (ctype_of_bits(st.bits), self.fields[k], st.n, f'state "{k}" {tuple(st.shape)}, int{st.bits}')
            for k, st in p.states.items()
        ]
        members += [
            (a.ctype, f"scratch{CTYPE_SUFFIX[a.ctype]}", a.high_water, "per-step vectors (static plan)")
            for a in step_arena.used()
        ]
        members.sort(key=lambda m: -CTYPE_BYTES[m[0]])
        if not members:
            members = [("int32_t", "unused_", 1, "no state")]
        # every member a multiple of 8 bytes in an 8-byte aligned struct: each one (and every
        # 4-element arena block) starts word aligned, as the kernels' LDRD / LDM loads need
        members = [
            (c, name, -(-max(1, n) * CTYPE_BYTES[c] // 8) * 8 // CTYPE_BYTES[c], note) for c, name, n, note in members
        ]
        struct_bytes = sum(CTYPE_BYTES[c] * n for c, _, n, _ in members)
        state_bytes = sum(CTYPE_BYTES[ctype_of_bits(st.bits)] * st.n for st in p.states.values())
        scratch_bytes = sum(a.nbytes for a in step_arena.used())
        final_bytes = sum(a.nbytes for a in final_arena.used())

        src = self._source(
            in_layout,
            in_q,
            outputs,
            state_layout,
            step_code,
            step_loc,
            final_code,
            final_loc,
            step_arena,
            final_arena,
            s_off,
            p_off,
            z,
        )
        header = self._header(members, in_q, outputs, s_off, p_off, z, struct_bytes)
        info: dict[str, Any] = {
            "profile_map": self.profile_map(src),
            "prefix": pre,
            "numerics": "integer",
            "in_features": self.in_features,
            "in_q_features": in_q,
            "input_layout": in_layout,
            "step_out_features": s_off,
            "pooled_out_features": p_off,
            "outputs": outputs,
            "state_floats": z,
            "state_layout": state_layout,
            "state_spec": {k: list(st.shape) for k, st in p.states.items()},
            "weights_bytes": self.flavour_bytes[self.flavour or "c"],
            "kernel_flavour": self.flavour or "c",
            "libm": [],
            "micro_ops": {"step": len(p.step), "final": len(p.final), "kinds": p.op_counts()},
            "macs_per_step": p.macs_per_step(),
            "buffer_plan": {
                "state_bytes": state_bytes,
                "scratch_bytes": scratch_bytes,
                "struct_bytes_estimate": struct_bytes,
                "pooled_stack_bytes": final_bytes,
                "vector_bytes_unplanned": sum(CTYPE_BYTES[ctype_of_bits(v.bits)] * v.n for v in p.vectors.values()),
                "scratch": step_arena.describe(),
                "pooled": final_arena.describe(),
            },
        }
        return CSources(pre, {"model.h": header, "model.c": src}, info)

    def profile_map(self, src: str) -> dict:
        """Which lines of ``model.c`` belong to which region, for per-op instruction profiles
        (:mod:`edgeseq.targets.profile`): every emitted unit of the step and final programs (one
        micro-op, a fused elementwise loop, a matvec with its folded concat) and the rest of the
        input quantizer, step, readout and float API functions. ``per`` says whether a region runs
        every step or once per sequence; lines outside these functions (inlined helpers) belong to
        no region."""
        p = self.prefix
        fns = {
            f"{p}_quantize": ("input quantizer", "step", None),
            f"{p}_step_q": ("step: input / output copies", "step", "step"),
            f"{p}_pooled_q": ("readout: output copies", "sequence", "final"),
            f"{p}_step": ("float API: step", "step", None),
            f"{p}_pooled": ("float API: readout", "sequence", None),
        }
        sections = {"step": self.p.step, "final": self.p.final}
        lines = src.split("\n")
        head = re.compile(r"^    /\* #(\d+) ")
        regions: list[dict] = []
        i = 0
        while i < len(lines):
            m = re.match(r"^void (\w+)\(", lines[i])
            if not (m and m.group(1) in fns):
                i += 1
                continue
            label, per, sec = fns[m.group(1)]
            start, units = i + 1, []
            i += 1
            while lines[i] != "}":
                if sec and head.match(lines[i]):
                    first, idxs = i, []
                    while head.match(lines[i]):
                        idxs.append(int(head.match(lines[i]).group(1)))
                        i += 1
                    if lines[i] == "    {":
                        while lines[i] != "    }":
                            i += 1
                    ops = [sections[sec][k] for k in idxs]
                    kinds = "+".join(dict.fromkeys(op.kind for op in ops))
                    units.append(
                        {
                            "label": f"{'step' if sec == 'step' else 'readout'}: {kinds} -> {ops[-1].out}",
                            "per": per,
                            "first": first + 1,
                            "last": i + 1,
                            "ops": [
                                {"index": k, "kind": op.kind, "out": op.out, "node": op.node}
                                for k, op in zip(idxs, ops)
                            ],
                        }
                    )
                i += 1
            end = i + 1
            lo = start
            for u in units:  # the function's own lines around its units
                if u["first"] > lo:
                    regions.append({"label": label, "per": per, "first": lo, "last": u["first"] - 1, "ops": []})
                regions.append(u)
                lo = u["last"] + 1
            regions.append({"label": label, "per": per, "first": lo, "last": end, "ops": []})
        return {"file": "model.c", "regions": regions}

    def _header(self, members, in_q, outputs, s_out, p_out, z, struct_bytes, *, window_steps=None) -> str:
        """``model.h``: the constants, the state struct and the API (a window program's
        (``window_steps``) whole-window API, see :mod:`.intwindow`)."""
        p, P = self.prefix, self.P
        outs = "\n".join(
            f" *   {o['name']}: {'per step' if o['temporal'] else 'pooled'}, {o['features']} values at "
            f"offset {o['offset']} (int{o['bits']}; float = q * scale)"
            for o in outputs
        )
        fields = "\n".join(f"    {c} {name}[{max(1, n)}];  /* {note} */" for c, name, n, note in members)
        if window_steps is None:
            title = "streaming C99 inference"
            defines = ""
            api = f"""/* Start a new sequence: zero every state. */
void {p}_reset({p}_state *s);
/* Input boundary: {P}_IN_FEATURES floats -> {P}_IN_Q_FEATURES integers (IEEE single, round half to even, saturate). */
void {p}_quantize(const float *x_t, int32_t *xq_t);
/* One step on integer input (values within the input widths); yq_t (may be NULL) receives
 * {P}_STEP_OUT_FEATURES integers. */
void {p}_step_q({p}_state *s, const int32_t *xq_t, int32_t *yq_t);
/* The final program ({P}_POOLED_OUT_FEATURES integers): readouts over every step since the reset. */
void {p}_pooled_q(const {p}_state *s, int32_t *yq);
/* Canonical integer state ({P}_STATE_WORDS values, the program's state order, flat). */
void {p}_state_save_q(const {p}_state *s, int32_t *out);
void {p}_state_load_q({p}_state *s, const int32_t *in);

/* The float API of edgeseq's C models: quantize, run the integer program, dequantize (q * scale). */
void {p}_step({p}_state *s, const float *x_t, float *y_t);
void {p}_pooled(const {p}_state *s, float *y);
/* T steps of x (T x {P}_IN_FEATURES, row-major); y (may be NULL) receives T x {P}_STEP_OUT_FEATURES. */
void {p}_run({p}_state *s, const float *x, int T, float *y);
/* The canonical state as floats (exact for |values| < 2^24; use the _q functions beyond). */
void {p}_state_save(const {p}_state *s, float *out);
void {p}_state_load({p}_state *s, const float *in);"""
        else:
            title = "whole-window C99 inference (the model reads future steps of its window)"
            defines = f"#define {P}_WINDOW 1\n#define {P}_WINDOW_STEPS {window_steps}\n"
            api = f"""/* Zero everything (each window starts from zero anyway). */
void {p}_reset({p}_state *s);
/* Input boundary: {P}_IN_FEATURES floats -> {P}_IN_Q_FEATURES integers (IEEE single, round half to even, saturate). */
void {p}_quantize(const float *x_t, int32_t *xq_t);
/* A whole window of T steps (1 <= T <= {P}_WINDOW_STEPS; else -1 and nothing computed): integer input
 * (T x {P}_IN_Q_FEATURES), or float input (T x {P}_IN_FEATURES); yq (may be NULL) receives
 * T x {P}_STEP_OUT_FEATURES integers. The pooled outputs are then read with {p}_pooled(_q). */
int {p}_run_q({p}_state *s, const int32_t *xq, int T, int32_t *yq);
int {p}_run_fq({p}_state *s, const float *x, int T, int32_t *yq);
void {p}_pooled_q(const {p}_state *s, int32_t *yq);
/* The float API: the same window, outputs q * scale (y may be NULL; T out of range computes nothing). */
void {p}_run({p}_state *s, const float *x, int T, float *y);
void {p}_pooled(const {p}_state *s, float *y);
/* A window model carries no state between windows ({P}_STATE_FLOATS = 0): these do nothing. */
void {p}_state_save_q(const {p}_state *s, int32_t *out);
void {p}_state_load_q({p}_state *s, const int32_t *in);
void {p}_state_save(const {p}_state *s, float *out);
void {p}_state_load({p}_state *s, const float *in);"""
        return f"""/* Generated by edgeseq from an integer program: {title}, bit-exact against
 * edgeseq.quant.intexact (see edgeseq/quant/README.md for the semantics).
 *
 * Outputs (program order):
{outs}
 */
#ifndef {P}_MODEL_H
#define {P}_MODEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

#define {P}_INT_API 1
{defines}#define {P}_IN_FEATURES {self.in_features}
#define {P}_IN_Q_FEATURES {in_q}
#define {P}_STEP_OUT_FEATURES {s_out}
#define {P}_POOLED_OUT_FEATURES {p_out}
#define {P}_STATE_FLOATS {z}
#define {P}_STATE_WORDS {z}
#define {P}_STRUCT_BYTES {struct_bytes}

#if defined(__GNUC__)
#define {P}_STATE_ALIGN __attribute__((aligned(8)))
#else
#define {P}_STATE_ALIGN
#endif

typedef struct {p}_state {{
{fields}
}} {P}_STATE_ALIGN {p}_state;

{api}

#ifdef __cplusplus
}}
#endif

#endif /* {P}_MODEL_H */
"""

    def quantizer(self, in_layout) -> tuple[list[str], list[str]]:
        """(tables, body lines) of ``<p>_quantize``: the program's input boundary."""
        prog = self.p
        where = f"target {self.target}"
        lines_q: list[str] = []  # quantizer tables + body
        qtabs: list[str] = []
        for k, (spec, lay) in enumerate(zip(prog.inputs, in_layout)):
            nk = lay["size"]
            if nk == 0:
                continue
            lo, hi = int_range(spec.bits)
            ch = np.asarray(spec.channels, np.int64)
            if np.array_equal(ch, np.arange(ch[0], ch[0] + nk)):
                xk = f"x_t[{int(ch[0])} + k]" if ch[0] else "x_t[k]"
            else:
                qtabs.append(int_table(f"QCH{k}", ch, "int16_t", f"input '{spec.vec}': channels"))
                xk = f"x_t[QCH{k}[k]]"
            if np.any(spec.offset != 0):
                qtabs.append(_float_table(f"QOFF{k}", spec.offset, f"input '{spec.vec}': offset (float32)", where))
                xk = f"({xk} - QOFF{k}[k])"
            qtabs.append(_float_table(f"QINV{k}", spec.inv_scale, f"input '{spec.vec}': 1 / scale (float32)", where))
            lines_q += [
                f"for (int k = 0; k < {nk}; ++k)",
                f"    xq_t[{lay['offset']} + k] = esq_qroundf({xk} * QINV{k}[k], {c_int(lo)}, {c_int(hi)});",
            ]
        return qtabs, lines_q

    def dequantizer(self, outputs) -> tuple[list[str], list[str], list[str]]:
        """(scale tables, temporal lines, pooled lines): ``y[...] = (float)q[...] * scale`` per output."""
        where = f"target {self.target}"
        deq_tabs: list[str] = []
        deq_step: list[str] = []
        deq_pool: list[str] = []
        for j, o in enumerate(outputs):
            name = f"OSCALE{j}"
            deq_tabs.append(_float_table(name, o["scales"], f"output '{o['name']}': scale (float32)", where))
            idx = "0" if len(o["scales"]) == 1 else "i"
            line = [
                f"for (int i = 0; i < {o['features']}; ++i)",
                f"    y[{o['offset']} + i] = (float)q[{o['offset']} + i] * {name}[{idx}];",
            ]
            (deq_step if o["temporal"] else deq_pool).extend(line)
        return deq_tabs, deq_step, deq_pool

    def pooled_functions(self, outputs, final_code, final_loc, final_arena, deq_pool) -> list[list[str]]:
        """The lines of ``<p>_pooled_q`` (the final program, integer outputs) and of ``<p>_pooled``
        (the float API: q * scale), as two lists."""
        p, P = self.prefix, self.P
        L = [f"void {p}_pooled_q(const {p}_state *s, int32_t *yq)", "{"]
        L += indent(self.arena_decls(final_arena, True))
        L += indent(final_code)
        pouts = [o for o in outputs if not o["temporal"]]
        for o in pouts:
            L += indent(
                [
                    f"for (int i = 0; i < {o['features']}; ++i)",
                    f"    yq[{o['offset']} + i] = (int32_t){final_loc[o['vec']]}[i];",
                ]
            )
        if not pouts:
            L.append("    (void)yq;")
        if not final_code:
            L.append("    (void)s;")
        L += ["}", ""]
        F = [
            f"void {p}_pooled(const {p}_state *s, float *y)",
            "{",
            f"    int32_t q[{P}_POOLED_OUT_FEATURES + 1];",
            f"    {p}_pooled_q(s, q);",
        ]
        F += indent(deq_pool) if deq_pool else ["    (void)y;"]
        F += ["}", ""]
        return [L, F]

    @staticmethod
    def arena_decls(arenas: ArenaSet, on_stack: bool) -> list[str]:
        out = []
        for a in arenas.used():
            if on_stack:
                out.append(f"{a.ctype} {a.name}[{a.high_water}] ESQ_ALIGN8;")
            else:
                out.append(f"{a.ctype} *const {a.name} = s->scratch{CTYPE_SUFFIX[a.ctype]};")
            out.append(f"(void){a.name};")  # a kernel may use the arena in one SIMD branch only
        return out

    def _source(
        self,
        in_layout,
        in_q,
        outputs,
        state_layout,
        step_code,
        step_loc,
        final_code,
        final_loc,
        step_arena,
        final_arena,
        s_out,
        p_out,
        z,
    ) -> str:
        p, P, prog = self.prefix, self.P, self.p
        qtabs, lines_q = self.quantizer(in_layout)
        deq_tabs, deq_step, deq_pool = self.dequantizer(outputs)
        arena_decls = self.arena_decls

        L = [
            "/* Generated by edgeseq from an integer program: C99, static memory only, no libm. */",
            '#include "model.h"',
            "#include <string.h>",
            "",
            PRELUDE.strip("\n"),
            "",
            K.SIMD_SELECT,
            "",
            K.V4_API,
            "",
            "/* ---- constants (read-only: flash on a microcontroller) ---- */",
        ]
        L += self.table_text + qtabs + deq_tabs
        L += ["", f"void {p}_reset({p}_state *s)", "{", "    memset(s, 0, sizeof *s);", "}", ""]
        # quantize
        L += [f"void {p}_quantize(const float *x_t, int32_t *xq_t)", "{"]
        L += indent(lines_q) if lines_q else ["    (void)x_t;", "    (void)xq_t;"]
        L += ["}", ""]
        # step
        L += [f"void {p}_step_q({p}_state *s, const int32_t *xq_t, int32_t *yq_t)", "{"]
        L += indent(arena_decls(step_arena, False))
        for spec, lay in zip(prog.inputs, in_layout):
            if lay["size"]:
                ct = ctype_of_bits(spec.bits)
                L += indent(
                    [
                        f"for (int i = 0; i < {lay['size']}; ++i)",
                        f"    {step_loc[spec.vec]}[i] = ({ct})xq_t[{lay['offset']} + i];",
                    ]
                )
        if not any(lay["size"] for lay in in_layout):
            L.append("    (void)xq_t;")
        L += indent(step_code)
        touts = [o for o in outputs if o["temporal"]]
        if touts:
            L.append("    if (yq_t) {")
            for o in touts:
                L += indent(
                    [
                        f"for (int i = 0; i < {o['features']}; ++i)",
                        f"    yq_t[{o['offset']} + i] = (int32_t){step_loc[o['vec']]}[i];",
                    ],
                    2,
                )
            L.append("    }")
        else:
            L.append("    (void)yq_t;")
        if not step_code and not any(lay["size"] for lay in in_layout):
            L.append("    (void)s;")
        L += ["}", ""]
        pooled_q, pooled_f = self.pooled_functions(outputs, final_code, final_loc, final_arena, deq_pool)
        L += pooled_q
        # float API
        L += [
            f"void {p}_step({p}_state *s, const float *x_t, float *y_t)",
            "{",
            f"    int32_t xq[{P}_IN_Q_FEATURES + 1], q[{P}_STEP_OUT_FEATURES + 1];",
            f"    {p}_quantize(x_t, xq);",
            f"    {p}_step_q(s, xq, q);",
        ]
        if deq_step:
            L += ["    if (y_t) {", "        float *const y = y_t;"] + indent(deq_step, 2) + ["    }"]
        else:
            L += ["    (void)y_t;"]
        L += ["}", ""]
        L += pooled_f
        L += [
            f"void {p}_run({p}_state *s, const float *x, int T, float *y)",
            "{",
            "    for (int t = 0; t < T; ++t)",
            f"        {p}_step(s, x + (long)t * {P}_IN_FEATURES, y ? y + (long)t * {P}_STEP_OUT_FEATURES : 0);",
            "}",
            "",
        ]
        # state save / load
        for api, wt in (("_q", "int32_t"), ("", "float")):
            save, load = [], []
            for e in state_layout:
                save += [
                    f"for (int i = 0; i < {e['size']}; ++i)",
                    f"    out[{e['offset']} + i] = ({wt})s->{e['field']}[i];",
                ]
                conv = (
                    f"({e['ctype']})in[{e['offset']} + i]"
                    if wt == "int32_t"
                    else f"({e['ctype']})(int32_t)in[{e['offset']} + i]"
                )
                load += [f"for (int i = 0; i < {e['size']}; ++i)", f"    s->{e['field']}[i] = {conv};"]
            L += [f"void {p}_state_save{api}(const {p}_state *s, {wt} *out)", "{"]
            L += indent(save) if save else ["    (void)s;", "    (void)out;"]
            L += [
                "}",
                "",
                f"void {p}_state_load{api}({p}_state *s, const {wt} *in)",
                "{",
                "    memset(s, 0, sizeof *s);",
            ]
            L += indent(load) if load else ["    (void)in;"]
            L += ["}", ""]
        return "\n".join(L)


def generate_int(
    prog: Program,
    in_features: int,
    prefix: str = "esq",
    target: str = "c",
    order: list[str] | None = None,
    window_steps: int | None = None,
) -> CSources:
    """``model.h`` / ``model.c`` for the integer program ``prog`` (``in_features``: float input
    features per step; ``order``: output names in the order of the C output layout, e.g. the
    graph's, default the program's). A window program becomes a whole-window model for windows of
    up to ``window_steps`` steps (default 128; :mod:`.intwindow`). Raises UnsupportedOpError naming
    the micro-op, its node and the target for anything outside the README's micro-op set."""
    return IntCodeGen(prog, in_features, prefix, target, order, window_steps).generate()
