"""Integer C backend on the cross targets: every zoo program (edgeseq and naive presets) and the
hand-built edge-case program in one executable / firmware per target -- aarch64 under qemu-aarch64
(portable C), Cortex-M4 (DSP: SMLAD kernels) and Cortex-M55 (MVE kernels) under qemu-system-arm --
bit for bit against the integer-exact interpreter; the HAR recipe's 13k-parameter int8 LMU exported
for each target with instruction counts, fitting a Cortex-M4 with 64 KB of flash and 32 KB of RAM;
models too large for the board raise ResourceError with the sizes."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from edgeseq.errors import ResourceError
from edgeseq.export.c.intgen import generate_int
from edgeseq.quant import intexact

from ..conftest import need_tool
from ..unit.c_int_cases import ZOO_KEYS, check_bit_exact, edge_program, har_lmu_quantized, zoo_quantized

pytestmark = pytest.mark.toolchain

TARGETS = ("arm", "cortex-m4", "cortex-m55")
TOOLS = {
    "arm": ("aarch64-linux-gnu-gcc", "qemu-aarch64"),
    "cortex-m4": ("arm-none-eabi-gcc", "qemu-system-arm"),
    "cortex-m55": ("arm-none-eabi-gcc", "qemu-system-arm"),
}
MODELS = ZOO_KEYS + [("hand-built", "edge")]


def _tools(target):
    for t in TOOLS[target]:
        need_tool(t)


@pytest.fixture(scope="module")
def zoo_bins(tmp_path_factory):
    """Per target, lazily: one binary holding every zoo program and the edge program."""
    from edgeseq.export.c.multi import build_multi

    cache = {}

    def get(target):
        if target not in cache:
            _tools(target)
            progs = [zoo_quantized(p, c).program for p, c in ZOO_KEYS] + [edge_program()]
            srcs = [generate_int(p, 6, prefix=f"m{k}", target=target) for k, p in enumerate(progs)]
            mb = build_multi(srcs, target, tmp_path_factory.mktemp(f"zoo-int-{target}"))
            assert "warning" not in mb.target.build_log, mb.target.build_log
            cache[target] = (mb, progs)
        return cache[target]

    return get


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("preset,case", MODELS, ids=[f"{p}-{c}" for p, c in MODELS])
def test_program_is_bit_exact_on_target(zoo_bins, target, preset, case):
    mb, progs = zoo_bins(target)
    k = MODELS.index((preset, case))
    # the float API's whole-sequence modes need T * outputs within the firmware's I/O buffer: zoo models only
    check_bit_exact(
        lambda x, **kw: mb.run(k, x, **kw), mb.infos[k], progs[k], seed=100 + k, float_api=case != "edge" and k % 4 == 0
    )


def test_simd_kernels_are_compiled_in(zoo_bins):
    """Each build compiles in its kernel flavour (DSP on Cortex-M4, MVE on Cortex-M55, NEON on aarch64)
    and its vector elementwise loops where the flavour has them."""
    for target, markers in (
        ("cortex-m4", ("ESQ_MV_DSP",)),
        ("cortex-m55", ("ESQ_MV_MVE", "ESQ_V4")),
        ("arm", ("ESQ_MV_NEON", "ESQ_V4")),
    ):
        mb, _ = zoo_bins(target)
        src = mb.binary.parent.parent / "src" / "m0_unit.c"
        out = subprocess.run(
            [mb.target.compiler_path(), *mb.target.cflags(), "-dM", "-E", "-I", str(src.parent), str(src)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for marker in markers:
            assert f"#define {marker} 1" in out, (target, marker)


# ---------------------------------------------------------------- the HAR-sized int8 LMU


@pytest.fixture(scope="module")
def har(tmp_path_factory):
    from edgeseq.export.c.intexport import export_c_int

    q, x = har_lmu_quantized()
    cache = {}

    def get(target):
        if target not in cache:
            _tools(target)
            opts = {"flash_bytes": 64 * 1024, "ram_bytes": 32 * 1024} if target == "cortex-m4" else None
            art = export_c_int(
                q,
                tmp_path_factory.mktemp(f"har-{target}") / "art",
                target=target,
                golden_input=x[:2],
                target_options=opts,
            )
            cache[target] = art
        return q, x, cache[target]

    return get


@pytest.mark.parametrize("target", TARGETS)
def test_har_lmu_export_is_bit_exact_and_measured(har, target):
    from edgeseq.export import Artifact

    q, x, art = har(target)
    ver = art.manifest["golden"]["verification"]
    assert ver["bit_exact"] and ver["float_api"]["bit_exact"] and art.manifest["golden"]["shape"] == [2, 128, 6]
    assert art.run_golden()["bit_exact"]
    y = Artifact.load(art.path).run(x[2:4])
    want = intexact.dequantize_outputs(q.program, intexact.run(q.program, q.quantize_input(x[2:4]))[0])[0].astype(
        np.float32
    )  # Artifact.run: q * scale, one rounding
    assert np.array_equal(y, want)
    cost = art.cost(x[:1])
    ins = cost["instructions"]
    assert ins["per_inference"] == pytest.approx(128 * ins["per_step"] + ins["per_sequence_fixed"])
    assert ins["per_step"] > q.program.macs_per_step() / 16  # at most 16 multiply-accumulates per instruction
    assert cost["sizes"]["state_struct_bytes"] == art.manifest["buffer_plan"]["struct_bytes_estimate"]


def test_har_lmu_fits_a_64k_flash_32k_ram_cortex_m4(har):
    q, x, art = har("cortex-m4")
    s = art.sizes
    assert s["flash_capacity"] == 64 * 1024 and s["ram_capacity"] == 32 * 1024
    assert s["flash_bytes"] <= 64 * 1024 and s["ram_bytes"] <= 32 * 1024
    assert s["model"]["const_bytes"] >= art.manifest["weights_bytes"] > 0
    # int8/int16 tables instead of float32 parameters; no per-step buffers growing with T
    assert art.manifest["weights_bytes"] < 0.4 * 4 * q.graph.num_params()
    assert art.manifest["buffer_plan"]["struct_bytes_estimate"] < 4096


def test_run_script_and_validate_on_the_emulator(har):
    from edgeseq.targets.driver import read_output
    from edgeseq.validate import validate

    q, x, art = har("cortex-m55")
    subprocess.run(
        [str(art.path / "run.sh"), "step", "golden/input.bin", "out.bin"],
        cwd=art.path,
        check=True,
        capture_output=True,
        timeout=300,
    )
    from edgeseq.export.c.artifact import dequantize

    # the firmware's float API: (float) q * (float) scale of the integer golden outputs, bit for bit
    got, exp = read_output(art.path / "out.bin"), read_output(art.path / "golden" / "expected_int.bin", dtype="<i4")
    assert np.array_equal(got["pooled"], dequantize(art.manifest, exp["step"], exp["pooled"])[1])
    (art.path / "out.bin").unlink()
    rep = validate(art.path, measure=True)
    assert rep.passed, rep.summary()
    assert rep.performance["instructions"]["per_step"] > 0


def test_models_that_do_not_fit_raise_resource_error(tmp_path):
    """RAM: state + driver buffers + stack checked before compiling; flash: the linker's overflow
    (the tables fit, the code does not) becomes a ResourceError naming the sizes."""
    from edgeseq.export.c.intexport import export_c_int

    _tools("cortex-m4")
    q, x = har_lmu_quantized()
    with pytest.raises(ResourceError, match="RAM") as e:
        export_c_int(q, tmp_path / "a", target="cortex-m4", target_options={"ram_bytes": 16 * 1024})
    assert "cortex-m4" in str(e.value)
    with pytest.raises(ResourceError, match=r"flash needs \d+ bytes, the board has 24576"):
        export_c_int(q, tmp_path / "b", target="cortex-m4", target_options={"flash_bytes": 24 * 1024})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_export_facade_and_cpu_variant(tmp_path):
    """edgeseq.export(quantized graph, target=...) for a Cortex-M and an aarch64 CPU variant."""
    import edgeseq

    _tools("cortex-m4")
    _tools("arm")
    q = zoo_quantized("edgeseq", "l2mu")
    x = (np.random.default_rng(2).normal(size=(2, 24, 6)) * 2).astype(np.float32)
    want = intexact.dequantize_outputs(q.program, intexact.run(q.program, q.quantize_input(x))[0])[0].astype(
        np.float32
    )  # Artifact.run: q * scale, one rounding
    art = edgeseq.export(q, target="cortex-m4", out=tmp_path / "m4", golden_input=x)
    assert art.kind == "c" and art.manifest["numerics"] == "integer"
    assert np.array_equal(art.run(x), want)
    from edgeseq.export.c.intexport import export_c_int

    a72 = export_c_int(q, tmp_path / "a72", target="arm:cortex-a72", golden_input=x)
    assert a72.manifest["target"]["options"]["cpu"] == "cortex-a72" and "-mcpu=cortex-a72" in a72.manifest["cflags"]
    assert a72.manifest["golden"]["verification"]["bit_exact"]
    assert np.array_equal(a72.run(x)[0], want)
