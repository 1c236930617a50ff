"""Recurrent and spiking IR ops as ONNX functions in the ``edgeseq`` domain.

Every scan op of the IR (RNN, GRU, LSTM, MinGRU, MinLSTM, LMU, LIF, CuBaLIF, L2MU) becomes one
node ``edgeseq.<Kind>``. Its definition is a ``FunctionProto`` stored in the model whose body runs
the standard ``Scan`` op over time, so onnxruntime executes it without any plugin and
``onnx.inliner.inline_local_functions`` flattens it for runtimes without function support.

Function signature (all float32, batch-first like the IR)::

    edgeseq.<Kind>(x[B, T, I], <state>_in[B, ...] ...) -> (y0[B, T, N] (, y1), <state>_out[B, ...] ...)

with one state input and output per entry of the op's ``state_shapes`` (same order). The weights
are tensor *attributes* of the node. Inside the function they are ``Constant`` nodes referring to
those attributes, placed in the scope that uses them: input projections (``x W^T`` for every
step) run once over the whole sequence before the ``Scan`` (one MatMul), and only the recurrent
weights live inside the ``Scan`` body. When onnxruntime inlines the function those constants
become initializers of the scope they sit in, which is what a quantized (QDQ) variant needs for
onnxruntime to fuse integer kernels inside the loop body.

A function is shared by every node of the same family and structural variant; the variant
(reset rule, activation, optional connections ...) is the function's ``overload`` name, and sizes
come from the attributes, so the two GRU layers of a stack use one function.
Weights are stored transposed for ``MatMul``/``Gemm`` (``*_t`` = (in, out)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import onnx
from onnx import AttributeProto, helper

from ...ir import ops as O
from ...ir.types import Act, Recurrence, ResetRule
from ._emit import DOMAIN, FLOAT, Emitter, activation, f32, ref_attribute, value_info

BodyFn = Callable[[Emitter, list, list], tuple[list, list]]


class FunctionBuilder:
    """Builds one ``FunctionProto``: top-level nodes plus ``Scan`` bodies, attribute references
    collected as they are used."""

    def __init__(self, family: str, overload: str, n_outputs: int, state_names: Sequence[str], doc: str):
        self.family, self.overload, self.doc = family, overload, doc
        self.e = Emitter(prefix="t.")
        self.x = "x"
        self.state_in = [f"{s}_in" for s in state_names]
        self.state_out = [f"{s}_out" for s in state_names]
        self.y = [f"y{k}" for k in range(n_outputs)]
        self.attrs: set[str] = set()
        self._bodies = 0

    def attr(self, e: Emitter, name: str) -> str:
        self.attrs.add(name)
        return e.attr_ref(name)

    def time_major(self, x: str) -> str:
        return self.e.op("Transpose", x, perm=[1, 0, 2], hint="tm")

    def scan(self, states: Sequence[str], seqs: Sequence[str], body: BodyFn,
             state_out: Optional[Sequence[str]] = None) -> tuple[list[str], list[str]]:
        """Scan over axis 0 of the time-major ``seqs``; ``body(e, states, seq_steps) -> (new states, outs)``.
        Returns (final states, time-major stacked outputs)."""
        self._bodies += 1
        be = Emitter(prefix=f"s{self._bodies}.")
        s_in = [be.fresh(f"state{k}") for k in range(len(states))]
        x_in = [be.fresh(f"step{k}") for k in range(len(seqs))]
        new_states, outs = body(be, s_in, x_in)
        out_names: list[str] = []
        for v in list(new_states) + list(outs):
            if v in out_names or v in s_in or v in x_in:
                v = be.op("Identity", v, hint="out")
            out_names.append(v)
        g = helper.make_graph(be.nodes, f"{self.family}_step",
                              [value_info(n) for n in s_in + x_in], [value_info(n) for n in out_names])
        outputs: list[str] = list(state_out) if state_out is not None else \
            [self.e.fresh("final") for _ in states]
        outputs += [self.e.fresh("seq") for _ in outs]
        res = self.e.op("Scan", *states, *seqs, outputs=outputs, num_scan_inputs=len(seqs), body=g, hint="scan")
        res = [res] if isinstance(res, str) else res
        return res[: len(states)], res[len(states):]

    def batch_major(self, seq: str, out: str) -> str:
        return self.e.op("Transpose", seq, perm=[1, 0, 2], outputs=[out])

    def finish(self, opset: int) -> onnx.FunctionProto:
        fn = helper.make_function(DOMAIN, self.family, [self.x] + self.state_in, self.y + self.state_out,
                                  self.e.nodes, opset_imports=[helper.make_opsetid("", opset)],
                                  attributes=sorted(self.attrs), doc_string=self.doc, overload=self.overload)
        return fn


@dataclass
class CellPlan:
    """How one scan node lowers: its function (family + overload), the node's tensor attributes and
    the builder of the function body (called once per family and overload)."""

    family: str
    overload: str
    state_names: tuple[str, ...]
    n_outputs: int
    attrs: dict[str, "np.ndarray | int"]
    build: Callable[[FunctionBuilder], None]
    doc: str = ""

    def function(self, opset: int) -> onnx.FunctionProto:
        fb = FunctionBuilder(self.family, self.overload, self.n_outputs, self.state_names, self.doc)
        self.build(fb)
        missing = fb.attrs - set(self.attrs)
        if missing:  # pragma: no cover - internal consistency of the lowering
            raise RuntimeError(f"{self.family}/{self.overload}: attributes without values {sorted(missing)}")
        return fb.finish(opset)

    def node_attributes(self, fn: onnx.FunctionProto) -> dict:
        """The attributes a node of this plan passes to ``fn`` (those its body refers to)."""
        return {k: v for k, v in self.attrs.items() if k in set(fn.attribute)}


def _t(w) -> np.ndarray:
    return f32(np.asarray(w, dtype=np.float64).T)


def _bias(b, n: int) -> np.ndarray:
    return np.zeros(n) if b is None else np.asarray(b, dtype=np.float64)


def _flag(name: str, on: bool) -> str:
    return name if on else ""


def _overload(*parts: str) -> str:
    return ".".join(p for p in parts if p) or "default"


# ----------------------------------------------------------------------------------------------
# Elman RNN, GRU, LSTM


def plan_rnn(op: O.RNN) -> CellPlan:
    h = op.hidden_size
    attrs = {"w_ih_t": _t(op.w_ih), "b": f32(_bias(op.b_ih, h) + _bias(op.b_hh, h)), "w_hh_t": _t(op.w_hh)}
    act = op.act

    def build(fb: FunctionBuilder):
        e = fb.e
        xp = e.op("Add", e.op("MatMul", fb.time_major(fb.x), fb.attr(e, "w_ih_t")), fb.attr(e, "b"), hint="xp")

        def body(be, st, xs):
            hn = activation(be, act, be.op("Gemm", st[0], fb.attr(be, "w_hh_t"), xs[0]))
            return [hn], [hn]

        _, (seq,) = fb.scan([fb.state_in[0]], [xp], body, fb.state_out)
        fb.batch_major(seq, fb.y[0])

    return CellPlan("RNN", _overload(act.value), ("h",), 1, attrs, build,
                    doc="Elman RNN: h_t = act(x_t w_ih_t + b + h_{t-1} w_hh_t); b = b_ih + b_hh.")


def plan_gru(op: O.GRU) -> CellPlan:
    n = op.hidden_size
    b_ih, b_hh = _bias(op.b_ih, 3 * n), _bias(op.b_hh, 3 * n)
    w_ih, w_hh = np.asarray(op.w_ih, np.float64), np.asarray(op.w_hh, np.float64)
    attrs = {
        "w_irz_t": _t(w_ih[: 2 * n]), "b_rz": f32(b_ih[: 2 * n] + b_hh[: 2 * n]),
        "w_in_t": _t(w_ih[2 * n:]), "b_in": f32(b_ih[2 * n:]),
        "w_hrz_t": _t(w_hh[: 2 * n]), "w_hn_t": _t(w_hh[2 * n:]), "b_hn": f32(b_hh[2 * n:]),
    }
    reset_after = op.reset_after

    def build(fb: FunctionBuilder):
        e = fb.e
        xt = fb.time_major(fb.x)
        xrz = e.op("Add", e.op("MatMul", xt, fb.attr(e, "w_irz_t")), fb.attr(e, "b_rz"), hint="xrz")
        xn = e.op("Add", e.op("MatMul", xt, fb.attr(e, "w_in_t")), fb.attr(e, "b_in"), hint="xn")

        def body(be, st, xs):
            h = st[0]
            rz = be.op("Sigmoid", be.op("Gemm", h, fb.attr(be, "w_hrz_t"), xs[0]))
            r, z = be.op("Split", rz, axis=1, num_outputs=2, outputs=2)
            if reset_after:
                hn = be.op("Gemm", h, fb.attr(be, "w_hn_t"), fb.attr(be, "b_hn"))
                cand = be.op("Tanh", be.op("Add", xs[1], be.op("Mul", r, hn)))
            else:
                hn = be.op("Gemm", be.op("Mul", r, h), fb.attr(be, "w_hn_t"), fb.attr(be, "b_hn"))
                cand = be.op("Tanh", be.op("Add", xs[1], hn))
            # h' = (1 - z) * cand + z * h
            hnew = be.op("Add", cand, be.op("Mul", z, be.op("Sub", h, cand)))
            return [hnew], [hnew]

        _, (seq,) = fb.scan([fb.state_in[0]], [xrz, xn], body, fb.state_out)
        fb.batch_major(seq, fb.y[0])

    return CellPlan("GRU", _overload("reset_after" if reset_after else "reset_before"), ("h",), 1, attrs, build,
                    doc="GRU, torch gate order [r, z, n]; r,z = sigmoid(x w_irz_t + b_rz + h w_hrz_t); "
                        "n = tanh(x w_in_t + b_in + r * (h w_hn_t + b_hn)) (reset_after) or "
                        "tanh(x w_in_t + b_in + (r * h) w_hn_t + b_hn); h' = (1 - z) n + z h.")


def plan_lstm(op: O.LSTM) -> CellPlan:
    n = op.hidden_size
    b = _bias(op.b_ih, 4 * n) + _bias(op.b_hh, 4 * n)
    w_ih, w_hh = np.asarray(op.w_ih, np.float64), np.asarray(op.w_hh, np.float64)
    ifo = np.r_[0:2 * n, 3 * n:4 * n]  # sigmoid gates i, f, o; g is the tanh gate
    g = np.r_[2 * n:3 * n]
    attrs = {"w_ifo_t": _t(w_ih[ifo]), "b_ifo": f32(b[ifo]), "w_g_t": _t(w_ih[g]), "b_g": f32(b[g]),
             "w_hifo_t": _t(w_hh[ifo]), "w_hg_t": _t(w_hh[g])}

    def build(fb: FunctionBuilder):
        e = fb.e
        xt = fb.time_major(fb.x)
        xifo = e.op("Add", e.op("MatMul", xt, fb.attr(e, "w_ifo_t")), fb.attr(e, "b_ifo"), hint="xifo")
        xg = e.op("Add", e.op("MatMul", xt, fb.attr(e, "w_g_t")), fb.attr(e, "b_g"), hint="xg")

        def body(be, st, xs):
            h, c = st
            s = be.op("Sigmoid", be.op("Gemm", h, fb.attr(be, "w_hifo_t"), xs[0]))
            i, f, o = be.op("Split", s, axis=1, num_outputs=3, outputs=3)
            gg = be.op("Tanh", be.op("Gemm", h, fb.attr(be, "w_hg_t"), xs[1]))
            c2 = be.op("Add", be.op("Mul", f, c), be.op("Mul", i, gg))
            h2 = be.op("Mul", o, be.op("Tanh", c2))
            return [h2, c2], [h2]

        _, (seq,) = fb.scan(fb.state_in, [xifo, xg], body, fb.state_out)
        fb.batch_major(seq, fb.y[0])

    return CellPlan("LSTM", "default", ("h", "c"), 1, attrs, build,
                    doc="LSTM (torch gates regrouped as [i, f, o] sigmoid and g tanh); b = b_ih + b_hh; "
                        "c' = f c + i g; h' = o tanh(c').")


# ----------------------------------------------------------------------------------------------
# minGRU / minLSTM: gates depend on x only, so everything but h_t = a_t h_{t-1} + b_t is hoisted


def _linear_recurrence(fb: FunctionBuilder, a: str, b: str) -> None:
    def body(be, st, xs):
        hn = be.op("Add", be.op("Mul", xs[0], st[0]), xs[1])
        return [hn], [hn]

    _, (seq,) = fb.scan([fb.state_in[0]], [a, b], body, fb.state_out)
    fb.batch_major(seq, fb.y[0])


def plan_mingru(op: O.MinGRU) -> CellPlan:
    h = op.hidden_size
    w = np.concatenate([op.w_z, op.w_h], axis=0)
    attrs = {"w_t": _t(w), "b": f32(np.concatenate([_bias(op.b_z, h), _bias(op.b_h, h)]))}
    cand = op.candidate

    def build(fb: FunctionBuilder):
        e = fb.e
        p = e.op("Add", e.op("MatMul", fb.time_major(fb.x), fb.attr(e, "w_t")), fb.attr(e, "b"))
        zp, cp = e.op("Split", p, axis=2, num_outputs=2, outputs=2)
        z = e.op("Sigmoid", zp, hint="z")
        c = activation(e, cand, cp)
        a = e.op("Sub", e.const(1.0, "one"), z, hint="a")
        b = e.op("Mul", z, c, hint="b")
        _linear_recurrence(fb, a, b)

    return CellPlan("MinGRU", _overload(cand.value), ("h",), 1, attrs, build,
                    doc="minGRU: [z, c] = x w_t + b; z = sigmoid(z); c = cand(c); h_t = (1 - z) h_{t-1} + z c.")


def plan_minlstm(op: O.MinLSTM) -> CellPlan:
    h = op.hidden_size
    w = np.concatenate([op.w_f, op.w_i, op.w_h], axis=0)
    attrs = {"w_t": _t(w), "b": f32(np.concatenate([_bias(op.b_f, h), _bias(op.b_i, h), _bias(op.b_h, h)]))}
    cand = op.candidate

    def build(fb: FunctionBuilder):
        e = fb.e
        p = e.op("Add", e.op("MatMul", fb.time_major(fb.x), fb.attr(e, "w_t")), fb.attr(e, "b"))
        fp, ip, cp = e.op("Split", p, axis=2, num_outputs=3, outputs=3)
        f, i = e.op("Sigmoid", fp, hint="f"), e.op("Sigmoid", ip, hint="i")
        c = activation(e, cand, cp)
        s = e.op("Add", f, i)
        a = e.op("Div", f, s, hint="a")
        b = e.op("Mul", e.op("Div", i, s), c, hint="b")
        _linear_recurrence(fb, a, b)

    return CellPlan("MinLSTM", _overload(cand.value), ("h",), 1, attrs, build,
                    doc="minLSTM: [f, i, c] = x w_t + b; f, i = sigmoid; s = f + i; "
                        "h_t = (f/s) h_{t-1} + (i/s) cand(c).")


# ----------------------------------------------------------------------------------------------
# Legendre memory (shared by LMU and L2MU)

KRON_MAX = 256  # memory sizes up to this use one block-diagonal matrix, larger ones a batched MatMul


def _memory_attrs(attrs: dict, a: np.ndarray, b: np.ndarray, d: int) -> str:
    """Attributes for m' = Abar m[d] + Bbar u[d]; returns the layout ('kron' or 'blocks')."""
    order = a.shape[0]
    b = np.asarray(b, np.float64).reshape(order)
    if d == 1 or d * order <= KRON_MAX:
        attrs["a_t"] = _t(np.kron(np.eye(d), a))
        attrs["b_t"] = _t(np.kron(np.eye(d), b.reshape(order, 1)))
        return "kron"
    attrs["a_t"] = _t(a)
    attrs["b_row"] = f32(b.reshape(1, order))
    attrs["m_shape"] = np.asarray([0, d, order], dtype=np.int64)
    return "blocks"


