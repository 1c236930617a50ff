"""The benchmark suite: every bench_*.py as a function, one results file each, and BENCHMARKS.md.

    python -m benchmarks                 # all benchmarks, results in benchmarks/results, benchmarks/BENCHMARKS.md
    python -m benchmarks --quick         # smoke run (small sizes) into benchmarks/results/quick/
    python -m benchmarks --only latency,targets
    python -m benchmarks --render        # only re-render BENCHMARKS.md from the results files
    edgeseq bench [same options]

Each benchmark (the six below, then any other ``bench_<name>.py`` with ``run(quick, write)``) runs
in its own Python process and compares its methods side by side in that process (ratios are never
taken across runs or machines), with one thread per runtime (numpy / torch / TVM / onnxruntime: on a
shared 2-core machine, oversubscribed threads made timings swing by 10x), and records the machine
load. A benchmark that fails (a missing toolchain, say) is reported in BENCHMARKS.md and the others
still run; the whole suite keeps to ``--budget-minutes`` (19 by default).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

HERE = Path(__file__).resolve().parent
DEFAULT_RESULTS = HERE / "results"

# name -> (module, results file(s), what it measures); in the order they run. Any other
# benchmarks/bench_*.py that defines run(quick, write) is discovered and runs after these.
CORE: dict[str, tuple[str, tuple[str, ...], str]] = {
    "parallel": (
        "benchmarks.bench_parallel",
        ("parallel_training",),
        "parallel vs sequential training step at T=512 (minGRU, minLSTM, LMU)",
    ),
    "latency": (
        "benchmarks.bench_latency",
        ("latency",),
        "streaming-step and whole-sequence latency: torch eager, onnxruntime (edgeseq and torch export), TVM x86",
    ),
    "onnx": ("benchmarks.bench_onnx", ("onnx",), "edgeseq ONNX in onnxruntime vs torch eager: float, QDQ, integer"),
    "tvm": ("benchmarks.bench_tvm", ("tvm",), "TVM x86 vs torch eager, library sizes"),
    "targets": (
        "benchmarks.bench_targets",
        ("targets",),
        "instructions per inference on arm / Cortex-M under QEMU, flash / RAM, x86 latency",
    ),
    "gpu_reference": (
        "benchmarks.bench_gpu_reference",
        ("gpu_reference",),
        "reference kernels throughput (CUDA + Triton when present, else torch on the CPU)",
    ),
}
BUDGET_MINUTES = 19.0
# benchmarks far longer than the suite's budget: run on their own (python -m benchmarks.bench_<name>), their
# results file rendered into BENCHMARKS.md by the module's markdown(results) -> name: (module, file, what)
STANDALONE: dict[str, tuple[str, str, str]] = {
    "sweep": (
        "benchmarks.bench_sweep",
        "sweep_har_cortex-m4",
        "Find the model for a device: a 16-trial HAR sweep on Cortex-M4 with 1 and 2 Ray workers",
    ),
    "ort_arm": (
        "benchmarks.bench_ort_arm",
        "ort_arm",
        "onnxruntime on arm (qemu-aarch64): instructions per inference of the float and quantized exports",
    ),
}


def discover() -> dict[str, tuple[str, tuple[str, ...], str]]:
    """CORE, then every other benchmarks/bench_<name>.py that defines ``run(quick, write)``."""
    benches = dict(CORE)
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem[len("bench_") :]
        if name in benches:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if "\ndef run(" not in text:
            continue
        doc = text.split('"""')[1].strip().split("\n\n")[0] if text.startswith('"""') else name
        benches[name] = (f"benchmarks.{path.stem}", (name,), " ".join(doc.split()).rstrip(":."))
    return benches


BENCHES = discover()


def _cmd_version(argv: list[str]) -> Optional[str]:
    exe = shutil.which(argv[0])
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=20)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def machine() -> dict:
    """CPU model, cores, memory, load and the versions of everything the benchmarks use."""
    from benchmarks.common import machine_info

    info = machine_info()
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    versions = {}
    for dist in ("numpy", "torch", "onnx", "onnxruntime", "apache-tvm", "triton", "snntorch", "scipy"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    try:
        from edgeseq import __version__

        versions["edgeseq"] = __version__
    except ImportError:  # pragma: no cover
        pass
    tools = {
        t: _cmd_version([t, "--version"])
        for t in ("gcc", "aarch64-linux-gnu-gcc", "arm-none-eabi-gcc", "qemu-aarch64", "qemu-system-arm")
    }
    info.update(versions=versions, tools=tools, load_average=list(os.getloadavg()))
    return info


def run_suite(
    quick: bool = False,
    only: Optional[list[str]] = None,
    skip: Optional[list[str]] = None,
    out: Optional[Path] = None,
    budget_minutes: float = BUDGET_MINUTES,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the selected benchmarks (all by default), each in its own Python process (a crash or a
    hang cannot take the suite down; each one's ratios come from its own side-by-side runs), within
    ``budget_minutes`` in all: a benchmark that would start or run past it is skipped or stopped and
    reported. Renders BENCHMARKS.md; returns the suite record."""
    benches = discover()
    names = list(benches)
    for n in (only or []) + (skip or []):
        if n not in benches:
            raise SystemExit(f"unknown benchmark '{n}'; known: {', '.join(benches)}")
    if only:
        names = [n for n in names if n in only]
    if skip:
        names = [n for n in names if n not in skip]
    out = Path(out) if out else (DEFAULT_RESULTS / "quick" if quick else DEFAULT_RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["EDGESEQ_BENCH_RESULTS"] = str(out.resolve())
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TVM_NUM_THREADS"):
        env.setdefault(var, "1")
    root = str(HERE.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    record: dict[str, Any] = {
        "quick": quick,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "budget_minutes": budget_minutes,
        "benchmarks": {},
        "threads": {v: env.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TVM_NUM_THREADS")},
    }
    t_suite = time.perf_counter()
    deadline = t_suite + budget_minutes * 60.0
    for name in names:
        module, _, what = benches[name]
        left = deadline - time.perf_counter()
        if left < 20.0:
            record["benchmarks"][name] = {
                "status": "skipped",
                "seconds": 0.0,
                "error": f"not started: the {budget_minutes:g}-minute budget is spent",
            }
            log(f"== {name}: skipped (time budget spent)")
            continue
        log(f"== {name}: {what}")
        code = f"import torch; torch.set_num_threads(1); import {module} as m; m.run(quick={bool(quick)})"
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=root, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=left)
            status, err = ("ok", None) if rc == 0 else ("failed", f"exit status {rc} (see the log above)")
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            status, err = "stopped", f"stopped after {left:.0f} s: the {budget_minutes:g}-minute budget ran out"
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        secs = time.perf_counter() - t0
        record["benchmarks"][name] = {"status": status, "seconds": round(secs, 1), "error": err}
        log(f"   {name}: {status} in {secs:.0f} s" + (f" ({err})" if err else ""))
    record["seconds"] = round(time.perf_counter() - t_suite, 1)
    record["load_average_after"] = list(os.getloadavg())
    from edgeseq.util.fs import atomic_write_json

    prev = {}
    suite_file = out / "suite.json"
    if suite_file.exists() and set(names) != set(benches):
        try:
            prev = json.loads(suite_file.read_text()).get("benchmarks", {})
        except ValueError:
            prev = {}
    record["benchmarks"] = {**prev, **record["benchmarks"]}
    for n in benches:
        record["benchmarks"].setdefault(
            n,
            {
                "status": "not run",
                "seconds": 0.0,
                "error": "left out of this run (--only / --skip); earlier results shown",
            },
        )
    atomic_write_json(suite_file, record)
    md = markdown_path(out)
    render_markdown(out, md)
    log(f"wrote {md} ({record['seconds']:.0f} s in all)")
    return record


def markdown_path(results: Path) -> Path:
    return (
        HERE / "BENCHMARKS.md"
        if Path(results).resolve() == DEFAULT_RESULTS.resolve()
        else Path(results) / "BENCHMARKS.md"
    )


# ----------------------------------------------------------------------------------------------
# BENCHMARKS.md


def _load(results: Path, name: str) -> Optional[dict]:
    p = Path(results) / f"{name}.json"
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except ValueError:
        return None


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}"
        return str(v).replace("|", "/")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _us(v: Optional[dict], key: str = "median") -> Optional[str]:
    if not v:
        return None
    s = v.get("speedup_vs_torch_eager")
    val = v[key]
    txt = f"{val:,.0f}" if val >= 100 else f"{val:.1f}"
    return txt + (f" ({s:.1f}x)" if s is not None and abs(s - 1.0) > 1e-9 else "")


def _section_machine(suite: Optional[dict]) -> str:
    if not suite:
        return "_No suite record (run `python -m benchmarks`)._"
    m = suite["machine"]
    v = m.get("versions", {})
    rows = [
        ["CPU", f"{m.get('cpu')} ({', '.join(m.get('cpu_flags', []))})"],
        ["cores", m.get("cores")],
        ["memory", f"{m.get('memory_gib')} GiB"],
        ["platform", m.get("platform")],
        [
            "load average (1/5/15 min) before / after",
            f"{'/'.join(f'{x:.2f}' for x in m.get('load_average', []))} / "
            f"{'/'.join(f'{x:.2f}' for x in suite.get('load_average_after', []))}",
        ],
        ["python", m.get("python")],
    ]
    rows += [[k, val] for k, val in v.items() if val]
    rows += [[k, val] for k, val in (m.get("tools") or {}).items() if val]
    return _table(["", ""], rows)


def _section_latency(d: dict) -> str:
    cfg = d["config"]
    methods = ["torch_eager", "edgeseq_onnx", "torch_onnx", "tvm_x86"]
    head = ["model", "params"] + [f"{m} seq (us)" for m in methods] + [f"{m} step (us)" for m in methods]
    rows, notes = [], []
    for arch, r in d["results"].items():
        ms = r["methods"]
        rows.append(
            [arch, r["params"]]
            + [_us(ms.get(m, {}).get("sequence_us")) for m in methods]
            + [_us(ms.get(m, {}).get("step_us")) for m in methods]
        )
        for m in methods:
            e = ms.get(m, {})
            for k in ("error", "step_error", "other_length_error"):
                if e.get(k):
                    notes.append(f"- {arch} / {m}: {k.replace('_', ' ')}: `{e[k][:160]}`")
            if e.get("correct_at_other_length") is False:
                notes.append(
                    f"- {arch} / {m}: wrong at another sequence length (time loop unrolled at export): not timed"
                )
            for k in ("max_abs_diff_vs_torch", "step_max_abs_diff_after_T"):
                if e.get(k) is not None and e[k] > 1e-4:
                    notes.append(f"- {arch} / {m}: {k} = {e[k]:.2e}")
    text = (
        f"B = 1, T = {cfg['steps']}, hidden {cfg['hidden']}, {cfg['inputs']} inputs, one thread per runtime; "
        f"median of {cfg['rounds']} alternating blocks of {cfg['repeats']} calls (steps: 4x); in parentheses "
        "the speedup over torch eager in the same run. A step is one streaming call on a 1-step chunk with "
        "the state carried to the next call.\n\n" + _table(head, rows)
    )
    return text + ("\n\n" + "\n".join(notes) if notes else "")


def _section_onnx(d: dict) -> str:
    rows = []
    for arch, r in d["results"].items():
        ms = r["methods"]
        q, qdq = ms.get("edgeseq_onnx_int8", {}), ms.get("edgeseq_onnx_qdq", {})
        fq = ms.get("edgeseq_onnx_qdq_fused", {})
        rows.append(
            [arch]
            + [
                ms.get(k, {}).get("median_ms")
                for k in ("torch_eager", "edgeseq_onnx", "edgeseq_onnx_scan", "torch_onnx")
            ]
            + [
                d["speedup_vs_torch_eager"].get(arch, {}).get("edgeseq_onnx"),
                qdq.get("median_ms"),
                qdq.get("max_lsb_vs_integer_interpreter"),
                fq.get("median_ms"),
                fq.get("max_lsb_vs_integer_interpreter"),
                q.get("median_ms"),
                None
                if "exact_vs_integer_interpreter" not in q
                else ("yes" if q["exact_vs_integer_interpreter"] else "NO"),
            ]
        )
    cfg = d["config"]
    clock = "thread CPU time" if cfg.get("clock") == "cpu" else "wall time"
    goals = d.get("host_goals_met") or {}
    ratios = d.get("float_over_quantized_time") or {}
    extra = ""
    if goals:
        extra = (
            f"\n\nHost goals ({d['host_goals']}): "
            + ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in goals.items())
            + ". Float time over quantized time (above 1: the quantized export is faster): "
            + ", ".join(
                f"{a} " + " / ".join(f"{k.removeprefix('edgeseq_onnx_')} {v:.2f}" for k, v in r.items())
                for a, r in ratios.items()
            )
            + "."
        )
    return (
        f"Whole sequences, B = {cfg['batch']}, T = {cfg['steps']}, hidden {cfg['hidden']}, one thread, median "
        f"{clock}. edgeseq ORT: the default export (ONNX's fused GRU/LSTM kernels where the step program "
        "matches, else Scan); Scan: the same with every recurrence over Scan. QDQ: the quantized graph's "
        "QuantizeLinear/DequantizeLinear model (max LSB: vs the integer interpreter). QDQ fused: the same with "
        "--fused-rnn, where it applies (an LSTM on onnxruntime's DynamicQuantizeLSTM; tolerance recurrent_fused). "
        "int8: its integer program (bit-exact vs the integer interpreter).\n\n"
        + _table(
            [
                "model",
                "torch eager (ms)",
                "edgeseq ORT (ms)",
                "edgeseq ORT Scan (ms)",
                "torch-exported ORT (ms)",
                "edgeseq ORT speedup",
                "edgeseq ORT QDQ (ms)",
                "QDQ max LSB",
                "edgeseq ORT QDQ fused (ms)",
                "QDQ fused max LSB",
                "edgeseq ORT int8 (ms)",
                "int8 exact",
            ],
            rows,
        )
        + extra
    )


