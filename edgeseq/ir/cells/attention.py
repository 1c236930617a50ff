"""Streaming softmax attention pooling as a step program (running max, normaliser, weighted sum)."""

from __future__ import annotations

from .. import ops as O
from ..step import ACT, STATE, StepBuilder, StepProgram, pre, share, unit
from ..types import Act
from . import lowering


@lowering(O.AttentionPool)
def attention_pool(op: O.AttentionPool, n_in: int) -> StepProgram:
    h = op.values
    b = StepBuilder("AttentionPool", {"x": h + 1}, {"max": 1, "den": 1, "num": h})
    score = b.quant("score", b.slice("x", 0, 1), share("max", widen=True))  # compared with the running max
    value = b.slice("x", 1, h + 1)
    m = b.quant_state("max", b.select(b.gt(score, "max"), score, "max"), STATE)
    keep = b.act_q(Act.EXP, b.sub("max", m), "keep_pre", "keep", unit("sigmoid"), pre("exp"))
    new = b.act_q(Act.EXP, b.sub(score, m), "new_pre", "new", unit("sigmoid"), pre("exp"))
    den = b.quant_state("den", b.add(b.mul("den", keep), new), STATE)
    num = b.quant_state("num", b.add(b.mul("num", keep), b.mul(new, value)), STATE)
    y = b.quant_output(0, b.div(num, den), ACT)
    return b.build([y], {"max": m, "den": den, "num": num})
