"""``edgeseq demo har``: human-activity recognition on an (emulated) ARM device, end to end.

1. the shipped HAR model (or ``--model``), float;
2. the outlier-aware int8 plan of :mod:`edgeseq.quant`, calibrated on training subjects;
3. ``edgeseq.export(..., target="arm")``: a zero-dependency aarch64 executable (+ TVM library);
4. held-out subjects' raw IMU windows (g, rad/s) streamed sample by sample through the device's
   streaming step API (``esq_reset`` + one ``esq_step`` per 50 Hz sample) under qemu-aarch64, with a
   live terminal view;
5. a report: confusion matrix, per-class accuracy, float vs int8 vs on-device accuracy,
   instructions per step, flash/RAM and artifact sizes.

``--input FILE.csv``: a user's own recording (see :func:`read_imu_csv` for the format).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import ConfigError, DatasetError

OWNER = "edgeseq demo har"  # marks its --out as this demo's own (replaced without --force)
WINDOW = 128
HOP = 64
SAMPLE_RATE = 50.0
CHANNELS = ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")
TARGETS = ("x86", "arm", "cortex-m4")
RUNNERS = {"x86": "native x86", "arm": "qemu-aarch64", "cortex-m4": "qemu-system-arm (mps2-an386)"}
# the model `make demo` streams, and the shipped alternatives measured beside it
DEFAULT_MODEL = "har_gru"
ALTERNATIVES = ("har_lmu", "har_l2mu")


@dataclass
class HarDemoConfig:
    model: str = DEFAULT_MODEL
    compare: tuple[str, ...] = ALTERNATIVES  # measured after `model` on the same windows, reported side by side
    target: str = "arm"
    out: str = "runs/demo-har"
    input: Optional[str] = None
    live: bool = True
    quant: str = "edgeseq"  # "edgeseq" (outlier-aware int8), "naive", or "float"
    calib: int = 512
    limit: Optional[int] = None  # stream only this many windows (evenly spread), for quick runs
    chunk: int = 64  # windows per device call (the view refreshes after each)
    force: bool = False
    seed: int = 0


# ------------------------------------------------------------------------------------------ input


def read_imu_csv(path, *, labels: tuple[str, ...] = ()) -> dict:
    """Read a raw IMU recording.

    Format: a header row, then one row per sample at 50 Hz. Required columns (any order):
    ``acc_x, acc_y, acc_z`` (accelerometer, g) and ``gyro_x, gyro_y, gyro_z`` (gyroscope, rad/s).
    Optional: ``time`` (seconds; used to check the 50 Hz sample rate) and ``label`` (activity name
    or 0-based class id; enables accuracy). Returns {"signals" (N, 6) float32, "labels" (N,) int or
    None, "sample_rate"}."""
    from ..util.safeio import read_csv_columns

    p = Path(path)
    names = [s.lower() for s in labels]

    def label_id(v: str, line: int) -> int:
        if v == "":
            return -1  # unlabelled sample
        if v.lstrip("+-").isdigit():
            k = int(v)
            if not 0 <= k < (len(names) or k + 1):
                raise DatasetError(
                    f"line {line}: label {k} is not a class id of the model (0..{len(names) - 1})", where=str(p)
                )
            return k
        if v.lower() in names:
            return names.index(v.lower())
        raise DatasetError(
            f"line {line}: unknown label '{v[:40]}'; expected a class id or one of {', '.join(labels)}", where=str(p)
        )

    cols, header = read_csv_columns(
        p,
        DatasetError,
        required=CHANNELS,
        optional=("time", "label"),
        numeric=CHANNELS + ("time",),
        convert={"label": label_id},
        what="CSV recording",
        hint="columns acc_x,acc_y,acc_z (g), gyro_x,gyro_y,gyro_z (rad/s), optional time (s), label",
    )
    n = len(cols[CHANNELS[0]])
    if n < WINDOW:
        raise DatasetError(
            f"the recording has {n} samples; at least {WINDOW} (2.56 s at 50 Hz) are needed", where=str(p)
        )
    sig = np.stack([cols[c] for c in CHANNELS], axis=1).astype(np.float32)
    rate = SAMPLE_RATE
    if "time" in cols:
        if not np.all(np.isfinite(cols["time"])):  # never allowed: the sample-rate check depends on it
            raise DatasetError("the time column holds NaN or Inf", where=str(p))
        dt = np.diff(cols["time"])
        if np.any(dt <= 0):
            i = int(np.argmax(dt <= 0))
            raise DatasetError(f"the time column is not strictly increasing (sample {i + 1})", where=str(p))
        rate = float(1.0 / np.median(dt))
        if abs(rate - SAMPLE_RATE) > 0.02 * SAMPLE_RATE:
            raise DatasetError(
                f"sample rate is {rate:.1f} Hz; the HAR model expects {SAMPLE_RATE:.0f} Hz",
                where=str(p),
                hint="resample the recording to 50 Hz (e.g. scipy.signal.resample_poly)",
            )
    return {"signals": sig, "labels": cols.get("label"), "sample_rate": rate}


def windows(signals: np.ndarray, labels: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Windows of 128 samples every 64 (a decision every 1.28 s); label = the window's majority label
    (-1 when unlabelled)."""
    starts = np.arange(0, len(signals) - WINDOW + 1, HOP)
    idx = starts[:, None] + np.arange(WINDOW)[None, :]
    x = signals[idx].astype(np.float32)
    if labels is None:
        return x, np.full(len(starts), -1, np.int64)
    y = []
    for w in labels[idx]:
        v, c = np.unique(w[w >= 0], return_counts=True)
        y.append(int(v[np.argmax(c)]) if len(v) else -1)
    return x, np.array(y, np.int64)


