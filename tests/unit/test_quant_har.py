"""A real trained HAR model (a small LMU trained here on part of UCI HAPT) through the quantizer,
and the ``edgeseq quantize`` command."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseq.errors import DatasetError


@pytest.fixture(scope="module")
def har(tmp_path_factory):
    from edgeseq.data import load_dataset
    from edgeseq.train.recipes import train_task

    try:
        train = load_dataset("har", "train", classes=6)
        test = load_dataset("har", "test", classes=6)
    except DatasetError as e:  # pragma: no cover - the HAPT package is a core dependency of the data layer
        pytest.skip(f"UCI HAPT data unavailable: {e}")
    rng = np.random.default_rng(0)
    tr = train.subset(rng.choice(len(train), 1600, replace=False))
    te = test.subset(rng.choice(len(test), 500, replace=False))
    out = tmp_path_factory.mktemp("har") / "lmu"
    # the LMU on the raw channels (stem=0: no conv front end), whose raw-scale input naive int8 handles badly
    train_task(
        "har",
        "lmu",
        out,
        model_overrides=dict(hidden=24, memory_d=4, order=8, theta=64.0, stem=0),
        train_overrides=dict(epochs=4),
        datasets=(tr, te, {}),
        progress=False,
        log=lambda *a, **k: None,
    )
    return out / "model.ckpt", tr, te


def test_trained_har_lmu_quantizes_within_budget(har):
    from edgeseq.models import load_model
    from edgeseq.quant import accuracy, quantize

    ckpt, tr, te = har
    g = load_model(ckpt).graph
    naive = quantize(g, tr.x[:256], "naive")
    qg = quantize(g, tr.x[:256], "edgeseq")
    acc_f = accuracy(qg, te.x, te.y, "float")
    acc_i = accuracy(qg, te.x, te.y, "int")
    acc_n = accuracy(naive, te.x, te.y, "int")
    assert acc_f > 0.5, "the test model did not train"
    assert acc_i >= acc_f - 0.02
    # the outlier-aware plan is much closer to float than per-tensor int8 on raw IMU input
    x = te.x[:200]
    (yf,), _ = qg.run(x, mode="float")
    err = {k: np.sqrt(np.mean((q.run(x)[0][0] - yf) ** 2)) for k, q in (("naive", naive), ("edgeseq", qg))}
    assert err["edgeseq"] < 0.5 * err["naive"]
    assert acc_n <= 1.0
    agree = np.mean(qg.predict(te.x, "int") == qg.predict(te.x, "fake"))
    assert agree >= 0.999
    # streaming: two chunks == whole
    x = te.x[:2]
    (y_whole,), _ = qg.run(x)
    _, st = qg.run(x[:, :50])
    (y_tail,), _ = qg.run(x[:, 50:], st)
    assert np.array_equal(y_whole, y_tail)
    # the raw-unit input is quantized per channel with an offset (accelerometer gravity)
    spec = qg.program.inputs[0]
    assert spec.bits == 8 and np.any(np.abs(spec.offset) > 0.3)


def test_cli_quantize(har, tmp_path, capsys):
    from edgeseq.cli import main
    from edgeseq.quant import load_quantized

    ckpt, _, _ = har
    out = tmp_path / "m.q.esq"
    rc = main(["quantize", str(ckpt), "--data", "har", "--out", str(out), "--calib", "64", "--no-search", "--quiet"])
    assert rc == 0 and out.is_file()
    assert "micro-ops per step" in capsys.readouterr().out
    qg = load_quantized(out)
    assert qg.info["task"] == "har" and qg.plan.config.name == "edgeseq"
    assert main(["quantize", str(ckpt), "--data", "har", "--out", str(out), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (
        main(["quantize", str(ckpt), "--data", "har", "--out", str(tmp_path / "x.esq"), "--config", "int4", "--quiet"])
        == 2
    )
    assert "unknown quantization config" in capsys.readouterr().err
    rc = main(
        [
            "quantize",
            str(ckpt),
            "--data",
            "har",
            "--out",
            str(tmp_path / "n.esq"),
            "--config",
            "naive",
            "--calib",
            "32",
            "--val",
            "64",
            "--budget",
            "100",
            "--quiet",
            "--plan",
        ]
    )
    assert rc == 0 and "granularity" in capsys.readouterr().out


def test_cli_budget_miss_is_an_error_and_qat_recovers_part_of_it(har, tmp_path, capsys):
    from edgeseq.cli import main
    from edgeseq.quant import load_quantized

    ckpt, _, _ = har
    # naive per-tensor int8 on raw-scale IMU input, no 16-bit promotions, misses a zero budget: error, no file
    out = tmp_path / "naive.q.esq"
    args = [
        "quantize",
        str(ckpt),
        "--data",
        "har",
        "--config",
        "naive",
        "--calib",
        "64",
        "--val",
        "256",
        "--budget",
        "0",
        "--max-promotions",
        "0",
        "--quiet",
    ]
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "mixed precision reached" in err and "budget 0.0 points" in err and "--qat-epochs" in err
    assert not out.exists()
    # --qat-epochs: fine-tune with fake quantization, plan again; --allow-miss keeps the best plan
    rc = main([*args, "--out", str(out), "--qat-epochs", "1", "--allow-miss"])
    assert rc == 0 and out.is_file()
    text = capsys.readouterr().out
    assert "fine-tuning with QAT (1 epochs)" in text and "QAT epoch 1/1" in text
    qh = load_quantized(out).info["qat"]
    assert len(qh["epochs"]) == 1 and qh["best_validation_accuracy"] >= qh["start_validation_accuracy"]
    # QAT needs the torch model
    g = tmp_path / "g.esq"
    from edgeseq.models import load_model

    load_model(ckpt).graph.save(g)
    assert (
        main(["quantize", str(g), "--data", "har", "--out", str(tmp_path / "q.esq"), "--qat-epochs", "1", "--quiet"])
        == 2
    )
    assert "pass a checkpoint" in capsys.readouterr().err
