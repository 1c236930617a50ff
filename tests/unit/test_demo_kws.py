"""``edgeseq demo kws`` building blocks: the WAV checks (16 kHz mono 16-bit PCM, one-line typed
errors naming the file and the sox fix), word-label files, decision windows over streamed
features, the detector (smoothing, threshold, refractory), ground-truth matching and false-accept
counting, and the report rendered from a result dict."""

from __future__ import annotations

import io
import subprocess
import sys
import wave

import numpy as np
import pytest

from edgeseq.data.audio import wav_bytes
from edgeseq.data.features import LogMel, compute
from edgeseq.demo.kws import (
    Detection,
    KwsDemoConfig,
    Scorer,
    WindowPlan,
    _check_config,
    detect,
    false_accepts_per_hour,
    match_detections,
    read_truth,
    read_wav_16k,
    stream_features,
    windows_of,
)
from edgeseq.errors import ConfigError, DatasetError

LABELS = ["yes", "no", "up", "_silence_", "_unknown_"]
KEYWORDS = ["yes", "no", "up"]


def _pcm_wav(path, x, rate=16000, channels=1, width=2):
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        if width == 2:
            data = (np.clip(x, -1, 1) * 32767).astype("<i2")
        else:
            data = ((np.clip(x, -1, 1) * 127) + 128).astype(np.uint8)
        w.writeframes(np.repeat(data, channels).tobytes())
    path.write_bytes(buf.getvalue())
    return path


# ------------------------------------------------------------------------------------------- WAV


def test_reads_16k_mono_pcm16(tmp_path):
    x = 0.5 * np.sin(np.linspace(0, 200, 20000))
    got = read_wav_16k(_pcm_wav(tmp_path / "ok.wav", x))
    assert got.dtype == np.float32 and got.shape == (20000,)
    assert np.max(np.abs(got - x)) < 1e-3


@pytest.mark.parametrize(
    "kw,what",
    [({"rate": 44100}, "sample rate 44100 Hz"), ({"channels": 2}, "2 channels"), ({"width": 1}, "8-bit samples")],
)
def test_wrong_wav_format_names_file_and_fix(tmp_path, kw, what):
    p = _pcm_wav(tmp_path / "in.wav", np.zeros(48000), **kw)
    with pytest.raises(DatasetError) as e:
        read_wav_16k(p)
    msg = str(e.value)
    assert str(p) in msg and what in msg and "16 kHz mono 16-bit PCM" in msg
    assert "sox" in msg and "-r 16000 -c 1 -b 16" in msg and "\n" not in msg


def test_float_wav_and_non_wav_are_rejected(tmp_path):
    f = tmp_path / "float.wav"
    f.write_bytes(wav_bytes(np.zeros(16000, np.float32), 16000, subtype="FLOAT"))
    with pytest.raises(DatasetError, match="not a 16-bit PCM WAV file.*sox"):
        read_wav_16k(f)
    t = tmp_path / "notes.wav"
    t.write_text("hello")
    with pytest.raises(DatasetError, match="not a 16-bit PCM WAV file"):
        read_wav_16k(t)
    with pytest.raises(DatasetError, match="no such file"):
        read_wav_16k(tmp_path / "missing.wav")
    with pytest.raises(DatasetError, match="at least 1 s"):
        read_wav_16k(_pcm_wav(tmp_path / "short.wav", np.zeros(8000)))


def test_cli_bad_wav_is_one_line_error(tmp_path):
    p = _pcm_wav(tmp_path / "cd.wav", np.zeros(44100), rate=44100, channels=2)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeseq",
            "demo",
            "kws",
            "--model",
            "kws_lmu",
            "--input",
            str(p),
            "--target",
            "x86",
            "--quant",
            "float",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2, r.stderr
    lines = [s for s in r.stderr.splitlines() if s.strip() and "Warning" not in s]
    assert len(lines) == 1 and lines[0].startswith("edgeseq: error: ") and str(p) in lines[0]
    assert "sox" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_truth_file_formats(tmp_path):
    p = tmp_path / "labels.txt"
    p.write_text("# audacity labels\n2.5\t3.0\tYes\n\\\t500\t1000\n0.5, 1.0, cat\n4 4.5 no\n")
    assert read_truth(p) == [(0.5, 1.0, "cat"), (2.5, 3.0, "yes"), (4.0, 4.5, "no")]
    p.write_text("1.0 oops\n")
    with pytest.raises(DatasetError, match="line 1"):
        read_truth(p)
    p.write_text("2.0 1.0 yes\n")
    with pytest.raises(DatasetError, match="start <= end"):
        read_truth(p)