# ----------------------------------------------------------------------------------------- helpers


def _batched(fn, x: np.ndarray, size: int = 512) -> np.ndarray:
    return np.concatenate([np.asarray(fn(x[i : i + size])) for i in range(0, len(x), size)], axis=0)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _accuracy(pred: np.ndarray, y: np.ndarray) -> Optional[float]:
    m = y >= 0
    return float((pred[m] == y[m]).mean()) if m.any() else None


def _confusion(pred, y, n) -> list[list[int]]:
    cm = np.zeros((n, n), dtype=np.int64)
    for p, t in zip(pred, y):
        if t >= 0:
            cm[t, p] += 1
    return cm.tolist()


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------- demo


def run_har_demo(cfg: HarDemoConfig, stream=None) -> dict:
    """Run the demo; writes ``demo.json`` and ``report.html`` (and the artifacts) under ``cfg.out``.

    The chosen model is streamed with the live view and reported in full; every model of
    ``cfg.compare`` then runs the same windows through the same steps (own int8 plan, own artifact under
    ``compare/<name>``), and the report sets them side by side. The whole output is staged and moved into
    place when the demo finishes (an interrupted or killed demo leaves the previous one intact); a previous
    output of this demo is replaced without ``force``."""
    from ..util.fs import output_dir

    with output_dir(cfg.out, cfg.force, owner=OWNER) as out:
        return _run_har_demo(cfg, stream, out)


