"""TVM backend for aarch64: zoo models compiled by TVM for aarch64-linux-gnu + NEON, linked with
aarch64-linux-gnu-gcc into a Relax VM shared library, then run under qemu-aarch64 with the aarch64
TVM runtime (from the apache-tvm / apache-tvm-ffi aarch64 wheels) through edgeseq's C++ driver,
and compared with the float64 reference interpreter."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

from edgeseq.errors import EdgeseqError  # noqa: E402
from edgeseq.export.tvm import compile_tvm, export_tvm  # noqa: E402
from edgeseq.ir import GraphBuilder  # noqa: E402
from edgeseq.ir.interpret import run as reference  # noqa: E402

from ..conftest import IN_CI, need_tool  # noqa: E402
from ..unit.cell_cases import CASES as CELL_CASES  # noqa: E402
from ..unit.cell_cases import I, drive, in_features  # noqa: E402
from ..unit.test_export_tvm import as_tuple, check_against_reference, check_cells, check_state, make_input, zoo_graph  # noqa: E402

pytestmark = pytest.mark.toolchain

BUILD_CASES = ["gru", "lmu", "lmu_full", "lif", "lif_rec", "l2mu", "lmuformer_spiking", "lstm", "mingru"]
QEMU_CASES = ["gru", "lmu", "lif", "l2mu", "lmuformer_spiking"]
EM_AARCH64 = 183


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    need_tool("aarch64-linux-gnu-gcc")
    cache = {}

    def get(case):
        if case not in cache:
            graph = zoo_graph(case)
            cache[case] = (graph, export_tvm(graph, tmp_path_factory.mktemp(case) / "art", "arm"))
        return cache[case]

    return get


@pytest.fixture(scope="module")
def arm_runtime():
    """qemu-aarch64, aarch64-linux-gnu-g++ and the aarch64 TVM runtime (fetched with pip once)."""
    need_tool("qemu-aarch64")
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


@pytest.mark.parametrize("case", BUILD_CASES)
def test_aarch64_library_builds(exported, case):
    graph, art = exported(case)
    lib = art.library.read_bytes()
    assert lib[:4] == b"\x7fELF" and lib[4] == 2  # ELF64
    assert int.from_bytes(lib[18:20], "little") == EM_AARCH64
    tgt = art.manifest["target"]
    assert tgt["name"] == "arm" and tgt["tvm_target"]["mtriple"] == "aarch64-linux-gnu"
    assert "+neon" in tgt["tvm_target"]["mattr"] and tgt["vector_lanes"] == 4
    assert art.manifest["library_bytes"] == len(lib)
    assert any("scan" in k for k in art.manifest["kernels"])


@pytest.mark.parametrize("case", QEMU_CASES)
def test_aarch64_matches_reference_under_qemu(exported, arm_runtime, case):
    graph, art = exported(case)
    errs = art.verify()
    assert max(errs.values()) <= 1e-4
    spikes = 0
    for k, (b, t) in enumerate([(1, 1), (3, 37), (1, 128)]):
        x = make_input(graph, b, t, seed=100 + k)
        y, _ = art.run(x)
        spikes += check_against_reference(graph, y, reference(graph, x)[0])
    if any(graph.type_of(o).spikes for o in graph.outputs):
        assert spikes > 0


@pytest.mark.parametrize("case", ["gru", "lmuformer_spiking"])
def test_aarch64_streaming_chunks_equal_whole(exported, arm_runtime, case):
    graph, art = exported(case)
    x = make_input(graph, 2, 31, seed=7)
    whole, whole_state = art.run(x, graph.init_state(2))
    state, parts = graph.init_state(2), []
    for s in range(0, 31, 10):
        y, state = art.run(x[:, s : s + 10], state)
        parts.append(as_tuple(y))
    for i, name in enumerate(graph.outputs):
        got = np.concatenate([p[i] for p in parts], axis=1) if graph.type_of(name).temporal else parts[-1][i]
        np.testing.assert_array_equal(got, as_tuple(whole)[i], err_msg=name)
    for k in whole_state:
        np.testing.assert_array_equal(state[k], whole_state[k], err_msg=k)
    ref, ref_state = reference(graph, x)
    check_against_reference(graph, whole, ref)
    check_state(whole_state, ref_state)


def test_compiled_arm_module_runs_through_qemu(arm_runtime):
    need_tool("aarch64-linux-gnu-gcc")
    graph = zoo_graph("lmu")
    module = compile_tvm(graph, "arm")
    x = make_input(graph, 2, 19, seed=3)
    check_against_reference(graph, module.run(x)[0], reference(graph, x)[0])


def test_every_cell_case_under_qemu(arm_runtime, tmp_path):
    """One aarch64 library with every cell case side by side (4-lane NEON blocking and tails):
    against the reference at two lengths and batch sizes, and chunked == whole."""
    need_tool("aarch64-linux-gnu-gcc")
    b = GraphBuilder(I)
    outs = []
    for name, make in sorted(CELL_CASES.items()):
        if in_features(name) != I:  # id inputs (an embedding): the x86 tests cover them
            continue
        o = b.add(make(np.random.default_rng(0)), "x", name)
        outs += list(o) if isinstance(o, (list, tuple)) else [o]
    graph = b.build(outs)
    art = export_tvm(graph, tmp_path / "art", "arm")
    rng = np.random.default_rng(1)
    spikes = 0
    for bsz, t in ((1, 9), (3, 40)):
        x = drive("lif", rng, bsz, t).astype(np.float32)  # spiking cells must fire
        ref, ref_state = reference(graph, x)
        whole, whole_state = art.run(x, graph.init_state(bsz))
        spikes += check_cells(graph, whole, ref, whole_state, ref_state)
    first, state = art.run(x[:, :17], graph.init_state(bsz))
    second, state = art.run(x[:, 17:], state)
    for i, name in enumerate(graph.outputs):
        np.testing.assert_array_equal(
            np.concatenate([as_tuple(first)[i], as_tuple(second)[i]], axis=1), as_tuple(whole)[i], err_msg=name
        )
    for k in whole_state:
        np.testing.assert_array_equal(state[k], whole_state[k], err_msg=k)
    assert spikes > 0
