"""IR graph -> self-contained C99 (``model.h`` / ``model.c``) with a streaming, one-sequence API.

Generated API (``esq`` is the configurable prefix)::

    void esq_reset(esq_state *s);                                 /* zero state: a new sequence */
    void esq_step(esq_state *s, const float *x_t, float *y_t);    /* one time step */
    void esq_pooled(const esq_state *s, float *y);                /* readout over all steps so far */
    void esq_run(esq_state *s, const float *x, int T, float *y);  /* T steps, state carried on */
    void esq_state_save(const esq_state *s, float *out);          /* canonical state, state_spec order */
    void esq_state_load(esq_state *s, const float *in);

``esq_state`` holds one field per entry of ``graph.state_spec()`` (plus ring-buffer positions of
causal convolutions) and the scratch arena of the static buffer plan; weights are
``static const float`` tables (flash on a microcontroller). Nothing is allocated at run time.

Each op kind is lowered by an *emitter* (:mod:`.emitter`) registered for a (kind, numeric) pair;
the float32 emitters live in :mod:`.emit_f32`, and every scan op renders through its step program
(:mod:`.step_f32`). A per-node numeric plan selects the emitter, so fixed-point variants
(int8/int16 weights, int32 accumulators, multiply-shift requantisation, lookup-table activations)
slot in per op without touching the planner or the API::

    @register
    class LinearInt8(Emitter):
        kind, numeric = "Linear", "i8"
        def out_ctype(self, ctx, i): return "int8_t"           # value kept quantized downstream
        def temps(self, ctx): return {"acc": (ctx.n_out(), "int32_t")}
        def step(self, ctx):
            w = ctx.const("w_q", q_weights, ctype="int8_t")     # integer tables go to flash
            ...                                                 # C text using ctx.inp()/out()/tmp()/state()

    generate(graph, numerics={"fc": "i8"})

Integer values and temporaries get their own arenas (``int8_t scratch_i8[]`` ...) in the state
struct, so the generated C stays type-correct; graph outputs must be float.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ...errors import ConfigError, UnsupportedOpError
from ...ir import ops as O
from ...ir.cells import cell_kinds, has_step_program
from ...ir.graph import Graph, Node
from . import emit_f32, step_f32  # noqa: F401  (register the float32 emitters)
from .cwriter import CSources, c_ident, check_prefix, float_table, indent, int_table
from .emitter import EMITTERS, F32, PROGRAM_EMITTERS, Emitter, NodeCtx, register, register_program  # noqa: F401
from .f32lib import prelude
from .plan import CTYPE_BYTES, CTYPE_SUFFIX, ArenaSet, check_ctype


def supported_kinds(numeric: str = F32) -> set[str]:
    """IR op kinds the C backend lowers at ``numeric`` (float32 by default)."""
    programs = cell_kinds() if numeric in PROGRAM_EMITTERS else set()
    window = (
        {"Reverse", "Lookahead", "SelfAttention"} if numeric == F32 else set()
    )  # whole-window models (window_f32.py)
    return {k for (k, n) in EMITTERS if n == numeric} | programs | window


# ----------------------------------------------------------------------------------------------
# generator


class CodeGen:
    def __init__(
        self,
        graph: Graph,
        prefix: str = "esq",
        numerics: Mapping[str, str] | None = None,
        target: str = "c",
        window_steps: int | None = None,
    ):
        self.graph = graph
        self.window_steps = window_steps
        self.prefix = check_prefix(prefix)
        self.P = prefix.upper()
        self.target = target
        self.numerics = dict(numerics or {})
        unknown = sorted(set(self.numerics) - {n.name for n in graph.nodes})
        if unknown:
            raise ConfigError(f"numeric plan names unknown nodes: {', '.join(unknown)}")
        self.types = graph.value_types
        self.spec = graph.state_spec()
        self.consts: list[tuple[str, str]] = []  # (identifier, C text)
        self.const_bytes = 0
        self.ctypes: dict[str, str] = {}  # value -> C element type (float unless quantized)
        self._idents: set[str] = set()
        self._state_fields: dict[str, str] = {}
        self._int_fields: dict[str, str] = {}
        self.libm: set[str] = set()
        self.exprs: dict[tuple[str, str], str] = {}
        self.in_name = graph.inputs[0].name
        self.emitters = {n.name: self._emitter(n) for n in graph.nodes if n.op.category != "window"}

    # -- naming ----------------------------------------------------------------------------------
    def _unique(self, base: str) -> str:
        name, i = base, 1
        while name in self._idents:
            name = f"{base}_{i}"
            i += 1
        self._idents.add(name)
        return name

    def state_field(self, node: str, name: str) -> str:
        key = f"{node}/{name}"
        if key not in self._state_fields:
            raise ConfigError(f"state '{key}' is not in the graph's state contract", where=f"node '{node}'")
        return self._state_fields[key]

    def int_field(self, node: str, name: str) -> str:
        return self._int_fields[f"{node}/{name}"]

    def add_const(self, node: str, name: str, values, comment: str = "", ctype: str = "float") -> str:
        ident = self._unique(f"W_{c_ident(node)}_{c_ident(name)}")
        check_ctype(ctype)
        a = np.asarray(values, dtype=np.float64)
        shape = "x".join(map(str, a.shape)) or "scalar"
        comment = comment or f"{node} {name} ({shape})"
        if ctype == "float":
            text = float_table(ident, a, comment, where=f"node '{node}'")
        else:
            text = int_table(ident, a, ctype, comment, where=f"node '{node}'")
        self.consts.append((ident, text))
        self.const_bytes += a.size * CTYPE_BYTES[ctype]
        return ident

    def value_expr(self, value: str, phase: str) -> str:
        if value == self.in_name and phase == "step":
            return "x_t"
        try:
            return self.exprs[(phase, value)]
        except KeyError:
            raise ConfigError(f"value '{value}' has no buffer in the {phase} phase") from None

    def _emitter(self, node: Node) -> Emitter:
        numeric = self.numerics.get(node.name, F32)
        em = EMITTERS.get((node.op.kind, numeric))
        if em is None and numeric in PROGRAM_EMITTERS and has_step_program(node.op):
            em = PROGRAM_EMITTERS[numeric]
        if em is None:
            have = sorted(
                {n for (k, n) in EMITTERS if k == node.op.kind}
                | (set(PROGRAM_EMITTERS) if has_step_program(node.op) else set())
            )
            raise UnsupportedOpError(
                f"the C backend has no {numeric} lowering for op {node.op.kind}"
                + (f" (it has: {', '.join(have)})" if have else ""),
                where=f"node '{node.name}' ({node.op.kind}), target {self.target}",
                hint="supported op kinds: " + ", ".join(sorted(supported_kinds(numeric))),
            )
        return em

    # -- planning and emission --------------------------------------------------------------------
    def generate(self) -> CSources:
        g = self.graph
        if g.is_window:
            from .window_f32 import generate_window_f32

            return generate_window_f32(self, self.window_steps)
        seq_nodes = [n for n in g.nodes if all(self.types[i].temporal for i in n.inputs)]
        pooled_nodes = [n for n in g.nodes if n not in seq_nodes]
        readouts = [n for n in seq_nodes if isinstance(n.op, O.Readout)]

        ctxs = self.declare_state(seq_nodes)

        step_arena = ArenaSet("w")
        step_code = self._plan_phase(
            "step", seq_nodes, step_arena, ctxs, keep={o for o in g.outputs if self.types[o].temporal}
        )
        pool_arena = ArenaSet("pw")
        pctxs = {n.name: NodeCtx(self, n, "pooled") for n in readouts + pooled_nodes}
        order = [n for n in g.nodes if n.name in pctxs]
        pooled_code = self._plan_phase(
            "pooled", order, pool_arena, pctxs, keep={o for o in g.outputs if not self.types[o].temporal}
        )

        # outputs layout
        outputs, step_off, pool_off = [], 0, 0
        for o in g.outputs:
            if self.ctypes.get(o, "float") != "float":
                raise ConfigError(
                    f"graph output '{o}' is {self.ctypes[o]} in the C plan; outputs must be float "
                    "(dequantize before the output)"
                )
            t = self.types[o]
            if t.temporal:
                outputs.append({"name": o, "temporal": True, "features": t.features, "offset": step_off})
                step_off += t.features
            else:
                outputs.append({"name": o, "temporal": False, "features": t.features, "offset": pool_off})
                pool_off += t.features
        state_layout, off = [], 0
        for key, shape in self.spec.items():
            size = int(np.prod(shape)) if shape else 1
            state_layout.append(
                {"key": key, "field": self._state_fields[key], "shape": list(shape), "offset": off, "size": size}
            )
            off += size
        state_floats = off

        info = {
            "prefix": self.prefix,
            "in_features": g.in_features,
            "step_out_features": step_off,
            "pooled_out_features": pool_off,
            "outputs": outputs,
            "state_floats": state_floats,
            "state_layout": state_layout,
            "state_spec": {k: list(v) for k, v in self.spec.items()},
            "numerics": {n.name: self.numerics.get(n.name, F32) for n in g.nodes},
            "weights_bytes": self.const_bytes,
            "libm": sorted(self.libm),
            "buffer_plan": {
                "state_bytes": 4 * state_floats + 4 * len(self._int_fields),
                "scratch_bytes": self._scratch_bytes(step_arena),
                "struct_bytes_estimate": 4 * state_floats + 4 * len(self._int_fields) + self._scratch_bytes(step_arena),
                "pooled_stack_bytes": pool_arena.nbytes,
                "scratch": step_arena.describe(),
                "pooled": pool_arena.describe(),
            },
        }
        files = {
            "model.h": self._header(info, step_arena),
            "model.c": self._source(info, step_code, pooled_code, step_arena, pool_arena, seq_nodes, ctxs),
        }
        return CSources(self.prefix, files, info)

    def declare_state(self, seq_nodes: list[Node]) -> dict[str, NodeCtx]:
        """The state fields (state_spec order) and the emitters' integer fields of the per-step
        nodes; returns their step contexts."""
        for key in self.spec:
            node, name = key.split("/", 1)
            self._state_fields[key] = self._unique(f"{c_ident(node)}__{c_ident(name)}")
        ctxs = {n.name: NodeCtx(self, n, "step") for n in seq_nodes}
        for n in seq_nodes:
            for name in self.emitters[n.name].int_state(ctxs[n.name]):
                self._int_fields[f"{n.name}/{name}"] = self._unique(f"{c_ident(n.name)}__{c_ident(name)}")
        return ctxs

    def _plan_phase(
        self, phase: str, nodes: list[Node], arenas: ArenaSet, ctxs: dict[str, NodeCtx], keep: set[str]
    ) -> list[str]:
        last_use: dict[str, int] = {}
        for idx, n in enumerate(nodes):
            for i in n.inputs:
                last_use[i] = idx
        for k in keep:
            last_use[k] = len(nodes)
        blocks: dict[str, tuple] = {}
        code: list[str] = []
        for idx, n in enumerate(nodes):
            ctx = ctxs[n.name]
            em = self.emitters[n.name]
            is_readout = isinstance(n.op, O.Readout)
            produce = phase == "pooled" or not is_readout
            if produce:
                for k, o in enumerate(n.outputs):
                    ctype = "float" if (phase == "pooled" and is_readout) else check_ctype(em.out_ctype(ctx, k))
                    self.ctypes[o] = ctype
                    arena = arenas.get(ctype)
                    blocks[o] = (arena, arena.alloc(self.types[o].features, o))
                    self.exprs[(phase, o)] = arena.expr(blocks[o][1])
            tmp_blocks = []
            temps = {} if (phase == "pooled" and is_readout) else em.temps(ctx)
            for name, spec in temps.items():
                size, ctype = (spec, "float") if isinstance(spec, int) else spec
                arena = arenas.get(ctype)
                b = arena.alloc(size, f"{n.name}:{name}")
                tmp_blocks.append((arena, b))
                ctx.bufs[f"tmp:{name}"] = arena.expr(b)
            numeric = self.numerics.get(n.name, F32)
            tag = n.op.kind if numeric == F32 else f"{n.op.kind}, {numeric}"
            header = f"/* {n.name} ({tag}): {', '.join(n.inputs)} -> {', '.join(n.outputs)} */"
            if phase == "step":
                body = em.step(ctx)
            elif is_readout:
                body = em.readout_value(ctx)  # type: ignore[attr-defined]
            else:
                body = em.pooled(ctx)
            code.append(header)
            code.append("{")
            code.extend(indent(body.strip("\n")))
            code.append("}")
            for arena, b in tmp_blocks:
                arena.free(b)
            if produce:
                for o in n.outputs:
                    if last_use.get(o, -1) <= idx:
                        blocks[o][0].free(blocks[o][1])
            for i in set(n.inputs):
                if last_use.get(i) == idx and i in blocks:
                    blocks[i][0].free(blocks[i][1])
        return code

    @staticmethod
    def _scratch_bytes(arenas: ArenaSet) -> int:
        used = arenas.used()
        if not used:
            return 4  # the struct keeps a one-element float scratch
        total = sum(a.nbytes for a in used)
        return -(-total // 4) * 4  # struct tail padding to float alignment

    # -- text -------------------------------------------------------------------------------------
    def _struct_fields(self, step_arena: ArenaSet) -> list[str]:
        lines = []
        for key, shape in self.spec.items():
            size = int(np.prod(shape)) if shape else 1
            lines.append(f'    float {self._state_fields[key]}[{size}];  /* "{key}" {tuple(shape)} */')
        for key, fld in self._int_fields.items():
            lines.append(f"    int {fld};  /* {key} */")
        used = step_arena.used() or [step_arena.get("float")]
        for a in used:
            lines.append(
                f"    {a.ctype} scratch{CTYPE_SUFFIX[a.ctype]}[{max(1, a.high_water)}];"
                "  /* per-step value buffers (static plan) */"
            )
        return lines

    def _header(self, info: dict, step_arena: ArenaSet) -> str:
        p, P = self.prefix, self.P
        outs = "\n".join(
            f" *   {o['name']}: {'per step' if o['temporal'] else 'pooled'}, {o['features']} features at offset "
            f"{o['offset']}"
            for o in info["outputs"]
        )
        return f"""/* Generated by edgeseq: streaming C99 inference for one sequence at a time.
 *
 * Outputs (graph order):
{outs}
 */
