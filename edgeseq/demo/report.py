"""HTML reports of the demos (self-contained: inline CSS, embedded plots)."""

from __future__ import annotations

from typing import Optional

from ..reports import html as H


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _cost_rows(cost: dict) -> list[tuple[str, str]]:
    rows = []
    ins = cost.get("instructions") or {}
    if ins:
        rows += [
            ("instructions per inference (128 steps)", f"{ins['per_inference']:,.0f}"),
            ("instructions per step (one 50 Hz sample)", f"{ins['per_step']:,.0f}"),
            ("instructions per sequence (reset + readout)", f"{ins['per_sequence_fixed']:,.0f}"),
            ("method", ins.get("method", "")),
        ]
    lat = cost.get("latency") or {}
    if lat:
        rows += [
            ("latency per inference (native)", f"{1e6 * lat['per_inference_s']:.1f} us"),
            ("latency per step (native)", f"{1e6 * lat['per_step_s']:.2f} us"),
        ]
    return rows


def _kb(v) -> str:
    return "-" if v is None else f"{v / 1024:.1f} KB"


def _minsn(v) -> str:
    return "-" if v is None else f"{v / 1e6:.2f} M"


def _side_by_side(r: dict) -> str:
    """The demo's model and the alternatives on the same windows: accuracy at each stage, device cost."""
    rows = r["models"]
    formats = {k: _pct for k in ("float_accuracy", "int8_accuracy", "device_accuracy", "decision_agreement")}
    formats.update(
        {
            "cortex_m4_flash_bytes": _kb,
            "cortex_m4_ram_bytes": _kb,
            "weights_bytes": _kb,
            "cortex_m4_instructions_per_inference": _minsn,
            "target_instructions_per_inference": _minsn,
            "parameters": lambda v: f"{v:,}",
        }
    )
    columns = [
        "model",
        "parameters",
        "float_accuracy",
        "int8_accuracy",
        "device_accuracy",
        "decision_agreement",
        "cortex_m4_instructions_per_inference",
        "cortex_m4_flash_bytes",
        "cortex_m4_ram_bytes",
        "weights_bytes",
    ]
    headers = [
        "model",
        "parameters",
        "float",
        "int8",
        f"on device ({r['target']})",
        "device = reference",
        "Cortex-M4 instructions / inference",
        "Cortex-M4 flash",
        "Cortex-M4 RAM",
        "weights",
    ]
    if any(x.get("target_instructions_per_inference") for x in rows) and r["target"] != "cortex-m4":
        columns.insert(7, "target_instructions_per_inference")
        headers.insert(7, f"{r['target']} instructions / inference")
    parts = [
        H.table(
            rows, columns=columns, headers=headers, formats=formats, highlight=[x["model"] == r["model"] for x in rows]
        )
    ]
    pts = [(x["model"], x["cortex_m4_instructions_per_inference"], x["device_accuracy"]) for x in rows]
    pts = [p for p in pts if p[1] is not None and p[2] is not None]
    if pts:
        parts.append(H.img(tradeoff_png(pts), "accuracy vs instructions"))
    parts.append(
        H.note(
            f"all models: the same {r['windows']} windows, int8 plan '{r['quantization']}', streamed sample "
            "by sample; instructions per 128-sample inference counted under qemu (esq_reset + 128 esq_step); "
            "flash = text + rodata + data, RAM = data + bss + stack of the whole firmware"
        )
    )
    return H.section("Models side by side", *parts)


