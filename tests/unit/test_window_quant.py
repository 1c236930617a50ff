"""Quantized window graphs: calibration, plan and fake-quant simulation run layered like the
reference; the integer program cuts its step at window micro-ops (Reverse, Lookahead) and the
integer-exact interpreter runs it segment by segment; the ONNX integer model reproduces it bit for
bit on whole windows (two lengths x two batch sizes); streaming stays a one-line refusal."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseq.errors import EdgeseqError, VerificationError
from edgeseq.ir.interpret import run
from edgeseq.quant import intexact
from edgeseq.quant import program as P

from .window_cases import BATCHES, CORPUS_WINDOW, LENGTHS, window_model

MODELS = ("synthetic",) + CORPUS_WINDOW


def test_window_micro_ops_are_the_interpreter_equations():
    """A hand-made window program: reverse, look-ahead of 2, a state in the last segment."""
    b = P.ProgramBuilder()
    x = b.add_input(P.InputSpec("x", np.arange(2), 8, np.ones(2), np.ones(2), np.zeros(2)))
    r = b.emit(P.Reverse(out="r", x=x), 2, 8)
    a = b.emit(P.Lookahead(out="a", x=r, steps=2), 2, 8)
    b.add_state("acc", (2,), 32)
    prev = b.emit(P.Load(out="prev", state="acc"), 2, 32)
    s = b.emit(P.Add(out="s", a=prev, b=a, accumulate=True), 2, 32)
    b.emit(P.Store(out="acc", x=s), 2)
    b.outputs += [P.OutputSpec("a", a, True, np.ones(2)), P.OutputSpec("s", s, True, np.ones(2))]
    prog = b.build()
    assert prog.is_window and [(len(o), len(w)) for o, w in P.segments(prog.step)] == [(0, 2), (3, 0)]
    xq = np.random.default_rng(0).integers(-128, 128, (2, 6, 2))
    (ya, ys), _ = intexact.run(prog, xq)
    want = np.zeros_like(xq)
    want[:, :4] = xq[:, ::-1][:, 2:]
    np.testing.assert_array_equal(ya, want)
    np.testing.assert_array_equal(ys, np.cumsum(want, axis=1))
    with pytest.raises(EdgeseqError, match="whole windows"):
        intexact.run(prog, xq, intexact.init_state(prog, 2))
    with pytest.raises(EdgeseqError, match="not in chunks"):
        intexact.run_chunked(prog, xq, 3)
    split = P.ProgramBuilder()
    xs = split.add_input(P.InputSpec("x", np.arange(1), 8, np.ones(1), np.ones(1), np.zeros(1)))
    split.add_state("st", (1,), 8)
    split.emit(P.Load(out="l", state="st"), 1, 8)
    split.emit(P.Reverse(out="rv", x=xs), 1, 8)
    split.emit(P.Store(out="st", x="rv"), 1)
    with pytest.raises(VerificationError, match="used in two segments"):
        split.build()


@pytest.mark.parametrize("name", MODELS)
def test_quantized_window_graph_runs_layered(name):
    g, qg, inputs = window_model(name)
    assert g.is_window and qg.program.is_window
    kinds = {op.kind for op in qg.program.step}
    assert kinds & {"reverse", "lookahead"}
    for batch in BATCHES:
        for steps in LENGTHS:
            x = inputs(batch, steps, 7 + steps)
            want, _ = run(g, x)
            yi, _ = qg.run(x)
            yf, _ = qg.run(x, mode="fake")
            for a, f, w in zip(yi, yf, want):
                assert a.shape == w.shape
                scale = max(float(np.abs(w).max()), 1e-3)
                assert np.abs(a - w).max() <= 0.1 * scale, (name, batch, steps)  # int8: a few LSB of each point
                assert np.abs(a - f).max() <= 0.05 * scale, (name, batch, steps)
    with pytest.raises(EdgeseqError, match="window graph"):
        qg.run(inputs(1, 5, 0), mode="fake", state=g.init_state(1))


@pytest.mark.parametrize("name", MODELS)
def test_onnx_int8_window_model_is_bit_exact(name, tmp_path):
    from edgeseq.export.onnx.quant import export_onnx_quantized

    g, qg, inputs = window_model(name)
    art = export_onnx_quantized(qg, tmp_path / "q", golden_input=inputs(2, 7, 3))
    for batch in BATCHES:
        for steps in LENGTHS:
            x = inputs(batch, steps, steps)
            got = art.run_integer(x)
            want, _ = intexact.run(qg.program, qg.quantize_input(x))
            for a, w in zip(got, want):
                np.testing.assert_array_equal(np.asarray(a, np.int64), w)
            got_f = art.run(x)
            got_f = got_f if isinstance(got_f, (tuple, list)) else (got_f,)
            for a, w in zip(got_f, intexact.dequantize_outputs(qg.program, want)):
                np.testing.assert_array_equal(a, w)


def test_window_program_round_trips_and_streaming_is_refused(tmp_path):
    import edgeseq
    from edgeseq.export.onnx.quant import export_onnx_quantized
    from edgeseq.quant import load_quantized

    g, qg, inputs = window_model("synthetic")
    qg.save(tmp_path / "w.q.esq")
    q2 = load_quantized(tmp_path / "w.q.esq")
    assert q2.program.equals(qg.program)
    x = inputs(2, 6, 0)
    for a, b in zip(q2.run(x)[0], qg.run(x)[0]):
        np.testing.assert_array_equal(a, b)
    for call in (
        lambda: export_onnx_quantized(qg, tmp_path / "s", streaming=True),
        lambda: export_onnx_quantized(qg, tmp_path / "d", numerics="qdq"),
        lambda: edgeseq.export(g, out=tmp_path / "e", target="onnx", quant=qg, streaming=True),
    ):
        with pytest.raises(EdgeseqError, match="needs a streaming graph, and this is a window graph") as ei:
            call()
        assert "\n" not in str(ei.value)


@pytest.mark.parametrize("name", ["synthetic", "conv_same_bn_gru"])
def test_tvm_int8_window_kernels_are_bit_exact(name):
    """The integer TVM scan kernel runs the segments over the window and the window micro-ops as copies
    (its buffers are extra (B, T, n) outputs); "stream" functions are refused in one line."""
    from edgeseq.errors import UnsupportedOpError
    from edgeseq.export.tvm.intexport import compile_tvm_int

    g, qg, inputs = window_model(name)
    m = compile_tvm_int(qg, "x86")
    for batch in BATCHES:
        for steps in LENGTHS:
            x = inputs(batch, steps, steps)
            xq = {s.vec: s.quantize(x) for s in qg.program.inputs}
            got, _ = m.run_int(xq)
            got = got if isinstance(got, tuple) else (got,)
            want, _ = intexact.run(qg.program, xq)
            for a, w in zip(got, want):
                np.testing.assert_array_equal(np.asarray(a, np.int64), w)
            y, _ = m.run(x)
            y = y if isinstance(y, tuple) else (y,)
            for a, w in zip(y, intexact.dequantize_outputs(qg.program, want)):
                np.testing.assert_array_equal(a, w.astype(np.float32))
    for call in (lambda: compile_tvm_int(qg, "x86", functions=("stream_int",)), lambda: m.run(x, g.init_state(1))):
        with pytest.raises(UnsupportedOpError, match="window") as ei:
            call()
        assert "\n" not in str(ei.value)
