"""edgeseq demo har|kws: the end-to-end on-device demos."""

from __future__ import annotations

import sys

from . import args as A

# the HAR demo exits 1 when the device's accuracy is more than this many points below float (int8 plans
# other than 'naive')
HAR_MAX_DROP_POINTS = 0.5


def register(sub) -> None:
    p = sub.add_parser(
        "demo", help="run an end-to-end on-device demo (har: activity recognition, kws: keyword spotting)"
    )
    d = p.add_subparsers(dest="demo", metavar="DEMO", required=True)
    h = d.add_parser(
        "har", help="shipped HAR model -> int8 -> ARM artifact -> held-out IMU streamed under qemu -> report"
    )
    from ..demo.har import ALTERNATIVES, DEFAULT_MODEL

    h.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"shipped model name, checkpoint or .esq (default: {DEFAULT_MODEL})"
    )
    h.add_argument(
        "--compare",
        default=",".join(ALTERNATIVES),
        metavar="MODELS",
        help="comma-separated models run on the same windows and target after --model, reported side by "
        f"side (accuracy, instructions, flash, RAM); 'none' for none (default: {','.join(ALTERNATIVES)})",
    )
    h.add_argument("--target", default="arm", choices=["x86", "arm", "cortex-m4"])
    h.add_argument(
        "--input",
        metavar="FILE.csv",
        help="your own 50 Hz recording: columns acc_x,acc_y,acc_z (g), gyro_x,gyro_y,gyro_z (rad/s), "
        "optional time (s) and label",
    )
    h.add_argument(
        "--quant",
        default="edgeseq",
        choices=["edgeseq", "naive", "float"],
        help="int8 plan (edgeseq: outlier-aware, naive: per-tensor) or float",
    )
    h.add_argument("--out", default="runs/demo-har", help="output directory (default: runs/demo-har)")
    h.add_argument("--limit", type=A.count, help="stream only N windows (quick run)")
    h.add_argument("--no-live", action="store_true", help="log lines instead of the live terminal view")
    h.add_argument("--force", action="store_true", help="replace an existing output directory")
    h.set_defaults(func=run_har)

    k = d.add_parser(
        "kws",
        help="shipped KWS model -> int8 -> Cortex-M4 firmware -> held-out speech stream, "
        "streamed under qemu-system-arm -> detections report",
    )
    k.add_argument(
        "--data",
        default="kws",
        choices=["kws", "digits"],
        help="the stream: kws (synthetic keywords among unknown words, held-out voices) or digits (real "
        "speech: a held-out speaker of the Free Spoken Digit Dataset) (default: kws)",
    )
    k.add_argument(
        "--model",
        help="shipped model name, checkpoint or .esq (default: kws_stream_lmu for --data kws, "
        "digits_lmu_heldout for --data digits)",
    )
    k.add_argument("--target", default="cortex-m4", choices=["x86", "arm", "cortex-m4"])
    k.add_argument(
        "--input",
        metavar="FILE.wav",
        help="your own recording instead of the stream: mono 16-bit PCM WAV at the model's sample rate "
        "(16 kHz for kws models, 8 kHz for digits models)",
    )
    k.add_argument(
        "--truth",
        metavar="LABELS.txt",
        help="word labels of --input, one 'start end word' per line in seconds (an Audacity label "
        "track); enables hits / misses / false accepts",
    )
    k.add_argument(
        "--seconds", type=A.positive, default=120.0, help="length of the synthetic stream in seconds (default: 120)"
    )
    k.add_argument(
        "--engine",
        default="espeak-ng",
        choices=["espeak-ng", "flite"],
        help="--data kws: speech engine of the synthetic stream, espeak-ng with held-out voices or "
        "flite, an engine never used in training (default: espeak-ng)",
    )
    k.add_argument(
        "--speaker", help="--data digits: the FSDD speaker to stream (default: the one the model never heard)"
    )
    k.add_argument("--snr", type=A.real, default=20.0, help="pink background noise of the stream, dB SNR (default: 20)")
    k.add_argument("--seed", type=A.seed, default=0, help="seed of the stream (default: 0)")
    k.add_argument(
        "--quant",
        default="edgeseq",
        choices=["edgeseq", "naive", "float"],
        help="int8 plan (edgeseq: outlier-aware, naive: per-tensor) or float",
    )
    k.add_argument(
        "--mode",
        default="auto",
        choices=["auto", "continuous", "slots"],
        help="continuous: one device state, a decision after every frame (models trained to stream); "
        "slots: overlapping windows, one reset state slot each (clip classifiers) (default: auto)",
    )
    k.add_argument(
        "--threshold",
        type=A.real,
        help="detection threshold on the smoothed keyword posterior (default: the model's, else 0.6)",
    )
    k.add_argument(
        "--smooth",
        type=A.count,
        help="decisions averaged before thresholding (default: the model's, else 5 frames / 2 windows)",
    )
    k.add_argument(
        "--refractory",
        type=A.nonnegative,
        default=1.0,
        help="seconds after a detection during which no other fires (default: 1.0)",
    )
    k.add_argument(
        "--tolerance",
        type=A.nonnegative,
        default=0.5,
        help="a detection matches a spoken keyword within its span +- this many seconds (default: 0.5)",
    )
    k.add_argument("--hop-ms", type=A.count, default=250, help="slots: milliseconds between decisions (default: 250)")
    k.add_argument("--chunk", type=A.count, default=32, help="slots: windows per device call (default: 32)")
    k.add_argument(
        "--chunk-seconds",
        type=A.positive,
        default=10.0,
        help="continuous: seconds of audio per device call, the state carried between calls (default: 10)",
    )
    k.add_argument("--out", default="runs/demo-kws", help="output directory (default: runs/demo-kws)")
    k.add_argument("--no-live", action="store_true", help="log lines instead of the live terminal view")
    k.add_argument("--force", action="store_true", help="replace an existing output directory")
    k.set_defaults(func=run_kws)


def run_har(args) -> int:
    from ..demo.har import HarDemoConfig, run_har_demo

    compare = (
        () if args.compare.strip().lower() == "none" else tuple(m.strip() for m in args.compare.split(",") if m.strip())
    )
    cfg = HarDemoConfig(
        model=args.model,
        compare=compare,
        target=args.target,
        out=args.out,
        input=args.input,
        live=not args.no_live,
        quant=args.quant,
        limit=args.limit,
        force=args.force,
    )
    r = run_har_demo(cfg)
    drop = r.get("drop_points")
    if drop is None or drop <= HAR_MAX_DROP_POINTS or args.quant == "naive":
        return 0
    print(
        f"edgeseq: demo har: on-device accuracy is {drop:.2f} points below float over {r['windows']} windows "
        f"(more than {HAR_MAX_DROP_POINTS}; exit status 1)",
        file=sys.stderr,
    )
    return 1


def run_kws(args) -> int:
    from ..demo.kws import KwsDemoConfig, run_kws_demo

    cfg = KwsDemoConfig(
        model=args.model,
        data=args.data,
        target=args.target,
        out=args.out,
        input=args.input,
        truth=args.truth,
        seconds=args.seconds,
        engine=args.engine,
        speaker=args.speaker,
        snr_db=args.snr,
        seed=args.seed,
        live=not args.no_live,
        quant=args.quant,
        mode=args.mode,
        threshold=args.threshold,
        smooth=args.smooth,
        refractory_s=args.refractory,
        tolerance_s=args.tolerance,
        hop_ms=args.hop_ms,
        chunk=args.chunk,
        chunk_s=args.chunk_seconds,
        force=args.force,
    )
    run_kws_demo(cfg)
    return 0