def test_wav_at_the_model_rate(tmp_path):
    from edgeseq.demo.kws import read_wav_at

    x = read_wav_at(_pcm_wav(tmp_path / "d.wav", np.zeros(8000), rate=8000), 8000)
    assert x.shape == (8000,) and x.dtype == np.float32
    with pytest.raises(DatasetError, match="sample rate 16000 Hz; the model needs 8 kHz") as e:
        read_wav_at(_pcm_wav(tmp_path / "w.wav", np.zeros(16000)), 8000)
    assert "-r 8000 -c 1 -b 16" in str(e.value)


def test_config_checks():
    _check_config(KwsDemoConfig())
    _check_config(KwsDemoConfig(data="digits", speaker="theo", mode="continuous"))
    for bad in (
        dict(target="cortex-m7"),
        dict(quant="int4"),
        dict(engine="say"),
        dict(seconds=1.0),
        dict(hop_ms=125),
        dict(threshold=0.0),
        dict(smooth=0),
        dict(refractory_s=-1),
        dict(tolerance_s=-1),
        dict(chunk=0),
        dict(truth="labels.txt"),
        dict(data="speech"),
        dict(mode="windows"),
        dict(chunk_s=0.1),
        dict(data="digits", engine="flite"),
        dict(speaker="theo"),
    ):
        with pytest.raises(ConfigError):
            _check_config(KwsDemoConfig(**bad))


def test_default_models_stream_on_one_state():
    """The default model of each stream source was trained to stream: the demo runs it on one
    continuous state (no overlapping slots) with the detection rule recorded in its metrics."""
    from edgeseq.demo.kws import DATA, _model_spec
    from edgeseq.models import load_model

    for data, name in DATA.items():
        lm = load_model(name)
        spec = _model_spec(lm, KwsDemoConfig(data=data, model=name))
        assert spec.mode == "continuous" and spec.front_end.hop_length / spec.front_end.sample_rate == 0.02
        det = lm.metrics["streaming"]["detector"]
        assert spec.detector == {"threshold": det["threshold"], "smooth": det["smooth"]}
    assert DATA["kws"] == "kws_stream_lmu"
    kws_lmu = _model_spec(load_model("kws_lmu"), KwsDemoConfig(model="kws_lmu"))
    assert kws_lmu.mode == "slots"


# ------------------------------------------------------------------------------- windows, features


def test_window_plan_times():
    p = WindowPlan()
    assert p.hop_s == 0.25 and abs(p.window_s - 0.995) < 1e-12 and p.slots == 4
    assert p.count(97) == 0 and p.count(98) == 1 and p.count(122) == 1 and p.count(123) == 2
    assert p.start_s(4) == 1.0 and abs(p.centre_s(0) - 0.4975) < 1e-12


def test_streamed_windows_equal_batch_features():
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(3 * 16000 + 123)).astype(np.float32)
    feat = LogMel()
    streamed = stream_features(audio, feat, 4000)
    batch = compute(audio, feat)
    assert np.array_equal(streamed, batch)
    plan = WindowPlan()
    w = windows_of(streamed, plan)
    assert w.shape == (plan.count(len(batch)), 98, 40)
    assert np.array_equal(w[3], batch[75:173])


# -------------------------------------------------------------------------------------- detector


def _post(top: str, p: float) -> np.ndarray:
    v = np.full(len(LABELS), (1 - p) / (len(LABELS) - 1))
    v[LABELS.index(top)] = p
    return v


