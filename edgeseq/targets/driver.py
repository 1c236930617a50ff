"""The generated driver (``main.c``) and the binary file formats it reads and writes.

One build runs any number of inputs: the driver reads sequences from a file, runs each through the
generated model's streaming API (``reset`` then steps), and writes every output. On a host it uses
stdio; on Cortex-M firmware the same code goes through ARM semihosting.

Input file (little-endian): ``uint32 magic 'ESQX', B, T, F`` then B*T*F float32 (batch-first).
Output file: ``uint32 magic 'ESQY', B, T, S, P, Z`` then per sequence T*S per-step floats, P pooled
floats and Z canonical state floats (Z = 0 unless ``state`` was asked for), then a trailer
``uint32 'ESQT', repeat, uint64 ns`` with the nanoseconds spent inside model calls (0 without a clock).

Command line: ``MODE INPUT OUTPUT [state] [repeat=N]`` with MODE one of

- ``step``    one ``esq_step`` per time step, inputs streamed step by step (the device API);
- ``run``     one ``esq_run`` over the whole sequence (needs T*F and T*S <= the I/O buffer);
- ``chunk:K`` ``esq_run`` over chunks of K steps, state carried between chunks;
- ``io``      the same reads and writes as ``step`` without calling the model (cost baseline);
- ``nostep``  like ``io`` plus ``esq_reset`` and ``esq_pooled`` per sequence (the per-sequence part).

A window model (its header defines ``<P>_WINDOW``: a graph that reads future steps) runs every
sequence as one window: ``step`` and ``chunk:K`` act as ``run``, and a sequence longer than
``<P>_WINDOW_STEPS`` is refused.

``repeat=N`` (``run`` only) runs each sequence N times from reset, for wall-time measurements.
``init=FILE`` starts every sequence from a canonical state read from FILE (``esq_state_load``)
instead of the zero state: ``uint32 magic 'ESQS', B, Z`` then B*Z words.

Models with an integer API (integer artifacts, :mod:`edgeseq.export.c.intexport`; their header
defines ``<P>_INT_API``) take two more options: ``qout`` writes the integer outputs and canonical
state (``esq_step_q`` / ``esq_pooled_q`` / ``esq_state_save_q``) as int32 words in the same layout,
and ``init=`` words are int32 too; ``qin`` (with ``qout``) reads int32 input words (the program's
quantized input, ``<P>_IN_Q_FEATURES`` per step) instead of floats. Every word is 4 bytes, so
the file formats are unchanged: only the word type differs.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, ShapeError

IN_MAGIC = 0x58515345  # b"ESQX"
OUT_MAGIC = 0x59515345  # b"ESQY"
TRAILER_MAGIC = 0x54515345  # b"ESQT"
STATE_MAGIC = 0x53515345  # b"ESQS"
WORDS = ("<f4", "<i4")  # float32 words, or int32 words (integer API: qin / qout / init=)
MODES = ("step", "run", "io", "nostep")


def _words(a, dtype: str, what: str) -> bytes:
    if dtype not in WORDS:
        raise ShapeError(f"driver words are float32 or int32 ({', '.join(WORDS)}), got {dtype!r}")
    a = np.asarray(a)
    if dtype == "<i4":
        if a.dtype.kind not in "iu":
            raise ShapeError(f"integer {what} must have an integer dtype, got {a.dtype}")
        if a.size and (int(a.min()) < -(2**31) or int(a.max()) >= 2**31):
            raise ShapeError(f"integer {what} has values outside int32")
    return np.ascontiguousarray(a, dtype=dtype).tobytes()


def write_input(path, x, dtype: str = "<f4") -> Path:
    """Write a (B, T, F) batch in the driver's input format (``dtype`` ``"<i4"``: integer words
    for the ``qin`` option)."""
    from ..util.fs import atomic_write_bytes

    x = np.asarray(x)
    if x.ndim != 3:
        raise ShapeError(f"driver input must have shape (B, T, F), got {x.shape}")
    b, t, f = x.shape
    data = struct.pack("<4I", IN_MAGIC, b, t, f) + _words(x, dtype, "driver input")
    return atomic_write_bytes(path, data)


def write_state(path, state, dtype: str = "<f4") -> Path:
    """Write initial canonical states (B, Z) for the driver's ``init=`` option."""
    from ..util.fs import atomic_write_bytes

    state = np.asarray(state)
    if state.ndim != 2:
        raise ShapeError(f"initial driver state must have shape (B, Z), got {state.shape}")
    data = struct.pack("<3I", STATE_MAGIC, *state.shape) + _words(state, dtype, "initial state")
    return atomic_write_bytes(path, data)


