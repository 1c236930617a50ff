"""HTML report of ``edgeseq demo kws`` (self-contained: inline CSS, embedded plots), built from the
``demo.json`` result alone."""

from __future__ import annotations

import math
from typing import Optional

from ..reports import html as H

OUTCOME_COLOURS = {
    "hit": "#2a9d4b",
    "wrong keyword": "#d62728",
    "unknown word": "#e377c2",
    "background": "#ff7f0e",
    "duplicate": "#8c564b",
    None: "#1f77b4",
}


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _rows_of(seconds: float) -> tuple[int, float]:
    """Rows of the timeline plots and the seconds each row shows (30 s rows, at most 8 rows)."""
    per = 30.0 if seconds <= 240 else seconds / 8
    return max(1, math.ceil(seconds / per - 1e-9)), per


def _spans(ax, events, keywords, lo, hi, labels: bool = True) -> None:
    for e in events or []:
        a, b, lab = e["start_s"], e["end_s"], e["label"]
        if b < lo or a > hi:
            continue
        kw = lab in keywords
        ax.axvspan(a, b, color="#9ecae1" if kw else "#d9d9d9", alpha=0.6 if kw else 0.5, lw=0)
        if labels:
            ax.text(
                0.5 * (a + b),
                0.98,
                lab if kw else "unk",
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="top",
                fontsize=7,
                color="#08519c" if kw else "#636363",
            )


def timeline_png(r: dict) -> bytes:
    """Waveform envelope with the ground-truth word spans (keywords blue, other words grey) and the
    detections (green: hit, other colours: false accepts by kind)."""
    import numpy as np

    plt = H._plt()
    seconds = r["stream"]["seconds"]
    n_rows, per = _rows_of(seconds)
    env = np.asarray(r["envelope"]["peak"], dtype=np.float64)
    te = (np.arange(len(env)) + 0.5) * r["envelope"]["hop_s"]
    top = max(float(env.max()) if env.size else 1.0, 1e-3)
    fig, axes = plt.subplots(n_rows, 1, figsize=(10, 1.7 * n_rows + 0.6), squeeze=False)
    for k, ax in enumerate(axes[:, 0]):
        lo, hi = k * per, min(seconds, (k + 1) * per)
        m = (te >= lo) & (te <= hi)
        _spans(ax, r.get("events"), r["keywords"], lo, hi)
        ax.fill_between(te[m], -env[m], env[m], color="#555555", lw=0)
        for d in r["detections"]:
            if lo <= d["time_s"] <= hi:
                c = OUTCOME_COLOURS.get(d.get("outcome"), "#1f77b4")
                ax.axvline(d["time_s"], color=c, lw=1.4)
                ax.text(
                    d["time_s"],
                    -0.97 * top * 1.15,
                    d["keyword"],
                    color=c,
                    fontsize=7,
                    ha="center",
                    va="bottom",
                    fontweight="bold",
                )
        ax.set_xlim(lo, lo + per)
        ax.set_ylim(-top * 1.15, top * 1.15)
        ax.set_yticks([])
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("time (s)", fontsize=8)
    axes[0, 0].set_title(
        "stream: waveform, spoken words (blue: keyword, grey: other word) and detections "
        "(green: hit, red/orange/pink/brown: false accept)",
        fontsize=9,
    )
    return H.figure_png(fig)


