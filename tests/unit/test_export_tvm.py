"""TVM backend on the x86 host: every zoo model and every cell case (tests/unit/cell_cases.py)
compiled with TVM (TIR scan kernels rendered from step programs, in a Relax VM) against the
float64 reference interpreter at several sequence lengths and batch sizes, whole-sequence and chunk
by chunk, plus the public API, artifacts and error paths."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

import edgeseq  # noqa: E402
from edgeseq.errors import ArtifactError, ConfigError, NumericsError, ShapeError, UnsupportedOpError  # noqa: E402
from edgeseq.export.tvm import TvmArtifact, compile_tvm, export_tvm, supported_kinds  # noqa: E402
from edgeseq.ir.graph import Graph  # noqa: E402
from edgeseq.ir.interpret import run as reference  # noqa: E402
from edgeseq.ir.interpret import run_chunked  # noqa: E402

from .cell_cases import CASES as CELL_CASES  # noqa: E402
from .cell_cases import drive, graph_of  # noqa: E402
from .zoo_cases import ZOO, build  # noqa: E402

TOL = 1e-4
SHAPES = ((1, 1), (3, 37), (1, 128), (3, 128))  # (B, T)
CHUNKS = (1, 4, 9, 23)  # chunk lengths that cut the sequence unevenly


# ----------------------------------------------------------------------------------------------
# helpers shared with test_export_tvm_ops


def with_spike_outputs(g: Graph) -> Graph:
    """Expose every temporal spike train as an extra output, so spikes are compared exactly too."""
    types = g.value_types
    extra = [v for n in g.nodes for v in n.outputs if types[v].spikes and types[v].temporal and v not in g.outputs]
    return Graph(g.inputs, g.nodes, tuple(g.outputs) + tuple(extra), g.metadata)


def make_input(graph: Graph, batch: int, steps: int, seed: int, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((batch, steps, graph.in_features)) * scale).astype(np.float32)


def as_tuple(y):
    return y if isinstance(y, tuple) else (y,)


def check_against_reference(graph: Graph, got, ref, tol: float = TOL) -> int:
    """Float outputs within ``tol`` (max abs); spike outputs identical to the reference cast to
    float32 (graded spikes carry the float32 spike_scale). Returns the number of spikes."""
    spikes = 0
    for name, a, r in zip(graph.outputs, as_tuple(got), ref):
        assert a.shape == r.shape, name
        assert a.dtype == np.float32, name
        if graph.type_of(name).spikes:
            mism = np.argwhere(a != r.astype(np.float32))
            assert mism.size == 0, f"{name}: {len(mism)} spike(s) differ from the reference, first at {mism[0]}"
            spikes += int(np.count_nonzero(r))
        else:
            err = float(np.max(np.abs(a - r)))
            assert err <= tol, f"{name}: max abs error {err:.3g} > {tol:g}"
    return spikes


def check_state(got: dict, ref: dict, tol: float = TOL) -> None:
    """States within ``tol`` relative to their magnitude (an unstable memory, e.g. lmu_full's Euler
    LMU with memory-to-memory feedback, grows to ~1e6, where float32 resolves only ~0.06)."""
    assert set(got) == set(ref)
    for k, r in ref.items():
        err = float(np.max(np.abs(got[k] - r)))
        assert err <= tol * max(1.0, float(np.max(np.abs(r)))), f"state {k}: max abs error {err:.3g}"


def check_chunks(graph: Graph, stream, x: np.ndarray, chunk: int, whole, whole_state: dict) -> None:
    """Running ``x`` chunk by chunk equals the whole run bit for bit (outputs and final state)."""
    state, parts = None, []
    for s in range(0, x.shape[1], chunk):
        y, state = stream.run(x[:, s : s + chunk], state)
        parts.append(as_tuple(y))
    for i, name in enumerate(graph.outputs):
        got = np.concatenate([p[i] for p in parts], axis=1) if graph.type_of(name).temporal else parts[-1][i]
        np.testing.assert_array_equal(got, as_tuple(whole)[i], err_msg=f"{name}, chunk {chunk}")
    for key in whole_state:
        np.testing.assert_array_equal(state[key], whole_state[key], err_msg=f"{key}, chunk {chunk}")


def zoo_graph(case: str) -> Graph:
    model = build(case)
    return with_spike_outputs(edgeseq.capture(model, torch.randn(2, 12, 6)))


def lazily_compiled(make_graph):
    """``get(case) -> (graph, module)``: modules compiled (both functions) on first use, cached."""
    cache = {}

    def get(case):
        if case not in cache:
            g = make_graph(case)
            cache[case] = (g, compile_tvm(g, functions=("main", "stream")))
        return cache[case]

    return get


@pytest.fixture(scope="module")
def compiled():
    """Zoo cases, shared by this module's tests."""
    return lazily_compiled(zoo_graph)