def test_detector_threshold_smoothing_refractory():
    plan = WindowPlan()
    seq = (
        [_post("_silence_", 0.9)] * 3
        + [_post("yes", 0.9)] * 3
        + [_post("_silence_", 0.9)] * 2
        + [_post("no", 0.95)] * 6
        + [_post("_unknown_", 0.99)] * 2
        + [_post("up", 0.55)] * 3
    )
    smoothed, times, dets = detect(np.array(seq), LABELS, KEYWORDS, plan, threshold=0.6, smooth=2, refractory_s=0.9)
    assert smoothed.shape == (len(seq), len(LABELS)) and times.shape == (len(seq),)
    # "yes" fires at window 4 (mean of windows 3, 4), "no" at window 9; the second half of the long "no"
    # (window 13, 1 s later) fires again after the 0.9 s refractory time; "up" stays below the threshold
    assert [(d.keyword, d.window) for d in dets] == [("yes", 4), ("no", 9), ("no", 13)]
    d = dets[0]
    assert d.time_s == pytest.approx(0.5 * (plan.centre_s(3) + plan.centre_s(4)))
    assert d.decision_s == pytest.approx(plan.end_s(4)) and d.confidence == pytest.approx(0.9)
    # without smoothing the first confident window fires at once
    _, _, d1 = detect(np.array(seq), LABELS, KEYWORDS, plan, threshold=0.6, smooth=1, refractory_s=10.0)
    assert [(x.keyword, x.window) for x in d1] == [("yes", 3)]
    # a non-keyword top class never fires, however confident
    _, _, d2 = detect(np.array([_post("_unknown_", 1.0)] * 5), LABELS, KEYWORDS, plan, threshold=0.5)
    assert d2 == []


# --------------------------------------------------------------------------------------- scoring


EVENTS = [(1.0, 1.5, "yes"), (3.0, 3.4, "no"), (5.0, 5.6, "_unknown_"), (7.0, 7.5, "up"), (9.0, 9.5, "yes")]


def _det(k, t):
    return Detection(k, t, t + 0.5, 0.9, 0)


def test_matching_hits_misses_and_false_accept_kinds():
    dets = [
        _det("yes", 1.9),  # hit: within the span + 0.5 s
        _det("yes", 2.0),  # duplicate of the same word
        _det("up", 3.2),  # wrong keyword ("no" was spoken)
        _det("no", 5.3),  # on an unknown word
        _det("go", 6.0),  # noise only (6.0 is 0.4 s after the unknown word ends... within tolerance)
        _det("up", 8.3),
    ]  # 0.8 s after "up" ended: background
    outs, m = match_detections(dets, EVENTS, KEYWORDS + ["go"], tolerance_s=0.5, seconds=36.0)
    assert [o["outcome"] for o in outs] == [
        "hit",
        "duplicate",
        "wrong keyword",
        "unknown word",
        "unknown word",
        "background",
    ]
    assert outs[0]["event"] == 0 and outs[2]["event"] == 1 and outs[5]["event"] is None
    assert m["keywords_spoken"] == 4 and m["unknown_words_spoken"] == 1
    assert m["hits"] == 1 and m["misses"] == 3 and m["false_accepts"] == 5 and m["detections"] == 6
    assert m["missed_events"] == [1, 3, 4]
    assert m["false_accept_kinds"] == {"wrong keyword": 1, "unknown word": 2, "background": 1, "duplicate": 1}
    assert m["false_accepts_per_hour"] == pytest.approx(5 * 100.0)
    assert m["hit_rate"] == pytest.approx(0.25) and m["precision"] == pytest.approx(1 / 6)
    rows = {r["keyword"]: r for r in m["per_keyword"]}
    assert rows["yes"] == {"keyword": "yes", "spoken": 2, "hits": 1, "misses": 1, "false_accepts": 1, "hit_rate": 0.5}
    assert rows["up"]["false_accepts"] == 2 and rows["up"]["hits"] == 0 and rows["go"]["spoken"] == 0
    assert rows["go"]["hit_rate"] is None


def test_matching_takes_earliest_free_event_and_tolerance_edges():
    ev = [(1.0, 1.4, "yes"), (2.0, 2.4, "yes")]
    # 1.8 s is within reach of both words: it takes the first, so 2.9 s can still match the second
    outs, m = match_detections([_det("yes", 1.8), _det("yes", 2.9)], ev, ["yes"], tolerance_s=0.5)
    assert [o["event"] for o in outs] == [0, 1] and m["hits"] == 2 and m["misses"] == 0
    outs, m = match_detections([_det("yes", 1.8), _det("yes", 2.95)], ev, ["yes"], tolerance_s=0.5)
    assert [o["outcome"] for o in outs] == ["hit", "background"] and m["misses"] == 1
    # exactly on the tolerance edge counts; detections are scored in time order whatever the input order
    outs, m = match_detections([_det("yes", 2.9), _det("yes", 0.5)], ev, ["yes"], tolerance_s=0.5)
    assert m["hits"] == 2 and m["false_accepts"] == 0
    sc = Scorer(ev, ["yes"], tolerance_s=0.0)
    assert sc.add("yes", 1.5)["outcome"] == "background" and sc.add("yes", 2.0)["outcome"] == "hit"


