"""Integer matvec kernels of the generated C, one flavour per instruction set.

A ``matvec`` micro-op (``y = bias + W x`` per block, int32 accumulators) is written out as code
specialised to its shapes for every flavour below; one ``model.c`` carries all of them behind
``#if``, and the weight table in the layout of each flavour, of which the compiler keeps one:

=========  =============================  ====================================================
flavour    where                          kernel
=========  =============================  ====================================================
``mve``    Armv8.1-M with MVE (M55)       4 rows per pass share each input vector load;
                                          ``VMLADAVA`` (8 or 16 lanes), tail-predicated
                                          low-overhead loops (``DLSTP`` / ``LETP``) for long
                                          rows, straight-line code for short ones
``dsp``    Armv7E-M DSP (M4, M7)          4 rows per pass share each input word; ``LDM`` loads
                                          the 4 rows' weights at once, ``SMLAD`` does 2 MACs;
                                          int8 weights are stored so one ``SXTB16`` (and one
                                          with ``ROR #8``) yields the pairs matching the int16
                                          input words
``neon``   aarch64 Advanced SIMD          column form: up to 64 rows of int32 accumulators in
                                          registers, ``SMLAL`` by input lane; int8 weights are
                                          stored widened to int16 (NEON has no int8 x int16
                                          multiply; a Linux-class core has the memory)
``c``      everything else                portable loops (row or column form) that compilers
                                          vectorise
=========  =============================  ====================================================

The inputs of a matvec may be the parts of a ``concat`` (the LMU memory update: ``[m | u]`` per
block): each part is read where it lives, with its own columns of the weight table, so the
concatenation is never built. Blocks (``blocks > 1``: the same weights for every block) run in
one kernel, a small matrix product, and on NEON two blocks share every weight load.

The kernels are exact: every product and partial sum fits the int32 accumulator because the
program declares the accumulator width from the worst case (the caller only uses them when the
declared output width is at most 32 bits).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLAVOURS = ("mve", "dsp", "neon")  # the order of the #if chain; anything else is portable C

SIMD_SELECT = r"""/* ---- instruction-set flavour of the integer kernels (one is compiled in) ---- */
#if !defined(ESQ_NO_SIMD) && defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1) && defined(__GNUC__)
#include <arm_mve.h>
#define ESQ_MV_MVE 1
#elif !defined(ESQ_NO_SIMD) && defined(__ARM_FEATURE_DSP) && defined(__GNUC__) && !defined(__ARM_BIG_ENDIAN) \
    && !defined(__aarch64__)
#include <arm_acle.h>
#define ESQ_MV_DSP 1
#elif !defined(ESQ_NO_SIMD) && defined(__aarch64__) && defined(__ARM_NEON) && defined(__GNUC__) \
    && !defined(__ARM_BIG_ENDIAN)
#include <arm_neon.h>
#define ESQ_MV_NEON 1
#endif
#if defined(ESQ_MV_DSP)
/* int8 -> int16 copy of a matvec input for the DSP kernels: a word of 4 values in two SXTB16 */
static inline __attribute__((unused)) void esq_widen8(int16_t *restrict dst, const int8_t *restrict src, int n)
{
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        uint32_t w, e, o;
        memcpy(&w, src + i, 4);
        __asm__("sxtb16 %0, %2\n\tsxtb16 %1, %2, ror #8" : "=&r"(e), "=r"(o) : "r"(w));
        const uint32_t lo = (e & 0xFFFFu) | (o << 16), hi = (o & 0xFFFF0000u) | (e >> 16);
        memcpy(dst + i, &lo, 4);
        memcpy(dst + i + 2, &hi, 4);
    }
    for (; i < n; ++i)
        dst[i] = src[i];
}
#endif
#if defined(ESQ_MV_MVE) || defined(ESQ_MV_DSP) || defined(ESQ_MV_NEON)
#define ESQ_MV_SIMD 1
#else
#define ESQ_MV_SIMD 0
#endif
/* constant tables: 8-byte aligned for word / vector loads; a flavour may leave one unused */
#if defined(__GNUC__)
#define ESQ_TABLE __attribute__((aligned(8), unused))
#define ESQ_ALIGN8 __attribute__((aligned(8)))
#else
#define ESQ_TABLE
#define ESQ_ALIGN8
#endif"""

FLAVOUR_MACRO = {"mve": "ESQ_MV_MVE", "dsp": "ESQ_MV_DSP", "neon": "ESQ_MV_NEON"}


def target_flavour(target: str | None) -> str | None:
    """The flavour a target's compiler selects (from its SIMD capabilities), None when unknown."""
    if not target:
        return None
    try:
        from ...targets import get_target

        simd = get_target(str(target)).caps.simd
    except Exception:  # noqa: BLE001 - an unknown target name: the portable flavour is reported
        return None
    return next((f for f in FLAVOURS if f in simd), "c")


@dataclass(frozen=True)
class Part:
    """One part of a matvec input: ``width`` values per block at ``x + g * stride`` (C pointer
    expression ``x`` of element type ``ctype``), multiplying weight columns ``col0 .. col0 + width``."""

    x: str
    ctype: str
    width: int
    stride: int
    col0: int
    aligned: bool = False  # every block starts on a 4-byte boundary (word / doubleword loads)


@dataclass(frozen=True)
class MatVecCall:
    """``y[g*N + o] = bias[o] + sum_parts W[o, cols] . part(g)`` for g < blocks, int32 ``y``."""

    W: np.ndarray
    parts: tuple[Part, ...]
    blocks: int
    y: str
    bias: str | None  # C table identifier, or None

    @property
    def N(self) -> int:
        return int(self.W.shape[0])

    @property
    def wctype(self) -> str:
        return "int8_t" if self.W.dtype == np.int8 else "int16_t"


def supported(W: np.ndarray, part_ctypes) -> bool:
    """Kernel flavours handle int8 / int16 weights times int8 / int16 inputs."""
    return W.dtype in (np.int8, np.int16) and all(c in ("int8_t", "int16_t") for c in part_ctypes)


