"""Integer TVM compilation (edgeseq.export.tvm.intexport) on the x86 host: every zoo model,
quantized with the "edgeseq" and "naive" presets, compiled to TIR kernels and compared bit for bit
with the integer-exact interpreter (outputs, final state, chunked streaming == whole sequence,
the float input boundary and the dequantized outputs), plus hand-made programs that reach every
micro-op's edge cases, artifacts, the miscompile lint and the error paths."""

from __future__ import annotations

import json

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

from edgeseq.errors import ArtifactError, ConfigError, NumericsError, ShapeError, UnsupportedOpError  # noqa: E402
from edgeseq.export.tvm.artifact import TvmArtifact  # noqa: E402
from edgeseq.export.tvm.intexport import compile_tvm_int, export_tvm_int  # noqa: E402
from edgeseq.export.tvm.lint import check_kernels, integer_hazards, vectorization_hazards  # noqa: E402
from edgeseq.frontends import capture  # noqa: E402
from edgeseq.quant import intexact, quantize  # noqa: E402
from edgeseq.quant.lower import make_table, quantize_multiplier  # noqa: E402
from edgeseq.quant.program import (  # noqa: E402
    Add,
    Clamp,
    CmpGe,
    Concat,
    Div,
    Gather,
    InputSpec,
    Isqrt,
    Load,
    Lut,
    MatVec,
    Mul,
    OutputSpec,
    ProgramBuilder,
    Requant,
    Select,
    Store,
    Sub,
    int_range,
)

from .zoo_cases import ZOO, build  # noqa: E402

PRESETS = ("edgeseq", "naive")
SHAPES = ((1, 1), (3, 1), (1, 50), (3, 50))  # (B, T)
CHUNKS = (1, 7, 23)


# ----------------------------------------------------------------------------------------------
# helpers (shared with tests/integration/test_tvm_int_arm.py)


def quantized_zoo(case: str, preset: str):
    """The zoo model ``case`` captured and quantized as tests/unit/test_quant_zoo.py does."""
    g = capture(build(case), torch.zeros(1, 8, 6))
    calib = np.random.default_rng(7).normal(size=(48, 16, 6)) * 1.3
    return quantize(g, calib, preset)


def float_input(batch: int, steps: int, features: int, seed: int, scale: float = 1.5) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((batch, steps, features)) * scale).astype(np.float32)


def as_tuple(y):
    return y if isinstance(y, tuple) else (y,)


def assert_int_equal(got, ref, what: str) -> None:
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.dtype.kind in "iu", f"{what}: dtype {got.dtype}"
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    bad = np.argwhere(got.astype(np.int64) != ref.astype(np.int64))
    assert bad.size == 0, (
        f"{what}: {len(bad)} value(s) differ, first at {tuple(bad[0])}: {got[tuple(bad[0])]} != {ref[tuple(bad[0])]}"
    )


def check_exact(prog, module_or_art, xq, state=None) -> dict:
    """Integer outputs and final state of the compiled program equal the interpreter's; returns
    the interpreter's final state."""
    ref, ref_state = intexact.run(prog, xq, state)
    got, st = module_or_art.run_int(xq, state, streaming=True)
    for o, a, b in zip(prog.outputs, as_tuple(got), ref):
        assert_int_equal(a, b, f"output {o.name}")
    assert set(st) == set(ref_state)
    for k in ref_state:
        assert_int_equal(st[k], ref_state[k], f"state {k}")
    if state is None:
        whole, none = module_or_art.run_int(xq, streaming=False)
        assert none is None
        for o, a, b in zip(prog.outputs, as_tuple(whole), ref):
            assert_int_equal(a, b, f"main_int output {o.name}")
    return ref_state


def check_float_boundary(q, module_or_art, x) -> None:
    """Float in -> the documented input quantizer -> dequantized float32 out, exactly."""
    prog = q.program
    xq = {s.vec: s.quantize(np.asarray(x, np.float64)) for s in prog.inputs}
    ref, ref_state = intexact.run(prog, xq)
    want = intexact.dequantize_outputs(prog, ref)
    y, st = module_or_art.run(x, streaming=True)
    for o, a, b in zip(prog.outputs, as_tuple(y), want):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b.astype(np.float32), err_msg=f"dequantized {o.name}")
    for k in ref_state:
        assert_int_equal(st[k], ref_state[k], f"state {k}")
    y2, _ = module_or_art.run(x)
    for a, b in zip(as_tuple(y2), as_tuple(y)):
        np.testing.assert_array_equal(a, b)


