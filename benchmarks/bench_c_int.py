"""Integer C (quantized, ``export_c_int``) vs float C (``export_c``) on every C target: executed
instructions per inference and per step (QEMU instruction-count plugin), flash / RAM bytes, wall-time
latency on this machine (x86), for HAR-sized models.

Models (6 inputs, 6 classes, T = 128 steps, untrained: the costs do not depend on training):
``har_lmu`` is the HAR recipe's LMU (hidden 64, 12 x 16 Legendre memory, dense hidden cell, mean
readout; 13.2k parameters), ``lmu32`` / ``gru32`` those of ``bench_targets``. The integer models
use the ``edgeseq`` preset (int8 weights, int16 LMU matrices and state, int16 interpolated tables),
calibrated on IMU-like noise; each export checks its binary bit for bit against the integer-exact
interpreter (float: against the float64 reference) before it is measured on one sequence.

    python -m benchmarks.bench_c_int [--targets x86,arm,cortex-m4,cortex-m7,cortex-m55] [--models har_lmu,lmu32,gru32]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import write_results

MODELS = {
    "har_lmu": (
        "lmu",
        dict(hidden=64, memory_d=12, order=16, theta=128.0, hidden_cell="dense", input_to_hidden=True, readout="mean"),
    ),
    "lmu32": ("lmu", dict(hidden=32, memory_d=2, order=16, theta=128.0)),
    "gru32": ("gru", dict(hidden=32)),
}
TARGETS = ["x86", "arm", "cortex-m4", "cortex-m7", "cortex-m55"]


def _row(art, x, export_s: float, numerics: str) -> dict:
    cost = art.cost(x)
    m = art.manifest
    row = {
        "numerics": numerics,
        "export_s": round(export_s, 3),
        "weights_bytes": m["weights_bytes"],
        "state_struct_bytes": m["buffer_plan"]["struct_bytes_estimate"],
        "model_code_bytes": cost["sizes"].get("model", {}).get("code_bytes"),
        "model_const_bytes": cost["sizes"].get("model", {}).get("const_bytes"),
    }
    ver = m["golden"]["verification"]
    row["verified"] = bool(ver["bit_exact"]) if numerics == "integer" else ver["max_abs_error"] <= 1e-4
    for k in ("flash_bytes", "ram_bytes"):
        if k in cost["sizes"]:
            row[k] = cost["sizes"][k]
    if "instructions" in cost:
        ins = cost["instructions"]
        row["instructions_per_inference"] = int(ins["per_inference"])
        row["instructions_per_step"] = round(ins["per_step"], 1)
    if "latency" in cost:
        row["latency_per_inference_us"] = round(cost["latency"]["per_inference_s"] * 1e6, 2)
        row["latency_per_step_us"] = round(cost["latency"]["per_step_s"] * 1e6, 3)
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--no-float", action="store_true", help="integer exports only")
    ap.add_argument("--no-write", action="store_true", help="print only, do not write the results file")
    args = ap.parse_args(argv)

    import torch

    import edgeseq
    from benchmarks.bench_targets import har_like_input
    from edgeseq.export.c import export_c
    from edgeseq.export.c.intexport import export_c_int
    from edgeseq.nn import build_model
    from edgeseq.quant import quantize

    x = har_like_input(args.steps)
    rng = np.random.default_rng(0)
    calib = (rng.normal(size=(64, args.steps, 6)) * [0.6, 0.4, 0.3, 1, 1, 0.3] + [0, 0, 1, 0, 0, 0]).astype(np.float32)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="edgeseq-bench-") as tmp:
        for name in args.models.split(","):
            arch, cfg = MODELS[name]
            torch.manual_seed(0)
            model = build_model(arch, 6, 6, **cfg).eval()
            graph = edgeseq.capture(model, torch.as_tensor(x[:, :16]))
            q = quantize(graph, calib, "edgeseq")
            entry: dict = {
                "arch": arch,
                "config": cfg,
                "params": graph.num_params(),
                "macs_per_step": q.program.macs_per_step(),
                "targets": {},
            }
            for target in args.targets.split(","):
                tag = target.replace(":", "-")
                res = {}
                t0 = time.perf_counter()
                art = export_c_int(q, Path(tmp) / f"{name}-{tag}-int", target=target, golden_input=x[:, :32])
                res["int"] = _row(art, x, time.perf_counter() - t0, "integer")
                if not args.no_float:
                    t0 = time.perf_counter()
                    art = export_c(graph, Path(tmp) / f"{name}-{tag}-f32", target=target, golden_input=x[:, :32])
                    res["float32"] = _row(art, x, time.perf_counter() - t0, "float32")
                entry["targets"][target] = res
                for kind, row in res.items():
                    print(
                        f"{name:8} {target:11} {kind:7} "
                        + (
                            f"{row['instructions_per_inference']:>11,} insn/inf {row['instructions_per_step']:>9,.0f} "
                            "insn/step"
                            if "instructions_per_inference" in row
                            else f"{row['latency_per_inference_us']:>10.1f} us/inf"
                        )
                        + (
                            f"  flash {row['flash_bytes']:>7,} B  RAM {row['ram_bytes']:>6,} B"
                            if "flash_bytes" in row
                            else ""
                        )
                        + f"  verified {row['verified']}"
                    )
            rows[name] = entry
    table = []
    for name, entry in rows.items():
        for target, res in entry["targets"].items():
            for kind, row in res.items():
                t = {"model": name, "target": target, "numerics": kind}
                if "instructions_per_inference" in row:
                    t["instructions_per_inference"] = row["instructions_per_inference"]
                    t["instructions_per_mac"] = round(
                        row["instructions_per_inference"] / (entry["macs_per_step"] * args.steps), 3
                    )
                if "latency_per_inference_us" in row:
                    t["latency_per_inference_us"] = row["latency_per_inference_us"]
                t.update({k: row[k] for k in ("flash_bytes", "ram_bytes", "weights_bytes", "verified") if k in row})
                table.append(t)
    result = {
        "config": {
            "steps": args.steps,
            "batch": 1,
            "in_features": 6,
            "classes": 6,
            "input": "synthetic IMU-like",
            "quantization": "edgeseq preset, calibrated on 64 IMU-like noise sequences",
        },
        "tables": {"integer vs float C per target (default compiler of each target)": table},
        "method": {
            "instructions": "QEMU 7.2 TB-count plugin; the same driver and input in step / nostep / io modes: "
            "per_inference = (step - io) / B, per_step = (step - nostep) / (B*T). Integer models "
            "include the input quantizer (float32) and (float) q * scale outputs.",
            "kernels": "integer: edgeseq.export.c.intkernels (Cortex-M4/M7 DSP, Cortex-M55 MVE, aarch64 NEON, "
            "portable C on x86) and 4-lane vector elementwise loops on MVE / NEON",
            "compiler": "each target's default (edgeseq.targets.compilers: Clang 19 where installed on Cortex-M "
            "and aarch64, GCC on x86)",
            "latency": "x86 only: clock_gettime around esq_reset + esq_run inside the driver, this shared machine",
            "flash_ram": "Cortex-M: ELF sections of the whole firmware (start-up, semihosting driver with 2 x 4 KiB "
            "I/O buffers, 8 KiB stack); flash = text + rodata + data, RAM = data + bss + stack",
            "flags": "-O2 -std=c99 -ffp-contract=off (the targets' own flags)",
        },
        "models": rows,
    }
    if not args.no_write:
        print(f"wrote {write_results('c_int', result)}")
    return result


QUICK = ["--models", "lmu32", "--targets", "x86,cortex-m4", "--steps", "32"]


def run(quick: bool = False, write: bool = True) -> dict:
    """The benchmark as a function: default settings, or a smoke run with ``quick``."""
    return main((QUICK if quick else []) + ([] if write else ["--no-write"]))


if __name__ == "__main__":
    main()
