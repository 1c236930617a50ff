"""Self-attention over the window (``nn.MultiheadAttention`` as ``attn(x, x, x)``): the SelfAttention
window op's equations against torch, capture (batch-first and time-major) and its one-line refusals,
the validation reference kernels, the ONNX lowering and the TVM whole-window kernels at two lengths x
two batch sizes (within 1e-5), and the quantizer's one-line refusal."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import edgeseq
from edgeseq.errors import EdgeseqError, UnsupportedOpError
from edgeseq.ir.interpret import run

from ..byom.corpus import CASES, example

MODELS = ("mha_classifier", "conv_mha")
LENGTHS = (5, 13)
BATCHES = (1, 3)
TOL = 1e-5


def _model(name):
    torch.manual_seed(0)
    m = CASES[name].build().eval()
    return m, edgeseq.capture(m, example(CASES[name]))


def _close(got, want, tol=TOL):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= tol * max(1.0, float(np.abs(want).max()))


@pytest.mark.parametrize("heads", [1, 3])
@pytest.mark.parametrize("batch_first", [True, False])
def test_self_attention_equations_match_torch(heads, batch_first):
    """A bare nn.MultiheadAttention: the reference interpreter (the SelfAttention equations between
    the in/out projections) and the validation reference kernels equal torch's forward."""
    from edgeseq.validate import reference_run

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(6, heads, batch_first=batch_first)

        def forward(self, x):
            return self.attn(x, x, x)[0]

    torch.manual_seed(heads)
    m = M().eval()
    lay = (lambda x: x) if batch_first else (lambda x: x.transpose(0, 1).contiguous())
    g = edgeseq.capture(m, lay(torch.randn(2, 7, 6)))
    assert g.is_window and [n.op.kind for n in g.nodes] == ["Linear", "SelfAttention", "Linear"]
    assert "self-attention" in g.metadata["window"]
    for batch in BATCHES:
        for steps in LENGTHS:
            x = torch.randn(batch, steps, 6, dtype=torch.float64)
            with torch.no_grad():
                want = lay(m.double()(lay(x))).numpy()
            _close(run(g, x.numpy())[0][0], want, 1e-12)
            got, _ = reference_run(g, x.numpy(), device="cpu", dtype="float64", kernels="torch")
            _close(got[0], want, 1e-12)


class _Cross(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(4, 4)
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)

    def forward(self, x):
        return self.attn(self.q(x), x, x)[0].mean(1)


class _Masked(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.register_buffer("mask", torch.ones(5, 5, dtype=torch.bool).triu(1))

    def forward(self, x):
        return self.attn(x, x, x, attn_mask=self.mask)[0].mean(1)


class _Weights(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)

    def forward(self, x):
        _, w = self.attn(x, x, x)
        return w.mean(1)


class _Sdpa(nn.Module):
    def forward(self, x):
        return torch.nn.functional.scaled_dot_product_attention(x, x, x).mean(1)


class _TimeMajorMismatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(4, 4, batch_first=True)
        self.attn = nn.MultiheadAttention(4, 2)  # batch_first=False on a (B, T, F) sequence

    def forward(self, x):
        h, _ = self.gru(x)
        return self.attn(h, h, h)[0].mean(1)


@pytest.mark.parametrize(
    "cls, match",
    [
        (_Cross, "self-attention only"),
        (_Masked, "with attn_mask is not supported"),
        (_Weights, "uses the attention weights"),
        (_Sdpa, "scaled_dot_product_attention"),
        (_TimeMajorMismatch, r"MultiheadAttention\(batch_first=False\)"),
    ],
)
def test_unsupported_attention_is_one_line(cls, match):
    with pytest.raises(EdgeseqError, match=match) as ei:
        edgeseq.capture(cls().eval(), torch.randn(2, 5, 4))
    text = str(ei.value)
    assert "\n" not in text and ("attn" in text or "scaled_dot" in text), text


@pytest.mark.parametrize("name", MODELS)
def test_onnx_and_tvm_run_whole_windows(name, tmp_path):
    """Float ONNX (onnxruntime) and TVM (x86 'main') of the corpus attention models against torch at
    two lengths x two batch sizes, in the model's own layout."""
    from edgeseq.export.tvm import export_tvm
    from edgeseq.ir.layout import to_ir

    m, g = _model(name)
    onnx_art = edgeseq.export(g, target="onnx", out=tmp_path / "onnx")
    tvm_art = export_tvm(g, tmp_path / "tvm", "x86")
    for batch in BATCHES:
        for steps in LENGTHS:
            x = example(CASES[name], batch, steps, seed=steps)
            with torch.no_grad():
                want = m(x).double().numpy()
            _close(onnx_art.run(x.numpy()), want)
            got, _ = tvm_art.run(to_ir(g, x.numpy()).astype(np.float32))  # one output: returned bare
            _close(got, want)


def test_quantize_refuses_attention_in_one_line():
    _, g = _model("conv_mha")
    with pytest.raises(UnsupportedOpError, match="'SelfAttention'.*float export works on every target") as ei:
        edgeseq.quantize(g, example(CASES["conv_mha"], 8, 9).numpy())
    assert "\n" not in str(ei.value)