def check_chunks(prog, module_or_art, xq, chunks) -> None:
    """Chunked streaming with the state carried along == one whole run, bit for bit."""
    xs = xq if isinstance(xq, dict) else {prog.inputs[0].vec: xq}
    steps = next(iter(xs.values())).shape[1]
    whole, whole_state = module_or_art.run_int(xq, streaming=True)
    for chunk in chunks:
        state, parts = None, []
        for s in range(0, steps, chunk):
            part = {k: v[:, s : s + chunk] for k, v in xs.items()}
            y, state = module_or_art.run_int(
                part if isinstance(xq, dict) else part[prog.inputs[0].vec], state, streaming=True
            )
            parts.append(as_tuple(y))
        for i, o in enumerate(prog.outputs):
            got = np.concatenate([p[i] for p in parts], axis=1) if o.temporal else parts[-1][i]
            assert_int_equal(got, as_tuple(whole)[i], f"{o.name}, chunk {chunk}")
        for k in whole_state:
            assert_int_equal(state[k], whole_state[k], f"state {k}, chunk {chunk}")


# ----------------------------------------------------------------------------------------------
# every zoo model, both presets


@pytest.fixture(scope="module")
def zoo_int():
    """Quantized zoo models compiled once per module (all four functions), lazily."""
    cache = {}

    def get(case, preset):
        if (case, preset) not in cache:
            q = quantized_zoo(case, preset)
            cache[case, preset] = (q, compile_tvm_int(q, "x86"))
        return cache[case, preset]

    return get


ZOO_PARAMS = [(c, p) for c in sorted(ZOO) for p in PRESETS]


@pytest.mark.parametrize("case,preset", ZOO_PARAMS)
def test_zoo_bit_exact_with_intexact(zoo_int, case, preset):
    q, module = zoo_int(case, preset)
    for k, (b, t) in enumerate(SHAPES):
        x = float_input(b, t, 6, seed=10 * k + 1)
        xq = q.quantize_input(x.astype(np.float64))
        st = check_exact(q.program, module, xq)
        # continuing from a non-zero state
        check_exact(q.program, module, q.quantize_input(float_input(b, t, 6, seed=10 * k + 2)), st)
    check_float_boundary(q, module, float_input(3, 50, 6, seed=5))


@pytest.mark.parametrize("case,preset", ZOO_PARAMS)
def test_zoo_chunked_streaming_equals_whole(zoo_int, case, preset):
    q, module = zoo_int(case, preset)
    xq = q.quantize_input(float_input(3, 50, 6, seed=9).astype(np.float64))
    check_chunks(q.program, module, xq, CHUNKS)
    # and the chunked final state is the interpreter's
    _, ref_state = intexact.run_chunked(q.program, xq, 9)
    _, st = module.run_int(xq, streaming=True)
    for k in ref_state:
        assert_int_equal(st[k], ref_state[k], k)


def test_zoo_kernels_are_scan_loops_with_onchip_state(zoo_int):
    q, module = zoo_int("lmu", "edgeseq")
    src = module.kernels["int_scan"]
    assert "for t in T.serial(TT)" in src and "T.alloc_buffer" in src and "T.vectorized" in src
    assert {"int_quantize", "int_scan", "int_dequant"} <= set(module.kernels)
    lay = module.lowered.generated.layout
    # the input projection (matvec on the step input) is hoisted out of the time loop
    assert any(op.kind == "matvec" and op.x == "x" for op in lay.hoisted)
    assert not any(op.kind == "matvec" and op.x == "x" for op in lay.scan)
    assert "int_hoist" in module.kernels and "r0" in module.kernels["int_hoist"]
    # x86: the int8 x int16 products go through pmaddwd
    assert "llvm.x86." in module.kernels["int_scan"] and "pmadd" in module.kernels["int_scan"]
    # state loads read the on-chip state buffers directly (no copy)
    assert lay.alias


@pytest.mark.parametrize(
    "case,hoist,pairs", [("gru", False, True), ("lmuformer_spiking", False, False), ("lmu_full", True, False)]
)
def test_zoo_other_schedules_are_bit_exact(case, hoist, pairs):
    """Every op in the time loop (no hoisted projections), and plain widening multiply-adds
    instead of pmaddwd pair products: the same integers."""
    q = quantized_zoo(case, "edgeseq")
    module = compile_tvm_int(q, "x86", hoist=hoist, pair_products=pairs, functions=("main_int", "stream_int"))
    gen = module.lowered.generated
    assert (gen.hoist is not None) == hoist and bool(gen.layout.hoisted) == hoist
    assert ("pmadd" in "".join(module.kernels.values())) == pairs
    for b, t in ((1, 1), (3, 50)):
        check_exact(q.program, module, q.quantize_input(float_input(b, t, 6, seed=b + t).astype(np.float64)))


