"""Integer C for window programs (graphs that read future steps): the model runs on a whole window.

The schedule is :func:`edgeseq.quant.window.window_plan`'s: every buffer is a ``T x n`` array of
its storage type inside ``esq_state`` (at most ``<P>_WINDOW_STEPS`` steps), every segment is the
ordinary per-step code of :class:`~edgeseq.export.c.intgen.IntCodeGen` (its reads copied in from
row t of their buffers, its writes copied out to row t) run over the window, and the window
micro-ops are copies over the window (``reverse``: an index flip; ``lookahead``: a shift with zero
fill). Nothing here restates a micro-op's arithmetic.

Generated API (besides the constants and types of the streaming integer API; ``<P>_WINDOW`` is
defined, there is no step function and no state to save)::

    void esq_reset(esq_state *s);
    void esq_quantize(const float *x_t, int32_t *xq_t);                        /* the input boundary */
    int  esq_run_q(esq_state *s, const int32_t *xq, int T, int32_t *yq);        /* a window, integers */
    int  esq_run_fq(esq_state *s, const float *x, int T, int32_t *yq);          /* float in, integers out */
    void esq_run(esq_state *s, const float *x, int T, float *y);                /* float in and out */
    void esq_pooled_q(const esq_state *s, int32_t *yq);  void esq_pooled(const esq_state *s, float *y);

``T`` runs from 1 to ``<P>_WINDOW_STEPS``; the ``int`` functions return -1 (computing nothing)
outside that range, ``esq_run`` then computes nothing (the generated driver refuses such a window
first). Each call starts from the zero state: a window never depends on the one before.
"""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from ...quant.window import Segment, window_plan
from . import intkernels as K
from .cwriter import CSources, c_ident, indent
from .intkernels import PRELUDE, ctype_of_bits
from .plan import CTYPE_BYTES, CTYPE_SUFFIX, ArenaSet
from .windowops import DEFAULT_WINDOW_STEPS, stateless_api, stateless_info, window_copy


