"""onnxruntime on arm: the float, QDQ and integer ONNX exports of the zoo models, counted in executed
instructions per inference under qemu-aarch64 (deterministic, unlike wall time under emulation).

The models are built here (x86, edgeseq) exactly as in :mod:`benchmarks.bench_onnx` (B = 1, T steps,
hidden H, one thread) and run by an aarch64 CPython with onnxruntime's own aarch64 wheel
(``scripts/arm_python.sh`` prepares it) under ``qemu-aarch64 -cpu CPU`` with edgeseq's
instruction-count plugin. Instructions per inference are the difference between a process that runs a
model ``1 + n`` times and one that runs it once, divided by ``n`` (session creation, imports and the
first run cancel out). The processes run without address randomization (``setarch -R``), with a fixed
hash seed and no bytecode writes, so that two runs of one process agree to about 1e-5 (each count is
taken twice, a third time when the two differ by more than 1e-4, and the median kept). The ONNX forms:

- ``float``: ``build_onnx`` (ONNX's fused GRU / LSTM op where the step program matches, else Scan);
- ``qdq``: ``build_onnx_qdq`` (QuantizeLinear / DequantizeLinear at the plan's points);
- ``qdq_fused``: the same with ``fused_rnn=True`` (an LSTM on onnxruntime's ``DynamicQuantizeLSTM``);
- ``int8``: ``build_onnx_quantized`` (the bit-exact integer program).

Each run's integer output is checked against the integer-exact interpreter on the host (int8: equal;
QDQ forms: the max LSB difference is recorded). CPUs: cortex-a72 (NEON, no dot product) and
neoverse-n1 (with the dot-product instructions onnxruntime's int8 kernels use).
Results: benchmarks/results/ort_arm.json.

    bash scripts/arm_python.sh
    python -m benchmarks.bench_ort_arm [--models gru,lstm,lmu,rnn] [--cpus cortex-a72,neoverse-n1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_onnx import MODELS
from benchmarks.common import write_results

#: /proc/cpuinfo "CPU part" of each -cpu (onnxruntime's cpuinfo reads the micro-architecture there)
CPU_PART = {"cortex-a72": "0xd08", "cortex-a76": "0xd0b", "neoverse-n1": "0xd0c", "cortex-a53": "0xd03"}

RUNNER = """
import sys, numpy as np, onnxruntime as ort
path, xfile, n, outfile = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
so = ort.SessionOptions()
so.intra_op_num_threads = 1
so.inter_op_num_threads = 1
so.log_severity_level = 3
so.add_session_config_entry("session.intra_op.allow_spinning", "0")
so.add_session_config_entry("session.inter_op.allow_spinning", "0")
s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
x = np.load(xfile)
name = [o.name for o in s.get_outputs() if o.name.startswith("q.")] or [s.get_outputs()[0].name]
for _ in range(n):
    y = s.run(name[:1], {"x": x})[0]
