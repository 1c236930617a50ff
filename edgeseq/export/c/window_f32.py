"""Float C for window graphs (graphs that read future steps): the model runs on a whole window.

The schedule is :func:`edgeseq.ir.window.window_stages`': every buffer is a ``T x n`` float array
inside ``esq_state`` (at most ``<P>_WINDOW_STEPS`` steps; the input is read in place), every segment
is the ordinary per-step code of :class:`~edgeseq.export.c.codegen.CodeGen` (its emitters, reading
row t of the buffers it reads, its writes copied to row t) run over the window, and the window nodes
are copies over the window (:mod:`.windowops`). The pooled outputs are computed as for a streaming
model, after the window.

Generated API (``<P>_WINDOW`` is defined; no step function and no state to carry)::

    void esq_reset(esq_state *s);
    void esq_run(esq_state *s, const float *x, int T, float *y);   /* a window, 1 <= T <= <P>_WINDOW_STEPS */
    void esq_pooled(const esq_state *s, float *y);

``esq_run`` starts from the zero state and computes nothing for T outside 1..``<P>_WINDOW_STEPS``
(the generated driver refuses such a window first).
"""

from __future__ import annotations

from ...errors import ConfigError
from ...ir import ops as O
from ...ir.window import Segment, window_stages
from .cwriter import CSources, c_ident, indent
from .emitter import NodeCtx
from .f32lib import prelude
from .plan import CTYPE_BYTES, CTYPE_SUFFIX, ArenaSet
from .windowops import COMPUTE_F32, DEFAULT_WINDOW_STEPS, stateless_api, stateless_info, window_copy


