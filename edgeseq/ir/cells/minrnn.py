"""minGRU and minLSTM (Feng et al. 2024) as step programs."""

from __future__ import annotations

from .. import ops as O
from ..step import STATE, StepBuilder, StepProgram, pre, share, unit
from ..types import Act
from . import lowering


def _proj(b: StepBuilder, op, w: str, bias: str) -> str:
    wp = b.param(w, getattr(op, w), w)
    bv = getattr(op, bias)
    return b.affine([(wp, "x")], None if bv is None else b.param(bias, bv))


def _sig_gate(b: StepBuilder, op, w: str, bias: str, name: str) -> str:
    return b.act_q(Act.SIGMOID, _proj(b, op, w, bias), f"{name}_pre", name, unit("sigmoid"))


def _candidate(b: StepBuilder, op) -> str:
    pre_v = _proj(b, op, "w_h", "b_h")
    point = share("h", widen=True)
    if op.candidate is Act.IDENTITY:
        return b.quant("c", pre_v, point)
    return b.act_q(op.candidate, pre_v, "c_pre", "c", point)


@lowering(O.MinGRU)
def mingru(op: O.MinGRU, n_in: int) -> StepProgram:
    b = StepBuilder(f"MinGRU.{op.candidate.value}", {"x": op.input_size}, {"h": op.hidden_size})
    z = _sig_gate(b, op, "w_z", "b_z", "z")
    cand = _candidate(b, op)
    h = b.quant_state("h", b.lerp(z, "h", cand), STATE)
    return b.build([h], {"h": h})


@lowering(O.MinLSTM)
def minlstm(op: O.MinLSTM, n_in: int) -> StepProgram:
    b = StepBuilder(f"MinLSTM.{op.candidate.value}", {"x": op.input_size}, {"h": op.hidden_size})
    pre_f = b.quant("f_pre", _proj(b, op, "w_f", "b_f"), pre("sigmoid"))
    pre_i = b.quant("i_pre", _proj(b, op, "w_i", "b_i"), pre("sigmoid"))
    f = b.quant("f", b.act(Act.SIGMOID, pre_f), unit("sigmoid"))
    i = b.quant("i", b.act(Act.SIGMOID, pre_i), unit("sigmoid"))
    fn = b.quant("fn", b.div(f, b.add(f, i)), unit("sigmoid"))  # f' = f / (f + i); i' = 1 - f'
    cand = _candidate(b, op)
    h = b.quant_state("h", b.lerp(fn, cand, "h"), STATE)
    return b.build([h], {"h": h})
