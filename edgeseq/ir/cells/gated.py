"""Elman RNN, GRU and LSTM (torch gate order and bias convention) as step programs."""

from __future__ import annotations

import numpy as np

from .. import ops as O
from ..step import ACT, INNER, STATE, StepBuilder, StepProgram, pre, share, unit
from ..types import UNIT_ACTS, Act
from . import lowering


def _rows(a, k: int, h: int):
    return None if a is None else np.asarray(a, np.float64)[k * h : (k + 1) * h]


def _sum(*bs):
    bs = [b for b in bs if b is not None]
    return None if not bs else sum(bs)


def act_to(b: StepBuilder, fn: Act, pre_value: str, *, state: str | None = None, output: int = 0) -> str:
    """fn(pre) quantized as state ``state`` (else as the node's output ``output``); a table
    function's input is the point ':pre'."""
    carried = state is not None
    plain = STATE if carried else ACT
    y, point = pre_value, plain
    if fn is not Act.IDENTITY:
        y = b.act(fn, b.quant("pre", pre_value, pre(fn.value, state=carried)))
        if fn in UNIT_ACTS:
            point = unit(UNIT_ACTS[fn], state=carried)
    if state is not None:
        return b.quant_state(state, y, point)
    return b.quant_output(output, y, point)


@lowering(O.RNN)
def rnn(op: O.RNN, n_in: int) -> StepProgram:
    h = op.hidden_size
    b = StepBuilder(f"RNN.{op.act.value}", {"x": op.input_size}, {"h": h})
    w_ih = b.param("w_ih", op.w_ih, "w_ih")
    w_hh = b.param("w_hh", op.w_hh, "w_hh")
    bias = _sum(_rows(op.b_ih, 0, h), _rows(op.b_hh, 0, h))
    pre_v = b.affine([(w_ih, "x"), (w_hh, "h")], None if bias is None else b.param("b", bias))
    hn = act_to(b, op.act, pre_v, state="h")
    return b.build([hn], {"h": hn})


def _gate(b: StepBuilder, op, k: int, name: str, fn: str, h: int) -> str:
    w_i = b.param(f"w_i{name}", _rows(op.w_ih, k, h), "w_ih")
    w_h = b.param(f"w_h{name}", _rows(op.w_hh, k, h), "w_hh")
    bias = _sum(_rows(op.b_ih, k, h), _rows(op.b_hh, k, h))
    pre_v = b.affine([(w_i, "x"), (w_h, "h")], None if bias is None else b.param(f"b_{name}", bias))
    return b.act_q(Act(fn), pre_v, f"{name}_pre", name, unit(fn))


@lowering(O.GRU)
def gru(op: O.GRU, n_in: int) -> StepProgram:
    h = op.hidden_size
    b = StepBuilder("GRU" + ("" if op.reset_after else ".reset_before"), {"x": op.input_size}, {"h": h})
    r = _gate(b, op, 0, "r", "sigmoid", h)
    z = _gate(b, op, 1, "z", "sigmoid", h)
    w_in = b.param("w_in", _rows(op.w_ih, 2, h), "w_ih")
    w_hn = b.param("w_hn", _rows(op.w_hh, 2, h), "w_hh")
    b_in, b_hn = _rows(op.b_ih, 2, h), _rows(op.b_hh, 2, h)
    if op.reset_after:
        hn = b.quant("hn", b.affine([(w_hn, "h")], None if b_hn is None else b.param("b_hn", b_hn)), INNER)
        xn = b.affine([(w_in, "x")], None if b_in is None else b.param("b_in", b_in))
        n_pre = b.add(xn, b.mul(r, hn))
    else:
        rh = b.quant("rh", b.mul(r, "h"), share("h"))
        bias = _sum(b_in, b_hn)
        n_pre = b.affine([(w_in, "x"), (w_hn, rh)], None if bias is None else b.param("b_n", bias))
    cand = b.act_q(Act.TANH, n_pre, "n_pre", "n", unit("tanh", state=True))
    hn_ = b.quant_state("h", b.lerp(z, cand, "h"), unit("tanh", state=True))
    return b.build([hn_], {"h": hn_})


@lowering(O.LSTM)
def lstm(op: O.LSTM, n_in: int) -> StepProgram:
    h = op.hidden_size
    b = StepBuilder("LSTM", {"x": op.input_size}, {"h": h, "c": h})
    i = _gate(b, op, 0, "i", "sigmoid", h)
    f = _gate(b, op, 1, "f", "sigmoid", h)
    g = _gate(b, op, 2, "g", "tanh", h)
    o = _gate(b, op, 3, "o", "sigmoid", h)
    fc = b.quant("fc", b.mul(f, "c"), share("c", bits=24))
    ig = b.quant("ig", b.mul(i, g), share("c", bits=24))
    c = b.quant_state("c", b.add(fc, ig), STATE)
    tc = b.act_q(Act.TANH, c, "c_pre", "tc", unit("tanh"))
    hn = b.quant_state("h", b.mul(o, tc), unit("tanh", state=True))
    return b.build([hn], {"h": hn, "c": c})
