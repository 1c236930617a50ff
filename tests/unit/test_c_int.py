"""Integer C backend (edgeseq.export.c.intexport) on the host (gcc): every zoo model quantized with the
edgeseq and naive presets, op-variant graphs and a hand-built program reaching every branch of the
lowering, compared bit for bit with the integer-exact interpreter (outputs and final state, float
and full-range integer inputs, continued from a saved state, T = 1 and 50, B = 1 and 3); the
exported artifact (manifest, golden vectors, run.sh, Artifact.load / validate); typed errors for
unsupported micro-ops, targets and models too large for a microcontroller; a deliberately wrong
lowering is caught at export time."""

from __future__ import annotations

import dataclasses
import subprocess

import numpy as np
import pytest

from edgeseq.errors import ConfigError, ResourceError, ToleranceError, UnsupportedOpError
from edgeseq.export.c.intgen import generate_int
from edgeseq.quant import intexact

from ..conftest import need_tool
from .c_int_cases import ZOO_KEYS, check_bit_exact, edge_program, har_lmu_quantized, zoo_quantized


@pytest.fixture(scope="module")
def x86():
    need_tool("gcc")
    from edgeseq.targets import get_target

    return get_target("x86")


@pytest.fixture(scope="module")
def zoo_x86(x86, tmp_path_factory):
    """Every zoo program (both presets) in one host executable."""
    from edgeseq.export.c.multi import build_multi

    srcs = [
        generate_int(zoo_quantized(p, c).program, 6, prefix=f"m{k}", target="x86") for k, (p, c) in enumerate(ZOO_KEYS)
    ]
    mb = build_multi(srcs, x86, tmp_path_factory.mktemp("zoo-int-x86"))
    assert "warning" not in x86.build_log, x86.build_log
    return mb


@pytest.mark.parametrize("preset,case", ZOO_KEYS, ids=[f"{p}-{c}" for p, c in ZOO_KEYS])
def test_zoo_program_is_bit_exact(zoo_x86, preset, case):
    k = ZOO_KEYS.index((preset, case))
    q = zoo_quantized(preset, case)
    check_bit_exact(lambda x, **kw: zoo_x86.run(k, x, **kw), zoo_x86.infos[k], q.program, seed=k, float_api=True)


def _op_graph_programs():
    from edgeseq.quant import preset, quantize

    from .test_c_backend import OP_GRAPHS

    rng = np.random.default_rng(3)
    acc64 = dataclasses.replace(preset("edgeseq"), accumulator_bits=64)
    out = {}
    for name, cfg in (("ops_ff", "edgeseq"), ("ops_ff", acc64), ("ops_conv", "edgeseq"), ("ops_conv", "naive")):
        g = OP_GRAPHS[name]()
        key = f"{name}-{cfg if isinstance(cfg, str) else 'acc64'}"
        out[key] = quantize(g, rng.normal(size=(16, 12, g.in_features)), cfg)
    return out


@pytest.fixture(scope="module")
def ops_x86(x86, tmp_path_factory):
    """LayerNorm / every activation / readouts (temporal and pooled outputs, div, isqrt, int64) and
    dilated grouped causal convolutions (ring-buffer state), plus the hand-built edge program."""
    from edgeseq.export.c.multi import build_multi

    progs = {k: q.program for k, q in _op_graph_programs().items()}
    progs["edge"] = edge_program()
    names = list(progs)
    srcs = []
    for k, name in enumerate(names):
        p = progs[name]
        nf = max(int(np.max(s.channels)) + 1 for s in p.inputs)
        srcs.append(generate_int(p, nf, prefix=f"o{k}", target="x86"))
    mb = build_multi(srcs, x86, tmp_path_factory.mktemp("ops-int-x86"))
    assert "warning" not in x86.build_log, x86.build_log
    return mb, names, progs


@pytest.mark.parametrize("name", ["ops_ff-edgeseq", "ops_ff-acc64", "ops_conv-edgeseq", "ops_conv-naive", "edge"])
def test_op_variants_and_edge_program_are_bit_exact(ops_x86, name):
    mb, names, progs = ops_x86
    k = names.index(name)
    p = progs[name]
    res = check_bit_exact(lambda x, **kw: mb.run(k, x, **kw), mb.infos[k], p, seed=40 + k, float_api=True)
    kinds = {op.kind for op in p.step + p.final}
    if name.startswith("ops_ff"):
        assert {"isqrt", "div", "lut"} <= kinds and res.step.shape[2] > 0 and res.pooled.shape[1] > 0
    if name == "edge":
        from edgeseq.quant.program import MICRO_OPS

        assert kinds == {k for k, c in MICRO_OPS.items() if not c.window}  # every step micro-op
        assert any(p.vectors[op.out].bits > 32 for op in p.step if op.kind == "matvec")  # int64 accumulators


