"""QDQ export with ``fused_rnn``: an LSTM-shaped quantized scan as onnxruntime's ``DynamicQuantizeLSTM``
(edgeseq.export.onnx.qfused), checked against the integer-exact interpreter at several lengths and batch
sizes, whole and chunk by chunk, within the stated ``recurrent_fused`` tolerance; programs that are not
an LSTM keep their ``Scan``; the artifact states the tolerance it was checked against."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

import edgeseq  # noqa: E402
from edgeseq.errors import ConfigError  # noqa: E402
from edgeseq.export.onnx import build_onnx_qdq, export_onnx_quantized, qdq  # noqa: E402
from edgeseq.quant import intexact, quantize  # noqa: E402
from edgeseq.quant.program import storage_dtype  # noqa: E402

from .zoo_cases import build  # noqa: E402

TOL = qdq.TOLERANCE["lsb"]["recurrent_fused"]


def _session(model):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _input(rng, b, t, loud=False):
    x = rng.normal(size=(b, t, 6)) * 1.5
    if loud:
        x[:, ::3] *= 12.0
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def quantized():
    from edgeseq.frontends import capture

    rng = np.random.default_rng(7)
    return {
        case: quantize(capture(build(case), torch.zeros(1, 8, 6)), rng.normal(size=(48, 16, 6)) * 1.3, "edgeseq")
        for case in ("lstm", "gru")
    }


def _ops(model) -> list[str]:
    return [n.op_type for n in model.graph.node]


def test_lstm_runs_on_one_quantized_kernel_within_the_stated_tolerance(quantized):
    q = quantized["lstm"]
    info: dict = {}
    model = build_onnx_qdq(q, fused_rnn=True, info=info)
    onnx.checker.check_model(model, full_check=True)
    ops = _ops(model)
    assert ops.count("DynamicQuantizeLSTM") == 1 and "Scan" not in ops
    assert qdq.tolerance_key(q.graph, info) == "recurrent_fused" and not info["inexact_weights"]
    generic = _session(build_onnx_qdq(q))
    s = _session(model)
    name = "q." + q.program.outputs[0].name
    rng = np.random.default_rng(3)
    worst = worst_generic = 0
    for t in (1, 50, 200):
        for b in (1, 3):
            x = _input(rng, b, t, loud=(t == 50))
            want = intexact.run(q.program, q.quantize_input(x))[0][0]
            (got,) = s.run([name], {"x": x})
            assert got.shape == want.shape and got.dtype == np.int16
            worst = max(worst, int(np.max(np.abs(got.astype(np.int64) - want))))
            worst_generic = max(worst_generic, int(np.max(np.abs(generic.run([name], {"x": x})[0] - want))))
    assert worst <= TOL
    # the kernel's own numerics (float cell state, 8-bit hidden state per step) are visible: not the Scan
    assert worst > worst_generic
    # decisions on a larger batch: with the integer program as stated, and with the float model as often
    # as the integer program's
    from edgeseq.ir.interpret import run as float_run

    x = _input(np.random.default_rng(11), 400, 40)
    want = intexact.run(q.program, q.quantize_input(x))[0][0]
    (got,) = s.run([name], {"x": x})
    (y,), _ = float_run(q.graph, x.astype(np.float64))
    assert np.mean(np.argmax(got, -1) == np.argmax(want, -1)) >= qdq.TOLERANCE["fused_decision_agreement"]
    to_float = np.mean(np.argmax(got, -1) == np.argmax(y, -1))
    assert to_float >= np.mean(np.argmax(want, -1) == np.argmax(y, -1)) - 0.01


def test_fused_streaming_keeps_the_state_contract(quantized):
    q = quantized["lstm"]
    p = q.program
    name = "q." + p.outputs[0].name
    stream = _session(build_onnx_qdq(q, streaming=True, fused_rnn=True))
    whole = _session(build_onnx_qdq(q, fused_rnn=True))
    for b, t in ((1, 9), (3, 40)):
        x = _input(np.random.default_rng(b), b, t)
        want_q, want_state = intexact.run(p, q.quantize_input(x))
        state = {k: np.zeros((b, sp.n), storage_dtype(sp.bits)) for k, sp in p.states.items()}
        for lo in range(0, t, 7):
            res = stream.run(
                [name] + [f"state_out.{k}" for k in p.states],
                {"x": x[:, lo : lo + 7], **{f"state_in.{k}": v for k, v in state.items()}},
            )
            state = dict(zip(p.states, res[1:]))
            if lo == 0:  # the first chunk starts from the same zero state as a whole run: identical
                assert np.array_equal(res[0], whole.run([name], {"x": x[:, :7]})[0])
        # the last chunk's readout: the whole sequence's, through states rounded at every boundary
        assert int(np.max(np.abs(res[0].astype(np.int64) - want_q[0]))) <= TOL
        for k, v in state.items():
            assert v.dtype == storage_dtype(p.states[k].bits), k
            assert int(np.max(np.abs(v.astype(np.int64) - want_state[k]))) <= TOL, k


def test_other_programs_keep_their_scan(quantized):
    q = quantized["gru"]  # onnxruntime has no quantized GRU kernel
    info: dict = {}
    fused = build_onnx_qdq(q, fused_rnn=True, info=info)
    assert "DynamicQuantizeLSTM" not in _ops(fused) and "Scan" in _ops(fused)
    assert qdq.tolerance_key(q.graph, info) == "recurrent"
    x = _input(np.random.default_rng(5), 2, 30)
    name = "q." + q.program.outputs[0].name
    assert np.array_equal(
        _session(fused).run([name], {"x": x})[0], _session(build_onnx_qdq(q)).run([name], {"x": x})[0]
    )


def test_artifact_states_the_fused_tolerance_and_the_facade_wires_it(quantized, tmp_path):
    q = quantized["lstm"]
    x = _input(np.random.default_rng(8), 2, 21)
    art = edgeseq.export(q, target="onnx", out=tmp_path / "f", golden_input=x, onnx_numerics="qdq", fused_rnn=True)
    m = art.manifest
    tol = m["quantization"]["tolerance"]
    assert tol["family"] == "recurrent_fused" and tol["max_lsb"] == TOL
    row = m["check"]["outputs"][0]
    assert row["within_tolerance"] and 0 < row["max_lsb_err"] <= TOL
    assert "DynamicQuantizeLSTM" in _ops(onnx.load(str(art.path / "model.onnx")))
    plain = export_onnx_quantized(q, tmp_path / "p", numerics="qdq", golden_input=x)
    assert plain.manifest["quantization"]["tolerance"]["family"] == "recurrent"
    with pytest.raises(ConfigError, match="fused_rnn"):
        edgeseq.export(q, target="onnx", out=tmp_path / "e", fused_rnn=True)  # the exact integer program
