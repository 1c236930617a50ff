"""edgeseq audit: the quantization accuracy audit of a model (audit.json + report.html).

    edgeseq audit MODEL --data har|kws|smartwatch|FILE.npz --out DIR [--budget 0.5]

Exit status 0 when the edgeseq plan is within the budget of float, 1 when it misses it, 2 on errors.
"""

from __future__ import annotations

from . import args as A


def register(sub) -> None:
    p = sub.add_parser(
        "audit",
        help="quantization accuracy audit: float vs naive int8 vs onnxruntime's quantizer vs "
        "the edgeseq plan, SQNR, error growth, outliers, report.html",
    )
    p.add_argument("model", help="shipped model name, .ckpt checkpoint / training directory, or .esq graph")
    p.add_argument(
        "--data",
        required=True,
        help="har, kws, smartwatch (calibrate on the training split, evaluate on the test split) or an "
        ".npz with x (N,T,F), y (N,) [and calib_x; val_x, val_y for the search]",
    )
    p.add_argument("--out", required=True, help="output directory (audit.json, report.html, plan.q.esq)")
    p.add_argument(
        "--budget",
        type=A.nonnegative,
        default=0.5,
        help="allowed accuracy drop of the plan vs float, in points (default 0.5)",
    )
    p.add_argument("--calib", type=A.count, default=512, help="calibration sequences (default 512)")
    p.add_argument("--val", type=A.count0, default=1024, help="validation sequences for the mixed-precision search")
    p.add_argument("--max-eval", type=A.count, help="evaluate on at most this many sequences (default: all)")
    p.add_argument("--no-ort", action="store_true", help="skip onnxruntime's quantizer baseline")
    p.add_argument("--seed", type=A.seed, default=0)
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..audit.run import run_audit

    audit = run_audit(
        args.model,
        args.data,
        args.out,
        budget=args.budget,
        calib=args.calib,
        val=args.val,
        max_eval=args.max_eval,
        ort=not args.no_ort,
        force=args.force,
        seed=args.seed,
        progress=not args.quiet,
    )
    print(f"wrote {args.out}/report.html and audit.json: " + "; ".join(audit["verdict"]["reasons"]))
    return 0 if audit["verdict"]["pass"] else 1