def generate_window(gen, steps: int | None = None) -> CSources:
    """``model.h`` / ``model.c`` of the window program of ``gen`` (an IntCodeGen) for windows of up
    to ``steps`` steps (default :data:`DEFAULT_WINDOW_STEPS`)."""

    steps = DEFAULT_WINDOW_STEPS if steps is None else steps
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"window_steps must be a positive number of steps, got {steps!r}")
    p, pre, P = gen.p, gen.prefix, gen.P
    plan = window_plan(p)
    for key in p.states:
        gen.fields[key] = gen._unique("st_" + c_ident(key.replace("/", "__")))
    in_layout, in_q = gen.input_layout()
    outputs, s_out, p_out = gen.output_layout()
    buf = {v: gen._unique("buf_" + c_ident(v)) for v in plan.buffers}

    def ct(v: str) -> str:
        return ctype_of_bits(p.vectors[v].bits)

    def row(v: str, t: str) -> str:
        return f"s->{buf[v]} + (long)({t}) * {p.vectors[v].n}"

    # segments: the ordinary per-step code, one static function each
    seg_fns: list[str] = []
    high: dict[str, int] = {}
    seg_of: dict[int, str] = {}
    seg_plans: dict[str, dict] = {}
    for k, st in enumerate(plan.stages):
        if not isinstance(st, Segment):
            continue
        arena = ArenaSet("w")
        code = gen.phase("step", list(st.items), arena, list(st.reads), set(st.writes))
        loc = dict(gen.loc)
        for a in arena.used():
            high[a.ctype] = max(high.get(a.ctype, 0), a.high_water)
        name = f"{pre}_seg{len(seg_of)}"
        seg_of[k] = name
        seg_plans[name] = arena.describe()
        body = gen.arena_decls(arena, False)
        for r in st.reads:
            body.append(f"memcpy({loc[r]}, {row(r, 't')}, {p.vectors[r].n} * sizeof({ct(r)}));")
        body += code
        for w in st.writes:
            body.append(f"memcpy({row(w, 't')}, {loc[w]}, {p.vectors[w].n} * sizeof({ct(w)}));")
        seg_fns += [f"static void {name}({pre}_state *s, int t)", "{", *indent(body), "}", ""]
    final_arena = ArenaSet("pw")
    final_code = gen.phase("final", p.final, final_arena, [], {o["vec"] for o in outputs if not o["temporal"]})
    final_loc = dict(gen.loc)

    # the window: segments over every step, window micro-ops as copies between them
    win: list[str] = []
    for k, st in enumerate(plan.stages):
        if isinstance(st, Segment):
            win += ["for (int t = 0; t < T; ++t)", f"    {seg_of[k]}(s, t);"]
            continue
        if ct(st.x) != ct(st.out):  # pragma: no cover - the quantizer keeps the width
            raise ConfigError(f"window micro-op '{st.out}' changes the storage type")
        win.append(f"/* {st.describe()} */")
        win += window_copy(
            st.kind,
            getattr(st, "steps", 0),
            lambda t, v=st.out: row(v, t),
            lambda t, v=st.x: row(v, t),
            p.vectors[st.x].n,
            ct(st.x),
        )

    # struct: states, the per-step scratch (shared by the segments), the window buffers
    members = [
        (ctype_of_bits(st.bits), gen.fields[key], st.n, f'state "{key}" {tuple(st.shape)}, int{st.bits}')
        for key, st in p.states.items()
    ]
    members += [(c, f"scratch{CTYPE_SUFFIX[c]}", n, "per-step vectors (static plan)") for c, n in high.items()]
    members += [(ct(v), buf[v], steps * p.vectors[v].n, f"'{v}' over the window") for v in plan.buffers]
    members.sort(key=lambda m: -CTYPE_BYTES[m[0]])
    members = [(c, nm, -(-max(1, n) * CTYPE_BYTES[c] // 8) * 8 // CTYPE_BYTES[c], note) for c, nm, n, note in members]
    struct_bytes = sum(CTYPE_BYTES[c] * n for c, _, n, _ in members)

    qtabs, lines_q = gen.quantizer(in_layout)
    deq_tabs, _, deq_pool = gen.dequantizer(outputs)
    fill_in = []  # row t of the integer input (xq) into the input buffers
    for spec, lay in zip(p.inputs, in_layout):
        if lay["size"]:
            fill_in += [
                f"for (int i = 0; i < {lay['size']}; ++i)",
                f"    s->{buf[spec.vec]}[(long)t * {lay['size']} + i] = ({ct(spec.vec)})xq[{lay['offset']} + i];",
            ]
    out_q, out_f = [], []  # temporal outputs of row t
    for j, o in enumerate(outputs):
        if not o["temporal"]:
            continue
        v, n = o["vec"], o["features"]
        out_q += [
            f"for (int i = 0; i < {n}; ++i)",
            f"    yq[(long)t * {s_out} + {o['offset']} + i] = s->{buf[v]}[(long)t * {n} + i];",
        ]
        idx = "0" if len(o["scales"]) == 1 else "i"
        out_f += [
            f"for (int i = 0; i < {n}; ++i)",
            f"    y[(long)t * {s_out} + {o['offset']} + i] = (float)s->{buf[v]}[(long)t * {n} + i] * OSCALE{j}[{idx}];",
        ]

    L = [
        "/* Generated by edgeseq from an integer window program: C99, static memory only, no libm. */",
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
        *gen.table_text,
        *qtabs,
        *deq_tabs,
        "",
        f"void {pre}_reset({pre}_state *s)",
        "{",
        "    memset(s, 0, sizeof *s);",
        "}",
        "",
        f"void {pre}_quantize(const float *x_t, int32_t *xq_t)",
        "{",
        *(indent(lines_q) if lines_q else ["    (void)x_t;", "    (void)xq_t;"]),
        "}",
        "",
        *seg_fns,
        f"static void {pre}_window({pre}_state *s, int T)",
        "{",
        *indent(win),
        "}",
        "",
        "/* a window from integer (xq_in) or float (x) input: T rows in, T rows of temporal outputs out */",
        f"static int {pre}_window_io({pre}_state *s, const float *x, const int32_t *xq_in, int T, int32_t *yq)",
        "{",
        f"    int32_t row[{P}_IN_Q_FEATURES + 1];",
        f"    if (T < 1 || T > {P}_WINDOW_STEPS)",
        "        return -1;",
        "    memset(s, 0, sizeof *s);",
        "    for (int t = 0; t < T; ++t) {",
        f"        const int32_t *xq = xq_in ? xq_in + (long)t * {P}_IN_Q_FEATURES : row;",
        "        if (!xq_in)",
        f"            {pre}_quantize(x + (long)t * {P}_IN_FEATURES, row);",
        *indent(fill_in, 2),
        "    }",
        f"    {pre}_window(s, T);",
        *(
            ["    if (yq)", "        for (int t = 0; t < T; ++t) {", *indent(out_q, 3), "        }"]
            if out_q
            else ["    (void)yq;"]
        ),
        "    return 0;",
        "}",
        "",
        f"int {pre}_run_q({pre}_state *s, const int32_t *xq, int T, int32_t *yq)",
        "{",
        f"    return {pre}_window_io(s, 0, xq, T, yq);",
        "}",
        "",
        f"int {pre}_run_fq({pre}_state *s, const float *x, int T, int32_t *yq)",
        "{",
        f"    return {pre}_window_io(s, x, 0, T, yq);",
        "}",
        "",
        f"void {pre}_run({pre}_state *s, const float *x, int T, float *y)",
        "{",
        f"    if ({pre}_run_fq(s, x, T, 0) != 0)",
        "        return;",
        *(
            ["    if (y)", "        for (int t = 0; t < T; ++t) {", *indent(out_f, 3), "        }"]
            if out_f
            else ["    (void)y;"]
        ),
        "}",
        "",
    ]
    for lines in gen.pooled_functions(outputs, final_code, final_loc, final_arena, deq_pool):
        L += lines
    L += stateless_api(pre, [("_q", "int32_t"), ("", "float")])
    src = "\n".join(L)
    header = gen._header(members, in_q, outputs, s_out, p_out, 0, struct_bytes, window_steps=steps)
    info: dict[str, Any] = {
        "profile_map": {"file": "model.c", "regions": []},
        "prefix": pre,
        "numerics": "integer",
        "in_features": gen.in_features,
        "in_q_features": in_q,
        "input_layout": in_layout,
        "step_out_features": s_out,
        "pooled_out_features": p_out,
        "outputs": outputs,
        **stateless_info(),
        "window": {
            "steps": steps,
            "stages": [
                {"segment": seg_of[k], "micro_ops": len(st.items), "reads": list(st.reads), "writes": list(st.writes)}
                if isinstance(st, Segment)
                else {"window_op": st.kind, "x": st.x, "out": st.out}
                for k, st in enumerate(plan.stages)
            ],
            "buffers": {v: {"features": p.vectors[v].n, "ctype": ct(v)} for v in plan.buffers},
        },
        "weights_bytes": gen.flavour_bytes[gen.flavour or "c"],
        "kernel_flavour": gen.flavour or "c",
        "libm": [],
        "micro_ops": {"step": len(p.step), "final": len(p.final), "kinds": p.op_counts()},
        "macs_per_step": p.macs_per_step(),
        "buffer_plan": {
            "state_bytes": sum(CTYPE_BYTES[ctype_of_bits(st.bits)] * st.n for st in p.states.values()),
            "scratch_bytes": sum(CTYPE_BYTES[c] * n for c, n in high.items()),
            "window_buffer_bytes": sum(CTYPE_BYTES[ct(v)] * steps * p.vectors[v].n for v in plan.buffers),
            "struct_bytes_estimate": struct_bytes,
            "pooled_stack_bytes": final_arena.nbytes,
            "scratch": seg_plans,  # each segment's plan of the shared scratch
            "pooled": final_arena.describe(),
        },
    }
    return CSources(pre, {"model.h": header, "model.c": src}, info)