def read_output(path, dtype: str = "<f4") -> dict:
    """Parse a driver output file into ``step`` (B, T, S), ``pooled`` (B, P), ``state`` (B, Z),
    ``repeat`` and ``model_ns``; ``dtype`` ``"<i4"`` reads the int32 words of the ``qout`` option
    (arrays then come back as int64)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ArtifactError(f"cannot read the driver output ({e.strerror})", where=str(path)) from None
    if len(raw) < 24:
        raise ArtifactError(f"driver output is truncated ({len(raw)} bytes)", where=str(path))
    magic, b, t, s, p, z = struct.unpack_from("<6I", raw, 0)
    if magic != OUT_MAGIC:
        raise ArtifactError("not a driver output file (bad magic)", where=str(path))
    per_seq = t * s + p + z
    body = 24 + 4 * b * per_seq
    if len(raw) != body + 16:
        raise ArtifactError(f"driver output has {len(raw)} bytes, expected {body + 16}", where=str(path))
    if dtype not in WORDS:
        raise ShapeError(f"driver words are float32 or int32 ({', '.join(WORDS)}), got {dtype!r}")
    data = np.frombuffer(raw, dtype=dtype, count=b * per_seq, offset=24).reshape(b, per_seq)
    tmagic, repeat, ns = struct.unpack_from("<IIQ", raw, body)
    if tmagic != TRAILER_MAGIC:
        raise ArtifactError("driver output trailer is missing", where=str(path))
    kind = np.float32 if dtype == "<f4" else np.int64
    return {
        "step": data[:, : t * s].reshape(b, t, s).astype(kind),
        "pooled": data[:, t * s : t * s + p].astype(kind),
        "state": data[:, t * s + p :].astype(kind),
        "repeat": repeat,
        "model_ns": ns,
    }


def encode_output(step: np.ndarray, pooled: np.ndarray, state: np.ndarray | None = None, dtype: str = "<f4") -> bytes:
    """The driver output format for given arrays (golden vectors); ``dtype`` ``"<i4"`` for the
    integer words of ``qout``."""
    b, t, s = step.shape
    p = pooled.shape[1]
    z = 0 if state is None else state.shape[1]
    parts = [struct.pack("<6I", OUT_MAGIC, b, t, s, p, z)]
    rows = [step.reshape(b, t * s), pooled] + ([state] if state is not None else [])
    parts.append(_words(np.concatenate(rows, axis=1), dtype, "output"))
    parts.append(struct.pack("<IIQ", TRAILER_MAGIC, 1, 0))
    return b"".join(parts)


def driver_source(
    prefix: str = "esq",
    io_floats: int = 1 << 20,
    *,
    header: str = "model.h",
    entry: str = "main",
    parse_args: bool = True,
) -> str:
    """C source of the driver for a model generated with symbol prefix ``prefix``.

    ``header`` / ``entry`` / ``parse_args`` let several drivers share one executable
    (:mod:`edgeseq.export.c.multi`): each includes its own model header, is called as ``entry``
    and takes the arguments its dispatcher already read."""
    return (
        _DRIVER.replace("@p@", prefix)
        .replace("@P@", prefix.upper())
        .replace("@IO_FLOATS@", str(int(io_floats)))
        .replace("@HEADER@", f'"{header}"')
        .replace("@ENTRY@", entry)
        .replace("@ARGS@", "    esq_io_args(&argc, &argv);\n" if parse_args else "")
    )


_DRIVER = r"""/* Generated by edgeseq: runs the model over sequences read from a file (see edgeseq/targets/driver.py). */
#include <stdint.h>
#include <string.h>

#include "esq_io.h"
#include @HEADER@

#ifndef ESQ_IO_FLOATS
#define ESQ_IO_FLOATS @IO_FLOATS@
#endif
#ifdef @P@_INT_API
#define ESQ_DRV_INT 1 /* an integer model: qin / qout run its integer API */
#else
#define ESQ_DRV_INT 0
#endif