#ifndef {P}_MODEL_H
#define {P}_MODEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

#define {P}_IN_FEATURES {info["in_features"]}
#define {P}_STEP_OUT_FEATURES {info["step_out_features"]}
#define {P}_POOLED_OUT_FEATURES {info["pooled_out_features"]}
#define {P}_STATE_FLOATS {info["state_floats"]}
#define {P}_SCRATCH_BYTES {info["buffer_plan"]["scratch_bytes"]}

typedef struct {p}_state {{
{chr(10).join(self._struct_fields(step_arena))}
}} {p}_state;

/* Start a new sequence: zero every state. */
void {p}_reset({p}_state *s);
/* One time step: x_t has {P}_IN_FEATURES values; y_t (may be NULL) receives {P}_STEP_OUT_FEATURES. */
void {p}_step({p}_state *s, const float *x_t, float *y_t);
/* Pooled outputs ({P}_POOLED_OUT_FEATURES values): readouts over every step since the last reset. */
void {p}_pooled(const {p}_state *s, float *y);
/* T steps of x (T x {P}_IN_FEATURES, row-major); y (may be NULL) receives T x {P}_STEP_OUT_FEATURES.
 * The state carries on: call {p}_reset first for a new sequence, or not, to continue one. */
void {p}_run({p}_state *s, const float *x, int T, float *y);
/* Canonical state ({P}_STATE_FLOATS values, the graph's state_spec order and layout). */
void {p}_state_save(const {p}_state *s, float *out);
void {p}_state_load({p}_state *s, const float *in);

