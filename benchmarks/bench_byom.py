"""Bring your own model: the corpus of user-style models (tests/byom/corpus.py) through edgeseq capture
and ONNX export, side by side with torch.onnx.export (its defaults, and the legacy exporter with
dynamic_axes), each checked at the traced length and at another length.

For every model:

- ``edgeseq``: capture (checked against torch by capture itself), then the reference interpreter and the
  exported ONNX model (onnxruntime) at T = 10 and T = 23 against the torch forward: max abs error
  <= 1e-5 (spiking outputs: identical spikes);
- ``torch.onnx.export`` (default settings) and ``dynamic_axes`` (legacy exporter): exported at T = 10 in a
  fresh Python process each (a second export in one process can keep the first one's length), then run
  by onnxruntime at T = 10 and T = 23 against the torch forward.

Results: benchmarks/results/byom.json and a table in benchmarks/BENCHMARKS.md.

    python -m benchmarks.bench_byom [--models a,b,...] [--no-torch] [--resume]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import write_results

LENGTHS = (10, 23)
TOL = 1e-5
ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("EDGESEQ_BENCH_RESULTS") or ROOT / "benchmarks" / "results") / "byom.json"


def _close(got, want, spikes: bool) -> tuple[bool, float]:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return False, float("inf")
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    if spikes:
        return bool(np.array_equal(got != 0, want != 0)), err
    return err <= TOL * max(1.0, float(np.max(np.abs(want)))), err


def _torch_outputs(model, x) -> list:
    """The torch forward on ``x`` in the model's layout (an snntorch step network runs step by step,
    the way its users run it)."""
    import torch

    from edgeseq.frontends import is_step_net, torch_forward

    if is_step_net(model):
        return list(torch_forward(model, x))
    with torch.no_grad():
        out = model(x)
    outs = out if isinstance(out, tuple) else (out,)
    return [o.double().numpy() for o in outs]


def edgeseq_row(name: str, workdir: Path) -> dict:
    import torch

    import edgeseq
    from tests.byom.corpus import CASES, example

    c = CASES[name]
    torch.manual_seed(0)
    model = c.build().eval()
    row: dict = {"style": c.style, "expect": c.expect}
    try:
        graph = edgeseq.capture(model, example(c, steps=LENGTHS[0]))
    except edgeseq.EdgeseqError as e:
        row.update(captured=False, error=str(e).splitlines()[0])
        return row
    row.update(captured=True, nodes=[n.op.kind for n in graph.nodes], window=graph.is_window)
    spikes = any(t.spikes for t in graph.output_types)
    art = None
    try:
        art = edgeseq.export(graph, target="onnx", out=workdir / name, force=True)
    except edgeseq.EdgeseqError as e:
        row["onnx_error"] = str(e).splitlines()[0]
    for steps in LENGTHS:
        x = example(c, batch=2, steps=steps, seed=steps)
        want = _torch_outputs(model, x)
        ref, _ = edgeseq.reference(graph, x.numpy())
        ref = ref if isinstance(ref, tuple) else (ref,)
        ok = [_close(g, w, spikes) for g, w in zip(ref, want)]
        row[f"reference_T{steps}"] = all(o for o, _ in ok) and len(ref) == len(want)
        row[f"reference_err_T{steps}"] = max(e for _, e in ok)
        if art is not None:
            got = art.run(x.numpy())
            got = got if isinstance(got, tuple) else (got,)
            ok = [_close(g, w, spikes) for g, w in zip(got, want)]
            row[f"onnx_T{steps}"] = all(o for o, _ in ok) and len(got) == len(want)
            row[f"onnx_err_T{steps}"] = max(e for _, e in ok)
    row["correct"] = all(row.get(f"{k}_T{s}") for k in ("reference", "onnx") for s in LENGTHS)
    return row


_TORCH_EXPORT = r"""
import json, sys, numpy as np, torch
sys.path.insert(0, {root!r})
from tests.byom.corpus import CASES, example
c = CASES[{name!r}]
torch.manual_seed(0)
m = c.build().eval()
x = example(c, steps={t0})
kw = dict(dynamo=False, input_names=["x"], dynamic_axes={axes}) if {dynamic} else {{}}
out = {{"exported": False}}
try:
    torch.onnx.export(m, (x,), {path!r}, **kw)
    out["exported"] = True
except Exception as e:
    out["error"] = (type(e).__name__ + ": " + str(e)).splitlines()[0][:200]
if out["exported"]:
    import onnxruntime as ort
    sess = ort.InferenceSession({path!r}, providers=["CPUExecutionProvider"])
    for steps in {lengths}:
        xs = example(c, batch=2, steps=steps, seed=steps)
        from edgeseq.frontends import is_step_net, torch_forward
        if is_step_net(m):
            want = torch_forward(m, xs)
        else:
            with torch.no_grad():
                want = m(xs)
            want = tuple(w.double().numpy() for w in (want if isinstance(want, tuple) else (want,)))
        try:
            got = sess.run(None, {{sess.get_inputs()[0].name: xs.numpy()}})
            ok = len(got) == len(want) and all(
                g.shape == w.shape and np.max(np.abs(g - w)) <= 1e-5 * max(1.0, float(np.abs(w).max()))
                for g, w in zip(got, want))
        except Exception as e:
            ok = False
        out[f"T{{steps}}"] = bool(ok)
