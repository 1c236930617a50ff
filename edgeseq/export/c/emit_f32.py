"""Float32 C emitters, one per IR op kind. Equations follow :mod:`edgeseq.ir.ops` and the reference
interpreter (:mod:`edgeseq.ir.interpret`) term by term; constant folding (batch-norm scale/shift,
summed biases, clipped decays) happens in float64 before the single rounding to float32."""

from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import ops as O
from ...ir.types import Act, ReadoutMode, Recurrence, ResetRule
from .codegen import Emitter, NodeCtx, register
from .cwriter import c_float


# ----------------------------------------------------------------------------------------------
# shared pieces


def act_expr(ctx: NodeCtx, fn: Act, x: str, slope: float = 0.01, lo: float = -1.0, hi: float = 1.0) -> str:
    """C expression of activation ``fn`` applied to the scalar C expression ``x`` (evaluated once
    per use: pass a plain variable)."""
    if fn is Act.IDENTITY:
        return x
    if fn is Act.RELU:
        return f"({x} > 0.0f ? {x} : 0.0f)"
    if fn is Act.TANH:
        ctx.uses("tanhf")
        return f"tanhf({x})"
    if fn is Act.SIGMOID:
        ctx.uses("expf")
        return f"esq_sigmoid({x})"
    if fn is Act.HARDSIGMOID:
        return f"esq_clamp({x} / 6.0f + 0.5f, 0.0f, 1.0f)"
    if fn is Act.SILU:
        ctx.uses("expf")
        return f"({x} * esq_sigmoid({x}))"
    if fn is Act.GELU:
        ctx.uses("expf")
        return f"(0.5f * {x} * (1.0f + esq_erf({x} * 0.70710678118654752f)))"
    if fn is Act.GELU_TANH:
        ctx.uses("tanhf")
        return (f"(0.5f * {x} * (1.0f + tanhf(0.79788456080286536f * ({x} + 0.044715f * {x} * {x} * {x}))))")
    if fn is Act.LEAKY_RELU:
        return f"({x} >= 0.0f ? {x} : {c_float(slope)} * {x})"
    if fn is Act.HARDTANH:
        return f"esq_clamp({x}, {c_float(lo)}, {c_float(hi)})"
    if fn is Act.SOFTPLUS:
        ctx.uses("expf")
        return f"esq_softplus({x})"
    if fn is Act.MINRNN_G:
        ctx.uses("expf")
        return f"esq_minrnn_g({x})"
    raise UnsupportedOpError(f"activation {fn.value} has no C lowering", where=ctx.where)


def act_loop(ctx: NodeCtx, fn: Act, buf: str, n: int, src: str | None = None, **kw) -> str:
    """``buf[i] = fn(src[i])`` for i < n (in place when src is None)."""
    src = src or buf
    if fn is Act.IDENTITY and src == buf:
        return ""
    return (f"for (int i = 0; i < {n}; ++i) {{\n"
            f"    const float v = {src}[i];\n"
            f"    {buf}[i] = {act_expr(ctx, fn, 'v', **kw)};\n"
            f"}}\n")


def opt_const(ctx: NodeCtx, name: str, a) -> str:
    return "0" if a is None else ctx.const(name, a)


def copy(dst: str, src: str, n: int) -> str:
    return f"memcpy({dst}, {src}, {n} * sizeof(float));\n"


