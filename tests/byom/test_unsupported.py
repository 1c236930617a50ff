"""Constructs loop capture cannot express raise one line that names where (the model's source line, or
the module) the construct is, what it is, and what to write instead."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import edgeseq
from edgeseq.errors import UnsupportedModuleError

H = 8


class _Loop(nn.Module):
    def __init__(self, step):
        super().__init__()
        self.cell, self.fc, self.ln = nn.GRUCell(6, H), nn.Linear(H, 4), nn.LayerNorm(H)
        self.W = nn.Parameter(torch.randn(H, H))
        self.step = step

    def forward(self, x):
        return self.step(self, x)


def _layernorm(m, x):
    h = torch.zeros(x.size(0), H)
    for t in range(x.size(1)):
        h = m.ln(m.cell(x[:, t], h))
    return m.fc(h)


def _softmax(m, x):
    h = torch.zeros(x.size(0), H)
    for t in range(x.size(1)):
        h = torch.softmax(m.cell(x[:, t], h), -1)
    return m.fc(h)


def _max_over_time(m, x):
    h, outs = torch.zeros(x.size(0), H), []
    for t in range(x.size(1)):
        h = m.cell(x[:, t], h)
        outs.append(h)
    return m.fc(torch.stack(outs, 1).max(1).values)


def _backwards(m, x):
    h = torch.zeros(x.size(0), H)
    for t in reversed(range(x.size(1))):
        h = m.cell(x[:, t], h)
    return m.fc(h)


def _time_index(m, x):
    h = torch.zeros(x.size(0), H)
    for t in range(x.size(1)):
        h = m.cell(x[:, t] * t, h)
    return m.fc(h)


def _data_dependent(m, x):
    h = torch.zeros(x.size(0), H)
    for t in range(x.size(1)):
        h = m.cell(x[:, t], h)
        if h.sum() > 0:
            h = h * 2
    return m.fc(h)


def _nonzero_start(m, x):
    h = torch.ones(x.size(0), H) * 0.5
    for t in range(x.size(1)):
        h = m.cell(x[:, t], h)
    return m.fc(h)


def _transposed(m, x):
    h = torch.zeros(x.size(0), H)
    for t in range(x.size(1)):
        h = torch.tanh(m.W @ h.T).T + m.cell(x[:, t], h)
    return m.fc(h)


CASES = {
    _layernorm: ("'native_layer_norm' inside the time loop", "normalise outside the time loop"),
    _softmax: ("'_softmax' inside the time loop", "apply softmax after the loop"),
    _max_over_time: ("'max' over time is not a streaming readout", ".mean(1)"),
    _backwards: ("the loop runs backwards over time", "bidirectional"),
    _time_index: ("compute different things", "step counter"),
    _data_dependent: ("control flow that depends on tensor values", "torch.where"),
    _nonzero_start: ("do not start from zeros", "torch.zeros(x.size(0), H)"),
    _transposed: ("'permute' inside the time loop", "x_t @ W"),
}


@pytest.mark.parametrize("step", list(CASES), ids=[f.__name__.strip("_") for f in CASES])
def test_unsupported_loop_construct_is_one_line(step):
    torch.manual_seed(0)
    what, instead = CASES[step]
    with pytest.raises(UnsupportedModuleError) as ei:
        edgeseq.capture(_Loop(step).eval(), torch.randn(2, 8, 6))
    e = ei.value
    text = str(e)
    assert "\n" not in text and what in e.message and instead in (e.hint or ""), text
    # where: the model's source line (this file) or the module
    assert re.match(r"test_unsupported\.py:\d+", e.where or "") or e.where == "_Loop", text