def _section_tvm(d: dict) -> str:
    rows = []
    for arch, r in d["results"].items():
        ms = r["methods"]
        rows.append(
            [
                arch,
                ms["torch_eager"]["median_us"],
                ms["tvm"]["median_us"],
                ms["tvm"]["speedup_vs_torch_eager"],
                r.get("max_abs_diff_vs_reference"),
                r.get("compile_s"),
                r.get("x86_library_bytes"),
                r.get("aarch64_library_bytes"),
            ]
        )
    cfg = d["config"]
    return (
        f"Whole sequences, B = {cfg['batch']}, T = {cfg['steps']}, hidden {cfg['hidden']}, one thread, "
        f"{cfg['repeats']} interleaved rounds.\n\n"
        + _table(
            [
                "model",
                "torch eager (us)",
                "TVM x86 (us)",
                "speedup",
                "max abs err vs reference",
                "compile (s)",
                "x86 .so (B)",
                "aarch64 .so (B)",
            ],
            rows,
        )
    )


def _section_targets(d: dict) -> tuple[str, str]:
    targets = []
    for e in d["models"].values():
        for t in e["targets"]:
            if t not in targets:
                targets.append(t)
    emu = [t for t in targets if t != "x86"]
    rows, size_rows = [], []
    for name, e in d["models"].items():
        row = [name, e["params"]]
        for t in emu:
            r = e["targets"].get(t, {})
            row.append(
                f"{r['instructions_per_inference']:,} ({r['instructions_per_step']:,.0f}/step)"
                if "instructions_per_inference" in r
                else None
            )
        x = e["targets"].get("x86", {})
        row.append(x.get("latency_per_inference_us"))
        rows.append(row)
        m4 = e["targets"].get("cortex-m4", {})
        size_rows.append(
            [
                name,
                e["params"],
                x.get("weights_bytes") or m4.get("weights_bytes"),
                m4.get("flash_bytes"),
                m4.get("ram_bytes"),
                m4.get("model_code_bytes"),
                x.get("state_struct_bytes") or m4.get("state_struct_bytes"),
            ]
        )
    cfg = d["config"]
    text = (
        f"One sequence of T = {cfg['steps']} steps, {cfg['in_features']} inputs, {cfg['classes']} classes "
        f"({cfg['input']}). Instructions per inference (and per step), counted by QEMU; x86: wall time "
        f"inside the driver.\n\n{d['method']['instructions']}\n\n"
        + _table(["model", "params"] + [f"{t} instructions" for t in emu] + ["x86 (us)"], rows)
    )
    sizes = _table(
        ["model", "params", "weights (B)", "cortex-m4 flash (B)", "cortex-m4 RAM (B)", "model code (B)", "state (B)"],
        size_rows,
    )
    return text, sizes