def _run_har_demo(cfg: HarDemoConfig, stream, out: Path) -> dict:
    from ..data import load_dataset
    from ..models import load_model
    from ..util.fs import atomic_write_json

    stream = stream or sys.stderr
    say = lambda m: print(m, file=stream, flush=True)
    if cfg.target not in TARGETS:
        raise ConfigError(f"unknown demo target '{cfg.target}'; choose one of: {', '.join(TARGETS)}")
    if cfg.quant not in ("edgeseq", "naive", "float"):
        raise ConfigError(f"--quant must be edgeseq, naive or float, got '{cfg.quant}'")
    _check_toolchains(cfg.target)
    t_start = time.perf_counter()

    lm = _load_har_model(load_model, cfg.model)
    others = [_load_har_model(load_model, name) for name in dict.fromkeys(cfg.compare) if name != cfg.model]
    labels = _labels(lm)
    for o in others:
        if _labels(o) != labels:
            raise ConfigError(
                f"model '{o.name}' predicts {_labels(o)}; '{lm.name}' predicts {labels}: a side-by-side "
                "comparison needs the same classes"
            )

    t = time.perf_counter()
    if cfg.input:
        rec = read_imu_csv(cfg.input, labels=tuple(labels))
        x, y = windows(rec["signals"], rec["labels"])
        groups = np.zeros(len(x), np.int64)
        source = f"{cfg.input} ({len(rec['signals'])} samples at {rec['sample_rate']:.1f} Hz)"
    else:
        ds = load_dataset("har", "test", classes=len(labels))
        x, y, groups = ds.x, ds.y, ds.groups
        source = f"UCI HAPT held-out subjects {sorted(set(int(g) for g in groups))} ({len(x)} windows)"
    if cfg.limit and cfg.limit < len(x):
        keep = np.linspace(0, len(x) - 1, cfg.limit).round().astype(int)
        x, y, groups = x[keep], y[keep], groups[keep]
    say(f"data    {source}; streaming {len(x)} windows of {WINDOW} samples")
    data_s = time.perf_counter() - t

    main = _measure(
        lm, x, y, groups, labels, cfg, out / "artifact", Path(cfg.out) / "artifact", stream, say, live=cfg.live
    )
    main["timings"] = {"data_s": data_s, **main["timings"]}
    compared = []
    for o in others:
        say(f"compare {o.name}: the same {len(x)} windows, plan '{cfg.quant}', {cfg.target}")
        r = _measure(
            o,
            x,
            y,
            groups,
            labels,
            cfg,
            out / "compare" / o.name,
            Path(cfg.out) / "compare" / o.name,
            stream,
            lambda m: say("  " + m),
            live=False,
        )
        compared.append(r)
    timings = {
        **main["timings"],
        "compare_s": sum(r["timings"]["total_s"] for r in compared),
        "total_s": time.perf_counter() - t_start,
    }

    runner = main["runner"]
    result = {
        "demo": "har",
        "model": lm.name,
        "model_source": lm.source,
        "target": cfg.target,
        "runner": runner,
        "quantization": cfg.quant,
        "data": source,
        "windows": int(len(x)),
        "labels": labels,
        **{
            k: main[k]
            for k in (
                "accuracy",
                "device_vs_reference",
                "drop_points",
                "confusion_device",
                "per_class",
                "cost",
                "sizes",
                "mcu_sizes",
                "plan",
            )
        },
        "models": [_side_by_side(r) for r in (main, *compared)],
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "config": asdict(cfg),
        "artifact": str(Path(cfg.out) / "artifact"),
    }
    if compared:
        say("side by side (" + cfg.target + ", plan '" + cfg.quant + "'):")
        for line in _side_by_side_lines(result["models"]):
            say("  " + line)
    atomic_write_json(out / "demo.json", result)
    from .report import har_report

    har_report(result, out / "report.html")
    say(f"report  {Path(cfg.out) / 'report.html'}  (total {timings['total_s']:.0f} s)")
    return result


def _load_har_model(load_model, spec: str):
    lm = load_model(spec)
    if lm.graph.in_features != len(CHANNELS):
        raise ConfigError(
            f"model '{spec}' takes {lm.graph.in_features} input features; the HAR demo streams 6 (acc_x..gyro_z)"
        )
    return lm


def _labels(lm) -> list[str]:
    return list(lm.labels) or [f"class {i}" for i in range(lm.graph.output_types[0].features)]