def _ceil(n: int, k: int) -> int:
    return -(-n // k) * k


def _bias(call: MatVecCall, o: str, r: int, valid: bool = True) -> str:
    if call.bias is None or not valid:
        return "0"
    return f"(int32_t){call.bias}[{o} + {r}]" if o != "0" else f"(int32_t){call.bias}[{r}]"


# ----------------------------------------------------------------------------------------------
# DSP (Cortex-M4 / M7): 4 rows per pass, LDM of the 4 rows' weight words, SMLAD


def dsp_chunk(call: MatVecCall) -> int:
    return 4 if call.wctype == "int8_t" else 2


def dsp_layout(call: MatVecCall) -> np.ndarray:
    """Row groups of 4 (zero rows pad N); per group and part: the full chunks (4 rows x one
    word: int8 weights as bytes w0 w2 w1 w3, int16 weights as w0 w1), then the tail columns
    row by row, padded to a word."""
    W = call.W
    N, _ = W.shape
    c = dsp_chunk(call)
    per_word = 4 if call.wctype == "int8_t" else 2
    Np = _ceil(N, 4)
    Wp = np.zeros((Np, W.shape[1]), W.dtype)
    Wp[:N] = W
    out = []
    for g in range(0, Np, 4):
        R = Wp[g : g + 4]
        for part in call.parts:
            P = R[:, part.col0 : part.col0 + part.width]
            full = part.width // c
            for k in range(full):
                blk = P[:, k * c : (k + 1) * c]
                if c == 4:
                    blk = blk[:, [0, 2, 1, 3]]
                out.append(blk.reshape(-1))
            tail = P[:, full * c :].reshape(-1)
            out.append(tail)
            pad = _ceil(tail.size, per_word) - tail.size
            if pad:
                out.append(np.zeros(pad, W.dtype))
    return np.concatenate(out) if out else np.zeros(1, W.dtype)


def _dsp_asm(call: MatVecCall, nchunks: int, xp: str, aligned: bool) -> list[str]:
    """Inline assembly for ``nchunks`` full chunks of one part (x int16): straight-line for up
    to 8 chunks, else a loop over 4 (2, 1) chunks per iteration. ``r8``-``r11`` receive the 4
    rows' weight words (one ``LDMIA``); ``SMLAD`` accumulates 2 products per instruction."""
    s8 = call.wctype == "int8_t"
    regs = ("r8", "r9", "r10", "r11")
    straight = nchunks <= 8
    unroll = nchunks if straight else next(u for u in (4, 2, 1) if nchunks % u == 0)
    pair = aligned  # LDRD of two input words (word-aligned input)

    def q(t: str) -> str:
        return f'"{t}\\n\\t"'

    body: list[str] = []
    off = 0  # input byte offset within the unrolled body (straight-line code)

    def ldx(dst: str, nbytes: int) -> None:
        nonlocal off
        if nbytes == 8:
            body.append(
                q("ldrd %[x0], %[x1], [%[xp]], #8") if not straight else q(f"ldrd %[x0], %[x1], [%[xp], #{off}]")
            )
        else:
            body.append(q(f"ldr {dst}, [%[xp]], #4") if not straight else q(f"ldr {dst}, [%[xp], #{off}]"))
        off += nbytes

    k = 0
    while k < unroll:
        if s8:  # 4 columns: x0 = (x0, x1), x1 = (x2, x3); weight bytes w0 w2 w1 w3
            body.append(q("ldmia %[w]!, {r8, r9, r10, r11}"))
            if pair:
                ldx("", 8)
                for r, reg in enumerate(regs):
                    body += [
                        q(f"sxtb16 %[t], {reg}"),
                        q(f"smlad %[a{r}], %[t], %[x0], %[a{r}]"),
                        q(f"sxtb16 {reg}, {reg}, ror #8"),
                        q(f"smlad %[a{r}], {reg}, %[x1], %[a{r}]"),
                    ]
            else:
                ldx("%[x0]", 4)
                for r, reg in enumerate(regs):
                    body += [
                        q(f"sxtb16 %[t], {reg}"),
                        q(f"smlad %[a{r}], %[t], %[x0], %[a{r}]"),
                        q(f"sxtb16 {reg}, {reg}, ror #8"),
                    ]
                ldx("%[x0]", 4)
                body += [q(f"smlad %[a{r}], {reg}, %[x0], %[a{r}]") for r, reg in enumerate(regs)]
            k += 1
        else:  # 2 columns per chunk: one word of each row, one input word
            if pair and k + 1 < unroll:
                ldx("", 8)
                for xr in ("%[x0]", "%[x1]"):
                    body.append(q("ldmia %[w]!, {r8, r9, r10, r11}"))
                    body += [q(f"smlad %[a{r}], {reg}, {xr}, %[a{r}]") for r, reg in enumerate(regs)]
                k += 2
            else:
                body.append(q("ldmia %[w]!, {r8, r9, r10, r11}"))
                ldx("%[x0]", 4)
                body += [q(f"smlad %[a{r}], {reg}, %[x0], %[a{r}]") for r, reg in enumerate(regs)]
                k += 1
    outs = (  # the int16-weight kernel needs no scratch register t (one more for the compiler)
        '[a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [w] "+r"(wp), [x0] "=&r"(x0), '
        '[x1] "=&r"(x1), ' + ('[t] "=&r"(t), ' if s8 else "") + '"=&r"(r8), "=&r"(r9), "=&r"(r10), "=&r"(r11)'
    )
    lines = [
        "{",
        '    register int32_t r8 __asm__("r8"), r9 __asm__("r9"), r10 __asm__("r10"), r11 __asm__("r11");',
        "    int32_t x0, x1" + (", t;" if s8 else ";"),
    ]
    if straight:
        lines += (
            [f"    const int16_t *const xq = {xp};", "    __asm__ volatile("]
            + ["        " + b for b in body]
            + [f"        : {outs}", '        : [xp] "r"(xq)', '        : "memory");']
        )
    else:
        step = 4 if s8 else 2
        lines += (
            [
                f"    const int16_t *xq = {xp}, *const xe = {xp} + {nchunks * step};",
                "    __asm__ volatile(",
                '        "1:\\n\\t"',
            ]
            + ["        " + b for b in body]
            + [
                '        "cmp %[xp], %[xe]\\n\\t"',
                '        "bne 1b\\n\\t"',
                f'        : {outs}, [xp] "+r"(xq)',
                '        : [xe] "r"(xe)',
                '        : "cc", "memory");',
            ]
        )
    lines.append("}")
    return lines


def dsp_matvec(call: MatVecCall, table: str, widened: dict[int, str], epilogue=None) -> list[str]:
    """Code for the DSP flavour. ``widened`` maps a part index to an int16 copy of an int8 part
    (the caller fills it first). ``epilogue(index, acc)`` (fused requantization): the statements
    that consume row ``index``'s accumulator (a C expression) in registers, instead of storing
    it to ``y``."""
    c = dsp_chunk(call)
    per_word = 4 if call.wctype == "int8_t" else 2
    N, G = call.N, call.blocks
    N4 = N - N % 4
    wct = call.wctype

    def group(o: str, rows: int) -> list[str]:
        L = [f"int32_t a{r} = {_bias(call, o, r, r < rows)};" for r in range(4)]
        for k, part in enumerate(call.parts):
            xp = widened.get(k, part.x)
            if G > 1:
                xp = f"({xp} + g * {part.stride})"
            full = part.width // c
            if full:
                L += _dsp_asm(call, full, xp, part.aligned if k not in widened else (G == 1 or part.stride % 2 == 0))
            tail = part.width - full * c
            if tail:
                for r in range(4):
                    terms = " + ".join(f"(int32_t)wp[{r * tail + j}] * {xp}[{full * c + j}]" for j in range(tail))
                    L.append(f"a{r} += {terms};")
                L.append(f"wp += {_ceil(4 * tail, per_word)};")
        L += [f"(void)a{r};" for r in range(rows, 4)]  # the zero rows of a partial group
        if epilogue is None:
            L += [f"yg[{o} + {r}] = a{r};" if o != "0" else f"yg[{r}] = a{r};" for r in range(rows)]
        else:
            g = "g * " + str(N) + " + " if G > 1 else ""
            for r in range(rows):
                L += ["{", *["    " + x for x in epilogue(f"{g}{o} + {r}", f"a{r}")], "}"]
        return L

    body = [f"const {wct} *wp = {table};"]
    if N4:
        body += [f"for (int o = 0; o < {N4}; o += 4) {{", *["    " + x for x in group("o", 4)], "}"]
    if N % 4:
        body += ["{", *["    " + x for x in group(str(N4), N % 4)], "}"]
    yg = [] if epilogue is not None else ["int32_t *const yg = " + call.y + (" + g * " + str(N) if G > 1 else "") + ";"]
    if G == 1:
        return [*yg, *body]
    return [f"for (int g = 0; g < {G}; ++g) {{", *["    " + x for x in yg], *["    " + x for x in body], "}"]


# ----------------------------------------------------------------------------------------------
# MVE (Cortex-M55): 4 rows per pass, VMLADAVA, tail-predicated loops


def mve_lanes(call: MatVecCall) -> int:
    return 16 if call.wctype == "int8_t" and all(p.ctype == "int8_t" for p in call.parts) else 8


MVE_ROWS = 6  # rows per pass: VMLADAVA accumulates into even registers r0 .. r10
MVE_ACC = ("r0", "r2", "r4", "r6", "r8", "r10")


def mve_groups(N: int) -> list[tuple[int, int]]:
    """Row groups (first row, rows): passes of MVE_ROWS rows, the last one shorter."""
    return [(o, min(MVE_ROWS, N - o)) for o in range(0, N, MVE_ROWS)]


def mve_layout(call: MatVecCall) -> np.ndarray:
    """Per row group (:func:`mve_groups`) and part: chunks of ``lanes`` columns, the group's rows
    each (zero columns pad the last chunk)."""
    W = call.W
    L = mve_lanes(call)
    out = []
    for o, n in mve_groups(W.shape[0]):
        for part in call.parts:
            P = np.zeros((n, _ceil(part.width, L)), W.dtype)
            P[:, : part.width] = W[o : o + n, part.col0 : part.col0 + part.width]
            for k in range(0, P.shape[1], L):
                out.append(P[:, k : k + L].reshape(-1))
    return np.concatenate(out) if out else np.zeros(1, W.dtype)


def _mve_loads(call: MatVecCall, part: Part) -> tuple[str, str, int, str]:
    """(x load, weight load, weight bytes per row and chunk, lane suffix)."""
    L = mve_lanes(call)
    if L == 16:
        return "vldrb.s8", "vldrb.s8", 16, "s8"
    xl = "vldrh.s16" if part.ctype == "int16_t" else "vldrb.s16"
    wl = "vldrb.s16" if call.wctype == "int8_t" else "vldrh.s16"
    return xl, wl, 8 if call.wctype == "int8_t" else 16, "s16"


def _mve_asm(call: MatVecCall, part: Part, xp: str, nrows: int) -> list[str]:
    L = mve_lanes(call)
    xl, wl, wstep, sfx = _mve_loads(call, part)
    xbytes = L * (2 if part.ctype == "int16_t" else 1)
    nch = -(-part.width // L)
    rows = []
    for r in range(nrows):
        rows += [f'"{wl} q1, [%[w]], #{wstep}\\n\\t"', f'"vmladava.{sfx} %[a{r}], q1, q0\\n\\t"']
    outs = ", ".join(f'[a{r}] "+r"(a{r})' for r in range(nrows)) + ', [w] "+l"(wp)'
    if nch > 2:  # tail-predicated low-overhead loop over the whole part
        return [
            "{",
            f"    const void *xq = {xp};",
            "    __asm__ volatile(",
            f'        "dlstp.{8 if L == 16 else 16} lr, %[n]\\n\\t"',
            '        "1:\\n\\t"',
            f'        "{xl} q0, [%[xp]], #{xbytes}\\n\\t"',
            *["        " + r for r in rows],
            '        "letp lr, 1b\\n\\t"',
            f'        : {outs}, [xp] "+l"(xq)',
            f'        : [n] "r"({part.width})',
            '        : "cc", "lr", "q0", "q1", "memory");',
            "}",
        ]
    body = []
    for k in range(nch):
        left = part.width - k * L
        if left >= L:
            body.append(f'"{xl} q0, [%[xp], #{k * xbytes}]\\n\\t"')
        else:  # last, partial chunk: predicate the input load (inactive lanes read as zero)
            body += [
                f'"movs %[k], #{left}\\n\\t"',
                f'"vctp.{8 if L == 16 else 16} %[k]\\n\\t"',
                '"vpst\\n\\t"',
                f'"{xl[:5]}t{xl[5:]} q0, [%[xp], #{k * xbytes}]\\n\\t"',
            ]
        body += rows
    return [
        "{",
        f"    const void *const xq = {xp};",
        "    int32_t kk;",
        "    __asm__ volatile(",
        *["        " + b for b in body],
        f'        : {outs}, [k] "=&l"(kk)',
        '        : [xp] "l"(xq)',
        '        : "cc", "q0", "q1", "memory");',
        "}",
    ]


def mve_matvec(call: MatVecCall, table: str) -> list[str]:
    N, G = call.N, call.blocks
    groups = mve_groups(N)
    full = [g for g in groups if g[1] == MVE_ROWS]

    def group(o: str, rows: int) -> list[str]:
        L = [f'register int32_t a{r} __asm__("{MVE_ACC[r]}") = {_bias(call, o, r)};' for r in range(rows)]
        for part in call.parts:
            xp = part.x if G == 1 else f"({part.x} + g * {part.stride})"
            L += _mve_asm(call, part, xp, rows)
        L += [f"yg[{o} + {r}] = a{r};" if o != "0" else f"yg[{r}] = a{r};" for r in range(rows)]
        return L

    body = [f"const {call.wctype} *wp = {table};"]
    if full:
        body += [
            f"for (int o = 0; o < {len(full) * MVE_ROWS}; o += {MVE_ROWS}) {{",
            *["    " + x for x in group("o", MVE_ROWS)],
            "}",
        ]
    if len(full) < len(groups):
        o, n = groups[-1]
        body += ["{", *["    " + x for x in group(str(o), n)], "}"]
    if G == 1:
        return ["int32_t *const yg = " + call.y + ";", *body]
    return [
        f"for (int g = 0; g < {G}; ++g) {{",
        f"    int32_t *const yg = {call.y} + g * {N};",
        *["    " + x for x in body],
        "}",
    ]


# MVE, one block whose input fits one vector: input stationary. The input is loaded once; each
# row is one weight load, one VMLADAV and one store.


def mve_xs_applies(call: MatVecCall) -> bool:
    return call.blocks == 1 and len(call.parts) == 1 and call.parts[0].width <= mve_lanes(call)


def mve_xs_layout(call: MatVecCall) -> np.ndarray:
    """Every row, zero-padded to one vector."""
    L = mve_lanes(call)
    part = call.parts[0]
    out = np.zeros((call.N, L), call.W.dtype)
    out[:, : part.width] = call.W[:, part.col0 : part.col0 + part.width]
    return out.reshape(-1)


def mve_xs_matvec(call: MatVecCall, table: str) -> list[str]:
    L = mve_lanes(call)
    part = call.parts[0]
    xs = 2 if part.ctype == "int16_t" else 1
    xl = ("vldrb.s8" if L == 16 else "vldrb.s16") if xs == 1 else "vldrh.s16"
    wsize = 1 if call.wctype == "int8_t" else 2
    wl = ("vldrb.s8" if L == 16 else "vldrb.s16") if wsize == 1 else "vldrh.s16"
    sfx = "s8" if L == 16 else "s16"

    def q(t: str) -> str:
        return f'"{t}\\n\\t"'

    body = []
    if part.width < L:
        body += [
            q(f"movs %[t], #{part.width}"),
            q(f"vctp.{8 if L == 16 else 16} %[t]"),
            q("vpst"),
            q(f"{xl[:5]}t{xl[5:]} q0, [%[x]]"),
        ]
    else:
        body.append(q(f"{xl} q0, [%[x]]"))
    body += [q("dls lr, %[n]"), q("1:"), q(f"{wl} q1, [%[w]], #{L * wsize}"), q(f"vmladav.{sfx} %[a], q1, q0")]
    if call.bias is not None:
        body += [q("ldr %[t], [%[b]], #4"), q("add %[a], %[a], %[t]")]
    body += [q("str %[a], [%[y]], #4"), q("le lr, 1b")]
    lines = [
        "{",
        '    register int32_t a __asm__("r4");',
        "    int32_t t;",
        f"    const {call.wctype} *wp = {table};",
        f"    int32_t *yq = {call.y};",
    ]
    ins = [f'[x] "l"({part.x})', f'[n] "r"({call.N})']
    outs = ['[a] "=&r"(a)', '[t] "=&l"(t)', '[w] "+l"(wp)', '[y] "+r"(yq)']
    if call.bias is not None:
        lines.append("    const int32_t *bq = bias32;")
        outs.append('[b] "+r"(bq)')
    lines += [
        "    __asm__ volatile(",
        *["        " + b for b in body],
        f"        : {', '.join(outs)}",
        f"        : {', '.join(ins)}",
        '        : "cc", "lr", "q0", "q1", "memory");',
        "}",
    ]
    return lines


# MVE, blocks > 1 with short rows: weights stationary. The weights of R rows stay in vector
# registers while the loop runs over the blocks (a small matrix product: every weight is loaded
# once per step, every block's input once per R rows). A part of width 1 (the LMU's input column)
# goes through the DSP multiply-accumulates (SMLABB / SMLATB) with two rows' weights in one word.


def _mve_ws_parts(call: MatVecCall) -> tuple[list[int], list[int]] | None:
    """(vector part indices, scalar part indices) when the weights-stationary kernel applies."""
    if call.blocks < 2:
        return None
    L = mve_lanes(call)
    vec, sca = [], []
    for k, p in enumerate(call.parts):
        if p.width == 1 and call.wctype == "int16_t" and p.ctype == "int16_t":
            sca.append(k)
        else:
            vec.append(k)
    C = sum(-(-call.parts[k].width // L) for k in vec)
    if C == 0 or C > 2:
        return None
    return vec, sca


def mve_ws_rows(call: MatVecCall) -> int:
    L = mve_lanes(call)
    vec, _ = _mve_ws_parts(call)
    C = sum(-(-call.parts[k].width // L) for k in vec)
    return min(4, (8 - C) // C)


def mve_ws_layout(call: MatVecCall) -> np.ndarray:
    """Row groups of R (zero rows pad N): R x C weight vectors (zero columns pad each part to whole
    chunks), then per width-1 part one int16 pair of rows (r0, r1), (r2, r3) per word."""
    W = call.W
    vec, sca = _mve_ws_parts(call)
    L, R = mve_lanes(call), mve_ws_rows(call)
    N = W.shape[0]
    Np = _ceil(N, R)
    Wp = np.zeros((Np, W.shape[1]), W.dtype)
    Wp[:N] = W
    out = []
    for g in range(0, Np, R):
        for r in range(R):
            for k in vec:
                part = call.parts[k]
                row = np.zeros(_ceil(part.width, L), W.dtype)
                row[: part.width] = Wp[g + r, part.col0 : part.col0 + part.width]
                out.append(row)
        for k in sca:
            col = np.zeros(_ceil(R, 2), W.dtype)
            col[:R] = Wp[g : g + R, call.parts[k].col0]
            out.append(col)
    return np.concatenate(out)


def mve_ws_matvec(call: MatVecCall, table: str) -> list[str]:
    vec, sca = _mve_ws_parts(call)
    L, R = mve_lanes(call), mve_ws_rows(call)
    N, G = call.N, call.blocks
    wsize = 1 if call.wctype == "int8_t" else 2
    chunks = [(k, c) for k in vec for c in range(-(-call.parts[k].width // L))]
    C = len(chunks)
    wl = ("vldrb.s8" if L == 16 else "vldrb.s16") if wsize == 1 else "vldrh.s16"
    sfx = "s8" if L == 16 else "s16"
    group_bytes = R * C * L * wsize + 4 * len(sca) * (-(-R // 2))

    def q(t: str) -> str:
        return f'"{t}\\n\\t"'

    def group(o: str, rows: int) -> list[str]:
        body = []
        for r in range(R):  # the weights: q[C + r*C + c]
            for j in range(C):
                body.append(q(f"{wl} q{C + r * C + j}, [%[w], #{(r * C + j) * L * wsize}]"))
        soff = R * C * L * wsize
        for si in range(len(sca)):
            for pr in range(-(-R // 2)):
                body.append(q(f"ldr %[s{si}_{pr}], [%[w], #{soff}]"))
                soff += 4
        body += [q("dls lr, %[n]"), q("1:")]
        for k in vec:  # this block's input chunks: q[j]; the part pointer moves to the next block
            part = call.parts[k]
            xs = 2 if part.ctype == "int16_t" else 1
            xl = ("vldrb.s8" if L == 16 else "vldrb.s16") if xs == 1 else "vldrh.s16"
            mine = [j for j, (kk, _) in enumerate(chunks) if kk == k]
            for j in reversed(mine):
                c = chunks[j][1]
                left = part.width - c * L
                last = j == mine[0]
                addr = f"[%[x{k}]], #{part.stride * xs}" if last else f"[%[x{k}], #{c * L * xs}]"
                if left >= L:
                    body.append(q(f"{xl} q{j}, {addr}"))
                else:
                    body += [
                        q(f"movs %[t], #{left}"),
                        q(f"vctp.{8 if L == 16 else 16} %[t]"),
                        q("vpst"),
                        q(f"{xl[:5]}t{xl[5:]} q{j}, {addr}"),
                    ]
        for r in range(R):
            for j in range(C):
                op = "vmladava" if (j > 0 or call.bias is not None) else "vmladav"
                body.append(q(f"{op}.{sfx} %[a{r}], q{C + r * C + j}, q{j}"))
        for si, k in enumerate(sca):
            body.append(q(f"ldrsh %[t], [%[x{k}]], #{call.parts[k].stride * 2}"))
            for r in range(R):
                body.append(q(f"smla{'bb' if r % 2 == 0 else 'tb'} %[a{r}], %[s{si}_{r // 2}], %[t], %[a{r}]"))
        body += [q(f"str %[a{r}], [%[y], #{4 * r}]") for r in range(rows)]
        body += [q(f"add %[y], %[y], #{4 * N}"), q("le lr, 1b")]
        regs = ("r4", "r6", "r8", "r10")
        L_ = [f'register int32_t a{r} __asm__("{regs[r]}");' for r in range(R)]
        if call.bias is not None:  # the bias is reloaded into the accumulators for every block
            body_b = []
            for r in range(R):
                body_b.append(q(f"ldr %[a{r}], [%[b], #{4 * r}]"))
            i = body.index(q("1:")) + 1
            body[i:i] = body_b
        L_ += [f"int32_t *yq = yg + {o};", "int32_t t;"]
        L_ += [f"int32_t s{si}_{pr};" for si in range(len(sca)) for pr in range(-(-R // 2))]
        L_ += [
            f"const {'int16_t' if call.parts[k].ctype == 'int16_t' else 'int8_t'} *x{k} = {call.parts[k].x};"
            for k in (*vec, *sca)
        ]
        outs = [f'[a{r}] "=&r"(a{r})' for r in range(R)] + ['[y] "+r"(yq)', '[t] "=&l"(t)']
        outs += [f'[s{si}_{pr}] "=&r"(s{si}_{pr})' for si in range(len(sca)) for pr in range(-(-R // 2))]
        outs += [f'[x{k}] "+l"(x{k})' for k in (*vec, *sca)]  # widening loads take low base registers
        ins = ['[w] "l"(wp)', f'[n] "r"({G})']
        if call.bias is not None:
            L_.append(f"const int32_t *bq = bias32 + {o};")
            ins.append('[b] "r"(bq)')
        clob = ", ".join(f'"q{j}"' for j in range(C + R * C))
        L_ += [
            "__asm__ volatile(",
            *["    " + b for b in body],
            f"    : {', '.join(outs)}",
            f"    : {', '.join(ins)}",
            f'    : "cc", "lr", {clob}, "memory");',
            f"wp += {group_bytes // wsize};",
        ]
        return L_

    Rn = N - N % R
    body = [f"const {call.wctype} *wp = {table};", f"int32_t *const yg = {call.y};"]
    if Rn:
        body += [f"for (int o = 0; o < {Rn}; o += {R}) {{", *["    " + x for x in group("o", R)], "}"]
    if N % R:
        body += ["{", *["    " + x for x in group(str(Rn), N % R)], "}"]
    return body


def mve_ws_bias(call: MatVecCall, bias_values: np.ndarray) -> np.ndarray:
    """The bias as int32, padded to whole row groups (loaded into the accumulators)."""
    out = np.zeros(_ceil(call.N, mve_ws_rows(call)), np.int64)
    out[: call.N] = bias_values
    return out.astype(np.int32)


# ----------------------------------------------------------------------------------------------
# NEON (aarch64): column form, up to 64 rows of accumulators, SMLAL by lane, int16 weights


def neon_blocking(call: MatVecCall) -> tuple[list[tuple[int, int]], int]:
    """Row blocks [(first row, rows)] (multiples of 8 rows, at most 64) and the number of blocks
    ``gb`` (1 or 2) that share each weight load."""
    Np = _ceil(call.N, 8)
    rb = []
    for o in range(0, Np, 64):
        rb.append((o, min(64, Np - o)))
    gb = 2 if call.blocks % 2 == 0 and Np <= 32 else 1
    return rb, gb


def neon_layout(call: MatVecCall) -> np.ndarray:
    """int16; per row block and part: every column's rows (zero rows pad N to a multiple of 8)."""
    W = call.W.astype(np.int16)
    N = W.shape[0]
    rb, _ = neon_blocking(call)
    Wp = np.zeros((_ceil(N, 8), W.shape[1]), np.int16)
    Wp[:N] = W
    out = []
    for o, n in rb:
        for part in call.parts:
            out.append(Wp[o : o + n, part.col0 : part.col0 + part.width].T.reshape(-1))
    return np.concatenate(out) if out else np.zeros(1, np.int16)


def neon_matvec(call: MatVecCall, table: str) -> list[str]:
    rb, gb = neon_blocking(call)
    N, G = call.N, call.blocks
    L: list[str] = ["const int16_t *wp = " + table + ";"] if G == 1 else []
    inner: list[str] = []
    for o, n in rb:
        na = n // 4
        nw = n // 8
        acc = [[f"c{b}_{k}" for k in range(na)] for b in range(gb)]
        blk = []
        for b in range(gb):
            for k in range(na):
                rows = [o + 4 * k + j for j in range(4)]
                if call.bias is not None and all(r < N for r in rows):
                    blk.append(
                        f"int32x4_t {acc[b][k]} = vmovl_s16(vld1_s16(bias16 + {o + 4 * k}));"
                        if False
                        else f"int32x4_t {acc[b][k]} = vld1q_s32(bias32 + {o + 4 * k});"
                    )
                elif call.bias is not None and any(r < N for r in rows):
                    blk.append(f"int32x4_t {acc[b][k]} = vld1q_s32(bias32 + {o + 4 * k});")
                else:
                    blk.append(f"int32x4_t {acc[b][k]} = vdupq_n_s32(0);")
        for part in call.parts:
            xs = [part.x if G == 1 else f"({part.x} + (g + {b}) * {part.stride})" for b in range(gb)]
            full = part.width - part.width % 8

            def column(lanes_src: list[str], lane: str | None) -> list[str]:
                c = [f"const int16x8_t w{j} = vld1q_s16(wp + {8 * j});" for j in range(nw)]
                for b in range(gb):
                    for j in range(nw):
                        lo, hi = acc[b][2 * j], acc[b][2 * j + 1]
                        if lane is None:
                            c.append(f"{lo} = vmlal_s16({lo}, vget_low_s16(w{j}), vget_low_s16({lanes_src[b]}));")
                            c.append(f"{hi} = vmlal_high_s16({hi}, w{j}, {lanes_src[b]});")
                        else:
                            c.append(f"{lo} = vmlal_laneq_s16({lo}, vget_low_s16(w{j}), {lanes_src[b]}, {lane});")
                            c.append(f"{hi} = vmlal_high_laneq_s16({hi}, w{j}, {lanes_src[b]}, {lane});")
                c.append(f"wp += {n};")
                return ["{", *["    " + x for x in c], "}"]

            if full:
                blk.append(f"for (int i = 0; i < {full}; i += 8) {{")
                for b in range(gb):
                    ld = f"vld1q_s16({xs[b]} + i)" if part.ctype == "int16_t" else f"vmovl_s8(vld1_s8({xs[b]} + i))"
                    blk.append(f"    const int16x8_t xv{b} = {ld};")
                for lane in range(8):
                    blk += ["    " + x for x in column([f"xv{b}" for b in range(gb)], str(lane))]
                blk.append("}")
            for i in range(full, part.width):
                blk.append("{")
                for b in range(gb):
                    blk.append(f"    const int16x8_t xd{b} = vdupq_n_s16((int16_t){xs[b]}[{i}]);")
                blk += ["    " + x for x in column([f"xd{b}" for b in range(gb)], None)]
                blk.append("}")
        for b in range(gb):
            ybase = "yg" if b == 0 else f"(yg + {N})"
            for k in range(na):
                r0 = o + 4 * k
                if r0 + 4 <= N:
                    blk.append(f"vst1q_s32({ybase} + {r0}, {acc[b][k]});")
                elif r0 < N:
                    blk.append("{")
                    blk.append(f"    int32_t t[4]; vst1q_s32(t, {acc[b][k]});")
                    blk += [f"    {ybase}[{r}] = t[{r - r0}];" for r in range(r0, N)]
                    blk.append("}")
        inner += ["{", *["    " + x for x in blk], "}"]
    if G == 1:
        return L + ["int32_t *const yg = " + call.y + ";", *inner]
    return [
        f"for (int g = 0; g < {G}; g += {gb}) {{",
        f"    const int16_t *wp = {table};",
        f"    int32_t *const yg = {call.y} + g * {N};",
        *["    " + x for x in inner],
        "}",
    ]


def neon_bias(call: MatVecCall, bias_values: np.ndarray) -> np.ndarray:
    """The bias as an int32 table padded to the row blocks (NEON loads 4 at a time)."""
    out = np.zeros(_ceil(call.N, 8), np.int64)
    out[: call.N] = bias_values
    return out.astype(np.int32)


# ----------------------------------------------------------------------------------------------
# 4-lane int32 vectors for the elementwise loops (MVE and NEON behind one set of names)

V4_API = r"""/* ---- esq_v4: 4 lanes of int32 for the elementwise loops (MVE or NEON) ---- */
#if defined(ESQ_MV_MVE)
#define ESQ_V4 1
typedef int32x4_t esq_v4;
ESQ_INLINE esq_v4 esq_v4_dup(int32_t v) { return vdupq_n_s32(v); }
ESQ_INLINE esq_v4 esq_v4_ld8(const int8_t *p) { return vldrbq_s32(p); }
ESQ_INLINE esq_v4 esq_v4_ld16(const int16_t *p) { return vldrhq_s32(p); }
ESQ_INLINE esq_v4 esq_v4_ld32(const int32_t *p) { return vldrwq_s32(p); }
#define esq_v4_ldc esq_v4_ld8 /* small constant tables are int8 (the load widens them) */
ESQ_INLINE void esq_v4_st8(int8_t *p, esq_v4 v) { vstrbq_s32(p, v); }
ESQ_INLINE void esq_v4_st16(int16_t *p, esq_v4 v) { vstrhq_s32(p, v); }
ESQ_INLINE void esq_v4_st32(int32_t *p, esq_v4 v) { vstrwq_s32(p, v); }
ESQ_INLINE esq_v4 esq_v4_gather8(const int8_t *t, esq_v4 j) { return vldrbq_gather_offset_s32(t, vreinterpretq_u32_s32(j)); }
ESQ_INLINE esq_v4 esq_v4_gather16(const int16_t *t, esq_v4 j)
{
    return vldrhq_gather_shifted_offset_s32(t, vreinterpretq_u32_s32(j));
}
ESQ_INLINE esq_v4 esq_v4_ge(esq_v4 a, esq_v4 b) { return vpselq_s32(vdupq_n_s32(1), vdupq_n_s32(0), vcmpgeq_s32(a, b)); }
ESQ_INLINE esq_v4 esq_v4_sel(esq_v4 c, esq_v4 a, esq_v4 b)
{
    return vpselq_s32(a, b, vcmpneq_s32(c, vdupq_n_s32(0))); /* (the _n form crashes gcc 12) */
}
#define esq_v4_add vaddq_s32
#define esq_v4_sub vsubq_s32
#define esq_v4_mul vmulq_s32
#define esq_v4_min vminq_s32
#define esq_v4_max vmaxq_s32
#define esq_v4_shl vshlq_s32
#define esq_v4_rshl vrshlq_s32
#define esq_v4_qdmulh vqdmulhq_s32
#define esq_v4_and vandq_s32
#define esq_v4_shr_n(v, n) vshrq_n_s32((v), (n))
#define esq_v4_shl_n(v, n) vshlq_n_s32((v), (n))
#define esq_v4_rshr_n(v, n) vrshrq_n_s32((v), (n))
#elif defined(ESQ_MV_NEON)
#define ESQ_V4 1
typedef int32x4_t esq_v4;
ESQ_INLINE esq_v4 esq_v4_dup(int32_t v) { return vdupq_n_s32(v); }
ESQ_INLINE esq_v4 esq_v4_ld8(const int8_t *p)
{
    int32_t w;
    memcpy(&w, p, 4);
    return vmovl_s16(vget_low_s16(vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(w)))));
}
ESQ_INLINE esq_v4 esq_v4_ld16(const int16_t *p) { return vmovl_s16(vld1_s16(p)); }
ESQ_INLINE esq_v4 esq_v4_ld32(const int32_t *p) { return vld1q_s32(p); }
#define esq_v4_ldc esq_v4_ld32 /* small constant tables are int32 (no widening load) */
ESQ_INLINE void esq_v4_st8(int8_t *p, esq_v4 v)
{
    const int16x4_t h = vmovn_s32(v);
    const int32_t w = vget_lane_s32(vreinterpret_s32_s8(vmovn_s16(vcombine_s16(h, h))), 0);
    memcpy(p, &w, 4);
}
ESQ_INLINE void esq_v4_st16(int16_t *p, esq_v4 v) { vst1_s16(p, vmovn_s32(v)); }
ESQ_INLINE void esq_v4_st32(int32_t *p, esq_v4 v) { vst1q_s32(p, v); }
ESQ_INLINE esq_v4 esq_v4_gather8(const int8_t *t, esq_v4 j)
{
    int32_t r[4] = {t[vgetq_lane_s32(j, 0)], t[vgetq_lane_s32(j, 1)], t[vgetq_lane_s32(j, 2)], t[vgetq_lane_s32(j, 3)]};
    return vld1q_s32(r);
}
ESQ_INLINE esq_v4 esq_v4_gather16(const int16_t *t, esq_v4 j)
{
    int32_t r[4] = {t[vgetq_lane_s32(j, 0)], t[vgetq_lane_s32(j, 1)], t[vgetq_lane_s32(j, 2)], t[vgetq_lane_s32(j, 3)]};
    return vld1q_s32(r);
}
ESQ_INLINE esq_v4 esq_v4_ge(esq_v4 a, esq_v4 b) { return vreinterpretq_s32_u32(vshrq_n_u32(vcgeq_s32(a, b), 31)); }
ESQ_INLINE esq_v4 esq_v4_sel(esq_v4 c, esq_v4 a, esq_v4 b) { return vbslq_s32(vtstq_s32(c, c), a, b); }
#define esq_v4_add vaddq_s32
#define esq_v4_sub vsubq_s32
#define esq_v4_mul vmulq_s32
#define esq_v4_min vminq_s32
#define esq_v4_max vmaxq_s32
#define esq_v4_shl vshlq_s32
#define esq_v4_rshl vrshlq_s32
#define esq_v4_qdmulh vqdmulhq_s32
#define esq_v4_and vandq_s32
#define esq_v4_shr_n(v, n) vshrq_n_s32((v), (n))
#define esq_v4_shl_n(v, n) vshlq_n_s32((v), (n))
#define esq_v4_rshr_n(v, n) vrshrq_n_s32((v), (n))
#endif"""


# ----------------------------------------------------------------------------------------------
# requantization in 32-bit arithmetic


@dataclass(frozen=True)
class RequantPlan:
    """``sat((x * M + 2^(s-1)) >> s)`` without 64-bit arithmetic, per channel c:

        xs = x * 2^d[c]                                   (exact: |x| < 2^(31 - d))
        y  = (hi32(xs * M[c]) + 2^(k[c]-1)) >> k[c]       k = s + d - 32 >= 1

    where hi32(p) = floor(p / 2^32) (one ``SMMUL``; with the rounding constant as accumulator one
    ``SMMLA``). Exact: adding an integer to hi32 commutes with the floor, so y equals
    floor((x M 2^d + 2^(s+d-1)) / 2^(s+d)). The vector form uses ``VQDMULH`` / ``SQDMULH``,
    floor(xs M / 2^31), and a rounding shift by k + 1 (``VRSHL`` / ``SRSHL``): the same argument.
    """

    d: np.ndarray
    k: np.ndarray


def requant_plan(shift: np.ndarray, xmax: int) -> RequantPlan | None:
    """The plan for shifts ``shift`` and inputs |x| <= ``xmax`` (None: 64-bit arithmetic needed)."""
    s = np.asarray(shift, np.int64).reshape(-1)
    d = np.maximum(0, 33 - s)
    if int(d.max()) > 30 or xmax >= 1 << (31 - int(d.max())):
        return None
    return RequantPlan(d, s + d - 32)


# ----------------------------------------------------------------------------------------------
# kernel descriptions (for reports and the kernel benchmark)


def describe(call: MatVecCall) -> dict:
    kinds = sorted({p.ctype for p in call.parts})
    w = "s8" if call.wctype == "int8_t" else "s16"
    x = "s16" if "int16_t" in kinds else "s8"
    return {
        "kind": f"{w}{x}",
        "rows": call.N,
        "cols": int(sum(p.width for p in call.parts)),
        "blocks": call.blocks,
        "parts": len(call.parts),
    }


# ----------------------------------------------------------------------------------------------
# integer C types and the helper functions at the top of every integer model.c

CTYPES = {8: "int8_t", 16: "int16_t", 32: "int32_t", 64: "int64_t"}


def ctype_of_bits(bits: int) -> str:
    from ...quant.program import container_bits

    return CTYPES[container_bits(bits)]


PRELUDE = r"""
/* ---- helpers: the README's integer semantics, portable C99 ---- */

/* helpers a model does not use are no warning (Clang warns about unused static functions) */
#if defined(__GNUC__)
#define ESQ_INLINE static inline __attribute__((unused))
#else
#define ESQ_INLINE static inline
#endif

/* Arithmetic (flooring) right shift. C leaves >> of negative values implementation-defined; GCC
 * and Clang document it as arithmetic, elsewhere the portable form (same result) is used. */
#if defined(__GNUC__) && !defined(ESQ_PORTABLE_SHIFT)
ESQ_INLINE int32_t esq_asr32(int32_t v, int s) { return v >> s; }
ESQ_INLINE int64_t esq_asr64(int64_t v, int s) { return v >> s; }
#else
ESQ_INLINE int32_t esq_asr32(int32_t v, int s) { return v >= 0 ? v >> s : ~(~v >> s); }
ESQ_INLINE int64_t esq_asr64(int64_t v, int s) { return v >= 0 ? v >> s : ~(~v >> s); }
#endif

ESQ_INLINE int64_t esq_sat64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* requant to at most 32 bits: sat((x * m + 2^(s-1)) >> s) for |x| < 2^31, m in [0, 2^31), s in [1, 62],
 * as ((x * m) >> (s - 1) + 1) >> 1 (the same floor); for s > 32 only the product's high word
 * matters (|x * m| < 2^62), so 32-bit cores need no 64-bit shift. */
ESQ_INLINE int32_t esq_rq32(int32_t x, int32_t m, int s, int32_t lo, int32_t hi)
{
    const int64_t p = (int64_t)x * m;
    if (s > 32) {
        const int32_t v = esq_asr32(esq_asr32((int32_t)esq_asr64(p, 32), s - 33) + 1, 1);
        return v < lo ? lo : (v > hi ? hi : v);
    }
    const int64_t v = esq_asr64(esq_asr64(p, s - 1) + 1, 1);
    return v < lo ? lo : (v > hi ? hi : (int32_t)v);
}

/* hi32(a * b) + acc: the high word of the 64-bit product plus acc (SMMLA on Arm DSP cores) */
#if defined(__ARM_FEATURE_DSP) && defined(__GNUC__) && !defined(__aarch64__)
#include <arm_acle.h>
ESQ_INLINE int32_t esq_smmla(int32_t a, int32_t b, int32_t acc)
{
    int32_t r;
    __asm__("smmla %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
    return r;
}
#if defined(__clang__) /* Clang forms SSAT from the comparisons itself and keeps the value's range */
#define ESQ_SAT(v, bits, lo, hi) ((v) < (lo) ? (lo) : ((v) > (hi) ? (hi) : (v)))
#else
#define ESQ_SAT(v, bits, lo, hi) __ssat((v), (bits))
#endif
#else
ESQ_INLINE int32_t esq_smmla(int32_t a, int32_t b, int32_t acc)
{
    return (int32_t)esq_asr64((int64_t)a * b, 32) + acc;
}
#define ESQ_SAT(v, bits, lo, hi) ((v) < (lo) ? (lo) : ((v) > (hi) ? (hi) : (v)))
#endif

/* div: floor((2a + b) / (2b)) for b > 0 (a / b rounded half up); C's / truncates. b <= 0 gives 0. */
ESQ_INLINE int32_t esq_div32(int32_t a, int32_t b)
{
    if (b <= 0)
        return 0;
    const int32_t n = 2 * a + b, d = 2 * b;
    const int32_t q = n / d;
    return (n % d < 0) ? q - 1 : q;
}

ESQ_INLINE int64_t esq_div64(int64_t a, int64_t b)
{
    if (b <= 0)
        return 0;
    const int64_t n = 2 * a + b, d = 2 * b;
    const int64_t q = n / d;
    return (n % d < 0) ? q - 1 : q;
}

/* isqrt: floor(sqrt(x)) for x >= 0 (bit by bit, exact); negative gives 0. */
ESQ_INLINE int64_t esq_isqrt64(int64_t v)
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

ESQ_INLINE int32_t esq_isqrt32(int32_t v)
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

/* Input quantization: clamp(rint(t), lo, hi) for the float32 t, rint rounding half to even,
 * independent of the FPU rounding mode and of libm: one conversion instruction where the FPU
 * has one that rounds half to even by itself (aarch64 FCVTNS, Armv8-M VCVTN), else exactly in
 * float32 arithmetic (t - trunc(t) is exact). */
#if defined(__GNUC__) && defined(__aarch64__)
ESQ_INLINE int32_t esq_rintn(float t)
{
    int32_t i;
    __asm__("fcvtns %w0, %s1" : "=r"(i) : "w"(t));
    return i;
}
#define ESQ_RINTN(t) esq_rintn(t)
#elif defined(__GNUC__) && defined(__ARM_ARCH) && __ARM_ARCH >= 8 && defined(__ARM_ARCH_PROFILE) \
    && __ARM_ARCH_PROFILE == 'M' && defined(__ARM_FP) && (__ARM_FP & 4)
ESQ_INLINE int32_t esq_rintn(float t)
{
    float r;
    int32_t i;
    __asm__("vcvtn.s32.f32 %0, %1" : "=t"(r) : "t"(t));
    memcpy(&i, &r, 4);
    return i;
}
#define ESQ_RINTN(t) esq_rintn(t)
#endif

ESQ_INLINE int32_t esq_qroundf(float t, int32_t lo, int32_t hi)
{
    if (!(t > (float)lo))
        return lo;
    if (t >= (float)hi)
        return hi;
#if defined(ESQ_RINTN)
    return ESQ_RINTN(t);
#else
    int32_t i = (int32_t)t;
    const float fr = t - (float)i;
    if (fr > 0.5f || (fr == 0.5f && (i & 1)))
        ++i;
    else if (fr < -0.5f || (fr == -0.5f && (i & 1)))
        --i;
    return i;
#endif
}
"""