def tradeoff_png(points, budget: Optional[tuple[float, float]] = None) -> bytes:
    """On-device accuracy against Cortex-M4 instructions per inference, one labelled point per
    ``(name, instructions, accuracy)``; ``budget`` = (max instructions, min accuracy) draws both limits as dotted lines."""
    plt = H._plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for k, (name, ins, acc) in enumerate(points):
        ax.scatter([ins / 1e6], [100 * acc], s=40, color=f"C{k}")
        ax.annotate(name, (ins / 1e6, 100 * acc), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.margins(x=0.25, y=0.2)
    ax.set_xlim(left=0)
    if budget is not None:
        ins_max, acc_min = budget
        ax.axvline(ins_max / 1e6, color="gray", ls=":", lw=1)
        ax.axhline(100 * acc_min, color="gray", ls=":", lw=1)
    ax.set(xlabel="Cortex-M4 instructions per inference (millions)", ylabel="on-device accuracy (%)")
    ax.set_title("accuracy vs cost per 128-sample inference", fontsize=11)
    ax.grid(True, alpha=0.3)
    return H.figure_png(fig)


def har_report(r: dict, path) -> None:
    acc = r["accuracy"]
    drop = r.get("drop_points")
    ok = None if drop is None else drop <= 0.5
    top = (
        H.banner(
            ok,
            f"on-device accuracy {_pct(acc['device'])} vs float {_pct(acc['float'])}"
            + ("" if drop is None else f" ({drop:+.2f} points; budget 0.5)"),
        )
        if ok is not None
        else H.banner(None, "unlabelled recording: no accuracy, see the decisions below")
    )
    sections = []
    sections.append(
        H.section(
            "Run",
            H.kv_table(
                {
                    "model": f"{r['model']} ({r['model_source']})",
                    "data": r["data"],
                    "target": r["target"],
                    "device runner": r["runner"],
                    "quantization": r["quantization"],
                    "windows streamed": r["windows"],
                    "streaming": "each window: esq_reset, then one esq_step per 50 Hz sample (128 steps), decision every 64 samples",
                    "artifact": r["artifact"],
                }
            ),
        )
    )
    acc_rows = [{"model": "float (float64 reference interpreter)", "accuracy": _pct(acc["float"])}]
    if acc.get("int8") is not None:
        acc_rows.append(
            {"model": f"int8 plan '{r['quantization']}' (integer-exact interpreter)", "accuracy": _pct(acc["int8"])}
        )
    acc_rows.append({"model": f"on device ({r['runner']})", "accuracy": _pct(acc["device"])})
    dv = r["device_vs_reference"]
    if len(r.get("models") or []) > 1:
        sections.append(_side_by_side(r))
    sections.append(
        H.section(
            "Accuracy",
            H.table(acc_rows),
            H.note(
                f"device decisions equal to the {dv['reference']} on {100 * dv['decision_agreement']:.2f}% of windows; "
                f"max |logit difference| {dv['max_abs_logit_difference']:.3g}"
            ),
        )
    )
    if any(sum(row) for row in r["confusion_device"]):
        pcs = r["per_class"]
        sections.append(
            H.section(
                "Per class (on device)",
                H.img(
                    H.confusion_png(r["confusion_device"], r["labels"], title="confusion matrix (on device)"),
                    "confusion",
                ),
                H.img(
                    H.bar_png(
                        [p["class"] for p in pcs],
                        [0 if p["accuracy"] is None else 100 * p["accuracy"] for p in pcs],
                        title="per-class accuracy (%)",
                        ylabel="%",
                    ),
                    "per-class accuracy",
                ),
                H.table(pcs, formats={"accuracy": _pct}),
            )
        )
    cost_rows = _cost_rows(r.get("cost") or {})
    if cost_rows:
        sections.append(H.section("Cost per step", H.table(cost_rows, columns=["measure", "value"])))
    size_rows = [
        ("artifact directory", f"{r['sizes']['artifact_bytes']:,} bytes"),
        ("device executable", f"{r['sizes']['device_binary_bytes']:,} bytes"),
        (
            "model weights in the build",
            f"{r['sizes']['weights_bytes']:,} bytes" if r["sizes"].get("weights_bytes") else "-",
        ),
        ("float32 weights would be", f"{r['sizes']['float32_weight_bytes']:,} bytes"),
    ]
    mcu = r.get("mcu_sizes")
    if mcu:
        size_rows += [
            (f"{mcu['target']} flash (text + rodata + data)", f"{mcu['flash_bytes']:,} bytes"),
            (f"{mcu['target']} RAM (data + bss + stack)", f"{mcu['ram_bytes']:,} bytes"),
        ]
        if mcu.get("instructions_per_inference"):
            size_rows.append(
                (f"{mcu['target']} instructions per inference", f"{mcu['instructions_per_inference']:,.0f}")
            )
    sections.append(H.section("Sizes", H.table(size_rows, columns=["item", "size"])))
    if r.get("plan"):
        sections.append(H.section("Quantization plan", f"<pre>{H.esc(r['plan'])}</pre>"))
    sections.append(H.section("Timings", H.kv_table({k: f"{v} s" for k, v in r["timings"].items()})))
    H.write_html(
        path,
        H.page(
            "edgeseq demo: human activity recognition on ARM",
            sections,
            subtitle=f"{r['model']} -> {r['target']}",
            top=top,
        ),
    )
