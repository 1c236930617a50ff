"""validation.json and a self-contained report.html (built with :mod:`edgeseq.reports.html`)."""

from __future__ import annotations

import html as _html
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..util.fs import atomic_write_json

if TYPE_CHECKING:  # pragma: no cover
    from .runner import ValidationReport

OUTPUT_COLUMNS = [
    "max_abs_error",
    "mean_abs_error",
    "max_rel_error",
    "decision_agreement",
    "spike_agreement",
    "spike_mismatches",
]
# integer artifacts: errors in LSBs of each output's quantisation step
LSB_COLUMNS = ["lsb", "max_lsb_error", "mean_lsb_error", "lsb_mismatches"]


def make_plots(report: "ValidationReport") -> dict[str, bytes]:
    """PNG plots: error per time step of temporal outputs, pooled-output error against sequence length."""
    from ..reports.html import line_png

    plots: dict[str, bytes] = {}
    if not report.golden:  # a bundle: the plots are its parts'
        return plots
    sections = [("golden", report.golden)] + ([("data", report.data)] if report.data else [])
    curves = {
        f"{sec}: {name}": [max(v, 1e-12) for v in m["error_per_step"]]
        for sec, rep in sections
        for name, m in rep["outputs"].items()
        if m.get("error_per_step")
    }
    if curves:
        steps = max(len(v) for v in curves.values())
        plots["error_per_step"] = line_png(
            list(range(1, steps + 1)),
            curves,
            title="Max abs error per time step",
            xlabel="time step",
            ylabel="max abs error (0 drawn at 1e-12)",
            logy=True,
            markers=False,
        )
    curve = report.golden.get("pooled_error_vs_length")
    if curve and len(curve) > 1:
        plots["pooled_error_vs_length"] = line_png(
            [c["steps"] for c in curve],
            {"pooled outputs": [max(c["max_abs_error"], 1e-12) for c in curve]},
            title="Pooled-output error against sequence length (prefixes of the golden input)",
            xlabel="sequence length (steps)",
            ylabel="max abs error",
            logy=True,
        )
    return plots


def render_html(report: "ValidationReport") -> str:
    from ..reports import html as H

    d = report.to_dict()
    a = d["artifact"]
    top = H.banner(report.passed, "every check is within its tolerance" if report.passed else report.failure_message())
    sections = [
        H.section(
            "Checks",
            H.table(
                [c.to_dict() for c in report.checks],
                columns=["name", "status", "value", "limit", "detail"],
                headers=["check", "status", "value", "limit", "detail"],
                highlight=[c.failed for c in report.checks],
            ),
        )
    ]
    info = {k: v for k, v in a.items() if k not in ("integrity_problems", "parts")}
    parts = [H.kv_table(info)]
    if a.get("integrity_problems"):
        parts.append(H.note("integrity: " + "; ".join(a["integrity_problems"])))
    if a.get("parts"):
        parts.append(H.table([{"part": k, **v} for k, v in a["parts"].items()], caption="parts"))
    sections.append(H.section("Artifact", *parts))
    if report.parts:
        for name, rep in report.parts.items():
            sections += _detail_sections(rep, f"{name}: ")
    else:
        sections += _detail_sections(report, "")
    sections.append(
        H.section("Tolerance policy", "<pre>" + _html.escape(json.dumps(d["tolerance"], indent=1)) + "</pre>")
    )
    return H.page(
        f"edgeseq validate: {Path(a['path']).name}",
        sections,
        subtitle=f"{a['kind']} artifact for {a['target']} ({a['number_format']}); {a['path']}",
        top=top,
    )