def _memory_update(fb: FunctionBuilder, be: Emitter, layout: str, m: str, u: str) -> str:
    if layout == "kron":
        return be.op("Gemm", u, fb.attr(be, "b_t"), be.op("MatMul", m, fb.attr(be, "a_t")))
    m3 = be.op("Reshape", m, fb.attr(be, "m_shape"))
    am = be.op("MatMul", m3, fb.attr(be, "a_t"))
    bu = be.op("Mul", be.op("Unsqueeze", u, be.ints([2], "ax2")), fb.attr(be, "b_row"))
    return be.op("Reshape", be.op("Add", am, bu), be.ints([0, -1], "flat"))


def _seq_proj(fb: FunctionBuilder, xt: str, w: Optional[str], b: Optional[str], hint: str) -> Optional[str]:
    """Time-major x w (+ b) over the whole sequence; None without a weight."""
    e = fb.e
    if w is None:
        return None
    y = e.op("MatMul", xt, fb.attr(e, w), hint=hint)
    return e.op("Add", y, fb.attr(e, b), hint=hint) if b is not None else y


def plan_lmu(op: O.LMU) -> CellPlan:
    d = op.memory_d
    abar, bbar = op.matrices()
    attrs: dict[str, np.ndarray] = {"e_x_t": _t(op.e_x)}
    if op.b_u is not None:
        attrs["b_u"] = f32(op.b_u)
    layout = _memory_attrs(attrs, abar, bbar, d)
    if op.e_m is not None:
        attrs["e_m_t"] = _t(op.e_m)
    if op.e_h is not None:
        attrs["e_h_t"] = _t(op.e_h)
    state_names = tuple(op.state_shapes([]))
    if not op.has_hidden:
        hidden = "none"
    else:
        hidden = "rec" if "h" in state_names else "dense"
        attrs["w_m_t"] = _t(op.w_m)
        if op.w_x is not None:
            attrs["w_x_t"] = _t(op.w_x)
        if op.b_h is not None:
            attrs["b_h"] = f32(op.b_h)
        if op.w_h is not None:
            attrs["w_h_t"] = _t(op.w_h)
    has = {k: k in attrs for k in ("b_u", "e_m_t", "e_h_t", "w_x_t", "b_h", "w_h_t")}
    act = op.act

    def build(fb: FunctionBuilder):
        e = fb.e
        xt = fb.time_major(fb.x)
        ux = _seq_proj(fb, xt, "e_x_t", "b_u" if has["b_u"] else None, "ux")
        hx = _seq_proj(fb, xt, "w_x_t" if has["w_x_t"] else None, "b_h" if has["b_h"] else None, "hx")
        hx_bias = hx is None and has["b_h"]
        seqs = [ux] + ([hx] if hidden == "rec" and hx is not None else [])

        def body(be, st, xs):
            m = st[0]
            h_prev = st[1] if hidden == "rec" else (m if hidden == "none" else None)
            u = xs[0]
            if has["e_m_t"]:
                u = be.op("Gemm", m, fb.attr(be, "e_m_t"), u)
            if has["e_h_t"]:
                u = be.op("Gemm", h_prev, fb.attr(be, "e_h_t"), u)
            m2 = _memory_update(fb, be, layout, m, u)
            if hidden != "rec":
                return [m2], [m2]
            c = xs[1] if len(xs) > 1 else (fb.attr(be, "b_h") if hx_bias else None)
            pre = be.op("Gemm", m2, fb.attr(be, "w_m_t"), *([c] if c else []))
            if has["w_h_t"]:
                pre = be.op("Gemm", st[1], fb.attr(be, "w_h_t"), pre)
            h2 = activation(be, act, pre)
            return [m2, h2], [h2]

        _, (seq,) = fb.scan(fb.state_in, seqs, body, fb.state_out)
        if hidden == "dense":  # no recurrence through h: the hidden layer runs once over the sequence
            pre = e.op("MatMul", seq, fb.attr(e, "w_m_t"), hint="hm")
            if hx is not None:
                pre = e.op("Add", pre, hx)
            elif hx_bias:
                pre = e.op("Add", pre, fb.attr(e, "b_h"))
            seq = activation(e, act, pre)
        fb.batch_major(seq, fb.y[0])

    parts = [layout, _flag("bu", has["b_u"]), _flag("em", has["e_m_t"]), _flag("eh", has["e_h_t"]),
             f"hidden_{hidden}"]
    if hidden != "none":
        parts += [_flag("wx", has["w_x_t"]), _flag("bh", has["b_h"]), _flag("wh", has["w_h_t"]), act.value]
    return CellPlan("LMU", _overload(*parts), state_names, 1, attrs, build,
                    doc="LMU (keras-lmu): u = x e_x_t + b_u + m e_m_t + h e_h_t; m' = m a_t + u b_t "
                        "(block-diagonal Legendre Abar, Bbar per memory dimension); "
                        "h = act(m' w_m_t + x w_x_t + b_h + h w_h_t).")


