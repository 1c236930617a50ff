"""Every lowered op kind on tiny zoo graphs: integer program vs fake quant vs float, streaming
(chunked == whole), reference semantics of the simulator, BatchNorm folding, serialisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeseq.frontends import capture
from edgeseq.ir import run
from edgeseq.quant import intexact, load_quantized, quantize
from edgeseq.quant.passes import fold_batchnorm
from edgeseq.quant.sim import IdentityHook, simulate
from tests.unit.zoo_cases import ZOO, build

# relative RMS error of the integer program vs float on random inputs (edgeseq preset); spiking
# models flip spikes near threshold, so they get a looser bound
REL_RMS = {"lif": 0.25, "lif_rec": 0.35, "l2mu": 0.35, "l2mu_syn": 0.35, "lmuformer_spiking": 0.35}


@pytest.fixture(scope="module")
def zoo():
    rng = np.random.default_rng(7)
    out = {}
    for case in ZOO:
        g = capture(build(case), torch.zeros(1, 8, 6))
        calib = rng.normal(size=(48, 16, 6)) * 1.3
        out[case] = (g, quantize(g, calib, "edgeseq"))
    return out


@pytest.mark.parametrize("case", list(ZOO))
def test_simulator_with_identity_hook_is_the_reference(case, rng):
    g = capture(build(case), torch.zeros(1, 8, 6))
    x = rng.normal(size=(3, 9, 6)) * 2
    (y, *_), st = run(g, x)
    (y2, *_), st2 = simulate(g, x, IdentityHook())
    np.testing.assert_allclose(y2, y, rtol=1e-12, atol=1e-12)
    for k in st:
        np.testing.assert_allclose(st2[k], st[k], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", list(ZOO))
def test_batchnorm_folding_is_exact(case, rng):
    g = capture(build(case), torch.zeros(1, 8, 6))
    f = fold_batchnorm(g)
    x = rng.normal(size=(2, 7, 6))
    np.testing.assert_allclose(run(f, x)[0][0], run(g, x)[0][0], rtol=1e-9, atol=1e-9)
    assert sum(n.op.kind == "BatchNorm" for n in f.nodes) <= sum(n.op.kind == "BatchNorm" for n in g.nodes)


@pytest.mark.parametrize("case", list(ZOO))
def test_int_vs_fake_vs_float(case, zoo, rng):
    g, qg = zoo[case]
    x = rng.normal(size=(24, 16, 6)) * 1.3
    (yf,), _ = run(g, x)
    (yi,), _ = qg.run(x, mode="int")
    (yk,), _ = qg.run(x, mode="fake")
    scale = np.sqrt(np.mean(yf**2)) + 1e-12
    # the fake-quant simulation reproduces the integer program (up to rare rounding-order ties)
    assert np.sqrt(np.mean((yi - yk) ** 2)) / scale < 0.02
    assert np.mean(yi.argmax(-1) == yk.argmax(-1)) >= 0.95
    # and both stay close to float
    assert np.sqrt(np.mean((yi - yf) ** 2)) / scale < REL_RMS.get(case, 0.1)
    qg.program.verify()
    # default config: every matvec accumulates in int32 (16-bit weight matrices are scaled to fit)
    assert all(qg.program.vectors[op.out].bits <= 32 for op in qg.program.step if op.kind == "matvec")


@pytest.mark.parametrize("case", ["gru", "lmu_full", "lif_rec", "l2mu_syn", "lmuformer", "lmuformer_spiking"])
@pytest.mark.parametrize("batch", [1, 3])
def test_chunked_equals_whole(case, batch, zoo, rng):
    _, qg = zoo[case]
    for steps in (1, 6, 13):
        xq = qg.quantize_input(rng.normal(size=(batch, steps, 6)))
        whole, st = intexact.run(qg.program, xq)
        for chunk in (1, 5):
            parts, st2 = intexact.run_chunked(qg.program, xq, chunk)
            for a, b in zip(whole, parts):
                assert np.array_equal(a, b)
            for k in st:
                assert np.array_equal(st[k], st2[k])


def test_streaming_state_through_quantized_graph_run(zoo, rng):
    _, qg = zoo["lmu"]
    x = rng.normal(size=(2, 10, 6))
    (y_whole,), _ = qg.run(x)
    _, st = qg.run(x[:, :4])
    (y_tail,), _ = qg.run(x[:, 4:], st)
    assert np.array_equal(y_whole, y_tail)


def test_naive_preset_lowers_every_zoo_model(rng):
    for case in ("gru", "lmu_full", "lif", "lmuformer"):
        g = capture(build(case), torch.zeros(1, 8, 6))
        qg = quantize(g, rng.normal(size=(16, 10, 6)), "naive")
        assert all(e.bits <= 8 for e in qg.plan.entries.values() if e.role in ("act", "state", "pre", "unit"))
        assert all(w.bits == 8 and w.granularity == "per_tensor" for w in qg.plan.weights.values())
        (yi,), _ = qg.run(rng.normal(size=(4, 10, 6)))
        assert np.all(np.isfinite(yi))


def test_save_load_round_trip_is_exact(zoo, rng, tmp_path):
    from edgeseq.ir import load as load_ir

    _, qg = zoo["lmuformer_spiking"]
    path = qg.save(tmp_path / "m.q.esq")
    q2 = load_quantized(path)
    assert q2.program.equals(qg.program)
    assert q2.plan.to_dict() == qg.plan.to_dict()
    x = rng.normal(size=(3, 9, 6))
    for mode in ("int", "fake"):
        assert np.array_equal(q2.run(x, mode=mode)[0][0], qg.run(x, mode=mode)[0][0])
    # the file is also a float IR file
    assert load_ir(path).in_features == 6


def test_corrupt_quantized_file_is_rejected(zoo, tmp_path):
    import zipfile

    from edgeseq.errors import IRFormatError

    _, qg = zoo["gru"]
    path = qg.save(tmp_path / "m.q.esq")
    data = bytearray(path.read_bytes())
    src = zipfile.ZipFile(path)
    bad = tmp_path / "bad.esq"
    with zipfile.ZipFile(bad, "w") as z:
        for n in src.namelist():
            blob = src.read(n)
            if n.startswith("quant/consts/") and n.endswith("00000.npy"):
                blob = blob[:-1] + bytes([blob[-1] ^ 1])
            z.writestr(n, blob)
    with pytest.raises(IRFormatError, match="checksum"):
        load_quantized(bad)
    float_only = tmp_path / "f.esq"
    qg.source.save(float_only)
    with pytest.raises(IRFormatError, match="not a quantized graph"):
        load_quantized(float_only)
    assert len(data) > 0


def test_unsupported_op_is_named(monkeypatch, rng):
    import importlib

    from edgeseq.errors import UnsupportedOpError
    from edgeseq.ir.step import Mul

    S = importlib.import_module("edgeseq.quant.steplower")

    g = capture(build("gru"), torch.zeros(1, 8, 6))
    monkeypatch.delitem(S.RULES, Mul)  # a primitive without an integer rule
    with pytest.raises(UnsupportedOpError, match="GRU.*Mul|Mul.*GRU") as ei:
        quantize(g, rng.normal(size=(4, 5, 6)))
    assert "rnn.l0" in str(ei.value)


def test_sizes_and_summary(zoo):
    _, qg = zoo["lmu"]
    s = qg.sizes()
    assert 0 < s["weights_bytes"] < s["float_param_bytes"]
    assert s["state_bytes"] > 0 and s["macs_per_step"] > 0
    text = qg.summary()
    assert "layers.0/m" in text and "weight" in text
    assert "matvec" in qg.program.listing()
