"""Streaming training (edgeseq.train.stream): per-frame outputs in torch and in the deployed graph,
a short real training run on FSDD recordings with per-frame targets, the checkpoint's streaming
metadata, fine-tuning from a checkpoint, and the recipes of the streaming tasks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgeseq.errors import ConfigError
from edgeseq.train import stream as S
from edgeseq.train.recipes import RECIPES, TASKS, recipe


def _tiny_lmu(n_in=32, n_out=11, readout="last"):
    from edgeseq.nn import build_model

    torch.manual_seed(0)
    return build_model(
        "lmu",
        n_in,
        n_out,
        stem=8,
        stem_kernel=3,
        hidden=12,
        layers=2,
        memory_d=2,
        order=4,
        theta=10.0,
        hidden_cell="dense",
        input_to_hidden=True,
        readout=readout,
    )


@pytest.mark.parametrize("arch", ["lmu", "l2mu"])
def test_per_step_outputs_match_the_clip_model_at_every_prefix(arch):
    from edgeseq.nn import build_model

    torch.manual_seed(1)
    if arch == "lmu":
        model = _tiny_lmu().eval()
    else:
        model = build_model(
            "l2mu", 32, 11, hidden=8, memory_d=2, order=4, theta=10.0, encoder_size=6, readout="last"
        ).eval()
    x = torch.randn(2, 9, 32)
    with torch.no_grad(), S.per_step(model):
        steps = model(x)
    assert steps.shape == (2, 9, 11) and model.readout.mode.value == "last"
    with torch.no_grad():
        for t in (1, 4, 9):
            torch.testing.assert_close(steps[:, t - 1], model(x[:, :t]), rtol=1e-5, atol=1e-5)


def test_streaming_graph_has_one_output_per_step():
    import edgeseq
    from edgeseq.ir.interpret import run

    model = _tiny_lmu().eval()
    g = edgeseq.capture(model, torch.zeros(1, 8, 32))
    gs = S.streaming_graph(g)
    assert [n.op.kind for n in gs.nodes].count("Readout") == 0 and gs.output_types[0].temporal
    assert gs.metadata["streaming"].startswith("per-step") and S.streaming_graph(gs) is gs
    x = np.random.default_rng(0).standard_normal((3, 11, 32))
    per_step = run(gs, x)[0][0]
    assert per_step.shape == (3, 11, 11)
    for t in (1, 6, 11):
        np.testing.assert_allclose(per_step[:, t - 1], run(g, x[:, :t])[0][0], rtol=1e-10, atol=1e-10)
    # one continuous state: two chunks with the state carried equal the whole stream
    a, st = run(gs, x[:, :5])
    b, _ = run(gs, x[:, 5:], state=st)
    np.testing.assert_allclose(np.concatenate([a[0], b[0]], axis=1), per_step, rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def tiny_task():
    """Real FSDD recordings: 60 to train on, the dataset's own test takes of two digits to test."""
    from edgeseq.data import digits as D

    fs = D.fsdd()
    tr = np.flatnonzero((fs.take >= 5) & (fs.take < 11) & (fs.speaker == 1))
    te = np.flatnonzero((fs.take < 2) & (fs.speaker == 1))

    def clips(idx):
        return D.clips_dataset(
            [fs.audio[i] for i in idx],
            fs.digit[idx],
            name="digits",
            features=D.FRONT_END,
            meta={"speakers": list(fs.speakers)},
            groups=fs.speaker[idx],
        )

    return S.StreamTask(
        "digits",
        D.DIGITS_LABELS,
        D.SILENCE,
        D.FRONT_END,
        [fs.audio[i] for i in tr],
        fs.digit[tr],
        clips(te),
        clips(te),
        meta={"protocol": "tiny"},
        val_audio=[fs.words[i] for i in te],
        val_y=fs.digit[te],
    )


