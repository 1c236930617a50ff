"""The HAR models side by side on the UCI HAPT test subjects: float, int8 and on-device accuracy on
aarch64 (qemu-aarch64) and Cortex-M4 (qemu-system-arm), Cortex-M4 instructions per 128-sample inference,
flash and RAM.

Each model and target is one ``edgeseq demo har`` run on the same windows (own int8 plan ``edgeseq``,
own build, every window streamed sample by sample through the device and checked against the
integer-exact interpreter); ``--update`` measures only the named models and keeps the others' rows. Models: the shipped default (``har_gru``),
``har_lmu``, ``har_l2mu``, the GRU 64 baseline and the front end + GRU 40 of ``scripts/train_models.py``
(``har_gru64``, ``har_gru40``, listed as missing until trained). Instructions per inference: the int8 Cortex-M4 firmware under qemu's
instruction counter on one 128-sample window (esq_reset + 128 esq_step), as in ``bench_c_int``.
Results: benchmarks/results/har_models.json and har_models.png (accuracy vs instructions).

    python -m benchmarks.bench_har_models [--targets arm,cortex-m4] [--limit N] [--model NAME=SPEC ...] [--update]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import results_dir, write_results

_ROOT = Path(__file__).resolve().parents[1]
DEFAULT = {
    "har_gru": "har_gru",
    "har_lmu": "har_lmu",
    "har_l2mu": "har_l2mu",
    "har_gru64": str(_ROOT / "runs/models/har_gru64/model.ckpt"),
    "har_gru40": str(_ROOT / "runs/models/har_gru40/model.ckpt"),
}
TARGETS = ("arm", "cortex-m4")
# the default's goals: accuracy on the held-out subjects, Cortex-M4 cost per 128-sample inference
GOAL = {"accuracy": 0.955, "instructions_per_inference": 3.3e6, "flash_bytes": 64 * 1024, "ram_bytes": 32 * 1024}
QUICK = ["--limit", "24", "--targets", "cortex-m4"]


def _spec_exists(spec: str) -> bool:
    from edgeseq.models import shipped

    return spec in shipped() or Path(spec).exists()


def measure(models: dict[str, str], targets, limit: int, log=print) -> dict:
    """One demo run per model and target; returns {name: row} with the accuracies of every target."""
    from edgeseq.demo.har import HarDemoConfig, run_har_demo

    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-har-") as tmp:
        for name, spec in models.items():
            row = rows[name] = {"model": name, "spec": spec, "seconds": {}}
            for target in targets:
                t0 = time.perf_counter()
                cfg = HarDemoConfig(
                    model=spec,
                    compare=(),
                    target=target,
                    out=str(Path(tmp) / name / target),
                    live=False,
                    limit=limit or None,
                    force=True,
                )
                r = run_har_demo(cfg, stream=io.StringIO())
                m = r["models"][0]
                row.update(
                    parameters=m["parameters"],
                    float_accuracy=m["float_accuracy"],
                    int8_accuracy=m["int8_accuracy"],
                    windows=r["windows"],
                )
                row[f"{target}_device_accuracy"] = m["device_accuracy"]
                row[f"{target}_decisions_equal_reference"] = m["decision_agreement"]
                for k in ("cortex_m4_instructions_per_inference", "cortex_m4_flash_bytes", "cortex_m4_ram_bytes"):
                    if m.get(k) is not None:
                        row[k] = m[k]
                row["seconds"][target] = round(time.perf_counter() - t0, 1)
                log(
                    f"{name:10s} {target}: float {m['float_accuracy']:.4f} int8 {m['int8_accuracy']:.4f} "
                    f"device {m['device_accuracy']:.4f} (= reference on {m['decision_agreement']:.2%}), "
                    f"M4 {m['cortex_m4_instructions_per_inference'] / 1e6:.2f} M instructions, "
                    f"{row['seconds'][target]:.0f} s"
                )
    return rows


def goals_met(row: dict, targets) -> dict:
    acc = [row["float_accuracy"]] + [row[f"{t}_device_accuracy"] for t in targets]
    return {
        "accuracy_float_and_on_device": min(acc) >= GOAL["accuracy"],
        "device_equals_reference": all(row[f"{t}_decisions_equal_reference"] == 1.0 for t in targets),
        "cortex_m4_instructions": row["cortex_m4_instructions_per_inference"] <= GOAL["instructions_per_inference"],
        "cortex_m4_flash": row["cortex_m4_flash_bytes"] <= GOAL["flash_bytes"],
        "cortex_m4_ram": row["cortex_m4_ram_bytes"] <= GOAL["ram_bytes"],
    }


def plot(rows: dict, target: str, path: Path) -> Path:
    from edgeseq.demo.report import tradeoff_png
    from edgeseq.util.fs import atomic_write_bytes

    pts = [(n, r["cortex_m4_instructions_per_inference"], r[f"{target}_device_accuracy"]) for n, r in rows.items()]
    atomic_write_bytes(path, tradeoff_png(pts, budget=(GOAL["instructions_per_inference"], GOAL["accuracy"])))
    return path


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model",
        action="append",
        metavar="NAME=SPEC",
        help="shipped model name or checkpoint (repeatable; the first is the default; "
        "default: " + ", ".join(DEFAULT) + ")",
    )
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--limit", type=int, default=0, help="evenly spaced test windows (0: all 2,874)")
    ap.add_argument(
        "--update", action="store_true", help="measure only the --model models; keep the other rows of the results file"
    )
    ap.add_argument("--no-write", action="store_true", help="print only, do not write the results")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    wanted = dict(m.split("=", 1) for m in args.model) if args.model else dict(DEFAULT)
    models = {n: s for n, s in wanted.items() if _spec_exists(s)}
    missing = {n: s for n, s in wanted.items() if n not in models}
    for n, s in missing.items():
        print(f"skip {n}: {s} not found (scripts/train_models.py {n})")
    rows = measure(models, targets, args.limit)
    if args.update and (results_dir() / "har_models.json").is_file():
        old = json.loads((results_dir() / "har_models.json").read_text())
        if old["config"]["targets"] != targets or old["config"]["limit"] != args.limit:
            raise SystemExit(f"--update: the results file was measured with {old['config']}; rerun all models")
        kept = {r["model"]: r for r in old["results"]}
        missing = {n: s for n, s in missing.items() if n not in kept}
        models = {**{n: r["spec"] for n, r in kept.items()}, **models}
        rows = {n: rows.get(n, kept.get(n)) for n in [*DEFAULT, *models] if n in rows or n in kept}
    default = next(iter(rows))
    met = goals_met(rows[default], targets)
    out = {
        "config": {"targets": targets, "limit": args.limit, "models": models, "quantization": "edgeseq"},
        "threads": 1,
        "load_average_1_5_15min": list(os.getloadavg()),
        "missing_checkpoints": missing,
        "target": f"{default}: >= {100 * GOAL['accuracy']:.1f}% in float and on every device, decisions equal to "
        f"the integer-exact reference, Cortex-M4 <= {GOAL['instructions_per_inference'] / 1e6:.1f} M "
        f"instructions per 128-sample inference, <= 64 KB flash, <= 32 KB RAM",
        "target_met": met,
        "results": list(rows.values()),
    }
    if not args.no_write:
        print(f"wrote {write_results('har_models', out)}")
        print(f"wrote {plot(rows, targets[-1], results_dir() / 'har_models.png')}")
    return out


def run(quick: bool = False, write: bool = True) -> dict:
    """The benchmark as a function: all test windows on aarch64 and Cortex-M4, or a short smoke run."""
    return main((QUICK if quick else []) + ([] if write else ["--no-write"]))


if __name__ == "__main__":
    main()