def test_blocked_requantization_is_channel_major():
    """The LMU memory update's requantization (the same scales for every block) runs channel-major
    in the scalar loops, so the zoo LMU programs above check that form bit for bit; a unit whose
    constants do not repeat keeps the plain loop."""
    src = generate_int(zoo_quantized("edgeseq", "lmu").program, 6, target="x86").files["model.c"]
    assert "for (int c = 0; c < " in src
    assert "for (int c = 0; c < " not in generate_int(zoo_quantized("edgeseq", "gru").program, 6).files["model.c"]


def test_input_boundary_rounds_half_to_even_in_single_precision(x86, tmp_path):
    """esq_quantize == InputSpec.quantize: float32 arithmetic, ties to even, saturation, offsets and
    scales whose float64 evaluation would round differently."""
    from edgeseq.export.c.artifact import split_outputs
    from edgeseq.quant.program import InputSpec, OutputSpec, Program, Vec

    n = 7
    spec = InputSpec(
        "x",
        np.array([6, 0, 1, 2, 3, 4, 5]),
        16,
        np.full(n, 0.3),
        np.asarray([1.0, 1.0, 3.0, 0.1, 7.0, 997.3, 2.5]),
        np.asarray([0.0, 0.5, 0.1, -0.3, 1e-3, 0.0123, -1.0]),
    )
    assert spec.inv_scale[3] == float(np.float32(0.1)) and spec.offset[2] == float(np.float32(0.1))  # stored as float32
    prog = Program((spec,), {"x": Vec("x", n, 16)}, {}, {}, (), (), (OutputSpec("x", "x", True, np.ones(n)),))
    prog.verify()
    src = generate_int(prog, 7, target="x86")
    assert "double" not in src.files["model.c"]
    binary = x86.build(src, tmp_path)
    rng = np.random.default_rng(0)
    ties = np.array(
        [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 32766.5, 32767.5, -32768.5, -32767.5, 1e9, -1e9, 0.0, -0.0], np.float32
    )
    # inputs whose float64 evaluation of (x - offset) * inv_scale rounds differently from float32
    cand = (rng.uniform(-30, 30, size=(200000, 7))).astype(np.float32)
    t64 = np.rint((cand[:, spec.channels].astype(np.float64) - spec.offset) * spec.inv_scale)
    t32 = np.rint((cand[:, spec.channels] - spec.offset.astype(np.float32)) * spec.inv_scale.astype(np.float32))
    hard = cand[np.any(np.clip(t32, -32768, 32767) != np.clip(t64, -32768, 32767), axis=1)][:300]
    assert len(hard) > 20
    x = np.concatenate(
        [np.repeat(ties[:, None], 7, axis=1)[None], hard[None], (rng.normal(size=(1, 200, 7)) * 60).astype(np.float32)],
        axis=1,
    )
    res = x86.run(binary, x, qout=True)
    (got,) = split_outputs(src.info, res.step, res.pooled)
    want = spec.quantize(x)
    assert np.array_equal(got, want)
    assert got[0, :6, 0].tolist() == [-2, -2, 0, 0, 2, 2]  # column 0: offset 0, scale 1: rint, half to even
    assert got[0, 6:10, 0].tolist() == [32766, 32767, -32768, -32768] and got[0, 10:12, 0].tolist() == [32767, -32768]
    # float64 arithmetic would have got some of them wrong
    t64 = np.rint((x[..., spec.channels].astype(np.float64) - spec.offset) * spec.inv_scale)
    assert np.count_nonzero(np.clip(t64, -32768, 32767) != want) > 20


def test_no_software_floating_point_in_the_per_step_path(need_tool, tmp_path):
    """The input quantizer, the step and the float step API call no soft-float helper on a core
    whose FPU is single precision (Cortex-M4: __aeabi_d* would be software double precision)."""
    from edgeseq.targets import get_target
    from edgeseq.targets.elf import calls_in_functions

    need_tool("arm-none-eabi-gcc")
    q = zoo_quantized("edgeseq", "lmu_full")
    t = get_target("cortex-m4")
    src = generate_int(q.program, 6, target="cortex-m4")
    t.build(src, tmp_path)
    calls = calls_in_functions(
        tmp_path / "obj" / "model.o",
        ["esq_quantize", "esq_step_q", "esq_step"],
        objdump=need_tool("arm-none-eabi-objdump"),
    )
    assert calls["esq_step"] and "esq_quantize" in calls["esq_step"]  # the inspection sees the calls
    soft = sorted(c for cs in calls.values() for c in cs if c.startswith(("__aeabi_d", "__aeabi_f")))
    assert not soft, soft


# ---------------------------------------------------------------- the artifact


