"""``edgeseq audit``: the quantization accuracy audit of one model, end to end.

    audit = run_audit("har_lmu", data="har", out="runs/audit-har", budget=0.5)

Measures, on held-out data, the float model against

- ``naive``: per-tensor int8 of every tensor (weights, activations, recurrent state, LMU matrices);
- ``ort:*``: onnxruntime's own quantizer (static QDQ, dynamic, dynamic with loop bodies) on every
  ONNX form of the same model (:mod:`edgeseq.audit.ort_baseline`), the incumbent baseline;
- ``edgeseq_plan``: the outlier-aware edgeseq plan with the mixed-precision search against the
  accuracy ``budget`` (validation data from the training split, never the evaluated one);

every quantized variant executed as its integer program (the integer-exact interpreter) or, for
onnxruntime, in onnxruntime. Then, for the two edgeseq variants: SQNR of every quantization point
and weight, quantization error over time through every recurrence, the outlier channels found,
decision flips, a sensitivity ranking (each tensor quantized alone), sizes, the recommended plan,
fake-quant vs integer agreement. Writes ``audit.json`` and a self-contained ``report.html``
(:mod:`edgeseq.audit.report`) atomically into ``out``; ``verdict.pass`` is False when the plan loses
more than ``budget`` accuracy points against float.

Data: ``har`` / ``kws`` / ``smartwatch`` (calibration and validation from the training split, evaluation
on the test split) or an ``.npz`` with ``x`` (N, T, F) float and ``y`` (N,) int, optionally ``calib_x``
(calibration sequences; otherwise the first half of ``x`` calibrates and the second half is evaluated)
and ``val_x``/``val_y`` (labelled validation sequences for the plan's mixed-precision search and the
choice of the onnxruntime baseline variant).
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..errors import ConfigError, DatasetError, ShapeError

ROLE_KIND = {"state": "state", "output": "output", "weight": "weight"}


def _finite(x: np.ndarray, what: str, where: str) -> np.ndarray:
    """(N, T, F) numeric, finite sequences (the NaN/Inf policy of :mod:`edgeseq.util.finite`)."""
    from ..util.datacheck import sequences

    return sequences(x, what, where, error=ShapeError)


def load_audit_data(
    data: str, graph, *, calib: int = 512, val: int = 1024, max_eval: Optional[int] = None, seed: int = 0
) -> dict:
    """{calib_x, val (x, y) or None, eval_x, eval_y, name, split, labels} for ``data``."""
    rng = np.random.default_rng(seed)
    n_out = graph.output_types[0].features
    if data in ("har", "kws", "smartwatch", "har12"):
        from ..data import load_dataset
        from ..train.recipes import TASKS

        task = TASKS[data]
        train = load_dataset(task["dataset"], "train", **task["kw"])
        test = load_dataset(task["dataset"], "test", **task["kw"])
        if train.in_features != graph.in_features:
            raise ShapeError(
                f"data '{data}' has {train.in_features} features per step; the model expects {graph.in_features}",
                where="--data",
                hint="audit the model with its own task's data",
            )
        if train.n_classes != n_out:
            raise ShapeError(f"data '{data}' has {train.n_classes} classes; the model outputs {n_out}", where="--data")
        from ..quant.tasks import calibration_split

        ci, vi = calibration_split(len(train), calib, val, seed)
        cx = train.x[ci]
        v = (train.x[vi], train.y[vi]) if val > 0 else None
        ex, ey = test.x, test.y
        name, split, labels = data, "test", list(test.labels)
        channels = list(train.meta.get("channels") or []) if isinstance(getattr(train, "meta", None), dict) else []
        where = f"--data {data}"
    else:
        path = Path(data)
        if path.suffix != ".npz":
            raise ConfigError(f"--data must be har, kws, smartwatch or an .npz file, got '{data}'", where="--data")
        if not path.is_file():
            raise DatasetError("no such data file", where=str(path))
        from ..util.datacheck import labels as check_labels
        from ..util.safeio import read_npz

        arrays = read_npz(path, DatasetError, keys=("x", "y", "calib_x", "val_x", "val_y"))
        missing = [k for k in ("x", "y") if k not in arrays]
        if missing:
            raise DatasetError(
                f"missing array(s) {missing}; an audit .npz holds x (N, T, F), y (N,) and optionally "
                f"calib_x, val_x and val_y",
                where=str(path),
            )
        x, y = arrays["x"], np.asarray(arrays["y"])
        where = str(path)
        x = _finite(x, "x", where)
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
            raise ShapeError(
                f"y must be ({len(x)},) integer class ids, got shape {y.shape} dtype {y.dtype}", where=where
            )
        y = check_labels(y, len(x), "y", where, n_classes=n_out)
        if "calib_x" in arrays:
            cx, ex, ey = arrays["calib_x"], x, y
        else:
            if len(x) < 2:
                raise ShapeError(
                    "x needs at least 2 sequences (half calibrates, half is evaluated) or a calib_x array", where=where
                )
            h = len(x) // 2
            cx, ex, ey = x[:h], x[h:], y[h:]
        cx = cx[:calib]
        v = None  # without val_x / val_y the plan is not searched (the evaluated set never chooses anything)
        if ("val_x" in arrays) != ("val_y" in arrays):
            raise DatasetError("val_x and val_y come together (validation sequences and their labels)", where=str(path))
        if "val_x" in arrays:
            vx, vy = _finite(arrays["val_x"], "val_x", where), np.asarray(arrays["val_y"])
            if vx.ndim != 3 or vy.shape != (len(vx),) or not np.issubdtype(vy.dtype, np.integer):
                raise ShapeError(
                    f"val_x must be (N, T, F) and val_y ({len(vx)},) integer class ids, got "
                    f"{vx.shape} and {vy.shape} {vy.dtype}",
                    where=where,
                )
            if vx.shape[2] != graph.in_features:
                raise ShapeError(
                    f"val_x has {vx.shape[2]} features per step; the model expects {graph.in_features}", where=where
                )
            vy = check_labels(vy, len(vx), "val_y", where, n_classes=n_out)
            v = (vx[:val], vy[:val]) if val > 0 else None
        name, split, labels = path.name, "given", [f"class {i}" for i in range(n_out)]
        channels = []
    cx = _finite(cx, "calibration data", where)
    ex = _finite(ex, "evaluation data", where)
    for arr, what in ((cx, "calibration data"), (ex, "evaluation data")):
        if arr.shape[2] != graph.in_features:
            raise ShapeError(
                f"{what} has {arr.shape[2]} features per step; the model expects {graph.in_features}", where=where
            )
    if max_eval and len(ex) > max_eval:
        keep = np.sort(rng.choice(len(ex), size=max_eval, replace=False))
        ex, ey = ex[keep], ey[keep]
    return {
        "calib_x": cx,
        "val": v,
        "eval_x": ex,
        "eval_y": np.asarray(ey),
        "name": name,
        "split": split,
        "labels": labels,
        "channels": channels,
    }


def _batched(fn, x, batch: int = 256) -> np.ndarray:
    return np.concatenate([np.asarray(fn(x[s : s + batch])) for s in range(0, len(x), batch)])


def _confusion(pred, y, n) -> list[list[int]]:
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (y, pred), 1)
    return m.tolist()


def _num(v) -> Optional[float]:
    return None if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))) else float(v)


def _layer_of(point: str) -> str:
    return point.split("/")[0] if "/" in point else point.rsplit(".", 1)[0]


def run_audit(
    model,
    data: str,
    out,
    *,
    budget: float = 0.5,
    calib: int = 512,
    val: int = 1024,
    max_eval: Optional[int] = None,
    trace: int = 64,
    sensitivity_n: int = 256,
    ort: bool = True,
    force: bool = False,
    seed: int = 0,
    progress: bool = True,
    log: Callable = None,
) -> dict:
    """Run the audit (see the module docstring); returns the audit dict written to ``out/audit.json``."""
    from tqdm.auto import tqdm

    from ..models import load_model
    from ..quant import quantize
    from ..quant.audit import per_step_error, sqnr_table
    from ..quant.search import sensitivity
    from ..util.fs import check_output_dir, output_dir
    from .report import verdict, write_report

    say = log or (lambda m: print(m, file=sys.stderr, flush=True))
    if not (isinstance(budget, (int, float)) and budget >= 0):
        raise ConfigError(f"--budget must be a non-negative number of accuracy points, got {budget!r}")
    if calib < 1:
        raise ConfigError("--calib must be at least 1", where="--calib")
    check_output_dir(out, force)
    t0 = time.perf_counter()
    lm = load_model(model)
    g = lm.graph
    d = load_audit_data(data, g, calib=calib, val=val, max_eval=max_eval, seed=seed)
    ex, ey = d["eval_x"], d["eval_y"]
    n_cls = g.output_types[0].features
    labels = list(lm.labels) or d["labels"]
    stages = ["float", "naive int8", "edgeseq plan", "onnxruntime quantizer", "error analysis", "sensitivity", "report"]
    bar = tqdm(total=len(stages), desc="audit", unit="stage", disable=not progress, leave=False)

    def stage(name):
        bar.set_postfix_str(name)
        say(f"audit   {name}")

    audit: dict[str, Any] = {
        "model": {
            "name": lm.name,
            "arch": (lm.metrics.get("model_config") or {}).get("arch") or g.metadata.get("arch"),
            "task": lm.task,
            "parameters": int(g.num_params()),
            "source": lm.source,
        },
        "dataset": {
            "name": d["name"],
            "split": d["split"],
            "n": int(len(ex)),
            "steps": int(ex.shape[1]),
            "labels": labels,
            "calibration_sequences": int(len(d["calib_x"])),
            "validation_sequences": 0 if d["val"] is None else int(len(d["val"][0])),
        },
        "budget": {"max_accuracy_drop_points": float(budget)},
        "accuracy": [],
        "sqnr": [],
        "error_growth": [],
        "outliers": [],
        "decision_flips": [],
        "sensitivity": [],
        "sizes": [],
        "plan": [],
        "confusion": {},
        "notes": [],
    }

    # float -----------------------------------------------------------------------------------------
    stage("float reference (float64 interpreter)")
    from ..ir.interpret import run as ref_run

    f_logits = _batched(lambda a: ref_run(g, a.astype(np.float64))[0][0], ex)
    f_pred = f_logits.argmax(-1)
    acc_f = float(np.mean(f_pred == ey))
    float_bytes = 4 * int(g.num_params())
    audit["accuracy"].append(
        {
            "variant": "float32",
            "kind": "float",
            "accuracy": acc_f,
            "bytes": float_bytes,
            "note": "float64 reference interpreter",
        }
    )
    audit["confusion"]["float32"] = _confusion(f_pred, ey, n_cls)
    bar.update()

    def measure(qg, variant, kind, note):
        i_logits = _batched(lambda a: qg.run(a, mode="int")[0][0], ex)
        k_logits = _batched(lambda a: qg.run(a, mode="fake")[0][0], ex)
        ip, kp = i_logits.argmax(-1), k_logits.argmax(-1)
        sz = qg.sizes()
        row = {
            "variant": variant,
            "kind": kind,
            "accuracy": float(np.mean(ip == ey)),
            "agreement_with_float": float(np.mean(ip == f_pred)),
            "bytes": int(sz["const_bytes"]),
            "note": note + f"; fake-quant accuracy {100 * float(np.mean(kp == ey)):.2f}%, integer / fake-quant "
            f"decisions equal on {100 * float(np.mean(ip == kp)):.2f}%",
        }
        audit["accuracy"].append(row)
        flips = int(np.sum(ip != f_pred))
        audit["decision_flips"].append({"variant": variant, "rate": flips / len(ip), "flips": flips, "n": int(len(ip))})
        wb = int(sz.get("weights_bytes", 0) + sz.get("biases_bytes", 0))
        audit["sizes"].append(
            {
                "variant": variant,
                "bytes": int(sz["const_bytes"]),
                "float_bytes": float_bytes,
                "weight_bytes": wb,
                "note": f"weights and biases {wb} B ({100 * wb / max(float_bytes, 1):.0f}% of float32) "
                f"+ tables {sz.get('tables_bytes', 0)} B + requantization constants "
                f"{sz.get('other_bytes', 0)} B; state {sz.get('state_bytes', 0)} B per sequence",
            }
        )
        audit["confusion"][variant] = _confusion(ip, ey, n_cls)
        return {
            "int_fake_agreement": float(np.mean(ip == kp)),
            "fake_accuracy": float(np.mean(kp == ey)),
            "int_accuracy": row["accuracy"],
        }

    # naive --------------------------------------------------------------------------------------------
    stage("naive per-tensor int8")
    q_naive = quantize(g, d["calib_x"], "naive", budget=None)
    m_naive = measure(q_naive, "naive_int8", "naive", "per-tensor int8 everywhere (weights, activations, state)")
    bar.update()

    # onnxruntime's quantizer (run first: the plan's search is asked to match its validation accuracy) --
    res = None
    if ort:
        stage("onnxruntime quantizer baseline (every ONNX form x method)")
        from .ort_baseline import ort_baseline

        with tempfile.TemporaryDirectory(prefix="edgeseq-audit-ort-") as work:
            vx, vy = d["val"] if d["val"] is not None else (None, None)
            res = ort_baseline(g, d["calib_x"], ex, ey, work, val_x=vx, val_y=vy)

    # edgeseq plan ----------------------------------------------------------------------------------
    # the search meets the budget against float, and, where onnxruntime's best variant does better than
    # that on the validation data, that variant's validation accuracy too (nothing of the evaluation set
    # is used to choose)
    search_budget, search_reason = budget, f"budget {budget:g} points against float"
    if res is not None and d["val"] is not None:
        ort_val = [
            v["validation_accuracy"]
            for v in res["variants"]
            if v.get("status") == "ok" and v.get("validation_accuracy") is not None
        ]
        if ort_val:
            from ..quant.search import MAX_VAL

            vx, vy = d["val"]
            vx, vy = vx[:MAX_VAL], vy[:MAX_VAL]  # what the search measures float accuracy on
            f_val = float(np.mean(_batched(lambda a: ref_run(g, a.astype(np.float64))[0][0], vx).argmax(-1) == vy))
            match = max(0.0, 100 * (f_val - max(ort_val)))
            if match < search_budget:
                search_budget = match
                search_reason = (
                    f"{match:.2f} points against float: onnxruntime's best variant reaches "
                    f"{100 * max(ort_val):.2f}% on the validation data (float {100 * f_val:.2f}%)"
                )
    audit["plan_search"] = {
        "budget_points": float(budget),
        "search_budget_points": float(search_budget),
        "reason": search_reason,
    }
    audit["notes"].append(f"the plan's mixed-precision search targeted {search_reason}.")
    stage(f"edgeseq outlier-aware plan (mixed-precision search, {search_reason})")
    q_plan = quantize(g, d["calib_x"], "edgeseq", val=d["val"], budget=search_budget if d["val"] is not None else None)
    search = q_plan.info.get("search")
    note = "outlier-aware int8 plan"
    if search:
        note += (
            f"; mixed-precision search promoted {', '.join(search['promoted']) or 'nothing'} to 16 bits "
            f"(validation: float {100 * search['float_accuracy']:.2f}%, plan {100 * search['final_accuracy']:.2f}%)"
        )
    m_plan = measure(q_plan, "edgeseq_plan", "plan", note)
    audit["fake_vs_int"] = {"naive_int8": m_naive["int_fake_agreement"], "edgeseq_plan": m_plan["int_fake_agreement"]}
    bar.update()

    # onnxruntime's quantizer: rows and the comparison with the plan ----------------------------------
    if res is not None:
        from .ort_baseline import audit_rows

        audit["ort_baseline"] = res
        rows = audit_rows(res)
        audit["accuracy"].extend(rows)
        for r in rows:
            if r.get("status") == "ok" and r.get("agreement_with_float") is not None:
                audit["decision_flips"].append(
                    {"variant": r["variant"], "rate": 1.0 - r["agreement_with_float"], "n": int(len(ex))}
                )
            if r.get("bytes"):
                audit["sizes"].append(
                    {
                        "variant": r["variant"],
                        "bytes": int(r["bytes"]),
                        "float_bytes": float_bytes,
                        "note": "whole .onnx file",
                    }
                )
        variants = {f"ort:{v['export']}/{v['method']}": v for v in res["variants"]}
        ok = [r for r in rows if r.get("status") == "ok" and r.get("accuracy") is not None]
        # onnxruntime mostly leaves the recurrence in float (Scan bodies are skipped): compare with every
        # variant, and separately with the variants that quantize the recurrent matmuls as the plan does
        full = [r for r in ok if variants.get(r["variant"], {}).get("quantized_recurrence")]
        comparison = {}
        for key, group in (("any", ok), ("recurrence_quantized", full)):
            if not group:
                comparison[key] = None
                continue
            # the baseline variant is chosen the way the plan is: on the validation data (training split),
            # then measured on the evaluation set; the best variant on the evaluation set itself is an
            # optimistic oracle (a maximum over many noisy candidates) and is recorded beside it
            oracle = max(group, key=lambda r: r["accuracy"])
            by_val = [r for r in group if variants.get(r["variant"], {}).get("validation_accuracy") is not None]
            if by_val:
                best = max(by_val, key=lambda r: (variants[r["variant"]]["validation_accuracy"], r["accuracy"]))
                how = "chosen on validation data"
            else:
                best, how = oracle, "best on the evaluation set"
            gap = 100 * (m_plan["int_accuracy"] - best["accuracy"])
            base_drop = 100 * (acc_f - best["accuracy"])
            comparison[key] = {
                "best_ort_variant": best["variant"],
                "best_ort_accuracy": best["accuracy"],
                "selection": how,
                "best_ort_validation_accuracy": variants.get(best["variant"], {}).get("validation_accuracy"),
                "plan_minus_best_ort_points": gap,
                "best_ort_drop_points": base_drop,
                "plan_at_least_as_accurate": gap >= 0,
                "strictly_better_where_baseline_loses_more_than_budget": None if base_drop <= budget else gap > 0,
                "oracle_ort_variant": oracle["variant"],
                "oracle_ort_accuracy": oracle["accuracy"],
                "plan_minus_oracle_ort_points": 100 * (m_plan["int_accuracy"] - oracle["accuracy"]),
            }
            what = (
                "any onnxruntime variant" if key == "any" else "the onnxruntime variants that quantize the recurrence"
            )
            audit["notes"].append(
                f"edgeseq plan vs the best of {what} ({how}: {best['variant']}): {gap:+.2f} "
                f"points; that variant loses {base_drop:.2f} points against float. The best of "
                f"them on the evaluation set itself ({oracle['variant']}, an optimistic pick "
                f"among {len(group)}): {100 * (m_plan['int_accuracy'] - oracle['accuracy']):+.2f} "
                "points."
            )
        audit["comparison"] = comparison
        n_rec = len(full)
        audit["notes"].append(
            f"onnxruntime's quantizer quantized the recurrent matmuls in {n_rec} of {len(ok)} working "
            "variants; the others keep the recurrence in float32 (the edgeseq plan runs every "
            "layer, recurrence and state included, as integers)."
        )
    else:
        audit["notes"].append("onnxruntime quantizer baseline skipped (--no-ort)")
    bar.update()

    # error analysis ---------------------------------------------------------------------------------
    stage(f"SQNR and error growth over time ({min(trace, len(ex))} sequences)")
    xt = ex[:trace]
    for variant, qg in (("edgeseq_plan", q_plan), ("naive_int8", q_naive)):
        for r in sqnr_table(qg, xt):
            audit["sqnr"].append(
                {
                    "tensor": r["point"],
                    "layer": _layer_of(r["point"]),
                    "kind": ROLE_KIND.get(r["role"], "activation"),
                    "sqnr_db": _num(r["sqnr_db"]),
                    "bits": int(r["bits"]),
                    "variant": variant,
                }
            )
        for w in qg.plan.weights.values():
            audit["sqnr"].append(
                {
                    "tensor": w.name,
                    "layer": _layer_of(w.name),
                    "kind": "weight",
                    "sqnr_db": _num(w.sqnr_db),
                    "bits": int(w.bits),
                    "granularity": w.granularity,
                    "variant": variant,
                }
            )
        growth = per_step_error(qg, xt)
        states = [p for p in growth if qg.plan.resolve(p) in qg.plan and qg.plan[qg.plan.resolve(p)].role == "state"]
        for p in states or list(growth):
            e = growth[p]
            audit["error_growth"].append(
                {
                    "layer": _layer_of(p),
                    "state": p,
                    "metric": "relative_rms",
                    "t": list(range(len(e["rel"]))),
                    "error": [float(v) for v in np.nan_to_num(e["rel"])],
                    "variant": variant,
                }
            )
    audit["sqnr"] = [r for r in audit["sqnr"] if r["sqnr_db"] is not None]
    cx = d["calib_x"].reshape(-1, d["calib_x"].shape[-1])
    amax = np.abs(cx).max(axis=0)
    med = float(np.median(amax))
    channels = list(d.get("channels") or [])
    for c, a in enumerate(amax):
        row = {
            "tensor": "x (raw input)" + (f" {channels[c]}" if c < len(channels) else ""),
            "channel": int(c),
            "absmax": float(a),
            "median_absmax": med,
        }
        if med > 0:
            row["ratio"] = float(a / med)
        audit["outliers"].append(row)
    for name, rep in (q_plan.plan.outliers or {}).items():
        for c, r in zip(rep["channels"], rep["ratios"]):
            audit["outliers"].append(
                {
                    "tensor": name,
                    "channel": int(c),
                    "absmax": float(r * rep["median_absmax"]),
                    "median_absmax": float(rep["median_absmax"]),
                    "ratio": float(r),
                }
            )
    bar.update()

    # sensitivity -------------------------------------------------------------------------------------
    sx, sy = d["val"] if d["val"] is not None else (ex, ey)
    sx, sy = sx[:sensitivity_n], sy[:sensitivity_n]
    stage(f"sensitivity ranking ({len(sy)} {'validation' if d['val'] is not None else 'evaluation'} sequences)")
    sens = sensitivity(q_plan, sx, sy)
    for k, r in enumerate(sens):
        audit["sensitivity"].append(
            {
                "name": r["name"],
                "accuracy_drop_points": 100 * float(r["drop"]),
                "sqnr_db": _num(r["sqnr_db"]),
                "rank": k + 1,
                "how": f"only this {r['kind']} fake-quantized at {r['bits']} bits, all else float",
            }
        )
    bar.update()

    # the recommended plan ---------------------------------------------------------------------------------
    stage("report")
    for e in q_plan.plan.entries.values():
        if e.absorbed:
            continue
        row = {
            "tensor": e.name,
            "dtype": f"int{e.bits}" + (f" (+int{e.split_bits} x{len(e.split)})" if e.split else ""),
            "granularity": e.granularity,
            "scale": float(e.scale.flat[0]) if e.per_tensor else f"{e.scale.min():.3g}..{e.scale.max():.3g}",
            "reason": e.note or e.role,
        }
        if e.role == "state":
            row["state_policy"] = f"int{e.bits} state carried between steps, int32 accumulation"
        audit["plan"].append(row)
    for w in q_plan.plan.weights.values():
        audit["plan"].append(
            {
                "tensor": w.name,
                "dtype": f"int{w.bits}",
                "granularity": w.granularity,
                "scale": f"{w.scale.min():.3g}..{w.scale.max():.3g}",
                "reason": "weight" + (f", SQNR {w.sqnr_db:.1f} dB" if not math.isinf(w.sqnr_db) else ""),
            }
        )
    ok, reasons = verdict(audit)
    audit["verdict"] = {"pass": bool(ok), "reasons": reasons}
    audit["seconds"] = round(time.perf_counter() - t0, 1)
    with output_dir(out, force) as st:
        q_plan.save(st / "plan.q.esq")
        write_report(audit, st)
    bar.update()
    bar.close()
    say(
        f"audit   float {100 * acc_f:.2f}%, naive int8 {100 * m_naive['int_accuracy']:.2f}%, edgeseq plan "
        f"{100 * m_plan['int_accuracy']:.2f}%"
        + "".join(
            f", best onnxruntime{' (recurrence quantized)' if k != 'any' else ''} {100 * c['best_ort_accuracy']:.2f}%"
            for k, c in (audit.get("comparison") or {}).items()
            if c
        )
        + f"; verdict: {'PASS' if ok else 'FAIL'} ({audit['seconds']:.0f} s)"
    )
    return audit