def _section_parallel(d: dict) -> str:
    cfg = d["config"]
    rows = [[k, v["parallel_s"] * 1e3, v["sequential_s"] * 1e3, v["speedup"]] for k, v in d["results"].items()]
    return (
        f"One training step (forward + backward), T = {cfg['steps']}, B = {cfg['batch']}, hidden "
        f"{cfg['hidden']}, torch threads {d.get('torch_threads')}. {d.get('note', '')}\n\n"
        + _table(["cell", "parallel (ms)", "sequential (ms)", "speedup"], rows)
    )


def _section_gpu(d: dict) -> str:
    parts = [d.get("method", "")]
    for dev, run in d.get("runs", {}).items():
        cfg = run["config"]
        methods: list[str] = []
        for fam in run["families"].values():
            for m in fam["methods"]:
                if m not in methods:
                    methods.append(m)
        rows = []
        for fam, r in run["families"].items():
            row = [fam]
            for m in methods:
                v = r["methods"].get(m, {})
                if "steps_per_s" in v:
                    err = v.get("max_rel_error_vs_interpreter")
                    row.append(f"{v['steps_per_s']:,.0f}" + (f" (err {err:.0e})" if err is not None else ""))
                else:
                    row.append("error" if "error" in v else None)
            rows.append(row)
        parts.append(
            f"**{dev}** ({run['date']}; B = {cfg['batch']}, T = {cfg['steps']}, hidden {cfg['hidden']}"
            f"{', quick' if cfg.get('quick') else ''}): steps/s (max relative error vs the float64 "
            f"interpreter)\n\n" + _table(["family"] + methods, rows)
        )
    return "\n\n".join(parts)