@pytest.fixture(scope="module")
def lmu_artifact(x86, tmp_path_factory):
    from edgeseq.export.c.intexport import export_c_int

    q = zoo_quantized("edgeseq", "lmu_full")
    x = (np.random.default_rng(5).normal(size=(2, 40, 6)) * 1.5).astype(np.float32)
    art = export_c_int(q, tmp_path_factory.mktemp("lmu-int") / "art", target="x86", golden_input=x)
    return q, x, art


def test_export_artifact_manifest_golden_and_run(lmu_artifact):
    from edgeseq.export import Artifact
    from edgeseq.export.c import CArtifact, IntCArtifact
    from edgeseq.targets.driver import read_output

    q, x, art = lmu_artifact
    m = art.manifest
    assert m["format"] == "edgeseq-c-artifact/1" and m["numerics"] == "integer"
    assert m["golden"]["verification"]["bit_exact"] and m["golden"]["verification"]["float_api"]["bit_exact"]
    assert m["golden"]["verification"]["values"] > 0
    assert [o["name"] for o in m["outputs"]] == list(q.graph.outputs)
    assert m["outputs"][0]["scale"] == float(q.program.outputs[0].scale[0])
    for rel in (
        "graph.esq",
        "quantized.esq",
        "golden/input.bin",
        "golden/expected.bin",
        "golden/expected_int.bin",
        "src/model.c",
        "src/model.h",
        "src/main.c",
        "bin/model",
        "run.sh",
    ):
        assert rel in m["files"], rel
    # the golden integers are the integer-exact interpreter's
    outs, state = intexact.run(q.program, q.quantize_input(x))
    exp = read_output(art.path / "golden" / "expected_int.bin", dtype="<i4")
    assert np.array_equal(exp["pooled"], outs[0])
    # every loader gives the integer artifact; float outputs are (float) q * scale exactly
    for a in (Artifact.load(art.path), CArtifact.load(art.path), IntCArtifact.load(art.path)):
        assert isinstance(a.impl if isinstance(a, Artifact) else a, IntCArtifact)
    y = Artifact.load(art.path).run(x)
    want = intexact.dequantize_outputs(q.program, outs)[0].astype(np.float32)  # Artifact.run: q * scale, one rounding
    assert np.array_equal(y, want)
    got, st = art.run_int(x, state=True)
    assert np.array_equal(got[0], outs[0]) and all(np.array_equal(st[k], state[k]) for k in state)
    got_q = art.run_int(xq=q.quantize_input(x))
    assert np.array_equal(got_q[0], outs[0])
    assert art.run_golden()["bit_exact"]
    # run.sh: the same binary on the golden input
    subprocess.run(
        [str(art.path / "run.sh"), "step", "golden/input.bin", "out.bin"],
        cwd=art.path,
        check=True,
        capture_output=True,
        timeout=60,
    )
    got_f = read_output(art.path / "out.bin")
    assert np.array_equal(got_f["pooled"], read_output(art.path / "golden" / "expected.bin")["pooled"])
    (art.path / "out.bin").unlink()


def test_export_sizes_plan_and_cost(lmu_artifact, x86):
    q, x, art = lmu_artifact
    s = art.sizes
    plan = art.manifest["buffer_plan"]
    assert s["state_struct_bytes"] == plan["struct_bytes_estimate"]
    assert plan["scratch_bytes"] < plan["vector_bytes_unplanned"]  # fused loops + reuse beat one buffer per vector
    assert s["model"]["const_bytes"] >= art.manifest["weights_bytes"] > 0  # + boundary scales
    cost = art.cost(x[:1])
    assert cost["latency"]["per_step_s"] > 0 and cost["weights_bytes"] == art.manifest["weights_bytes"]
    src = (art.path / "src" / "model.c").read_text()
    assert "malloc" not in src and "math.h" not in src and "float" in src  # floats only at the boundaries
    und = subprocess.run(
        ["nm", "-u", str(art.path / "obj" / "model.o")], capture_output=True, text=True, check=True
    ).stdout.split()
    assert set(und) - {"U"} <= {"memset", "memcpy"}, und


def test_validate_accepts_the_integer_artifact(lmu_artifact, tmp_path):
    from edgeseq.validate import validate

    q, x, art = lmu_artifact
    rep = validate(art.path, measure=False)
    assert rep.passed, rep.summary()
    assert rep.artifact["number_format"] == "integer"
    assert any(c.name.startswith("golden.") and c.limit == 0.0 for c in rep.checks)


def test_artifact_integrity_and_overwrite(lmu_artifact, tmp_path):
    import shutil

    from edgeseq.errors import ArtifactError
    from edgeseq.export.c.intexport import IntCArtifact, export_c_int

    q, x, art = lmu_artifact
    with pytest.raises(ArtifactError, match="already exists|force"):
        export_c_int(q, art.path, target="x86")
    copy = tmp_path / "copy"
    shutil.copytree(art.path, copy)
    (copy / "golden" / "expected_int.bin").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="modified"):
        IntCArtifact.load(copy)