def generate_window_f32(cg, steps: int | None = None) -> CSources:
    """``model.h`` / ``model.c`` of the window graph of ``cg`` (a CodeGen) for windows of up to
    ``steps`` steps (default :data:`DEFAULT_WINDOW_STEPS`)."""
    steps = DEFAULT_WINDOW_STEPS if steps is None else steps
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"window_steps must be a positive number of steps, got {steps!r}")
    g, p, P, types = cg.graph, cg.prefix, cg.P, cg.types
    ws = window_stages(g)
    seq_nodes = [n for st in ws.stages if isinstance(st, Segment) for n in st.items]
    readouts = [n for n in seq_nodes if isinstance(n.op, O.Readout)]
    pooled_nodes = [n for n in g.nodes if not all(types[i].temporal for i in n.inputs)]
    ctxs = cg.declare_state(seq_nodes)
    buf = {v: cg._unique("buf_" + c_ident(v)) for v in ws.buffers if v != cg.in_name}

    def row(v: str, t: str) -> str:
        if v == cg.in_name:
            return f"(x + (long)({t}) * {P}_IN_FEATURES)"
        return f"(s->{buf[v]} + (long)({t}) * {types[v].features})"

    seg_fns: list[str] = []
    win: list[str] = []
    high: dict[str, int] = {}
    code_all: list[str] = []
    seg_plans: dict[str, dict] = {}
    for st in ws.stages:
        if not isinstance(st, Segment):
            win.append(f"/* {st.name} ({st.op.kind}): {st.inputs[0]} -> {st.outputs[0]} */")
            if st.op.kind in COMPUTE_F32:
                fn = COMPUTE_F32[st.op.kind]
                win += fn(
                    st.op,
                    lambda t, v=st.outputs[0]: row(v, t),
                    lambda t, v=st.inputs[0]: row(v, t),
                    types[st.inputs[0]].features,
                    steps,
                )
                continue
            win += window_copy(
                st.op.kind,
                getattr(st.op, "steps", 0),
                lambda t, v=st.outputs[0]: row(v, t),
                lambda t, v=st.inputs[0]: row(v, t),
                types[st.inputs[0]].features,
                "float",
            )
            continue
        name = f"{p}_seg{len(seg_plans)}"
        for r in st.reads:
            if r != cg.in_name:
                cg.exprs[("step", r)] = row(r, "t")
        arena = ArenaSet("w")
        code = cg._plan_phase("step", list(st.items), arena, ctxs, keep=set(st.writes))
        code_all += code
        seg_plans[name] = arena.describe()
        for a in arena.used():
            high[a.ctype] = max(high.get(a.ctype, 0), a.high_water)
        body = [f"{a.ctype} *const {a.name} = s->scratch{CTYPE_SUFFIX[a.ctype]};" for a in arena.used()]
        if cg.in_name in st.reads:
            body.append(f"const float *const x_t = x + (long)t * {P}_IN_FEATURES;")
        body += code
        for w in st.writes:
            if cg.ctypes.get(w, "float") != "float":
                raise ConfigError(f"value '{w}' is {cg.ctypes[w]} in the C plan; window buffers hold floats")
            body.append(f"memcpy({row(w, 't')}, {cg.value_expr(w, 'step')}, {types[w].features} * sizeof(float));")
        seg_fns += [
            f"static void {name}({p}_state *s, const float *x, int t)",
            "{",
            "    (void)x;",
            *indent(body),
            "}",
            "",
        ]
        win += ["for (int t = 0; t < T; ++t)", f"    {name}(s, x, t);"]
    pool_arena = ArenaSet("pw")
    pctxs = {n.name: NodeCtx(cg, n, "pooled") for n in readouts + pooled_nodes}
    order = [n for n in g.nodes if n.name in pctxs]
    pooled_code = cg._plan_phase(
        "pooled", order, pool_arena, pctxs, keep={o for o in g.outputs if not types[o].temporal}
    )

    outputs, step_off, pool_off = [], 0, 0
    for o in g.outputs:
        t = types[o]
        off = step_off if t.temporal else pool_off
        outputs.append({"name": o, "temporal": t.temporal, "features": t.features, "offset": off})
        if t.temporal:
            step_off += t.features
        else:
            pool_off += t.features
    members = [
        ("float", cg._state_fields[k], int(max(1, _size(shape))), f'"{k}" {tuple(shape)}')
        for k, shape in cg.spec.items()
    ]
    members += [("int", fld, 0, key) for key, fld in cg._int_fields.items()]  # scalars (n = 0)
    members += [(c, f"scratch{CTYPE_SUFFIX[c]}", n, "per-step value buffers (static plan)") for c, n in high.items()]
    members += [("float", buf[v], steps * types[v].features, f"'{v}' over the window") for v in buf]
    struct_bytes = sum(CTYPE_BYTES.get(c, 4) * max(1, n) for c, _, n, _ in members)
    scratch_bytes = sum(CTYPE_BYTES[c] * n for c, n in high.items())

    out_t = [o for o in outputs if o["temporal"]]
    out_p = [o for o in outputs if not o["temporal"]]
    L = [
        "/* Generated by edgeseq from a window graph: whole-window C99, static memory only. */",
        '#include "model.h"',
        "#include <math.h>",
        "#include <string.h>",
        "",
        prelude("\n".join(code_all + pooled_code)),
        "",
        "/* ---- weights (read-only: flash on a microcontroller) ---- */",
        *[text for _, text in cg.consts],
        "",
        f"void {p}_reset({p}_state *s)",
        "{",
        "    memset(s, 0, sizeof *s);",
        "}",
        "",
        *seg_fns,
        f"void {p}_run({p}_state *s, const float *x, int T, float *y)",
        "{",
        f"    if (T < 1 || T > {P}_WINDOW_STEPS)",
        "        return;",
        "    memset(s, 0, sizeof *s);",
        *indent(win),
    ]
    if out_t:
        L += ["    if (y)", "        for (int t = 0; t < T; ++t) {"]
        for o in out_t:
            L.append(
                f"            memcpy(y + (long)t * {P}_STEP_OUT_FEATURES + {o['offset']}, {row(o['name'], 't')}, "
                f"{o['features']} * sizeof(float));"
            )
        L.append("        }")
    else:
        L.append("    (void)y;")
    L += ["}", "", f"void {p}_pooled(const {p}_state *s, float *y)", "{"]
    L += [f"    {a.ctype} {a.name}[{a.high_water}];" for a in pool_arena.used()]
    L += indent(pooled_code)
    for o in out_p:
        L.append(
            f"    memcpy(y + {o['offset']}, {cg.value_expr(o['name'], 'pooled')}, {o['features']} * sizeof(float));"
        )
    if not out_p:
        L += ["    (void)s;", "    (void)y;"]
    L += ["}", "", *stateless_api(p, [("", "float")])]
    info = {
        "prefix": p,
        "in_features": g.in_features,
        "step_out_features": step_off,
        "pooled_out_features": pool_off,
        "outputs": outputs,
        **stateless_info(),
        "window": {
            "steps": steps,
            "stages": [
                {"segment": [n.name for n in st.items], "reads": list(st.reads), "writes": list(st.writes)}
                if isinstance(st, Segment)
                else {"window_op": st.op.kind, "node": st.name}
                for st in ws.stages
            ],
            "buffers": {v: {"features": types[v].features} for v in buf},
        },
        "numerics": {n.name: cg.numerics.get(n.name, "f32") for n in g.nodes},
        "weights_bytes": cg.const_bytes,
        "libm": sorted(cg.libm),
        "buffer_plan": {
            "state_bytes": 4 * sum(_size(s) for s in cg.spec.values()) + 4 * len(cg._int_fields),
            "scratch_bytes": scratch_bytes,
            "window_buffer_bytes": 4 * steps * sum(types[v].features for v in buf),
            "struct_bytes_estimate": struct_bytes,
            "pooled_stack_bytes": pool_arena.nbytes,
            "scratch": seg_plans,
            "pooled": pool_arena.describe(),
        },
    }
    fields = (
        "\n".join(f"    {c} {nm}{f'[{n}]' if n else ''};  /* {note} */" for c, nm, n, note in members)
        or "    int unused_[1];"
    )
    outs = "\n".join(
        f" *   {o['name']}: {'per step' if o['temporal'] else 'pooled'}, {o['features']} features at offset {o['offset']}"
        for o in outputs
    )
    header = f"""/* Generated by edgeseq: whole-window C99 inference (the graph reads future steps of its window).
 *
 * Outputs (graph order; per step = per step of the window):
{outs}
 */
#ifndef {P}_MODEL_H
#define {P}_MODEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

#define {P}_WINDOW 1
#define {P}_WINDOW_STEPS {steps}
#define {P}_IN_FEATURES {g.in_features}
#define {P}_STEP_OUT_FEATURES {step_off}
#define {P}_POOLED_OUT_FEATURES {pool_off}
#define {P}_STATE_FLOATS 0
#define {P}_SCRATCH_BYTES {scratch_bytes}

typedef struct {p}_state {{
{fields}
}} {p}_state;

/* Zero everything (each window starts from zero anyway). */
void {p}_reset({p}_state *s);
/* A whole window: x is T x {P}_IN_FEATURES (1 <= T <= {P}_WINDOW_STEPS; else nothing is computed);
 * y (may be NULL) receives T x {P}_STEP_OUT_FEATURES. Then {p}_pooled gives the pooled outputs. */
void {p}_run({p}_state *s, const float *x, int T, float *y);
void {p}_pooled(const {p}_state *s, float *y);
/* A window model carries no state between windows ({P}_STATE_FLOATS = 0): these do nothing. */
void {p}_state_save(const {p}_state *s, float *out);
void {p}_state_load({p}_state *s, const float *in);

#ifdef __cplusplus
}}
#endif

#endif /* {P}_MODEL_H */
"""
    return CSources(p, {"model.h": header, "model.c": "\n".join(L)}, info)


def _size(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
