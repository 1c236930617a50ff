"""Quantization-aware fine-tuning: the straight-through weight swap leaves the latent weights intact,
the fake-quantized forward is what the integer plan stores (per-row symmetric int8), QAT lowers the
fake-quant loss of a model on its data and picks the best epoch on validation data, nn.GRU included,
and its inputs are checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeseq.errors import ConfigError, DatasetError
from edgeseq.nn import build_model
from edgeseq.quant.qat import QatConfig, _fake_weight, _Swap, fake_quant_accuracy, qat_finetune, quantized_params


def _data(n=192, t=20, f=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, t, f)).astype(np.float32)
    x[..., 0] *= 20.0  # a raw-scale outlier channel
    y = ((x[:, :, 1].mean(1) > 0).astype(int) + 2 * (x[:, -5:, 2].mean(1) > 0)).astype(np.int64)
    return x, y


def test_fake_weight_is_per_row_symmetric_int8():
    w = torch.tensor([[0.5, -1.0, 0.25], [10.0, 3.0, -7.0]])
    q = _fake_weight(w, 8)
    s = w.abs().amax(1, keepdim=True) / 127
    np.testing.assert_allclose((q / s).numpy(), np.round((w / s).numpy()), atol=1e-5)
    assert q[0, 1] == -1.0 and q[1, 0] == 10.0  # the row maxima are exact


@pytest.mark.parametrize("arch", ["gru", "lmu"])
def test_swap_restores_latent_weights(arch):
    torch.manual_seed(0)
    m = build_model(arch, 6, 4, hidden=12, **({"memory_d": 4, "order": 6, "theta": 16.0} if arch == "lmu" else {}))
    params = quantized_params(m)
    assert params and all(p.ndim >= 2 for _, p in params)
    before = {n: p.detach().clone() for n, p in params}
    x = torch.randn(2, 7, 6)
    with _Swap(params, 8):
        inside = {n: p.detach().clone() for n, p in params}
        y_q = m(x)
    for n, p in params:
        assert torch.equal(p, before[n])
        assert torch.allclose(inside[n], _fake_weight(before[n], 8))
    assert not torch.allclose(y_q, m(x))  # the quantized forward really differs


@pytest.mark.parametrize("arch", ["gru", "lmu"])
def test_qat_lowers_fake_quant_loss_and_keeps_best_epoch(arch):
    torch.manual_seed(0)
    kw = {"memory_d": 4, "order": 6, "theta": 16.0} if arch == "lmu" else {}
    m = build_model(arch, 6, 4, hidden=16, **kw)
    x, y = _data()
    xv, yv = _data(96, seed=1)

    def fq_loss():
        from edgeseq.quant.qat import _InputQuant

        iq = _InputQuant(x, 8)
        with _Swap(quantized_params(m), 8), torch.no_grad():
            return float(torch.nn.functional.cross_entropy(m(torch.from_numpy(iq(x))), torch.from_numpy(y)))

    l0 = fq_loss()
    hist = qat_finetune(m, x, y, QatConfig(epochs=4, lr=1e-2, batch_size=32), val=(xv, yv), progress=False)
    assert fq_loss() < l0
    accs = [e["validation_accuracy"] for e in hist["epochs"]]
    best = max([hist["start_validation_accuracy"], *accs])
    assert hist["best_validation_accuracy"] == best
    assert fake_quant_accuracy(m, xv, yv, input_range=x) == pytest.approx(best)


def test_qat_rejects_bad_input():
    m = build_model("gru", 6, 4, hidden=8)
    x, y = _data(16)
    with pytest.raises(ConfigError, match="epochs >= 1"):
        qat_finetune(m, x, y, QatConfig(epochs=0), progress=False)
    bad = x.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(DatasetError, match="NaN"):
        qat_finetune(m, bad, y, progress=False)
    with pytest.raises(DatasetError, match="sequences with N labels"):
        qat_finetune(m, x, y[:3], progress=False)
