"""Embedding lookup as a stateless step program: a one-hot of the id (two threshold tests per
table row) times the table."""

from __future__ import annotations

import numpy as np

from .. import ops as O
from ..step import ACT, StepBuilder, StepProgram
from . import lowering

FAR = 1e9  # beyond any id: the first and last rows also take the ids outside the table


@lowering(O.Embedding)
def embedding(op: O.Embedding, n_in: int) -> StepProgram:
    v, d = op.table.shape
    b = StepBuilder("Embedding", {"x": 1})
    ids = b.gather("x", np.zeros(v, dtype=np.int64))  # the id, once per table row
    lo = np.arange(v) - 0.5
    hi = np.arange(v) + 0.5
    lo[0], hi[-1] = -FAR, FAR
    above = b.gt(ids, b.param("lo", lo))
    onehot = b.sub(above, b.gt(ids, b.param("hi", hi)))  # row k: k - 1/2 < x <= k + 1/2
    y = b.affine([(b.param("table", np.asarray(op.table, np.float64).T, "table"), onehot)])
    return b.build([b.quant_output(0, y, ACT)], {})