def test_false_accepts_per_hour():
    assert false_accepts_per_hour(0, 120.0) == 0.0
    assert false_accepts_per_hour(3, 120.0) == pytest.approx(90.0)
    assert false_accepts_per_hour(2, 0.0) is None
    _, m = match_detections([], [], KEYWORDS, seconds=60.0)
    assert m["false_accepts"] == 0 and m["hit_rate"] is None and m["precision"] is None


# ---------------------------------------------------------------------------------------- report


def test_report_renders_from_result(tmp_path):
    from edgeseq.demo.kws_report import kws_report

    plan = WindowPlan()
    rng = np.random.default_rng(0)
    n = 40
    post = rng.dirichlet(np.ones(len(LABELS)), size=n)
    smoothed, times, dets = detect(post, LABELS, KEYWORDS, plan, threshold=0.3)
    outs, m = match_detections(dets, EVENTS, KEYWORDS, 0.5, 11.0)
    rows = [dict(d.__dict__, outcome=o["outcome"], truth=None) for d, o in zip(dets, outs)]
    r = {
        "demo": "kws",
        "model": "tiny",
        "model_source": "x.ckpt",
        "target": "cortex-m4",
        "runner": "qemu-system-arm (mps2-an386)",
        "quantization": "float",
        "data": "kws",
        "source": "test stream",
        "held_out_voices": "f4 <b>",
        "labels": LABELS,
        "keywords": KEYWORDS,
        "stream": {"seconds": 11.0, "input": None, "wav": "stream.wav"},
        "streaming": {
            "features": LogMel().to_dict(),
            "samples_per_push": 4000,
            "streamed_equals_batch": True,
            "window_frames": 98,
            "window_s": plan.window_s,
            "hop_s": 0.25,
            "slots": 4,
            "windows": n,
            "windows_per_device_call": 32,
        },
        "detection": {"rule": "mean", "threshold": 0.3, "smooth": 2, "refractory_s": 1.0, "tolerance_s": 0.5},
        "events": [{"start_s": a, "end_s": b, "label": c} for a, b, c in EVENTS],
        "detections": rows,
        "metrics": m,
        "device_vs_reference": {
            "decision_agreement": 1.0,
            "max_abs_logit_difference": 0.0,
            "detections_identical": True,
            "reference_detections": len(dets),
            "reference": "float64 interpreter",
        },
        "posteriors": {"time_s": times.tolist(), "smoothed": smoothed.tolist()},
        "envelope": {"hop_s": 0.05, "peak": np.abs(rng.standard_normal(220)).tolist()},
        "cost": {
            "instructions": {
                "per_step": 1000.0,
                "per_inference": 99000.0,
                "per_sequence_fixed": 1000.0,
                "method": "qemu",
            }
        },
        "mcu_cost": None,
        "budget": {
            "instructions_per_second_of_audio": 396000.0,
            "mhz_at_one_instruction_per_cycle": 0.396,
            "note": "4 slots",
        },
        "sizes": {"artifact_bytes": 10, "device_binary_bytes": 5, "weights_bytes": 4, "float32_weight_bytes": 4},
        "mcu_sizes": {"target": "cortex-m4", "flash_bytes": 1000, "ram_bytes": 500},
        "plan": None,
        "timings": {"total_s": 1.0},
        "artifact": "a",
    }
    kws_report(r, tmp_path / "report.html")
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3  # per keyword, timeline, posteriors
    assert "false accepts per hour" in html and "f4 &lt;b&gt;" in html and "f4 <b>" not in html
    assert "instructions per frame" in html and "1,000" in html and 'src="http' not in html


