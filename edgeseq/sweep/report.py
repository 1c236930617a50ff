"""report.html of a sweep: the Pareto fronts (int8 accuracy against instructions and against flash,
on the validation subjects the search optimised and on the test split), the chosen model and how it
compares with the reference models, every trial, the failures with their errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

from ..reports import html as H

ARCH_COLORS = ("C0", "C1", "C2", "C4", "C5", "C6", "C8", "C9")
REF_COLORS = ("crimson", "black", "C3", "C7")
COST_AXES = (
    ("instructions_per_inference", "instructions per inference", 1e6, "M"),
    ("flash_bytes", "flash (firmware)", 1024, "KB"),
)
ACC_ROWS = (
    ("accuracy_int8_val", "int8 accuracy, validation subjects (%)", "validation"),
    ("accuracy_int8_test", "int8 accuracy, test split (%)", "test"),
)


def pareto_png(results: Mapping[str, Any]) -> Optional[bytes]:
    """A grid of scatter plots: rows = accuracy (validation, test), columns = costs (instructions,
    flash where measured). Colour = architecture, black outline + line = Pareto front, star = chosen,
    diamonds = reference models, hollow = misses a constraint, dashed = the constraints."""
    plt = H._plt()
    recs = [r for r in results["trials"] if r.get("status") == "ok"]
    if not recs:
        return None
    costs = [c for c in COST_AXES if recs[0]["metrics"].get(c[0]) is not None]
    archs = sorted({r["params"].get("model.arch") or (r.get("config") or {}).get("arch", "?") for r in recs})
    color = {a: ARCH_COLORS[i % len(ARCH_COLORS)] for i, a in enumerate(archs)}
    cons = results["sweep"].get("constraints") or {}
    chosen = (results.get("chosen") or {}).get("trial")
    base = {k: v["metrics"] for k, v in (results.get("baselines") or {}).items() if v.get("status") == "ok"}
    fig, axes = plt.subplots(len(ACC_ROWS), len(costs), figsize=(5.2 * len(costs), 4.0 * len(ACC_ROWS)), squeeze=False)
    for i, (acc, acc_label, which) in enumerate(ACC_ROWS):
        front = set(results["pareto_front"][which])
        for j, (cost, cost_label, unit, unit_name) in enumerate(costs):
            ax = axes[i][j]
            for r in recs:
                m = r["metrics"]
                arch = r["params"].get("model.arch") or (r.get("config") or {}).get("arch", "?")
                x, y = m[cost] / unit, 100 * m[acc]
                on = r["number"] in front
                ax.scatter(
                    [x],
                    [y],
                    s=46 if on else 26,
                    zorder=3,
                    facecolors=color[arch] if r.get("feasible", True) else "none",
                    edgecolors="black" if on else color[arch],
                    linewidths=1.3 if on else 0.8,
                )
                ax.annotate(
                    str(r["number"]), (x, y), xytext=(3, 3), textcoords="offset points", fontsize=7, color="#333"
                )
                if r["number"] == chosen:
                    ax.scatter(
                        [x],
                        [y],
                        marker="*",
                        s=260,
                        facecolors="none",
                        edgecolors="crimson",
                        linewidths=1.4,
                        zorder=4,
                        label="chosen",
                    )
            pts = sorted((r["metrics"][cost] / unit, 100 * r["metrics"][acc]) for r in recs if r["number"] in front)
            # the front in this plane: best accuracy reached at each cost
            stair, best = [], -1.0
            for x, y in pts:
                if y > best:
                    stair.append((x, y))
                    best = y
            if stair:
                ax.step(
                    [p[0] for p in stair],
                    [p[1] for p in stair],
                    where="post",
                    color="black",
                    lw=0.9,
                    alpha=0.6,
                    zorder=2,
                    label="Pareto front",
                )
            for k, (name, m) in enumerate(base.items()):
                if m.get(cost) is not None and m.get(acc) is not None:
                    bx, by = m[cost] / unit, 100 * m[acc]
                    ax.scatter(
                        [bx], [by], marker="D", s=60, color=REF_COLORS[k % len(REF_COLORS)], zorder=5, label=name
                    )
                    ax.annotate(
                        name,
                        (bx, by),
                        xytext=(-4, -11),
                        textcoords="offset points",
                        fontsize=7,
                        ha="right",
                        color=REF_COLORS[k % len(REF_COLORS)],
                    )
            limit = {
                "instructions_per_inference": cons.get("max_instructions"),
                "flash_bytes": cons.get("max_flash"),
            }.get(cost)
            if limit:
                ax.axvline(limit / unit, ls="--", lw=1, color="gray", label="limit")
            if acc == "accuracy_int8_val" and cons.get("min_accuracy") is not None:
                ax.axhline(100 * cons["min_accuracy"], ls="--", lw=1, color="gray")
            if cost == "instructions_per_inference":
                from matplotlib.ticker import FuncFormatter

                ax.set_xscale("log")
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(FuncFormatter(_minor_label))
            ax.set(xlabel=f"{cost_label} ({unit_name})", ylabel=acc_label)
            ax.grid(True, alpha=0.3)
            if i == 0 and j == 0:
                handles = [plt.Line2D([], [], marker="o", ls="", color=color[a], label=a) for a in archs]
                h2, l2 = ax.get_legend_handles_labels()
                seen = {}
                for h, lab in zip(h2, l2):
                    seen.setdefault(lab, h)
                ax.legend(handles + list(seen.values()), archs + list(seen), fontsize=7, loc="lower right")
    return H.figure_png(fig)


def _minor_label(v: float, _pos=None) -> str:
    """Log-axis minor ticks: label 2x and 5x the decade only (the others crowd)."""
    import math

    if v <= 0:
        return ""
    lead = round(v / 10 ** math.floor(math.log10(v)), 6)
    return f"{v:g}" if lead in (2.0, 5.0) else ""


def _row(r: Mapping[str, Any]) -> dict:
    m = r.get("metrics") or {}
    pct = lambda v: None if v is None else round(100 * v, 2)  # noqa: E731
    return {
        "trial": r["number"],
        "model": r.get("label"),
        "params": m.get("parameters"),
        "int8 val %": pct(m.get("accuracy_int8_val")),
        "int8 test %": pct(m.get("accuracy_int8_test")),
        "float test %": pct(m.get("accuracy_float_test")),
        "M instr / inference": None
        if m.get("instructions_per_inference") is None
        else round(m["instructions_per_inference"] / 1e6, 3),
        "flash KB": None if m.get("flash_bytes") is None else round(m["flash_bytes"] / 1024, 1),
        "RAM KB": None if m.get("ram_bytes") is None else round(m["ram_bytes"] / 1024, 1),
        "16-bit tensors": len(m.get("quant_promoted") or []),
        "device agrees %": pct(m.get("device_agreement")),
        "front": "val" * bool(r.get("pareto_val")) + (" test" if r.get("pareto_test") else ""),
        "meets limits": r.get("feasible"),
        "s": (r.get("seconds") or {}).get("total"),
    }


def write_report(path, results: Mapping[str, Any]) -> Path:
    sw = results["sweep"]
    recs = results["trials"]
    ok = [r for r in recs if r.get("status") == "ok"]
    failed = [r for r in recs if r.get("status") != "ok"]
    ch = results.get("chosen") or {}
    sections = []
    if ch.get("trial") is not None:
        art = ch.get("artifact") or {}
        m = ch["metrics"]
        lines = [
            f"Chosen: trial {ch['trial']} ({ch.get('label')}), {ch['why']}.",
            f"int8 accuracy {100 * m['accuracy_int8_val']:.2f}% on the validation subjects, "
            f"{100 * m['accuracy_int8_test']:.2f}% on the test split"
            + (
                f"; {m['instructions_per_inference'] / 1e6:.2f} M instructions per inference"
                if m.get("instructions_per_inference") is not None
                else ""
            )
            + (
                f", {m['flash_bytes'] / 1024:.1f} KB flash, {m['ram_bytes'] / 1024:.1f} KB RAM"
                if m.get("flash_bytes") is not None
                else ""
            )
            + ".",
        ]
        if art.get("device_accuracy") is not None:
            lines.append(
                f"On the emulated {sw['target']}: {100 * art['device_accuracy']:.2f}% over "
                f"{art['device_windows']} test windows, {100 * art['device_agreement']:.2f}% agreement with "
                f"the integer-exact interpreter. Artifact: {art['dir']}"
            )
        elif art.get("error"):
            lines.append(f"Export of the chosen model failed: {art['error']}")
        top = H.banner(None, " ".join(lines))
    else:
        top = H.banner(False, f"No model chosen: {ch.get('why')}")
    vs = []
    for name, v in (results.get("versus_baselines") or {}).items():
        for which in ("test", "validation"):
            t = v[which]
            vs.append(
                {
                    "reference": name,
                    "accuracy on": which,
                    "dominating trials": ", ".join(map(str, t["dominating_trials"])) or "none",
                    "chosen dominates": t["chosen_dominates"],
                    "how": t.get("how", ""),
                }
            )
    png = pareto_png(results)
    sections.append(
        H.section(
            "Pareto fronts",
            H.img(png, "Pareto fronts") if png else H.note("no trial was measured"),
            note_text="Each point is a trial (its number), coloured by architecture; black outline: on the Pareto front "
            "of its row (int8 accuracy vs instructions and flash together); star: chosen; diamonds: reference "
            "models measured the same way; hollow: misses a constraint. The search optimised the validation "
            "subjects (top row); the test split (bottom) is reported, never searched on.",
        )
    )
    if vs:
        sections.append(H.section("Against the reference models", H.table(vs)))
    if ok:
        front = [r for r in ok if r.get("pareto_val")]
        cmd = f"edgeseq export {{dir}}/model.q.esq --target {sw['target']} --out build/model"
        sections.append(
            H.section(
                "Pareto front (validation subjects)",
                H.table([_row(r) for r in front]),
                note_text=f"Any of these can be exported as it is: {cmd} with {{dir}} = trials/NNNN of this sweep.",
            )
        )
        sections.append(
            H.section(
                "All measured trials", H.table([_row(r) for r in ok], highlight=[bool(r.get("pareto_val")) for r in ok])
            )
        )
    if failed:
        sections.append(
            H.section(
                "Failed trials",
                H.table(
                    [
                        {
                            "trial": r["number"],
                            "model": r.get("label"),
                            "stage": r.get("stage"),
                            "error": r.get("error"),
                        }
                        for r in failed
                    ]
                ),
                note_text="A failed trial is recorded with its error and does not stop the sweep.",
            )
        )
    refs = [
        {
            "reference": k,
            **{kk: vv for kk, vv in _row({"number": "-", **v}).items() if kk not in ("trial", "front", "meets limits")},
        }
        for k, v in (results.get("baselines") or {}).items()
        if v.get("status") == "ok"
    ]
    if refs:
        sections.append(H.section("Reference models (measured like a trial)", H.table(refs)))
    sess = [
        {
            "session": s.get("index"),
            "started": s.get("started"),
            "engine": (s.get("engine") or {}).get("engine"),
            "workers": (s.get("engine") or {}).get("workers"),
            "address": (s.get("engine") or {}).get("address"),
            "trials run": s.get("trials_run"),
            "wall s": s.get("seconds"),
            "status": s.get("status"),
        }
        for s in results.get("sessions") or []
    ]
    sections.append(
        H.section(
            "The sweep",
            H.kv_table(
                {
                    "task": sw["task"],
                    "target": sw["target"],
                    "trials": sw["trials"],
                    "seed": sw["seed"],
                    "batch": sw["batch"],
                    "random trials first": sw["startup"],
                    "objectives": ", ".join(f"{m} ({d})" for m, d in sw["objectives"]),
                    "constraints": ", ".join(f"{k} {v}" for k, v in sw["constraints"].items()) or "none",
                    "data": sw["data"],
                }
            ),
            H.table(sess, caption="sessions (wall time per run of the sweep)") if sess else "",
            f"<pre>{H.esc(_space_text(sw['space']))}</pre>",
        )
    )
    doc = H.page(
        f"edgeseq sweep: {sw['task']} on {sw['target']}",
        sections,
        top=top,
        subtitle=f"{results['counts']['trials']} trials, {results['counts']['ok']} measured, "
        f"{results['counts']['failed']} failed",
    )
    return H.write_html(path, doc)


def _space_text(space: Mapping[str, Any]) -> str:
    import json

    return "search space:\n" + json.dumps(space, indent=1)