def _measure(
    lm, x, y, groups, labels, cfg: HarDemoConfig, art_dir: Path, shown_dir: Path, stream, say, live: bool
) -> dict:
    """One model through the whole demo: float reference, int8 plan, export, the windows streamed
    through the device, instructions and sizes (and the Cortex-M4 build's). ``art_dir``: where the
    artifact is built (inside the staged output); ``shown_dir``: where it will be once the demo is done."""
    from ..export import export as export_artifact
    from ..ir.interpret import run as ref_run
    from .live import LiveView, bar

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    graph = lm.graph
    n_params = lm.metrics.get("parameters") or graph.num_params()  # trained parameters, as recorded at training
    say(f"model   {lm.name}: {n_params:,} parameters ({', '.join(n.op.kind for n in graph.nodes)})")

    t = time.perf_counter()
    float_logits = _batched(lambda a: ref_run(graph, a.astype(np.float64))[0][0], x)
    float_acc = _accuracy(float_logits.argmax(-1), y)
    timings["float_reference_s"] = time.perf_counter() - t
    q = int_logits = plan_summary = None
    if cfg.quant != "float":
        t = time.perf_counter()
        q, plan_summary = _quantize(graph, cfg, say)
        int_logits = _batched(lambda a: q.run(a, mode="int")[0][0], x)
        timings["quantize_s"] = time.perf_counter() - t
    int_acc = _accuracy(int_logits.argmax(-1), y) if int_logits is not None else None
    say(f"float   accuracy {_pct(float_acc)} (float64 reference interpreter)")
    if int_logits is not None:
        say(f"int8    accuracy {_pct(int_acc)} (integer-exact interpreter, plan '{cfg.quant}')")

    t = time.perf_counter()
    say(f"export  {cfg.target} -> {shown_dir}")
    art = export_artifact(
        q if q is not None else graph,
        target=cfg.target,
        out=art_dir,
        force=True,
        golden_input=x[:2],
        progress=lambda m: say(f"        {m}"),
    )
    device = art.parts["c"] if art.kind == "bundle" else art
    timings["export_s"] = time.perf_counter() - t

    t = time.perf_counter()
    view = LiveView(stream, live=live)
    dev_logits = np.zeros((len(x), len(labels)), np.float32)
    correct = seen = 0
    runner = RUNNERS[cfg.target]
    for i in range(0, len(x), cfg.chunk):
        xc = x[i : i + cfg.chunk]
        outs = device.impl.run(xc, mode="step")
        dev_logits[i : i + len(xc)] = np.asarray(outs[0])
        pred = dev_logits[i : i + len(xc)].argmax(-1)
        m = y[i : i + len(xc)] >= 0
        correct += int((pred[m] == y[i : i + len(xc)][m]).sum())
        seen += int(m.sum())
        j = i + len(xc) - 1
        conf = _softmax(dev_logits[j : j + 1])[0]
        done = (j + 1) / len(x)
        truth = labels[y[j]] if y[j] >= 0 else "-"
        view.update(
            [
                f"device  {runner}  {bar(done)} {j + 1}/{len(x)} windows  ({(j + 1) * WINDOW} samples streamed)",
                f"  subject {int(groups[j]):>2}   now: {labels[int(pred[-1])]:<20} confidence {conf.max():5.1%}   "
                f"truth: {truth:<20}",
                f"  running on-device accuracy: {_pct(correct / seen if seen else None)}",
            ],
            force_log=(j + 1 == len(x)),
        )
    view.close()
    dev_pred = dev_logits.argmax(-1)
    dev_acc = _accuracy(dev_pred, y)
    timings["device_stream_s"] = time.perf_counter() - t
    ref_for_device = int_logits if int_logits is not None else float_logits
    agreement = float((dev_pred == ref_for_device.argmax(-1)).mean())
    max_err = float(np.max(np.abs(dev_logits - ref_for_device)))
    say(
        f"device  accuracy {_pct(dev_acc)}; decisions equal to the {'integer' if q is not None else 'float'} "
        f"reference on {agreement:.2%} of windows (max logit difference {max_err:.3g})"
    )

    t = time.perf_counter()
    cost = _jsonable(device.impl.cost(x[:2]))
    sizes = {
        "artifact_bytes": _dir_bytes(art_dir),
        "device_binary_bytes": device.impl.binary.stat().st_size,
        "weights_bytes": device.manifest.get("weights_bytes"),
        "float32_weight_bytes": 4 * graph.num_params(),
    }
    mcu = None
    if cfg.target == "cortex-m4":
        mcu = _mcu(device.impl, cost)
    elif _have("arm-none-eabi-gcc", "qemu-system-arm"):
        say("sizes   building the same model for cortex-m4 (flash, RAM, instructions per inference)")
        m4 = export_artifact(
            q if q is not None else graph,
            target="cortex-m4",
            out=art_dir.parent / f"{art_dir.name}-cortex-m4",
            force=True,
            golden_input=x[:1],
        )
        mcu = _mcu(m4.impl, _jsonable(m4.impl.cost(x[:1])))
    if mcu is not None:
        say(
            f"m4      {mcu['instructions_per_inference'] / 1e6:.2f} M instructions per inference, "
            f"flash {mcu['flash_bytes'] / 1024:.1f} KB, RAM {mcu['ram_bytes'] / 1024:.1f} KB"
        )
    timings["cost_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    return {
        "model": lm.name,
        "model_source": lm.source,
        "parameters": int(n_params),
        "runner": runner,
        "ops": [n.op.kind for n in graph.nodes],
        "accuracy": {"float": float_acc, "int8": int_acc, "device": dev_acc},
        "device_vs_reference": {
            "decision_agreement": agreement,
            "max_abs_logit_difference": max_err,
            "reference": "integer-exact interpreter" if q is not None else "float64 interpreter",
        },
        "drop_points": None if (float_acc is None or dev_acc is None) else 100 * (float_acc - dev_acc),
        "confusion_device": _confusion(dev_pred, y, len(labels)),
        "per_class": _per_class(dev_pred, y, labels),
        "cost": cost,
        "sizes": sizes,
        "mcu_sizes": mcu,
        "plan": plan_summary,
        "timings": timings,
    }