np.save(outfile, y)
"""


def arm_python() -> Path:
    d = Path(os.environ.get("EDGESEQ_CACHE") or Path.home() / ".cache" / "edgeseq") / "arm-python"
    if not any(d.glob("ready-*")):
        raise SystemExit(f"no aarch64 python at {d}: run `bash scripts/arm_python.sh` first")
    return d


def sysroot(d: Path, cpu: str) -> Path:
    """``d/root`` as seen by a process run with ``-cpu cpu``: a tree of links to it with a /proc/cpuinfo of
    that CPU (one tree per CPU, so that runs for different CPUs never share the file)."""
    r = d / f"root-{cpu}"
    (r / "proc").mkdir(parents=True, exist_ok=True)
    for entry in (d / "root").iterdir():
        link = r / entry.name
        if entry.name != "proc" and not link.exists():
            link.symlink_to(entry)
    info = (
        "processor\t: 0\nBogoMIPS\t: 100.00\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\n"
        f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {CPU_PART[cpu]}\nCPU revision\t: 0\n\n"
    )
    f = r / "proc" / "cpuinfo"
    if not f.exists() or f.read_text() != info:
        tmp = f.with_suffix(".tmp")
        tmp.write_text(info)
        tmp.replace(f)
    return r


def count(d: Path, cpu: str, model: Path, x: Path, n: int, out: Path, runner: Path) -> int:
    from edgeseq.targets.base import qemu_plugin

    log = out.with_suffix(".log")
    log.unlink(missing_ok=True)
    argv = [  # no address randomization, no bytecode caches written: every process runs the same instructions
        "setarch",
        "x86_64",
        "-R",
        "qemu-aarch64",
        "-cpu",
        cpu,
        "-L",
        str(sysroot(d, cpu)),
        "-E",
        f"PYTHONPATH={d / 'site'}",
        "-E",
        f"PYTHONHOME={d / 'root' / 'usr'}",
        "-E",
        "PYTHONHASHSEED=0",
        "-E",
        "OPENBLAS_NUM_THREADS=1",
        "-E",
        "PYTHONDONTWRITEBYTECODE=1",
        "-plugin",
        qemu_plugin(),
        "-d",
        "plugin",
        "-D",
        str(log),
        str(d / "root" / "usr" / "bin" / "python3.11"),
        str(runner),
        str(model),
        str(x),
        str(n),
        str(out),
    ]
    subprocess.run(argv, check=True, capture_output=True, timeout=1800)
    line = next(ln for ln in log.read_text().splitlines() if ln.startswith("edgeseq-insns:"))
    return int(line.split()[1])


def forms(arch: str, args, tmp: Path) -> tuple[dict[str, Path], np.ndarray, object]:
    from edgeseq import capture
    from edgeseq.export.onnx import build_onnx, build_onnx_qdq, build_onnx_quantized
    from edgeseq.nn import build_model
    from edgeseq.quant import quantize

    torch.manual_seed(0)
    model = build_model(arch, args.inputs, 10, **MODELS[arch](args)).eval()
    graph = capture(model, torch.zeros(1, 16, args.inputs))
    calib = np.random.default_rng(0).standard_normal((16, min(args.steps, 64), args.inputs))
    qg = quantize(graph, calib, "edgeseq")
    models = {"float": build_onnx(graph), "qdq": build_onnx_qdq(qg), "int8": build_onnx_quantized(qg)}
    info: dict = {}
    fused = build_onnx_qdq(qg, fused_rnn=True, info=info)
    if any(p["where"] == "fused" for p in info["products"]):
        models["qdq_fused"] = fused
    paths = {}
    for k, m in models.items():
        paths[k] = tmp / f"{arch}.{k}.onnx"
        paths[k].write_bytes(m.SerializeToString())
    return paths, np.random.default_rng(1).standard_normal((1, args.steps, args.inputs)).astype(np.float32), qg


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--inputs", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5, help="extra runs whose instructions are averaged")
    ap.add_argument("--models", default="gru,lstm,rnn,lmu")
    ap.add_argument("--cpus", default="cortex-a72,neoverse-n1")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    from edgeseq.quant import intexact

    d = arm_python()
    results: dict = {}
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        runner = tmp / "runner.py"
        runner.write_text(RUNNER)
        for arch in args.models.split(","):
            paths, x, qg = forms(arch, args, tmp)
            xf = tmp / f"{arch}.x.npy"
            np.save(xf, x)
            want = intexact.run(qg.program, qg.quantize_input(x))[0][0]
            row: dict = {}
            for cpu in args.cpus.split(","):
                for form, p in paths.items():
                    out = tmp / f"{arch}.{form}.{cpu}.npy"
                    try:
                        first = count(d, cpu, p, xf, 1, out, runner)
                    except subprocess.CalledProcessError as e:  # recorded, e.g. SIGILL: onnxruntime's wheel
                        # uses an instruction this -cpu does not have
                        sig = -e.returncode if e.returncode < 0 else None
                        row.setdefault(cpu, {})[form] = {"error": f"signal {sig}" if sig else f"exit {e.returncode}"}
                        continue
                    # each count twice: the counts of one process are reproducible to ~1e-5; a pair that is
                    # not (a stray thread, a changed environment) is measured a third time, the median kept
                    once = sorted([first, count(d, cpu, p, xf, 1, out, runner)])
                    many = sorted(count(d, cpu, p, xf, 1 + args.runs, out, runner) for _ in range(2))
                    for c in (once, many):
                        if c[1] - c[0] > 1e-4 * c[1]:
                            c.append(count(d, cpu, p, xf, 1 + args.runs if c is many else 1, out, runner))
                            c.sort()
                    y = np.load(out)
                    lo, hi = once[len(once) // 2], many[len(many) // 2]
                    cell = {"instructions_per_inference": (hi - lo) // args.runs, "process_counts": [once, many]}
                    if form != "float":
                        cell["max_lsb_vs_integer_interpreter"] = int(np.abs(y.astype(np.int64) - want).max())
                    row.setdefault(cpu, {})[form] = cell
                ok = {k: v["instructions_per_inference"] for k, v in row[cpu].items() if "error" not in v}
                quant = [v for k, v in ok.items() if k != "float"]
                if "float" in ok and quant:
                    row[cpu]["float_over_best_quantized"] = round(ok["float"] / min(quant), 3)
                print(
                    f"{arch:5s} {cpu:12s} "
                    + " | ".join(
                        f"{k} {v['instructions_per_inference'] / 1e6:.2f} M"
                        if "error" not in v
                        else f"{k} {v['error']}"
                        for k, v in row[cpu].items()
                        if isinstance(v, dict)
                    ),
                    flush=True,
                )
            results[arch] = row
    out = {
        "config": {k: v for k, v in vars(args).items() if k != "no_write"},
        "runtime": "onnxruntime (aarch64 wheel, the host's version) in Debian's arm64 CPython 3.11 under qemu-aarch64",
        "metric": "executed guest instructions per inference (difference of 1 + runs and 1 runs, divided by runs)",
        "results": results,
        "quantized_fewer_instructions_than_float": {
            f"{a}/{c}": r[c]["float_over_best_quantized"] > 1
            for a, r in results.items()
            for c in r
            if "float_over_best_quantized" in r[c]
        },
    }
    if not args.no_write:
        print(f"wrote {write_results('ort_arm', out)}")
    else:
        print(json.dumps(out["quantized_fewer_instructions_than_float"]))
    return out


def _cell(c):
    if c is None:
        return None
    return c["error"] if "error" in c else round(c["instructions_per_inference"] / 1e6, 2)


def markdown(d: dict) -> str:
    """The BENCHMARKS.md section of this benchmark's results file."""
    from benchmarks.suite import _table

    cfg = d["config"]
    names = ("float", "qdq", "qdq_fused", "int8")
    rows = []
    for arch, r in d["results"].items():
        for cpu, c in r.items():
            rows.append(
                [arch, cpu]
                + [_cell(c.get(k)) for k in names]
                + [max((c[k].get("max_lsb_vs_integer_interpreter", 0) for k in ("qdq", "qdq_fused") if k in c))]
                + [
                    None
                    if "max_lsb_vs_integer_interpreter" not in c["int8"]
                    else ("yes" if c["int8"]["max_lsb_vs_integer_interpreter"] == 0 else "NO")
                ]
                + [c.get("float_over_best_quantized")]
            )
    return (
        f"B = 1, T = {cfg['steps']}, hidden {cfg['hidden']}, {cfg['inputs']} inputs: the models of the onnxruntime "
        f"section above, run by {d['runtime']}. {d['metric'][0].upper()}{d['metric'][1:]}, in millions. QDQ fused: "
        "`--fused-rnn` (an LSTM on DynamicQuantizeLSTM); int8: the integer program, compared with the integer "
        "interpreter. Above 1 in the last column: a quantized export runs fewer "
        "instructions than the float one.\n\n"
        + _table(
            [
                "model",
                "-cpu",
                "float (M)",
                "QDQ (M)",
                "QDQ fused (M)",
                "int8 (M)",
                "QDQ max LSB",
                "int8 exact",
                "float / best quantized",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
