"""Integer TVM compilation for aarch64: quantized zoo models lowered to integer TIR kernels,
compiled by TVM for aarch64-linux-gnu + NEON, linked with aarch64-linux-gnu-gcc into a Relax VM
library and run under qemu-aarch64 with the aarch64 TVM runtime through edgeseq's driver
(integer tensors in and out), compared bit for bit with the integer-exact interpreter."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("tvm")
pytest.importorskip("torch")

from edgeseq.errors import EdgeseqError  # noqa: E402
from edgeseq.export.tvm.artifact import TvmArtifact  # noqa: E402
from edgeseq.export.tvm.intexport import compile_tvm_int, export_tvm_int  # noqa: E402
from edgeseq.quant import intexact  # noqa: E402

from ..conftest import IN_CI, need_tool  # noqa: E402
from ..unit.test_export_tvm_int import (  # noqa: E402
    as_tuple,
    assert_int_equal,
    check_chunks,
    check_exact,
    check_float_boundary,
    float_input,
    int_inputs,
    ops_program,
    quantized_zoo,
)
from ..unit.zoo_cases import ZOO  # noqa: E402

pytestmark = pytest.mark.toolchain

EM_AARCH64 = 183
# every zoo model with the default preset, the naive preset on a representative subset
CASES = [(c, "edgeseq") for c in sorted(ZOO)] + [(c, "naive") for c in ("gru", "lmu_full", "lmuformer_spiking")]


@pytest.fixture(scope="module")
def arm_runtime():
    """qemu-aarch64, aarch64-linux-gnu-g++ and the aarch64 TVM runtime (fetched with pip once)."""
    need_tool("qemu-aarch64")
    need_tool("aarch64-linux-gnu-gcc")
    if shutil.which("aarch64-linux-gnu-g++") is None:
        msg = "'aarch64-linux-gnu-g++' is not installed (hint: sudo apt-get install -y g++-aarch64-linux-gnu)"
        pytest.fail(f"CI=true but {msg}") if IN_CI else pytest.skip(msg)
    from edgeseq.export.tvm.runtime_arm import driver_path, fetch_runtime

    try:
        path = fetch_runtime()
        driver_path()
    except EdgeseqError as e:
        if IN_CI:
            pytest.fail(f"CI=true but {e}")
        pytest.skip(str(e))
    return path


@pytest.fixture(scope="module")
def arm_modules():
    """Compiled (and exported, once) aarch64 modules per (case, preset), shared by the tests."""
    need_tool("aarch64-linux-gnu-gcc")
    cache = {}

    def get(case, preset):
        if (case, preset) not in cache:
            q = quantized_zoo(case, preset)
            cache[case, preset] = (q, compile_tvm_int(q, "arm"))
        return cache[case, preset]

    return get


@pytest.mark.parametrize("case,preset", CASES)
def test_aarch64_integer_program_is_bit_exact_under_qemu(arm_modules, arm_runtime, case, preset):
    """B in {1, 3}, T in {1, 50}: one qemu run per shape through stream_int (outputs and final
    state) and one through main_int; the float boundary (main) on the largest shape."""
    q, module = arm_modules(case, preset)
    lib = module._exported().read_bytes()
    assert lib[:4] == b"\x7fELF" and int.from_bytes(lib[18:20], "little") == EM_AARCH64
    prog = q.program
    for k, (b, t) in enumerate(((1, 1), (3, 50))):
        xq = q.quantize_input(float_input(b, t, 6, seed=20 + k).astype(np.float64))
        ref, ref_state = intexact.run(prog, xq)
        y, st = module.run_int(xq, streaming=True)
        for o, a, r in zip(prog.outputs, as_tuple(y), ref):
            assert_int_equal(a, r, f"{o.name} B={b} T={t}")
        for key in ref_state:
            assert_int_equal(st[key], ref_state[key], f"state {key} B={b} T={t}")
    # B=1 with T=50 and B=3 with T=1 through main_int (from the zero state)
    for b, t in ((1, 50), (3, 1)):
        xq = q.quantize_input(float_input(b, t, 6, seed=30 + b).astype(np.float64))
        (ref_y, *_), _ = intexact.run(prog, xq)
        y, none = module.run_int(xq, streaming=False)
        assert none is None
        assert_int_equal(as_tuple(y)[0], ref_y, f"main_int B={b} T={t}")


@pytest.mark.parametrize("case", ["gru", "lmu", "lif_rec", "lmuformer_spiking"])
def test_aarch64_chunks_and_float_boundary(arm_modules, arm_runtime, case):
    q, module = arm_modules(case, "edgeseq")
    xq = q.quantize_input(float_input(2, 31, 6, seed=7).astype(np.float64))
    check_chunks(q.program, module, xq, (10,))
    check_float_boundary(q, module, float_input(2, 9, 6, seed=8))


def test_aarch64_every_micro_op_under_qemu(arm_runtime):
    """The hand-made program with every micro-op (ties, saturation, int64, broadcasts, state
    re-reads, temporal and pooled outputs, two input parts) on aarch64."""
    need_tool("aarch64-linux-gnu-gcc")
    prog = ops_program()
    module = compile_tvm_int(prog, "arm", functions=("main_int", "stream_int"))
    st = check_exact(prog, module, int_inputs(prog, 3, 12, seed=5))
    check_exact(prog, module, int_inputs(prog, 3, 12, seed=6), st)


def test_aarch64_integer_artifact_verifies_under_qemu(arm_runtime, tmp_path):
    q = quantized_zoo("lmu", "edgeseq")
    art = export_tvm_int(q, tmp_path / "art", "arm")
    assert art.manifest["numerics"] == "integer"
    tgt = art.manifest["target"]
    assert tgt["name"] == "arm" and tgt["tvm_target"]["mtriple"] == "aarch64-linux-gnu"
    assert "+neon" in tgt["tvm_target"]["mattr"]
    errs = TvmArtifact.load(tmp_path / "art").verify()
    assert errs and max(errs.values()) == 0.0
    check_exact(q.program, art, q.quantize_input(float_input(3, 20, 6, seed=2).astype(np.float64)))
