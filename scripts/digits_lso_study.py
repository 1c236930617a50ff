#!/usr/bin/env python
"""The FSDD leave-speakers-out recipe study: what a front-end, augmentation or training-data change buys on
speakers never trained on, chosen without looking at the hardest fold's held-out speaker.

    .venv/bin/python scripts/digits_lso_study.py --list            # the variants
    .venv/bin/python scripts/digits_lso_study.py base synth        # train these (resumable)
    .venv/bin/python scripts/digits_lso_study.py --summary         # the table -> benchmarks/results/digits_lso_study.json

Nested folds inside the george fold: ``george`` (the hardest leave-speakers-out fold, a very different
recording channel) is never loaded. Each inner fold trains the LMU digits recipe on four of the other five
speakers (10% of their recordings kept for epoch selection) and scores all 500 recordings of the fifth
(``nicolas``, then ``jackson``: the two hardest folds after george). The variant with the best mean over
the inner folds becomes the recipe of all six folds: the george fold is untouched by the choice; the nicolas
and jackson folds' held-out speakers took part in it (say so where their numbers are quoted). Runs go to
``runs/digits_lso_study/<variant>-<inner speaker>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RUNS = ROOT / "runs" / "digits_lso_study"
EXCLUDED = "george"
INNER = ("nicolas", "jackson")  # the inner folds' test speakers: the two hardest folds after george
EPOCHS = 20  # the leave-speakers-out folds' schedule

# name -> (front-end overrides, training overrides, synthetic utterances per digit (espeak-ng, flite))
_AUG = {"augment_freq_warp": 0.15, "augment_tilt": 1.0, "augment_time_mask": 8, "augment_freq_mask": 4}
_AUG2 = {**_AUG, "augment_freq_warp": 0.2, "augment_tilt": 1.5, "speed": [0.8, 1.25], "snr_db": [None, 30, 20, 10, 5]}
VARIANTS: dict[str, tuple[dict, dict, tuple[int, int]]] = {
    "base": ({}, {}, (0, 0)),  # the recipe before the study
    "aug": ({}, _AUG, (0, 0)),  # spectral tilt, a wider mel-axis warp, SpecAugment masks
    "aug2": ({}, _AUG2, (0, 0)),  # stronger still: speed 0.8-1.25, noise down to 5 dB SNR
    "cmn100": ({"cmn_frames": 100.0}, {}, (0, 0)),  # streaming mean normalisation, 2 s time constant
    "synth": ({}, {}, (200, 40)),  # synthetic voices added to the training pool
    "synth_aug": ({}, _AUG, (200, 40)),
}


# the six leave-speakers-out folds of the recipe before the study ("base": no synthetic voices), as
# benchmarks/results/training.json recorded them at commit c107996 (20 epochs a fold, theo 40)
WITHOUT_SYNTHETIC = {
    "source": "benchmarks/results/training.json at commit c107996; 20 epochs a fold, theo 40",
    "folds": {"george": 0.404, "jackson": 0.762, "lucas": 0.866, "nicolas": 0.708, "theo": 0.852, "yweweler": 0.914},
}


def inner_task(fe_over: dict, inner: str, synth: tuple[int, int]):
    from edgeseq.data import digits as D
    from edgeseq.train.stream import digits_task

    fe = {**D.FRONT_END.to_dict(), **fe_over}
    return digits_task(holdout=inner, exclude=(EXCLUDED,), features=fe, synthetic=synth)


def run(name: str, inner: str) -> dict:
    import torch

    from edgeseq.train.stream import train_stream_task

    out = RUNS / f"{name}-{inner}.json"
    if out.exists():
        return json.loads(out.read_text())
    torch.set_num_threads(1)
    fe_over, tr_over, synth = VARIANTS[name]
    m = train_stream_task(
        "digits-heldout-george",
        "lmu",
        RUNS / f"{name}-{inner}",
        force=True,
        train_overrides={"epochs": EPOCHS, **tr_over},
        task=inner_task(fe_over, inner, synth),
        progress=False,
        log=lambda s: print(f"[{name}-{inner}] {s}", flush=True),
    )
    row = {
        "variant": name,
        "inner_test": inner,
        "front_end": fe_over,
        "train": tr_over,
        "synthetic_per_digit": list(synth),
        "epochs": m["epochs_run"],
        "validation_accuracy": m["validation_accuracy"],
        "inner_test_accuracy": m["test"]["accuracy"],
        "train_seconds": m["train_seconds"],
    }
    RUNS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=1))
    return row


def summary() -> None:
    """Print the table and write it to benchmarks/results/digits_lso_study.json (variants run on every inner fold)."""
    from benchmarks.common import write_results

    rows = []
    for v, (fe_over, tr_over, synth) in VARIANTS.items():
        got = {i: RUNS / f"{v}-{i}.json" for i in INNER}
        if not all(f.is_file() for f in got.values()):
            continue
        runs = {i: json.loads(f.read_text()) for i, f in got.items()}
        acc = {i: r["inner_test_accuracy"] for i, r in runs.items()}
        rows.append(
            {
                "variant": v,
                "front_end": fe_over,
                "train": tr_over,
                "synthetic_per_digit": list(synth),
                "epochs": EPOCHS,
                "validation_accuracy": {i: r["validation_accuracy"] for i, r in runs.items()},
                "unseen_speaker_accuracy": acc,
                "mean": sum(acc.values()) / len(acc),
            }
        )
    best = max(rows, key=lambda r: r["mean"])["variant"] if rows else None
    for r in rows:
        cells = "  ".join(f"{k} {100 * a:.1f}%" for k, a in r["unseen_speaker_accuracy"].items())
        print(f"{r['variant']:<10} {cells}  mean {100 * r['mean']:.1f}%{'  <- chosen' if r['variant'] == best else ''}")
    write_results(
        "digits_lso_study",
        {
            "protocol": f"lmu digits recipe, {EPOCHS} epochs; {EXCLUDED} never loaded; inner folds: train on the "
            f"other four speakers, score all 500 recordings of the inner test speaker ({', '.join(INNER)})",
            "rule": "the variant with the best mean over the inner folds becomes the recipe of all six folds",
            "chosen": best,
            "variants": rows,
            "six_folds_without_synthetic": WITHOUT_SYNTHETIC,
        },
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="*")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--summary", action="store_true")
    a = ap.parse_args(argv)
    if a.list:
        for k, v in VARIANTS.items():
            print(k, v)
        return 0
    bad = [v for v in a.variants if v not in VARIANTS]
    if bad:
        print(f"unknown variant(s) {bad}; see --list", file=sys.stderr)
        return 2
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    for v in a.variants:
        for inner in INNER:
            r = run(v, inner)
            print(
                f"{v}: validation {r['validation_accuracy']:.4f}, {inner} (never trained on) {r['inner_test_accuracy']:.4f}"
            )
    if a.summary:
        summary()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
