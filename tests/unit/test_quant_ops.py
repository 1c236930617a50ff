"""Op kinds and variants beyond the zoo (every activation, LayerNorm, unfolded BatchNorm, dilated /
grouped Conv1d, readouts, LIF reset rules and recurrences, GRU reset_before, LMU without hidden
cell, Concat), outlier handling (split / SmoothQuant), audits and the mixed-precision search."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseq.ir import GraphBuilder, run
from edgeseq.ir import ops as O
from edgeseq.ir.types import Act
from edgeseq.quant import QuantConfig, intexact, per_step_error, quantize, sqnr_table
from edgeseq.quant.audit import trace_points
from edgeseq.quant.outliers import detect_outliers, outlier_report, smooth_scales


def _lin(rng, i, o, scale=0.5):
    return O.Linear(weight=rng.standard_normal((o, i)) * scale / np.sqrt(i), bias=rng.standard_normal(o) * 0.1)


def _check(g, rng, config="edgeseq", rel=0.1, steps=12, batch=24, scale=1.0, data=None):
    data = data or (lambda n: rng.normal(size=(n, steps, g.in_features)) * scale)
    qg = quantize(g, data(48), config)
    x = data(batch)
    ys_f, _ = run(g, x)
    ys_i, _ = qg.run(x)
    ys_k, _ = qg.run(x, mode="fake")
    for yf, yi, yk in zip(ys_f, ys_i, ys_k):
        s = np.sqrt(np.mean(yf**2)) + 1e-9
        assert np.sqrt(np.mean((yi - yk) ** 2)) / s < 0.02, "integer program and fake quant disagree"
        assert np.sqrt(np.mean((yi - yf) ** 2)) / s < rel, "integer program too far from float"
    xq = qg.quantize_input(x[:3, :7])
    whole, st = intexact.run(qg.program, xq)
    parts, st2 = intexact.run_chunked(qg.program, xq, 3)
    assert all(np.array_equal(a, b) for a, b in zip(whole, parts))
    assert all(np.array_equal(st[k], st2[k]) for k in st)
    return qg


@pytest.mark.parametrize("fn", [a for a in Act])
def test_every_activation(fn, rng):
    b = GraphBuilder(4)
    # exp's output spans e^x: one int8 grid holds it for moderate inputs only
    h = b.add(_lin(rng, 4, 8, 0.7 if fn is Act.EXP else 2.0), "x", "fc")
    a = b.add(O.Activation(fn=fn, lo=-0.5, hi=0.7, slope=0.1), h, "act")
    r = b.add(O.Readout(mode="mean"), a)
    g = b.build(b.add(_lin(rng, 8, 3), r, "head"))
    qg = _check(g, rng, rel=0.12)
    kinds = qg.program.op_counts()
    if fn in (Act.IDENTITY, Act.RELU, Act.HARDTANH):
        assert "lut" not in kinds
    else:
        assert kinds.get("lut") == 1


def test_layernorm_concat_add_and_unfolded_batchnorm(rng):
    b = GraphBuilder(5)
    a = b.add(_lin(rng, 5, 6, 1.5), "x", "fa")
    c = b.add(_lin(rng, 5, 4, 1.0), "x", "fb")
    cat = b.add(O.Concat(), [a, c], "cat")
    ln = b.add(O.LayerNorm(weight=rng.uniform(0.5, 1.5, 10), bias=rng.normal(size=10) * 0.1), cat, "ln")
    d = b.add(_lin(rng, 10, 10, 1.0), ln, "fd")
    s = b.add(O.Add(), [d, ln], "res")
    bn = b.add(
        O.BatchNorm(
            mean=rng.normal(size=10) * 0.1,
            var=rng.uniform(0.5, 2, 10),
            weight=rng.uniform(0.5, 2, 10),
            bias=rng.normal(size=10) * 0.1,
        ),
        s,
        "bn",
    )
    t = b.add(O.Activation(fn="tanh"), bn, "t")
    r = b.add(O.Readout(mode="last"), t)
    g = b.build(b.add(_lin(rng, 10, 3), r, "head"))
    qg = _check(g, rng, rel=0.12)
    assert {"isqrt", "div"} <= set(qg.program.op_counts())
    assert any(n.op.kind == "BatchNorm" for n in qg.graph.nodes)  # after an Add: not foldable


@pytest.mark.parametrize("dilation,groups", [(1, 1), (2, 1), (1, 2), (3, 4)])
def test_conv1d_variants(dilation, groups, rng):
    b = GraphBuilder(4)
    c = b.add(
        O.Conv1d(
            weight=rng.normal(size=(8, 4 // groups, 3)) * 0.4,
            bias=rng.normal(size=8) * 0.1,
            dilation=dilation,
            groups=groups,
        ),
        "x",
        "conv",
    )
    a = b.add(O.Activation(fn="relu"), c, "relu")
    r = b.add(O.Readout(mode="sum"), a)
    g = b.build(b.add(_lin(rng, 8, 3), r, "head"))
    _check(g, rng, rel=0.08, steps=14)


def test_input_batchnorm_merged_into_the_boundary_quantizer(rng):
    b = GraphBuilder(3)
    n = b.add(O.BatchNorm(mean=np.array([5.0, -2.0, 0.0]), var=np.array([4.0, 0.25, 1.0])), "x", "norm")
    c = b.add(O.Conv1d(weight=rng.normal(size=(6, 3, 2)) * 0.5), n, "conv")
    r = b.add(O.Readout(mode="mean"), c)
    g = b.build(b.add(_lin(rng, 6, 2), r, "head"))
    offs = np.array([5.0, -2.0, 0.0])
    qg = _check(
        g, rng, rel=0.1, steps=10, data=lambda n: rng.normal(size=(n, 10, 3)) * np.sqrt([4.0, 0.25, 1.0]) + offs
    )
    (spec,) = qg.program.inputs
    assert spec.vec == "norm" and np.allclose(spec.offset, offs)
    assert qg.plan["x"].absorbed and qg.plan["norm"].boundary


@pytest.mark.parametrize("reset", ["subtract", "zero", "zero_total", "none"])
@pytest.mark.parametrize("delay", [True, False])
def test_lif_reset_rules(reset, delay, rng):
    b = GraphBuilder(4)
    h = b.add(_lin(rng, 4, 10, 3.0), "x", "fc")
    s = b.add(
        O.LIF(neuron=O.NeuronParams(beta=rng.uniform(0.7, 0.95, 10), threshold=0.8, reset=reset, reset_delay=delay)),
        h,
        "lif",
    )
    r = b.add(O.Readout(mode="sum"), s)
    g = b.build(b.add(_lin(rng, 10, 3), r, "head"))
    qg = quantize(g, rng.normal(size=(32, 16, 4)), "edgeseq")
    x = rng.normal(size=(16, 16, 4))
    (yi,), _ = qg.run(x)
    (yk,), _ = qg.run(x, mode="fake")
    (yf,), _ = run(g, x)
    np.testing.assert_allclose(yi, yk, atol=1e-9)
    assert np.mean(yi.argmax(-1) == yf.argmax(-1)) >= 0.8


@pytest.mark.parametrize("rec", ["one_to_one", "all_to_all"])
def test_cuba_lif_recurrences_and_graded_spikes(rec, rng):
    b = GraphBuilder(4)
    h = b.add(_lin(rng, 4, 6, 3.0), "x", "fc")
    kw = (
        {"v_rec": rng.normal(size=6)}
        if rec == "one_to_one"
        else {"w_rec": rng.normal(size=(6, 6)) * 0.3, "b_rec": rng.normal(size=6) * 0.1}
    )
    spk, mem = b.add(
        O.CuBaLIF(
            neuron=O.NeuronParams(beta=0.9, alpha=0.7, threshold=1.0, spike_scale=rng.uniform(0.5, 2.0, 6)),
            recurrence=rec,
            emit="both",
            **kw,
        ),
        h,
        "lif",
    )
    r = b.add(O.Readout(mode="mean"), mem)
    r2 = b.add(O.Readout(mode="sum"), spk)
    cat = b.add(O.Concat(), [r, r2], "cat")
    g = b.build(b.add(_lin(rng, 12, 3), cat, "head"))
    qg = quantize(g, rng.normal(size=(32, 12, 4)), "edgeseq")
    x = rng.normal(size=(8, 12, 4))
    (yi,), _ = qg.run(x)
    (yk,), _ = qg.run(x, mode="fake")
    np.testing.assert_allclose(yi, yk, atol=1e-9)


def test_gru_reset_before_and_lmu_without_hidden_cell(rng):
    b = GraphBuilder(3)
    h = 6
    g1 = b.add(
        O.GRU(
            w_ih=rng.normal(size=(3 * h, 3)) * 0.5,
            w_hh=rng.normal(size=(3 * h, h)) * 0.5,
            b_ih=rng.normal(size=3 * h) * 0.1,
            reset_after=False,
        ),
        "x",
        "gru",
    )
    m = b.add(
        O.LMU(
            e_x=rng.normal(size=(2, h)) * 0.5, order=4, theta=8.0, e_m=rng.normal(size=(2, 8)) * 0.1, b_u=np.zeros(2)
        ),
        g1,
        "lmu",
    )
    r = b.add(O.Readout(mode="last"), m)
    g = b.build(b.add(_lin(rng, 8, 3), r, "head"))
    _check(g, rng, rel=0.08)


def test_temporal_outputs_and_multiple_outputs(rng):
    b = GraphBuilder(3)
    a = b.add(_lin(rng, 3, 5), "x", "fa")
    t = b.add(O.RNN(w_ih=rng.normal(size=(4, 5)) * 0.5, w_hh=rng.normal(size=(4, 4)) * 0.3, act="relu"), a, "rnn")
    r = b.add(O.Readout(mode="mean"), t)
    g = b.build([t, b.add(_lin(rng, 4, 2), r, "head")])
    qg = _check(g, rng, rel=0.1)
    assert [o.temporal for o in qg.program.outputs] == [True, False]


# ----------------------------------------------------------------------------------------------
# outliers


def _outlier_graph(rng):
    b = GraphBuilder(6)
    h = b.add(O.GRU(w_ih=rng.normal(size=(24, 6)) * 0.4, w_hh=rng.normal(size=(24, 8)) * 0.4), "x", "gru")
    r = b.add(O.Readout(mode="last"), h)
    return b.build(b.add(_lin(rng, 8, 3), r, "head"))


def _outlier_data(rng, n):
    x = rng.normal(size=(n, 12, 6))
    x[..., 2] = x[..., 2] * 40.0 + 3.0  # one channel 40x larger, with an offset
    return x


def test_outlier_detection_report(rng):
    g = _outlier_graph(rng)
    qg = quantize(g, _outlier_data(rng, 32), QuantConfig(name="t", input_per_channel=False, outlier_action="split"))
    from edgeseq.quant.calibrate import calibrate

    stats = calibrate(qg.graph, _outlier_data(rng, 16))
    rep = outlier_report(qg.graph, stats, threshold=6.0)
    assert rep["x"]["channels"] == [2] and rep["x"]["ratios"][0] > 20
    assert detect_outliers(stats["x"], 100.0)["channels"] == []


def test_split_outlier_channel_to_int16(rng):
    g = _outlier_graph(rng)
    x = _outlier_data(rng, 48)
    naive = quantize(g, x, QuantConfig(name="pt", input_per_channel=False, outlier_action="none"))
    split = quantize(g, x, QuantConfig(name="split", input_per_channel=False, outlier_action="split"))
    assert [s.bits for s in split.program.inputs] == [8, 16]
    assert list(split.program.inputs[1].channels) == [2]
    xt = _outlier_data(rng, 24)
    (yf,), _ = run(g, xt)
    err = {}
    for name, qg in (("naive", naive), ("split", split)):
        (yi,), _ = qg.run(xt)
        (yk,), _ = qg.run(xt, mode="fake")
        np.testing.assert_allclose(yi, yk, atol=1e-9)
        err[name] = np.sqrt(np.mean((yi - yf) ** 2))
    assert err["split"] < 0.5 * err["naive"]
    xq = split.quantize_input(xt[:2])
    assert set(xq) == {"x.lo", "x.hi"}


def test_smoothquant_migration_on_an_internal_activation(rng):
    b = GraphBuilder(4)
    w = rng.normal(size=(8, 4)) * 0.5
    w[5] *= 60.0  # hidden unit 5 becomes an outlier channel of 'fa'
    h = b.add(O.Linear(weight=w, bias=np.zeros(8)), "x", "fa")
    h2 = b.add(_lin(rng, 8, 6, 1.0), h, "fb")
    t = b.add(O.Activation(fn="tanh"), h2, "t")
    r = b.add(O.Readout(mode="mean"), t)
    g = b.build(b.add(_lin(rng, 6, 3), r, "head"))
    x = rng.normal(size=(48, 10, 4))
    plain = quantize(g, x, QuantConfig(name="p", outlier_action="none"))
    smooth = quantize(g, x, QuantConfig(name="s", outlier_action="smooth", smooth_alpha=0.5))
    e = smooth.plan["fa"]
    assert e.granularity == "per_channel" and "smoothquant" in e.note and "fa" in smooth.plan.outliers
    assert plain.plan["fa"].granularity == "per_tensor"
    xt = rng.normal(size=(24, 10, 4))
    (yf,), _ = run(g, xt)
    errs = [np.sqrt(np.mean((q.run(xt)[0][0] - yf) ** 2)) for q in (plain, smooth)]
    assert errs[1] < errs[0]
    s = smooth_scales(np.array([1.0, 100.0]), np.array([1.0, 1.0]), 1.0, 8)
    assert np.allclose(s, np.array([1.0, 100.0]) / 127)


# ----------------------------------------------------------------------------------------------
# audits and search


def test_per_step_error_and_sqnr(rng):
    g = _outlier_graph(rng)
    qg = quantize(g, rng.normal(size=(32, 12, 6)))
    x = rng.normal(size=(8, 12, 6))
    pse = per_step_error(qg, x)
    assert "gru/h" in pse and pse["gru/h"]["rmse"].shape == (12,)
    assert np.all(pse["gru/h"]["rel"] < 0.1)
    rows = sqnr_table(qg, x)
    by = {r["point"]: r for r in rows}
    assert by["gru/h"]["sqnr_db"] > 25
    assert "SQNR" in sqnr_table(qg, x, as_text=True)
    tr = trace_points(qg, x, "int")
    assert tr["gru:r"].shape == (8, 12, 8)


def test_sensitivity_and_mixed_precision(rng):
    from edgeseq.quant.search import format_sensitivity, sensitivity

    b = GraphBuilder(4)
    h = b.add(
        O.LMU(
            e_x=rng.normal(size=(2, 4)),
            order=6,
            theta=10.0,
            w_m=rng.normal(size=(8, 12)) * 0.5,
            w_x=rng.normal(size=(8, 4)) * 0.5,
            b_h=np.zeros(8),
        ),
        "x",
        "lmu",
    )
    r = b.add(O.Readout(mode="mean"), h)
    g = b.build(b.add(_lin(rng, 8, 4, 3.0), r, "head"))
    x = rng.normal(size=(200, 16, 4))
    y = run(g, x)[0][0].argmax(-1)  # labels = float decisions: float accuracy is 100%
    qg = quantize(g, x[:64], "naive")
    rows = sensitivity(qg, x, y)
    assert {r["kind"] for r in rows} == {"activation", "weight"}
    assert rows == sorted(rows, key=lambda r: (-r["drop"], r["sqnr_db"]))
    assert "drop" in format_sensitivity(rows)
    out = quantize(g, x[:64], "naive", val=(x, y), budget=0.5, max_promotions=6)
    s = out.info["search"]
    assert s["float_accuracy"] == 1.0
    assert s["final_accuracy"] >= s["start_accuracy"]
    if s["start_accuracy"] < 0.995:
        assert s["promoted"] and all(out.plan.config.overrides[p].bits == 16 for p in s["promoted"])


def test_observers_clip_no_wider_than_minmax(rng):
    from edgeseq.quant.observe import TensorStats, amax_mse

    g = _outlier_graph(rng)
    x = rng.normal(size=(48, 12, 6))
    amax = {}
    for obs in ("minmax", "percentile", "mse"):
        qg = quantize(g, x, QuantConfig(name=obs, observer=obs))
        amax[obs] = qg.plan["gru:n_pre"].amax
        (y,), _ = qg.run(x[:4])
        assert np.all(np.isfinite(y))
    assert amax["percentile"] <= amax["minmax"] and amax["mse"] <= amax["minmax"]
    # a heavy-tailed distribution at 4 bits: the MSE-optimal clip is well inside the max
    st = TensorStats(1)
    st.update(rng.laplace(size=(20000, 1)))
    assert amax_mse(st, 4) < 0.75 * st.absmax