def f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def neuron_loop(ctx: NodeCtx, neuron: O.NeuronParams, tag: str, n: int, current: str, spikes: str,
                mem: str, syn: str | None) -> str:
    """One step of a population of n (CuBa-)LIF neurons (snntorch semantics, see NeuronParams):
    reads ``current[i]``, updates ``mem`` (and ``syn``) in place, writes ``spikes[i]``."""
    beta = ctx.per_neuron(f"{tag}beta", neuron.beta, n, clip01=True)
    thr = ctx.per_neuron(f"{tag}threshold", neuron.threshold, n)
    lines = [f"for (int i = 0; i < {n}; ++i) {{",
             f"    const float beta = {beta('i')}, thr = {thr('i')};",
             f"    const float mem = {mem}[i];"]
    rule = neuron.reset
    if rule is not ResetRule.NONE:
        lines.append("    const float reset = (mem - thr > 0.0f) ? 1.0f : 0.0f;")
    if neuron.synaptic:
        alpha = ctx.per_neuron(f"{tag}alpha", neuron.alpha, n, clip01=True)
        lines += [f"    const float drive = {alpha('i')} * {syn}[i] + {current}[i];",
                  f"    {syn}[i] = drive;"]
    else:
        lines.append(f"    const float drive = {current}[i];")
    if rule is ResetRule.SUBTRACT:
        lines.append("    float u = beta * mem + drive - reset * thr;")
    elif rule is ResetRule.ZERO:
        lines.append("    float u = beta * ((1.0f - reset) * mem) + drive;")
    elif rule is ResetRule.ZERO_TOTAL:
        lines += ["    const float base = beta * mem + drive;", "    float u = base - reset * base;"]
    else:
        lines.append("    float u = beta * mem + drive;")
    lines.append("    const float fired = (u - thr > 0.0f) ? 1.0f : 0.0f;")
    if neuron.spike_scale is not None:
        scale = ctx.per_neuron(f"{tag}spike_scale", neuron.spike_scale, n)
        lines.append(f"    {spikes}[i] = fired * {scale('i')};")
    else:
        lines.append(f"    {spikes}[i] = fired;")
    if not neuron.reset_delay and rule is not ResetRule.NONE:
        lines.append("    const float do_reset = fired - reset;")
        lines.append("    u = u - do_reset * thr;" if rule is ResetRule.SUBTRACT else "    u = u - do_reset * u;")
    lines += [f"    {mem}[i] = u;", "}"]
    return "\n".join(lines) + "\n"


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
        b = opt_const(ctx, "bias", op.bias)
        return f"mv({ctx.out()}, {w}, {ctx.inp()}, {b}, {o}, {i}, 0);\n"


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
        w = ctx.const("weight", np.transpose(f64(op.weight), (2, 0, 1)), f"{ctx.node.name} weight (K={k}, out, in/groups)")
        b = ctx.const("bias", op.bias) if op.bias is not None else None
        y, x = ctx.out(), ctx.inp()
        lines = []
        if hist:
            lines.append(f"const int pos = {ctx.istate('pos')};")
            lines.append(f"float *const ring = {ctx.state('buf')};")
        lines.append(f"memcpy({y}, {b}, {out_ch} * sizeof(float));" if b else f"memset({y}, 0, {out_ch} * sizeof(float));")
        for tap in range(k):
            j = tap * op.dilation
            if j == hist:
                row = x
            else:
                lines.append(f"{{ int r = pos + {j}; if (r >= {hist}) r -= {hist};")
                row = f"ring + r * {cin}"
            wk = f"{w} + {tap * out_ch * cg}"
            if g == 1:
                call = f"mv({y}, {wk}, {row}, 0, {out_ch}, {cin}, 1);"
            else:
                call = (f"for (int gi = 0; gi < {g}; ++gi) "
                        f"mv({y} + gi * {og}, {wk} + gi * {og * cg}, ({row}) + gi * {cg}, 0, {og}, {cg}, 1);")
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
        return (f"for (int j = 0; j < {hist}; ++j) {{ int r = {pos} + j; if (r >= {hist}) r -= {hist}; "
                f"memcpy(({ext}) + j * {cin}, {ring} + r * {cin}, {cin} * sizeof(float)); }}")

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
        return (f"float mu = 0.0f, var = 0.0f;\n"
                f"for (int i = 0; i < {n}; ++i) mu += {x}[i];\n"
                f"mu /= {n}.0f;\n"
                f"for (int i = 0; i < {n}; ++i) {{ const float d = {x}[i] - mu; var += d * d; }}\n"
                f"var /= {n}.0f;\n"
                f"const float inv = 1.0f / sqrtf(var + {c_float(op.eps)});\n"
                f"for (int i = 0; i < {n}; ++i) {{ const float v = {x}[i]; {y}[i] = {term}; }}\n")


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
        return act_loop(ctx, op.fn, ctx.out(), n, ctx.inp(), slope=op.slope, lo=op.lo, hi=op.hi)


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
        return (f"const float cnt = {c}[0] > 1.0f ? {c}[0] : 1.0f;\n"
                f"for (int i = 0; i < {n}; ++i) {y}[i] = {ctx.state('sum')}[i] / cnt;\n")