# ----------------------------------------------------------------------------------------------
# equivalence with the reference interpreter


@pytest.mark.parametrize("case", sorted(ZOO))
def test_zoo_model_matches_reference(compiled, case):
    graph, module = compiled(case)
    spikes = 0
    for k, (b, t) in enumerate(SHAPES):
        x = make_input(graph, b, t, seed=k)
        y, state = module.run(x)
        assert state is None
        ref, _ = reference(graph, x)
        spikes += check_against_reference(graph, y, ref)
    if any(graph.type_of(o).spikes for o in graph.outputs):
        assert spikes > 0, "the test input must make the neurons fire"


@pytest.mark.parametrize("case", sorted(ZOO))
def test_zoo_streaming_chunks_equal_whole_sequence(compiled, case):
    """Chunked streaming == one whole-sequence call, bit for bit (outputs and final state), and the
    final state matches the reference's."""
    graph, module = compiled(case)
    stream = module.with_streaming(True)
    x = make_input(graph, 3, 53, seed=11)
    whole_y, whole_state = stream.run(x)
    assert set(whole_state) == set(graph.state_spec())
    main_y, _ = module.run(x)
    for a, b in zip(as_tuple(whole_y), as_tuple(main_y)):
        np.testing.assert_array_equal(a, b)
    for chunk in CHUNKS:
        check_chunks(graph, stream, x, chunk, whole_y, whole_state)
    ref_out, ref_state = run_chunked(graph, x, 9)
    check_against_reference(graph, whole_y, ref_out)
    check_state(whole_state, ref_state)


def test_streaming_continues_from_a_given_state(compiled):
    graph, module = compiled("lstm")
    stream = module.with_streaming(True)
    x = make_input(graph, 2, 30, seed=5)
    _, st = reference(graph, x[:, :12])
    y, new = stream.run(x[:, 12:], {k: v.astype(np.float32) for k, v in st.items()})
    ref, ref_state = reference(graph, x[:, 12:], st)
    check_against_reference(graph, y, ref)
    check_state(new, ref_state)


def test_one_module_serves_every_length_and_batch(compiled):
    """B and T are symbolic: nothing is recompiled for a new shape."""
    graph, module = compiled("gru")
    exe = module.executable
    for b, t in ((1, 2), (5, 3), (2, 300)):
        x = make_input(graph, b, t, seed=b + t)
        check_against_reference(graph, module.run(x)[0], reference(graph, x)[0])
    assert module.executable is exe


def test_identical_layers_share_one_kernel(compiled):
    graph, module = compiled("mingru")  # two MinGRU layers of the same hidden size
    scans = [k for k in module.kernels if "scan" in k]
    assert len(scans) == 1, scans
    assert sum(n.op.kind == "MinGRU" for n in graph.nodes) == 2


# ----------------------------------------------------------------------------------------------
# every cell case: the generic step-program rendering

CELL_SHAPES = ((1, 9), (4, 9), (1, 40), (4, 40))  # two batch sizes x two lengths
CELL_TOL = 1e-5  # times the magnitude of the cell's values (outputs and states), at least 1


def check_cells(graph: Graph, got, ref, state: dict, ref_state: dict, tol: float = CELL_TOL) -> int:
    """Per node: outputs and final states within ``tol`` times the magnitude of the node's values
    (at least 1: a synaptic current or an unstable Euler memory grows large), spike trains
    identical. Returns the number of spikes."""
    got, want = dict(zip(graph.outputs, as_tuple(got))), dict(zip(graph.outputs, ref))
    spikes = 0
    for node in graph.nodes:
        outs = [o for o in node.outputs if o in want]
        keys = [k for k in ref_state if k.split("/")[0] == node.name]
        scale = max(
            [1.0] + [float(np.abs(want[o]).max()) for o in outs] + [float(np.abs(ref_state[k]).max()) for k in keys]
        )
        for o in outs:
            if graph.type_of(o).spikes:
                np.testing.assert_array_equal(got[o], want[o].astype(np.float32), err_msg=f"spike train '{o}'")
                spikes += int(np.count_nonzero(want[o]))
        pairs = [(o, got[o], want[o]) for o in outs] + [(k, state[k], ref_state[k]) for k in keys]
        for key, a, r in pairs:
            err = float(np.max(np.abs(a - r)))
            assert err <= tol * scale, f"'{key}': max abs error {err:.3g} > {tol:g} x {scale:.3g}"
    return spikes


