"""edgeseq demo har|kws: the end-to-end on-device demos."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("demo", help="run an end-to-end on-device demo (har: activity recognition, kws: keyword spotting)")
    d = p.add_subparsers(dest="demo", metavar="DEMO", required=True)
    h = d.add_parser("har", help="shipped HAR model -> int8 -> ARM artifact -> held-out IMU streamed under qemu -> report")
    h.add_argument("--model", default="har_lmu", help="shipped model name, checkpoint or .esq (default: har_lmu)")
    h.add_argument("--target", default="arm", choices=["x86", "arm", "cortex-m4"])
    h.add_argument("--input", metavar="FILE.csv",
                   help="your own 50 Hz recording: columns acc_x,acc_y,acc_z (g), gyro_x,gyro_y,gyro_z (rad/s), "
                        "optional time (s) and label")
    h.add_argument("--quant", default="edgeseq", choices=["edgeseq", "naive", "float"],
                   help="int8 plan (edgeseq: outlier-aware, naive: per-tensor) or float")
    h.add_argument("--out", default="runs/demo-har", help="output directory (default: runs/demo-har)")
    h.add_argument("--limit", type=int, help="stream only N windows (quick run)")
    h.add_argument("--no-live", action="store_true", help="log lines instead of the live terminal view")
    h.add_argument("--force", action="store_true", help="replace an existing output directory")
    h.set_defaults(func=run_har)


def run_har(args) -> int:
    from ..demo.har import HarDemoConfig, run_har_demo

    cfg = HarDemoConfig(model=args.model, target=args.target, out=args.out, input=args.input, live=not args.no_live,
                        quant=args.quant, limit=args.limit, force=args.force)
    r = run_har_demo(cfg)
    drop = r.get("drop_points")
    return 0 if drop is None or drop <= 0.5 or args.quant == "naive" else 1