# ----------------------------------------------------------------------------------------------
# recurrent scans


def _sum_bias(a, b):
    if a is None and b is None:
        return None
    return (f64(a) if a is not None else 0.0) + (f64(b) if b is not None else 0.0)


@register
class RNNF32(Emitter):
    kind = "RNN"

    def step(self, ctx):
        op = ctx.op
        h, i = op.hidden_size, op.input_size
        wih, whh = ctx.const("w_ih", op.w_ih), ctx.const("w_hh", op.w_hh)
        b = _sum_bias(op.b_ih, op.b_hh)
        bc = ctx.const("bias", b) if b is not None else "0"
        y, st = ctx.out(), ctx.state("h")
        return (f"mv({y}, {wih}, {ctx.inp()}, {bc}, {h}, {i}, 0);\n"
                f"mv({y}, {whh}, {st}, 0, {h}, {h}, 1);\n"
                + act_loop(ctx, op.act, y, h) + copy(st, y, h))


@register
class GRUF32(Emitter):
    """torch GRU, gates [r, z, n]; r and z biases summed, the n-gate recurrent bias kept apart."""

    kind = "GRU"

    def temps(self, ctx):
        h = ctx.op.hidden_size
        t = {"gi": 3 * h, "gh": 3 * h}
        if not ctx.op.reset_after:
            t["rh"] = h
        return t

    def step(self, ctx):
        op = ctx.op
        h, i = op.hidden_size, op.input_size
        ctx.uses("expf", "tanhf")
        b_ih = f64(op.b_ih) if op.b_ih is not None else np.zeros(3 * h)
        b_hh = f64(op.b_hh) if op.b_hh is not None else np.zeros(3 * h)
        bx = np.concatenate([b_ih[: 2 * h] + b_hh[: 2 * h], b_ih[2 * h :]])
        wih, whh = ctx.const("w_ih", op.w_ih), ctx.const("w_hh", op.w_hh)
        bxc = ctx.const("b_x", bx)
        gi, gh, st, y = ctx.tmp("gi"), ctx.tmp("gh"), ctx.state("h"), ctx.out()
        code = f"mv({gi}, {wih}, {ctx.inp()}, {bxc}, {3 * h}, {i}, 0);\n"
        upd = (f"    const float hn = (1.0f - z) * n + z * {st}[i];\n"
               f"    {st}[i] = hn;\n    {y}[i] = hn;\n}}\n")
        if op.reset_after:
            bh = ctx.const("b_h", np.concatenate([np.zeros(2 * h), b_hh[2 * h :]]))
            code += (f"mv({gh}, {whh}, {st}, {bh}, {3 * h}, {h}, 0);\n"
                     f"for (int i = 0; i < {h}; ++i) {{\n"
                     f"    const float r = esq_sigmoid({gi}[i] + {gh}[i]);\n"
                     f"    const float z = esq_sigmoid({gi}[{h} + i] + {gh}[{h} + i]);\n"
                     f"    const float n = tanhf({gi}[{2 * h} + i] + r * {gh}[{2 * h} + i]);\n" + upd)
        else:
            bn = ctx.const("b_hn", b_hh[2 * h :])
            rh = ctx.tmp("rh")
            code += (f"mv({gh}, {whh}, {st}, 0, {2 * h}, {h}, 0);\n"
                     f"for (int i = 0; i < {h}; ++i) {rh}[i] = esq_sigmoid({gi}[i] + {gh}[i]) * {st}[i];\n"
                     f"mv({gh} + {2 * h}, {whh} + {2 * h * h}, {rh}, {bn}, {h}, {h}, 0);\n"
                     f"for (int i = 0; i < {h}; ++i) {{\n"
                     f"    const float z = esq_sigmoid({gi}[{h} + i] + {gh}[{h} + i]);\n"
                     f"    const float n = tanhf({gi}[{2 * h} + i] + {gh}[{2 * h} + i]);\n" + upd)
        return code