print(json.dumps(out))
"""


def torch_rows(name: str, workdir: Path) -> tuple[dict, dict]:
    """torch.onnx.export with its defaults and with dynamic_axes (legacy exporter), each in a fresh
    process (the two run side by side)."""
    from tests.byom.corpus import CASES

    c = CASES[name]
    axes = (
        ({"x": {1: "batch", 0: "time"}} if c.time_major else {"x": {0: "batch", 1: "time"}})
        if not c.static
        else {"x": {0: "batch"}}
    )
    procs = []
    for dynamic in (False, True):
        code = _TORCH_EXPORT.format(
            root=str(ROOT),
            name=name,
            t0=LENGTHS[0],
            axes=axes,
            dynamic=dynamic,
            path=str(workdir / f"{name}_{int(dynamic)}.onnx"),
            lengths=list(LENGTHS),
        )
        procs.append(
            subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=900)
        try:
            res = json.loads(stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            res = {"exported": False, "error": (stderr.strip().splitlines() or ["no output"])[-1][:200]}
        res["correct"] = bool(res.get("exported")) and all(res.get(f"T{s}") for s in LENGTHS)
        out.append(res)
    return out[0], out[1]


def _table_row(name: str, row: dict) -> dict:
    """One flat row of the rendered table."""
    t = {
        "model": name,
        "style": row["style"],
        "edgeseq": "correct"
        if row.get("correct")
        else ("error: " + row.get("error", "")[:90] if not row.get("captured") else "captured, not correct"),
        "window graph": row.get("window", False),
    }
    for k in ("torch_onnx_default", "torch_onnx_dynamic_axes"):
        if k in row:
            r = row[k]
            t[k.replace("_", " ")] = (
                "correct"
                if r["correct"]
                else (
                    "exported, wrong at T=%d" % LENGTHS[1]
                    if r.get("exported") and r.get(f"T{LENGTHS[0]}")
                    else "exported, wrong or failing at batch 2"
                    if r.get("exported")
                    else "export failed"
                )
            )
    return t


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="")
    ap.add_argument("--no-torch", action="store_true", help="skip the torch.onnx.export columns")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--resume", action="store_true", help="keep the rows of an interrupted run's results file")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tests.byom.corpus import CASES

    names = [n for n in (args.models.split(",") if args.models else CASES)]
    rows = {}
    if args.resume and RESULTS.is_file():  # rows of an interrupted run (written after every model)
        rows = {k: v for k, v in json.loads(RESULTS.read_text())["models"].items() if k in names}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            if name in rows:
                continue
            row = edgeseq_row(name, Path(tmp))
            if not args.no_torch:
                row["torch_onnx_default"], row["torch_onnx_dynamic_axes"] = torch_rows(name, Path(tmp))
            rows[name] = row
            if not args.no_write and len(rows) < len(names):
                write_results("byom", _result(rows, args, partial=f"{len(rows)} of {len(names)} models"))
            print(
                f"{name:26s} edgeseq {'ok ' if row.get('correct') else '-- '}"
                + (
                    ""
                    if args.no_torch
                    else f"torch {'ok' if row['torch_onnx_default']['correct'] else '--'} "
                    f"dyn {'ok' if row['torch_onnx_dynamic_axes']['correct'] else '--'}"
                )
                + ("" if row.get("captured") else f"  {row.get('error', '')[:90]}"),
                flush=True,
            )
    result = _result(rows, args)
    print(json.dumps(result["summary"]))
    if not args.no_write:
        write_results("byom", result)
    return result


def _result(rows: dict, args, partial: str = "") -> dict:
    n = len(rows)
    summary = {
        "models": n,
        "edgeseq_captured": sum(r.get("captured", False) for r in rows.values()),
        "edgeseq_correct": sum(r.get("correct", False) for r in rows.values()),
    }
    if not args.no_torch:
        for k in ("torch_onnx_default", "torch_onnx_dynamic_axes"):
            summary[f"{k}_exported"] = sum(r[k].get("exported", False) for r in rows.values())
            summary[f"{k}_correct"] = sum(r[k]["correct"] for r in rows.values())
    return {
        "config": {"lengths": list(LENGTHS), "tolerance": TOL, "models": n},
        **({"partial": partial} if partial else {}),
        "tables": {"summary": [summary], "per model": [_table_row(k, r) for k, r in rows.items()]},
        "summary": summary,
        "models": rows,
        "env": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
    }


def run(quick: bool = False, write: bool = True) -> dict:
    """The benchmark as a function (``quick``: five models, no torch export columns)."""
    argv = (
        ["--models", "gru_cell_loop,lstm_time_major,bigru_last,snn_tutorial_static,packed_sequence_lstm", "--no-torch"]
        if quick
        else []
    )
    return main(argv + ([] if write else ["--no-write"]))


if __name__ == "__main__":
    main()
    sys.exit(0)