@pytest.fixture(scope="module")
def cell_module():
    return lazily_compiled(graph_of)


@pytest.mark.parametrize("name", sorted(CELL_CASES))
def test_every_cell_case_matches_reference_whole_and_chunked(cell_module, name):
    """Outputs and final states match the reference (:func:`check_cells`); chunks of 7 steps equal
    the whole sequence bit for bit; main equals stream."""
    graph, module = cell_module(name)
    stream = module.with_streaming(True)
    spikes = 0
    for k, (b, t) in enumerate(CELL_SHAPES):
        x = drive(name, np.random.default_rng(k), b, t).astype(np.float32)
        ref, ref_state = reference(graph, x)
        y, _ = module.run(x)
        whole, whole_state = stream.run(x)
        for a, w in zip(as_tuple(y), as_tuple(whole)):
            np.testing.assert_array_equal(a, w)
        spikes += check_cells(graph, whole, ref, whole_state, ref_state)
        check_chunks(graph, stream, x, 7, whole, whole_state)
    if any(graph.type_of(o).spikes for o in graph.outputs):
        assert spikes > 0, "the test input must make the neurons fire"


@pytest.mark.parametrize("name", ["gru_reset_before", "lmu_full", "l2mu_syn"])
def test_rewrites_agree_with_the_plain_rendering(cell_module, name, monkeypatch):
    """The renderer's fast paths (bias folding, stage grouping, next states computed in place)
    agree with the rendering without them."""
    from edgeseq.export.tvm import scan

    graph, fast_module = cell_module(name)
    x = drive(name, np.random.default_rng(9), 2, 33).astype(np.float32)
    fast = as_tuple(fast_module.run(x)[0])
    plan = scan._Step.plan

    def no_alias(self, stages):
        plan(self, stages)
        self.alias.clear()

    monkeypatch.setattr(scan, "FoldBias", lambda: lambda p: p)
    monkeypatch.setattr(scan, "GroupStages", lambda: lambda p: p)
    monkeypatch.setattr(scan._Step, "plan", no_alias)
    module = compile_tvm(graph)
    assert module.kernels != fast_module.kernels
    plain = as_tuple(module.run(x)[0])
    for out, a, b in zip(graph.outputs, fast, plain):
        if graph.type_of(out).spikes:
            np.testing.assert_array_equal(a, b, out)
        else:
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, err_msg=out)


def test_no_backend_file_names_a_cell_family():
    """Scan ops reach the TVM backend only as step programs."""
    from edgeseq.ir.cells import cell_kinds

    named = sorted(cell_kinds() - {"Scan"})  # the generic Scan is what the backend renders
    kinds = re.compile(r"\b(" + "|".join(named) + r")\b", re.IGNORECASE)
    for f in sorted(Path(compile_tvm.__code__.co_filename).parent.glob("*.py")):
        hit = kinds.search(f.read_text())
        assert hit is None, f"{f.name} names '{hit.group(0)}'"


# ----------------------------------------------------------------------------------------------
# API and errors


def test_supported_kinds_cover_every_ir_op():
    from edgeseq.ir.interpret import supported_kinds as reference_kinds
    from edgeseq.ir.ops import OP_REGISTRY

    # window ops (Reverse, Lookahead): "main" runs whole windows (tests/unit/test_window.py)
    window = {k for k, cls in OP_REGISTRY.items() if cls.category == "window"}
    assert window and window <= reference_kinds()
    assert supported_kinds() == set(OP_REGISTRY) == reference_kinds()