@register
class LSTMF32(Emitter):
    kind = "LSTM"

    def temps(self, ctx):
        return {"g": 4 * ctx.op.hidden_size}

    def step(self, ctx):
        op = ctx.op
        h, i = op.hidden_size, op.input_size
        ctx.uses("expf", "tanhf")
        wih, whh = ctx.const("w_ih", op.w_ih), ctx.const("w_hh", op.w_hh)
        b = _sum_bias(op.b_ih, op.b_hh)
        bc = ctx.const("bias", b) if b is not None else "0"
        g, hs, cs, y = ctx.tmp("g"), ctx.state("h"), ctx.state("c"), ctx.out()
        return (f"mv({g}, {wih}, {ctx.inp()}, {bc}, {4 * h}, {i}, 0);\n"
                f"mv({g}, {whh}, {hs}, 0, {4 * h}, {h}, 1);\n"
                f"for (int i = 0; i < {h}; ++i) {{\n"
                f"    const float ig = esq_sigmoid({g}[i]), fg = esq_sigmoid({g}[{h} + i]);\n"
                f"    const float cg = tanhf({g}[{2 * h} + i]), og = esq_sigmoid({g}[{3 * h} + i]);\n"
                f"    const float c = fg * {cs}[i] + ig * cg;\n"
                f"    const float hn = og * tanhf(c);\n"
                f"    {cs}[i] = c;\n    {hs}[i] = hn;\n    {y}[i] = hn;\n}}\n")


@register
class MinGRUF32(Emitter):
    kind = "MinGRU"

    def temps(self, ctx):
        return {"z": ctx.op.hidden_size, "c": ctx.op.hidden_size}

    def step(self, ctx):
        op = ctx.op
        h, i = op.hidden_size, op.input_size
        ctx.uses("expf")
        z, c, st, y, x = ctx.tmp("z"), ctx.tmp("c"), ctx.state("h"), ctx.out(), ctx.inp()
        return (f"mv({z}, {ctx.const('w_z', op.w_z)}, {x}, {opt_const(ctx, 'b_z', op.b_z)}, {h}, {i}, 0);\n"
                f"mv({c}, {ctx.const('w_h', op.w_h)}, {x}, {opt_const(ctx, 'b_h', op.b_h)}, {h}, {i}, 0);\n"
                f"for (int i = 0; i < {h}; ++i) {{\n"
                f"    const float zz = esq_sigmoid({z}[i]);\n"
                f"    const float v = {c}[i];\n"
                f"    const float hn = (1.0f - zz) * {st}[i] + zz * {act_expr(ctx, op.candidate, 'v')};\n"
                f"    {st}[i] = hn;\n    {y}[i] = hn;\n}}\n")


@register
class MinLSTMF32(Emitter):
    kind = "MinLSTM"

    def temps(self, ctx):
        h = ctx.op.hidden_size
        return {"f": h, "i": h, "c": h}

    def step(self, ctx):
        op = ctx.op
        h, n_in = op.hidden_size, op.input_size
        ctx.uses("expf")
        f, ig, c, st, y, x = ctx.tmp("f"), ctx.tmp("i"), ctx.tmp("c"), ctx.state("h"), ctx.out(), ctx.inp()
        return (f"mv({f}, {ctx.const('w_f', op.w_f)}, {x}, {opt_const(ctx, 'b_f', op.b_f)}, {h}, {n_in}, 0);\n"
                f"mv({ig}, {ctx.const('w_i', op.w_i)}, {x}, {opt_const(ctx, 'b_i', op.b_i)}, {h}, {n_in}, 0);\n"
                f"mv({c}, {ctx.const('w_h', op.w_h)}, {x}, {opt_const(ctx, 'b_h', op.b_h)}, {h}, {n_in}, 0);\n"
                f"for (int i = 0; i < {h}; ++i) {{\n"
                f"    const float fg = esq_sigmoid({f}[i]), ii = esq_sigmoid({ig}[i]);\n"
                f"    const float sm = fg + ii;\n"
                f"    const float v = {c}[i];\n"
                f"    const float hn = (fg / sm) * {st}[i] + (ii / sm) * {act_expr(ctx, op.candidate, 'v')};\n"
                f"    {st}[i] = hn;\n    {y}[i] = hn;\n}}\n")