def test_wrong_lowering_is_caught_at_export(x86, tmp_path, monkeypatch):
    """A lowering with a logical instead of an arithmetic shift builds and runs, and the export
    refuses it (ToleranceError naming the difference); nothing is left behind."""
    from edgeseq.export.c import intgen
    from edgeseq.export.c.intexport import export_c_int

    bad = intgen.PRELUDE.replace(
        "ESQ_INLINE int64_t esq_asr64(int64_t v, int s) { return v >> s; }",
        "ESQ_INLINE int64_t esq_asr64(int64_t v, int s) { return (int64_t)((uint64_t)v >> s); }",
    )
    assert bad != intgen.PRELUDE
    monkeypatch.setattr(intgen, "PRELUDE", bad)
    q = zoo_quantized("edgeseq", "gru")
    with pytest.raises(ToleranceError, match="integer-exact interpreter") as e:
        export_c_int(q, tmp_path / "a", target="x86")
    assert "target x86" in str(e.value)
    assert not (tmp_path / "a").exists()


def test_strict_c99_null_target(need_tool, tmp_path):
    from edgeseq.export.c.intexport import export_c_int

    need_tool("gcc")
    art = export_c_int(zoo_quantized("naive", "lmuformer_spiking"), tmp_path / "n", target="null")
    assert art.manifest["golden"]["verification"] is None
    assert "-pedantic" in art.manifest["cflags"] and "-Werror" in art.manifest["cflags"]


def test_quantized_graph_through_the_export_facade(x86, tmp_path, monkeypatch):
    """edgeseq.export(quantized graph, "x86") -> a bundle whose C part is the integer artifact
    (the integer TVM part, another backend's, is left out here)."""
    import sys

    import edgeseq
    from edgeseq.export import Artifact

    monkeypatch.setitem(sys.modules, "edgeseq.export.tvm.intexport", None)

    q = zoo_quantized("edgeseq", "lif_rec")
    x = (np.random.default_rng(9).normal(size=(2, 20, 6)) * 2).astype(np.float32)
    art = edgeseq.export(q, target="x86", out=tmp_path / "b", golden_input=x)
    assert art.kind == "bundle" and art.manifest["numerics"] == "integer" and list(art.parts) == ["c"]
    outs, _ = intexact.run(q.program, q.quantize_input(x))
    want = intexact.dequantize_outputs(q.program, outs)[0].astype(np.float32)  # Artifact.run: q * scale, one rounding
    assert np.array_equal(Artifact.load(tmp_path / "b").run(x, runtime="c"), want)


# ---------------------------------------------------------------- typed errors


def test_unsupported_micro_op_is_named():
    from edgeseq.quant.program import MicroOp

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Fft(MicroOp):
        kind = "fft"
        x: str

        def reads(self):
            return (self.x,)

    p = zoo_quantized("naive", "rnn").program
    bad = dataclasses.replace(
        p, step=p.step[:2] + (Fft(out=p.step[2].out, x=p.step[1].out, node="spectral"),) + p.step[3:]
    )
    with pytest.raises(UnsupportedOpError, match="micro-op 'fft'") as e:
        generate_int(bad, 6, target="cortex-m4")
    assert "node 'spectral'" in str(e.value) and "cortex-m4" in str(e.value) and "matvec" in e.value.hint


def test_unsupported_target_is_named(tmp_path):
    from edgeseq.export.c.intexport import export_c_int

    with pytest.raises(ConfigError, match="unknown target 'onnx'"):
        export_c_int(zoo_quantized("naive", "rnn"), tmp_path / "o", target="onnx")
    with pytest.raises(ConfigError, match="quantized graph"):
        export_c_int(object(), tmp_path / "o", target="x86")


def test_model_too_large_for_the_mcu_raises_resource_error():
    """Checked before compiling: the HAR-sized LMU's 16.8 KB of integer tables do not fit 8 KB of
    flash; its state, scratch, I/O buffers and stack do not fit 12 KB of RAM."""
    from edgeseq.targets import get_target

    q, _ = har_lmu_quantized()
    info = generate_int(q.program, 6, target="cortex-m4").info
    w = info["weights_bytes"]
    assert 15000 < w < 20000
    with pytest.raises(ResourceError, match=rf"{w} bytes of flash; cortex-m4 \(mps2-an386\) has 8192"):
        get_target("cortex-m4", flash_bytes=8192).precheck(info)
    with pytest.raises(ResourceError, match="RAM"):
        get_target("cortex-m4", ram_bytes=12 * 1024).precheck(info)
    get_target("cortex-m4", flash_bytes=64 * 1024, ram_bytes=32 * 1024).precheck(info)