# ----------------------------------------------------------------------------------------------
# spiking neurons


@dataclass(frozen=True)
class _NeuronSpec:
    synaptic: bool
    reset: ResetRule
    delay: bool
    scaled: bool

    def key(self) -> str:
        return "_".join(p for p in ("syn" if self.synaptic else "lif", self.reset.value,
                                    "delay" if self.delay else "now", "scaled" if self.scaled else "") if p)


def _neuron_attrs(attrs: dict, n: O.NeuronParams, prefix: str) -> _NeuronSpec:
    attrs[prefix + "beta"] = f32(np.clip(np.asarray(n.beta, np.float64), 0.0, 1.0))
    attrs[prefix + "threshold"] = f32(n.threshold)
    if n.synaptic:
        attrs[prefix + "alpha"] = f32(np.clip(np.asarray(n.alpha, np.float64), 0.0, 1.0))
    if n.spike_scale is not None:
        attrs[prefix + "spike_scale"] = f32(n.spike_scale)
    return _NeuronSpec(n.synaptic, n.reset, n.reset_delay, n.spike_scale is not None)


def _neuron_step(fb: FunctionBuilder, be: Emitter, spec: _NeuronSpec, prefix: str, current: str,
                 mem: str, syn: Optional[str], need_spikes: bool = True) -> tuple[Optional[str], str, Optional[str]]:
    """One step of a LIF / CuBa-LIF population: edgeseq.ir.interpret.neuron_step in the same order of
    operations. Products with the 0/1 reset mask are selections (``Where``), which give the same
    values as the multiplications. Returns (spikes, new membrane, new synaptic current or None);
    the spikes are None when not ``need_spikes`` and the membrane update does not need them."""
    beta = fb.attr(be, prefix + "beta")
    thr_name: list[str] = []

    def thr() -> str:  # referenced only when the step compares with the threshold
        if not thr_name:
            thr_name.append(fb.attr(be, prefix + "threshold"))
        return thr_name[0]

    zero = be.const(0.0, "zero") if spec.reset is not ResetRule.NONE else None
    mask = be.op("Greater", mem, thr(), hint="reset") if spec.reset is not ResetRule.NONE else None
    syn_new = None
    if spec.synaptic:
        syn_new = be.op("Add", be.op("Mul", fb.attr(be, prefix + "alpha"), syn), current, hint="syn")
        drive = syn_new
    else:
        drive = current
    if spec.reset is ResetRule.SUBTRACT:  # beta U + I - R thr
        u = be.op("Sub", be.op("Add", be.op("Mul", beta, mem), drive), be.op("Where", mask, thr(), zero))
    elif spec.reset is ResetRule.ZERO:  # beta (1 - R) U + I
        u = be.op("Add", be.op("Mul", beta, be.op("Where", mask, zero, mem)), drive)
    elif spec.reset is ResetRule.ZERO_TOTAL:  # (1 - R) (beta U + I)
        u = be.op("Where", mask, zero, be.op("Add", be.op("Mul", beta, mem), drive))
    else:
        u = be.op("Add", be.op("Mul", beta, mem), drive)
    immediate = not spec.delay and spec.reset is not ResetRule.NONE
    if not (need_spikes or immediate):
        return None, u, syn_new
    fired = be.op("Cast", be.op("Greater", u, thr()), to=FLOAT, hint="fired")
    spk = be.op("Mul", fired, fb.attr(be, prefix + "spike_scale")) if spec.scaled else fired
    if immediate:
        do_reset = be.op("Sub", fired, be.op("Cast", mask, to=FLOAT))
        if spec.reset is ResetRule.SUBTRACT:
            u = be.op("Sub", u, be.op("Mul", do_reset, thr()))
        else:
            u = be.op("Sub", u, be.op("Mul", do_reset, u))
    return spk, u, syn_new