def test_avx512_pair_products_compile_and_run_where_supported():
    """AVX-512BW CPUs get the 512-bit pmaddwd (32 int16 products per instruction); run where the
    host has it, compile only elsewhere."""
    from tvm.target import codegen

    q = quantized_zoo("gru", "edgeseq")  # hidden 16: one full 16-lane group of outputs
    module = compile_tvm_int(q, "x86", cpu="skylake-avx512", functions=("main_int", "stream_int"))
    assert "llvm.x86.avx512.pmaddw.d.512" in module.kernels["int_scan"]
    host = set(
        codegen.llvm_get_cpu_features(tvm.target.Target({"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu()}))
    )
    if not {"avx512bw", "avx512f", "avx512dq", "avx512vl"} <= host:
        pytest.skip("this CPU has no AVX-512BW: compiled, not run")
    check_exact(q.program, module, q.quantize_input(float_input(3, 50, 6, seed=3).astype(np.float64)))


def test_one_module_serves_every_length_and_batch(zoo_int):
    q, module = zoo_int("gru", "edgeseq")
    exe = module.executable
    for b, t in ((1, 2), (5, 3), (2, 300)):
        check_exact(q.program, module, q.quantize_input(float_input(b, t, 6, seed=b * t).astype(np.float64)))
    assert module.executable is exe


# ----------------------------------------------------------------------------------------------
# hand-made programs: every micro-op and its edge cases


def _spec(vec, channels, bits, inv):
    n = len(channels)
    inv = np.broadcast_to(np.asarray(inv, np.float64), (n,)).copy()
    return InputSpec(vec, np.asarray(channels, np.int64), bits, 1.0 / inv, inv, np.linspace(-0.1, 0.2, n))


def ops_program():
    """Every micro-op kind on two input parts (non-contiguous channels), with temporal outputs,
    a state written and re-read in the same step, per-channel and scalar constants, broadcasts,
    ties for every rounding rule, saturation, int64 accumulation and a final section."""
    rng = np.random.default_rng(3)
    pb = ProgramBuilder()
    x = pb.add_input(_spec("x", [5, 0, 2, 3, 1, 4], 16, 3000.0))
    x2 = pb.add_input(_spec("x2", [1, 6], 8, 40.0))
    st = pb.add_state("cell/st", (2, 3), 16)
    acc = pb.add_state("cell/acc", (6,), 40)
    outs = []

    def emit(op, n, bits=None, out=True):
        name = pb.emit(op, n, bits)
        if out:
            outs.append(name)
        return name

    k = pb.const
    old = emit(Load(out="old", state=st), 6)
    emit(Add(out="add", a=x, b=pb.scalar(7)), 6)
    sub = emit(Sub(out="sub", a=x, b=k("c", [3, -2, 0, 1000, -32768, 5])), 6)
    sq = emit(Mul(out="mul", a=x, b=x), 6)
    m, s = quantize_multiplier([0.37, 1e-3, 0.5, 2.0**-20, 0.999, 0.0])
    rq = emit(Requant(out="rq", x=sq, mult=k("m", m), shift=k("s", s), pre=3), 6, bits=8)
    emit(Requant(out="half", x=x, mult=k("m2", [1 << 30]), shift=k("s2", [31])), 6, bits=8)
    emit(Lut(out="lut8", x=rq, table=k("t8", make_table("tanh", 0.03, 8, 1 / 127, 8, 8), np.int8)), 6, bits=8)
    emit(Lut(out="lut16", x=x, table=k("t16", make_table("sigmoid", 1 / 3000, 16, 1 / 32767, 16, 9))), 6, bits=16)
    emit(Lut(out="lut16b", x=x, table=k("t16b", np.array([0, 1000, -3000, 7, 32767], np.int16))), 6, bits=16)
    emit(
        Clamp(out="clamp", x=x, lo=k("lo", [-100, -5, 0, -32768, 10, -1]), hi=k("hi", [100, 5, 3, 0, 20, 1])),
        6,
        bits=16,
    )
    ge = emit(CmpGe(out="ge", a=x, b=k("thr", [0, 10, -10, 300, 0, 0])), 6)
    emit(Select(out="sel", c=ge, a=x, b=sub), 6)
    emit(Div(out="div", a=x, b=k("d", [2, 3, 4, 7, 1, 10])), 6)
    pos = emit(Clamp(out="pos", x=x, lo=pb.scalar(1), hi=pb.scalar(32767)), 6, bits=16)
    emit(Div(out="divv", a=sq, b=pos), 6)
    emit(Isqrt(out="isqrt", x=sq), 6)
    cat = emit(Concat(out="cat", xs=(x, rq, k("kc", [11, -12])), blocks=2), 14)
    emit(Gather(out="perm", x=cat, index=k("perm_i", rng.permutation(14))), 14)
    emit(Gather(out="runs", x=cat, index=k("runs_i", [0, 1, 2, 7, 8, 9, 3, 3, 13])), 9)
    emit(
        MatVec(
            out="mv64",
            x=x,
            w=k("w16", rng.integers(-32768, 32768, (4, 6)), np.int16),
            bias=k("b64", [1 << 40, -(1 << 40), 5, 0], np.int64),
        ),
        4,
    )
    emit(MatVec(out="mvb", x=cat, w=k("w8", rng.integers(-128, 128, (5, 7)), np.int8), blocks=2), 10)
    # pair-product shapes: int8 x (packed pairs) with a tail column, odd input sizes (int8 and int16 x)
    emit(
        MatVec(
            out="mv8",
            x=rq,
            w=k("w8b", rng.integers(-127, 128, (17, 6)), np.int8),
            bias=k("b8", rng.integers(-1000, 1000, 17)),
        ),
        17,
    )
    g5 = emit(Gather(out="g5", x=rq, index=k("g5_i", [0, 2, 4, 1, 3])), 5)
    emit(MatVec(out="mvodd8", x=g5, w=k("w8c", rng.integers(-128, 128, (16, 5)), np.int8)), 16)
    emit(MatVec(out="mvodd16", x="runs", w=k("w8d", rng.integers(-128, 128, (9, 9)), np.int8)), 9)
    # inputs wider than two vectors of pairs (full vector loops when packing the pairs)
    w8 = emit(Gather(out="wide8", x=rq, index=k("w8_i", rng.integers(0, 6, 40))), 40, out=False)
    emit(MatVec(out="mvw8", x=w8, w=k("w8e", rng.integers(-128, 128, (16, 40)), np.int8)), 16)
    w16 = emit(Gather(out="wide16", x=x, index=k("w16_i", rng.integers(0, 6, 41))), 41, out=False)
    emit(MatVec(out="mvw16", x=w16, w=k("w8f", rng.integers(-128, 128, (24, 41)), np.int8)), 24)
    one = emit(MatVec(out="sum1", x=x2, w=k("ones", [[1, 1]], np.int8)), 1)
    emit(Add(out="bcast", a=x, b=one), 6)
    emit(Sub(out="sub2", a=x2, b=x2), 2)
    emit(Store(out=st, x=x), 6, out=False)
    emit(Load(out="new", state=st), 6)  # sees the value just stored
    emit(Add(out="old_after", a=old, b=pb.scalar(0)), 6)  # the value loaded before the store
    a0 = emit(Load(out="acc0", state=acc), 6, out=False)
    a1 = emit(Add(out="acc1", a=a0, b=sq, accumulate=True), 6, bits=40)
    emit(Store(out=acc, x=a1), 6, out=False)
    pb.section = "final"
    fa = pb.emit(Load(out="facc", state=acc), 6)
    fs = pb.emit(Load(out="fst", state=st), 6)
    fsum = pb.emit(Add(out="fsum", a=fs, b=pb.scalar(1)), 6)
    for name in outs:
        pb.outputs.append(OutputSpec(name, name, True, np.full(pb.vectors[name].n, 0.5**7)))
    pb.outputs.append(OutputSpec("facc", fa, False, np.ones(6)))
    pb.outputs.append(OutputSpec("fsum", fsum, False, np.linspace(0.1, 1, 6)))
    return pb.build()


def int_inputs(prog, batch, steps, seed):
    """Integer inputs over each part's full range, extremes and small values included."""
    rng = np.random.default_rng(seed)
    out = {}
    for s in prog.inputs:
        lo, hi = int_range(s.bits)
        a = rng.integers(lo, hi + 1, (batch, steps, len(s.channels)))
        small = rng.integers(-40, 41, a.shape)
        a = np.where(rng.random(a.shape) < 0.4, small, a)
        a.reshape(-1)[:4] = [lo, hi, 0, -1][: a.size]
        out[s.vec] = a
    return out


@pytest.fixture(scope="module")
def ops_module():
    prog = ops_program()
    return prog, compile_tvm_int(prog, "x86")


def test_every_micro_op_kind_is_covered(ops_module):
    from edgeseq.export.tvm.intexport import supported_micro_ops
    from edgeseq.quant.program import MICRO_OPS

    prog, _ = ops_module
    step_ops = {k for k, c in MICRO_OPS.items() if not c.window}  # window micro-ops: test_window_quant.py
    assert {op.kind for op in prog.step + prog.final} == step_ops
    assert set(supported_micro_ops()) == set(MICRO_OPS)


@pytest.mark.parametrize("batch,steps", SHAPES)
def test_micro_ops_bit_exact(ops_module, batch, steps):
    prog, module = ops_module
    st = check_exact(prog, module, int_inputs(prog, batch, steps, seed=batch * 100 + steps))
    check_exact(prog, module, int_inputs(prog, batch, steps, seed=7), st)


def test_micro_ops_chunked_equals_whole(ops_module):
    prog, module = ops_module
    check_chunks(prog, module, int_inputs(prog, 2, 30, seed=4), (1, 4, 13))


def test_micro_ops_in_the_time_loop_on_the_sse2_baseline():
    """Every op inside the time loop (no hoisting) on the x86-64 baseline CPU (SSE2: 4 lanes,
    other vector tails, no 64-bit vector multiply)."""
    prog = ops_program()
    module = compile_tvm_int(prog, "x86", cpu="x86-64", hoist=False, functions=("main_int", "stream_int"))
    assert module.target.sched.lanes == 4 and module.lowered.generated.hoist is None
    check_exact(prog, module, int_inputs(prog, 3, 17, seed=11))
    check_exact(prog, module, int_inputs(prog, 1, 1, seed=12))


def test_rounding_edge_values_are_exact(ops_module):
    """Ties of requant (negative half-up), div, lut interpolation and the clamp/saturation limits."""
    prog, module = ops_module
    ties = np.array([[-5, -3, -1, 1, 3, 5], [-32768, 32767, 2, -2, 4, -4], [0, 12345, -12345, 32766, -32767, 7]])
    xq = {"x": ties[None], "x2": np.array([[[-128, 127], [0, -1], [5, -5]]])}
    check_exact(prog, module, xq)
    got, _ = module.run_int(xq)
    got = dict(zip([o.name for o in prog.outputs], got))
    # requant by exactly 1/2 rounds half up: -5 -> -2, -3 -> -1, -1 -> 0, 1 -> 1, 3 -> 2, 5 -> 3
    assert got["half"][0, 0].tolist() == [-2, -1, 0, 1, 2, 3]
    # div by [2, 3, 4, 7, 1, 10] rounds half up too
    assert got["div"][0, 0].tolist() == [-2, -1, 0, 0, 3, 1]


def test_float_boundary_rounds_half_to_even_and_saturates():
    """The input quantizer in double precision: rint ties to even, clamp to the width."""
    pb = ProgramBuilder()
    spec = InputSpec(
        "x", np.array([0, 1, 2]), 8, np.array([0.5, 0.5, 0.25]), np.array([2.0, 2.0, 4.0]), np.array([0.0, 0.125, -0.5])
    )
    x = pb.add_input(spec)
    y = pb.emit(Add(out="y", a=x, b=pb.scalar(0)), 3)
    pb.outputs.append(OutputSpec("y", y, True, np.array([0.5, 0.5, 0.25])))
    prog = pb.build()
    module = compile_tvm_int(prog, "x86", functions=("main", "stream", "main_int"))
    vals = np.array(
        [0.25, 0.75, 1.25, -0.25, -0.75, -1.25, 1e6, -1e6, 63.75, -64.25, 0.0, -0.0, 3.3, 1e-30], np.float32
    )
    x = np.stack([vals, vals + np.float32(0.125), vals * np.float32(0.5)], axis=-1)[None]
    want = spec.quantize(x.astype(np.float64))
    assert sorted(set(want[0, :6, 0].tolist())) == [-2, 0, 2]  # ties to even
    yq, _ = module.run_int(want)
    assert_int_equal(yq, want, "identity program")
    y, _ = module.run(x)
    np.testing.assert_array_equal(y, (want * spec.scale).astype(np.float32))
    rng = np.random.default_rng(0)
    xr = (rng.standard_normal((2, 500, 3)) * 20).astype(np.float32)
    y, _ = module.run(xr)
    np.testing.assert_array_equal(y, (spec.quantize(xr.astype(np.float64)) * spec.scale).astype(np.float32))


def test_runtime_checks_raise_numerics_errors():
    """div by a vector that may be <= 0 and isqrt of a value that may be negative are checked at
    run time and raise NumericsError naming the micro-op; valid values stay exact."""
    pb = ProgramBuilder()
    x = pb.add_input(_spec("x", [0, 1], 16, 100.0))
    x2 = pb.add_input(_spec("x2", [2, 3], 16, 100.0))
    d = pb.emit(Div(out="q", a=pb.const("a", [1000, -999]), b=x, node="ln"), 2)
    r = pb.emit(Isqrt(out="r", x=x2, node="ln2"), 2)
    for v in (d, r):
        pb.outputs.append(OutputSpec(v, v, True, np.ones(2)))
    prog = pb.build()
    module = compile_tvm_int(prog, "x86", functions=("main_int", "stream_int"))

    def xq(a, b):
        return {"x": np.array([a]), "x2": np.array([b])}

    check_exact(prog, module, xq([[3, 7], [1, 32767], [2, 4]], [[0, 1], [32767, 16], [15, 17]]))
    with pytest.raises(NumericsError, match="'q'.*divisor"):
        module.run_int(xq([[3, 7], [0, 5]], [[1, 1], [1, 1]]))
    with pytest.raises(NumericsError, match="'r'.*negative"):
        module.run_int(xq([[3, 7], [5, 5]], [[1, 1], [4, -5]]))
    for bad in (xq([[3, 7], [0, 5]], [[1, 1], [1, 1]]), xq([[3, 7], [5, 5]], [[1, 1], [4, -5]])):
        with pytest.raises(NumericsError):  # and the interpreter agrees that these are errors
            intexact.run(prog, bad)


def test_program_that_ignores_its_input():
    """A step program that never reads the input (a step counter with a pooled output only):
    the input still sets the number of steps."""
    pb = ProgramBuilder()
    pb.add_input(_spec("x", [0, 1, 2], 8, 10.0))
    c = pb.add_state("count/n", (), 32)
    c0 = pb.emit(Load(out="c0", state=c), 1)
    c1 = pb.emit(Add(out="c1", a=c0, b=pb.scalar(3), accumulate=True), 1, bits=32)
    pb.emit(Store(out=c, x=c1), 1)
    pb.section = "final"
    f = pb.emit(Load(out="f", state=c), 1)
    pb.outputs.append(OutputSpec("count", f, False, np.ones(1)))
    prog = pb.build()
    module = compile_tvm_int(prog, "x86", functions=("main_int", "stream_int"))
    xq = np.zeros((2, 7, 3), np.int8)
    y, st = module.run_int(xq, streaming=True)
    assert y.tolist() == [[21], [21]] and st["count/n"].tolist() == [[21], [21]]
    check_exact(prog, module, xq, st)


# ----------------------------------------------------------------------------------------------
# artifacts


def test_export_integer_artifact_runs_and_verifies(tmp_path):
    q = quantized_zoo("lif_rec", "edgeseq")
    out = tmp_path / "art"
    art = export_tvm_int(q, out, "x86")
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {
        "model.so",
        "manifest.json",
        "kernels.py",
        "graph.esq",
        "quantized.esq",
        "golden/x.f32",
        "golden/xq0.bin",
        "golden/q0.bin",
        "golden/y0.f32",
        "driver/edgeseq_tvm_run.cc",
    } <= files
    mf = json.loads((out / "manifest.json").read_text())
    assert mf["numerics"] == "integer" and mf["golden"]["tolerance"] == 0.0
    assert set(mf["functions"]) == {"main", "stream", "main_int", "stream_int"}
    assert [s["key"] for s in mf["signature"]["states"]] == list(q.program.states)
    assert set(mf["files"]) == files - {"manifest.json"}
    art = TvmArtifact.load(out)
    assert art.integer
    errs = art.verify()
    assert errs and max(errs.values()) == 0.0
    assert any(k.startswith("stream_int/state/") for k in errs)
    # golden vectors are the interpreter's
    xq, qs, st = art.golden_int()
    ref, ref_state = intexact.run(q.program, xq)
    for a, b in zip(qs, ref):
        assert_int_equal(a, b, "golden")
    # whole / streaming / float boundary through the loaded artifact
    x = float_input(3, 50, 6, seed=3)
    check_exact(q.program, art, q.quantize_input(x.astype(np.float64)))
    check_float_boundary(q, art, x)
    check_chunks(q.program, art, q.quantize_input(x.astype(np.float64)), (17,))
    # the bundle facade loads it too
    from edgeseq.export import Artifact

    y = Artifact.load(out).run(x)
    np.testing.assert_array_equal(y, as_tuple(art.run(x)[0])[0])
    # a modified golden vector is caught
    g = out / "golden" / "q0.bin"
    g.write_bytes(g.read_bytes()[:-1] + bytes([g.read_bytes()[-1] ^ 1]))
    with pytest.raises(ArtifactError, match="sha256"):
        TvmArtifact.load(out)


def test_artifact_verify_detects_wrong_integers(tmp_path):
    """verify() compares bit for bit: a golden output off by one fails it."""
    from edgeseq.errors import ToleranceError
    from edgeseq.util.fs import sha256_file

    q = quantized_zoo("rnn", "naive")
    out = tmp_path / "art"
    export_tvm_int(q, out, "x86")
    mf = json.loads((out / "manifest.json").read_text())
    e = mf["golden"]["int_outputs"][0]
    a = np.fromfile(out / e["file"], dtype=e["dtype"])
    a[0] += 1
    (out / e["file"]).write_bytes(a.tobytes())
    mf["files"][e["file"]]["sha256"] = sha256_file(out / e["file"])
    (out / "manifest.json").write_text(json.dumps(mf))
    with pytest.raises(ToleranceError, match="main_int/out0"):
        TvmArtifact.load(out).verify()


def test_export_is_atomic(tmp_path, monkeypatch):
    q = quantized_zoo("rnn", "edgeseq")
    out = tmp_path / "art"
    export_tvm_int(q, out, "x86")
    with pytest.raises(ArtifactError):
        export_tvm_int(q, out, "x86")  # exists, no force
    export_tvm_int(q, out, "x86", force=True)
    from edgeseq.export.tvm import intgen

    monkeypatch.setattr(intgen, "LOWERED_MICRO_OPS", tuple(k for k in intgen.LOWERED_MICRO_OPS if k != "lut"))
    with pytest.raises(UnsupportedOpError, match="lut"):
        export_tvm_int(q, tmp_path / "never", "x86")
    assert not (tmp_path / "never").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".never")]


# ----------------------------------------------------------------------------------------------
# errors


def test_unsupported_micro_op_names_op_node_and_target():
    from dataclasses import replace

    from edgeseq.quant.program import MICRO_OPS, MicroOp, _micro

    @_micro
    class Popcount(MicroOp):
        kind = "popcount_test"
        x: str = ""

        def reads(self):
            return (self.x,)

    try:
        q = quantized_zoo("rnn", "edgeseq")
        prog = replace(
            q.program, step=q.program.step[:1] + (Popcount(out="pc", x="x", node="my.node"),) + q.program.step[1:]
        )
        with pytest.raises(UnsupportedOpError) as e:
            compile_tvm_int(prog, "x86")
        msg = str(e.value)
        assert "popcount_test" in msg and "my.node" in msg and "tvm/x86" in msg
    finally:
        MICRO_OPS.pop("popcount_test", None)


def test_unknown_targets_and_bad_arguments(zoo_int):
    q, module = zoo_int("rnn", "edgeseq")
    for target in ("riscv", "cortex-m4", "onnx"):
        with pytest.raises(ConfigError, match=target):
            compile_tvm_int(q, target)
    with pytest.raises(ConfigError):
        compile_tvm_int(q, "x86", cpu="no-such-cpu")
    with pytest.raises(ConfigError):
        compile_tvm_int("not a quantized graph", "x86")
    with pytest.raises(ShapeError):
        module.run(np.zeros((2, 5), np.float32))
    with pytest.raises(ShapeError):
        module.run(np.zeros((2, 5, 7), np.float32))
    with pytest.raises(NumericsError):
        module.run(np.full((1, 3, 6), np.nan, np.float32))
    with pytest.raises(ShapeError):
        module.run_int(np.zeros((2, 5, 6), np.float32))  # not an integer dtype
    with pytest.raises(NumericsError):
        module.run_int(np.full((1, 2, 6), 300))  # outside int8
    with pytest.raises(ShapeError):
        module.run_int(np.zeros((1, 2, 5), np.int8))
    with pytest.raises(ShapeError):
        module.run_int(np.zeros((1, 2, 6), np.int8), {}, streaming=True)
    st = {k: np.zeros((2, s.n), np.int64) for k, s in q.program.states.items()}
    with pytest.raises(ShapeError):
        module.run_int(np.zeros((1, 2, 6), np.int8), st)  # batch 2 state for batch 1
    with pytest.raises(ConfigError):
        module.run_int(np.zeros((2, 2, 6), np.int8), st, streaming=False)
    bad = {k: np.full((2, s.n), 0.5) for k, s in q.program.states.items()}
    with pytest.raises(NumericsError):
        module.run_int(np.zeros((2, 2, 6), np.int8), bad)
    # a float zero state (e.g. from a generic caller) is accepted as the integer zero state
    fz = {k: np.zeros((2, s.n), np.float32) for k, s in q.program.states.items()}
    y1, _ = module.run_int(np.ones((2, 2, 6), np.int8), fz)
    y2, _ = module.run_int(np.ones((2, 2, 6), np.int8), streaming=True)
    assert_int_equal(y1, y2, "zero state")


# ----------------------------------------------------------------------------------------------
# the miscompile lint on integer kernels

NARROW_KERNEL = """
@T.prim_func
def narrow(x_h: T.handle, y_h: T.handle):
    T.func_attr({"tir.noalias": True})
    X = T.match_buffer(x_h, (2, 8), "int16")
    Y = T.match_buffer(y_h, (8,), "int32")
    for j in T.vectorized(8):
        Y[j] = T.Cast("int32", X[0, j] + X[1, j])
"""

UNCLAMPED_KERNEL = """
@T.prim_func
def unclamped(x_h: T.handle, y_h: T.handle):
    T.func_attr({"tir.noalias": True})
    X = T.match_buffer(x_h, (8,), "float64")
    Y = T.match_buffer(y_h, (8,), "int8")
    for j in T.serial(8):
        Y[j] = T.Cast("int8", T.nearbyint(X[j]))
"""

ASSERT_KERNEL = """
@T.prim_func
def checked(x_h: T.handle):
    X = T.match_buffer(x_h, (8,), "int32")
    for j in T.vectorized(8):
        assert X[j] > T.int32(0), "positive"
"""


def _run1(src, name, *arrays):
    func = tvm.script.from_source(src)
    lib = tvm.tirx.build(tvm.IRModule({name: func.with_attr("global_symbol", name)}), target="llvm")
    ts = [tvm.runtime.tensor(a) for a in arrays]
    lib[name](*ts)
    return ts[-1].numpy()


def test_lint_flags_narrow_integer_arithmetic():
    func = tvm.script.from_source(NARROW_KERNEL)
    hazards = integer_hazards(func)
    assert hazards and "int16 arithmetic" in hazards[0], hazards
    with pytest.raises(UnsupportedOpError, match="miscompiled"):
        check_kernels(tvm.IRModule({"narrow": func}))
    # the pattern really loses the carry: 30000 + 30000 in int16 wraps
    x = np.array([[30000] * 8, [30000] * 8], np.int16)
    y = _run1(NARROW_KERNEL, "narrow", x, np.zeros(8, np.int32))
    assert y[0] == -5536 and y[0] != 60000


def test_lint_flags_unclamped_float_to_int_conversion():
    func = tvm.script.from_source(UNCLAMPED_KERNEL)
    hazards = integer_hazards(func)
    assert hazards and "not clamped" in hazards[0], hazards
    # out of range, the conversion does not saturate (the quantizer needs clamp(rint(t)))
    y = _run1(UNCLAMPED_KERNEL, "unclamped", np.full(8, 300.0), np.zeros(8, np.int8))
    assert y[0] != 127


def test_lint_flags_assert_in_vectorized_loop():
    func = tvm.script.from_source(ASSERT_KERNEL)
    assert any("assert inside a vectorized loop" in h for h in integer_hazards(func))


def test_generated_integer_kernels_pass_the_lint(ops_module, zoo_int):
    for module in (ops_module[1], zoo_int("lmuformer_spiking", "edgeseq")[1]):
        funcs = {gv.name_hint: f for gv, f in module.lowered.mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
        assert {"int_quantize", "int_scan", "int_dequant"} <= set(funcs)
        for name, f in funcs.items():
            assert vectorization_hazards(f) == [], name
            assert integer_hazards(f) == [], name
        assert "T.vectorized" in module.kernels["int_scan"]


def test_lint_runs_before_compilation(monkeypatch):
    """A generator regression that emitted narrow arithmetic is refused before TVM compiles it."""
    from edgeseq.export.tvm import intgen

    orig = intgen.wider
    monkeypatch.setattr(intgen, "wider", lambda *dts, floor=32: orig(*dts, floor=8))
    with pytest.raises(UnsupportedOpError, match="int16 arithmetic|int8 arithmetic"):
        compile_tvm_int(ops_program(), "x86")