def test_train_stream_task_writes_a_streaming_checkpoint(tiny_task, tmp_path):
    from edgeseq.models import load_model

    out = tmp_path / "run"
    kw = dict(
        model_overrides={"stem": 8, "hidden": 12, "memory_d": 2, "order": 4},
        train_overrides={"epochs": 2, "batch_size": 8, "seq_seconds": 2.0},
        progress=False,
        log=lambda *a: None,
        task=tiny_task,
    )
    m = S.train_stream_task("digits", "lmu", out, **kw)
    assert (out / "model.ckpt").is_file() and (out / "curves.png").is_file()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["task"] == "digits" and saved["front_end"] == tiny_task.front_end.to_dict()
    st = saved["streaming"]
    assert st["background"] == "_silence_" and st["frame_rate"] == 50.0 and len(st["keywords"]) == 10
    det = st["detector"]  # picked on a validation stream of the validation utterances
    assert det["threshold"] in S.THRESHOLDS and det["smooth"] in S.SMOOTHING
    assert det["validation_stream"]["keywords_spoken"] > 0
    assert set(saved["test"]["per_speaker"]) == {"jackson"} and 0.0 <= saved["test"]["accuracy"] <= 1.0
    assert saved["test"]["per_class_accuracy"]["_silence_"] is None  # no clip of the background class
    assert len(saved["history"]) == 2 and m["epochs_run"] == 2
    lm = load_model(str(out))
    assert lm.task == "digits" and lm.metrics["streaming"]["background"] == "_silence_"
    # the same seed gives the same weights
    m2 = S.train_stream_task("digits", "lmu", tmp_path / "run2", **kw)
    assert m2["test"] == m["test"] and m2["history"][-1]["loss"] == m["history"][-1]["loss"]
    # fine-tuning starts from the checkpoint and keeps its architecture; select=last keeps the final epoch
    m3 = S.train_stream_task(
        "digits",
        "lmu",
        tmp_path / "ft",
        progress=False,
        log=lambda *a: None,
        task=tiny_task,
        train_overrides={
            "epochs": 2,
            "batch_size": 8,
            "seq_seconds": 2.0,
            "init": str(out / "model.ckpt"),
            "select": "last",
        },
    )
    assert m3["model_config"]["hidden"] == 12 and m3["parameters"] == m["parameters"]
    assert m3["best_epoch"] == 2 and m3["validation_accuracy"] == m3["history"][-1]["val_accuracy"]


def test_stream_recipes_and_options():
    assert {"digits", "digits-synth", "kws-stream"} <= set(TASKS)
    for spk in ("george", "jackson", "lucas", "nicolas", "theo", "yweweler"):
        assert TASKS[f"digits-heldout-{spk}"]["kw"] == {"holdout": spk}
        assert TASKS[f"digits-only-{spk}"]["stream_kw"] == {"only": spk}
    for task in ("digits", "kws-stream"):
        for arch in RECIPES[task]:
            S.StreamTrainConfig.from_dict(recipe(task, arch)[1])
    with pytest.raises(ConfigError, match="unknown streaming training option"):
        S.StreamTrainConfig.from_dict({"epochs": 1, "augment_rotate": 3})
    assert S.StreamTrainConfig.from_dict({"gap_s": [0.1, 0.2]}).sequences().gap_s == (0.1, 0.2)
    with pytest.raises(ConfigError, match="unknown select='worst'; choose one of: best, last"):
        S.StreamTrainConfig.from_dict({"select": "worst"})


def test_spectral_tilt_is_a_seeded_linear_ramp_over_the_bands():
    from edgeseq.train.loop import _tilt

    x = torch.randn(64, 5, 32)
    y = _tilt(x, 1.5, torch.Generator().manual_seed(3))
    d = (y - x)[:, 0, :]  # the same ramp at every frame of a sequence
    assert torch.allclose(y - x, d[:, None, :].expand_as(x), atol=1e-6)
    assert torch.allclose(d[:, :16] + d[:, 16:].flip(1), torch.zeros(64, 16), atol=1e-5)  # odd about the centre
    assert d.abs().max() <= 1.5 + 1e-6 and d[:, -1].std() > 0.5  # within +-1.5 at the edges, and it varies
    assert torch.equal(y, _tilt(x, 1.5, torch.Generator().manual_seed(3)))
    assert S.StreamTrainConfig.from_dict({"augment_tilt": 1.5}).augment_tilt == 1.5


def test_digits_task_pool_options():
    """The digits recipe's training pool: real recordings plus synthetic voices (training pool only), nested
    folds that leave a speaker out altogether, and a front end of the caller's choice."""
    from edgeseq.data import digits as D
    from edgeseq.train.recipes import DIGITS_SYNTHETIC, RECIPE_DATA

    assert RECIPE_DATA["digits"]["lmu"] == {"synthetic": DIGITS_SYNTHETIC}
    assert RECIPE_DATA["digits-heldout-george"]["lmu"] == {"synthetic": DIGITS_SYNTHETIC}
    assert "lmuformer" not in RECIPE_DATA["digits"] and "digits-only-theo" not in RECIPE_DATA
    t = S.digits_task(holdout="nicolas", exclude=("george",), synthetic=(2, 1))
    assert t.meta["train_speakers"] == ["jackson", "lucas", "theo", "yweweler"] and t.meta["excluded_speakers"] == [
        "george"
    ]
    assert t.meta["test_speakers"] == ["nicolas"] and len(t.test) == 500
    assert len(t.train_audio) == 1800 + 10 * (2 + 1) and np.bincount(t.train_y[1800:]).tolist() == [3] * 10
    assert set(np.unique(t.val.groups)) <= {t.meta["speakers"].index(s) for s in t.meta["train_speakers"]}
    assert t.meta["synthetic_per_digit"] == {"espeak-ng (training voices)": 2, "flite": 1}
    fe = {**D.FRONT_END.to_dict(), "cmn_frames": 50.0}
    t2 = S.digits_task(holdout="theo", exclude=("george", "jackson", "lucas", "nicolas"), features=fe)
    assert t2.front_end.cmn_frames == 50.0 and t2.test.meta["features"] == fe and len(t2.train_audio) == 450