_EMIT_OUTPUTS = {"spikes": 1, "membrane": 1, "both": 2}


def plan_lif(op) -> CellPlan:
    attrs: dict[str, np.ndarray] = {}
    spec = _neuron_attrs(attrs, op.neuron, "")
    rec = op.recurrence
    if rec is Recurrence.ONE_TO_ONE:
        attrs["v_rec"] = f32(op.v_rec)
    elif rec is Recurrence.ALL_TO_ALL:
        attrs["w_rec_t"] = _t(op.w_rec)
        attrs["b_rec"] = f32(_bias(op.b_rec, op.w_rec.shape[0]))
    states = (("syn",) if spec.synaptic else ()) + ("mem",) + (("spk",) if rec is not Recurrence.NONE else ())
    emit = op.emit

    def build(fb: FunctionBuilder):
        def body(be, st, xs):
            env = dict(zip(states, st))
            current = xs[0]
            if rec is Recurrence.ONE_TO_ONE:
                current = be.op("Add", current, be.op("Mul", fb.attr(be, "v_rec"), env["spk"]))
            elif rec is Recurrence.ALL_TO_ALL:
                current = be.op("Add", current, be.op("Gemm", env["spk"], fb.attr(be, "w_rec_t"),
                                                      fb.attr(be, "b_rec")))
            spk, mem, syn = _neuron_step(fb, be, spec, "", current, env["mem"], env.get("syn"),
                                         need_spikes=emit != "membrane" or rec is not Recurrence.NONE)
            new = {"syn": syn, "mem": mem, "spk": spk}
            outs = {"spikes": [spk], "membrane": [mem], "both": [spk, mem]}[emit]
            return [new[s] for s in states], outs

        _, seqs = fb.scan(fb.state_in, [fb.time_major(fb.x)], body, fb.state_out)
        for seq, y in zip(seqs, fb.y):
            fb.batch_major(seq, y)

    return CellPlan(op.kind, _overload(spec.key(), f"rec_{rec.value}", f"emit_{emit}"), states,
                    _EMIT_OUTPUTS[emit], attrs, build,
                    doc="(CuBa-)LIF layer, snntorch semantics (see edgeseq.ir.ops.NeuronParams); input is the "
                        "synaptic current; beta/alpha pre-clipped to [0, 1].")


