"""The quantization accuracy audit (``edgeseq audit``) of the shipped models, on their whole test splits.

For each model: float, naive per-tensor int8, onnxruntime's own quantizer (every ONNX form x method; the
best variant overall and the best one that quantizes the recurrence as the plan does) and the edgeseq
outlier-aware plan (mixed-precision search with a 0.5-point budget on training-split validation data),
every quantized variant run as an integer program (edgeseq) or in onnxruntime. The onnxruntime
variant is chosen on the same training-split validation data the plan's search uses; the best
variant on the test split itself (an optimistic oracle) is recorded beside it. Recorded per model:
the accuracy table, the plan's drop vs float, its margin over the onnxruntime baselines, the
fake-quant / integer decision agreement, the int8 weight bytes as a fraction of float32 and the
audit's verdict. The full audits (audit.json + report.html) are kept under runs/audit/<model>.

Results: benchmarks/results/audit.json.

    python -m benchmarks.bench_audit [--model har_lmu:har --model kws_lmu:kws] [--max-eval N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.common import write_results

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ["har_lmu:har", "kws_lmu:kws"]
QUICK = ["--max-eval", "128", "--calib", "64", "--val", "128", "--out", str(ROOT / "runs" / "audit-quick")]
BUDGET = 0.5


def summarize(audit: dict) -> dict:
    rows = {r["variant"]: r for r in audit["accuracy"]}
    fl, naive, plan = rows["float32"]["accuracy"], rows["naive_int8"]["accuracy"], rows["edgeseq_plan"]["accuracy"]
    sizes = {s["variant"]: s for s in audit["sizes"]}
    ps = sizes["edgeseq_plan"]
    comp = audit.get("comparison") or {}
    out = {
        "model": audit["model"],
        "eval_sequences": audit["dataset"]["n"],
        "accuracy": {"float": fl, "naive_int8": naive, "edgeseq_plan": plan},
        "naive_drop_points": 100 * (fl - naive),
        "plan_drop_points": 100 * (fl - plan),
        "plan_within_budget": 100 * (fl - plan) <= BUDGET + 1e-12,
        "fake_vs_int_agreement": audit["fake_vs_int"],
        "int8_weight_bytes": ps["weight_bytes"],
        "float32_weight_bytes": ps["float_bytes"],
        "weight_bytes_fraction_of_float": ps["weight_bytes"] / ps["float_bytes"],
        "onnxruntime": {k: v for k, v in comp.items()},
        "onnxruntime_variants": [
            {k: r.get(k) for k in ("variant", "accuracy", "status", "note")}
            for r in audit["accuracy"]
            if r["variant"].startswith("ort:")
        ],
        "outlier_channels": [
            {k: o.get(k) for k in ("tensor", "channel", "absmax", "ratio")} for o in audit["outliers"] if "channel" in o
        ][:12],
        "verdict": audit["verdict"],
        "seconds": audit["seconds"],
    }
    return out


def main(argv=None) -> dict:
    from edgeseq.audit.run import run_audit

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", help="NAME:TASK (default: har_lmu:har, kws_lmu:kws)")
    ap.add_argument("--max-eval", type=int, default=None, help="evaluate on at most N test sequences")
    ap.add_argument("--calib", type=int, default=512)
    ap.add_argument("--val", type=int, default=1024)
    ap.add_argument("--out", default=str(ROOT / "runs" / "audit"), help="where the full audits are kept")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    results, t0 = {}, time.perf_counter()
    for spec in args.model or DEFAULT:
        name, _, task = spec.partition(":")
        audit = run_audit(
            name,
            task or "har",
            Path(args.out) / name,
            budget=BUDGET,
            calib=args.calib,
            val=args.val,
            max_eval=args.max_eval,
            force=True,
            progress=False,
            log=lambda m: print(m, flush=True),
        )
        results[name] = summarize(audit)
        r = results[name]
        print(
            f"{name}: float {100 * r['accuracy']['float']:.2f}%  naive {100 * r['accuracy']['naive_int8']:.2f}%  "
            f"plan {100 * r['accuracy']['edgeseq_plan']:.2f}%  ({r['seconds']:.0f} s)",
            flush=True,
        )
    doc = {
        "benchmark": "audit",
        "budget_points": BUDGET,
        "calibration_sequences": args.calib,
        "validation_sequences": args.val,
        "max_eval": args.max_eval,
        "seconds": round(time.perf_counter() - t0, 1),
        "protocol": "calibration and the mixed-precision search's validation data from the training split; "
        "every accuracy on the test split; edgeseq variants run as integer programs by the "
        "integer-exact interpreter, onnxruntime variants in onnxruntime",
        "models": results,
    }
    rows = []
    for name, r in results.items():
        ort_any, ort_rec = r["onnxruntime"].get("any") or {}, r["onnxruntime"].get("recurrence_quantized") or {}
        pct = lambda v: None if v is None else round(100 * v, 2)
        rows.append(
            {
                "model": name,
                "n": r["eval_sequences"],
                "float %": pct(r["accuracy"]["float"]),
                "naive int8 %": pct(r["accuracy"]["naive_int8"]),
                "edgeseq plan %": pct(r["accuracy"]["edgeseq_plan"]),
                "plan drop (points)": round(r["plan_drop_points"], 2),
                "onnxruntime % (variant chosen on validation)": None
                if not ort_any
                else f"{100 * ort_any['best_ort_accuracy']:.2f} ({ort_any['best_ort_variant']})",
                "onnxruntime with int8 recurrence % (chosen on validation)": None
                if not ort_rec
                else f"{100 * ort_rec['best_ort_accuracy']:.2f} ({ort_rec['best_ort_variant']})",
                "onnxruntime best on test (oracle) %": None
                if not ort_any
                else f"{100 * ort_any['oracle_ort_accuracy']:.2f} ({ort_any['oracle_ort_variant']})",
                "fake/int agreement %": pct(r["fake_vs_int_agreement"]["edgeseq_plan"]),
                "int8 weights / float32": round(r["weight_bytes_fraction_of_float"], 3),
                "verdict": "PASS" if r["verdict"]["pass"] else "FAIL",
            }
        )
    doc["tables"] = {"audit": rows}
    doc["target"] = (
        "plan within 0.5 points of float; >= the onnxruntime baseline; fake/int agreement >= 99.9%; "
        "int8 weights <= 30% of float32 bytes"
    )
    doc["target_met"] = {
        name: bool(
            r["plan_within_budget"]
            and r["fake_vs_int_agreement"]["edgeseq_plan"] >= 0.999
            and r["weight_bytes_fraction_of_float"] <= 0.30
            and all((c or {}).get("plan_at_least_as_accurate", True) for c in r["onnxruntime"].values())
        )
        for name, r in results.items()
    }
    if not args.no_write:
        write_results("audit", doc)
    return doc


def run(quick: bool = False, write: bool = True) -> dict:
    """The benchmark as a function: default settings, or a short smoke run with ``quick``."""
    return main((QUICK if quick else []) + ([] if write else ["--no-write"]))


if __name__ == "__main__":
    main()
