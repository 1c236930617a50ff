"""Peak memory on zip bombs stays below 200 MB: three of the bombs of benchmarks/bench_bombs.py
(2 MB files inflating to 2.3 GB: an IR graph, a checkpoint whose config declares a 360 GB model,
a quantization plan), each through the real CLI and the Python API in a fresh process, measured by
the kernel's high-water mark of that process. benchmarks/results/bombs.json has every case."""

from __future__ import annotations

from benchmarks.bench_bombs import LIMIT_MB, measure

CASES = (
    "esq: array member inflates past its declared shape",
    "checkpoint: config declares hidden=1000000 (360 GB of weights)",
    "plan: quant/prepared.esq is the bomb",
)


def test_zip_bombs_stay_below_200_mb(bad_fixtures, tmp_path):
    rows = measure(bad_fixtures, tmp_path, only=CASES)
    assert [r["case"] for r in rows] == list(CASES)
    for r in rows:
        assert r["cli"]["exit_status"] == 2 and r["cli"]["message"].startswith("edgeseq: error: "), r
        assert r["api"]["exit_status"] == 1 and "edgeseq.errors." in r["api"]["message"], r
        assert r["cli"]["peak_rss_mb"] < LIMIT_MB and r["api"]["peak_rss_mb"] < LIMIT_MB, r
    assert not (tmp_path / "never").exists()