def _flatten_rows(obj: Any) -> Optional[tuple[list[str], list[list[Any]]]]:
    """A table from a list of flat dicts or a dict of flat dicts (scalar columns only)."""
    if isinstance(obj, dict):
        items = [(k, v) for k, v in obj.items() if isinstance(v, dict)]
        if not items:
            return None
        recs = [{"name": k, **v} for k, v in items]
    elif isinstance(obj, list) and obj and all(isinstance(r, dict) for r in obj):
        recs = obj
    else:
        return None
    cols: list[str] = []
    for r in recs:
        for k, v in r.items():
            if k not in cols and (v is None or isinstance(v, (int, float, str, bool))):
                cols.append(k)
    return cols, [[r.get(c) for c in cols] for r in recs]


def _section_quant(d: dict) -> str:
    for key in ("table", "rows", "results", "models"):
        if key in d:
            t = _flatten_rows(d[key])
            if t:
                return _table(*t)
    t = _flatten_rows({k: v for k, v in d.items() if k not in ("machine",)})
    if t:
        return _table(*t)
    return "```json\n" + json.dumps({k: v for k, v in d.items() if k != "machine"}, indent=1)[:4000] + "\n```"


def _section_generic(d: dict) -> str:
    """A results file of a discovered benchmark: its target, then its tables (or results) as tables."""
    parts = [f"Run {d.get('date', '?')}; config: `{json.dumps(d.get('config', {}))[:300]}`"]
    if d.get("target"):
        parts.append(
            f"Target: {d['target']}"
            + (f" -- met: {_fmt_met(d.get('target_met'))}" if d.get("target_met") is not None else "")
        )
    if d.get("missing_checkpoints"):
        parts.append("Missing inputs: " + ", ".join(f"{k} ({v})" for k, v in d["missing_checkpoints"].items()))
    parts += [str(n) for n in d.get("notes") or []]  # what the numbers mean, where a benchmark says
    if d.get("plot"):  # a figure beside the results file
        parts.append(f"![{d.get('benchmark', 'plot')}](results/{d['plot']})")
    tables = d.get("tables")
    if isinstance(tables, dict) and tables:
        for key, rows in tables.items():
            t = _flatten_rows(rows)
            if t:
                parts.append(f"**{key}**\n\n" + _table(*t))
    else:
        t = _flatten_rows(d.get("results"))
        if t:
            parts.append(_table(*t))
    return "\n\n".join(parts)