def plan_l2mu(op: O.L2MU) -> CellPlan:
    d = op.memory_d
    attrs: dict[str, np.ndarray] = {"e_x_t": _t(op.e_x), "w_m_t": _t(op.w_m)}
    layout = _memory_attrs(attrs, np.asarray(op.a, np.float64), np.asarray(op.b, np.float64), d)
    for name in ("e_h", "e_m", "w_x", "w_h"):
        if getattr(op, name) is not None:
            attrs[name + "_t"] = _t(getattr(op, name))
    for name in ("b_u", "b_h"):
        if getattr(op, name) is not None:
            attrs[name] = f32(getattr(op, name))
    specs = {pop: _neuron_attrs(attrs, getattr(op, f"{pop}_neuron"), f"{pop}_") for pop in ("u", "m", "h")}
    states = tuple(op.state_shapes([]).keys())
    has = {k: k in attrs for k in ("b_u", "e_m_t", "e_h_t", "w_x_t", "b_h", "w_h_t")}

    def build(fb: FunctionBuilder):
        e = fb.e
        xt = fb.time_major(fb.x)
        ux = _seq_proj(fb, xt, "e_x_t", "b_u" if has["b_u"] else None, "ux")
        hx = _seq_proj(fb, xt, "w_x_t" if has["w_x_t"] else None, "b_h" if has["b_h"] else None, "hx")
        seqs = [ux] + ([hx] if hx is not None else [])

        def body(be, st, xs):
            env = dict(zip(states, st))
            s_h, s_m = env["s_h"], env["s_m"]
            i_u = xs[0]
            if has["e_h_t"]:
                i_u = be.op("Gemm", s_h, fb.attr(be, "e_h_t"), i_u)
            if has["e_m_t"]:
                i_u = be.op("Gemm", s_m, fb.attr(be, "e_m_t"), i_u)
            new: dict[str, str] = {}
            s_u, mem, syn = _neuron_step(fb, be, specs["u"], "u_", i_u, env["u_mem"], env.get("u_syn"))
            new.update(u_mem=mem, u_syn=syn)
            i_m = _memory_update(fb, be, layout, s_m, s_u)
            s_m2, mem, syn = _neuron_step(fb, be, specs["m"], "m_", i_m, env["m_mem"], env.get("m_syn"))
            new.update(m_mem=mem, m_syn=syn)
            c = xs[1] if len(xs) > 1 else (fb.attr(be, "b_h") if has["b_h"] else None)
            i_h = be.op("Gemm", s_m2, fb.attr(be, "w_m_t"), *([c] if c else []))
            if has["w_h_t"]:
                i_h = be.op("Gemm", s_h, fb.attr(be, "w_h_t"), i_h)
            s_h2, mem, syn = _neuron_step(fb, be, specs["h"], "h_", i_h, env["h_mem"], env.get("h_syn"))
            new.update(h_mem=mem, h_syn=syn, s_m=s_m2, s_h=s_h2)
            return [new[s] for s in states], [s_h2]

        _, (seq,) = fb.scan(fb.state_in, seqs, body, fb.state_out)
        fb.batch_major(seq, fb.y[0])

    parts = [layout] + [f"{p}_{specs[p].key()}" for p in ("u", "m", "h")] + \
        [_flag(k.removesuffix("_t").replace("_", ""), v) for k, v in has.items()]
    return CellPlan("L2MU", _overload(*parts), states, 1, attrs, build,
                    doc="L2MU: LIF populations u (memory input), m (Legendre memory, block-diagonal a_t, b_t) "
                        "and h (hidden); i_u = x e_x_t + s_h e_h_t + s_m e_m_t + b_u; "
                        "i_m = s_m a_t + s_u b_t; i_h = x w_x_t + s_h w_h_t + s_m w_m_t + b_h.")


