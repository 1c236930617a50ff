"""Spoken digits on real speech (the Free Spoken Digit Dataset): float and int8-on-Cortex-M4 accuracy per protocol, fold and speaker, synthetic-to-real transfer and the one-speaker fine-tune.

Every model is read from its training output (``scripts/train_models.py`` trains them all: the shipped
``digits_lmu`` / ``digits_lmuformer`` / ``digits_lmu_heldout`` and the folds and transfer runs under
runs/models). For each one, on the test clips of its own protocol (word-end aligned FSDD recordings,
classified by the model's output at the clip's last frame):

* float: the float64 reference interpreter of the captured graph;
* int8: the edgeseq plan (calibrated on the model's own training split, mixed-precision search within
  0.5 points on training clips) run by the integer-exact interpreter, and the same program exported
  for cortex-m4 and run on the firmware under qemu-system-arm, every clip streamed frame by frame
  through the step API; the device must equal the interpreter.

Protocols: the dataset's own split (takes 0-4 of every speaker), leave-speakers-out (six folds, each
tested on all 500 recordings of its held-out speaker), synthetic digits only (tested on all 3,000
recordings) and that model fine-tuned on one real speaker (tested on the other five); the transfer
runs are float figures, their int8 runs on the integer-exact interpreter only.

Results: benchmarks/results/digits.json.

    python -m benchmarks.bench_digits [--only digits_lmu,digits_lmu_heldout] [--no-device] [--calib 512] [--reuse]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import write_results

ROOT = Path(__file__).resolve().parents[1]
BUDGET_POINTS = 0.5


def _runs():
    spec = importlib.util.spec_from_file_location("train_models", ROOT / "scripts" / "train_models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_set(task: str):
    """The test clips of a digits recipe task (see edgeseq.train.recipes.TASKS)."""
    from edgeseq.data.digits import load_digits
    from edgeseq.train.recipes import TASKS

    kw = TASKS[task]["kw"]
    if task == "digits-synth":
        return load_digits("all")
    return load_digits("test", **{k: v for k, v in kw.items() if k in ("holdout", "only")})


def _acc(logits: np.ndarray, ds) -> dict:
    pred = logits.argmax(-1)
    out = {"accuracy": float(np.mean(pred == ds.y)), "n": len(ds)}
    out["per_speaker"] = {
        ds.meta["speakers"][g]: float(np.mean(pred[ds.groups == g] == ds.y[ds.groups == g]))
        for g in np.unique(ds.groups)
    }
    return out


def evaluate(run_dir: Path, *, device: bool = True, calib: int = 512, log=print) -> dict:
    """Float, integer-exact and on-device (cortex-m4) accuracy of one trained digits model."""
    from edgeseq.export import export
    from edgeseq.ir.interpret import run as ref_run
    from edgeseq.models import load_model
    from edgeseq.quant.tasks import quantize_on_task, task_data

    t0 = time.perf_counter()
    lm = load_model(str(run_dir))
    task = lm.metrics["recipe_task"]
    ds = test_set(task)
    fl = np.concatenate([ref_run(lm.graph, ds.x[i : i + 256].astype(np.float64))[0][0] for i in range(0, len(ds), 256)])
    q = quantize_on_task(lm.graph, task_data(task, lm.graph, calib=calib), "edgeseq", progress=False)
    il = np.concatenate([q.run(ds.x[i : i + 256], mode="int")[0][0] for i in range(0, len(ds), 256)])
    row = {
        "model": run_dir.name,
        "task": task,
        "protocol": lm.metrics.get("protocol"),
        "arch": lm.metrics["arch"],
        "parameters": lm.metrics["parameters"],
        "checkpoint_sha256": _sha256(run_dir / "model.ckpt"),
        "float": _acc(fl, ds),
        "int8_interpreter": _acc(il, ds),
        "plan": {"promoted_to_16_bits": (q.info.get("search") or {}).get("promoted", [])},
    }
    if device:
        with tempfile.TemporaryDirectory(prefix="edgeseq-digits-") as tmp:
            art = export(q, target="cortex-m4", out=Path(tmp) / "m4", golden_input=ds.x[:2])
            impl = (art.parts["c"] if art.kind == "bundle" else art).impl
            dl = np.concatenate(
                [np.asarray(impl.run(ds.x[i : i + 500], mode="step")[0]) for i in range(0, len(ds), 500)]
            )
            cost = impl.cost(ds.x[:1])
        row["int8_cortex_m4"] = _acc(dl, ds)
        row["device_equals_interpreter"] = bool(np.array_equal(dl.argmax(-1), il.argmax(-1)))
        row["max_abs_logit_difference"] = float(np.max(np.abs(dl - il)))
        row["instructions_per_frame"] = cost["instructions"]["per_step"]
        row["instructions_per_second_of_audio"] = (
            cost["instructions"]["per_step"] * lm.metrics["streaming"]["frame_rate"]
        )
    int8 = row.get("int8_cortex_m4", row["int8_interpreter"])["accuracy"]
    row["int8_drop_points"] = 100 * (row["float"]["accuracy"] - int8)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    log(
        f"{run_dir.name}: float {100 * row['float']['accuracy']:.2f}%, int8 "
        f"{'cortex-m4' if device else 'interpreter'} {100 * int8:.2f}% ({row['seconds']:.0f} s)"
    )
    return row


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _earlier_rows(calib: int, device: bool) -> dict:
    """Rows of the existing results file measured with the same settings (reused while their checkpoint is unchanged)."""
    from benchmarks.common import results_dir

    try:
        old = json.loads((results_dir() / "digits.json").read_text())
    except (OSError, ValueError):
        return {}
    same = old.get("config", {}).get("calib") == calib and (old.get("config", {}).get("device") is not None) == device
    return old.get("results", {}) if same else {}


def _flat(r: dict) -> dict:
    out = {
        "model": r["model"],
        "protocol": r["protocol"],
        "n": r["float"]["n"],
        "float %": round(100 * r["float"]["accuracy"], 2),
        "int8 cortex-m4 %": round(100 * r["int8_cortex_m4"]["accuracy"], 2) if "int8_cortex_m4" in r else None,
        "int8 interpreter %": round(100 * r["int8_interpreter"]["accuracy"], 2),
        "drop (points)": round(r["int8_drop_points"], 2),
    }
    for spk, v in r["float"]["per_speaker"].items():
        out[f"{spk} %"] = round(100 * v, 1)
    return out


def run(
    quick: bool = False, write: bool = True, only=None, device: bool = True, calib: int = 512, reuse: bool = False
) -> dict:
    tm = _runs()
    names = [n for n, (task, *_rest) in tm.RUNS.items() if task.startswith("digits")]
    if only:
        names = [n for n in names if n in only]
    if quick:
        names = [n for n in names if n in ("digits_lmu", "digits_lmu_heldout")]
        calib = min(calib, 64)
    recorded = _earlier_rows(calib, device)
    earlier = recorded if reuse else {}
    rows, missing, reused = {}, {}, []
    for n in names:
        d = tm.out_dir(n)
        if not (d / "model.ckpt").is_file():
            if n in recorded:  # a run whose output is not in this checkout keeps its row (as training.json does)
                rows[n] = recorded[n]
                reused.append(n)
            else:
                missing[n] = f"not trained: {' '.join(tm.command(n))}"
            continue
        if n in earlier and earlier[n].get("checkpoint_sha256") == _sha256(d / "model.ckpt"):
            rows[n] = earlier[n]
            reused.append(n)
            continue
        # the transfer runs (synthetic-only and its fine-tunes) are float figures; their int8 runs on the interpreter
        rows[n] = evaluate(d, device=device and not n.startswith("digits_synth"), calib=calib)
    tables: dict[str, list] = {
        "dataset's own split (takes 0-4 of every speaker)": [
            _flat(rows[n]) for n in ("digits_lmu", "digits_lmuformer") if n in rows
        ]
    }
    loso = {}
    for arch in tm.DIGITS_ARCHS:
        folds = tm.digits_folds(arch)
        got = [rows[r] for r in folds.values() if r in rows]
        tables[f"leave-speakers-out, {arch} (each fold tested on its held-out speaker)"] = [_flat(r) for r in got]
        if len(got) == len(folds):
            f = float(np.mean([r["float"]["accuracy"] for r in got]))
            i = float(np.mean([r.get("int8_cortex_m4", r["int8_interpreter"])["accuracy"] for r in got]))
            loso[arch] = {
                "float_mean": f,
                "int8_mean": i,
                "drop_points": 100 * (f - i),
                "folds": {s: rows[r]["float"]["accuracy"] for s, r in folds.items()},
            }
    tables["leave-speakers-out means"] = [
        {
            "arch": a,
            "float mean %": round(100 * v["float_mean"], 2),
            "int8 mean %": round(100 * v["int8_mean"], 2),
            "drop (points)": round(v["drop_points"], 2),
        }
        for a, v in loso.items()
    ]
    tables["synthetic speech only, tested on all FSDD; fine-tuned on one real speaker, tested on the other five"] = [
        _flat(rows[n]) for n in rows if n.startswith("digits_synth")
    ]
    met = {}
    if "digits_lmu" in rows:
        r = rows["digits_lmu"]
        met["own split float >= 98%"] = r["float"]["accuracy"] >= 0.98
        met["own split int8 within 0.5 points"] = r["int8_drop_points"] <= BUDGET_POINTS
    if "lmu" in loso:
        met["leave-speakers-out float mean >= 90%"] = loso["lmu"]["float_mean"] >= 0.90
        met["leave-speakers-out int8 within 0.5 points"] = loso["lmu"]["drop_points"] <= BUDGET_POINTS
    if "digits_synth_lmu" in rows:
        met["synthetic-only on real speech >= 70% (goal)"] = rows["digits_synth_lmu"]["float"]["accuracy"] >= 0.70
    data = {
        "config": {
            "calib": calib,
            "device": "cortex-m4 (qemu-system-arm mps2-an386)" if device else None,
            "budget_points": BUDGET_POINTS,
        },
        "target": "own split: float >= 98%, int8 on cortex-m4 within 0.5 points; leave-speakers-out: float mean "
        ">= 90% over six folds, int8 within 0.5 points; synthetic-only: >= 70% on real speech (goal)",
        "target_met": met,
        "tables": tables,
        "leave_speakers_out": loso,
        "results": rows,
        "missing_checkpoints": missing,
        "reused_from_earlier_run": reused,
    }
    if write:
        write_results("digits", data)
    return data


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated run names (default: every digits run that was trained)")
    ap.add_argument("--no-device", action="store_true", help="int8 on the integer-exact interpreter only")
    ap.add_argument("--calib", type=int, default=512, help="calibration clips (default: 512)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="keep the rows of the existing results file whose checkpoint is unchanged (same settings)",
    )
    a = ap.parse_args(argv)
    return run(
        quick=a.quick, only=a.only.split(",") if a.only else None, device=not a.no_device, calib=a.calib, reuse=a.reuse
    )


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    main()
