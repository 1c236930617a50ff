"""``edgeseq demo kws`` end to end on a short stream: a tiny untrained LMU checkpoint (its output
bias favours "yes", so it fires regularly), a 12 s held-out synthetic stream, streamed window by
window through the device's step API natively (x86) and on the Cortex-M4 firmware under
qemu-system-arm; checks demo.json (ground truth, detections, matching arithmetic, device equal to
the reference, cost and sizes) and the self-contained report.html. The int8 path runs when
edgeseq.quant is available."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest

from ..conftest import need_tool

pytestmark = pytest.mark.toolchain

SECONDS = 12.0  # seed 1: keywords among unknown words in the first 12 s for both engines


@pytest.fixture(scope="module")
def tiny_kws_model(tmp_path_factory):
    import torch

    from edgeseq.data.kws import KWS_LABELS
    from edgeseq.nn import build_model
    from edgeseq.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = build_model(
        "lmu",
        40,
        len(KWS_LABELS),
        hidden=16,
        memory_d=4,
        order=8,
        theta=100.0,
        hidden_cell="dense",
        input_to_hidden=True,
        readout="mean",
        input_mean=[-9.0] * 40,
        input_std=[4.0] * 40,
    )
    with torch.no_grad():
        model.head.bias.zero_()
        model.head.bias[KWS_LABELS.index("yes")] = 2.4
    path = tmp_path_factory.mktemp("kws-model") / "tiny_kws.ckpt"
    save_checkpoint(model, path, metrics={"task": "kws", "labels": list(KWS_LABELS)})
    return str(path)


def _check_result(r: dict, out, *, device_instructions: bool):
    from edgeseq.demo.kws import WindowPlan

    assert r["demo"] == "kws" and r["keywords"] == [
        "yes",
        "no",
        "up",
        "down",
        "left",
        "right",
        "on",
        "off",
        "stop",
        "go",
    ]
    st = r["streaming"]
    assert st["streamed_equals_batch"] is True and st["slots"] == 4 and st["window_frames"] == 98
    assert st["windows"] == WindowPlan().count(st["frames"]) and len(r["posteriors"]["time_s"]) == st["windows"]
    assert abs(r["stream"]["seconds"] - SECONDS) < 1e-6 if r["stream"]["input"] is None else True
    dv = r["device_vs_reference"]
    assert dv["detections_identical"] is True and dv["decision_agreement"] == 1.0
    assert dv["max_abs_logit_difference"] < 1e-3
    m = r["metrics"]
    assert r["events"] and m["keywords_spoken"] + m["unknown_words_spoken"] == len(r["events"])
    assert m["detections"] == len(r["detections"]) > 0
    assert m["hits"] + m["misses"] == m["keywords_spoken"]
    assert m["hits"] + m["false_accepts"] == m["detections"]
    assert sum(m["false_accept_kinds"].values()) == m["false_accepts"]
    assert m["false_accepts_per_hour"] == pytest.approx(m["false_accepts"] * 3600 / r["stream"]["seconds"])
    pk = m["per_keyword"]
    assert sum(p["hits"] for p in pk) == m["hits"] and sum(p["spoken"] for p in pk) == m["keywords_spoken"]
    assert sum(p["false_accepts"] for p in pk) == m["false_accepts"]
    for d in r["detections"]:
        assert d["outcome"] in ("hit", "wrong keyword", "unknown word", "background", "duplicate")
        assert d["keyword"] in r["keywords"] and 0 < d["confidence"] <= 1 and d["decision_s"] >= d["time_s"]
    if device_instructions:
        ins = r["cost"]["instructions"]
        assert ins["per_step"] > 0 and ins["per_inference"] > 98 * ins["per_step"] * 0.9
    mcu = r["mcu_sizes"]  # built for cortex-m4 whatever the target, when its toolchain is installed
    if mcu is not None or r["target"] == "cortex-m4":
        assert mcu["target"] == "cortex-m4" and mcu["flash_bytes"] > 0 and mcu["ram_bytes"] > 0
        b = r["budget"]
        assert b["instructions_per_frame"] > 0 and b["slots"] == 4
        assert b["instructions_per_second_of_audio"] == pytest.approx(4 * b["instructions_per_inference"])
    saved = json.loads((out / "demo.json").read_text())
    assert saved["metrics"] == json.loads(json.dumps(m))
    html = (out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "keyword spotting" in html
    assert html.count("data:image/png;base64,") >= 3 and 'src="http' not in html
    for text in (
        "Timeline",
        "Posteriors over time",
        "false accepts per hour",
        "Detections",
        "instructions per frame",
        "state slots",
        "esq_step",
    ):
        assert text in html, text


def test_demo_kws_x86_float(tiny_kws_model, tmp_path):
    need_tool("gcc")
    need_tool("espeak-ng")
    from edgeseq.data.kws import KWS_KEYWORDS
    from edgeseq.demo.kws import KwsDemoConfig, detect, read_wav_16k, reference_logits, run_kws_demo

    log = io.StringIO()
    out = tmp_path / "demo"
    cfg = dict(model=tiny_kws_model, seconds=SECONDS, seed=1, quant="float", threshold=0.5, live=False)
    r = run_kws_demo(KwsDemoConfig(target="x86", out=str(out), **cfg), stream=log)
    _check_result(r, out, device_instructions=False)
    # the demo's stream through the reference alone (for threshold sweeps): the demo's detections
    ref = reference_logits(KwsDemoConfig(**cfg))
    assert ref.int_logits is None and len(ref.events) == len(r["events"])
    post = np.exp(ref.float_logits - ref.float_logits.max(-1, keepdims=True))
    rule = {k: r["detection"][k] for k in ("threshold", "smooth", "refractory_s")}
    _, _, dets = detect(post / post.sum(-1, keepdims=True), ref.labels, ref.keywords, ref.plan, **rule)
    assert r["device_vs_reference"]["detections_identical"]
    assert [(d.keyword, d.window) for d in dets] == [(d["keyword"], d["window"]) for d in r["detections"]]
    assert r["runner"] == "native x86" and r["cost"]["latency"]["per_step_s"] > 0
    assert r["stream"]["engine"] == "espeak-ng" and "never used in training" in r["held_out_voices"]
    assert "detections" in log.getvalue() and "report" in log.getvalue()
    audio = read_wav_16k(out / "stream.wav")
    assert audio.size == int(SECONDS * 16000)
    assert any(e["label"] in KWS_KEYWORDS for e in r["events"])

    # the same audio as a user's recording, with its word labels as an Audacity label track
    truth = tmp_path / "labels.txt"
    truth.write_text("".join(f"{e['start_s']}\t{e['end_s']}\t{e['label']}\n" for e in r["events"]))
    r2 = run_kws_demo(
        KwsDemoConfig(
            model=tiny_kws_model,
            target="x86",
            out=str(tmp_path / "demo2"),
            input=str(out / "stream.wav"),
            truth=str(truth),
            quant="float",
            threshold=0.5,
            live=False,
        ),
        stream=io.StringIO(),
    )
    assert r2["stream"]["input"] and r2["stream"]["wav"] is None and r2["held_out_voices"] is None
    assert r2["metrics"]["keywords_spoken"] == r["metrics"]["keywords_spoken"]
    assert not (tmp_path / "demo2" / "stream.wav").exists()
    _check_result(r2, tmp_path / "demo2", device_instructions=False)

    # unlabelled recording: detections only
    r3 = run_kws_demo(
        KwsDemoConfig(
            model=tiny_kws_model,
            target="x86",
            out=str(tmp_path / "demo3"),
            input=str(out / "stream.wav"),
            quant="float",
            threshold=0.5,
            live=False,
        ),
        stream=io.StringIO(),
    )
    assert r3["metrics"] is None and r3["events"] is None and len(r3["detections"]) == len(r2["detections"])
    assert all("outcome" not in d for d in r3["detections"])
    assert "unlabelled" in (tmp_path / "demo3" / "report.html").read_text()


def test_demo_kws_cortex_m4_cli(tiny_kws_model, tmp_path):
    need_tool("arm-none-eabi-gcc")
    need_tool("qemu-system-arm")
    need_tool("flite")
    out = tmp_path / "demo"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeseq",
            "demo",
            "kws",
            "--model",
            tiny_kws_model,
            "--quant",
            "float",
            "--seconds",
            str(SECONDS),
            "--seed",
            "1",
            "--engine",
            "flite",
            "--threshold",
            "0.5",
            "--chunk",
            "16",
            "--out",
            str(out),
            "--no-live",
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((out / "demo.json").read_text())
    _check_result(r, out, device_instructions=True)
    assert r["target"] == "cortex-m4" and r["runner"].startswith("qemu-system-arm")
    assert r["stream"]["engine"] == "flite" and "flite" in r["held_out_voices"]
    assert r["mcu_cost"] == r["cost"] and r["streaming"]["windows_per_device_call"] == 16
    assert "qemu-system-arm" in p.stderr and "keywords detected" in p.stderr
    # an existing output directory that this demo did not write needs --force (checked before any work)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    p2 = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeseq",
            "demo",
            "kws",
            "--model",
            tiny_kws_model,
            "--quant",
            "float",
            "--out",
            str(other),
        ],
        capture_output=True,
        text=True,
    )
    assert p2.returncode == 2 and "--force" in p2.stderr and (other / "notes.txt").read_text() == "keep"


@pytest.mark.slow  # calibrates on the KWS training corpus (built once, ~90 s, then cached)
def test_demo_kws_int8(tiny_kws_model, tmp_path):
    quant = pytest.importorskip("edgeseq.quant")
    if not hasattr(quant, "quantize"):
        pytest.skip("edgeseq.quant.quantize is not available in this build")
    pytest.importorskip("edgeseq.export.c.intexport", reason="integer C export is not available in this build")
    need_tool("gcc")
    need_tool("espeak-ng")
    from edgeseq.demo.kws import KwsDemoConfig, run_kws_demo

    out = tmp_path / "demo"
    r = run_kws_demo(
        KwsDemoConfig(
            model=tiny_kws_model,
            target="x86",
            out=str(out),
            seconds=SECONDS,
            seed=1,
            quant="edgeseq",
            calib=64,
            threshold=0.5,
            live=False,
        ),
        stream=io.StringIO(),
    )
    assert r["quantization"] == "edgeseq"
    assert r["device_vs_reference"]["reference"] == "integer-exact interpreter"
    _check_result(r, out, device_instructions=False)
    assert "float_reference" in r["metrics"]


# ----------------------------------------------------------------------------- one continuous state


@pytest.fixture(scope="module")
def tiny_digits_model(tmp_path_factory):
    """An untrained 8 kHz digits model marked as trained to stream, its output bias favouring "five"
    (it fires regularly), held out from speaker theo like the shipped demo model."""
    import torch

    from edgeseq.data.digits import DIGITS_LABELS, FRONT_END
    from edgeseq.nn import build_model
    from edgeseq.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = build_model(
        "lmu",
        32,
        len(DIGITS_LABELS),
        stem=8,
        stem_kernel=3,
        hidden=16,
        memory_d=4,
        order=8,
        theta=50.0,
        hidden_cell="dense",
        input_to_hidden=True,
        readout="last",
        input_mean=[-9.0] * 32,
        input_std=[4.0] * 32,
    )
    with torch.no_grad():
        model.head.bias.zero_()
        model.head.bias[DIGITS_LABELS.index("five")] = 2.6
    speakers = ["george", "jackson", "lucas", "nicolas", "yweweler"]
    path = tmp_path_factory.mktemp("digits-model") / "tiny_digits.ckpt"
    save_checkpoint(
        model,
        path,
        metrics={
            "task": "digits",
            "recipe_task": "digits-heldout-theo",
            "labels": list(DIGITS_LABELS),
            "front_end": FRONT_END.to_dict(),
            "streaming": {"background": "_silence_", "frame_rate": 50.0},
            "data": {"protocol": "holdout:theo", "train_speakers": speakers, "test_speakers": ["theo"]},
        },
    )
    return str(path)


def _check_continuous(r: dict, out, seconds: float):
    st = r["streaming"]
    assert st["mode"] == "continuous" and st["slots"] == 1 and st["window_frames"] == 1 and st["frame_rate"] == 50.0
    assert (
        st["streamed_equals_batch"] is True
        and st["decisions"] == st["frames"] == 1 + (int(seconds * 8000) - 240) // 160
    )
    assert r["stream"]["sample_rate"] == 8000 and r["data"] == "digits" and "theo" in r["held_out_voices"]
    assert all(
        e["label"] in ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
        for e in r["events"]
    )
    dv = r["device_vs_reference"]
    assert (
        dv["detections_identical"] is True and dv["decision_agreement"] == 1.0 and dv["max_abs_logit_difference"] < 1e-3
    )
    m = r["metrics"]
    assert m["detections"] == len(r["detections"]) > 0 and m["hits"] + m["misses"] == m["keywords_spoken"] > 0
    assert m["hits"] + m["false_accepts"] == m["detections"]
    b = r["budget"]
    if b is not None:
        assert b["slots"] == 1 and b["mode"] == "continuous"
        assert b["instructions_per_second_of_audio"] == pytest.approx(50.0 * b["instructions_per_frame"])
    html = (out / "report.html").read_text()
    assert "one continuous state, never reset" in html and "20 ms frame" in html and "real speech" in html


def test_demo_digits_continuous_x86(tiny_digits_model, tmp_path):
    need_tool("gcc")
    from edgeseq.data.audio import read_wav
    from edgeseq.demo.kws import KwsDemoConfig, run_kws_demo

    out = tmp_path / "demo"
    r = run_kws_demo(
        KwsDemoConfig(
            model=tiny_digits_model,
            data="digits",
            target="x86",
            out=str(out),
            seconds=12.0,
            seed=2,
            quant="float",
            threshold=0.5,
            chunk_s=3.0,
            live=False,
        ),
        stream=io.StringIO(),
    )
    _check_continuous(r, out, 12.0)
    assert r["streaming"]["frames_per_device_call"] == 150 and r["stream"]["speaker"] is None
    audio, rate = read_wav(out / "stream.wav")
    assert rate == 8000 and audio.size == 96000
    # a speaker the model trained on is refused
    from edgeseq.errors import ConfigError

    with pytest.raises(ConfigError, match="trained on speaker jackson"):
        run_kws_demo(
            KwsDemoConfig(
                model=tiny_digits_model,
                data="digits",
                speaker="jackson",
                target="x86",
                out=str(tmp_path / "d2"),
                quant="float",
                live=False,
            ),
            stream=io.StringIO(),
        )
    # a digits model on the synthetic keyword stream is refused with the model to use
    with pytest.raises(ConfigError, match="does not spot the words of the --data kws stream"):
        run_kws_demo(
            KwsDemoConfig(model=tiny_digits_model, target="x86", out=str(tmp_path / "d3"), quant="float", live=False),
            stream=io.StringIO(),
        )


def test_demo_digits_shipped_model_int8_cortex_m4(tmp_path):
    """The README's demo in short form: the shipped held-out-speaker model, int8, on the Cortex-M4 firmware."""
    need_tool("arm-none-eabi-gcc")
    need_tool("qemu-system-arm")
    out = tmp_path / "demo"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeseq",
            "demo",
            "kws",
            "--data",
            "digits",
            "--seconds",
            "10",
            "--chunk-seconds",
            "5",
            "--out",
            str(out),
            "--no-live",
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((out / "demo.json").read_text())
    _check_continuous(r, out, 10.0)
    assert r["model"] == "digits_lmu_heldout" and r["quantization"] == "edgeseq" and r["target"] == "cortex-m4"
    assert r["device_vs_reference"]["reference"] == "integer-exact interpreter"
    assert r["budget"]["instructions_per_second_of_audio"] <= 16e6  # real time on an 80 MHz M4 with margin
    assert r["metrics"]["hits"] >= r["metrics"]["keywords_spoken"] - 1
    assert "qemu-system-arm" in p.stderr and "M per second of audio" in p.stderr