@register
class LMUF32(Emitter):
    """u = e_x x + b_u + e_m m + e_h h;  m[d] = Abar m[d] + Bbar u[d];  h = act(w_m m + w_x x + w_h h + b_h)."""

    kind = "LMU"

    def temps(self, ctx):
        op = ctx.op
        return {"u": op.memory_d, "mn": op.memory_size}

    def step(self, ctx):
        op = ctx.op
        d, ms, i, order = op.memory_d, op.memory_size, op.input_size, op.order
        abar, bbar = op.matrices()
        A = ctx.const("Abar", abar, f"{ctx.node.name} Abar ({order}x{order}, {op.discretizer.value}, theta={op.theta})")
        B = ctx.const("Bbar", np.asarray(bbar).reshape(-1))
        x, u, mn, m, y = ctx.inp(), ctx.tmp("u"), ctx.tmp("mn"), ctx.state("m"), ctx.out()
        if ctx.has_state("h"):
            hprev = ctx.state("h")
        elif not op.has_hidden:
            hprev = m
        else:
            hprev = None
        code = f"mv({u}, {ctx.const('e_x', op.e_x)}, {x}, {opt_const(ctx, 'b_u', op.b_u)}, {d}, {i}, 0);\n"
        if op.e_m is not None:
            code += f"mv({u}, {ctx.const('e_m', op.e_m)}, {m}, 0, {d}, {ms}, 1);\n"
        if op.e_h is not None:
            code += f"mv({u}, {ctx.const('e_h', op.e_h)}, {hprev}, 0, {d}, {op.hidden_size}, 1);\n"
        code += f"lmem({mn}, {A}, {B}, {m}, {u}, {d}, {order});\n"
        if not op.has_hidden:
            return code + copy(m, mn, ms) + copy(y, mn, ms)
        h = op.hidden_size
        code += f"mv({y}, {ctx.const('w_m', op.w_m)}, {mn}, {opt_const(ctx, 'b_h', op.b_h)}, {h}, {ms}, 0);\n"
        if op.w_x is not None:
            code += f"mv({y}, {ctx.const('w_x', op.w_x)}, {x}, 0, {h}, {i}, 1);\n"
        if op.w_h is not None:
            code += f"mv({y}, {ctx.const('w_h', op.w_h)}, {hprev}, 0, {h}, {h}, 1);\n"
        code += act_loop(ctx, op.act, y, h) + copy(m, mn, ms)
        if ctx.has_state("h"):
            code += copy(ctx.state("h"), y, h)
        return code


# ----------------------------------------------------------------------------------------------
# spiking