def _detail_sections(report: "ValidationReport", prefix: str) -> list[str]:
    """Reference, golden vectors, data, cost and plots of one (part of an) artifact."""
    from ..reports import html as H

    d = report.to_dict()
    sections = []
    ref = d["reference"]
    parts = [H.kv_table({k: v for k, v in ref.items() if k not in ("kernels", "throughput")})]
    if ref.get("throughput"):
        parts.append(H.kv_table(ref["throughput"], caption="reference throughput"))
    if ref.get("kernels"):
        parts.append(H.table(list(ref["kernels"].items()), columns=["node", "kernel"], caption="kernel per node"))
    sections.append(H.section(prefix + "Reference", *parts))
    for sec in ("golden", "data"):
        rep = d.get(sec)
        if not rep:
            continue
        title = "Golden vectors" if sec == "golden" else "Data"
        sub = (
            f"input {rep['input_shape']}"
            if sec == "golden"
            else f"{rep['name']}: {rep['sequences']} of {rep['of']} sequences, {rep['steps']} steps"
        )
        cols = OUTPUT_COLUMNS + (LSB_COLUMNS if any("max_lsb_error" in m for m in rep["outputs"].values()) else [])
        parts = [
            H.table([[n] + [m.get(k) for k in cols] for n, m in rep["outputs"].items()], columns=["output"] + cols)
        ]
        if rep.get("accuracy"):
            parts.append(H.kv_table(rep["accuracy"], caption="task accuracy"))
        sections.append(H.section(prefix + title, *parts, note_text=sub))
    perf = d["performance"]
    parts = []
    lat = perf.get("latency")
    if lat:
        parts.append(
            H.table(
                [
                    [w.replace("_", " "), lat[w]["p50_s"] * 1e6, lat[w]["p99_s"] * 1e6, lat[w]["n"]]
                    for w in ("per_sequence", "per_step")
                ],
                columns=["latency", "p50 (us)", "p99 (us)", "samples"],
                caption=f"T = {lat['steps']}; {lat['method']}",
            )
        )
    ins = perf.get("instructions")
    if ins:
        parts.append(
            H.kv_table(
                {k: v for k, v in ins.items() if k not in ("per_op", "per_op_method")},
                caption="executed instructions under emulation",
            )
        )
        if ins.get("per_op"):
            parts.append(per_op_table(ins["per_op"], ins.get("per_op_method", "")))
    for k in ("latency_error", "instructions_error"):
        if perf.get(k):
            parts.append(H.banner(False, perf[k]))
    if perf.get("sizes"):
        parts.append(H.kv_table(perf["sizes"], caption="sizes (bytes)"))
    sections.append(H.section(prefix + "Cost", *parts))
    titles = {"error_per_step": "Error per time step", "pooled_error_vs_length": "Error against sequence length"}
    for name, png in report.plots.items():
        sections.append(H.section(prefix + titles.get(name, name), H.img(png, name)))
    return sections


def per_op_table(rows: list[dict], method: str = "") -> str:
    """Where the instructions of one step go: one row per micro-op (or fused loop), largest first,
    with its share of the step drawn as a bar."""
    from ..reports import html as H

    body = [
        [
            r["region"],
            r["instructions_per_step"],
            f"{100 * r['share']:.1f}%",
            "█" * max(1, round(40 * r["share"])) if r["share"] > 0 else "",
        ]
        for r in rows
    ]
    return H.table(
        body,
        columns=["micro-op / region", "instructions per step", "share", ""],
        caption="where the instructions of a step go" + (f" ({method})" if method else ""),
    )


def per_op_lines(rows: list[dict], top: int = 6) -> list[str]:
    """The largest regions of a step as text lines (the validate summary)."""
    out = [f"{r['instructions_per_step']:>10,.0f}  {100 * r['share']:5.1f}%  {r['region']}" for r in rows[:top]]
    if len(rows) > top:
        rest = sum(r["instructions_per_step"] for r in rows[top:])
        out.append(
            f"{rest:>10,.0f}  {100 * sum(r['share'] for r in rows[top:]):5.1f}%  {len(rows) - top} other regions"
        )
    return out


def write_report(report: "ValidationReport", out_dir) -> dict[str, str]:
    """Write ``validation.json`` and ``report.html`` into ``out_dir``; returns their paths."""
    from ..reports.html import write_html

    out = Path(out_dir)
    report.plots = make_plots(report)
    for part in report.parts.values():
        part.plots = make_plots(part)
    jpath = out / "validation.json"
    hpath = out / "report.html"
    report.written = {"json": str(jpath), "html": str(hpath)}
    atomic_write_json(jpath, report.to_dict())
    write_html(hpath, render_html(report))
    return dict(report.written)
