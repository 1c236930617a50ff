"""Float32 C emitters of the feed-forward op kinds (scan ops render through their step programs,
:mod:`edgeseq.export.c.step_f32`). Equations follow :mod:`edgeseq.ir.ops` and the reference
interpreter (:mod:`edgeseq.ir.interpret`) term by term; constant folding (batch-norm scale/shift)
happens in float64 before the single rounding to float32."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ...errors import UnsupportedOpError
from ...ir.types import Act, ReadoutMode
from .cwriter import c_float
from .emitter import Emitter, NodeCtx, register

# ----------------------------------------------------------------------------------------------
# shared pieces


#: activation -> (libm functions it needs, C expression of the scalar ``x``; slope / lo / hi from the op)
ACTIVATIONS: dict[Act, tuple[tuple[str, ...], Callable[[str, str, str, str], str]]] = {
    Act.IDENTITY: ((), lambda x, s, lo, hi: x),
    Act.RELU: ((), lambda x, s, lo, hi: f"({x} > 0.0f ? {x} : 0.0f)"),
    Act.TANH: (("tanhf",), lambda x, s, lo, hi: f"tanhf({x})"),
    Act.SIGMOID: (("expf",), lambda x, s, lo, hi: f"esq_sigmoid({x})"),
    Act.HARDSIGMOID: ((), lambda x, s, lo, hi: f"esq_clamp({x} / 6.0f + 0.5f, 0.0f, 1.0f)"),
    Act.SILU: (("expf",), lambda x, s, lo, hi: f"({x} * esq_sigmoid({x}))"),
    Act.GELU: (("expf",), lambda x, s, lo, hi: f"(0.5f * {x} * (1.0f + esq_erf({x} * 0.70710678118654752f)))"),
    Act.GELU_TANH: (
        ("tanhf",),
        lambda x, s, lo, hi: (
            f"(0.5f * {x} * (1.0f + tanhf(0.79788456080286536f * ({x} + 0.044715f * {x} * {x} * {x}))))"
        ),
    ),
    Act.LEAKY_RELU: ((), lambda x, s, lo, hi: f"({x} >= 0.0f ? {x} : {s} * {x})"),
    Act.HARDTANH: ((), lambda x, s, lo, hi: f"esq_clamp({x}, {lo}, {hi})"),
    Act.EXP: (("expf",), lambda x, s, lo, hi: f"expf({x})"),
    Act.SOFTPLUS: (("expf",), lambda x, s, lo, hi: f"esq_softplus({x})"),
    Act.MINRNN_G: (("expf",), lambda x, s, lo, hi: f"esq_minrnn_g({x})"),
}


def act_expr(ctx: NodeCtx, fn: Act, x: str, slope: float = 0.01, lo: float = -1.0, hi: float = 1.0) -> str:
    """C expression of activation ``fn`` applied to the scalar C expression ``x`` (evaluated once
    per use: pass a plain variable)."""
    if fn not in ACTIVATIONS:
        raise UnsupportedOpError(f"activation {fn.value} has no C lowering", where=ctx.where)
    libm, expr = ACTIVATIONS[fn]
    for f in libm:
        ctx.uses(f)
    return expr(x, c_float(slope), c_float(lo), c_float(hi))


def copy(dst: str, src: str, n: int) -> str:
    return f"memcpy({dst}, {src}, {n} * sizeof(float));\n"


def f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# feed-forward ops


@register
class LinearF32(Emitter):
    kind = "Linear"
    stateless = True

    def step(self, ctx):
        op = ctx.op
        o, i = op.weight.shape
        w = ctx.const("weight", op.weight)
        b = f"{ctx.const('bias', op.bias)}[j] + " if op.bias is not None else ""
        return f"for (int j = 0; j < {o}; ++j) {ctx.out()}[j] = {b}esq_dot({w} + j * {i}, {ctx.inp()}, {i});\n"


@register
class Conv1dF32(Emitter):
    """Causal dilated grouped convolution; the last (K-1)*dilation inputs live in a ring buffer
    (state ``buf``) whose oldest row is at ``pos``. Weights are stored tap-major, (K, out, in/groups)."""

    kind = "Conv1d"

    def int_state(self, ctx):
        return ("pos",) if ctx.op.history else ()

    def step(self, ctx):
        op = ctx.op
        out_ch, cg, k = op.weight.shape
        g, hist, cin = op.groups, op.history, op.in_features
        og = out_ch // g
        w = ctx.const(
            "weight", np.transpose(f64(op.weight), (2, 0, 1)), f"{ctx.node.name} weight (K={k}, out, in/groups)"
        )
        b = ctx.const("bias", op.bias) if op.bias is not None else None
        y, x = ctx.out(), ctx.inp()
        lines = []
        if hist:
            lines.append(f"const int pos = {ctx.istate('pos')};")
            lines.append(f"float *const ring = {ctx.state('buf')};")
        lines.append(
            f"memcpy({y}, {b}, {out_ch} * sizeof(float));" if b else f"memset({y}, 0, {out_ch} * sizeof(float));"
        )
        for tap in range(k):
            j = tap * op.dilation
            if j == hist:
                row = x
            else:
                lines.append(f"{{ int r = pos + {j}; if (r >= {hist}) r -= {hist};")
                row = f"ring + r * {cin}"
            grp = "" if g == 1 else f" + j / {og} * {cg}"
            wk = f"{w} + {tap * out_ch * cg} + j * {cg}"
            call = f"for (int j = 0; j < {out_ch}; ++j) {y}[j] += esq_dot({wk}, {row}{grp}, {cg});"
            if j == hist:
                lines.append(call)
            else:
                lines.append("  " + call + " }")
        if hist:
            lines.append(f"memcpy(ring + pos * {cin}, {x}, {cin} * sizeof(float));")
            lines.append(f"{ctx.istate('pos')} = pos + 1 == {hist} ? 0 : pos + 1;")
        return "\n".join(lines) + "\n"

    def _rows(self, ctx, key, ext: str, load: bool) -> str | None:
        if key != "buf":
            return None
        op = ctx.op
        hist, cin = op.history, op.in_features
        ring, pos = ctx.state("buf"), ctx.istate("pos")
        if load:  # canonical rows are oldest first; loading sets pos = 0
            return f"memcpy({ring}, {ext}, {hist * cin} * sizeof(float));"
        return (
            f"for (int j = 0; j < {hist}; ++j) {{ int r = {pos} + j; if (r >= {hist}) r -= {hist}; "
            f"memcpy(({ext}) + j * {cin}, {ring} + r * {cin}, {cin} * sizeof(float)); }}"
        )

    def save_state(self, ctx, key, dst):
        return self._rows(ctx, key, dst, load=False)

    def load_state(self, ctx, key, src):
        return self._rows(ctx, key, src, load=True)


@register
class LayerNormF32(Emitter):
    kind = "LayerNorm"
    stateless = True

    def step(self, ctx):
        op = ctx.op
        n = ctx.n_in()
        ctx.uses("sqrtf")
        w = ctx.const("weight", op.weight) if op.weight is not None else None
        b = ctx.const("bias", op.bias) if op.bias is not None else None
        x, y = ctx.inp(), ctx.out()
        term = "(v - mu) * inv"
        if w:
            term = f"{term} * {w}[i]"
        if b:
            term = f"{term} + {b}[i]"
        return (
            f"float mu = 0.0f, var = 0.0f;\n"
            f"for (int i = 0; i < {n}; ++i) mu += {x}[i];\n"
            f"mu /= {n}.0f;\n"
            f"for (int i = 0; i < {n}; ++i) {{ const float d = {x}[i] - mu; var += d * d; }}\n"
            f"var /= {n}.0f;\n"
            f"const float inv = 1.0f / sqrtf(var + {c_float(op.eps)});\n"
            f"for (int i = 0; i < {n}; ++i) {{ const float v = {x}[i]; {y}[i] = {term}; }}\n"
        )


@register
class BatchNormF32(Emitter):
    """Inference batch norm folded (in float64) into y = x * scale + shift."""

    kind = "BatchNorm"
    stateless = True

    def step(self, ctx):
        op = ctx.op
        scale = 1.0 / np.sqrt(f64(op.var) + op.eps)
        if op.weight is not None:
            scale = scale * f64(op.weight)
        shift = -f64(op.mean) * scale
        if op.bias is not None:
            shift = shift + f64(op.bias)
        n = ctx.n_in()
        sc = ctx.const("scale", scale)
        sh = ctx.const("shift", shift)
        return f"for (int i = 0; i < {n}; ++i) {ctx.out()}[i] = {ctx.inp()}[i] * {sc}[i] + {sh}[i];\n"


@register
class ActivationF32(Emitter):
    kind = "Activation"
    stateless = True

    def step(self, ctx):
        op = ctx.op
        n = ctx.n_in()
        if op.fn is Act.IDENTITY:
            return copy(ctx.out(), ctx.inp(), n)
        fx = act_expr(ctx, op.fn, "v", slope=op.slope, lo=op.lo, hi=op.hi)
        return f"for (int i = 0; i < {n}; ++i) {{ const float v = {ctx.inp()}[i]; {ctx.out()}[i] = {fx}; }}\n"


@register
class AddF32(Emitter):
    kind = "Add"
    stateless = True

    def step(self, ctx):
        return f"for (int i = 0; i < {ctx.n_out()}; ++i) {ctx.out()}[i] = {ctx.inp(0)}[i] + {ctx.inp(1)}[i];\n"


@register
class ConcatF32(Emitter):
    kind = "Concat"
    stateless = True

    def step(self, ctx):
        out, off = [], 0
        for k in range(len(ctx.node.inputs)):
            n = ctx.n_in(k)
            out.append(copy(f"{ctx.out()} + {off}", ctx.inp(k), n))
            off += n
        return "".join(out)


@register
class ReadoutF32(Emitter):
    """Per step: keep the last value or accumulate the sum (and count); pooled: the readout."""

    kind = "Readout"

    def step(self, ctx):
        n, x = ctx.n_in(), ctx.inp()
        if ctx.op.mode is ReadoutMode.LAST:
            return copy(ctx.state("last"), x, n)
        code = f"for (int i = 0; i < {n}; ++i) {ctx.state('sum')}[i] += {x}[i];\n"
        if ctx.op.mode is ReadoutMode.MEAN:
            code += f"{ctx.state('count')}[0] += 1.0f;\n"
        return code

    def readout_value(self, ctx):
        n, y = ctx.n_in(), ctx.out()
        mode = ctx.op.mode
        if mode is ReadoutMode.LAST:
            return copy(y, ctx.state("last"), n)
        if mode is ReadoutMode.SUM:
            return copy(y, ctx.state("sum"), n)
        c = ctx.state("count")
        return (
            f"const float cnt = {c}[0] > 1.0f ? {c}[0] : 1.0f;\n"
            f"for (int i = 0; i < {n}; ++i) {y}[i] = {ctx.state('sum')}[i] / cnt;\n"
        )
