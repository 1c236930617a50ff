"""Module converters: torch / edgeseq.nn / snntorch modules -> IR nodes.

Each converter receives the capture context, the module, its path in the model and the symbolic
input value, adds IR nodes and returns the symbolic output. Frontend quirks are normalised here
into explicit IR fields (gate order, reset rules, time layout), never leaked into the IR.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import UnsupportedModuleError
from ..ir import ops as O
from ..ir.graph import GraphBuilder
from ..ir.types import Act, ReadoutMode
from .values import StateVal, TupleVal, Val


def np_(t) -> np.ndarray | None:
    if t is None:
        return None
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().numpy().copy()
    return np.asarray(t)


class Ctx:
    def __init__(self, builder: GraphBuilder):
        self.b = builder
        self.delay: dict[str, int] = {}  # IR value -> steps before it is valid (after valid convolutions)
        self.window: list[str] = []  # why the graph is a window graph (constructs that read the future)

    def add(self, op: O.Op, val: Val | list[Val], path: str, delay: int = 0):
        """Add ``op``; a scan or a mean / sum readout of a delayed value holds its state until the value
        is valid (see edgeseq.ir.step.passes.with_delay). ``delay``: steps the op itself adds."""
        vals = val if isinstance(val, list) else [val]
        for v in vals:
            if not isinstance(v, Val):
                what = f"the recurrent state of '{v.module}'" if isinstance(v, StateVal) else "a non-tensor value"
                raise UnsupportedModuleError(
                    f"uses {what} as a tensor",
                    where=path,
                    hint="only the sequence output, or h_n[-1] of a recurrent layer (its last step), is supported",
                )
            if v.trim:
                raise UnsupportedModuleError(
                    f"uses a convolution output that still holds {v.trim} non-causal trailing steps",
                    where=path,
                    hint="slice them off, e.g. y[..., :-(kernel_size-1)*dilation]",
                )
        names = [v.name for v in vals]
        d = max([self.delay.get(n, 0) for n in names] + [0])
        if d:
            op, names = self._gated(op, names, d, path)
        out = self.b.add(op, names, name=path)
        for o in out if isinstance(out, tuple) else (out,):
            self.delay[o] = d + delay
        return out

    def _gated(self, op: O.Op, names: list, d: int, path: str):
        from ..ir.cells import has_step_program, running_readout, step_program
        from ..ir.step.passes import with_delay

        if isinstance(op, O.Readout) and op.mode is not ReadoutMode.LAST:
            run = O.Scan(program=with_delay(running_readout(op.mode, self.b.features(names[0])), d))
            return O.Readout(mode=ReadoutMode.LAST), [self.b.add(run, names, name=f"{path}.running")]
        if has_step_program(op) and op.is_scan:
            return O.Scan(program=with_delay(step_program(op, self.b.features(names[0])), d)), names
        return op, names

    def features(self, v: Val) -> int:
        return self.b.features(v.name)


def _need_layout(v: Val, allowed: tuple[str, ...], path: str, what: str) -> None:
    if v.layout not in allowed:
        nice = {"BTF": "(B, T, F)", "TBF": "(T, B, F)", "BFT": "(B, C, T)", "BF": "(B, F)"}
        raise UnsupportedModuleError(
            f"{what} receives a {nice[v.layout]} tensor; edgeseq can only apply it to "
            + " or ".join(nice[a] for a in allowed),
            where=path,
        )


FEATURE_LAST = ("BTF", "TBF", "BF")
Converter = Callable[[Ctx, Any, str, Val], Any]
CONVERTERS: dict[type, Converter] = {}


def converter(*types):
    def deco(fn):
        for t in types:
            CONVERTERS[t] = fn
        return fn

    return deco


# ---------------------------------------------------------------- feed-forward torch modules


@converter(nn.Linear)
def _linear(ctx, m, path, v):
    _need_layout(v, FEATURE_LAST, path, "nn.Linear")
    return Val(ctx.add(O.Linear(weight=np_(m.weight), bias=np_(m.bias)), v, path), v.layout)


@converter(nn.Conv1d)
def _conv1d(ctx, m, path, v):
    _need_layout(v, ("BFT",), path, "nn.Conv1d")
    k, d = m.kernel_size[0], m.dilation[0]
    need = (k - 1) * d
    pad = m.padding if isinstance(m.padding, str) else m.padding[0]
    if pad == "valid":
        pad = 0
    if m.stride[0] != 1 or m.padding_mode != "zeros":
        raise UnsupportedModuleError(
            f"Conv1d with stride {m.stride[0]} / padding_mode '{m.padding_mode}' is not supported",
            where=path,
            hint="use stride 1 and zero padding (edgeseq.nn.CausalConv1d, or F.pad(x, ((k-1)*dilation, 0)) "
            "before a padding=0 Conv1d)",
        )
    left = need // 2 if pad == "same" else pad  # torch's 'same' pads the extra step on the right
    if pad == "same" or (v.pad == 0 and 0 < pad < need and 2 * pad == need):
        # 'same' / symmetric padding reads (need - left) future steps: a look-ahead, then the causal
        # convolution (a window graph)
        return _lookahead_conv(ctx, m, path, v, left)
    trim = 0
    if v.pad == need and pad == 0:
        pass
    elif v.pad == 0 and pad == need:
        trim = need
    elif v.pad == 0 and pad == 0:  # valid: the causal convolution, valid after (k - 1) * dilation steps
        op = O.Conv1d(weight=np_(m.weight), bias=np_(m.bias), dilation=d, groups=m.groups)
        return Val(ctx.add(op, Val(v.name, v.layout), path, delay=need), "BFT")
    else:
        raise UnsupportedModuleError(
            f"Conv1d with kernel {k}, dilation {d}, padding {pad} (pending left pad {v.pad}) changes the "
            "sequence length",
            where=path,
            hint="pad (kernel_size-1)*dilation steps on the left only (edgeseq.nn.CausalConv1d, streams), or "
            "padding='same' (a window graph)",
        )
    op = O.Conv1d(weight=np_(m.weight), bias=np_(m.bias), dilation=d, groups=m.groups)
    return Val(ctx.add(op, Val(v.name, v.layout), path), "BFT", trim=trim)


def _lookahead_conv(ctx, m, path, v, left: int):
    """A Conv1d padded ``left`` steps on the left and the rest of (K-1)*dilation on the right: its taps
    on future steps read look-ahead copies of the input (window ops), concatenated to the input
    features, and one causal convolution (taps on the past and present) does the rest."""
    k, d = m.kernel_size[0], m.dilation[0]
    need = (k - 1) * d
    if m.groups != 1:
        raise UnsupportedModuleError(
            f"a grouped (groups={m.groups}) Conv1d with padding={m.padding!r}",
            where=path,
            hint="use groups=1, or causal left-only padding",
        )
    ctx.window.append(f"'{path}' is a Conv1d with padding={m.padding!r}, which reads future steps")
    w = np_(m.weight)
    dense = np.zeros(w.shape[:2] + (need + 1,), w.dtype)  # undilated: tap k at k * dilation
    dense[:, :, ::d] = w
    future = range(1, need - left + 1)  # tap left + j reads x_{t + j}
    names = [v] + [Val(ctx.add(O.Lookahead(steps=j), v, f"{path}.ahead{j}"), v.layout) for j in future]
    cin = w.shape[1]
    weight = np.zeros((w.shape[0], cin * len(names), left + 1), w.dtype)
    weight[:, :cin] = dense[:, :, : left + 1]
    for i, j in enumerate(future, start=1):
        weight[:, i * cin : (i + 1) * cin, left] = dense[:, :, left + j]
    x = names[0] if len(names) == 1 else Val(ctx.add(O.Concat(), names, f"{path}.taps"), v.layout)
    return Val(ctx.add(O.Conv1d(weight=weight, bias=np_(m.bias)), x, path), "BFT")


def _bn_op(m, path) -> O.BatchNorm:
    if m.running_mean is None or m.running_var is None:
        raise UnsupportedModuleError(
            "batch norm without running statistics cannot be exported",
            where=path,
            hint="construct it with track_running_stats=True",
        )
    return O.BatchNorm(
        mean=np_(m.running_mean),
        var=np_(m.running_var),
        weight=np_(m.weight) if m.affine else None,
        bias=np_(m.bias) if m.affine else None,
        eps=float(m.eps),
    )


@converter(nn.BatchNorm1d)
def _batchnorm1d(ctx, m, path, v):
    _need_layout(v, ("BFT", "BF"), path, "nn.BatchNorm1d")
    return Val(ctx.add(_bn_op(m, path), v, path), v.layout)


@converter(nn.LayerNorm)
def _layernorm(ctx, m, path, v):
    _need_layout(v, FEATURE_LAST, path, "nn.LayerNorm")
    if tuple(m.normalized_shape) != (ctx.features(v),):
        raise UnsupportedModuleError(
            f"LayerNorm over {tuple(m.normalized_shape)}; only the feature axis ({ctx.features(v)},) is supported",
            where=path,
        )
    op = O.LayerNorm(weight=np_(m.weight), bias=np_(getattr(m, "bias", None)), eps=float(m.eps))
    return Val(ctx.add(op, v, path), v.layout)


def act_op(fn: Act, **kw) -> O.Activation:
    return O.Activation(fn=fn, **kw)


def _simple_act(fn: Act):
    def conv(ctx, m, path, v):
        return Val(ctx.add(act_op(fn), v, path), v.layout)

    return conv


for _t, _fn in (
    (nn.ReLU, Act.RELU),
    (nn.Tanh, Act.TANH),
    (nn.Sigmoid, Act.SIGMOID),
    (nn.SiLU, Act.SILU),
    (nn.Hardsigmoid, Act.HARDSIGMOID),
):
    CONVERTERS[_t] = _simple_act(_fn)


@converter(nn.GELU)
def _gelu(ctx, m, path, v):
    return Val(ctx.add(act_op(Act.GELU_TANH if m.approximate == "tanh" else Act.GELU), v, path), v.layout)


@converter(nn.LeakyReLU)
def _leaky(ctx, m, path, v):
    return Val(ctx.add(act_op(Act.LEAKY_RELU, slope=float(m.negative_slope)), v, path), v.layout)


@converter(nn.Hardtanh, nn.ReLU6)
def _hardtanh(ctx, m, path, v):
    return Val(ctx.add(act_op(Act.HARDTANH, lo=float(m.min_val), hi=float(m.max_val)), v, path), v.layout)


@converter(nn.Softplus)
def _softplus(ctx, m, path, v):
    if m.beta != 1:
        raise UnsupportedModuleError(f"Softplus with beta={m.beta} (only beta=1)", where=path)
    return Val(ctx.add(act_op(Act.SOFTPLUS), v, path), v.layout)


@converter(nn.Identity, nn.Dropout, nn.AlphaDropout)
def _identity(ctx, m, path, v):
    return v  # inference-mode identity: no node


@converter(nn.Embedding)
def _embedding(ctx, m, path, v):
    if v.ids is None:
        raise UnsupportedModuleError(
            "nn.Embedding needs integer ids (an input feature converted with .long())", where=path
        )
    if ctx.features(v) != 1:
        raise UnsupportedModuleError(
            f"nn.Embedding ids must be one feature per step, got {ctx.features(v)}",
            where=path,
            hint="select the id column, e.g. x[..., 0].long()",
        )
    if m.max_norm is not None:
        raise UnsupportedModuleError("nn.Embedding with max_norm is not supported", where=path)
    lo, hi = (v.ids + (None, None))[:2] if v.ids else (None, None)
    if (lo is not None and lo > 0) or (hi is not None and hi < m.num_embeddings - 1):
        raise UnsupportedModuleError(
            f"ids clamped to [{lo}, {hi}], inside the table's [0, {m.num_embeddings - 1}]", where=path
        )
    return Val(ctx.add(O.Embedding(table=np_(m.weight)), v, path), v.layout)


@converter(nn.Flatten)
def _flatten(ctx, m, path, v):
    if v.layout == "BF":
        return v
    raise UnsupportedModuleError("nn.Flatten on a sequence mixes time into features and cannot be streamed", where=path)


# ---------------------------------------------------------------- torch recurrent modules


def _layer_init(init, layer: int, kind: str) -> dict:
    """The per-example initial states of one layer from (h0[, c0]) constants (None: zeros)."""
    if init is None:
        return {}
    out = {}
    for name, a in zip(("h", "c") if kind == "LSTM" else ("h",), init):
        if a is None:
            continue
        a = np.asarray(a, np.float64)
        a = a.reshape(a.shape[0] if a.ndim == 3 else 1, -1, a.shape[-1])  # (layers, batch or 1, H)
        if not np.all(a == a[:, :1]):
            raise UnsupportedModuleError(
                "an initial state that differs between the examples of a batch",
                where=kind,
                hint="a scan starts every sequence from the same state",
            )
        row = a[layer if a.shape[0] > layer else 0, 0]
        if np.any(row != 0):
            out[name] = row
    return out


def _rnn_op(m, kind: str, layer: int, suffix: str = "") -> O.Op:
    w = {n: np_(getattr(m, f"{n}_l{layer}{suffix}", None)) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    common = dict(w_ih=w["weight_ih"], w_hh=w["weight_hh"], b_ih=w["bias_ih"], b_hh=w["bias_hh"])
    if kind == "RNN":
        return O.RNN(**common, act=Act.TANH if m.nonlinearity == "tanh" else Act.RELU)
    if kind == "GRU":
        return O.GRU(**common, reset_after=True)
    return O.LSTM(**common)


@converter(nn.RNN, nn.GRU, nn.LSTM)
def _torch_rnn(ctx, m, path, v, init=None):
    kind = type(m).__name__
    if getattr(m, "proj_size", 0):
        raise UnsupportedModuleError(
            "LSTM with proj_size is not supported",
            where=path,
            hint="use proj_size=0 and an nn.Linear after the LSTM, or write the cell as a loop over "
            "nn.LSTMCell followed by the projection",
        )
    _need_layout(v, ("BTF",) if m.batch_first else ("TBF",), path, f"{kind}(batch_first={m.batch_first})")
    if m.bidirectional:
        return _bidirectional(ctx, m, path, v, kind, init)
    cur = v
    for layer in range(m.num_layers):
        op = _rnn_op(m, kind, layer)
        start = _layer_init(init, layer, kind)
        if start:  # a non-zero initial state: the scan carries the offset from it
            from ..ir.cells import step_program
            from ..ir.step.passes import with_initial_state

            op = O.Scan(program=with_initial_state(step_program(op, ctx.features(cur)), start))
        name = path if m.num_layers == 1 else f"{path}.l{layer}"
        cur = Val(ctx.add(op, cur, name), v.layout)
    return TupleVal((cur, StateVal(cur, path, ("h", "c") if kind == "LSTM" else ("h",), layers=m.num_layers)))


def _bidirectional(ctx, m, path, v, kind: str, init):
    """A bidirectional layer = the forward scan and the backward scan run on the reversed window, its
    output reversed back, concatenated (a window graph)."""
    if init is not None:
        raise UnsupportedModuleError(
            f"an initial state passed to a bidirectional {kind}",
            where=path,
            hint="start it from zeros (omit h0), or use a unidirectional layer",
        )
    ctx.window.append(f"'{path}' is a bidirectional {kind}, whose backward direction reads the window from its end")
    cur = v
    back = cur
    for layer in range(m.num_layers):
        name = path if m.num_layers == 1 else f"{path}.l{layer}"
        fwd = Val(ctx.add(_rnn_op(m, kind, layer), cur, name), v.layout)
        rev = ctx.add(O.Reverse(), cur, f"{name}.reverse_in")
        back = Val(ctx.add(_rnn_op(m, kind, layer, "_reverse"), Val(rev, v.layout), f"{name}.backward"), v.layout)
        bwd = ctx.add(O.Reverse(), back, f"{name}.reverse_out")
        cur = Val(ctx.add(O.Concat(), [fwd, Val(bwd, v.layout)], f"{name}.concat"), v.layout)
    # h_n[-1] is the backward direction's final state: the last step of its (reversed-time) output;
    # h_n[-2] the forward direction's
    return TupleVal(
        (cur, StateVal(back, path, ("h", "c") if kind == "LSTM" else ("h",), layers=2 * m.num_layers, forward_last=fwd))
    )


# ---------------------------------------------------------------- edgeseq.nn modules


def _register_edgeseq_nn() -> None:
    from .. import nn as enn
    from ..nn.models import SpikeActivation

    @converter(enn.CausalConv1d)
    def _causal(ctx, m, path, v):
        _need_layout(v, ("BTF",), path, "edgeseq.nn.CausalConv1d")
        c = m.conv
        op = O.Conv1d(weight=np_(c.weight), bias=np_(c.bias), dilation=c.dilation[0], groups=c.groups)
        return Val(ctx.add(op, v, path), "BTF")

    @converter(enn.BatchNorm)
    def _bn(ctx, m, path, v):
        _need_layout(v, FEATURE_LAST, path, "edgeseq.nn.BatchNorm")
        return Val(ctx.add(_bn_op(m, path), v, path), v.layout)

    @converter(enn.Standardize)
    def _std(ctx, m, path, v):
        _need_layout(v, FEATURE_LAST, path, "edgeseq.nn.Standardize")
        std = np_(m.std).astype(np.float64)
        op = O.BatchNorm(mean=np_(m.mean), var=std * std, eps=0.0)
        return Val(ctx.add(op, v, path), v.layout)

    @converter(enn.Readout)
    def _readout(ctx, m, path, v):
        _need_layout(v, ("BTF",), path, "edgeseq.nn.Readout")
        return Val(ctx.add(O.Readout(mode=m.mode), v, path), "BF")

    @converter(enn.MinGRU, enn.MinLSTM)
    def _minrnn(ctx, m, path, v):
        _need_layout(v, ("BTF",), path, type(m).__name__)
        w = np_(m.proj.weight)
        b = np_(m.proj.bias)
        h = m.hidden_size
        part = lambda a, i: None if a is None else a[i * h : (i + 1) * h]  # noqa: E731
        if isinstance(m, enn.MinGRU):
            op: O.Op = O.MinGRU(w_z=part(w, 0), w_h=part(w, 1), b_z=part(b, 0), b_h=part(b, 1), candidate=m.candidate)
        else:
            op = O.MinLSTM(
                w_f=part(w, 0),
                w_i=part(w, 1),
                w_h=part(w, 2),
                b_f=part(b, 0),
                b_i=part(b, 1),
                b_h=part(b, 2),
                candidate=m.candidate,
            )
        out = Val(ctx.add(op, v, path), "BTF")
        return TupleVal((out, StateVal(out, path)))

    @converter(enn.LMU)
    def _lmu(ctx, m, path, v):
        _need_layout(v, ("BTF",), path, "edgeseq.nn.LMU")
        op = O.LMU(
            e_x=np_(m.e_x),
            order=m.order,
            theta=m.theta,
            e_h=np_(m.e_h),
            e_m=np_(m.e_m),
            b_u=np_(m.b_u),
            w_m=np_(m.w_m),
            w_x=np_(m.w_x),
            w_h=np_(m.w_h),
            b_h=np_(m.b_h),
            discretizer=m.discretizer,
            act=m.act,
        )
        out = Val(ctx.add(op, v, path), "BTF")
        return TupleVal((out, StateVal(out, path)))

    def _neuron(pop) -> O.NeuronParams:
        return O.NeuronParams(
            beta=np_(pop.beta),
            threshold=np_(pop.threshold),
            alpha=np_(pop.alpha),
            reset=pop.reset,
            reset_delay=pop.reset_delay,
        )

    def _lif_op(lif) -> O.Op:
        p = lif.pop
        cls = O.CuBaLIF if p.synaptic else O.LIF
        rec = dict(
            recurrence=lif.recurrence,
            v_rec=np_(lif.v_rec),
            w_rec=None if lif.rec is None else np_(lif.rec.weight),
            b_rec=None if lif.rec is None else np_(lif.rec.bias),
        )
        return cls(neuron=_neuron(p), emit=lif.emit, **rec)

    @converter(enn.LIF)
    def _lif(ctx, m, path, v):
        _need_layout(v, ("BTF",), path, "edgeseq.nn.LIF")
        out = Val(ctx.add(_lif_op(m), v, path), "BTF")
        return TupleVal((out, StateVal(out, path)))

    @converter(SpikeActivation)
    def _spike_act(ctx, m, path, v):
        _need_layout(v, ("BTF",), path, "SpikeActivation")
        return Val(ctx.add(_lif_op(m.lif), v, path), "BTF")

    @converter(enn.L2MU)
    def _l2mu(ctx, m, path, v):
        _need_layout(v, ("BTF",), path, "edgeseq.nn.L2MU")
        cur = v
        if m.enc is not None:
            cur = Val(ctx.add(O.Linear(weight=np_(m.enc.weight), bias=np_(m.enc.bias)), cur, f"{path}.enc"), "BTF")
            p = m.enc_pop
            cls = O.CuBaLIF if p.synaptic else O.LIF
            cur = Val(ctx.add(cls(neuron=_neuron(p)), cur, f"{path}.enc_pop"), "BTF")
        op = O.L2MU(
            a=np_(m.a),
            b=np_(m.b),
            e_x=np_(m.e_x),
            w_m=np_(m.w_m),
            u_neuron=_neuron(m.u_pop),
            m_neuron=_neuron(m.m_pop),
            h_neuron=_neuron(m.h_pop),
            e_h=np_(m.e_h),
            e_m=np_(m.e_m),
            b_u=np_(m.b_u),
            w_x=np_(m.w_x),
            w_h=np_(m.w_h),
            b_h=np_(m.b_h),
        )
        out = Val(ctx.add(op, cur, path), "BTF")
        return TupleVal((out, StateVal(out, path)))

    @converter(enn.S4D)
    def _s4d(ctx, m, path, v):
        _need_layout(v, ("BTF",), path, "edgeseq.nn.S4D")
        out = Val(ctx.add(O.S4D(**m.ir_params()), v, path), "BTF")
        return TupleVal((out, StateVal(out, path)))


_register_edgeseq_nn()


def supported_module_kinds() -> list[str]:
    """Names of the module classes capture understands (for error messages and docs)."""
    names = {("torch.nn." if t.__module__.startswith("torch.") else "edgeseq.nn.") + t.__name__ for t in CONVERTERS}
    return sorted(names | {f"snntorch.{k}" for k in ("Leaky", "RLeaky", "Synaptic", "RSynaptic")})