def _side_by_side(r: dict) -> dict:
    ins = (r["cost"].get("instructions") or {}).get("per_inference")
    mcu = r["mcu_sizes"] or {}
    return {
        "model": r["model"],
        "parameters": r["parameters"],
        **{f"{k}_accuracy": v for k, v in r["accuracy"].items()},
        "decision_agreement": r["device_vs_reference"]["decision_agreement"],
        "target_instructions_per_inference": ins,
        "target_latency_per_inference_s": (r["cost"].get("latency") or {}).get("per_inference_s"),
        "cortex_m4_instructions_per_inference": mcu.get("instructions_per_inference"),
        "cortex_m4_flash_bytes": mcu.get("flash_bytes"),
        "cortex_m4_ram_bytes": mcu.get("ram_bytes"),
        "weights_bytes": r["sizes"]["weights_bytes"],
    }


def _side_by_side_lines(rows: list[dict]) -> list[str]:
    head = f"{'model':<14}{'params':>8}{'float':>9}{'int8':>9}{'device':>9}{'M4 insn/inf':>13}{'flash':>9}{'RAM':>9}"
    lines = [head]
    for r in rows:
        ins = r["cortex_m4_instructions_per_inference"]
        lines.append(
            f"{r['model']:<14}{r['parameters']:>8,}{_pct_or_dash(r['float_accuracy']):>9}"
            f"{_pct_or_dash(r['int8_accuracy']):>9}{_pct_or_dash(r['device_accuracy']):>9}{'-' if ins is None else f'{ins / 1e6:.2f} M':>13}"
            f"{_kb(r['cortex_m4_flash_bytes']):>9}{_kb(r['cortex_m4_ram_bytes']):>9}"
        )
    return lines


def _kb(v) -> str:
    return "-" if v is None else f"{v / 1024:.1f} KB"


def _pct_or_dash(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _pct(v: Optional[float]) -> str:
    return "n/a (unlabelled)" if v is None else f"{100 * v:.2f}%"


def _per_class(pred, y, labels) -> list[dict]:
    rows = []
    for k, name in enumerate(labels):
        m = y == k
        rows.append(
            {"class": name, "windows": int(m.sum()), "accuracy": float((pred[m] == k).mean()) if m.any() else None}
        )
    return rows


def _mcu_sizes(c_impl) -> dict:
    s = c_impl.sizes
    keep = ("flash_bytes", "ram_bytes", "stack_bytes", "flash_capacity", "ram_capacity")
    return {k: s[k] for k in keep if k in s} | {"target": c_impl.target.name, "model": s.get("model")}


def _mcu(c_impl, cost: dict) -> dict:
    """Flash / RAM of a Cortex-M build and its instructions per inference (``cost`` of that build)."""
    ins = cost.get("instructions") or {}
    return _mcu_sizes(c_impl) | {
        "instructions_per_inference": ins.get("per_inference"),
        "instructions_per_step": ins.get("per_step"),
    }


def _jsonable(o: Any):
    return json.loads(json.dumps(o, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def _have(*tools: str) -> bool:
    from ..toolchains import TOOLS

    return all(TOOLS[t].path() for t in tools)


def _check_toolchains(target: str) -> None:
    from ..toolchains import require

    need = {
        "arm": ("aarch64-linux-gnu-gcc", "qemu-aarch64"),
        "cortex-m4": ("arm-none-eabi-gcc", "qemu-system-arm"),
        "x86": ("gcc",),
    }[target]
    for tool in need:
        require(tool)


def _quantize(graph, cfg: HarDemoConfig, say):
    """The int8 plan: calibrated on windows of the training subjects (never the streamed ones), searched
    on other training windows."""
    from ..quant.tasks import quantize_on_task, task_data

    data = task_data("har" if graph.output_types[0].features == 6 else "har12", graph, calib=cfg.calib, seed=cfg.seed)
    say(f"quant   plan '{cfg.quant}', calibrated on {len(data.calib_idx)} training windows")
    q = quantize_on_task(graph, data, cfg.quant, progress=False)
    return q, q.plan.summary()