# ----------------------------------------------------------------------------------------------
# fused variants: the function body is ONNX's own GRU / LSTM op (float32 speed path)


def _fused_plan(op, family: str, onnx_op: str, w: np.ndarray, r: np.ndarray, b: np.ndarray,
                state_names: tuple[str, ...], overload: str, doc: str, **op_attrs) -> CellPlan:
    hsz = op.hidden_size
    attrs = {"W": f32(w[None]), "R": f32(r[None]), "B": f32(b[None]), "hidden_size": int(hsz)}

    def build(fb: FunctionBuilder):
        e = fb.e
        ax0 = e.ints([0], "ax0")
        states = [e.op("Unsqueeze", s, ax0, hint="s3") for s in fb.state_in]
        ins = [fb.time_major(fb.x), fb.attr(e, "W"), fb.attr(e, "R"), fb.attr(e, "B"), "", *states]
        outs = e.op(onnx_op, *ins, outputs=1 + len(states), hint=onnx_op.lower(), **op_attrs)
        e.nodes[-1].attribute.append(ref_attribute("hidden_size", "hidden_size", AttributeProto.INT))
        fb.attrs.add("hidden_size")
        y, finals = outs[0], outs[1:]
        fb.batch_major(e.op("Squeeze", y, e.ints([1], "ax1")), fb.y[0])
        for f, out in zip(finals, fb.state_out):
            e.op("Squeeze", f, ax0, outputs=[out])

    return CellPlan(family, overload, state_names, 1, attrs, build, doc=doc)