def _fmt_met(met: Any) -> str:
    if isinstance(met, dict):
        return ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in met.items()) or "-"
    return str(met)


def render_markdown(results: Path, path: Path) -> Path:
    """Write BENCHMARKS.md from the results files in ``results``."""
    from edgeseq.util.fs import atomic_write_text

    results = Path(results)
    suite = _load(results, "suite")
    out = [
        "# edgeseq benchmarks",
        "",
        "Generated by `python -m benchmarks` (same as `edgeseq bench`) from the JSON files in "
        f"`{_rel(results)}`. Every ratio compares methods timed side by side in one process on the machine "
        "below; absolute times on a shared machine move with its load (recorded), the ratios much less.",
        "",
    ]
    if suite:
        total = sum(b.get("seconds") or 0.0 for b in suite["benchmarks"].values())
        out += [
            f"Last suite run {suite['started']}{' (quick smoke settings)' if suite.get('quick') else ''}; "
            f"the benchmarks' latest runs took {total:.0f} s together (per benchmark: see the end).",
            "",
        ]
    out += ["## Machine", "", _section_machine(suite), ""]
    sections: list[tuple[str, Optional[str]]] = []
    lat = _load(results, "latency")
    sections.append(("Streaming-step and whole-sequence latency", _section_latency(lat) if lat else None))
    onnx = _load(results, "onnx")
    sections.append(("onnxruntime (edgeseq export) vs torch eager", _section_onnx(onnx) if onnx else None))
    tvm = _load(results, "tvm")
    sections.append(("TVM x86 vs torch eager", _section_tvm(tvm) if tvm else None))
    tg = _load(results, "targets")
    tg_text, sizes = _section_targets(tg) if tg else (None, None)
    sections.append(("Instructions per inference on arm and Cortex-M", tg_text))
    par = _load(results, "parallel_training")
    sections.append(("Parallel vs sequential training at T=512", _section_parallel(par) if par else None))
    size_lines = []
    if sizes:
        size_lines.append("C artifacts (self-contained C, float32):\n\n" + sizes)
    if tvm:
        size_lines.append(
            _table(
                ["model", "TVM x86 .so (B)", "TVM aarch64 .so (B)"],
                [[a, r.get("x86_library_bytes"), r.get("aarch64_library_bytes")] for a, r in tvm["results"].items()],
            )
        )
    if lat:
        size_lines.append(
            _table(
                ["model", "edgeseq ONNX model (B)"], [[a, r.get("onnx_model_bytes")] for a, r in lat["results"].items()]
            )
        )
    sections.append(("Artifact sizes", "\n\n".join(size_lines) if size_lines else None))
    q = _load(results, "quant")
    sections.append(
        (
            "Quantized accuracy",
            _section_quant(q) if q else "_No `quant.json` in the results yet (written by the quantization benchmark)._",
        )
    )
    gpu = _load(results, "gpu_reference")
    sections.append(("Reference kernels throughput", _section_gpu(gpu) if gpu else None))
    for name, (_, files, what) in discover().items():
        if name in CORE:
            continue
        d = _load(results, files[0])
        sections.append((f"{what[0].upper()}{what[1:]} (`bench_{name}`)", _section_generic(d) if d else None))
    for name, (module, file, what) in STANDALONE.items():
        d = _load(results, file)
        body = importlib.import_module(module).markdown(d) if d else None
        sections.append((f"{what} (`bench_{name}`, run on its own)", body))
    for title, body in sections:
        out += [f"## {title}", "", body or "_Not measured in this run (no results file)._", ""]
    if suite:
        rows = [[n, b["status"], b["seconds"], (b.get("error") or "")[:200]] for n, b in suite["benchmarks"].items()]
        out += ["## Suite run", "", _table(["benchmark", "status", "seconds", "error"], rows), ""]
    path = Path(path)
    atomic_write_text(path, "\n".join(out).rstrip() + "\n")
    return path


