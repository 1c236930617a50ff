"""edgeseq validate: run an exported artifact on its runner and compare it with the reference."""

from __future__ import annotations

import sys
from pathlib import Path

from . import args as A


def register(sub) -> None:
    p = sub.add_parser(
        "validate",
        help="check an exported artifact against the reference (accuracy, latency, report)",
        description="Run an artifact directory written by an exporter (onnx, tvm x86/arm, c x86/arm/cortex-m*, "
        "the x86/arm bundles of edgeseq export) "
        "on its golden vectors (and a dataset slice), compare it with the reference under a tolerance "
        "policy, measure latency or instruction counts, and write validation.json + report.html. "
        "Exits 1 naming the failed checks.",
    )
    p.add_argument("artifact", metavar="DIR", help="artifact directory (holds manifest.json)")
    p.add_argument(
        "--reference",
        choices=("auto", "gpu", "cpu"),
        default="auto",
        help="float artifacts: cpu = the float64 interpreter, gpu = the reference kernels on CUDA, auto = gpu "
        "when present (default); integer artifacts are always checked against the integer-exact "
        "interpreter of their quantized.esq",
    )
    p.add_argument(
        "--data",
        metavar="har|kws|smartwatch|digits|PATH.npz",
        help="also compare on a slice of this dataset's test split (or an .npz with x, y)",
    )
    p.add_argument("--samples", type=A.count, default=256, help="sequences of --data to use (default 256)")
    p.add_argument("--tolerance", metavar="FILE.json", help="override the tolerance policy")
    p.add_argument("--graph", metavar="FILE.esq", help="IR graph to compare with (default: the artifact's graph.esq)")
    p.add_argument(
        "--out", metavar="DIR", help="where to write validation.json and report.html (default: DIR/validation)"
    )
    p.add_argument(
        "--layout",
        choices=("BTF", "TBF", "static"),
        help="layout of an .npz's x (default: the model's own, recorded at capture; dataset names are (N, T, F))",
    )
    p.add_argument("--no-measure", action="store_true", help="skip latency / instruction-count measurements")
    p.add_argument("--quiet", action="store_true", help="print only the final line")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..validate import validate

    out = Path(args.out) if args.out else Path(args.artifact) / "validation"
    log = None if args.quiet else (lambda s: print(s, flush=True))
    report = validate(
        args.artifact,
        reference=args.reference,
        data=args.data,
        tolerance=args.tolerance,
        out=out,
        samples=args.samples,
        graph=args.graph,
        measure=not args.no_measure,
        log=log,
        layout=args.layout,
    )
    if not args.quiet:
        print(report.summary())
    if report.failed:
        print(f"edgeseq: validation failed: {args.artifact}: {report.failure_message()}", file=sys.stderr)
        return 1
    if args.quiet:
        print(f"validation passed: {args.artifact} ({len(report.checks)} checks); report in {out}")
    return 0