def plan_gru_fused(op: O.GRU) -> CellPlan:
    n = op.hidden_size
    zrn = np.r_[n:2 * n, 0:n, 2 * n:3 * n]  # torch [r, z, n] -> ONNX [z, r, h]
    b = np.concatenate([_bias(op.b_ih, 3 * n)[zrn], _bias(op.b_hh, 3 * n)[zrn]])
    return _fused_plan(op, "GRU", "GRU", np.asarray(op.w_ih)[zrn], np.asarray(op.w_hh)[zrn], b, ("h",),
                       _overload("onnx_gru", "reset_after" if op.reset_after else "reset_before"),
                       "GRU as ONNX GRU (gates z, r, h; linear_before_reset = reset_after).",
                       linear_before_reset=int(op.reset_after))


def plan_lstm_fused(op: O.LSTM) -> CellPlan:
    n = op.hidden_size
    iofc = np.r_[0:n, 3 * n:4 * n, n:2 * n, 2 * n:3 * n]  # torch [i, f, g, o] -> ONNX [i, o, f, c]
    b = np.concatenate([_bias(op.b_ih, 4 * n)[iofc], _bias(op.b_hh, 4 * n)[iofc]])
    return _fused_plan(op, "LSTM", "LSTM", np.asarray(op.w_ih)[iofc], np.asarray(op.w_hh)[iofc], b, ("h", "c"),
                       _overload("onnx_lstm"), "LSTM as ONNX LSTM (gates i, o, f, c).")


# ONNX's RNN op is slower in onnxruntime than the Scan form (measured), so only GRU and LSTM have one
FUSED_PLANS: dict[str, Callable[[O.Op], CellPlan]] = {"GRU": plan_gru_fused, "LSTM": plan_lstm_fused}

PLANS: dict[str, Callable[[O.Op], CellPlan]] = {
    "RNN": plan_rnn, "GRU": plan_gru, "LSTM": plan_lstm, "MinGRU": plan_mingru, "MinLSTM": plan_minlstm,
    "LMU": plan_lmu, "LIF": plan_lif, "CuBaLIF": plan_lif, "L2MU": plan_l2mu,
}
