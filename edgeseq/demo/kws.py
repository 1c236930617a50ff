"""``edgeseq demo kws``: keyword spotting on a continuous audio stream, on an (emulated) Cortex-M4.

1. the model: by default ``kws_stream_lmu`` (``--data kws``: 12 classes, the ten keywords plus
   ``_silence_`` and ``_unknown_``, synthetic speech, trained to run on one continuous state at 50
   frames per second; the clip classifier ``kws_lmu`` streams with ``--model kws_lmu``, on overlapping
   state slots) or ``digits_lmu_heldout`` (``--data digits``:
   the spoken digits zero..nine, real speech from the Free Spoken Digit Dataset, one speaker never
   used in training); the front end (sample rate, mel bands, frame hop) comes from the model;
2. the outlier-aware int8 plan of :mod:`edgeseq.quant`, calibrated on training clips of the model's task;
3. ``edgeseq.export(..., target="cortex-m4")``: firmware for QEMU's mps2-an386 board;
4. a continuous stream: ``--data kws`` synthesises keywords among unknown words and background noise
   at known times, spoken by voices never used in training (held-out espeak-ng voices, or the
   held-out engine flite with ``--engine flite``, :func:`edgeseq.data.kws.synth_stream`);
   ``--data digits`` places a held-out speaker's recordings among noise-only gaps at ``--snr`` dB
   (:func:`edgeseq.data.digits.digit_stream`); ``--input FILE.wav`` is a user's own recording
   (``--truth`` adds its word labels);
5. features computed frame by frame as the audio arrives (:class:`StreamingFeatures`), then one of
   two streaming modes (:mod:`edgeseq.data.detect`):

   * ``continuous`` (models trained to stream, :mod:`edgeseq.train.stream`): the device runs one
     state from power-on, one ``esq_step`` per frame and never a reset, and its output is read after
     every frame; the audio goes to the device in chunks of ``--chunk-seconds`` with the state carried
     between calls;
   * ``slots`` (clip classifiers such as ``kws_lmu``): a decision every hop on the last window; the
     device keeps ``window / hop`` staggered state slots, each reset and then stepped once per frame --
     here every window is streamed frame by frame from a reset state, windows batched per device call;

6. detection: posterior smoothing, threshold and refractory suppression; detections are matched to
   the ground truth (hits, misses, false accepts, false accepts per hour, per keyword), and the same
   rule runs on the integer-exact reference and the float model;
7. a report (``demo.json`` + self-contained ``report.html``): timeline and posterior plots,
   device-vs-reference agreement, instructions per frame and per second of audio, flash / RAM.
"""

from __future__ import annotations

import math
import struct
import sys
import time
import wave
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

# the demo's building blocks, re-exported here (FA_KINDS, Detection: used by callers of this module)
from ..data.detect import (  # noqa: F401
    FA_KINDS,
    Detection,
    Detector,
    Scorer,
    WindowPlan,
    detect,
    false_accepts_per_hour,
    match_detections,
    stream_features,
    windows_of,
)
from ..errors import ConfigError, DatasetError
from .har import _batched, _check_toolchains, _dir_bytes, _have, _jsonable, _mcu_sizes, _softmax

SAMPLE_RATE = 16000
TARGETS = ("x86", "arm", "cortex-m4")
OWNER = "edgeseq demo kws"  # marks its --out as this demo's own (replaced without --force)
ENGINES = {"espeak-ng": "test", "flite": "flite"}  # engine -> corpus split of held-out voices
RUNNERS = {"x86": "native x86", "arm": "qemu-aarch64", "cortex-m4": "qemu-system-arm (mps2-an386)"}
DATA = {"kws": "kws_stream_lmu", "digits": "digits_lmu_heldout"}  # stream source -> default model
MODES = ("auto", "continuous", "slots")
ENVELOPE_HOP_S = 0.05
MAX_PLOT_POINTS = 20000  # decisions kept for the posterior plot (max-pooled beyond that)
# detection defaults per mode (a model trained to stream may record its own under metrics["streaming"]["detector"])
DETECTOR_DEFAULTS = {"slots": {"threshold": 0.6, "smooth": 2}, "continuous": {"threshold": 0.6, "smooth": 5}}


@dataclass
class KwsDemoConfig:
    model: Optional[str] = None  # default: DATA[data]
    data: str = "kws"  # the stream: "kws" (synthetic keywords) or "digits" (FSDD, real speech)
    target: str = "cortex-m4"
    out: str = "runs/demo-kws"
    input: Optional[str] = None  # a mono 16-bit PCM WAV at the model's sample rate instead of the stream
    truth: Optional[str] = None  # word labels of --input (Audacity label track: start, end, label)
    seconds: float = 120.0  # length of the stream
    engine: str = "espeak-ng"  # --data kws: held-out voices of espeak-ng, or the held-out engine flite
    speaker: Optional[str] = None  # --data digits: the FSDD speaker streamed (default: the model's held-out one)
    snr_db: Optional[float] = 20.0  # background noise of the stream (None: clean)
    seed: int = 0
    live: bool = True
    quant: str = "edgeseq"  # "edgeseq" (outlier-aware int8), "naive", or "float"
    calib: int = 512
    mode: str = "auto"  # continuous for models trained to stream, slots otherwise
    hop_ms: int = 250  # slots: a decision every hop; window / hop state slots
    chunk: int = 32  # slots: windows per device call (the view refreshes after each)
    chunk_s: float = 10.0  # continuous: seconds of audio per device call (state carried between calls)
    threshold: Optional[float] = None  # default: DETECTOR_DEFAULTS / the model's own
    smooth: Optional[int] = None  # decisions averaged (causally) before thresholding
    refractory_s: float = 1.0
    tolerance_s: float = 0.5
    force: bool = False


