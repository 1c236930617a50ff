"""Integer program -> self-contained C99 (``model.h`` / ``model.c``), bit-exact against
:func:`edgeseq.quant.intexact.run`.

The semantics implemented here are exactly those of ``edgeseq/quant/README.md``: every vector in its
declared storage type (int8/16/32/64), each op computed in a type wide enough for its declared
result, products and requantization in 64 bits where the README says so, ``>>`` as an arithmetic
(flooring) shift, ``div`` as floor division, the two ``lut`` rules, saturation only in ``requant`` /
``lut`` / ``clamp``, and the float boundaries (input quantization in IEEE double with round half to
even, output ``q * scale``) without libm.

Code shape: one loop nest per micro-op, except that a run of consecutive elementwise micro-ops of
one width is fused into a single loop whose intermediate values are scalars (no memory), and dead
micro-ops are dropped. ``matvec`` runs over contiguous int8 / int16 rows with int32 (or int64)
accumulators; on Arm M-profile cores the compiler selects SIMD kernels (DSP ``SMLAD`` on
Cortex-M4 / M7, MVE ``VMLADAVA`` on Cortex-M55) behind ``#if``, every other compiler the portable
loops next to them (column form over a transposed table where rows are short or odd), so one
``model.c`` builds everywhere. Requantization uses exact rewrites that avoid 64-bit shifts on
32-bit cores (see ``esq_rq32``).

Memory: the program's states are fields of the caller-owned ``esq_state`` struct; every per-step
vector that must live in memory gets a fixed offset in one arena per storage type inside that
struct (a first-fit plan over live ranges, :mod:`edgeseq.export.c.plan`), a fused loop may write
its outputs over operands it reads for the last time, and a ``load`` reads the state field itself
when no ``store`` to that state can intervene. The ``final`` program (readouts and what follows
them) runs on a stack arena inside ``esq_pooled_q``. Constants are ``static const`` tables (flash
on a microcontroller). Nothing is allocated at run time and no buffer grows with the sequence length.

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

from typing import Any

import numpy as np

from ...errors import ConfigError, NumericsError, UnsupportedOpError
from ...quant.program import (Add, Clamp, CmpGe, Concat, Div, Gather, Isqrt, Load, Lut, MatVec, Mul, Program, Requant,
                              Select, Store, Sub, container_bits, int_range)
from .codegen import CSources
from .cwriter import c_ident, c_int, check_prefix, indent, int_table
from .plan import CTYPE_BYTES, CTYPE_SUFFIX, ArenaSet

CTYPES = {8: "int8_t", 16: "int16_t", 32: "int32_t", 64: "int64_t"}
# (weight C type, input C type) -> SIMD matvec kernel (int32 accumulators; see simd_prelude)
SIMD_KERNELS = {("int8_t", "int8_t"): "esq_mv_s8s8", ("int8_t", "int16_t"): "esq_mv_s8s16",
                ("int16_t", "int16_t"): "esq_mv_s16s16"}
DTYPE_CTYPES = {"int8": "int8_t", "int16": "int16_t", "int32": "int32_t", "int64": "int64_t"}
SUPPORTED = (MatVec, Requant, Add, Sub, Mul, Div, Isqrt, Lut, Clamp, CmpGe, Select, Concat, Gather, Load, Store)
# y[i] depends on operand element i only: the output may overwrite an operand it is the last reader of
ELEMENTWISE = (Requant, Add, Sub, Mul, Div, Isqrt, Lut, Clamp, CmpGe, Select)


def supported_micro_ops() -> list[str]:
    return sorted(c.kind for c in SUPPORTED)


def supported_kinds() -> set[str]:
    """IR op kinds a quantized graph may contain for this backend: those the quantizer lowers to
    an integer program, when every micro-op it can emit has a C lowering here."""
    from ...quant.lower import supported_kinds as quantizable
    from ...quant.program import MICRO_OPS

    return set(quantizable()) if set(MICRO_OPS) <= set(supported_micro_ops()) else set()


def ctype_of_bits(bits: int) -> str:
    return CTYPES[container_bits(bits)]


def c_double(v: float, where: str | None = None) -> str:
    """An exact C99 double literal (hexadecimal floating constant)."""
    f = float(v)
    if not np.isfinite(f):
        raise NumericsError(f"boundary constant {v!r} is not finite", where=where)
    return f.hex()


def _double_table(name: str, values, comment: str, where: str) -> str:
    vals = [c_double(v, where) for v in np.ravel(np.asarray(values, np.float64))]
    lines = [f"/* {comment} */", f"static const double {name}[{len(vals)}] = {{"]
    for i in range(0, len(vals), 4):
        lines.append("    " + ", ".join(vals[i:i + 4]) + ",")
    lines.append("};")
    return "\n".join(lines)


class IntCodeGen:
    def __init__(self, prog: Program, in_features: int, prefix: str = "esq", target: str = "c",
                 order: list[str] | None = None):
        self.p = prog
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
        self.const_bytes = 0
        try:
            self.iv = prog.intervals()
        except Exception:  # noqa: BLE001 - only used to narrow a few compute types
            self.iv = {}
        self.fields: dict[str, str] = {}  # state key -> struct field
        self.kernels: set[str] = set()  # SIMD matvec kernels the code calls
        self.loc: dict[str, str] = {}  # vector -> C pointer expression in the current phase
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
                        hint="supported micro-ops: " + ", ".join(supported_micro_ops()))
        for s in p.inputs:
            if s.bits > 32:
                raise UnsupportedOpError(f"input vector '{s.vec}' is int{s.bits}; the C API takes inputs of at "
                                         "most 32 bits", where=f"target {self.target}")
            if len(s.channels) and (int(np.min(s.channels)) < 0 or int(np.max(s.channels)) >= self.in_features):
                raise ConfigError(f"input '{s.vec}' reads channels outside the {self.in_features} input features")
        for k, s in p.states.items():
            if s.bits > 32:
                raise UnsupportedOpError(f"state '{k}' is int{s.bits}; the C state API holds at most 32 bits per "
                                         "value", where=f"target {self.target}")
        for o in p.outputs:
            if p.vectors[o.vec].bits > 32:
                raise UnsupportedOpError(f"output '{o.name}' is int{p.vectors[o.vec].bits}; the C API returns at "
                                         "most 32-bit outputs", where=f"target {self.target}")
        for name, a in p.consts.items():
            if a.dtype.name not in DTYPE_CTYPES:
                raise UnsupportedOpError(f"constant '{name}' has dtype {a.dtype}; expected int8/16/32/64",
                                         where=f"target {self.target}")

    # -- names, constants, operands ---------------------------------------------------------------
    def _unique(self, base: str) -> str:
        name, i = base, 1
        while name in self._idents:
            name = f"{base}_{i}"
            i += 1
        self._idents.add(name)
        return name

    def table(self, name: str, simd_rows: bool = False) -> str:
        """The flash table holding constant ``name`` (emitted once, on first use). With
        ``simd_rows`` (a 2-D matvec weight) the table is the transpose for the portable column
        loops and row-major where the SIMD kernels are compiled in; only one is ever built."""
        key = (name, "simd-rows") if simd_rows else name
        if key not in self.tables:
            a = self.p.consts[name]
            ctype = DTYPE_CTYPES[a.dtype.name]
            ident = self._unique("K_" + c_ident(name.replace("k:", "")))
            shape = "x".join(map(str, a.shape)) or "scalar"
            comment = f"{name} ({a.dtype.name}, {shape})"
            where = f"constant '{name}'"
            if simd_rows:
                self.table_text.append("\n".join([
                    "#if ESQ_MV_SIMD", int_table(ident, a.reshape(-1), ctype, comment + ", row-major", where=where),
                    "#else", int_table(ident, a.T.reshape(-1), ctype, comment + ", transposed", where=where),
                    "#endif"]))
            else:
                self.table_text.append(int_table(ident, a.reshape(-1), ctype, comment, where=where))
            self.const_bytes += int(a.size) * CTYPE_BYTES[ctype]
            self.tables[key] = ident
        return self.tables[key]

    def _table_transposed(self, name: str) -> str:
        """A transposed-only table (portable column loops, no SIMD kernel for this weight)."""
        key = (name, "transposed")
        if key not in self.tables:
            a = self.p.consts[name]
            ctype = DTYPE_CTYPES[a.dtype.name]
            ident = self._unique("K_" + c_ident(name.replace("k:", "")))
            self.table_text.append(int_table(ident, a.T.reshape(-1), ctype,
                                             f"{name} ({a.dtype.name}, {a.shape[0]}x{a.shape[1]}), transposed",
                                             where=f"constant '{name}'"))
            self.const_bytes += int(a.size) * CTYPE_BYTES[ctype]
            self.tables[key] = ident
        return self.tables[key]

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
            if (isinstance(op, ELEMENTWISE) and out and isinstance(ops[out[-1][-1]], ELEMENTWISE)
                    and self.p.vectors[ops[out[-1][-1]].out].n == n):
                out[-1].append(idx)
            else:
                out.append([idx])
        return out

    def phase(self, section: str, ops, arenas: ArenaSet, pre_placed: list[str], keep: set[str]) -> list[str]:
        p = self.p
        order = self.live_ops(ops, keep)
        units = self.units(ops, order)
        unit_of = {idx: u for u, grp in enumerate(units) for idx in grp}
        last: dict[str, int] = {}  # vector -> op index of its last reader (alias decisions)
        ulast: dict[str, int] = {}  # vector -> unit index of its last reader (buffer lifetimes)
        for idx in order:
            for r in ops[idx].reads():
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
                if (r in owned and p.vectors[r].n == p.vectors[v].n and self.ctype(r) == self.ctype(v)):
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
        code: list[str] = []
        for u, grp in enumerate(units):
            first = ops[grp[0]]
            heads = []
            for idx in grp:
                op = ops[idx]
                text = op.describe() + (f"  [node {op.node}]" if op.node else "")
                heads.append("/* #%d %s */" % (idx, text.replace("*/", "* /").replace("/*", "/ *")))
            reads = [r for idx in grp for r in ops[idx].reads() if r in p.vectors]
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
            else:
                alloc(first.out)
                body = self.emit(first, self.where(section, grp[0], first))
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

    def _can_alias(self, ops, idx: int, op: Load, last: dict[str, int]) -> bool:
        """A load may read the state field itself when no store to that state (of another value)
        happens before its last reader, and the storage types agree."""
        if self.ctype(op.out) != ctype_of_bits(self.p.states[op.state].bits):
            return False
        end = last.get(op.out, idx)
        for later in ops[idx + 1:end + 1]:
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
        output may share the block of an operand)."""
        n = self.p.vectors[ops[grp[0]].out].n
        body: list[str] = []
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
        for idx in grp:
            self.tmp.pop(ops[idx].out, None)
        return self._loop(n, body)

    def emit_matvec(self, op: MatVec, where: str) -> list[str]:
        y, yt, n = self._y(op)
        W = self.p.consts[op.w]
        if W.ndim != 2:
            raise UnsupportedOpError("matvec weight must be 2-D", where=where)
        N, I = W.shape
        G = op.blocks
        wct = self.ctype(op.w)
        acc = "int64_t" if self.ctype(op.out) == "int64_t" else "int32_t"
        xbase = self.table(op.x) if self.is_const(op.x) else self.loc[op.x]
        xct = self.ctype(op.x)
        bias = f"({acc}){self.table(op.bias)}[o]" if op.bias else "0"
        kern = SIMD_KERNELS.get((wct, xct))
        use_simd = kern is not None and acc == "int32_t" and yt == "int32_t" and I >= 4
        cols = self.column_form(N, I)
        if cols and acc == yt:
            # y (the accumulator type itself) is updated column by column from the transposed table
            wt = self.table(op.w, simd_rows=use_simd) if use_simd else self._table_transposed(op.w)
            inner = [f"for (int o = 0; o < {N}; ++o)", f"    yg[o] = {bias};",
                     f"for (int i = 0; i < {I}; ++i) {{",
                     f"    const {acc} xi = ({acc})xg[i];",
                     f"    const {wct} *restrict wc = {wt} + i * {N};",
                     f"    for (int o = 0; o < {N}; ++o)",
                     f"        yg[o] += ({acc})wc[o] * xi;",
                     "}"]
        else:
            if use_simd and cols:
                use_simd = False  # keep one (row-major) table for both paths
            wt = self.table(op.w)
            inner = [
                f"for (int o = 0; o < {N}; ++o) {{",
                f"    const {wct} *restrict wr = {wt} + o * {I};",
                f"    {acc} acc = {bias};",
                f"    for (int i = 0; i < {I}; ++i)",
                f"        acc += ({acc})wr[i] * ({acc})xg[i];",
                f"    yg[o] = ({yt})acc;",
                "}",
            ]
        if G == 1:
            generic = [f"const {xct} *restrict xg = {xbase};", f"{yt} *restrict yg = {y};", *inner]
        else:
            generic = [f"for (int g = 0; g < {G}; ++g) {{",
                       f"    const {xct} *restrict xg = {xbase} + g * {I};",
                       f"    {yt} *restrict yg = {y} + g * {N};",
                       *indent(inner), "}"]
        if not use_simd:
            return generic
        self.kernels.add(kern)
        if G > 1:
            simd = [f"for (int g = 0; g < {G}; ++g) {{", f"    {kern}({y} + g * {N}, {wt}, {xbase} + g * {I}, {N}, {I});"]
            if op.bias:
                simd += [f"    for (int o = 0; o < {N}; ++o)",
                         f"        {y}[g * {N} + o] += (int32_t){self.table(op.bias)}[o];"]
            simd.append("}")
        else:
            simd = [f"{kern}({y}, {wt}, {xbase}, {N}, {I});"]
            if op.bias:
                simd += [f"for (int o = 0; o < {N}; ++o)", f"    {y}[o] += (int32_t){self.table(op.bias)}[o];"]
        return ["#if ESQ_MV_SIMD", *simd, "#else", *generic, "#endif"]

    # elementwise ops: statements computing element i into the scalar ``t`` (type ``yt``)
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
                body.append(f"{t} = ({yt})(v < {c_int(lo)} ? {c_int(lo)} : (v > {c_int(hi)} ? {c_int(hi)} : v));")
        elif bits <= 32:
            m, sh = self.rd(op.mult, "i"), self.rd(op.shift, "i")
            body.append(f"{t} = ({yt})esq_rq32({xv}, (int32_t){m}, (int){sh}, {c_int(lo)}, {c_int(hi)});")
        else:
            m, sh = self.rd(op.mult, "i"), self.rd(op.shift, "i")
            body.append(f"const int64_t v = esq_asr64((int64_t){xv} * (int64_t){m} + ((int64_t)1 << ((int){sh} - 1)), (int){sh});")
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
            interp = (f"{t} = ({yt})((int64_t)base + esq_asr64(((int64_t){tab}[j + 1] - (int64_t)base) * f "
                      f"+ {1 << (sh - 1)}, {sh}));")
        else:
            interp = f"{t} = ({yt})(base + esq_asr32(((int32_t){tab}[j + 1] - base) * f + {1 << (sh - 1)}, {sh}));"
        return ["{", f"    const int32_t u = (int32_t){x} + 32768;",
                f"    const int32_t j = u >> {sh}, f = u & {(1 << sh) - 1};",
                f"    const {bt} base = {tab}[j];", f"    {interp}", "}"]

    def elem_clamp(self, op: Clamp, where: str, t: str, yt: str) -> list[str]:
        ct = self.compute_type(op.out, op.x, op.lo, op.hi)
        return ["{", f"    const {ct} v = ({ct}){self.rd(op.x, 'i')};",
                f"    const {ct} lo = ({ct}){self.rd(op.lo, 'i')}, hi = ({ct}){self.rd(op.hi, 'i')};",
                f"    {t} = ({yt})(v < lo ? lo : (v > hi ? hi : v));", "}"]

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
                lines += [f"for (int g = 0; g < {G}; ++g)", f"    for (int i = 0; i < {m}; ++i)",
                          f"        {y}[g * {row} + {off} + i] = ({yt}){self.rd(x, f'g * {m} + i')};"]
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
    def generate(self) -> CSources:
        p, pre, P = self.p, self.prefix, self.P
        for key in p.states:
            self.fields[key] = self._unique("st_" + c_ident(key.replace("/", "__")))
        # input layout: the program's input parts, concatenated in order
        in_layout, off = [], 0
        for s in p.inputs:
            in_layout.append({"vec": s.vec, "offset": off, "size": len(s.channels), "bits": s.bits,
                              "channels": [int(c) for c in s.channels]})
            off += len(s.channels)
        in_q = off
        temporal = [o for o in self.out_specs if o.temporal]
        pooled = [o for o in self.out_specs if not o.temporal]
        step_arena = ArenaSet("w")
        step_code = self.phase("step", p.step, step_arena, [s.vec for s in p.inputs], {o.vec for o in temporal})
        step_loc = dict(self.loc)
        final_arena = ArenaSet("pw")
        final_code = self.phase("final", p.final, final_arena, [], {o.vec for o in pooled})
        final_loc = dict(self.loc)

        outputs, s_off, p_off = [], 0, 0
        for o in self.out_specs:
            n = p.vectors[o.vec].n
            sc = np.ravel(np.asarray(o.scale, np.float64))
            if sc.size not in (1, n):
                raise ConfigError(f"output '{o.name}' has {sc.size} scales for {n} values")
            ent = {"name": o.name, "temporal": bool(o.temporal), "features": n, "offset": s_off if o.temporal else p_off,
                   "vec": o.vec, "bits": p.vectors[o.vec].bits,
                   "scale": float(sc[0]) if np.all(sc == sc[0]) else [float(v) for v in sc],
                   "scales": [float(v) for v in sc]}
            outputs.append(ent)
            if o.temporal:
                s_off += n
            else:
                p_off += n
        state_layout, z = [], 0
        for key, st in p.states.items():
            state_layout.append({"key": key, "field": self.fields[key], "shape": list(st.shape), "offset": z,
                                 "size": st.n, "bits": st.bits, "ctype": ctype_of_bits(st.bits)})
            z += st.n

        # struct members, widest element first: no padding inside, so the size is predictable
        members = [(ctype_of_bits(st.bits), self.fields[k], st.n, f'state "{k}" {tuple(st.shape)}, int{st.bits}')
                   for k, st in p.states.items()]
        members += [(a.ctype, f"scratch{CTYPE_SUFFIX[a.ctype]}", a.high_water, "per-step vectors (static plan)")
                    for a in step_arena.used()]
        members.sort(key=lambda m: -CTYPE_BYTES[m[0]])
        if not members:
            members = [("int32_t", "unused_", 1, "no state")]
        struct_bytes = sum(CTYPE_BYTES[c] * n for c, _, n, _ in members)
        align = max(CTYPE_BYTES[c] for c, _, _, _ in members)
        struct_bytes = -(-struct_bytes // align) * align
        state_bytes = sum(CTYPE_BYTES[ctype_of_bits(st.bits)] * st.n for st in p.states.values())
        scratch_bytes = sum(a.nbytes for a in step_arena.used())
        final_bytes = sum(a.nbytes for a in final_arena.used())

        src = self._source(in_layout, in_q, outputs, state_layout, step_code, step_loc, final_code, final_loc,
                           step_arena, final_arena, s_off, p_off, z)
        header = self._header(members, in_q, outputs, s_off, p_off, z, struct_bytes)
        info: dict[str, Any] = {
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
            "weights_bytes": self.const_bytes,
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

    def _header(self, members, in_q, outputs, s_out, p_out, z, struct_bytes) -> str:
        p, P = self.prefix, self.P
        outs = "\n".join(f" *   {o['name']}: {'per step' if o['temporal'] else 'pooled'}, {o['features']} values at "
                         f"offset {o['offset']} (int{o['bits']}; float = q * scale)" for o in outputs)
        fields = "\n".join(f"    {c} {name}[{max(1, n)}];  /* {note} */" for c, name, n, note in members)
        return f"""/* Generated by edgeseq from an integer program: streaming C99 inference, bit-exact against
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
#define {P}_IN_FEATURES {self.in_features}
#define {P}_IN_Q_FEATURES {in_q}
#define {P}_STEP_OUT_FEATURES {s_out}
#define {P}_POOLED_OUT_FEATURES {p_out}
#define {P}_STATE_FLOATS {z}
#define {P}_STATE_WORDS {z}
#define {P}_STRUCT_BYTES {struct_bytes}

typedef struct {p}_state {{
{fields}
}} {p}_state;

/* Start a new sequence: zero every state. */
void {p}_reset({p}_state *s);
/* Input boundary: {P}_IN_FEATURES floats -> {P}_IN_Q_FEATURES integers (IEEE double, round half to even, saturate). */
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
void {p}_state_load({p}_state *s, const float *in);

#ifdef __cplusplus
}}
#endif

#endif /* {P}_MODEL_H */
"""

    def _source(self, in_layout, in_q, outputs, state_layout, step_code, step_loc, final_code, final_loc,
                step_arena, final_arena, s_out, p_out, z) -> str:
        p, P, prog = self.prefix, self.P, self.p
        where = f"target {self.target}"
        lines_q: list[str] = []  # quantizer tables + body
        qtabs: list[str] = []
        for k, (spec, lay) in enumerate(zip(prog.inputs, in_layout)):
            nk = lay["size"]
            if nk == 0:
                continue
            lo, hi = int_range(spec.bits)
            off_t = _double_table(f"QOFF{k}", spec.offset, f"input '{spec.vec}': offset (double)", where)
            inv_t = _double_table(f"QINV{k}", spec.inv_scale, f"input '{spec.vec}': 1 / scale (double)", where)
            ch_t = int_table(f"QCH{k}", np.asarray(spec.channels), "int16_t", f"input '{spec.vec}': channels")
            qtabs += [off_t, inv_t, ch_t]
            lines_q += [f"for (int k = 0; k < {nk}; ++k)",
                        f"    xq_t[{lay['offset']} + k] = esq_qround(((double)x_t[QCH{k}[k]] - QOFF{k}[k]) * QINV{k}[k], "
                        f"{c_int(lo)}, {c_int(hi)});"]
        deq_tabs: list[str] = []
        deq_step: list[str] = []
        deq_pool: list[str] = []
        for j, o in enumerate(outputs):
            name = f"OSCALE{j}"
            deq_tabs.append(_double_table(name, o["scales"], f"output '{o['name']}': scale (double)", where))
            idx = "0" if len(o["scales"]) == 1 else "i"
            line = [f"for (int i = 0; i < {o['features']}; ++i)",
                    f"    y[{o['offset']} + i] = (float)((double)q[{o['offset']} + i] * {name}[{idx}]);"]
            (deq_step if o["temporal"] else deq_pool).extend(line)

        def arena_decls(arenas: ArenaSet, on_stack: bool) -> list[str]:
            out = []
            for a in arenas.used():
                if on_stack:
                    out.append(f"{a.ctype} {a.name}[{a.high_water}];")
                else:
                    out.append(f"{a.ctype} *const {a.name} = s->scratch{CTYPE_SUFFIX[a.ctype]};")
            return out

        L = ["/* Generated by edgeseq from an integer program: C99, static memory only, no libm. */",
             '#include "model.h"', "#include <string.h>", "", _PRELUDE.strip("\n"), "", simd_prelude(self.kernels), "",
             "/* ---- constants (read-only: flash on a microcontroller) ---- */"]
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
                L += indent([f"for (int i = 0; i < {lay['size']}; ++i)",
                             f"    {step_loc[spec.vec]}[i] = ({ct})xq_t[{lay['offset']} + i];"])
        if not any(lay["size"] for lay in in_layout):
            L.append("    (void)xq_t;")
        L += indent(step_code)
        touts = [o for o in outputs if o["temporal"]]
        if touts:
            L.append("    if (yq_t) {")
            for o in touts:
                L += indent([f"for (int i = 0; i < {o['features']}; ++i)",
                             f"    yq_t[{o['offset']} + i] = (int32_t){step_loc[o['vec']]}[i];"], 2)
            L.append("    }")
        else:
            L.append("    (void)yq_t;")
        if not step_code and not any(lay["size"] for lay in in_layout):
            L.append("    (void)s;")
        L += ["}", ""]
        # pooled
        L += [f"void {p}_pooled_q(const {p}_state *s, int32_t *yq)", "{"]
        L += indent(arena_decls(final_arena, True))
        L += indent(final_code)
        pouts = [o for o in outputs if not o["temporal"]]
        for o in pouts:
            L += indent([f"for (int i = 0; i < {o['features']}; ++i)",
                         f"    yq[{o['offset']} + i] = (int32_t){final_loc[o['vec']]}[i];"])
        if not pouts:
            L.append("    (void)yq;")
        if not final_code:
            L.append("    (void)s;")
        L += ["}", ""]
        # float API
        L += [f"void {p}_step({p}_state *s, const float *x_t, float *y_t)", "{",
              f"    int32_t xq[{P}_IN_Q_FEATURES + 1], q[{P}_STEP_OUT_FEATURES + 1];",
              f"    {p}_quantize(x_t, xq);", f"    {p}_step_q(s, xq, q);"]
        if deq_step:
            L += ["    if (y_t) {", "        float *const y = y_t;"] + indent(deq_step, 2) + ["    }"]
        else:
            L += ["    (void)y_t;"]
        L += ["}", ""]
        L += [f"void {p}_pooled(const {p}_state *s, float *y)", "{",
              f"    int32_t q[{P}_POOLED_OUT_FEATURES + 1];", f"    {p}_pooled_q(s, q);"]
        L += indent(deq_pool) if deq_pool else ["    (void)y;"]
        L += ["}", ""]
        L += [f"void {p}_run({p}_state *s, const float *x, int T, float *y)", "{",
              "    for (int t = 0; t < T; ++t)",
              f"        {p}_step(s, x + (long)t * {P}_IN_FEATURES, y ? y + (long)t * {P}_STEP_OUT_FEATURES : 0);",
              "}", ""]
        # state save / load
        for api, wt in (("_q", "int32_t"), ("", "float")):
            save, load = [], []
            for e in state_layout:
                save += [f"for (int i = 0; i < {e['size']}; ++i)",
                         f"    out[{e['offset']} + i] = ({wt})s->{e['field']}[i];"]
                conv = f"({e['ctype']})in[{e['offset']} + i]" if wt == "int32_t" else \
                    f"({e['ctype']})(int32_t)in[{e['offset']} + i]"
                load += [f"for (int i = 0; i < {e['size']}; ++i)", f"    s->{e['field']}[i] = {conv};"]
            L += [f"void {p}_state_save{api}(const {p}_state *s, {wt} *out)", "{"]
            L += indent(save) if save else ["    (void)s;", "    (void)out;"]
            L += ["}", "", f"void {p}_state_load{api}({p}_state *s, const {wt} *in)", "{",
                  "    memset(s, 0, sizeof *s);"]
            L += indent(load) if load else ["    (void)in;"]
            L += ["}", ""]
        return "\n".join(L)


def generate_int(prog: Program, in_features: int, prefix: str = "esq", target: str = "c",
                 order: list[str] | None = None) -> CSources:
    """``model.h`` / ``model.c`` for the integer program ``prog`` (``in_features``: float input
    features per step; ``order``: output names in the order of the C output layout, e.g. the
    graph's, default the program's). Raises UnsupportedOpError naming the micro-op, its node and
    the target for anything outside the README's micro-op set."""
    return IntCodeGen(prog, in_features, prefix, target, order).generate()


_PRELUDE = r"""
/* ---- helpers: the README's integer semantics, portable C99 ---- */

/* Arithmetic (flooring) right shift. C leaves >> of negative values implementation-defined; GCC
 * and Clang document it as arithmetic, elsewhere the portable form (same result) is used. */
#if defined(__GNUC__) && !defined(ESQ_PORTABLE_SHIFT)
static inline int32_t esq_asr32(int32_t v, int s) { return v >> s; }
static inline int64_t esq_asr64(int64_t v, int s) { return v >> s; }
#else
static inline int32_t esq_asr32(int32_t v, int s) { return v >= 0 ? v >> s : ~(~v >> s); }
static inline int64_t esq_asr64(int64_t v, int s) { return v >= 0 ? v >> s : ~(~v >> s); }
#endif

static inline int64_t esq_sat64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* requant to at most 32 bits: sat((x * m + 2^(s-1)) >> s) for |x| < 2^31, m in [0, 2^31), s in [1, 62],
 * as ((x * m) >> (s - 1) + 1) >> 1 (the same floor); for s > 32 only the product's high word
 * matters (|x * m| < 2^62), so 32-bit cores need no 64-bit shift. */
static inline int32_t esq_rq32(int32_t x, int32_t m, int s, int32_t lo, int32_t hi)
{
    const int64_t p = (int64_t)x * m;
    if (s > 32) {
        const int32_t v = esq_asr32(esq_asr32((int32_t)esq_asr64(p, 32), s - 33) + 1, 1);
        return v < lo ? lo : (v > hi ? hi : v);
    }
    const int64_t v = esq_asr64(esq_asr64(p, s - 1) + 1, 1);
    return v < lo ? lo : (v > hi ? hi : (int32_t)v);
}

/* div: floor((2a + b) / (2b)) for b > 0 (a / b rounded half up); C's / truncates. b <= 0 gives 0. */
static inline int32_t esq_div32(int32_t a, int32_t b)
{
    if (b <= 0)
        return 0;
    const int32_t n = 2 * a + b, d = 2 * b;
    const int32_t q = n / d;
    return (n % d < 0) ? q - 1 : q;
}

static inline int64_t esq_div64(int64_t a, int64_t b)
{
    if (b <= 0)
        return 0;
    const int64_t n = 2 * a + b, d = 2 * b;
    const int64_t q = n / d;
    return (n % d < 0) ? q - 1 : q;
}

/* isqrt: floor(sqrt(x)) for x >= 0 (bit by bit, exact); negative gives 0. */
static inline int64_t esq_isqrt64(int64_t v)
{
    if (v <= 0)
        return 0;
    uint64_t x = (uint64_t)v, r = 0, bit = (uint64_t)1 << 62;
    while (bit > x)
        bit >>= 2;
    while (bit) {
        if (x >= r + bit) {
            x -= r + bit;
            r = (r >> 1) + bit;
        } else {
            r >>= 1;
        }
        bit >>= 2;
    }
    return (int64_t)r;
}

static inline int32_t esq_isqrt32(int32_t v)
{
    if (v <= 0)
        return 0;
    uint32_t x = (uint32_t)v, r = 0, bit = (uint32_t)1 << 30;
    while (bit > x)
        bit >>= 2;
    while (bit) {
        if (x >= r + bit) {
            x -= r + bit;
            r = (r >> 1) + bit;
        } else {
            r >>= 1;
        }
        bit >>= 2;
    }
    return (int32_t)r;
}

/* Input quantization: clamp(rint(t), lo, hi) with rint rounding half to even, independent of the
 * FPU rounding mode and of libm (|t| < 2^31 after the clamp, so the truncation is exact). */
static inline int32_t esq_qround(double t, int32_t lo, int32_t hi)
{
    if (!(t > (double)lo))
        return lo;
    if (t >= (double)hi)
        return hi;
    int32_t i = (int32_t)t;
    const double fr = t - (double)i;
    if (fr > 0.5 || (fr == 0.5 && i % 2 != 0))
        ++i;
    else if (fr < -0.5 || (fr == -0.5 && i % 2 != 0))
        --i;
    return i;
}
"""


def simd_prelude(kernels: set[str]) -> str:
    """Matvec kernels for Arm M-profile SIMD, used only where the compiler targets it (MVE on
    Armv8.1-M such as Cortex-M55; the DSP extension's SMLAD on Cortex-M4 / M7 / M33); every other
    compiler takes the portable loops next to each call. Define ESQ_NO_SIMD to force those.
    Each kernel computes y = W x (int32 accumulators: exact, the program's declared widths bound
    every partial sum); the caller adds the bias."""
    lines = ["/* ---- matvec kernels: y[o] = sum_i W[o][i] x[i] (W row-major N x I) ---- */",
             "#if !defined(ESQ_NO_SIMD) && defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)",
             "#include <arm_mve.h>", "#define ESQ_MV_SIMD 1", "#define ESQ_MV_MVE 1",
             "#elif !defined(ESQ_NO_SIMD) && defined(__ARM_FEATURE_DSP) && defined(__GNUC__) && !defined(__ARM_BIG_ENDIAN)",
             "#include <arm_acle.h>", "#define ESQ_MV_SIMD 1", "#define ESQ_MV_DSP 1",
             "#else", "#define ESQ_MV_SIMD 0", "#endif",
             "/* kernels stay out of line: small code, and no constant-size loop analysis on them */",
             "#if defined(__clang__)", "#define ESQ_KERNEL static __attribute__((noinline))",
             "#else", "#define ESQ_KERNEL static __attribute__((noinline, noclone))", "#endif"]
    if not kernels:
        return "\n".join(lines)
    lines += ["", "#if defined(ESQ_MV_MVE)", _MVE_COMMON]
    lines += [_MVE[k] for k in sorted(kernels)]
    lines += ["#elif defined(ESQ_MV_DSP)", _DSP_COMMON]
    lines += [_DSP[k] for k in sorted(kernels)]
    lines += ["#endif"]
    return "\n".join(x.strip("\n") for x in lines)


_MVE_COMMON = "/* MVE: tail-predicated vector multiply-accumulate-across (VMLADAVA), 8 or 16 lanes */"

_MVE = {
    "esq_mv_s8s8": r"""
ESQ_KERNEL void esq_mv_s8s8(int32_t *restrict y, const int8_t *restrict W, const int8_t *restrict x, int N, int I)
{
    for (int o = 0; o < N; ++o) {
        const int8_t *w = W + o * I;
        int32_t acc = 0;
        const int n16 = I & ~15;
        int i = 0;
        for (; i < n16; i += 16)
            acc = vmladavaq_s8(acc, vldrbq_s8(w + i), vldrbq_s8(x + i));
        if (i < I) {
            const mve_pred16_t p = vctp8q((uint32_t)(I - i));
            acc = vmladavaq_p_s8(acc, vldrbq_z_s8(w + i, p), vldrbq_z_s8(x + i, p), p);
        }
        y[o] = acc;
    }
}
""",
    "esq_mv_s8s16": r"""
ESQ_KERNEL void esq_mv_s8s16(int32_t *restrict y, const int8_t *restrict W, const int16_t *restrict x, int N, int I)
{
    for (int o = 0; o < N; ++o) {
        const int8_t *w = W + o * I;
        int32_t acc = 0;
        const int n8 = I & ~7;
        int i = 0;
        for (; i < n8; i += 8)
            acc = vmladavaq_s16(acc, vldrbq_s16(w + i), vldrhq_s16(x + i));
        if (i < I) {
            const mve_pred16_t p = vctp16q((uint32_t)(I - i));
            acc = vmladavaq_p_s16(acc, vldrbq_z_s16(w + i, p), vldrhq_z_s16(x + i, p), p);
        }
        y[o] = acc;
    }
}
""",
    "esq_mv_s16s16": r"""
ESQ_KERNEL void esq_mv_s16s16(int32_t *restrict y, const int16_t *restrict W, const int16_t *restrict x, int N, int I)
{
    for (int o = 0; o < N; ++o) {
        const int16_t *w = W + o * I;
        int32_t acc = 0;
        const int n8 = I & ~7;
        int i = 0;
        for (; i < n8; i += 8)
            acc = vmladavaq_s16(acc, vldrhq_s16(w + i), vldrhq_s16(x + i));
        if (i < I) {
            const mve_pred16_t p = vctp16q((uint32_t)(I - i));
            acc = vmladavaq_p_s16(acc, vldrhq_z_s16(w + i, p), vldrhq_z_s16(x + i, p), p);
        }
        y[o] = acc;
    }
}
""",
}

_DSP_COMMON = r"""
/* DSP extension: SMLAD (two 16 x 16 multiply-accumulates), SXTB16 / PKH to form 16-bit pairs */
static inline int32_t esq_ld32(const void *p) { int32_t v; memcpy(&v, p, 4); return v; }
static inline int32_t esq_sxtb16_r8(int32_t v) { int32_t r; __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v)); return r; }
/* (a.lo, b.lo) and (a.hi, b.hi) as 16-bit pairs */
static inline int32_t esq_pk_lo(int32_t a, int32_t b) { int32_t r; __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(a), "r"(b)); return r; }
static inline int32_t esq_pk_hi(int32_t a, int32_t b) { int32_t r; __asm__("pkhtb %0, %2, %1, asr #16" : "=r"(r) : "r"(a), "r"(b)); return r; }
"""

_DSP = {
    "esq_mv_s8s8": r"""
ESQ_KERNEL void esq_mv_s8s8(int32_t *restrict y, const int8_t *restrict W, const int8_t *restrict x, int N, int I)
{
    int o = 0;
    for (; o + 2 <= N; o += 2) {
        const int8_t *w0 = W + o * I, *w1 = w0 + I;
        int32_t a0 = 0, a1 = 0;
        const int n4 = I & ~3;
        for (int i = 0; i < n4; i += 4) {
            const int32_t xv = esq_ld32(x + i), xa = __sxtb16(xv), xb = esq_sxtb16_r8(xv);
            const int32_t v0 = esq_ld32(w0 + i), v1 = esq_ld32(w1 + i);
            a0 = __smlad(__sxtb16(v0), xa, a0);
            a0 = __smlad(esq_sxtb16_r8(v0), xb, a0);
            a1 = __smlad(__sxtb16(v1), xa, a1);
            a1 = __smlad(esq_sxtb16_r8(v1), xb, a1);
        }
        for (int i = n4; i < I; ++i) {
            a0 += (int32_t)w0[i] * x[i];
            a1 += (int32_t)w1[i] * x[i];
        }
        y[o] = a0;
        y[o + 1] = a1;
    }
    for (; o < N; ++o) {
        const int8_t *w0 = W + o * I;
        int32_t a0 = 0;
        for (int i = 0; i < I; ++i)
            a0 += (int32_t)w0[i] * x[i];
        y[o] = a0;
    }
}
""",
    "esq_mv_s8s16": r"""
ESQ_KERNEL void esq_mv_s8s16(int32_t *restrict y, const int8_t *restrict W, const int16_t *restrict x, int N, int I)
{
    int o = 0;
    for (; o + 2 <= N; o += 2) {
        const int8_t *w0 = W + o * I, *w1 = w0 + I;
        int32_t a0 = 0, a1 = 0;
        const int n4 = I & ~3;
        for (int i = 0; i < n4; i += 4) {
            const int32_t x01 = esq_ld32(x + i), x23 = esq_ld32(x + i + 2);
            const int32_t xa = esq_pk_lo(x01, x23), xb = esq_pk_hi(x01, x23); /* (x0, x2), (x1, x3) */
            const int32_t v0 = esq_ld32(w0 + i), v1 = esq_ld32(w1 + i);
            a0 = __smlad(__sxtb16(v0), xa, a0);
            a0 = __smlad(esq_sxtb16_r8(v0), xb, a0);
            a1 = __smlad(__sxtb16(v1), xa, a1);
            a1 = __smlad(esq_sxtb16_r8(v1), xb, a1);
        }
        for (int i = n4; i < I; ++i) {
            a0 += (int32_t)w0[i] * x[i];
            a1 += (int32_t)w1[i] * x[i];
        }
        y[o] = a0;
        y[o + 1] = a1;
    }
    for (; o < N; ++o) {
        const int8_t *w0 = W + o * I;
        int32_t a0 = 0;
        for (int i = 0; i < I; ++i)
            a0 += (int32_t)w0[i] * x[i];
        y[o] = a0;
    }
}
""",
    "esq_mv_s16s16": r"""
ESQ_KERNEL void esq_mv_s16s16(int32_t *restrict y, const int16_t *restrict W, const int16_t *restrict x, int N, int I)
{
    int o = 0;
    for (; o + 2 <= N; o += 2) {
        const int16_t *w0 = W + o * I, *w1 = w0 + I;
        int32_t a0 = 0, a1 = 0;
        const int n4 = I & ~3;
        for (int i = 0; i < n4; i += 4) {
            const int32_t xa = esq_ld32(x + i), xb = esq_ld32(x + i + 2);
            a0 = __smlad(esq_ld32(w0 + i), xa, a0);
            a0 = __smlad(esq_ld32(w0 + i + 2), xb, a0);
            a1 = __smlad(esq_ld32(w1 + i), xa, a1);
            a1 = __smlad(esq_ld32(w1 + i + 2), xb, a1);
        }
        for (int i = n4; i < I; ++i) {
            a0 += (int32_t)w0[i] * x[i];
            a1 += (int32_t)w1[i] * x[i];
        }
        y[o] = a0;
        y[o + 1] = a1;
    }
    for (; o < N; ++o) {
        const int16_t *w0 = W + o * I;
        int32_t a0 = 0;
        for (int i = 0; i < I; ++i)
            a0 += (int32_t)w0[i] * x[i];
        y[o] = a0;
    }
}
""",
}