class _LIFLike(Emitter):
    def temps(self, ctx):
        n = ctx.n_in()
        t = {}
        if ctx.op.recurrence is not Recurrence.NONE:
            t["cur"] = n
        if ctx.op.emit == "membrane":
            t["spk"] = n
        return t

    def step(self, ctx):
        op = ctx.op
        n = ctx.n_in()
        x = ctx.inp()
        code = ""
        if op.recurrence is Recurrence.ONE_TO_ONE:
            v = ctx.per_neuron("v_rec", op.v_rec, n)
            cur = ctx.tmp("cur")
            code += f"for (int i = 0; i < {n}; ++i) {cur}[i] = {x}[i] + {v('i')} * {ctx.state('spk')}[i];\n"
        elif op.recurrence is Recurrence.ALL_TO_ALL:
            cur = ctx.tmp("cur")
            b = ctx.const("b_rec", op.b_rec) if op.b_rec is not None else None
            code += (f"mv({cur}, {ctx.const('w_rec', op.w_rec)}, {ctx.state('spk')}, 0, {n}, {n}, 0);\n"
                     f"for (int i = 0; i < {n}; ++i) {cur}[i] = {x}[i] + {cur}[i]"
                     + (f" + {b}[i];\n" if b else ";\n"))
        else:
            cur = x
        spk = ctx.tmp("spk") if op.emit == "membrane" else ctx.out(0)
        syn = ctx.state("syn") if op.neuron.synaptic else None
        code += neuron_loop(ctx, op.neuron, "neuron.", n, cur, spk, ctx.state("mem"), syn)
        if op.recurrence is not Recurrence.NONE:
            code += copy(ctx.state("spk"), spk, n)
        if op.emit == "membrane":
            code += copy(ctx.out(0), ctx.state("mem"), n)
        elif op.emit == "both":
            code += copy(ctx.out(1), ctx.state("mem"), n)
        return code


@register
class LIFF32(_LIFLike):
    kind = "LIF"


@register
class CuBaLIFF32(_LIFLike):
    kind = "CuBaLIF"


@register
class L2MUF32(Emitter):
    """Populations u (memory_d), m (memory_d*order), h (hidden) of (CuBa-)LIF neurons, in the
    interpreter's order: u from the previous s_h/s_m, m from the previous s_m and the new s_u, h
    from the previous s_h and the new s_m."""

    kind = "L2MU"

    def temps(self, ctx):
        op = ctx.op
        return {"iu": op.memory_d, "su": op.memory_d, "im": op.memory_size, "sm": op.memory_size,
                "ih": op.hidden_size}

    def step(self, ctx):
        op = ctx.op
        d, ms, h, i, order = op.memory_d, op.memory_size, op.hidden_size, op.input_size, op.order
        x, y = ctx.inp(), ctx.out()
        s_h, s_m = ctx.state("s_h"), ctx.state("s_m")
        iu, su, im, sm, ih = (ctx.tmp(k) for k in ("iu", "su", "im", "sm", "ih"))

        def st(pop, neuron, name):
            return ctx.state(f"{pop}_{name}") if name in neuron.state_names() else None

        code = f"mv({iu}, {ctx.const('e_x', op.e_x)}, {x}, {opt_const(ctx, 'b_u', op.b_u)}, {d}, {i}, 0);\n"
        if op.e_h is not None:
            code += f"mv({iu}, {ctx.const('e_h', op.e_h)}, {s_h}, 0, {d}, {h}, 1);\n"
        if op.e_m is not None:
            code += f"mv({iu}, {ctx.const('e_m', op.e_m)}, {s_m}, 0, {d}, {ms}, 1);\n"
        code += neuron_loop(ctx, op.u_neuron, "u_neuron.", d, iu, su, st("u", op.u_neuron, "mem"),
                            st("u", op.u_neuron, "syn"))
        code += f"lmem({im}, {ctx.const('a', op.a)}, {ctx.const('b', op.b)}, {s_m}, {su}, {d}, {order});\n"
        code += neuron_loop(ctx, op.m_neuron, "m_neuron.", ms, im, sm, st("m", op.m_neuron, "mem"),
                            st("m", op.m_neuron, "syn"))
        code += f"mv({ih}, {ctx.const('w_m', op.w_m)}, {sm}, {opt_const(ctx, 'b_h', op.b_h)}, {h}, {ms}, 0);\n"
        if op.w_x is not None:
            code += f"mv({ih}, {ctx.const('w_x', op.w_x)}, {x}, 0, {h}, {i}, 1);\n"
        if op.w_h is not None:
            code += f"mv({ih}, {ctx.const('w_h', op.w_h)}, {s_h}, 0, {h}, {h}, 1);\n"
        code += neuron_loop(ctx, op.h_neuron, "h_neuron.", h, ih, y, st("h", op.h_neuron, "mem"),
                            st("h", op.h_neuron, "syn"))
        code += copy(s_m, sm, ms) + copy(s_h, y, h)
        return code