def test_continuous_plan_decides_after_every_frame():
    from edgeseq.demo.kws import _pooled_posteriors

    plan = WindowPlan.continuous(160, 240, 8000)
    assert plan.slots == 1 and plan.count(500) == 500 and plan.hop_s == 0.02
    assert plan.end_s(0) == pytest.approx(0.03) and plan.end_s(10) == pytest.approx(0.23)
    post = np.zeros((7, 3))
    post[3, 1] = 0.9
    out = _pooled_posteriors(post, np.arange(7) * 0.02, plan, 3)
    assert out["pooled"] == 3 and len(out["time_s"]) == 3 and out["smoothed"][1][1] == 0.9
    assert _pooled_posteriors(post, np.arange(7) * 0.02, plan, 1)["smoothed"] == post.tolist()


def test_report_renders_continuous_mode(tmp_path):
    from edgeseq.data.digits import FRONT_END
    from edgeseq.demo.kws_report import kws_report

    plan = WindowPlan.continuous(160, 240, 8000)
    rng = np.random.default_rng(1)
    n = 550
    post = rng.dirichlet(np.ones(len(LABELS)) * 0.3, size=n)
    smoothed, times, dets = detect(post, LABELS, KEYWORDS, plan, threshold=0.5, smooth=3)
    outs, m = match_detections(dets, EVENTS, KEYWORDS, 0.5, 11.0)
    m["integer_reference"] = {k: m[k] for k in ("hits", "misses", "false_accepts", "false_accepts_per_hour")}
    rows = [dict(d.__dict__, outcome=o["outcome"], truth=None) for d, o in zip(dets, outs)]
    r = {
        "demo": "kws",
        "data": "digits",
        "model": "digits",
        "model_source": "x.ckpt",
        "target": "cortex-m4",
        "runner": "qemu-system-arm (mps2-an386)",
        "quantization": "edgeseq",
        "source": "FSDD theo",
        "held_out_voices": "FSDD speaker theo",
        "labels": LABELS,
        "keywords": KEYWORDS,
        "stream": {"seconds": 11.0, "input": None, "wav": "stream.wav"},
        "streaming": {
            "mode": "continuous",
            "features": FRONT_END.to_dict(),
            "frame_rate": 50.0,
            "samples_per_push": 1920,
            "streamed_equals_batch": True,
            "window_frames": 1,
            "window_s": plan.window_s,
            "hop_s": plan.hop_s,
            "slots": 1,
            "windows": n,
            "decisions": n,
            "windows_per_device_call": None,
            "frames_per_device_call": 500,
        },
        "detection": {"rule": "mean", "threshold": 0.5, "smooth": 3, "refractory_s": 1.0, "tolerance_s": 0.5},
        "events": [{"start_s": a, "end_s": b, "label": c} for a, b, c in EVENTS],
        "detections": rows,
        "metrics": m,
        "device_vs_reference": {
            "decision_agreement": 1.0,
            "max_abs_logit_difference": 0.0,
            "detections_identical": True,
            "reference_detections": len(dets),
            "reference": "integer-exact interpreter",
        },
        "posteriors": {"time_s": times.tolist(), "smoothed": smoothed.tolist(), "pooled": 1},
        "envelope": {"hop_s": 0.05, "peak": np.abs(rng.standard_normal(220)).tolist()},
        "cost": {
            "instructions": {"per_step": 80000.0, "per_inference": 4e6, "per_sequence_fixed": 100.0, "method": "qemu"}
        },
        "mcu_cost": None,
        "budget": {
            "instructions_per_second_of_audio": 4e6,
            "mhz_at_one_instruction_per_cycle": 4.0,
            "note": "one continuous state",
        },
        "sizes": {"artifact_bytes": 10, "device_binary_bytes": 5, "weights_bytes": 4, "float32_weight_bytes": 4},
        "mcu_sizes": None,
        "plan": "plan",
        "timings": {"total_s": 1.0},
        "artifact": "a",
    }
    kws_report(r, tmp_path / "report.html")
    html = (tmp_path / "report.html").read_text()
    assert "one continuous state, never reset" in html and "20 ms frame" in html and "state slots" not in html
    assert "real speech of held-out recordings" in html and "integer-exact reference" in html
    assert "(one esq_step, 20 ms of audio)" in html and "80,000" in html and "5.0%" in html
    assert "instructions per inference" not in html