def test_import_does_not_load_tvm():
    code = (
        "import sys, edgeseq, edgeseq.export.tvm as t; k = t.supported_kinds(); "
        "assert 'tvm' not in sys.modules, 'tvm imported'; assert 'GRU' in k"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unsupported_op_names_node_kind_and_target(monkeypatch):
    from edgeseq.export.tvm import rules

    graph = zoo_graph("gru")
    monkeypatch.delitem(rules.RULES, "GRU")
    with pytest.raises(UnsupportedOpError) as e:
        compile_tvm(graph)
    msg = str(e.value)
    assert "GRU" in msg and "rnn.l0" in msg and "tvm" in msg


def test_bad_arguments_raise_typed_errors(compiled):
    graph, module = compiled("rnn")
    with pytest.raises(ShapeError):
        module.run(np.zeros((2, 5), np.float32))
    with pytest.raises(ShapeError):
        module.run(np.zeros((2, 5, graph.in_features + 1), np.float32))
    with pytest.raises(ShapeError):
        module.run(np.zeros((2, 0, graph.in_features), np.float32))
    bad = np.zeros((1, 3, graph.in_features), np.float32)
    bad[0, 1, 0] = np.nan
    with pytest.raises(NumericsError):
        module.run(bad)
    with pytest.raises(ConfigError):
        module.run(np.zeros((1, 3, graph.in_features), np.float32), graph.init_state(1))
    stream = module.with_streaming(True)
    with pytest.raises(ShapeError):
        stream.run(np.zeros((2, 3, graph.in_features), np.float32), graph.init_state(1))
    with pytest.raises(ShapeError):
        stream.run(np.zeros((1, 3, graph.in_features), np.float32), {})
    with pytest.raises(ConfigError):
        compile_tvm(graph, "riscv")
    with pytest.raises(ConfigError):
        compile_tvm(graph, "x86", cpu="no-such-cpu")
    with pytest.raises(ConfigError):
        compile_tvm("not a graph")


# ----------------------------------------------------------------------------------------------
# artifacts


def test_export_x86_artifact_runs_and_verifies(compiled, tmp_path):
    graph, module = compiled("lif_rec")
    out = tmp_path / "art"
    art = export_tvm(graph, out, "x86")
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"model.so", "manifest.json", "kernels.py", "golden/x.f32", "driver/edgeseq_tvm_run.cc"} <= files
    mf = json.loads((out / "manifest.json").read_text())
    assert mf["tvm_version"] == tvm.__version__
    assert mf["target"]["name"] == "x86" and mf["target"]["tvm_target"]["kind"] == "llvm"
    assert mf["signature"]["state_spec"] == {k: list(v) for k, v in graph.state_spec().items()}
    assert set(mf["files"]) == files - {"manifest.json"}
    assert (out / "model.so").read_bytes()[:4] == b"\x7fELF"
    errs = TvmArtifact.load(out).verify()
    assert errs and max(errs.values()) <= TOL
    x = make_input(graph, 2, 41, seed=3)
    art = TvmArtifact.load(out)
    y, state = art.run(x)
    assert state is None
    check_against_reference(graph, y, reference(graph, x)[0])
    y2, st = art.run(x[:, :20], graph.init_state(2))
    y3, _ = art.run(x[:, 20:], st)
    spike_out = [i for i, o in enumerate(graph.outputs) if graph.type_of(o).spikes][0]
    np.testing.assert_array_equal(
        np.concatenate([as_tuple(y2)[spike_out], as_tuple(y3)[spike_out]], axis=1), as_tuple(y)[spike_out]
    )


def test_artifact_is_atomic_and_checked(compiled, tmp_path, monkeypatch):
    graph, _ = compiled("rnn")
    out = tmp_path / "art"
    export_tvm(graph, out)
    with pytest.raises(ArtifactError):
        export_tvm(graph, out)  # exists, no force
    export_tvm(graph, out, force=True)
    golden = out / "golden" / "x.f32"
    golden.write_bytes(golden.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ArtifactError, match="sha256"):
        TvmArtifact.load(out)
    with pytest.raises(ArtifactError):
        TvmArtifact.load(tmp_path / "nothing-here")
    from edgeseq.export.tvm import rules

    monkeypatch.delitem(rules.RULES, "RNN")
    with pytest.raises(UnsupportedOpError):
        export_tvm(graph, tmp_path / "never")
    assert not (tmp_path / "never").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".never")]


def test_x86_artifact_refuses_a_cpu_this_machine_lacks(compiled, tmp_path):
    """Loading an artifact built for a CPU with instructions this one lacks fails with a hint
    instead of dying on SIGILL."""
    from tvm.target import codegen

    host = set(
        codegen.llvm_get_cpu_features(tvm.target.Target({"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu()}))
    )
    newer = [
        c
        for c in ("diamondrapids", "graniterapids", "sapphirerapids", "znver5", "skylake-avx512", "haswell")
        if codegen.llvm_is_valid_cpu(c, "x86_64-linux-gnu")
        and {
            f
            for f in codegen.llvm_get_cpu_features(tvm.target.Target({"kind": "llvm", "mcpu": c}))
            if f.startswith("avx")
        }
        - host
    ]
    if not newer:
        pytest.skip("this CPU has every AVX feature of the CPUs LLVM knows")
    graph, _ = compiled("rnn")
    out = tmp_path / "art"
    export_tvm(graph, out, cpu="x86-64")
    mf = json.loads((out / "manifest.json").read_text())
    mf["target"]["tvm_target"]["mcpu"] = newer[0]
    (out / "manifest.json").write_text(json.dumps(mf))
    with pytest.raises(ArtifactError, match="lacks"):
        TvmArtifact.load(out).run(make_input(graph, 1, 3, seed=0))