#ifdef __cplusplus
}}
#endif

#endif /* {P}_MODEL_H */
"""

    def _source(self, info, step_code, pooled_code, step_arena, pool_arena, seq_nodes, ctxs) -> str:
        p, P = self.prefix, self.P
        lines = [
            "/* Generated by edgeseq from an IR graph: C99, static memory only. */",
            '#include "model.h"',
            "#include <math.h>",
            "#include <string.h>",
            "",
            prelude("\n".join(step_code + pooled_code)),
            "",
            "/* ---- weights (read-only: flash on a microcontroller) ---- */",
        ]
        lines += [text for _, text in self.consts]
        lines += ["", f"void {p}_reset({p}_state *s)", "{", "    memset(s, 0, sizeof *s);", "}", ""]
        # step
        lines += [f"void {p}_step({p}_state *s, const float *x_t, float *y_t)", "{"]
        for a in step_arena.used():
            lines.append(f"    {a.ctype} *const {a.name} = s->scratch{CTYPE_SUFFIX[a.ctype]};")
        lines += indent(step_code)
        outs_t = [o for o in info["outputs"] if o["temporal"]]
        if outs_t:
            lines.append("    if (y_t) {")
            for o in outs_t:
                lines.append(
                    f"        memcpy(y_t + {o['offset']}, {self.value_expr(o['name'], 'step')}, "
                    f"{o['features']} * sizeof(float));"
                )
            lines.append("    }")
        else:
            lines.append("    (void)y_t;")
        if not step_code:
            lines.append("    (void)s;")
        lines += ["}", ""]
        # pooled
        lines += [f"void {p}_pooled(const {p}_state *s, float *y)", "{"]
        outs_p = [o for o in info["outputs"] if not o["temporal"]]
        for a in pool_arena.used():
            lines.append(f"    {a.ctype} {a.name}[{a.high_water}];")
        lines += indent(pooled_code)
        if outs_p:
            for o in outs_p:
                lines.append(
                    f"    memcpy(y + {o['offset']}, {self.value_expr(o['name'], 'pooled')}, "
                    f"{o['features']} * sizeof(float));"
                )
        else:
            lines += ["    (void)s;", "    (void)y;"]
        lines += ["}", ""]
        # run
        lines += [
            f"void {p}_run({p}_state *s, const float *x, int T, float *y)",
            "{",
            "    for (int t = 0; t < T; ++t)",
            f"        {p}_step(s, x + (long)t * {P}_IN_FEATURES, y ? y + (long)t * {P}_STEP_OUT_FEATURES : 0);",
            "}",
            "",
        ]
        # canonical state save / load
        save, load = [], []
        for ent in info["state_layout"]:
            node, name = ent["key"].split("/", 1)
            ctx = ctxs.get(node)
            em = self.emitters[node]
            dst, src = f"out + {ent['offset']}", f"in + {ent['offset']}"
            custom_s = em.save_state(ctx, name, dst) if ctx else None
            custom_l = em.load_state(ctx, name, src) if ctx else None
            fld = f"s->{ent['field']}"
            save.append(custom_s or f"memcpy({dst}, {fld}, {ent['size']} * sizeof(float));")
            load.append(custom_l or f"memcpy({fld}, {src}, {ent['size']} * sizeof(float));")
        lines += [f"void {p}_state_save(const {p}_state *s, float *out)", "{"]
        lines += indent(save) if save else ["    (void)s;", "    (void)out;"]
        lines += ["}", "", f"void {p}_state_load({p}_state *s, const float *in)", "{"]
        if self._int_fields:
            lines += [f"    s->{fld} = 0;" for fld in self._int_fields.values()]
        lines += indent(load) if load else ["    (void)s;", "    (void)in;"]
        lines += ["}", ""]
        return "\n".join(lines)


def generate(
    graph: Graph,
    prefix: str = "esq",
    numerics: Mapping[str, str] | None = None,
    target: str = "c",
    window_steps: int | None = None,
) -> CSources:
    """Generate ``model.h`` / ``model.c`` for ``graph``.

    ``numerics`` maps node names to a numeric format (default ``"f32"`` for every node);
    ``target`` only names the target in error messages. A window graph becomes a whole-window model
    for windows of up to ``window_steps`` steps (default 128; :mod:`.window_f32`). Raises
    UnsupportedOpError naming the node, op and target when an op has no lowering."""
    return CodeGen(graph, prefix, numerics, target, window_steps).generate()
