"""Pruning: structured pruning removes exactly the units it says (the pruned model equals the original
with those units' outgoing weights zeroed), rebuilds from its config, checkpoints, captures and matches
the reference interpreter; unstructured masks survive fine-tuning; sweeps and the CLI write their files."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import edgeseq  # noqa: E402
from edgeseq.data import Dataset  # noqa: E402
from edgeseq.errors import ConfigError, EdgeseqError, ShapeError  # noqa: E402
from edgeseq.ir.interpret import run as reference  # noqa: E402
from edgeseq.nn import build_model  # noqa: E402
from edgeseq.prune import (  # noqa: E402
    PruneMasks,
    StructuredConfig,
    UnstructuredConfig,
    count_parameters,
    finetune,
    nonzero_parameters,
    prune,
    sweep,
    sweep_markdown,
    sweep_plot,
    unit_groups,
)
from edgeseq.train import load_checkpoint, save_checkpoint  # noqa: E402

F, C = 6, 5
MEM = dict(memory_d=4, order=4, theta=8.0)
CASES = {
    "gru2": ("gru", dict(hidden=12, layers=2)),
    "lstm": ("lstm", dict(hidden=10)),
    "rnn2": ("rnn", dict(hidden=8, layers=2)),
    "mingru2": ("mingru", dict(hidden=12, layers=2, readout="mean")),
    "minlstm": ("minlstm", dict(hidden=12)),
    "lmu_dense2": ("lmu", dict(hidden=12, layers=2, hidden_cell="dense", input_to_hidden=True, readout="mean", **MEM)),
    "lmu_rnn": (
        "lmu",
        dict(hidden=12, hidden_cell="rnn", hidden_to_memory=True, memory_to_memory=True, memory_bias=True, **MEM),
    ),
    "lmu_none2": ("lmu", dict(layers=2, hidden_cell="none", **MEM)),
    "lif_rec": ("lif", dict(hidden=12, layers=2, recurrent=True)),
    "l2mu": ("l2mu", dict(hidden=12, encoder_size=8, **MEM)),
    "lmuformer": ("lmuformer", dict(dim=8, **MEM)),
}
NO_HIDDEN = {"lmu_none2", "lmuformer"}
HAS_MEMORY = {"lmu_dense2", "lmu_rnn", "lmu_none2", "l2mu", "lmuformer"}
SPIKING = {"lif_rec", "l2mu"}


def make(case, seed=0):
    arch, cfg = CASES[case]
    torch.manual_seed(seed)
    m = build_model(arch, F, C, **cfg)
    for mod in m.modules():  # non-trivial batch-norm statistics
        if isinstance(mod, torch.nn.BatchNorm1d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


def scfg(case, **kw):
    return StructuredConfig(
        sparsity=0.0 if case in NO_HIDDEN else 0.5, memory_sparsity=0.5 if case in HAS_MEMORY else 0.0, **kw
    )


def zero_removed(model, report):
    """The original model with every removed unit's outgoing weights set to zero."""
    out = copy.deepcopy(model)
    groups = {g.name: g for g in unit_groups(out)}
    params = dict(out.named_parameters())
    with torch.no_grad():
        for row in report["groups"]:
            g = groups[row["group"]]
            if not row["removed"]:
                continue
            for s in g.outgoing:
                pos = torch.as_tensor(s.positions(row["removed"], g.size))
                params[s.param].index_fill_(s.axis, pos, 0.0)
    return out


def x_batch(b=3, t=11, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(b, t, F)).astype(np.float32))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("criterion", ["weight", "random"])
def test_structured_equals_zeroed_units(case, criterion):
    m = make(case)
    res = prune(m, scfg(case, criterion=criterion))
    assert res.masks is None
    rep = res.report
    assert rep["parameters_after"] == count_parameters(res.model) < count_parameters(m)
    removed = sum(len(r["removed"]) for r in rep["groups"])
    assert removed > 0
    x = x_batch().double()
    with torch.no_grad():
        want = zero_removed(m, rep).double()(x)
        got = copy.deepcopy(res.model).double()(x)
    assert got.shape == want.shape == (3, C)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-9, rtol=1e-9)
    # the input model is untouched
    assert count_parameters(m) == rep["parameters_before"]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("criterion", ["activation", "reconstruction"])
