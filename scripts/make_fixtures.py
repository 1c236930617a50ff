#!/usr/bin/env python
"""Regenerate the small dataset fixtures in tests/fixtures from the real offline datasets.

    .venv/bin/python scripts/make_fixtures.py            # writes tests/fixtures/*.npz
    .venv/bin/python scripts/make_fixtures.py --check    # fails if the committed files differ

Fixtures (``edgeseq.data.Dataset.save`` format, loadable with ``Dataset.load``):

* ``smartwatch_tiny.npz``: the first 2 windows (128 samples, 50% overlap) of every exercise for
  subject 1 (a training subject) and subject 8 (a test subject) of seglearn's smartwatch data;
* ``har_tiny.npz``: the first 2 label-pure windows (128 samples, 50% overlap) of each of the 6
  activities for subject 1 (train) and subject 2 (test) of UCI HAPT.

Both are deterministic: running the script twice gives byte-identical files.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(ROOT))

from edgeseq.data.dataset import Dataset  # noqa: E402
from edgeseq.data.har import load_har  # noqa: E402
from edgeseq.data.smartwatch import load_smartwatch  # noqa: E402

PER_CLASS = 2


def first_per_class_and_group(ds: Dataset, groups: tuple[int, ...], per_class: int = PER_CLASS) -> Dataset:
    idx = []
    for g in groups:
        for c in range(ds.n_classes):
            idx.extend(np.flatnonzero((ds.groups == g) & (ds.y == c))[:per_class].tolist())
    out = ds.subset(np.array(idx, dtype=np.int64))
    out.meta = {
        **out.meta,
        "split": "fixture",
        "fixture_subjects": list(groups),
        "per_class": per_class,
        "subjects": list(groups),
    }
    return out


def build() -> dict[str, Dataset]:
    sw = load_smartwatch("all", window=128, overlap=0.5)
    har = load_har("all", classes=6, window=128, overlap=0.5)
    return {
        "smartwatch_tiny.npz": first_per_class_and_group(sw, (1, 8)),
        "har_tiny.npz": first_per_class_and_group(har, (1, 2)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed fixtures instead of writing")
    args = ap.parse_args(argv)
    fixtures = build()
    if args.check:
        bad = []
        with tempfile.TemporaryDirectory() as tmp:
            for name, ds in fixtures.items():
                fresh = Path(tmp) / name
                ds.save(fresh)
                old = FIXTURES / name
                if not old.is_file() or old.read_bytes() != fresh.read_bytes():
                    bad.append(name)
        for name in bad:
            print(f"fixture out of date: tests/fixtures/{name}", file=sys.stderr)
        return 1 if bad else 0
    for name, ds in fixtures.items():
        path = ds.save(FIXTURES / name)
        print(f"wrote {path.relative_to(ROOT)}: {len(ds)} windows {ds.x.shape}, {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