# ------------------------------------------------------------------------------------------ input


def read_wav_at(path, sample_rate: int) -> np.ndarray:
    """A user's recording as float32 (n,) in [-1, 1]; it must be mono 16-bit PCM WAV at ``sample_rate``.

    Anything else raises :class:`DatasetError` naming the file and the ``sox`` command that converts it."""
    from ..util.safeio import Budget, human, open_regular

    p = Path(path)
    khz = f"{sample_rate / 1000:g}k"
    fix = f"convert it with: sox {p} -r {sample_rate} -c 1 -b 16 {p.with_name(p.stem + f'_{khz}.wav')}"
    f, size = open_regular(p, DatasetError, "WAV file")
    budget = Budget.for_kind("data")
    if size > budget.total:
        f.close()
        raise DatasetError(f"the WAV file is {human(size)}, more than {budget.limit_text()} allows", where=str(p))
    try:
        w = wave.open(f, "rb")
    except (wave.Error, EOFError, ValueError, struct.error, OverflowError, RuntimeError) as e:
        f.close()  # (the wave module raises RuntimeError for a chunk size that runs past the end of the file)
        raise DatasetError(
            f"not a 16-bit PCM WAV file ({str(e) or 'chunk sizes run past the end of the file'})",
            where=str(p),
            hint=fix,
        ) from None
    except OSError as e:
        f.close()
        raise DatasetError(f"cannot read ({e.strerror})", where=str(p)) from None
    with f, w:
        ch, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
        problems = []
        if rate != sample_rate:
            problems.append(f"sample rate {rate} Hz")
        if ch != 1:
            problems.append(f"{ch} channels")
        if width != 2:
            problems.append(f"{8 * width}-bit samples")
        if problems:
            raise DatasetError(
                f"{', '.join(problems)}; the model needs {sample_rate / 1000:g} kHz mono 16-bit PCM",
                where=str(p),
                hint=fix,
            )
        try:
            raw = w.readframes(min(n, size // 2 + 1))  # a header may declare more frames than the file holds
        except (wave.Error, EOFError, OSError, ValueError, struct.error) as e:
            raise DatasetError(f"truncated or corrupt WAV data ({e})", where=str(p), hint=fix) from None
    x = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    if x.size < sample_rate:
        raise DatasetError(f"the recording is {x.size / sample_rate:.2f} s long; at least 1 s is needed", where=str(p))
    return x


def read_wav_16k(path) -> np.ndarray:
    """:func:`read_wav_at` at 16 kHz."""
    return read_wav_at(path, SAMPLE_RATE)


def read_truth(path) -> list[tuple[float, float, str]]:
    """Word labels of a recording: one ``start end label`` per line (seconds; tab-, comma- or
    space-separated, as an Audacity label track exports them). Returns events sorted by start."""
    from ..util.safeio import MiB, read_text

    p = Path(path)
    lines = read_text(p, DatasetError, max_bytes=16 * MiB, what="label file").splitlines()
    events = []
    for k, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#") or s.startswith("\\"):
            continue
        parts = [t for t in (s.split("\t") if "\t" in s else s.replace(",", " ").split()) if t.strip()]
        try:
            start, end, label = float(parts[0]), float(parts[1]), parts[2].strip().lower()
        except (IndexError, ValueError):
            raise DatasetError(f"line {k}: expected 'start end label' (seconds), got {s!r}", where=str(p)) from None
        if not (math.isfinite(start) and math.isfinite(end) and 0 <= start <= end):
            raise DatasetError(f"line {k}: need 0 <= start <= end, got {start} .. {end}", where=str(p))
        events.append((start, end, label))
    return sorted(events)


# ------------------------------------------------------------------------------------------- demo


def _check_config(cfg: KwsDemoConfig) -> None:
    if cfg.target not in TARGETS:
        raise ConfigError(f"unknown demo target '{cfg.target}'; choose one of: {', '.join(TARGETS)}")
    if cfg.data not in DATA:
        raise ConfigError(f"--data must be one of {', '.join(DATA)}, got '{cfg.data}'")
    if cfg.mode not in MODES:
        raise ConfigError(f"--mode must be one of {', '.join(MODES)}, got '{cfg.mode}'")
    if cfg.quant not in ("edgeseq", "naive", "float"):
        raise ConfigError(f"--quant must be edgeseq, naive or float, got '{cfg.quant}'")
    if cfg.engine not in ENGINES:
        raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got '{cfg.engine}'")
    if cfg.engine != "espeak-ng" and cfg.data != "kws":
        raise ConfigError("--engine picks the voices of the synthetic stream (--data kws)")
    if cfg.speaker and cfg.data != "digits":
        raise ConfigError("--speaker picks the FSDD speaker of the digits stream (--data digits)")
    if cfg.input is None and not (2.0 <= cfg.seconds <= 3600.0):
        raise ConfigError(f"--seconds must be between 2 and 3600, got {cfg.seconds:g}")
    if cfg.truth and not cfg.input:
        raise ConfigError("--truth labels a recording given with --input")
    if cfg.hop_ms <= 0 or cfg.hop_ms % 10 or cfg.hop_ms > 1000:
        raise ConfigError(f"--hop-ms must be a multiple of 10 ms between 10 and 1000, got {cfg.hop_ms}")
    if cfg.chunk < 1:
        raise ConfigError(f"--chunk must be >= 1, got {cfg.chunk}")
    if not 0.5 <= cfg.chunk_s <= 600:
        raise ConfigError(f"--chunk-seconds must be between 0.5 and 600, got {cfg.chunk_s:g}")
    Detector(
        ["k"],
        ["k"],
        WindowPlan(),
        threshold=0.5 if cfg.threshold is None else cfg.threshold,
        smooth=1 if cfg.smooth is None else cfg.smooth,
        refractory_s=cfg.refractory_s,
    )
    Scorer([], [], cfg.tolerance_s)


@dataclass
class _Spec:
    """What the demo needs to know about a model: its front end, classes and streaming mode."""

    front_end: Any
    labels: list
    keywords: list
    mode: str
    task: str
    detector: dict
    data: dict


def _model_spec(lm, cfg: KwsDemoConfig) -> _Spec:
    from ..data.digits import DIGIT_WORDS
    from ..data.features import LogMel, feature_config
    from ..data.kws import KWS_LABELS

    m = lm.metrics or {}
    graph = lm.graph
    fe = feature_config(m["front_end"]) if m.get("front_end") else LogMel()
    n_out = graph.output_types[0].features
    if graph.in_features != fe.n_features:
        raise ConfigError(
            f"model '{cfg.model}' takes {graph.in_features} input features; its front end gives "
            f"{fe.n_features} ({fe.kind}, {fe.sample_rate} Hz)"
        )
    labels = list(lm.labels) or (list(KWS_LABELS) if n_out == len(KWS_LABELS) else [])
    if len(labels) != n_out:
        raise ConfigError(
            f"model '{cfg.model}' has {n_out} outputs but {len(labels)} labels; the KWS demo needs "
            f"the 12 keyword-spotting classes ({', '.join(KWS_LABELS)}) or the spoken digits"
        )
    keywords = [k for k in labels if not k.startswith("_")]
    if not keywords:
        raise ConfigError(f"model '{cfg.model}' has no keyword classes (labels: {', '.join(labels)})")
    if not cfg.input:
        want = {"kws": (set(KWS_LABELS), 16000), "digits": (set(DIGIT_WORDS), 8000)}[cfg.data]
        if not set(keywords) <= want[0] or fe.sample_rate != want[1]:
            raise ConfigError(
                f"model '{cfg.model}' ({', '.join(keywords[:4])}, ... at {fe.sample_rate} Hz) does not "
                f"spot the words of the --data {cfg.data} stream",
                hint=f"use --model {DATA[cfg.data]}",
            )
    streaming = m.get("streaming")
    mode = ("continuous" if streaming else "slots") if cfg.mode == "auto" else cfg.mode
    if mode == "continuous" and not streaming:
        raise ConfigError(
            f"model '{cfg.model}' was not trained to stream (no 'streaming' in its metrics); use --mode slots"
        )
    det = dict(DETECTOR_DEFAULTS[mode])
    if mode == "continuous":
        det.update((streaming or {}).get("detector") or {})
    if cfg.threshold is not None:
        det["threshold"] = cfg.threshold
    if cfg.smooth is not None:
        det["smooth"] = cfg.smooth
    task = m.get("recipe_task") or m.get("task") or "kws"
    return _Spec(
        fe,
        labels,
        keywords,
        mode,
        task,
        {"threshold": float(det["threshold"]), "smooth": int(det["smooth"])},
        m.get("data") or {},
    )


def _stream_audio(cfg: KwsDemoConfig, spec: _Spec, say):
    """(audio, events, source text, held-out text) of the demo's stream."""
    sr = spec.front_end.sample_rate
    if cfg.data == "digits":
        from ..data.digits import DIGIT_WORDS, TEST_TAKES, digit_stream, fsdd

        fs = fsdd()
        trained = set(spec.data.get("train_speakers") or [])
        protocol = spec.data.get("protocol")
        if cfg.speaker:
            fs.speaker_id(cfg.speaker)
            if cfg.speaker in trained and protocol != "own":
                raise ConfigError(
                    f"model '{cfg.model}' was trained on speaker {cfg.speaker}; stream a held-out one: "
                    f"{', '.join(s for s in fs.speakers if s not in trained) or 'none'}"
                )
            speakers = [cfg.speaker]
        else:
            speakers = [s for s in fs.speakers if s not in trained] or list(fs.speakers)
        takes = list(TEST_TAKES) if protocol == "own" or set(speakers) & trained else None
        say(
            f"audio   a {cfg.seconds:g} s stream of FSDD speaker{'s' if len(speakers) > 1 else ''} "
            f"{', '.join(speakers)} (seed {cfg.seed})"
        )
        audio, _, events = digit_stream(cfg.seconds, speakers=speakers, takes=takes, seed=cfg.seed, snr_db=cfg.snr_db)
        unseen = [s for s in speakers if s not in trained]
        held_out = (
            f"FSDD speaker{'s' if len(unseen) > 1 else ''} {', '.join(unseen)} (never used in training)"
            if unseen
            else f"takes {TEST_TAKES.start}-{TEST_TAKES.stop - 1} of speakers "
            f"{', '.join(speakers)} (the dataset's own test split, never used in training)"
        )
        source = (
            f"real speech (Free Spoken Digit Dataset), {cfg.seconds:g} s, speaker(s) {', '.join(speakers)}, "
            f"the words {DIGIT_WORDS[0]}..{DIGIT_WORDS[-1]} at {sr} Hz, seed {cfg.seed}, "
            + (f"pink noise at {cfg.snr_db:g} dB SNR" if cfg.snr_db is not None else "no added noise")
        )
        return audio, events, source, held_out
    from ..data.kws import KWSConfig, synth_stream

    corpus = KWSConfig()
    say(f"audio   synthesising a {cfg.seconds:g} s stream ({cfg.engine}, held-out voices, seed {cfg.seed})")
    audio, _, events = synth_stream(
        cfg.seconds, seed=cfg.seed, split=ENGINES[cfg.engine], config=corpus, snr_db=cfg.snr_db, progress=False
    )
    if cfg.engine == "flite":
        held_out = f"flite voices {', '.join(corpus.flite_voices)} (an engine never used in training)"
    else:
        new_accents = [a for a in corpus.test_accents if a not in corpus.train_accents]
        held_out = (
            f"espeak-ng voice variants {', '.join(corpus.test_variants)} (never used in training) over "
            f"the accents {', '.join(corpus.test_accents)}"
            + (f" ({', '.join(new_accents)} never used in training either)" if new_accents else "")
        )
    source = f"synthetic stream, {cfg.seconds:g} s, {cfg.engine} held-out voices, seed {cfg.seed}, " + (
        f"pink noise at {cfg.snr_db:g} dB SNR" if cfg.snr_db is not None else "no added noise"
    )
    return audio, events, source, held_out


def _device_continuous(device, feats: np.ndarray, chunk: int):
    """Yield ``(start frame, per-frame outputs (t, C))`` of the stream run on one continuous device state,
    ``chunk`` frames per device call, the state carried from call to call."""
    from ..export.c.artifact import split_outputs

    impl = device.impl
    state = None
    for s in range(0, len(feats), chunk):
        res = impl.target.run(impl.binary, feats[None, s : s + chunk], mode="step", state=True, init_state=state)
        state = res.state
        yield s, np.asarray(split_outputs(impl.manifest, res.step, res.pooled)[0])[0]


def run_kws_demo(cfg: KwsDemoConfig, stream=None) -> dict:
    """Run the demo; writes ``demo.json`` and ``report.html`` (and the artifact) under ``cfg.out``.

    The whole output is staged and moved into place when the demo finishes (an interrupted or killed
    demo leaves the previous one intact); a previous output of this demo is replaced without ``force``."""
    from ..util.fs import output_dir

    with output_dir(cfg.out, cfg.force, owner=OWNER) as out:
        return _run_kws_demo(cfg, stream, out)


@dataclass
class _Reference:
    """The demo's stream and what the reference interpreters make of it (see :func:`_reference`)."""

    lm: Any
    graph: Any
    spec: Any
    fe: Any
    labels: Any
    keywords: Any
    continuous: Any
    sr: Any
    audio: Any
    events: Any
    source: Any
    held_out: Any
    seconds: Any
    plan: Any
    block: Any
    features: Any
    batch_equal: Any
    x: Any
    n_dec: Any
    dev_graph: Any
    float_logits: Any
    q: Any
    int_logits: Any
    plan_summary: Any


def _reference(cfg: KwsDemoConfig, say, out: Optional[Path], timings: dict) -> "_Reference":
    """Steps 1-4 of the demo: the model, the stream (``stream.wav`` under ``out`` when given), its
    features and decision points, the float reference and (unless ``--quant float``) the int8 plan
    with the integer-exact interpreter's logits. Also what :func:`reference_logits` returns."""
    from ..data.features import compute
    from ..ir.interpret import run as ref_run
    from ..models import load_model
    from ..train.stream import streaming_graph

    # 1. model ------------------------------------------------------------------------------
    lm = load_model(cfg.model)
    graph = lm.graph
    spec = _model_spec(lm, cfg)
    fe, labels, keywords, continuous = spec.front_end, spec.labels, spec.keywords, spec.mode == "continuous"
    sr = fe.sample_rate
    if cfg.input:  # a user's recording is checked before anything slow happens
        user_audio = read_wav_at(cfg.input, sr)
        user_events = read_truth(cfg.truth) if cfg.truth else None
    n_params = lm.metrics.get("parameters") or graph.num_params()  # trained parameters, as recorded at training
    say(
        f"model   {lm.name}: {n_params:,} parameters ({', '.join(n.op.kind for n in graph.nodes)}); front end "
        f"{fe.n_features} {fe.kind} bands at {sr} Hz, a frame every {1000 * fe.hop_length / sr:g} ms; "
        f"{spec.mode} streaming"
    )

    # 2. audio ------------------------------------------------------------------------------
    t = time.perf_counter()
    if cfg.input:
        audio, events = user_audio, user_events
        source = f"{cfg.input} ({audio.size / sr:.1f} s at {sr / 1000:g} kHz)" + (
            f", word labels from {cfg.truth}" if cfg.truth else ", unlabelled"
        )
        held_out = None
    else:
        audio, events, source, held_out = _stream_audio(cfg, spec, say)
        if out is not None:
            from ..data.audio import write_wav

            write_wav(out / "stream.wav", audio, sr)
    seconds = audio.size / sr
    timings["audio_s"] = time.perf_counter() - t

    # 3. features, frame by frame, and the decision points ----------------------------------
    t = time.perf_counter()
    if continuous:
        plan = WindowPlan.continuous(fe.hop_length, fe.win_length, sr)
        block = max(1, int(round(0.25 * sr / fe.hop_length))) * fe.hop_length  # a push every ~250 ms
    else:
        frames = fe.n_frames(int(round(lm.metrics.get("clip_seconds", 1.0) * sr)))
        hop_frames = max(1, int(cfg.hop_ms * sr / 1000) // fe.hop_length)
        plan = WindowPlan(
            frames=frames, hop=hop_frames, frame_hop=fe.hop_length, frame_len=fe.win_length, sample_rate=sr
        )
        block = hop_frames * fe.hop_length
    features = stream_features(audio, fe, block)
    batch_equal = bool(np.array_equal(features, compute(audio, fe)))
    x = features[None] if continuous else windows_of(features, plan)
    n_dec = plan.count(len(features))
    if n_dec == 0:
        raise DatasetError(
            f"the audio is {seconds:.2f} s long; one decision needs {plan.window_s:.2f} s", where=cfg.input or "stream"
        )
    timings["features_s"] = time.perf_counter() - t
    say(f"stream  {source}")
    if continuous:
        say(
            f"        {len(features)} frames computed as the audio arrives ({block} samples per push; equal to batch "
            f"features: {'yes' if batch_equal else 'NO'}); one continuous state, a decision after every frame "
            f"({sr / fe.hop_length:g} per second)"
        )
    else:
        say(
            f"        {len(features)} frames computed as the audio arrives ({block} samples per push; equal to batch "
            f"features: {'yes' if batch_equal else 'NO'}); {n_dec} windows of {plan.frames} frames, one every "
            f"{plan.hop_s * 1000:.0f} ms ({plan.slots} state slots)"
        )

    # 4. float reference + quantization -------------------------------------------------------
    t = time.perf_counter()
    dev_graph = streaming_graph(graph) if continuous else graph
    if continuous:
        float_logits = np.asarray(ref_run(dev_graph, x.astype(np.float64))[0][0])[0]
    else:
        float_logits = _batched(lambda a: ref_run(graph, a.astype(np.float64))[0][0], x)
    timings["float_reference_s"] = time.perf_counter() - t
    q = None
    int_logits = None
    plan_summary = None
    if cfg.quant != "float":
        t = time.perf_counter()
        q, plan_summary = _quantize(graph, dev_graph if continuous else None, spec.task, cfg, say)
        if continuous:
            int_logits = np.asarray(q.run(x, mode="int")[0][0])[0]
        else:
            int_logits = _batched(lambda a: q.run(a, mode="int")[0][0], x)
        timings["quantize_s"] = time.perf_counter() - t
    return _Reference(
        lm=lm,
        graph=graph,
        spec=spec,
        fe=fe,
        labels=labels,
        keywords=keywords,
        continuous=continuous,
        sr=sr,
        audio=audio,
        events=events,
        source=source,
        held_out=held_out,
        seconds=seconds,
        plan=plan,
        block=block,
        features=features,
        batch_equal=batch_equal,
        x=x,
        n_dec=n_dec,
        dev_graph=dev_graph,
        float_logits=float_logits,
        q=q,
        int_logits=int_logits,
        plan_summary=plan_summary,
    )


def reference_logits(cfg: KwsDemoConfig, say=lambda m: None) -> _Reference:
    """The demo's stream (``cfg``: model, data, seconds, seed, ...) through the float and integer-exact
    reference interpreters only: no export and no device (the device equals the integer reference bit
    for bit, as every demo run checks). For sweeps of the detector over one stream."""
    from ..toolchains import require

    _check_config(cfg)
    cfg.model = cfg.model or DATA[cfg.data]
    if not cfg.input and cfg.data == "kws":
        require(cfg.engine)
    return _reference(cfg, say, None, {})


def _run_kws_demo(cfg: KwsDemoConfig, stream, out: Path) -> dict:
    from ..export import export as export_artifact
    from ..toolchains import require
    from ..util.fs import atomic_write_json
    from .live import LiveView, bar

    stream = stream or sys.stderr
    say = lambda m: print(m, file=stream, flush=True)
    _check_config(cfg)
    cfg.model = cfg.model or DATA[cfg.data]
    _check_toolchains(cfg.target)
    if not cfg.input and cfg.data == "kws":
        require(cfg.engine)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    r = _reference(cfg, say, out, timings)
    lm, graph, spec, fe, labels, keywords = r.lm, r.graph, r.spec, r.fe, r.labels, r.keywords
    continuous, sr, audio, events, seconds = r.continuous, r.sr, r.audio, r.events, r.seconds
    source, held_out, plan, block, features, x, n_dec = r.source, r.held_out, r.plan, r.block, r.features, r.x, r.n_dec
    batch_equal, dev_graph, q, plan_summary = r.batch_equal, r.dev_graph, r.q, r.plan_summary
    float_logits, int_logits = r.float_logits, r.int_logits

    # 5. export -------------------------------------------------------------------------------
    t = time.perf_counter()
    art_dir = out / "artifact"
    say(f"export  {cfg.target} -> {Path(cfg.out) / 'artifact'}")
    golden = features[None, : min(len(features), 64)] if continuous else x[:2]
    art = export_artifact(
        q if q is not None else dev_graph,
        target=cfg.target,
        out=art_dir,
        force=True,
        golden_input=golden,
        progress=lambda m: say(f"        {m}"),
    )
    device = art.parts["c"] if art.kind == "bundle" else art
    timings["export_s"] = time.perf_counter() - t

    # 6. stream through the device -------------------------------------------------------------
    t = time.perf_counter()
    runner = RUNNERS[cfg.target]
    view = LiveView(stream, live=cfg.live)
    detector = Detector(labels, keywords, plan, refractory_s=cfg.refractory_s, **spec.detector)
    scorer = Scorer(events, keywords, cfg.tolerance_s) if events is not None else None
    dev_logits = np.zeros((n_dec, len(labels)), np.float32)
    live_dets: list[str] = []
    n_dets = 0
    if continuous:
        chunk = max(1, int(round(cfg.chunk_s * sr / fe.hop_length)))
        parts = _device_continuous(device, features, chunk)
        unit = "frames"
    else:
        parts = (
            (i, np.asarray(device.impl.run(x[i : i + cfg.chunk], mode="step")[0])) for i in range(0, n_dec, cfg.chunk)
        )
        unit = "windows"
    for i, logits in parts:
        dev_logits[i : i + len(logits)] = logits
        post = _softmax(logits.astype(np.float64))
        for r in range(len(logits)):
            _, _, det = detector.push(i + r, post[r])
            if det is None:
                continue
            n_dets += 1
            mark = ""
            if scorer is not None:
                o = scorer.add(det.keyword, det.time_s)["outcome"]
                mark = " (hit)" if o == "hit" else " (false accept)"
            live_dets.append(f"{det.keyword}@{det.time_s:.1f}s{mark}")
        j = i + len(logits) - 1
        top = int(post[-1].argmax())
        now_s = float(plan.end_s(j))
        tally = ""
        if scorer is not None:
            spoken = sum(1 for a, b, lab in scorer.events if lab in keywords and b <= now_s)
            tally = f"   hits {scorer.hits}, false accepts {scorer.false_accepts}, keywords spoken so far {spoken}"
        view.update(
            [
                f"device  {runner}  {bar((j + 1) / n_dec)} {j + 1}/{n_dec} {unit}  ({now_s:.1f} s of {seconds:.1f} s "
                f"audio)",
                f"  now: {labels[top]:<10} confidence {post[-1][top]:5.1%}   (at {now_s:.2f} s)",
                f"  detections {n_dets}: {', '.join(live_dets[-5:]) or '-'}{tally}",
            ],
            force_log=(j + 1 == n_dec),
        )
    view.close()
    timings["device_stream_s"] = time.perf_counter() - t

    # 7. detections from the device, scored; the same rule on the reference -------------------
    det_kw = dict(refractory_s=cfg.refractory_s, **spec.detector)
    dev_post = _softmax(dev_logits.astype(np.float64))
    smoothed, score_t, dets = detect(dev_post, labels, keywords, plan, **det_kw)
    ref_logits = int_logits if int_logits is not None else float_logits
    _, _, ref_dets = detect(_softmax(ref_logits.astype(np.float64)), labels, keywords, plan, **det_kw)
    same_dets = [(d.keyword, d.window) for d in dets] == [(d.keyword, d.window) for d in ref_dets]
    agreement = float((dev_logits.argmax(-1) == ref_logits.argmax(-1)).mean())
    max_err = float(np.max(np.abs(dev_logits - ref_logits)))
    float_dets = None
    if int_logits is not None:
        _, _, float_dets = detect(_softmax(float_logits.astype(np.float64)), labels, keywords, plan, **det_kw)
    metrics = None
    det_rows = [asdict(d) for d in dets]
    if events is not None:
        outcomes, metrics = match_detections(dets, events, keywords, cfg.tolerance_s, seconds)
        for row, o in zip(det_rows, outcomes):
            row["outcome"] = o["outcome"]
            row["truth"] = None if o["event"] is None else events[o["event"]][2]
        latency = [d.decision_s - events[o["event"]][1] for d, o in zip(dets, outcomes) if o["outcome"] == "hit"]
        metrics["decision_latency_s"] = {
            "median": float(np.median(latency)) if latency else None,
            "max": float(np.max(latency)) if latency else None,
            "note": "time from the end of the spoken keyword to the end of the frame (window) whose decision fired",
        }
        refs = {"integer_reference": ref_dets if int_logits is not None else None, "float_reference": float_dets}
        for name, rd in refs.items():
            if rd is not None:
                metrics[name] = {
                    k: v
                    for k, v in match_detections(rd, events, keywords, cfg.tolerance_s, seconds)[1].items()
                    if k in ("hits", "misses", "false_accepts", "false_accepts_per_hour", "hit_rate")
                }
        say(
            f"result  {metrics['hits']}/{metrics['keywords_spoken']} keywords detected, {metrics['misses']} missed, "
            f"{metrics['false_accepts']} false accepts ({metrics['false_accepts_per_hour']:.0f} per hour) over "
            f"{seconds:.0f} s"
        )
    else:
        say(f"result  {len(dets)} detections over {seconds:.0f} s (no word labels: pass --truth to score them)")
    say(
        f"device  decisions equal to the {'integer' if q is not None else 'float'} reference on {agreement:.2%} of "
        f"{unit} (max logit difference {max_err:.3g}); detections identical: {'yes' if same_dets else 'NO'}"
    )

    # 8. cost + sizes ------------------------------------------------------------------------
    t = time.perf_counter()
    probe = features[None, : min(len(features), 250)] if continuous else x[:2]
    cost = device.impl.cost(probe)
    sizes = {
        "artifact_bytes": _dir_bytes(art_dir),
        "device_binary_bytes": device.impl.binary.stat().st_size,
        "weights_bytes": device.manifest.get("weights_bytes"),
        "float32_weight_bytes": 4 * graph.num_params(),
    }
    mcu = None
    mcu_cost = None
    if cfg.target == "cortex-m4":
        mcu, mcu_cost = _mcu_sizes(device.impl), cost
    elif _have("arm-none-eabi-gcc", "qemu-system-arm"):
        say("sizes   building the same model for cortex-m4 (flash / RAM, instructions per frame)")
        m4 = export_artifact(
            q if q is not None else dev_graph,
            target="cortex-m4",
            out=out / "cortex-m4",
            force=True,
            golden_input=probe[:1, :64],
        )
        mcu, mcu_cost = _mcu_sizes(m4.impl), m4.impl.cost(probe[:1])
    timings["cost_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_start

    ins = (mcu_cost or {}).get("instructions")
    budget = None
    frame_rate = sr / fe.hop_length
    if ins:
        if continuous:
            per_s = ins["per_step"] * frame_rate
            note = (
                f"one continuous state: one esq_step per {1000 / frame_rate:g} ms frame, {frame_rate:g} frames "
                "per second, no reset and no overlapping windows; the log-mel front end is not included "
                "(it runs on the host here)"
            )
        else:
            per_s = ins["per_inference"] / plan.hop_s
            note = (
                f"one {plan.frames}-frame window inference every {plan.hop_s * 1000:.0f} ms ({plan.slots} "
                f"staggered slots, each stepped at {frame_rate:g} frames/s); the log-mel front end is not "
                "included (it runs on the host here)"
            )
        budget = {
            "instructions_per_frame": ins["per_step"],
            "instructions_per_inference": ins["per_inference"],
            "instructions_per_second_of_audio": per_s,
            "mhz_at_one_instruction_per_cycle": per_s / 1e6,
            "share_of_80mhz_m4": per_s / 80e6,
            "slots": plan.slots,
            "mode": spec.mode,
            "note": note,
        }
        say(
            f"cost    cortex-m4: {ins['per_step']:,.0f} instructions per frame, {per_s / 1e6:.1f} M per second of "
            f"audio ({100 * per_s / 80e6:.0f}% of an 80 MHz Cortex-M4 at one instruction per cycle)"
        )

    keep = max(1, -(-n_dec // MAX_PLOT_POINTS))
    result = {
        "demo": "kws",
        "data": cfg.data,
        "model": lm.name,
        "model_source": lm.source,
        "target": cfg.target,
        "runner": runner,
        "quantization": cfg.quant,
        "source": source,
        "held_out_voices": held_out,
        "labels": labels,
        "keywords": keywords,
        "stream": {
            "seconds": seconds,
            "sample_rate": sr,
            "engine": None if cfg.input or cfg.data != "kws" else cfg.engine,
            "speaker": cfg.speaker,
            "seed": None if cfg.input else cfg.seed,
            "snr_db": None if cfg.input else cfg.snr_db,
            "wav": None if cfg.input else "stream.wav",
            "input": cfg.input,
        },
        "streaming": {
            "mode": spec.mode,
            "features": fe.to_dict(),
            "frames": int(len(features)),
            "frame_rate": frame_rate,
            "samples_per_push": block,
            "streamed_equals_batch": batch_equal,
            "window_frames": plan.frames,
            "window_s": plan.window_s,
            "hop_frames": plan.hop,
            "hop_s": plan.hop_s,
            "slots": plan.slots,
            "decisions": int(n_dec),
            "windows": int(n_dec),
            "windows_per_device_call": None if continuous else cfg.chunk,
            "frames_per_device_call": chunk if continuous else None,
        },
        "detection": {
            "rule": "causal mean of the last `smooth` posteriors; fire when a keyword is the top class and "
            "its smoothed posterior >= threshold; no detection within `refractory_s` of the "
            "previous one; time = mean centre of the averaged frames / windows",
            **det_kw,
            "tolerance_s": cfg.tolerance_s,
        },
        "events": [{"start_s": round(a, 4), "end_s": round(b, 4), "label": lab} for a, b, lab in events or []]
        if events is not None
        else None,
        "detections": det_rows,
        "metrics": metrics,
        "device_vs_reference": {
            "decision_agreement": agreement,
            "max_abs_logit_difference": max_err,
            "detections_identical": same_dets,
            "reference_detections": len(ref_dets),
            "reference": "integer-exact interpreter" if q is not None else "float64 interpreter",
        },
        "posteriors": _pooled_posteriors(smoothed, score_t, plan, keep),
        "envelope": {"hop_s": ENVELOPE_HOP_S, "peak": _envelope(audio, ENVELOPE_HOP_S, sr)},
        "cost": _jsonable(cost),
        "mcu_cost": _jsonable(mcu_cost) if mcu_cost is not None else None,
        "budget": budget,
        "sizes": sizes,
        "mcu_sizes": mcu,
        "plan": plan_summary,
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "config": asdict(cfg),
        "artifact": str(Path(cfg.out) / "artifact"),
    }
    atomic_write_json(out / "demo.json", result)
    from .kws_report import kws_report

    kws_report(result, out / "report.html")
    say(f"report  {Path(cfg.out) / 'report.html'}  (total {timings['total_s']:.0f} s)")
    return result


def _pooled_posteriors(smoothed: np.ndarray, times: np.ndarray, plan: WindowPlan, keep: int) -> dict:
    """The smoothed posteriors for the report, max-pooled over ``keep`` consecutive decisions."""
    n = len(times)
    idx = np.arange(n)
    if keep > 1:
        starts = range(0, n, keep)
        smoothed = np.stack([smoothed[i : i + keep].max(0) for i in starts])
        times = np.array([times[i : i + keep].mean() for i in starts])
        idx = np.array([min(i + keep, n) - 1 for i in starts])
    return {
        "time_s": [round(float(v), 4) for v in times],
        "window_end_s": [round(float(v), 4) for v in plan.end_s(idx)],
        "smoothed": np.round(smoothed, 4).tolist(),
        "pooled": int(keep),
    }


def _envelope(audio: np.ndarray, hop_s: float, sample_rate: int = SAMPLE_RATE) -> list[float]:
    n = max(1, int(round(hop_s * sample_rate)))
    m = len(audio) // n
    if m == 0:
        return []
    return np.round(np.abs(audio[: m * n]).reshape(m, n).max(axis=1).astype(np.float64), 4).tolist()


def _quantize(graph, stream_graph, task: str, cfg: KwsDemoConfig, say):
    """The int8 plan: calibrated on clips of the model's training split (never the stream's speakers or
    voices), searched on other training clips. With ``stream_graph`` (continuous mode) the searched plan
    is then applied to the per-step graph, calibrated on the same clips."""
    from ..quant import quantize
    from ..quant.tasks import quantize_on_task, task_data

    data = task_data(task, graph, calib=cfg.calib, seed=cfg.seed)
    say(f"quant   plan '{cfg.quant}', calibrated on {len(data.calib_idx)} training clips of task '{task}'")
    q = quantize_on_task(graph, data, cfg.quant, progress=False)
    if stream_graph is not None:
        q = quantize(stream_graph, data.calib_x, q.plan.config, budget=None)
    return q, q.plan.summary()