def test_pruned_model_captures_checkpoints_and_matches_interpreter(case, criterion, tmp_path):
    m = make(case)
    x = x_batch()
    res = prune(m, scfg(case, criterion=criterion), calib_x=x_batch(8, 15, seed=1).numpy())
    pm = res.model
    for key, (old, new) in res.report["config_changes"].items():
        assert pm.config[key] == new < old
    # checkpoint round trip: the config rebuilds the pruned model
    save_checkpoint(pm, tmp_path / "p.ckpt", metrics={"pruned": True})
    back, doc = load_checkpoint(tmp_path / "p.ckpt")
    assert doc["config"] == pm.config
    with torch.no_grad():
        y0, y1 = pm(x), back(x)
    np.testing.assert_array_equal(y0.numpy(), y1.numpy())
    # capture (checks itself against torch) and the reference interpreter
    g = edgeseq.capture(back, x)
    assert g.num_params() < edgeseq.capture(m, x).num_params()
    outs, _ = reference(g, x.double().numpy())
    np.testing.assert_allclose(outs[0], y0.double().numpy(), atol=1e-4, rtol=1e-4)


def test_gru_shapes_are_gate_coupled():
    m = make("gru2")
    pm = prune(m, StructuredConfig(sparsity=0.25, criterion="weight")).model
    k = 9
    r = pm.rnn
    assert (r.hidden_size, tuple(r.weight_ih_l0.shape), tuple(r.weight_hh_l0.shape)) == (k, (3 * k, F), (3 * k, k))
    assert tuple(r.weight_ih_l1.shape) == (3 * k, k) and tuple(r.bias_hh_l1.shape) == (3 * k,)
    assert tuple(pm.head.weight.shape) == (C, k)


def test_lstm_keeps_gate_blocks_aligned():
    m = make("lstm")
    res = prune(m, StructuredConfig(sparsity=0.5, criterion="weight"))
    keep = np.array(res.report["kept_indices"]["rnn.l0"])
    h, k = 10, len(keep)
    w0, w1 = m.rnn.weight_ih_l0.detach(), res.model.rnn.weight_ih_l0.detach()
    for gate in range(4):  # i, f, g, o blocks each keep the same units, in order
        np.testing.assert_array_equal(w1[gate * k : (gate + 1) * k].numpy(), w0[gate * h + keep].numpy())


def _lmu1(seed=0):
    torch.manual_seed(seed)
    return build_model("lmu", F, C, hidden=12, hidden_cell="dense", input_to_hidden=True, readout="mean", **MEM).eval()


@pytest.mark.parametrize("compensate", ["mean", "lstsq"])
@pytest.mark.parametrize("criterion", ["activation", "reconstruction"])
def test_compensation_removes_constant_units_exactly(compensate, criterion):
    """A unit whose output is constant (no input weights) carries no information: with compensation,
    removing it changes nothing, and the data-driven criteria remove such units first."""
    m = _lmu1()
    dead = [1, 4, 7, 10, 11, 0]
    with torch.no_grad():
        m.layers[0].w_m[dead] = 0.0
        m.layers[0].w_x[dead] = 0.0
        m.layers[0].b_h[dead] = torch.linspace(-1, 1, len(dead))
    x = x_batch(6, 13)
    res = prune(m, StructuredConfig(sparsity=0.5, criterion=criterion, compensate=compensate), calib_x=x.numpy())
    assert res.report["groups"][0]["removed"] == sorted(dead)
    assert res.report["groups"][0]["compensation"] == compensate
    with torch.no_grad():
        np.testing.assert_allclose(res.model(x).numpy(), m(x).numpy(), atol=1e-5)
        off = prune(m, StructuredConfig(sparsity=0.5, criterion=criterion, compensate="none"), calib_x=x.numpy())
        assert np.abs(off.model(x).numpy() - m(x).numpy()).max() > 1e-3


def test_reconstruction_removes_a_duplicate_unit_and_refits_exactly():
    """Two units computing the same thing: either is redundant. Per-unit scores cannot see it; the
    reconstruction criterion removes one of the pair and the least-squares refit of the head gives
    the surviving twin both columns, so the output is unchanged."""
    m = _lmu1(3)
    with torch.no_grad():
        for name in ("w_m", "w_x", "b_h"):
            getattr(m.layers[0], name)[5] = getattr(m.layers[0], name)[2]
    x = x_batch(16, 13)
    res = prune(m, StructuredConfig(sparsity=1 / 12, criterion="reconstruction"), calib_x=x.numpy())
    assert res.report["groups"][0]["removed"] in ([2], [5])
    xt = x_batch(5, 17, seed=9)
    with torch.no_grad():
        np.testing.assert_allclose(res.model(xt).numpy(), m(xt).numpy(), atol=1e-4)


