"""Cost of HAR-sized models on every C target: executed instructions per inference and per step
(QEMU instruction-count plugin), flash / RAM bytes, and wall-time latency on this machine (x86).

Models: 6 inputs (accelerometer + gyroscope), 6 classes, T = 128 steps (2.56 s at 50 Hz), hidden
size 32, untrained (costs of these kernels do not depend on training; spiking activity does a
little). Each model is exported with ``export_c`` (which also checks the built binary against the
reference interpreter on a golden input) and measured with ``CArtifact.cost`` on one sequence.

    python -m benchmarks.bench_targets [--targets x86,arm,cortex-m4,cortex-m7,cortex-m55] [--steps 128]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import write_results

MODELS = {
    "gru32": ("gru", dict(hidden=32)),
    "lstm32": ("lstm", dict(hidden=32)),
    "mingru32": ("mingru", dict(hidden=32)),
    "lmu32": ("lmu", dict(hidden=32, memory_d=2, order=16, theta=128.0)),
    "lif32": ("lif", dict(hidden=32)),
    "l2mu32": ("l2mu", dict(hidden=32, encoder_size=16)),
    "lmuformer32": ("lmuformer", dict(dim=32, memory_d=2, order=8)),
}
TARGETS = ["x86", "arm", "arm:cortex-a72", "cortex-m4", "cortex-m7", "cortex-m55"]
LATENCY_ROUNDS = 25


def har_like_input(steps: int, seed: int = 0) -> np.ndarray:
    """One (1, T, 6) sequence shaped like raw IMU data: gravity on one axis plus motion, gyro noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps) / 50.0
    acc = np.stack([np.sin(2 * np.pi * 1.8 * t), 0.3 * np.cos(2 * np.pi * 0.9 * t), np.ones_like(t)], 1)
    gyro = np.stack([np.cos(2 * np.pi * 1.8 * t), 0.5 * np.sin(2 * np.pi * 0.9 * t), 0.1 * t], 1)
    x = np.concatenate([acc, gyro], 1) + 0.1 * rng.standard_normal((steps, 6))
    return x[None].astype(np.float32)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--no-write", action="store_true", help="print only, do not write the results file")
    args = ap.parse_args(argv)

    import torch

    import edgeseq
    from edgeseq.export.c import export_c
    from edgeseq.nn import build_model

    x = har_like_input(args.steps)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="edgeseq-bench-") as tmp:
        for name in args.models.split(","):
            arch, cfg = MODELS[name]
            torch.manual_seed(0)
            model = build_model(arch, 6, 6, **cfg).eval()
            graph = edgeseq.capture(model, torch.as_tensor(x[:, :16]))
            entry: dict = {"arch": arch, "config": cfg, "params": graph.num_params(), "targets": {}}
            for target in args.targets.split(","):
                t0 = time.perf_counter()
                art = export_c(
                    graph, Path(tmp) / f"{name}-{target.replace(':', '-')}", target=target, golden_input=x[:, :32]
                )
                export_s = time.perf_counter() - t0
                cost = art.cost(x)
                m = art.manifest
                row = {
                    "export_s": round(export_s, 3),
                    "golden_max_abs_error": m["golden"]["verification"]["max_abs_error"],
                    "weights_bytes": m["weights_bytes"],
                    "state_struct_bytes": m["buffer_plan"]["struct_bytes_estimate"],
                    "model_code_bytes": cost["sizes"].get("model", {}).get("code_bytes"),
                    "model_const_bytes": cost["sizes"].get("model", {}).get("const_bytes"),
                }
                for k in ("flash_bytes", "ram_bytes", "flash_capacity", "ram_capacity"):
                    if k in cost["sizes"]:
                        row[k] = cost["sizes"][k]
                if "instructions" in cost:
                    ins = cost["instructions"]
                    row["instructions_per_inference"] = int(ins["per_inference"])
                    row["instructions_per_step"] = round(ins["per_step"], 1)
                    row["instructions_per_sequence_fixed"] = int(ins["per_sequence_fixed"])
                if "latency" in cost:  # the least disturbed of LATENCY_ROUNDS short timings on a shared machine
                    lat = min(
                        [art.cost(x, timing_repeats=3)["latency"] for _ in range(LATENCY_ROUNDS)],
                        key=lambda d: d["per_inference_s"],
                    )
                    row["latency_per_inference_us"] = round(lat["per_inference_s"] * 1e6, 2)
                    row["latency_per_step_us"] = round(lat["per_step_s"] * 1e6, 3)
                entry["targets"][target] = row
                print(
                    f"{name:12} {target:15} "
                    + (
                        f"{row.get('instructions_per_inference', 0):>10,} insn/inf {row.get('instructions_per_step', 0):>9,.0f} insn/step"
                        if "instructions_per_inference" in row
                        else f"{row['latency_per_inference_us']:>10.1f} us/inf"
                    )
                    + (
                        f"  flash {row['flash_bytes']:>7,} B  RAM {row['ram_bytes']:>6,} B"
                        if "flash_bytes" in row
                        else ""
                    )
                    + f"  err {row['golden_max_abs_error']:.1e}"
                )
            rows[name] = entry
    result = {
        "config": {"steps": args.steps, "batch": 1, "in_features": 6, "classes": 6, "input": "synthetic IMU-like"},
        "method": {
            "instructions": "QEMU 7.2 TB-count plugin (edgeseq/targets/support/insn_count_plugin.c). The same "
            "driver and input run in step / nostep / io modes: per_inference = (step - io) / B, "
            "per_step = (step - nostep) / (B*T), per_sequence_fixed = (nostep - io) / B.",
            "latency": f"x86 only: clock_gettime around esq_reset + esq_run inside the driver, 3 repeats; the "
            f"fastest of {LATENCY_ROUNDS} such timings (this shared 2-core machine)",
            "flash_ram": "Cortex-M: ELF sections of the whole firmware (start-up, semihosting driver with 2 x 4 KiB "
            "I/O buffers, 8 KiB stack, newlib-nano libm); flash = text + rodata + data, RAM = data + "
            "bss + stack. model_code/const bytes: the model object alone.",
            "flags": "-O2 -std=c99 -ffp-contract=off -fno-math-errno (float32, libm expf/tanhf)",
        },
        "models": rows,
    }
    if not args.no_write:
        print(f"wrote {write_results('targets', result)}")
    return result


QUICK = ["--models", "gru32,lif32", "--targets", "x86,arm,cortex-m4", "--steps", "32"]


def run(quick: bool = False, write: bool = True) -> dict:
    """The benchmark as a function: default settings, or a smoke run with ``quick``."""
    return main((QUICK if quick else []) + ([] if write else ["--no-write"]))


if __name__ == "__main__":
    main()
