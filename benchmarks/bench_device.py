"""The shipped int8 HAR model on every device target and compiler: executed instructions per inference, per step and per multiply-accumulate (QEMU), where they go (per micro-op), flash / RAM, and the software-float check.

``har_lmu`` (the shipped checkpoint; its MACs per step are recorded in the results) is quantized with the
edgeseq plan exactly as ``edgeseq demo har`` does (calibrated on training windows), exported with
``export_c_int`` for each target and compiler (each build checked bit for bit against the
integer-exact interpreter), and measured on one held-out HAR window of 128 steps. Instruction
counts under QEMU are deterministic, so the goals are asserted:

- cortex-m4 <= 1.6 instructions per MAC, cortex-m55 <= 0.45, aarch64 <= 0.5, with the compiler the
  build picks by default (``compiler=auto``); and per inference at most the absolute figures of the
  goal, cortex-m4 <= 3.3 M and cortex-m55 <= 0.93 M (the rate times the model's MACs when it had 16,008
  MACs per step; the shipped model has more, recorded per run);
- no software floating point (``__aeabi_d*`` / ``__aeabi_f*``) reachable from the input quantizer,
  the integer step or the float step API on the Cortex-M builds.

    python -m benchmarks.bench_device [--targets cortex-m4,cortex-m55,arm] [--compilers gcc,clang-14,clang-19]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.common import write_results

TARGETS = ["cortex-m4", "cortex-m7", "cortex-m55", "arm", "arm:cortex-a72"]
COMPILERS = ["gcc", "clang-14", "clang-19"]
GOALS = {"cortex-m4": 1.6, "cortex-m55": 0.45, "arm": 0.5}  # instructions per MAC, default compiler
CEILINGS = {"cortex-m4": 3_300_000, "cortex-m55": 930_000}  # instructions per inference, default compiler
STEP_FUNCTIONS = ("esq_quantize", "esq_step_q", "esq_step")


def quantized_har_lmu():
    from edgeseq.data import load_dataset
    from edgeseq.models import load_model
    from edgeseq.quant.tasks import quantize_on_task, task_data

    lm = load_model("har_lmu")
    data = task_data("har", lm.graph, calib=512, seed=0)
    q = quantize_on_task(lm.graph, data, "edgeseq", progress=False)
    x = load_dataset("har", "test").x[:1].astype("float32")
    return q, x


def soft_float_calls(art) -> list[str]:
    """Software floating-point helpers reachable from the per-step functions of a Cortex-M build."""
    from edgeseq.targets.elf import calls_in_functions
    from edgeseq.toolchains import require

    calls = calls_in_functions(
        art.binary.parent.parent / "obj" / "model.o", STEP_FUNCTIONS, objdump=require("arm-none-eabi-objdump")
    )
    return sorted({c for cs in calls.values() for c in cs if c.startswith(("__aeabi_d", "__aeabi_f"))})


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument(
        "--compilers", default=",".join(COMPILERS), help="gcc, clang (newest), clang-NN; missing ones are skipped"
    )
    ap.add_argument("--no-float", action="store_true", help="skip the float C models' compiler table")
    ap.add_argument("--no-write", action="store_true", help="print only, do not write the results file")
    args = ap.parse_args(argv)

    from edgeseq.export.c.intexport import export_c_int
    from edgeseq.targets import get_target
    from edgeseq.targets.compilers import find_clang

    q, x = quantized_har_lmu()
    macs = q.program.macs_per_step()
    steps = x.shape[1]
    rows, breakdown, missing = [], {}, []
    compilers = [c for c in args.compilers.split(",") if c == "gcc" or find_clang(c)]
    missing = [c for c in args.compilers.split(",") if c not in compilers]
    with tempfile.TemporaryDirectory(prefix="edgeseq-bench-") as tmp:
        for target in args.targets.split(","):
            auto = get_target(target).resolved_compiler()
            for cc in compilers + (["auto"] if auto not in compilers else []):
                t0 = time.perf_counter()
                art = export_c_int(
                    q,
                    Path(tmp) / f"{target.replace(':', '-')}-{cc}",
                    target=target,
                    golden_input=x[:, :32],
                    target_options={"compiler": cc},
                )
                resolved = art.manifest["target"]["options"]["compiler"]
                is_auto = resolved == auto
                cost = art.cost(x, profile=is_auto)
                ins = cost["instructions"]
                row = {
                    "target": target,
                    "compiler": resolved,
                    "version": next(
                        (
                            v
                            for k, v in art.manifest["toolchain"].items()
                            if k == resolved or (resolved == "gcc" and k.endswith("gcc"))
                        ),
                        None,
                    ),
                    "default": is_auto,
                    "instructions_per_inference": int(ins["per_inference"]),
                    "instructions_per_step": round(ins["per_step"], 1),
                    "instructions_per_mac": round(ins["per_inference"] / (macs * steps), 3),
                    "bit_exact": bool(art.manifest["golden"]["verification"]["bit_exact"]),
                    "export_s": round(time.perf_counter() - t0, 2),
                }
                for k in ("flash_bytes", "ram_bytes"):
                    if k in cost["sizes"]:
                        row[k] = cost["sizes"][k]
                if target.startswith("cortex-m"):
                    row["soft_float_calls_in_step"] = ", ".join(soft_float_calls(art)) or "none"
                rows.append(row)
                print(
                    f"{target:15} {resolved:9} {row['instructions_per_inference']:>10,} insn/inf "
                    f"{row['instructions_per_step']:>9,.0f}/step {row['instructions_per_mac']:.3f}/MAC"
                    + (" (default)" if is_auto else ""),
                    flush=True,
                )
                if is_auto and "profile" in cost:
                    prof = cost["profile"]
                    breakdown[target] = [
                        {
                            "region": e["label"],
                            "instructions_per_step": round(e["instructions"], 1),
                            "share": round(e["share"], 4),
                            "macs_per_step": sum(_op_macs(q.program, o) for o in e["ops"]),
                            "instructions_per_mac": (
                                round(e["instructions"] / m, 3)
                                if (m := sum(_op_macs(q.program, o) for o in e["ops"]))
                                else None
                            ),
                        }
                        for e in prof["per_step"]
                    ]
                if cc == "auto":
                    break
    float_rows = [] if args.no_float else float_compilers(args.targets.split(","), compilers)
    met = {}
    budget = {t: min(round(per_mac * macs * steps), CEILINGS.get(t, 1 << 62)) for t, per_mac in GOALS.items()}
    for target, per_mac in GOALS.items():
        r = next((r for r in rows if r["target"] == target and r["default"]), None)
        if r is not None:
            met[target] = r["instructions_per_mac"] <= per_mac and r["instructions_per_inference"] <= budget[target]
    met["no_soft_float"] = all(r.get("soft_float_calls_in_step", "none") == "none" for r in rows)
    tables = {f"instructions per inference (har_lmu int8, {steps} steps, {macs:,} MACs per step)": rows}
    for target, b in breakdown.items():
        tables[f"where the instructions go per step: {target} (default compiler)"] = b
    if float_rows:
        tables["float C models (bench_targets' HAR-sized models): instructions per inference by compiler"] = float_rows
    result = {
        "config": {
            "model": "har_lmu (shipped)",
            "quantization": "edgeseq plan, 512 HAR training windows",
            "input": "one held-out HAR window",
            "steps": steps,
            "macs_per_step": macs,
            "instructions_per_inference_budget": budget,
            "compilers_missing": missing,
        },
        "target": f"har_lmu int8 ({macs:,} MACs per step): cortex-m4 <= 1.6 instructions/MAC and "
        f"<= {budget['cortex-m4'] / 1e6:.2f} M per inference, cortex-m55 <= 0.45 and "
        f"<= {budget['cortex-m55'] / 1e6:.2f} M, aarch64 <= 0.5, default compiler; no software float in the step path",
        "target_met": met,
        "method": {
            "instructions": "QEMU 7.2 TB-count plugin, step / nostep / io runs of the same driver",
            "breakdown": "QEMU profiling plugin on a -g build with identical model code; a micro-op's "
            "region is its emitted code in model.c (DWARF line table)",
            "soft_float": "objdump -dr of model.o: calls reachable from esq_quantize, esq_step_q, esq_step",
        },
        "tables": tables,
    }
    if not args.no_write:
        print(f"wrote {write_results('device', result)}")
    failed = [k for k, v in met.items() if not v]
    if failed:
        raise SystemExit(f"goals not met: {', '.join(failed)}")
    return result


def float_compilers(targets: list[str], compilers: list[str], models=("gru32", "lmu32", "lif32")) -> list[dict]:
    """The float C backend's models of bench_targets, per target and compiler (instructions per
    inference, 128 steps): the compiler choice is not only about the integer kernels."""
    import torch

    import edgeseq
    from benchmarks.bench_targets import MODELS, har_like_input
    from edgeseq.export.c import export_c
    from edgeseq.nn import build_model
    from edgeseq.targets import BuildError

    x = har_like_input(128)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeseq-bench-") as tmp:
        for name in models:
            arch, cfg = MODELS[name]
            torch.manual_seed(0)
            g = edgeseq.capture(build_model(arch, 6, 6, **cfg).eval(), torch.as_tensor(x[:, :16]))
            for target in targets:
                if ":" in target:
                    continue
                row = {"model": name, "target": target}
                for cc in compilers:
                    try:
                        a = export_c(
                            g,
                            Path(tmp) / f"{name}-{target}-{cc}",
                            target=target,
                            golden_input=x[:, :32],
                            target_options={"compiler": cc},
                        )
                        row[cc] = int(a.cost(x)["instructions"]["per_inference"])
                    except BuildError as e:  # recorded: an old compiler may crash on generated code
                        row[cc] = None
                        row[f"{cc} error"] = e.message[-160:].strip().splitlines()[-1] if e.message else "build failed"
                if row.get("gcc"):
                    for cc in compilers:
                        if cc != "gcc" and row.get(cc):
                            row[f"{cc} / gcc"] = round(row[cc] / row["gcc"], 3)
                rows.append(row)
                print(f"float {name:7} {target:11} " + "  ".join(f"{cc} {row[cc]}" for cc in compilers), flush=True)
    return rows


def _op_macs(prog, op: dict) -> int:
    from edgeseq.quant.program import MatVec

    o = next((m for m in prog.step if m.out == op["out"]), None)
    return int(prog.consts[o.w].size) * o.blocks if isinstance(o, MatVec) else 0


QUICK = ["--targets", "cortex-m4", "--compilers", "gcc", "--no-float"]


def run(quick: bool = False, write: bool = True) -> dict:
    """The benchmark as a function: default settings, or a smoke run with ``quick``."""
    return main((QUICK if quick else []) + ([] if write else ["--no-write"]))


if __name__ == "__main__":
    main()