def test_activation_criterion_removes_silent_gru_units_first():
    torch.manual_seed(0)
    m = build_model("gru", F, C, hidden=12).eval()
    silent = [2, 3, 5, 8, 9, 11]
    with torch.no_grad():  # outgoing weights zero: these units influence nothing
        m.rnn.weight_hh_l0[:, silent] = 0.0
        m.head.weight[:, silent] = 0.0
    x = x_batch(6, 13)
    res = prune(m, StructuredConfig(sparsity=0.5, criterion="activation"), calib_x=x.numpy())
    assert res.report["groups"][0]["removed"] == silent
    with torch.no_grad():
        np.testing.assert_allclose(res.model(x).numpy(), m(x).numpy(), atol=1e-6)


def test_config_errors():
    m = make("gru2")
    for bad in (1.0, -0.1, "x"):
        with pytest.raises(ConfigError):
            StructuredConfig(sparsity=bad)
    with pytest.raises(ConfigError, match="criterion"):
        StructuredConfig(criterion="magic")
    with pytest.raises(ConfigError, match="registered: StructuredConfig, UnstructuredConfig"):
        prune(m, {"sparsity": 0.5})
    with pytest.raises(ConfigError, match="before capture"):
        prune(edgeseq.capture(m, x_batch()), StructuredConfig())
    with pytest.raises(ConfigError, match="build_model"):
        prune(torch.nn.GRU(3, 4), StructuredConfig())
    with pytest.raises(ConfigError, match="no prunable hidden units"):
        prune(make("lmu_none2"), StructuredConfig(sparsity=0.5))
    with pytest.raises(ConfigError, match="no memory dimensions"):
        prune(m, StructuredConfig(sparsity=0.5, memory_sparsity=0.5))
    for crit in ("activation", "reconstruction"):
        with pytest.raises(ConfigError, match="calibration"):
            prune(m, StructuredConfig(criterion=crit))
    with pytest.raises(ConfigError, match="compensation"):
        StructuredConfig(compensate="magic")
    assert StructuredConfig(compensate=False).compensate.value == "none"
    with pytest.raises(ShapeError, match="calibration data"):
        prune(m, StructuredConfig(criterion="activation"), calib_x=np.zeros((2, 5, 3), np.float32))
    assert isinstance(ConfigError("x"), EdgeseqError)


def test_min_units_and_full_keep():
    m = make("gru2")
    res = prune(m, StructuredConfig(sparsity=0.99, min_units=2, criterion="weight"))
    assert res.model.rnn.hidden_size == 2
    res = prune(m, StructuredConfig(sparsity=0.0, criterion="weight"))
    assert count_parameters(res.model) == count_parameters(m)


# ------------------------------------------------------------------------------ unstructured