/* 4-byte I/O words: float32, or int32 for the integer API */
static @p@_state S;
static union { float f[ESQ_IO_FLOATS]; int32_t q[ESQ_IO_FLOATS]; } xb, yb;
static union { float f[@P@_POOLED_OUT_FEATURES + 1]; int32_t q[@P@_POOLED_OUT_FEATURES + 1]; } pb;
static union { float f[@P@_STATE_FLOATS + 1]; int32_t q[@P@_STATE_FLOATS + 1]; } sb;
#if ESQ_DRV_INT
static int32_t qx[@P@_IN_Q_FEATURES + 1];
#endif

static int fail(const char *msg)
{
    esq_io_message(msg);
    return 2;
}

static int parse_uint(const char *s, uint32_t *out)
{
    uint32_t v = 0;
    if (!*s)
        return -1;
    for (; *s; ++s) {
        if (*s < '0' || *s > '9' || v > 400000000u)
            return -1;
        v = v * 10u + (uint32_t)(*s - '0');
    }
    *out = v;
    return 0;
}

int @ENTRY@(int argc, char **argv)
{
@ARGS@    if (argc < 4)
        return fail("usage: model MODE INPUT OUTPUT [state] [repeat=N] [init=FILE] [qin] [qout]; "
                    "MODE: step | run | chunk:K | io | nostep");
    const char *mode = argv[1];
    const char *init_path = 0;
    int steps = 1, frame = 1, whole = 0, want_state = 0, qin = 0, qout = 0;
    uint32_t chunk = 1, repeat = 1;
    if (!strcmp(mode, "step")) {
    } else if (!strcmp(mode, "io")) {
        steps = frame = 0;
    } else if (!strcmp(mode, "nostep")) {
        steps = 0;
    } else if (!strcmp(mode, "run")) {
        whole = 1;
    } else if (!strncmp(mode, "chunk:", 6)) {
        if (parse_uint(mode + 6, &chunk) || chunk == 0)
            return fail("chunk:K needs a positive K");
    } else {
        return fail("unknown MODE (step | run | chunk:K | io | nostep)");
    }
    for (int a = 4; a < argc; ++a) {
        if (!strcmp(argv[a], "state"))
            want_state = 1;
        else if (!strncmp(argv[a], "repeat=", 7) && !parse_uint(argv[a] + 7, &repeat) && repeat > 0)
            ;
        else if (!strncmp(argv[a], "init=", 5) && argv[a][5])
            init_path = argv[a] + 5;
        else if (!strcmp(argv[a], "qin"))
            qin = 1;
        else if (!strcmp(argv[a], "qout"))
            qout = 1;
        else
            return fail("unknown option (state | repeat=N | init=FILE | qin | qout)");
    }
#ifdef @P@_WINDOW
    /* a window model reads its whole window at once: every stepping mode runs the whole window */
    if (steps && !whole)
        whole = 1;
    if (init_path)
        return fail("a window model starts every window from zero (no init=)");
#endif
    if (repeat > 1 && !whole)
        return fail("repeat=N needs MODE run");
    if ((qin || qout) && !ESQ_DRV_INT)
        return fail("qin / qout need a model with the integer API (an integer artifact)");
    if (qin && !qout)
        return fail("qin needs qout (integer inputs give integer outputs)");
    if (qout && repeat > 1)
        return fail("repeat=N does not combine with qout");

    int in = esq_io_open(argv[2], 0);
    if (in < 0)
        return fail("cannot open the input file");
    uint32_t hdr[4];
    if (esq_io_read(in, hdr, sizeof hdr))
        return fail("input file is shorter than its header");
    if (hdr[0] != 0x58515345u)
        return fail("input file is not an edgeseq input (bad magic)");
#if ESQ_DRV_INT
    const uint32_t F = qin ? @P@_IN_Q_FEATURES : @P@_IN_FEATURES;
#else
    const uint32_t F = @P@_IN_FEATURES;
#endif
    if (hdr[3] != F)
        return fail("input file has the wrong number of features per step for this model");
    const uint32_t B = hdr[1], T = hdr[2], SO = @P@_STEP_OUT_FEATURES;
#ifdef @P@_WINDOW
    if (T > @P@_WINDOW_STEPS)
        return fail("the window is longer than the model's @P@_WINDOW_STEPS steps; export it with a longer window");
#endif
    if (whole)
        chunk = T;
    if ((uint64_t)chunk * F > ESQ_IO_FLOATS || (uint64_t)chunk * SO > ESQ_IO_FLOATS)
        return fail("sequence chunk does not fit the driver I/O buffer; use MODE step or a smaller chunk:K");
    int init = -1;
    if (init_path) {
        init = esq_io_open(init_path, 0);
        if (init < 0)
            return fail("cannot open the initial state file");
        uint32_t ih[3];
        if (esq_io_read(init, ih, sizeof ih) || ih[0] != 0x53515345u)
            return fail("initial state file is not an edgeseq state file (bad magic)");
        if (ih[1] != B || ih[2] != @P@_STATE_FLOATS)
            return fail("initial state file does not hold B states of this model");
    }
    int out = esq_io_open(argv[3], 1);
    if (out < 0)
        return fail("cannot open the output file");
    const uint32_t Z = want_state ? @P@_STATE_FLOATS : 0;
    uint32_t ohdr[6] = {0x59515345u, B, T, SO, @P@_POOLED_OUT_FEATURES, Z};
    if (esq_io_write(out, ohdr, sizeof ohdr))
        return fail("cannot write the output file");
    uint64_t ns = 0;
    for (uint32_t b = 0; b < B; ++b) {
        if (frame) {
            if (init >= 0) {
                if (esq_io_read(init, sb.f, @P@_STATE_FLOATS * (uint32_t)sizeof(float)))
                    return fail("initial state file is shorter than B states");
#if ESQ_DRV_INT
                if (qout)
                    @p@_state_load_q(&S, sb.q);
                else
#endif
                    @p@_state_load(&S, sb.f);
            } else {
                @p@_reset(&S);
            }
        }
        for (uint32_t t = 0; t < T; t += chunk) {
            const uint32_t n = T - t < chunk ? T - t : chunk;
            if (esq_io_read(in, xb.f, n * F * (uint32_t)sizeof(float)))
                return fail("input file is shorter than B*T*F words");
            if (steps) {
#if ESQ_DRV_INT
                if (qout) {
#ifdef @P@_WINDOW
                    if (qin)
                        @p@_run_q(&S, xb.q, (int)n, yb.q);
                    else
                        @p@_run_fq(&S, xb.f, (int)n, yb.q);
                    (void)qx;
#else
                    for (uint32_t k = 0; k < n; ++k) {
                        const int32_t *xq = xb.q + k * F;
                        if (!qin) {
                            @p@_quantize(xb.f + k * F, qx);
                            xq = qx;
                        }
                        @p@_step_q(&S, xq, yb.q + k * SO);
                    }
#endif
                } else
#endif
#ifndef @P@_WINDOW
                if (n == 1 && !whole) {
                    @p@_step(&S, xb.f, yb.f);
                } else
#endif
                {
                    const uint64_t t0 = esq_io_now_ns();
                    for (uint32_t r = 0; r < repeat; ++r) {
                        if (r)
                            @p@_reset(&S);
                        @p@_run(&S, xb.f, (int)n, yb.f);
                    }
                    ns += esq_io_now_ns() - t0;
                }
            }
            if (esq_io_write(out, yb.f, n * SO * (uint32_t)sizeof(float)))
                return fail("cannot write the output file");
        }
        if (frame) {
#if ESQ_DRV_INT
            if (qout)
                @p@_pooled_q(&S, pb.q);
            else
#endif
                @p@_pooled(&S, pb.f);
        }
        if (esq_io_write(out, pb.f, @P@_POOLED_OUT_FEATURES * (uint32_t)sizeof(float)))
            return fail("cannot write the output file");
        if (want_state) {
            if (frame) {
#if ESQ_DRV_INT
                if (qout)
                    @p@_state_save_q(&S, sb.q);
                else
#endif
                    @p@_state_save(&S, sb.f);
            }
            if (esq_io_write(out, sb.f, Z * (uint32_t)sizeof(float)))
                return fail("cannot write the output file");
        }
    }
    uint32_t trailer[4] = {0x54515345u, repeat, (uint32_t)(ns & 0xFFFFFFFFu), (uint32_t)(ns >> 32)};
    if (esq_io_write(out, trailer, sizeof trailer) || esq_io_close(out))
        return fail("cannot write the output file");
    esq_io_close(in);
    if (init >= 0)
        esq_io_close(init);
    return 0;
}
"""
