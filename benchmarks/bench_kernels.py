"""Integer kernels of the generated C, one at a time: executed instructions per multiply-accumulate (matvecs) or per element (requantization, lookup activation) on Cortex-M4, M7, M55 and aarch64, next to CMSIS-NN.

Each kernel kind is a small integer program run through the integer C backend exactly as a model
would be (``generate_int``), built for the target, checked bit for bit against the integer-exact
interpreter on its input, and profiled under QEMU (``edgeseq.targets.profile``: the instructions
of the kernel's own code, every step). Kinds:

=================  =========================================================================
s8s8               64 x 192 int8 weights times int8 inputs (int32 accumulators)
s8s16              64 x 192 int8 weights times int16 inputs (har_lmu's main matvec)
s16s16             64 x 192 int16 weights (within +-255: the int32 accumulator's bound) times int16 inputs
batched short      the LMU memory update: 12 blocks of [m | u] (16 + 1 int16) times one 16 x 17
rows               int16 matrix (``blocks = 12``, the concat read in place)
requantization     192 int32 values, per-channel multiplier and shift, to int16 (saturating)
lookup activation  192 int16 values through a 513-entry interpolated int16 table (tanh)
=================  =========================================================================

CMSIS-NN comparison (quoted, measured with the same QEMU machines and counting plugin, arm-none-eabi-gcc
12 -O2 / clang, CMSIS-NN commit 99f736a; executed instructions, not cycles): ``arm_fully_connected_s8``
64 x 192 (requantization included) 2.15 per MAC on M4, 0.55 (gcc) / 0.225 (clang) on M55;
``arm_fully_connected_s16`` 2.68 / 1.05 / 1.31.

    python -m benchmarks.bench_kernels [--targets cortex-m4,cortex-m7,cortex-m55,arm] [--compilers auto,gcc]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import write_results

TARGETS = ["cortex-m4", "cortex-m7", "cortex-m55", "arm"]
CMSIS_NN = [
    {
        "kernel": "CMSIS-NN arm_fully_connected_s8 64x192 (incl. requant)",
        "cortex-m4": 2.15,
        "cortex-m55 gcc": 0.55,
        "cortex-m55 clang": 0.225,
    },
    {
        "kernel": "CMSIS-NN arm_fully_connected_s16 64x192",
        "cortex-m4": 2.68,
        "cortex-m55 gcc": 1.05,
        "cortex-m55 clang": 1.31,
    },
    {
        "kernel": "CMSIS-NN arm_lstm_unidirectional_s8 (whole model, hidden 64)",
        "cortex-m4": 4.06,
        "cortex-m55 gcc": 1.52,
        "cortex-m55 clang": 1.105,
    },
    {"kernel": "edgeseq before: esq_mv_s8s8 64x192 (one row per pass)", "cortex-m4": 2.06, "cortex-m55 gcc": 0.34},
    {"kernel": "edgeseq before: esq_mv_s8s16 64x192", "cortex-m4": 2.20, "cortex-m55 gcc": 0.59},
    {
        "kernel": "edgeseq before: LMU memory update 16x17 x12 (one call per block)",
        "cortex-m4": 2.85,
        "cortex-m55 gcc": 2.62,
    },
]


def _matvec_program(wbits: int, xbits: int, n: int = 64, i: int = 192, seed: int = 0):
    from edgeseq.quant.program import InputSpec, MatVec, OutputSpec, ProgramBuilder

    rng = np.random.default_rng(seed)
    b = ProgramBuilder()
    x = b.add_input(InputSpec("x", np.arange(i), xbits, np.full(i, 0.01), np.full(i, 100.0), np.zeros(i)))
    hi = 127 if wbits == 8 else 255  # int16 weights: 9 significant bits keep 192-term sums within int32
    w = b.const("w", rng.integers(-hi, hi + 1, size=(n, i)), np.int8 if wbits == 8 else np.int16)
    y = b.emit(MatVec(out="y", x=x, w=w), n, bits=32)
    b.outputs.append(OutputSpec("y", y, True, np.ones(n)))
    return b.build(), i, n * i, "matvec"


def _memory_program(seed: int = 0):
    """The LMU memory update of har_lmu: m (12 x 16 int16 state), u (12 int16 inputs)."""
    from edgeseq.quant.program import Concat, InputSpec, Load, MatVec, OutputSpec, ProgramBuilder, Requant, Store

    rng = np.random.default_rng(seed)
    b = ProgramBuilder()
    u = b.add_input(InputSpec("u", np.arange(12), 16, np.full(12, 0.01), np.full(12, 100.0), np.zeros(12)))
    b.add_state("m", (192,), 16)
    m = b.emit(Load(out="m.prev", state="m"), 192, bits=16)
    mu = b.emit(Concat(out="mu", xs=(m, u), blocks=12), 204, bits=16)
    w = b.const("A", rng.integers(-4000, 4000, size=(16, 17)), np.int16)
    acc = b.emit(MatVec(out="acc", x=mu, w=w, blocks=12), 192, bits=32)
    mult = b.const("mult", rng.integers(1 << 30, (1 << 31) - 1, size=192), np.int32)
    shift = b.const("shift", np.full(192, 46), np.int8)
    m2 = b.emit(Requant(out="m.new", x=acc, mult=mult, shift=shift), 192, bits=16)
    b.emit(Store(out="m", x=m2), 192)
    b.outputs.append(OutputSpec("m", m2, True, np.ones(192)))
    return b.build(), 12, 12 * 16 * 17, "matvec"


def _requant_program(seed: int = 0):
    from edgeseq.quant.program import InputSpec, OutputSpec, ProgramBuilder, Requant

    rng = np.random.default_rng(seed)
    b = ProgramBuilder()
    n = 192
    x = b.add_input(InputSpec("x", np.arange(n), 30, np.full(n, 1.0), np.full(n, 1.0), np.zeros(n)))
    mult = b.const("mult", rng.integers(1 << 30, (1 << 31) - 1, size=n), np.int32)
    shift = b.const("shift", rng.integers(44, 47, size=n), np.int8)
    y = b.emit(Requant(out="y", x=x, mult=mult, shift=shift), n, bits=16)
    b.outputs.append(OutputSpec("y", y, True, np.ones(n)))
    return b.build(), n, n, "requant"


def _lut_program():
    from edgeseq.quant.program import InputSpec, Lut, OutputSpec, ProgramBuilder

    b = ProgramBuilder()
    n = 192
    x = b.add_input(InputSpec("x", np.arange(n), 16, np.full(n, 1 / 8192), np.full(n, 8192.0), np.zeros(n)))
    grid = (np.arange(513) * 128 - 32768) / 8192.0
    t = b.const("tanh", np.clip(np.rint(np.tanh(grid) * 32767), -32768, 32767), np.int16)
    y = b.emit(Lut(out="y", x=x, table=t), n, bits=16)
    b.outputs.append(OutputSpec("y", y, True, np.ones(n)))
    return b.build(), n, n, "lut"


KERNELS = {
    "s8s8 64x192": lambda: _matvec_program(8, 8),
    "s8s16 64x192": lambda: _matvec_program(8, 16),
    "s16s16 64x192": lambda: _matvec_program(16, 16),
    "batched short rows: LMU memory 16x17 x12": _memory_program,
    "requantization int32 -> int16 (per element)": _requant_program,
    "lookup activation: 513-entry int16 table (per element)": _lut_program,
}


def measure(prog, in_features: int, kind: str, target: str, compiler: str, tmp: Path, steps: int = 16) -> dict:
    """Build ``prog`` for ``target``, check it bit for bit, profile it: the kernel's instructions per step."""
    from edgeseq.export.c.artifact import split_outputs
    from edgeseq.export.c.intgen import generate_int
    from edgeseq.quant import intexact
    from edgeseq.targets import get_target
    from edgeseq.targets.profile import profile

    t = get_target(target, compiler=compiler)
    src = generate_int(prog, in_features, target=t.name)
    x = (np.random.default_rng(1).normal(size=(1, steps, in_features)) * 3).astype(np.float32)
    binary = t.build(src, tmp)
    res = t.run(binary, x, qout=True)
    got = split_outputs(src.info, res.step, res.pooled)
    xq = {s.vec: s.quantize(x) for s in prog.inputs}
    want, _ = intexact.run(prog, xq)
    exact = all(np.array_equal(g, w) for g, w in zip(got, want))
    prof = profile(t, src, x)
    mine = [e for e in prof["per_step"] if any(o["kind"] == kind for o in e["ops"])]
    return {
        "instructions_per_step": sum(e["instructions"] for e in mine),
        "bit_exact": exact,
        "compiler": t.resolved_compiler(),
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--compilers", default="auto,gcc", help="auto (the build's default), gcc, clang, clang-NN")
    ap.add_argument("--kernels", default=",".join(KERNELS))
    ap.add_argument("--no-write", action="store_true", help="print only, do not write the results file")
    args = ap.parse_args(argv)
    from edgeseq.targets.compilers import find_clang

    compilers = [c for c in args.compilers.split(",") if c in ("auto", "gcc") or find_clang(c)]
    rows, exact = [], True
    with tempfile.TemporaryDirectory(prefix="edgeseq-kernels-") as tmp:
        for name in args.kernels.split(","):
            prog, in_f, work, kind = KERNELS[name]()
            row = {"kernel": name, "unit": "per MAC" if kind == "matvec" else "per element", "work_per_step": work}
            for target in args.targets.split(","):
                seen = set()
                for cc in compilers:
                    m = measure(prog, in_f, kind, target, cc, Path(tmp) / f"{len(rows)}-{target}-{cc}")
                    if m["compiler"] in seen:
                        continue
                    seen.add(m["compiler"])
                    exact &= m["bit_exact"]
                    col = f"{target} {m['compiler']}"
                    row[col] = round(m["instructions_per_step"] / work, 3)
                    print(
                        f"{name:48} {col:22} {row[col]:7.3f} {row['unit']}" + ("" if m["bit_exact"] else " NOT EXACT"),
                        flush=True,
                    )
            rows.append(row)
    result = {
        "config": {"targets": args.targets, "compilers": compilers, "steps": 16, "flags": "-O2 (the targets' own)"},
        "target": "edgeseq's int8 matvec kernels at or below CMSIS-NN's instructions per MAC on M4 and M55; every "
        "kernel bit-exact",
        "target_met": {"bit_exact": exact},
        "method": "one small integer program per kernel kind, built like a model, checked against the integer-exact "
        "interpreter, profiled under QEMU (the kernel's region of model.c, instructions per step / work)",
        "tables": {
            "instructions per MAC (matvecs) or per element": rows,
            "comparison (quoted): CMSIS-NN and edgeseq's kernels before, per MAC": CMSIS_NN,
        },
    }
    s8 = next((r for r in rows if r["kernel"].startswith("s8s8")), None)
    if s8:
        m4 = [v for k, v in s8.items() if k.startswith("cortex-m4 ")]
        m55 = [v for k, v in s8.items() if k.startswith("cortex-m55 ")]
        if m4:
            result["target_met"]["m4_s8s8_vs_cmsis"] = min(m4) <= 2.15
        if m55:
            result["target_met"]["m55_s8s8_vs_cmsis"] = min(m55) <= 0.225
    if not args.no_write:
        print(f"wrote {write_results('kernels', result)}")
    return result


QUICK = ["--targets", "cortex-m4", "--compilers", "auto", "--kernels", "s8s16 64x192"]


def run(quick: bool = False, write: bool = True) -> dict:
    """The benchmark as a function: default settings, or a smoke run with ``quick``."""
    return main((QUICK if quick else []) + ([] if write else ["--no-write"]))


if __name__ == "__main__":
    main()