def tiny_data(n=48, t=10, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    x = rng.normal(size=(n, t, F)).astype(np.float32)
    x[np.arange(n), :, y % F] += 1.5  # learnable signal
    labels = tuple(f"c{i}" for i in range(C))
    return Dataset(x, y, labels, "tiny")


def test_unstructured_per_tensor_sparsity_and_masks_survive_finetuning():
    m = make("gru2")
    res = prune(m, UnstructuredConfig(sparsity=0.6))
    tensors = res.report["masks"]["tensors"]
    assert set(tensors) == {n for n, p in m.named_parameters() if p.dim() >= 2}
    for name, info in tensors.items():
        assert info["pruned"] == round(0.6 * info["numel"])
    params = dict(res.model.named_parameters())
    zero_before = {n: (params[n] == 0) for n in tensors}
    assert nonzero_parameters(res.model) < nonzero_parameters(m)
    train, val = tiny_data(), tiny_data(24, seed=1)
    finetune(res.model, train, val, epochs=2, lr=1e-2, masks=res.masks, log=lambda *a: None)
    params = dict(res.model.named_parameters())
    for n in tensors:
        assert bool((params[n][zero_before[n]] == 0).all()), n
        assert bool((params[n][~zero_before[n]] != 0).any()), n  # the rest trained
    assert not res.masks._handles  # detached after fine-tuning


def test_masks_check_shapes_and_names():
    m = make("gru2")
    with pytest.raises(ConfigError, match="no such parameter"):
        PruneMasks({"nope": np.ones(3, bool)}).apply(m)
    with pytest.raises(ShapeError):
        PruneMasks({"head.weight": np.ones((2, 2), bool)}).apply(m)
    with pytest.raises(ConfigError, match="no weight matrices"):
        prune(m, UnstructuredConfig(include=("nothing",)))


# ----------------------------------------------------------------------------- sweep and CLI


def test_sweep_table_and_plot():
    m = make("lmu_dense2")
    train, val, test = tiny_data(), tiny_data(24, seed=1), tiny_data(32, seed=2)
    res = sweep(m, [0.5, 0, 0.25], train, val, test, structured=True, finetune_epochs=1, log=lambda *a: None)
    rows = res["rows"]
    assert [r["sparsity"] for r in rows] == [0.0, 0.25, 0.5]
    assert rows[0]["parameters"] > rows[1]["parameters"] > rows[2]["parameters"]
    assert rows[2]["memory_sparsity"] == 0.5  # memory dims follow the hidden sparsity by default
    assert all(r["accuracy_finetuned"] is not None for r in rows)
    md = sweep_markdown(res)
    assert md.count("\n") == 2 + len(rows) and "| 0.50 |" in md
    png = sweep_plot(res)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    un = sweep(m, [0.5], train, val, test, structured=False, log=lambda *a: None)
    assert un["rows"][1]["nonzero_parameters"] < un["rows"][0]["nonzero_parameters"]
    assert un["rows"][1]["parameters"] == un["rows"][0]["parameters"]


def _cli(capsys, *args):
    from edgeseq.cli import main

    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_prune_and_sweep(tmp_path, capsys):
    torch.manual_seed(0)
    m = build_model("gru", 6, 6, hidden=8)
    save_checkpoint(m, tmp_path / "m.ckpt", metrics={"task": "har"})
    out = tmp_path / "pruned"
    rc, stdout, err = _cli(
        capsys,
        "prune",
        str(tmp_path / "m.ckpt"),
        "--structured",
        "--sparsity",
        "0.5",
        "--criterion",
        "weight",
        "--out",
        str(out),
        "--quiet",
    )
    assert rc == 0, err
    assert "structured pruning at sparsity 0.5" in stdout
    rep = json.loads((out / "prune.json").read_text())
    assert rep["parameters_after"] < rep["parameters_before"] and "accuracy_after" in rep
    back, doc = load_checkpoint(out / "model.ckpt")
    assert back.config["hidden"] == 4 and doc["extra"]["pruning"]["method"] == "structured"
    # existing output without --force: one-line typed error, exit status 2
    rc, _, err = _cli(capsys, "prune", str(tmp_path / "m.ckpt"), "--out", str(out))
    assert rc == 2 and "already exists" in err and "Traceback" not in err
    sw = tmp_path / "sweep"
    rc, stdout, err = _cli(capsys, "prune", str(tmp_path / "m.ckpt"), "--sweep", "0.5", "--out", str(sw), "--quiet")
    assert rc == 0, err
    assert {"sweep.json", "sweep.md", "sweep.png", "s0.50"} <= {f.name for f in sw.iterdir()}
    res = json.loads((sw / "sweep.json").read_text())
    assert not res["structured"] and [r["sparsity"] for r in res["rows"]] == [0.0, 0.5]
    assert "| 0.50 |" in stdout


def test_data_must_fit_the_model():
    from edgeseq.prune.recipe import check_data

    m = make("gru2")
    check_data(m, tiny_data())
    with pytest.raises(ShapeError, match="classes"):
        check_data(build_model("gru", F, 3, hidden=4), tiny_data())
    with pytest.raises(ShapeError, match="input features"):
        check_data(build_model("gru", 4, C, hidden=4), tiny_data())


def test_finetuning_never_returns_worse_validation_weights():
    m = make("gru2")
    train, val = tiny_data(), tiny_data(24, seed=1)
    finetune(m, train, val, epochs=3, lr=1e-2, log=lambda *a: None)  # a sensible model first
    before = {k: v.clone() for k, v in m.state_dict().items()}
    info = finetune(
        m,
        train,
        val,
        epochs=1,
        lr=100.0,
        log=lambda *a: None,  # a destructive step size
        train_overrides={"grad_clip": 0.0, "batch_size": 4, "weight_decay": 10.0},
    )
    assert info["kept_weights_before_finetuning"] and info["best_val_accuracy"] < info["val_accuracy_before"]
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_facade_verb():
    import edgeseq.prune as prune_pkg

    m = make("gru2")
    res = edgeseq.prune(m, StructuredConfig(sparsity=0.5, criterion="weight"))
    assert res.model.rnn.hidden_size == 6 and callable(prune_pkg)