def posterior_png(r: dict) -> bytes:
    """Smoothed keyword posteriors over time (one line per keyword) with the threshold."""
    import numpy as np

    plt = H._plt()
    seconds = r["stream"]["seconds"]
    n_rows, per = _rows_of(seconds)
    post = r["posteriors"]
    t = np.asarray(post["time_s"], dtype=np.float64)
    sm = np.asarray(post["smoothed"], dtype=np.float64).reshape(len(t), -1)
    labels, keywords = r["labels"], r["keywords"]
    thr = r["detection"]["threshold"]
    fig, axes = plt.subplots(n_rows, 1, figsize=(10, 1.7 * n_rows + 0.9), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for k, ax in enumerate(axes[:, 0]):
        lo, hi = k * per, min(seconds, (k + 1) * per)
        m = (t >= lo - 1) & (t <= hi + 1)
        _spans(ax, r.get("events"), keywords, lo, hi)
        for j, name in enumerate(keywords):
            c = labels.index(name)
            ax.plot(t[m], sm[m, c], color=cmap(j % 10), lw=1.2, label=name if k == 0 else None)
        ax.axhline(thr, color="crimson", ls="--", lw=0.9, label="threshold" if k == 0 else None)
        ax.set_xlim(lo, lo + per)
        ax.set_ylim(0, 1.08)
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("time (s)", fontsize=8)
    unit = "frames" if r["streaming"].get("mode") == "continuous" else "windows"
    pooled = post.get("pooled", 1)
    axes[0, 0].set_title(
        f"smoothed keyword posteriors on the device (mean of {r['detection']['smooth']} {unit}"
        + (f"; maximum over every {pooled} decisions" if pooled > 1 else "")
        + ")",
        fontsize=9,
    )
    axes[-1, 0].legend(
        *axes[0, 0].get_legend_handles_labels(),
        loc="upper center",
        bbox_to_anchor=(0.5, -0.32),
        ncol=len(keywords) + 1,
        fontsize=7,
        frameon=False,
    )
    return H.figure_png(fig)


def _cost_rows(r: dict) -> list[tuple[str, str]]:
    rows = []
    st = r["streaming"]
    frames = st["window_frames"]
    frame_ms = 1000.0 / st.get("frame_rate", 100.0)
    slots = st.get("mode", "slots") == "slots"
    for name, cost in (("cortex-m4", r.get("mcu_cost")), (r["target"], r.get("cost"))):
        ins = (cost or {}).get("instructions") or {}
        if ins and not any(n.startswith(f"{name}:") for n, _ in rows):
            rows.append(
                (f"{name}: instructions per frame (one esq_step, {frame_ms:g} ms of audio)", f"{ins['per_step']:,.0f}")
            )
            if slots:
                rows += [
                    (
                        f"{name}: instructions per inference ({frames} frames + reset + readout)",
                        f"{ins['per_inference']:,.0f}",
                    ),
                    (
                        f"{name}: instructions per window, fixed part (reset + readout)",
                        f"{ins['per_sequence_fixed']:,.0f}",
                    ),
                ]
    b = r.get("budget")
    if b:
        rows += [
            ("cortex-m4: instructions per second of audio", f"{b['instructions_per_second_of_audio']:,.0f}"),
            (
                "cortex-m4: clock needed at one instruction per cycle (a lower bound)",
                f"{b['mhz_at_one_instruction_per_cycle']:.1f} MHz",
            ),
            (
                "cortex-m4: share of an 80 MHz core at one instruction per cycle",
                f"{100 * b['instructions_per_second_of_audio'] / 80e6:.1f}%",
            ),
        ]
    lat = (r.get("cost") or {}).get("latency") or {}
    if lat:
        rows += [
            (f"{r['target']}: latency per inference (native)", f"{1e6 * lat['per_inference_s']:.1f} us"),
            (f"{r['target']}: latency per frame (native)", f"{1e6 * lat['per_step_s']:.2f} us"),
        ]
    ins = (r.get("mcu_cost") or r.get("cost") or {}).get("instructions") or {}
    if ins.get("method"):
        rows.append(("method", ins["method"]))
    return rows


def _what(r: dict) -> str:
    s = r["stream"]
    if s.get("input"):
        return "your recording"
    return "real speech of held-out recordings" if r.get("data") == "digits" else "held-out synthetic speech"


def kws_report(r: dict, path) -> None:
    m = r.get("metrics")
    dv = r["device_vs_reference"]
    s = r["stream"]
    if m:
        top = H.banner(
            None,
            f"{m['hits']} of {m['keywords_spoken']} keywords detected ({_pct(m['hit_rate'])}), "
            f"{m['misses']} missed, {m['false_accepts']} false accepts "
            f"({m['false_accepts_per_hour']:.0f} per hour) over {s['seconds']:.0f} s of "
            f"{_what(r)} on {r['runner']}",
        )
    else:
        top = H.banner(
            None,
            f"{len(r['detections'])} detections over {s['seconds']:.0f} s of an unlabelled "
            "recording (pass --truth with word labels to score them)",
        )
    top += H.banner(
        bool(dv["detections_identical"]),
        f"device detections {'identical to' if dv['detections_identical'] else 'differ from'} those of "
        f"the {dv['reference']} ({dv['reference_detections']}); decisions agree on "
        f"{100 * dv['decision_agreement']:.2f}%",
    )
    st = r["streaming"]
    det = r["detection"]
    sections = []
    run = {
        "model": f"{r['model']} ({r['model_source']})",
        "audio": r["source"],
        "target": r["target"],
        "device runner": r["runner"],
        "quantization": r["quantization"],
    }
    if r.get("held_out_voices"):
        run["held-out voices"] = r["held_out_voices"]
    f = st["features"]
    frame_ms = 1000.0 * f["hop_length"] / f["sample_rate"]
    if st.get("mode") == "continuous":
        streaming = (
            f"one continuous state, never reset: every {frame_ms:g} ms frame goes through one esq_step and "
            f"the output is read after every frame ({st['decisions']} decisions); the audio goes to the "
            f"device {st['frames_per_device_call']} frames per call with the state carried between calls"
        )
    else:
        streaming = (
            f"a decision every {1000 * st['hop_s']:.0f} ms on the last {st['window_frames']} frames "
            f"({st['window_s']:.3g} s of audio): the device keeps {st['slots']} staggered state slots, each "
            f"reset and then stepped once per {frame_ms:g} ms frame (esq_reset + {st['window_frames']} x "
            f"esq_step) before its readout; here each of the {st['windows']} windows is streamed frame by "
            f"frame from a reset state, {st['windows_per_device_call']} windows per device call"
        )
    run.update(
        {
            "features": f"log-mel, {f['n_mels']} bands at {f['sample_rate'] / 1000:g} kHz, {f['win_length']}-sample "
            f"window, {f['hop_length']}-sample hop; computed frame by frame as the audio arrives "
            f"({st['samples_per_push']} samples per push), equal to batch features: "
            f"{'yes' if st['streamed_equals_batch'] else 'NO'}",
            "streaming": streaming,
            "detection rule": f"{det['rule']}; smooth {det['smooth']}, threshold {det['threshold']}, refractory "
            f"{det['refractory_s']} s",
            "matching": f"a detection is a hit when the same keyword was spoken within its span +- "
            f"{det['tolerance_s']} s and not already detected",
            "artifact": r["artifact"],
        }
    )
    if s.get("wav"):
        run["audio file"] = f"{s['wav']} (next to this report)"
    sections.append(H.section("Run", H.kv_table(run)))
    if m:
        lat = m.get("decision_latency_s") or {}
        tot = {
            "keywords spoken": m["keywords_spoken"],
            "other words spoken": m["unknown_words_spoken"],
            "detections": m["detections"],
            "hits": m["hits"],
            "misses (false rejects)": m["misses"],
            "false accepts": m["false_accepts"],
            "false accepts per hour": f"{m['false_accepts_per_hour']:.1f}",
            "hit rate": _pct(m["hit_rate"]),
            "false reject rate": _pct(m["false_reject_rate"]),
            "precision": _pct(m["precision"]),
            "false accepts by kind": ", ".join(f"{k} {v}" for k, v in m["false_accept_kinds"].items()),
            "decision latency (median / max)": "-"
            if lat.get("median") is None
            else f"{lat['median']:.2f} s / {lat['max']:.2f} s after the word ends",
        }
        for key, text in (
            ("integer_reference", "same rule on the integer-exact reference"),
            ("float_reference", "same rule on the float model"),
        ):
            fr = m.get(key)
            if fr:
                tot[text] = (
                    f"{fr['hits']} hits, {fr['misses']} misses, {fr['false_accepts']} false accepts "
                    f"({fr['false_accepts_per_hour']:.0f} per hour)"
                )
        pk = m["per_keyword"]
        sections.append(
            H.section(
                "Detection results",
                H.kv_table(tot),
                H.note(
                    f"false accepts per hour are extrapolated from {s['seconds']:.0f} s of audio: one false accept "
                    f"counts {3600 / s['seconds']:.0f} per hour"
                ),
                H.img(
                    H.bar_png(
                        [p["keyword"] for p in pk],
                        {
                            "hits": [p["hits"] for p in pk],
                            "misses": [p["misses"] for p in pk],
                            "false accepts": [p["false_accepts"] for p in pk],
                        },
                        title="per keyword",
                        ylabel="count",
                    ),
                    "per keyword",
                ),
                H.table(
                    pk,
                    columns=["keyword", "spoken", "hits", "misses", "false_accepts", "hit_rate"],
                    headers=["keyword", "spoken", "hits", "misses", "false accepts", "hit rate"],
                    formats={"hit_rate": _pct},
                ),
            )
        )
    sections.append(H.section("Timeline", H.img(timeline_png(r), "timeline")))
    sections.append(H.section("Posteriors over time", H.img(posterior_png(r), "posteriors")))
    if r["detections"]:
        cols = ["time_s", "decision_s", "keyword", "confidence"] + (["outcome", "truth"] if m else [])
        sections.append(
            H.section(
                "Detections",
                H.table(
                    r["detections"],
                    columns=cols,
                    headers=["time (s)", "reported at (s)", "keyword", "confidence", "outcome", "spoken"][: len(cols)],
                    highlight=[d.get("outcome") not in (None, "hit") for d in r["detections"]],
                ),
            )
        )
    if m and m["missed_events"]:
        ev = r["events"]
        sections.append(
            H.section(
                "Missed keywords",
                H.table(
                    [
                        {"start (s)": ev[j]["start_s"], "end (s)": ev[j]["end_s"], "keyword": ev[j]["label"]}
                        for j in m["missed_events"]
                    ]
                ),
            )
        )
    sections.append(
        H.section(
            "Device vs reference",
            H.kv_table(
                {
                    "reference": dv["reference"],
                    "decisions equal": _pct(dv["decision_agreement"]),
                    "max |logit difference|": H.fmt(dv["max_abs_logit_difference"]),
                    "detections identical": "yes" if dv["detections_identical"] else "no",
                    "reference detections": dv["reference_detections"],
                }
            ),
        )
    )
    cost_rows = _cost_rows(r)
    if cost_rows:
        sections.append(
            H.section(
                "Cost",
                H.table(cost_rows, columns=["measure", "value"]),
                H.note((r.get("budget") or {}).get("note", "")),
            )
        )
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
    sections.append(H.section("Sizes", H.table(size_rows, columns=["item", "size"])))
    if r.get("plan"):
        sections.append(H.section("Quantization plan", f"<pre>{H.esc(r['plan'])}</pre>"))
    sections.append(H.section("Timings", H.kv_table({k: f"{v} s" for k, v in r["timings"].items()})))
    where = {"cortex-m4": "a Cortex-M4", "arm": "ARM (aarch64)", "x86": "x86"}.get(r["target"], r["target"])
    H.write_html(
        path,
        H.page(
            f"edgeseq demo: keyword spotting on {where}",
            sections,
            subtitle=f"{r['model']} -> {r['target']}, {s['seconds']:.0f} s stream",
            top=top,
        ),
    )