def _rel(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(HERE.parent))
    except ValueError:
        return str(p)


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(ap)
    return run_from_args(ap.parse_args(argv))


def add_arguments(ap) -> None:
    ap.add_argument("--quick", action="store_true", help="small smoke settings (results in results/quick/)")
    ap.add_argument("--only", help=f"comma list of: {', '.join(BENCHES)}")
    ap.add_argument("--skip", help="comma list of benchmarks to leave out")
    ap.add_argument("--out", help="results directory (default benchmarks/results, or results/quick with --quick)")
    ap.add_argument("--render", action="store_true", help="only re-render BENCHMARKS.md from existing results")
    ap.add_argument(
        "--budget-minutes",
        type=float,
        default=BUDGET_MINUTES,
        help=f"stop starting / running benchmarks after this long (default {BUDGET_MINUTES:g})",
    )


def run_from_args(args) -> int:
    split = lambda s: [x for x in (s or "").split(",") if x]  # noqa: E731
    if args.render:
        out = Path(args.out) if args.out else (DEFAULT_RESULTS / "quick" if args.quick else DEFAULT_RESULTS)
        print(f"wrote {render_markdown(out, markdown_path(out))}")
        return 0
    rec = run_suite(
        quick=args.quick,
        only=split(args.only),
        skip=split(args.skip),
        out=Path(args.out) if args.out else None,
        budget_minutes=args.budget_minutes,
    )
    failed = [n for n, b in rec["benchmarks"].items() if b["status"] in ("failed", "stopped", "skipped")]
    if failed:
        print(f"benchmarks failed: {', '.join(failed)} (see BENCHMARKS.md)")
        return 1
    return 0
