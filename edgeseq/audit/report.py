"""The quantization accuracy audit as one self-contained HTML page, rendered from a plain audit dict
(the content of ``audit.json``; schema in ``edgeseq/audit/README.md``).

    validate_audit(audit)                 # raises ConfigError naming the bad key
    html = render_report(audit)           # str
    path = write_report(audit, out_dir)   # out_dir/report.html + out_dir/audit.json, atomically
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError
from ..reports import html as H

SCHEMA = "edgeseq-audit"
VERSION = 1
KINDS = ("float", "naive", "ort_baseline", "plan", "other")
KIND_LABEL = {
    "float": "float32",
    "naive": "naive per-tensor int8",
    "ort_baseline": "onnxruntime quantizer",
    "plan": "edgeseq plan",
    "other": "other",
}
KIND_COLOR = {"float": "#4c72b0", "naive": "#c44e52", "ort_baseline": "#dd8452", "plan": "#55a868", "other": "#8172b3"}
SQNR_KINDS = ("weight", "activation", "state", "output")

# ------------------------------------------------------------------------------------ validation

_NUM = (int, float)


def _is_num(v) -> bool:
    return isinstance(v, _NUM) and not isinstance(v, bool) and math.isfinite(v)


def _check(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ConfigError(msg, where=where, hint="see edgeseq/audit/README.md for the audit.json schema")


def _field(row: dict, key: str, where: str, kind: str, required: bool = True, nullable: bool = False):
    if key not in row or (row[key] is None and not required):
        _check(not required, f"{where}.{key}", "missing required field")
        return None
    v = row[key]
    if v is None:
        _check(nullable, f"{where}.{key}", "must not be null")
        return None
    if kind == "num":
        _check(_is_num(v), f"{where}.{key}", f"must be a finite number, got {v!r}")
    elif kind == "int":
        _check(isinstance(v, int) and not isinstance(v, bool), f"{where}.{key}", f"must be an integer, got {v!r}")
    elif kind == "str":
        _check(isinstance(v, str), f"{where}.{key}", f"must be a string, got {type(v).__name__}")
    elif kind == "bool":
        _check(isinstance(v, bool), f"{where}.{key}", f"must be true or false, got {v!r}")
    elif kind == "frac":
        _check(_is_num(v) and 0.0 <= v <= 1.0, f"{where}.{key}", f"must be a fraction in [0, 1], got {v!r}")
    elif kind == "numlist":
        _check(isinstance(v, list) and all(_is_num(x) for x in v), f"{where}.{key}", "must be a list of finite numbers")
    return v


def _rows(audit: dict, key: str) -> list[dict]:
    rows = audit.get(key)
    if rows is None:
        return []
    _check(isinstance(rows, list), f"audit.{key}", f"must be a list of objects, got {type(rows).__name__}")
    for i, r in enumerate(rows):
        _check(isinstance(r, dict), f"audit.{key}[{i}]", f"must be an object, got {type(r).__name__}")
    return rows


def validate_audit(audit: Any) -> dict:
    """Check ``audit`` against the schema (README.md); returns a normalised deep copy with
    ``schema``/``version`` set. Raises :class:`ConfigError` whose ``where`` names the bad key."""
    _check(isinstance(audit, dict), "audit", f"must be an object, got {type(audit).__name__}")
    a = copy.deepcopy(audit)
    if "schema" in a:
        _check(a["schema"] == SCHEMA, "audit.schema", f"must be '{SCHEMA}', got {a['schema']!r}")
    if "version" in a:
        _check(
            isinstance(a["version"], int) and a["version"] <= VERSION,
            "audit.version",
            f"version {a['version']!r} is newer than this edgeseq supports ({VERSION})",
        )
    a["schema"], a["version"] = SCHEMA, VERSION
    _check(isinstance(a.get("model"), dict), "audit.model", "missing or not an object")
    _field(a["model"], "name", "audit.model", "str")
    for k in ("dataset", "budget", "verdict", "confusion", "ort_baseline"):
        if a.get(k) is not None:
            _check(isinstance(a[k], dict), f"audit.{k}", "must be an object")
    _check(
        isinstance(a.get("accuracy"), list) and bool(a["accuracy"]),
        "audit.accuracy",
        "missing or empty: at least the float row is needed",
    )
    seen = set()
    for i, r in enumerate(_rows(a, "accuracy")):
        w = f"audit.accuracy[{i}]"
        name = _field(r, "variant", w, "str")
        _check(name not in seen, f"{w}.variant", f"duplicate variant '{name}'")
        seen.add(name)
        kind = _field(r, "kind", w, "str")
        _check(kind in KINDS, f"{w}.kind", f"must be one of {', '.join(KINDS)}, got '{kind}'")
        _field(r, "accuracy", w, "frac", required=True, nullable=True)
        _field(r, "agreement_with_float", w, "frac", required=False)
        _field(r, "bytes", w, "int", required=False)
        for k in ("status", "error", "note"):
            _field(r, k, w, "str", required=False)
    for i, r in enumerate(_rows(a, "sqnr")):
        w = f"audit.sqnr[{i}]"
        _field(r, "tensor", w, "str")
        _field(r, "sqnr_db", w, "num")
        for k in ("layer", "kind", "granularity", "variant"):
            _field(r, k, w, "str", required=False)
        _field(r, "bits", w, "int", required=False)
    for i, r in enumerate(_rows(a, "error_growth")):
        w = f"audit.error_growth[{i}]"
        _field(r, "layer", w, "str")
        t = _field(r, "t", w, "numlist")
        e = _field(r, "error", w, "numlist")
        _check(
            len(t) == len(e) and len(t) > 0,
            w,
            f"t and error must be non-empty and of equal length ({len(t)} vs {len(e)})",
        )
    for i, r in enumerate(_rows(a, "outliers")):
        w = f"audit.outliers[{i}]"
        _field(r, "tensor", w, "str")
        _field(r, "channel", w, "int")
        _field(r, "absmax", w, "num")
        _field(r, "median_absmax", w, "num", required=False)
        _field(r, "ratio", w, "num", required=False)
    for i, r in enumerate(_rows(a, "decision_flips")):
        w = f"audit.decision_flips[{i}]"
        _field(r, "variant", w, "str")
        _field(r, "rate", w, "frac")
        _field(r, "flips", w, "int", required=False)
        _field(r, "n", w, "int", required=False)
    for i, r in enumerate(_rows(a, "sensitivity")):
        w = f"audit.sensitivity[{i}]"
        _field(r, "name", w, "str")
        _field(r, "accuracy_drop_points", w, "num")
        _field(r, "sqnr_db", w, "num", required=False)
        _field(r, "rank", w, "int", required=False)
    for i, r in enumerate(_rows(a, "sizes")):
        w = f"audit.sizes[{i}]"
        _field(r, "variant", w, "str")
        _field(r, "bytes", w, "int")
        _field(r, "float_bytes", w, "int", required=False)
    for i, r in enumerate(_rows(a, "plan")):
        w = f"audit.plan[{i}]"
        _field(r, "tensor", w, "str")
        _field(r, "dtype", w, "str")
    budget = a.get("budget") or {}
    for k in ("max_accuracy_drop_points", "max_flip_rate"):
        _field(budget, k, "audit.budget", "num", required=False)
    _field(budget, "max_bytes", "audit.budget", "int", required=False)
    if a.get("verdict") is not None:
        _field(a["verdict"], "pass", "audit.verdict", "bool")
        reasons = a["verdict"].get("reasons", [])
        _check(
            isinstance(reasons, list) and all(isinstance(s, str) for s in reasons),
            "audit.verdict.reasons",
            "must be a list of strings",
        )
    for name, m in (a.get("confusion") or {}).items():
        _check(
            isinstance(m, list)
            and m
            and all(isinstance(r, list) and len(r) == len(m) for r in m)
            and all(_is_num(v) for r in m for v in r),
            f"audit.confusion.{name}",
            "must be a square matrix of numbers",
        )
    notes = a.get("notes", [])
    _check(
        isinstance(notes, list) and all(isinstance(s, str) for s in notes), "audit.notes", "must be a list of strings"
    )
    try:
        json.dumps(a, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"audit is not JSON-able ({e})", where="audit") from None
    return a


# --------------------------------------------------------------------------------------- verdict


def _first(rows: list[dict], kind: str) -> Optional[dict]:
    return next((r for r in rows if r["kind"] == kind), None)


def flip_rates(audit: dict) -> dict[str, float]:
    """Decision-flip rate per variant: ``decision_flips`` rows, else 1 - agreement_with_float."""
    rates = {r["variant"]: float(r["rate"]) for r in audit.get("decision_flips") or []}
    for r in audit["accuracy"]:
        if r["variant"] not in rates and r.get("agreement_with_float") is not None and r["kind"] != "float":
            rates[r["variant"]] = 1.0 - float(r["agreement_with_float"])
    return rates


def verdict(audit: dict) -> tuple[Optional[bool], list[str]]:
    """(pass?, reasons). An explicit ``verdict`` wins; else the budget is checked on the plan row
    against the float row. None: nothing to judge (no budget, or no plan/float row)."""
    if audit.get("verdict") is not None:
        return bool(audit["verdict"]["pass"]), list(audit["verdict"].get("reasons", []))
    budget = audit.get("budget") or {}
    if not any(budget.get(k) is not None for k in ("max_accuracy_drop_points", "max_flip_rate", "max_bytes")):
        return None, ["no accuracy budget given"]
    rows = audit["accuracy"]
    fl, plan = _first(rows, "float"), _first(rows, "plan")
    if fl is None or plan is None or fl.get("accuracy") is None:
        return None, ["the audit has no float row or no edgeseq plan row to judge"]
    if plan.get("accuracy") is None:
        return False, [f"the plan '{plan['variant']}' did not run ({plan.get('error', 'no accuracy')})"]
    ok, reasons = True, []
    drop = 100.0 * (fl["accuracy"] - plan["accuracy"])
    lim = budget.get("max_accuracy_drop_points")
    if lim is not None:
        good = drop <= lim + 1e-12
        ok &= good
        reasons.append(f"accuracy drop {drop:.2f} points {'<=' if good else '>'} budget {lim:g} points")
    lim = budget.get("max_flip_rate")
    if lim is not None:
        rate = flip_rates(audit).get(plan["variant"])
        if rate is None:
            ok, good = False, False
            reasons.append("decision-flip rate of the plan not measured")
        else:
            good = rate <= lim + 1e-12
            ok &= good
            reasons.append(f"decision-flip rate {100 * rate:.2f}% {'<=' if good else '>'} budget {100 * lim:.2f}%")
    lim = budget.get("max_bytes")
    if lim is not None:
        size = plan.get("bytes")
        if size is None:
            size = next((r["bytes"] for r in audit.get("sizes") or [] if r["variant"] == plan["variant"]), None)
        if size is None:
            ok = False
            reasons.append("size of the plan not measured")
        else:
            good = size <= lim
            ok &= good
            reasons.append(f"size {size} bytes {'<=' if good else '>'} budget {lim} bytes")
    return ok, reasons


# --------------------------------------------------------------------------------------- sections


def _missing(what: str) -> str:
    return H.note(f"{what}: not measured in this audit.")


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _points(v) -> str:
    return "-" if v is None else f"{v:+.2f}"


def _summary(a: dict) -> str:
    m, d, b = a["model"], a.get("dataset") or {}, a.get("budget") or {}
    items = {"model": m["name"]}
    for k in ("arch", "task", "parameters", "checkpoint", "source"):
        if m.get(k) is not None:
            items[k] = m[k]
    if d:
        items["dataset"] = " ".join(str(d[k]) for k in ("name", "split") if d.get(k))
        for k, label in (("n", "sequences"), ("steps", "time steps")):
            if d.get(k) is not None:
                items[label] = d[k]
    for k, label in (
        ("max_accuracy_drop_points", "budget: max accuracy drop (points)"),
        ("max_flip_rate", "budget: max decision-flip rate"),
        ("max_bytes", "budget: max bytes"),
    ):
        if b.get(k) is not None:
            items[label] = b[k]
    return H.section("Summary", H.kv_table(items), sid="summary")


def _accuracy(a: dict) -> str:
    rows = a["accuracy"]
    fl = _first(rows, "float")
    base = fl["accuracy"] if fl else None
    flips = flip_rates(a)
    table_rows = []
    for r in rows:
        acc = r.get("accuracy")
        table_rows.append(
            {
                "variant": r["variant"],
                "kind": KIND_LABEL[r["kind"]],
                "accuracy": _pct(acc),
                "change vs float (points)": _points(None if acc is None or base is None else 100 * (acc - base)),
                "agreement with float": _pct(r.get("agreement_with_float")),
                "decision flips": _pct(flips.get(r["variant"])),
                "bytes": r.get("bytes"),
                "status": r.get("status") or ("ok" if acc is not None else "failed"),
                "note / error": r.get("error") or r.get("note") or "",
            }
        )
    ok_rows = [r for r in rows if r.get("accuracy") is not None]
    parts = [H.table(table_rows, highlight=[r["kind"] == "plan" for r in rows])]
    if ok_rows:
        png = H.bar_png(
            [r["variant"] for r in ok_rows],
            [100 * r["accuracy"] for r in ok_rows],
            title="accuracy by variant",
            ylabel="accuracy (%)",
            horizontal=True,
            colors=[KIND_COLOR[r["kind"]] for r in ok_rows],
            hline=None if base is None else 100 * base,
            hline_label="float32",
            lim=(max(0.0, 100 * min(r["accuracy"] for r in ok_rows) - 10), 100.0),
        )
        parts.append(H.img(png, "accuracy by variant"))
    return H.section(
        "Accuracy",
        *parts,
        sid="accuracy",
        note_text="float32; naive per-tensor int8 of every tensor; onnxruntime's own quantizer "
        "(baseline); the edgeseq plan. Failed variants are listed with the reason.",
    )


def _flips(a: dict) -> str:
    rates = flip_rates(a)
    if not rates:
        return H.section("Decision flips", _missing("decision-flip rate"), sid="flips")
    extra = {r["variant"]: r for r in a.get("decision_flips") or []}
    rows = [
        {
            "variant": v,
            "flip rate": _pct(rate),
            "flips": extra.get(v, {}).get("flips"),
            "sequences": extra.get(v, {}).get("n"),
        }
        for v, rate in rates.items()
    ]
    png = H.bar_png(
        list(rates),
        [100 * r for r in rates.values()],
        title="decision-flip rate vs float",
        ylabel="sequences with a different predicted class (%)",
        horizontal=True,
    )
    return H.section(
        "Decision flips",
        H.table(rows),
        H.img(png, "decision-flip rate"),
        sid="flips",
        note_text="Fraction of evaluated sequences whose predicted class differs from the float model's.",
    )


def _sqnr(a: dict) -> str:
    rows = a.get("sqnr") or []
    if not rows:
        return H.section("SQNR per tensor", _missing("SQNR"), sid="sqnr")
    variants = list(dict.fromkeys(r.get("variant", "") for r in rows))
    labels = list(dict.fromkeys(r["tensor"] for r in rows))
    if len(variants) > 1:
        values = {
            v or "-": [
                next((r["sqnr_db"] for r in rows if r["tensor"] == t and r.get("variant", "") == v), None)
                for t in labels
            ]
            for v in variants
        }
        png = H.bar_png(labels, values, title="SQNR per tensor", ylabel="SQNR (dB)", horizontal=True)
    else:
        colors = [f"C{SQNR_KINDS.index(r['kind']) if r.get('kind') in SQNR_KINDS else 4}" for r in rows]
        png = H.bar_png(
            [r["tensor"] for r in rows],
            [r["sqnr_db"] for r in rows],
            title="SQNR per tensor",
            ylabel="SQNR (dB)",
            horizontal=True,
            colors=colors,
        )
    table_rows = [
        {
            "tensor": r["tensor"],
            "layer": r.get("layer", ""),
            "kind": r.get("kind", ""),
            "bits": r.get("bits"),
            "granularity": r.get("granularity", ""),
            "variant": r.get("variant", ""),
            "SQNR (dB)": r["sqnr_db"],
        }
        for r in sorted(rows, key=lambda r: r["sqnr_db"])
    ]
    return H.section(
        "SQNR per tensor",
        H.img(png, "SQNR per tensor"),
        H.table(table_rows, digits=3),
        sid="sqnr",
        note_text="10 log10(signal power / quantization error power); lowest first in the table. "
        "Colours: weights, activations, states, outputs.",
    )


def _growth(a: dict) -> str:
    rows = a.get("error_growth") or []
    if not rows:
        return H.section("Error growth over time", _missing("quantization error over time steps"), sid="growth")
    plt = H._plt()
    fig, ax = plt.subplots(figsize=(8.0, 3.8))
    lo, hi = math.inf, 0.0
    for r in rows:
        label = r["layer"] + (f"/{r['state']}" if r.get("state") else "")
        label += f" [{r['metric']}]" if r.get("metric") else ""
        if r.get("variant"):
            label += f" ({r['variant']})"
        ax.plot(r["t"], r["error"], lw=1.3, label=label)
        pos = [e for e in r["error"] if e > 0]
        if pos:
            lo, hi = min(lo, min(pos)), max(hi, max(pos))
    if hi > 0 and lo < math.inf and hi / lo > 100:
        ax.set_yscale("log")
    ax.set(xlabel="time step", ylabel="quantization error")
    ax.set_title("quantization error of each recurrent layer over time", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    png = H.figure_png(fig)
    summary = [
        {
            "layer": r["layer"],
            "state": r.get("state", ""),
            "metric": r.get("metric", ""),
            "first": r["error"][0],
            "last": r["error"][-1],
            "max": max(r["error"]),
            "growth (last / first)": (r["error"][-1] / r["error"][0]) if r["error"][0] else None,
        }
        for r in rows
    ]
    return H.section(
        "Error growth over time",
        H.img(png, "error growth over time"),
        H.table(summary, digits=3),
        sid="growth",
        note_text="Does the quantization error of a recurrent state accumulate over the sequence, or stay bounded?",
    )


def _outliers(a: dict) -> str:
    rows = a.get("outliers") or []
    if not rows:
        return H.section("Outlier channels", _missing("per-channel ranges"), sid="outliers")
    out = []
    for r in rows:
        ratio = r.get("ratio")
        if ratio is None and r.get("median_absmax"):
            ratio = r["absmax"] / r["median_absmax"]
        out.append(
            {
                "tensor": r["tensor"],
                "channel": r["channel"],
                "absmax": r["absmax"],
                "median absmax": r.get("median_absmax"),
                "ratio to median": ratio,
            }
        )
    out.sort(key=lambda r: -(r["ratio to median"] or 0))
    return H.section(
        "Outlier channels",
        H.table(out, highlight=[(r["ratio to median"] or 0) >= 4 for r in out], digits=3),
        sid="outliers",
        note_text="Channels whose range dwarfs the median channel's waste int8 resolution under "
        "per-tensor scales (highlighted: ratio >= 4).",
    )


def _sensitivity(a: dict) -> str:
    rows = a.get("sensitivity") or []
    if not rows:
        return H.section("Sensitivity ranking", _missing("per-tensor sensitivity"), sid="sensitivity")
    ordered = sorted(
        rows, key=lambda r: (r.get("rank") if r.get("rank") is not None else math.inf, -r["accuracy_drop_points"])
    )
    out = [
        {
            "rank": r.get("rank", k + 1),
            "name": r["name"],
            "accuracy drop (points)": r["accuracy_drop_points"],
            "SQNR (dB)": r.get("sqnr_db"),
            "how": r.get("how", ""),
        }
        for k, r in enumerate(ordered)
    ]
    png = H.bar_png(
        [r["name"] for r in ordered],
        [r["accuracy_drop_points"] for r in ordered],
        title="accuracy drop when only this is quantized",
        ylabel="accuracy drop (points)",
        horizontal=True,
    )
    return H.section("Sensitivity ranking", H.table(out, digits=3), H.img(png, "sensitivity"), sid="sensitivity")


def _sizes(a: dict) -> str:
    rows = list(a.get("sizes") or [])
    if not rows:
        rows = [{"variant": r["variant"], "bytes": r["bytes"]} for r in a["accuracy"] if r.get("bytes") is not None]
    if not rows:
        return H.section("Sizes", _missing("model sizes"), sid="sizes")
    fl = _first(a["accuracy"], "float")
    ref = next((r["bytes"] for r in rows if fl and r["variant"] == fl["variant"]), None)
    out = []
    for r in rows:
        base = r.get("float_bytes") or ref
        out.append(
            {
                "variant": r["variant"],
                "bytes": r["bytes"],
                "float bytes": base,
                "ratio to float": (r["bytes"] / base) if base else None,
                "note": r.get("note", ""),
            }
        )
    png = H.bar_png(
        [r["variant"] for r in rows], [r["bytes"] / 1024 for r in rows], title="size", ylabel="KiB", horizontal=True
    )
    return H.section(
        "Sizes",
        H.table(out, digits=3),
        H.img(png, "sizes"),
        sid="sizes",
        note_text="Bytes of weights and constants as stored (float32 vs integer).",
    )


def _plan(a: dict) -> str:
    rows = a.get("plan") or []
    if not rows:
        return H.section("Recommended plan", _missing("a quantization plan"), sid="plan")
    cols = ["tensor", "dtype", "granularity", "scale", "zero_point", "state_policy", "reason"]
    extra = [k for r in rows for k in r if k not in cols]
    cols += list(dict.fromkeys(extra))
    present = [c for c in cols if any(r.get(c) is not None for r in rows)]
    return H.section("Recommended plan", H.table(rows, columns=present, digits=4), sid="plan")


def _ort(a: dict) -> str:
    res = a.get("ort_baseline")
    if not res:
        return ""
    rows = []
    for v in res.get("variants", []):
        q = v.get("quant_nodes") or {}
        rc = v.get("recurrent_compute") or {}
        done = rc.get("integer", 0) + rc.get("qdq", 0) + rc.get("weight_qdq", 0)
        rows.append(
            {
                "export": v.get("export"),
                "method": v.get("method"),
                "status": v.get("status"),
                "accuracy": _pct(v.get("accuracy")),
                "agreement": _pct(v.get("agreement_with_float")),
                "quant nodes": ", ".join(f"{k} {n}" for k, n in sorted(q.items())) or "none",
                "in loop bodies": v.get("quant_nodes_in_subgraphs"),
                "recurrent matmuls quantized": f"{done}/{rc.get('total', 0)}" if rc else "-",
                "integer kernels at run time": ", ".join(
                    f"{k} {n}" for k, n in sorted((v.get("runtime_integer_ops") or {}).items())
                )
                or "none",
                "error": v.get("error", ""),
            }
        )
    fl = [
        {"export": k, "accuracy": _pct(v.get("accuracy")), "bytes": v.get("bytes"), "error": v.get("error", "")}
        for k, v in (res.get("float") or {}).items()
    ]
    s = res.get("summary") or {}
    n_failed = s.get("variants_failed", 0)
    text = (
        f"Recurrent weights quantized by: {', '.join(s.get('recurrence_quantized_by') or []) or 'no variant'}. "
        f"{n_failed} of {s.get('variants_ok', 0) + n_failed} variants failed."
    )
    return H.section(
        "onnxruntime quantizer baseline: what got quantized",
        H.note(text),
        H.table(fl, caption="float exports"),
        H.table(rows, caption="quantized variants"),
        sid="ort",
    )


def _confusion(a: dict) -> str:
    mats = a.get("confusion") or {}
    if not mats:
        return ""
    labels = (a.get("dataset") or {}).get("labels")
    parts = []
    for name, m in mats.items():
        lab = labels if labels and len(labels) == len(m) else [str(i) for i in range(len(m))]
        parts.append(H.img(H.confusion_png(m, lab, title=f"confusion: {name}"), f"confusion matrix {name}"))
    return H.section("Confusion matrices", *parts, sid="confusion")


def _notes(a: dict) -> str:
    notes = a.get("notes") or []
    if not notes:
        return ""
    return H.section("Notes", "<ul>" + "".join(f"<li>{H.esc(n)}</li>" for n in notes) + "</ul>", sid="notes")


SECTIONS = (
    _summary,
    _accuracy,
    _flips,
    _sqnr,
    _growth,
    _outliers,
    _sensitivity,
    _sizes,
    _plan,
    _ort,
    _confusion,
    _notes,
)


def render_report(audit: dict) -> str:
    """The audit as one self-contained HTML document (validated first)."""
    a = validate_audit(audit)
    ok, reasons = verdict(a)
    text = "; ".join(reasons)
    if ok is None:
        top = H.banner(None, f"BUDGET NOT JUDGED: {text}")
    else:
        top = H.banner(ok, f"accuracy budget {'met' if ok else 'NOT met'}: {text}")
    title = a.get("title") or f"Quantization audit: {a['model']['name']}"
    sub = " / ".join(str(x) for x in (a["model"].get("arch"), (a.get("dataset") or {}).get("name")) if x)
    return H.page(title, [f(a) for f in SECTIONS], subtitle=sub, top=top)


def write_report(audit: dict, out_dir) -> Path:
    """Write ``out_dir/report.html`` and ``out_dir/audit.json`` (atomically); returns the HTML path."""
    from ..util.fs import atomic_write_json

    a = validate_audit(audit)
    document = render_report(a)
    out = Path(out_dir)
    atomic_write_json(out / "audit.json", a)
    return H.write_html(out / "report.html", document)
