"""Find the model for a device: a 16-trial ``edgeseq sweep`` of HAR on Cortex-M4 (the task's default
search space, int8, every trial trained with the HAR recipe and measured on the emulated board) on a
local Ray instance with 2 workers, and the model that dominates the shipped ``har_lmu`` (measured the
same way in the same run). The wall-time comparison: the first 8 trials (same seed) with 1 worker, then
straight after with 2 workers in a fresh directory, so that both see the same load on a shared machine;
and whether all runs recorded the same trials with the same measurements.

Not part of ``python -m benchmarks`` (it takes far longer than the suite's budget): run it on its own,

    nice -n 10 .venv/bin/python -m benchmarks.bench_sweep [--trials 16] [--compare-trials 8] [--out runs/bench-sweep]

Each sweep directory is resumable: after an interruption the same command continues (the wall time
is then the sum of its sessions). Writes benchmarks/results/sweep_har_cortex-m4.json and the Pareto
plot next to it (sweep_har_cortex-m4.png).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from benchmarks.common import results_dir, write_results

NAME = "sweep_har_cortex-m4"
COMPARED = (
    "accuracy_int8_val",
    "accuracy_int8_test",
    "accuracy_float_test",
    "instructions_per_inference",
    "flash_bytes",
    "ram_bytes",
    "parameters",
)


def _strip(rec: dict) -> dict:
    keep = (
        "number",
        "status",
        "label",
        "params",
        "stage",
        "error",
        "seconds",
        "pareto_val",
        "pareto_test",
        "feasible",
        "retries",
    )
    out = {k: rec.get(k) for k in keep if k in rec}
    out["metrics"] = {k: v for k, v in (rec.get("metrics") or {}).items()}
    return out


def _sweep(out: Path, trials: int, workers: int, args) -> dict:
    from edgeseq.sweep import sweep
    from edgeseq.sweep.proposer import default_startup

    load0 = os.getloadavg()
    tag = f"[{workers} worker{'s' * (workers > 1)}]"
    # every part proposes like the whole sweep: the same number of random trials first
    res = sweep(
        "har",
        "cortex-m4",
        trials,
        out,
        seed=args.seed,
        batch=args.batch,
        engine=args.engine,
        startup=default_startup(args.trials, args.batch),
        workers=workers,
        log=lambda m: print(f"{tag} {m}", flush=True),
    )
    if not res.complete:
        raise SystemExit(f"the {workers}-worker sweep was stopped before all trials ran: rerun to resume")
    # a session that ran no trial (a rerun that only reports) adds nothing
    ran = bool(res.results["sessions"] and res.results["sessions"][-1].get("trials_run"))
    return {
        "results": res.results,
        "report": str(res.report),
        "ran_trials": ran,
        "sessions": [
            {k: s.get(k) for k in ("index", "started", "seconds", "trials_before", "trials_run", "status", "engine")}
            for s in res.results["sessions"]
            if s.get("trials_run")
        ],
        "load_average_before": list(load0),
        "load_average_after": list(os.getloadavg()),
    }


def _same(a: dict, b: dict) -> bool:
    """Same trials (parameters) with the same measurements, for every trial both recorded."""
    other = {t["number"]: t for t in b["trials"]}
    return all(
        t["number"] in other
        and other[t["number"]]["params"] == t["params"]
        and all(other[t["number"]]["metrics"].get(k) == t["metrics"].get(k) for k in COMPARED)
        for t in a["trials"]
        if t["number"] in other
    )


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=16, help="trials of the sweep (2 workers)")
    ap.add_argument(
        "--compare-trials",
        type=int,
        default=8,
        help="the first N trials are also run with 1 worker and then 2 workers, for the wall-time "
        "comparison (default 8)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--engine", default="ray", choices=("ray", "sequential"))
    ap.add_argument("--out", default="runs/bench-sweep", help="where the sweep directories go")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.compare_trials % args.batch or not 0 < args.compare_trials <= args.trials:
        raise SystemExit("--compare-trials must be a multiple of --batch, at most --trials")

    # the sweep itself with 2 workers, in two sessions: the first compare-trials, then the rest (a resume);
    # then the comparison, back to back: the first compare-trials with 1 worker, and with 2 workers afresh
    two = Path(args.out) / "workers-2"
    part = _sweep(two, args.compare_trials, 2, args)
    full = _sweep(two, args.trials, 2, args)
    one = _sweep(Path(args.out) / "workers-1", args.compare_trials, 1, args)
    two_again = _sweep(Path(args.out) / "workers-2-compare", args.compare_trials, 2, args)
    first2 = next(s for s in full["sessions"] if s["trials_before"] == 0)
    wall = {w: round(sum(s["seconds"] for s in r["sessions"]), 1) for w, r in (("1", one), ("2", two_again))}
    first = full["results"]
    trials = [_strip(t) for t in first["trials"]]
    base = first["baselines"].get("har_lmu", {})
    vs = first["versus_baselines"].get("har_lmu", {})
    dom = None
    if vs.get("test", {}).get("trial") is not None:
        n = vs["test"]["trial"]
        t = next(x for x in first["trials"] if x["number"] == n)
        dom = {
            "trial": n,
            "label": t.get("label"),
            "params": t["params"],
            "metrics": t["metrics"],
            "how": vs["test"]["how"],
            "criteria": vs["test"]["criteria"],
            "dominating_trials_test": vs["test"]["dominating_trials"],
            "dominating_trials_validation": vs["validation"]["dominating_trials"],
            "chosen_is_it": vs["test"]["chosen_dominates"],
            "files": {f: str(two / "trials" / f"{n:04d}" / f) for f in ("model.ckpt", "model.q.esq")},
        }
    result = {
        "config": {
            "task": "har",
            "target": "cortex-m4",
            "trials": args.trials,
            "compare_trials": args.compare_trials,
            "seed": args.seed,
            "batch": args.batch,
            "engine": args.engine,
            "space": "default har space (edgeseq sweep --task har --target cortex-m4 --show-space)",
            "threads_per_trial": 1,
        },
        "method": {
            "trial": "train with the HAR recipe (edgeseq.train), optional structured pruning + 5 fine-tuning epochs, "
            "edgeseq int8 plan with the trial's accuracy budget, export for cortex-m4 (firmware for "
            "mps2-an386, checked bit-exact against the integer-exact interpreter), instructions per "
            "128-sample inference (QEMU plugin), flash / RAM of the firmware, 32 test windows run on the "
            "emulated board",
            "accuracy": "int8 accuracy from the integer-exact interpreter (bit-exact with the device): on the "
            "recipe's held-out validation subjects (what the search optimises) and on the UCI HAPT test "
            "subjects (reported; the comparison with har_lmu uses it)",
            "dominance": "a trial dominates har_lmu when it is at least as good in int8 test accuracy, instructions "
            "per inference and flash, and strictly better in one",
            "wall_time": f"the first {args.compare_trials} trials run with 1 worker and straight after with 2 workers "
            "(fresh sweep directories, the same seed): from the engine's start to the last trial recorded "
            "(no report, no export of the chosen model); a shared 2-core machine whose load averages are "
            "recorded",
        },
        "wall_seconds": wall,
        "wall_seconds_first_trials_in_the_sweep_2_workers": first2["seconds"],
        "wall_seconds_all_trials_2_workers": round(sum(s["seconds"] for s in full["sessions"]), 1),
        "speedup_2_vs_1_workers": round(wall["1"] / wall["2"], 2),
        "same_trials_1_and_2_workers": _same(one["results"], first) and _same(two_again["results"], first),
        "baseline_har_lmu": {"metrics": base.get("metrics"), "error": base.get("error")},
        "dominates_har_lmu": dom,
        "chosen": {k: first["chosen"].get(k) for k in ("trial", "label", "why", "metrics", "artifact")},
        "pareto_front": first["pareto_front"],
        "counts": first["counts"],
        "runs": {
            "2 workers": {k: v for k, v in full.items() if k != "results"},
            "2 workers, first part": {k: v for k, v in part.items() if k != "results"},
            "1 worker": {k: v for k, v in one.items() if k != "results"},
            "2 workers, comparison": {k: v for k, v in two_again.items() if k != "results"},
        },
        "trials": trials,
    }
    png = _pareto_png(first)
    if not args.no_write:
        out = results_dir()
        out.mkdir(parents=True, exist_ok=True)
        if png:
            (out / f"{NAME}.png").write_bytes(png)
            result["plot"] = f"{NAME}.png"
        print(f"wrote {write_results(NAME, result)}")
    print(
        f"wall time for {args.compare_trials} trials: {wall}; same trials: {result['same_trials_1_and_2_workers']}; "
        f"dominates har_lmu: {dom['how'] if dom else 'none'}"
    )
    return result


def _pareto_png(results: dict):
    from edgeseq.sweep.report import pareto_png

    return pareto_png(results)


def _ran(runs: dict):
    """The runs that ran trials (a resumed, finished sweep only reports: its load says nothing). Results
    files without the flag: the two comparison runs."""
    return [(w, r) for w, r in runs.items() if r.get("ran_trials", w in ("1 worker", "2 workers, comparison"))]


def markdown(d: dict) -> str:
    """The BENCHMARKS.md section of this benchmark's results file."""
    from benchmarks.suite import _table

    b = (d.get("baseline_har_lmu") or {}).get("metrics") or {}
    rows = []
    for t in d["trials"]:
        m = t.get("metrics") or {}
        rows.append(
            [
                t["number"],
                t.get("label"),
                t["status"] if t["status"] != "ok" else ("front" if t.get("pareto_test") else ""),
                None if m.get("accuracy_int8_val") is None else f"{100 * m['accuracy_int8_val']:.2f}",
                None if m.get("accuracy_int8_test") is None else f"{100 * m['accuracy_int8_test']:.2f}",
                None if m.get("instructions_per_inference") is None else f"{m['instructions_per_inference'] / 1e6:.2f}",
                None if m.get("flash_bytes") is None else f"{m['flash_bytes'] / 1024:.1f}",
                None if m.get("ram_bytes") is None else f"{m['ram_bytes'] / 1024:.1f}",
                (t.get("seconds") or {}).get("total"),
            ]
        )
    if b:
        rows.append(
            [
                "har_lmu",
                "shipped model, measured the same way",
                "reference",
                f"{100 * b['accuracy_int8_val']:.2f}",
                f"{100 * b['accuracy_int8_test']:.2f}",
                f"{b['instructions_per_inference'] / 1e6:.2f}",
                f"{b['flash_bytes'] / 1024:.1f}",
                f"{b['ram_bytes'] / 1024:.1f}",
                None,
            ]
        )
    dom = d.get("dominates_har_lmu")
    wall = d.get("wall_seconds", {})
    lines = [
        f"Run {d.get('date', '?')}: {d['config']['trials']} trials, seed {d['config']['seed']}, batches of "
        f"{d['config']['batch']}, {d['config']['engine']} engine. {d['method']['trial']}.",
        "",
        f"Wall time: {d['method']['wall_time']}.",
        "",
        f"Wall time of the first {d['config']['compare_trials']} trials: "
        + ", ".join(f"{w} worker{'s' * (w != '1')}: {s / 60:.1f} min" for w, s in wall.items())
        + f" (speedup {d['speedup_2_vs_1_workers']}x); the same trials and measurements with 1 and 2 workers: "
        + ("yes" if d.get("same_trials_1_and_2_workers") else "NO")
        + (
            f". The same {d['config']['compare_trials']} trials as the sweep's first session (2 workers, an "
            f"earlier hour): {d['wall_seconds_first_trials_in_the_sweep_2_workers'] / 60:.1f} min"
            if "wall_seconds_first_trials_in_the_sweep_2_workers" in d
            else ""
        )
        + f". All {d['config']['trials']} trials with 2 workers: "
        + f"{d['wall_seconds_all_trials_2_workers'] / 60:.1f} min. Load averages (1/5/15 min) before / after: "
        + "; ".join(
            f"{w}: {'/'.join(f'{x:.1f}' for x in r['load_average_before'])} / "
            f"{'/'.join(f'{x:.1f}' for x in r['load_average_after'])}"
            for w, r in _ran(d["runs"])
        )
        + ".",
        "",
        (
            f"**{dom['how']}** (trial {dom['trial']}: {dom['label']}; trials dominating on the test split: "
            f"{dom['dominating_trials_test']}, on the validation subjects: {dom['dominating_trials_validation']})."
            if dom
            else "**No trial dominates har_lmu.**"
        ),
        "",
    ]
    if d.get("plot"):
        lines += [f"![Pareto fronts](results/{d['plot']})", ""]
    lines.append(
        _table(
            [
                "trial",
                "model",
                "test front",
                "int8 val %",
                "int8 test %",
                "M instr / inference",
                "flash KB",
                "RAM KB",
                "s",
            ],
            rows,
        )
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
