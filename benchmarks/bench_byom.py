"""Bring your own model: the corpus of user-style models (tests/byom/corpus.py) through edgeseq capture,
ONNX export and int8 quantization, side by side with torch.onnx.export (its defaults, and the legacy
exporter with dynamic_axes), each checked at the traced length and at another length.

For every model:

- ``edgeseq``: capture (checked against torch by capture itself), then the reference interpreter and the
  exported ONNX model (onnxruntime) at T = 10 and T = 23 against the torch forward: max abs error
  <= 1e-5 (spiking outputs: identical spikes);
- ``torch.onnx.export`` (default settings) and ``dynamic_axes`` (legacy exporter): exported at T = 10 in a
  fresh Python process each (a second export in one process can keep the first one's length), then run
  by onnxruntime at T = 10 and T = 23 against the torch forward;
- ``int8``: every captured graph quantized (edgeseq preset, calibrated on 32 random sequences of
  16 steps) and exported as an integer ONNX model, which must equal the integer-exact interpreter bit for
  bit at T = 10 and T = 23; recorded with the integer outputs' error against float (rms over the output's
  spread; spiking outputs: the fraction of spikes that differ) and the micro-ops per step (window graphs
  run on whole windows).

Results: benchmarks/results/byom.json and a table in benchmarks/BENCHMARKS.md.

    python -m benchmarks.bench_byom [--models a,b,...] [--no-torch] [--no-int8] [--resume]

``--resume`` keeps the rows of an interrupted run and fills in what they lack (e.g. the int8 column).
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


def int8_row(name: str, workdir: Path) -> dict:
    """The model quantized to int8 and exported as an integer ONNX model (see the module docstring)."""
    import torch

    import edgeseq
    from edgeseq.quant import intexact, quantize
    from tests.byom.corpus import CASES, example

    c = CASES[name]
    torch.manual_seed(0)
    try:
        graph = edgeseq.capture(c.build().eval(), example(c, steps=LENGTHS[0]))
    except edgeseq.EdgeseqError as e:
        return {"quantized": False, "error": str(e).splitlines()[0]}
    scale = 2.0 if c.spiking else 1.0
    rng = np.random.default_rng(0)
    try:
        q = quantize(graph, rng.normal(size=(32, 16, graph.in_features)) * scale, "edgeseq", budget=None)
        art = edgeseq.export(q, target="onnx", out=workdir / f"{name}_int8", force=True)
    except edgeseq.EdgeseqError as e:
        return {"quantized": False, "error": str(e).splitlines()[0]}
    row: dict = {
        "quantized": True,
        "micro_ops_per_step": len(q.program.step),
        "generic_scan": any(n.op.kind == "Scan" for n in graph.nodes),  # a loop body or a rewritten cell
    }
    errs = []
    for steps in LENGTHS:
        x = (rng.normal(size=(2, steps, graph.in_features)) * scale).astype(np.float32)
        outs, _ = intexact.run(q.program, q.quantize_input(x))
        want = intexact.dequantize_outputs(q.program, outs)
        got = art.run(x, layout="BTF")
        got = got if isinstance(got, tuple) else (got,)
        row[f"bit_exact_T{steps}"] = len(got) == len(want) and all(
            g.shape == w.shape and np.array_equal(g, w) for g, w in zip(got, want)
        )
        fl = q.run(x, mode="float")[0]
        for w, f, t in zip(want, fl, q.graph.output_types):
            if t.spikes:
                errs.append(float(np.mean((w != 0) != (f != 0))))
            else:
                errs.append(float(np.sqrt(np.mean((w - f) ** 2)) / (np.std(f) + 1e-12)))
    row["bit_exact"] = all(row[f"bit_exact_T{s}"] for s in LENGTHS)
    row["int_vs_float"] = max(errs)
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
    if "int8" in row:
        r = row["int8"]
        t["int8 (onnx)"] = (
            f"bit-exact, error {100 * r['int_vs_float']:.1f}%"
            if r.get("bit_exact")
            else "not bit-exact"
            if r.get("quantized")
            else "error: " + r.get("error", "")[:70]
        )
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
    ap.add_argument("--no-int8", action="store_true", help="skip the int8 column")
    ap.add_argument(
        "--resume",
        action="store_true",
        help="keep the rows of an interrupted run's results file (filling in what they lack)",
    )
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tests.byom.corpus import CASES

    names = [n for n in (args.models.split(",") if args.models else CASES)]
    rows = {}
    if args.resume and RESULTS.is_file():  # rows of an interrupted run (written after every model)
        rows = {k: v for k, v in json.loads(RESULTS.read_text())["models"].items() if k in names}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            if name in rows and (args.no_int8 or "int8" in rows[name]):
                continue
            row = rows.get(name) or edgeseq_row(name, Path(tmp))
            if not args.no_torch and "torch_onnx_default" not in row:
                row["torch_onnx_default"], row["torch_onnx_dynamic_axes"] = torch_rows(name, Path(tmp))
            if not args.no_int8:
                row["int8"] = int8_row(name, Path(tmp))
            rows[name] = row
            done = sum(n in rows and (args.no_int8 or "int8" in rows[n]) for n in names)
            if not args.no_write and done < len(names):
                write_results("byom", _result(rows, args, partial=f"{done} of {len(names)} models"))
            print(
                f"{name:26s} edgeseq {'ok ' if row.get('correct') else '-- '}"
                + ("" if args.no_int8 else f"int8 {'ok ' if row['int8'].get('bit_exact') else '-- '}")
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
    if not args.no_int8:
        int8 = [r["int8"] for r in rows.values() if "int8" in r]
        summary["edgeseq_int8_bit_exact"] = sum(bool(r.get("bit_exact")) for r in int8)
        summary["edgeseq_int8_generic_scan"] = sum(bool(r.get("bit_exact") and r.get("generic_scan")) for r in int8)
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
