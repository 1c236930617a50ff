"""Cortex-M firmware under qemu-system-arm: every zoo model on cortex-m4 (mps2-an386), several on
cortex-m7 (mps2-an500) and cortex-m55 (mps3-an547), compared with the reference interpreter;
the device-side step API equals whole-sequence and chunked runs; instruction counts and flash /
RAM sizes; models that do not fit the board raise ResourceError with the sizes."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from edgeseq.errors import ResourceError
from edgeseq.export.c import export_c
from edgeseq.targets.driver import read_output
from edgeseq.targets.elf import ElfFile

from ..conftest import need_tool
from ..unit.test_c_backend import (
    CELL_GROUPS,
    SHAPES,
    cells_graph,
    check_cell_cases,
    check_outputs,
    make_input,
    zoo_graph,
)
from ..unit.zoo_cases import ZOO

pytestmark = pytest.mark.toolchain


@pytest.fixture(scope="module")
def mcu_tools():
    need_tool("arm-none-eabi-gcc")
    need_tool("qemu-system-arm")
    need_tool("gcc")


@pytest.fixture(scope="module")
def exported(mcu_tools, tmp_path_factory):
    cache = {}

    def get(case, target="cortex-m4"):
        key = (case, target)
        if key not in cache:
            graph = zoo_graph(case)
            art = export_c(graph, tmp_path_factory.mktemp(f"{case}-{target}") / "art", target=target)
            cache[key] = (graph, art)
        return cache[key]

    return get


@pytest.mark.parametrize("case", sorted(ZOO))
def test_zoo_model_on_cortex_m4_matches_reference(exported, case):
    graph, art = exported(case)
    ver = art.manifest["golden"]["verification"]
    assert ver["max_abs_error"] <= 1e-4 and ver["spike_mismatches"] == 0
    for k, (batch, steps) in enumerate(SHAPES):
        x = make_input(graph, batch, steps, seed=200 + k)
        check_outputs(graph, art.manifest, x, art.target.run(art.binary, x, mode="step", state=True))


@pytest.mark.parametrize(
    "target,case",
    [
        ("cortex-m7", "gru"),
        ("cortex-m7", "lmuformer_spiking"),
        ("cortex-m7", "l2mu_syn"),
        ("cortex-m55", "lmu_full"),
        ("cortex-m55", "lif_rec"),
        ("cortex-m55", "lmuformer"),
    ],
)
def test_other_cores_match_reference(exported, target, case):
    graph, art = exported(case, target)
    for k, (batch, steps) in enumerate(SHAPES[1:]):
        x = make_input(graph, batch, steps, seed=300 + k)
        check_outputs(graph, art.manifest, x, art.target.run(art.binary, x, mode="step", state=True))


@pytest.mark.parametrize("case", ["lmuformer", "l2mu_syn", "minlstm"])
def test_device_step_api_equals_whole_and_chunked(exported, case):
    """On the device the step API is the only API: esq_step per step == esq_run whole == chunked."""
    graph, art = exported(case)
    io = 1024  # the firmware driver's I/O buffer (floats): whole-sequence mode holds T*F inputs, T*S outputs
    steps = min(60, io // max(graph.in_features, art.manifest["step_out_features"], 1))
    assert steps >= 10
    x = make_input(graph, 2, steps, seed=11)
    runs = [art.target.run(art.binary, x, mode=m, state=True) for m in ("step", "run", "chunk:7")]
    for r in runs[1:]:
        np.testing.assert_array_equal(r.step, runs[0].step)
        np.testing.assert_array_equal(r.pooled, runs[0].pooled)
        np.testing.assert_array_equal(r.state, runs[0].state)
    check_outputs(graph, art.manifest, x, runs[0])


def test_sizes_and_instruction_counts(exported):
    graph, art = exported("gru")
    s = art.sizes
    elf = ElfFile(art.binary).section_sizes()
    assert s["flash_bytes"] == elf["text"] + elf["rodata"] + elf["data"]
    assert s["ram_bytes"] == elf["data"] + elf["bss"] + elf["stack"]
    assert s["flash_bytes"] > 4 * graph.num_params() and s["flash_capacity"] == 4 << 20
    assert s["state_struct_bytes"] == art.manifest["buffer_plan"]["struct_bytes_estimate"]
    # arm-none-eabi-size agrees with the ELF reader
    out = subprocess.run(
        ["arm-none-eabi-size", "-A", "-d", str(art.binary)], check=True, capture_output=True, text=True
    ).stdout
    rows = {ln.split()[0]: int(ln.split()[1]) for ln in out.splitlines() if ln.startswith(".")}
    assert rows[".text"] + rows[".rodata"] == elf["text"] + elf["rodata"] - rows.get(".ARM.exidx", 0)
    cost = art.cost(make_input(graph, 2, 32, seed=4))
    ins = cost["instructions"]
    assert cost["emulator"] == "qemu-system-arm"
    assert ins["per_step"] > 2 * graph.num_params() * 0.5  # at least a multiply-add per weight
    assert ins["per_inference"] == pytest.approx(32 * ins["per_step"] + ins["per_sequence_fixed"])


def test_firmware_run_script(exported):
    graph, art = exported("lif")
    subprocess.run(
        [str(art.path / "run.sh"), "step", "golden/input.bin", "out.bin"],
        cwd=art.path,
        check=True,
        capture_output=True,
        timeout=120,
    )
    got, want = read_output(art.path / "out.bin"), read_output(art.path / "golden" / "expected.bin")
    assert np.max(np.abs(got["pooled"] - want["pooled"])) <= 1e-4
    (art.path / "out.bin").unlink()


def test_firmware_that_overflows_flash_raises_resource_error(mcu_tools, tmp_path):
    """The weights fit the (reduced) flash, code + libm do not: the linker's overflow becomes a
    ResourceError naming the sizes."""
    graph = zoo_graph("gru")
    with pytest.raises(ResourceError, match=r"flash needs \d+ bytes, the board has 16384") as e:
        export_c(graph, tmp_path / "a", target="cortex-m4", target_options={"flash_bytes": 16384})
    assert "cortex-m4" in str(e.value)
    assert not (tmp_path / "a").exists()


def test_model_too_large_for_board(mcu_tools, tmp_path):
    from edgeseq.ir import GraphBuilder
    from edgeseq.ir import ops as O

    rng = np.random.default_rng(0)
    b = GraphBuilder(16)
    graph = b.build(
        b.add(
            O.LSTM(
                w_ih=rng.standard_normal((1024, 16)).astype(np.float32),
                w_hh=rng.standard_normal((1024, 256)).astype(np.float32),
            ),
            "x",
            "lstm",
        )
    )
    with pytest.raises(ResourceError, match=r"1114112 bytes of flash; cortex-m55 \(mps3-an547\) has 524288"):
        export_c(graph, tmp_path / "b", target="cortex-m55")
    with pytest.raises(ResourceError, match="RAM"):
        export_c(zoo_graph("gru"), tmp_path / "c", target="cortex-m4", target_options={"ram_bytes": 12 * 1024})
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


@pytest.mark.parametrize("group", CELL_GROUPS)
def test_every_cell_case_on_cortex_m4(mcu_tools, tmp_path, group):
    """Every case of cell_cases.py (step programs rendered to C) under QEMU: whole, per step and
    chunked runs agree bit for bit and match the reference at two lengths and batch sizes."""
    graph = cells_graph(group)
    art = export_c(graph, tmp_path / "art", target="cortex-m4", target_options={"io_buffer_floats": 8192})
    check_cell_cases(art.target, art.binary, graph, art.manifest, tol=1e-4)
