"""QDQ ONNX export (``export_onnx_quantized(..., numerics="qdq")``): the float model with
QuantizeLinear/DequantizeLinear pairs at the plan's points, run in a real onnxruntime session and
compared with the integer-exact interpreter (edgeseq.quant.intexact) for every zoo model at several
lengths and batch sizes, whole-sequence and chunk by chunk; which fused integer kernels onnxruntime
runs where (profiler), at which optimization level, and why the weights must be Scan-body
initializers; the artifact contract, the facade / CLI wiring and the error paths.

Tolerance policy (edgeseq.export.onnx.qdq.TOLERANCE, also written into every manifest): integer
output error within ``lsb[family]`` output LSBs (recurrent: rnn, gru, lstm, mingru, minlstm; memory:
lmu*, lmuformer; spiking: lif*, l2mu*, lmuformer_spiking), >= 99.5% identical argmax decisions and,
for spiking models, >= 99.9% identical spikes in every population.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

import edgeseq  # noqa: E402
from edgeseq.errors import ArtifactError, ConfigError, UnsupportedOpError  # noqa: E402
from edgeseq.export import Artifact  # noqa: E402
from edgeseq.export.onnx import (  # noqa: E402
    OnnxArtifact,
    build_onnx_qdq,
    export_onnx_quantized,
    qdq,  # noqa: E402
)
from edgeseq.quant import intexact, quantize  # noqa: E402

from . import cell_cases  # noqa: E402
from .zoo_cases import FAMILY, ZOO, build  # noqa: E402

LENGTHS = (1, 50, 200)
BATCHES = (1, 3)
LSB_TOL = qdq.TOLERANCE["lsb"]
MIN_AGREEMENT = 0.995
MIN_SPIKE_AGREEMENT = qdq.TOLERANCE["spike_agreement"]
# the diagonal state space keeps C x at a 24-bit point that feeds a product, an embedding multiplies
# its table by a one-hot that is no quantization point: QDQ holds int8 / int16 points only, so these
# export the exact integer program (test_export_onnx_quant) and QDQ says so in one line
NO_QDQ = ("s4d", "s4d_real", "embedding")
CASES = [c for c in ZOO if c not in NO_QDQ]
SPIKING = [c for c in CASES if FAMILY[c] == "spiking"]
STREAMING = ["gru", "lstm", "lmu_full", "lif_rec", "l2mu_syn", "lmuformer"]


def _input(rng, b, t, loud=False):
    x = rng.normal(size=(b, t, 6)) * 1.5
    if loud:  # far outside the calibration range: every saturating path is exercised
        x[:, ::3] *= 12.0
    return x.astype(np.float32)


def _session(model, level=None, profile_dir=None, config=None):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    if level is not None:
        so.graph_optimization_level = level
    if profile_dir is not None:
        so.enable_profiling = True
        so.profile_file_prefix = str(profile_dir / "prof")
    for k, v in (config or {}).items():
        so.add_session_config_entry(k, v)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def quantized():
    """Every zoo case quantized as in test_export_onnx_quant (edgeseq preset)."""
    from edgeseq.frontends import capture

    rng = np.random.default_rng(7)
    out = {}
    for case in ZOO:  # NO_QDQ too (test_wide_points_feeding_products_are_refused)
        g = capture(build(case), torch.zeros(1, 8, 6))
        out[case] = quantize(g, rng.normal(size=(48, 16, 6)) * 1.3, "edgeseq")
    return out


@pytest.fixture(scope="module")
def sessions(quantized):
    """case -> (model, session) of the whole-sequence QDQ model with every spike train as a probe."""
    out = {}
    for case, q in quantized.items():
        if case in NO_QDQ:
            continue
        m = build_onnx_qdq(q, probes=qdq.spike_probes(q))
        out[case] = (m, _session(m))
    return out


def _reference(q, x, state=None, trace=False):
    res = intexact.run(q.program, q.quantize_input(x), state, trace=trace)
    return res


# ----------------------------------------------------------------------------------------------
# numerics


@pytest.mark.parametrize("case", CASES)
def test_agrees_with_the_integer_interpreter_at_several_lengths_and_batches(sessions, quantized, case):
    q = quantized[case]
    model, s = sessions[case]
    onnx.checker.check_model(model, full_check=True)
    out = q.program.outputs[0]
    probes = qdq.spike_probes(q)
    tol = LSB_TOL[FAMILY[case]]
    rng = np.random.default_rng(3)
    decisions = agree = spike_entries = spike_bad = fired = 0
    worst = 0
    for t in LENGTHS:
        for b in BATCHES:
            x = _input(rng, b, t, loud=(t == 50))
            want_q, _, trace = _reference(q, x, trace=True)
            got_f, got_q, *spikes = s.run([out.name, "q." + out.name] + ["probe." + p for p in probes], {"x": x})
            assert got_q.shape == want_q[0].shape and got_q.dtype == np.int16
            # the float output is the integer output dequantized (one float32 rounding)
            assert np.allclose(got_f, got_q * out.scale, rtol=2.0**-22, atol=0)
            worst = max(worst, int(np.max(np.abs(got_q.astype(np.int64) - want_q[0]))))
            decisions += b
            agree += int(np.sum(np.argmax(got_q, -1) == np.argmax(want_q[0], -1)))
            for p, g in zip(probes, spikes):
                assert g.shape == trace[p].shape, p
                spike_bad += int(np.count_nonzero(g.astype(np.int64) != trace[p]))
                spike_entries += g.size
                fired += int(trace[p].sum())
    assert worst <= tol, (case, worst, tol)
    assert agree / decisions >= MIN_AGREEMENT, (case, agree, decisions)
    if FAMILY[case] == "spiking":
        assert fired > 0 and spike_entries > 0  # the comparison is not vacuous
        assert 1.0 - spike_bad / spike_entries >= MIN_SPIKE_AGREEMENT, (case, spike_bad, spike_entries)


@pytest.mark.parametrize("case", ["gru", "lmu_full", "lif_rec"])
def test_decision_agreement_on_a_larger_batch(sessions, quantized, case):
    q = quantized[case]
    _, s = sessions[case]
    x = _input(np.random.default_rng(11), 48, 40)
    want_q, _ = _reference(q, x)
    (got,) = s.run(["q." + q.program.outputs[0].name], {"x": x})
    assert float(np.mean(np.argmax(got, -1) == np.argmax(want_q[0], -1))) >= MIN_AGREEMENT
    assert int(np.max(np.abs(got.astype(np.int64) - want_q[0]))) <= LSB_TOL[FAMILY[case]]


def test_the_points_are_not_decorative(quantized, sessions):
    """Without the program's rounding (the fake-quant points) the same model is visibly further from
    the interpreter: the QDQ pairs, not luck, make the agreement."""
    q = quantized["gru"]
    m, s = sessions["gru"]
    x = _input(np.random.default_rng(4), 3, 60)
    want_q, _ = _reference(q, x)
    name = "q." + q.program.outputs[0].name
    err_qdq = np.abs(s.run([name], {"x": x})[0].astype(np.int64) - want_q[0]).max()
    from edgeseq.ir.interpret import run as float_run

    (y,), _ = float_run(q.graph, x.astype(np.float64))
    err_float = np.abs(np.rint(y / q.program.outputs[0].scale) - want_q[0]).max()
    assert err_qdq <= LSB_TOL["recurrent"] < err_float


# ----------------------------------------------------------------------------------------------
# streaming, shapes


@pytest.fixture(scope="module")
def streaming(quantized):
    return {case: _session(build_onnx_qdq(quantized[case], streaming=True)) for case in STREAMING}


@pytest.mark.parametrize("case", STREAMING)
def test_streaming_chunks_equal_whole_sequence(streaming, sessions, quantized, case):
    from edgeseq.quant.program import storage_dtype

    q = quantized[case]
    s = streaming[case]
    p = q.program
    name = "q." + p.outputs[0].name
    x = _input(np.random.default_rng(9), 3, 50)
    (whole,) = sessions[case][1].run([name], {"x": x})
    state = {k: np.zeros((3, sp.n), storage_dtype(sp.bits)) for k, sp in p.states.items()}
    for lo, hi in ((0, 1), (1, 8), (8, 50)):
        feeds = {"x": x[:, lo:hi], **{f"state_in.{k}": v for k, v in state.items()}}
        res = s.run([name] + [f"state_out.{k}" for k in p.states], feeds)
        state = dict(zip(p.states, res[1:]))
        if hi < 50:  # pooled outputs after a chunk are the readout over every step so far
            (part,) = sessions[case][1].run([name], {"x": x[:, :hi]})
            assert np.array_equal(res[0], part), (lo, hi)
    assert np.array_equal(res[0], whole)
    _, want_state = _reference(q, x)
    for k, v in state.items():
        assert v.dtype == storage_dtype(p.states[k].bits), k  # the program's integer state contract
        assert int(np.max(np.abs(v.astype(np.int64) - want_state[k]))) <= 2 * LSB_TOL[FAMILY[case]] + 2, k


@pytest.mark.parametrize("stream", [False, True])
def test_model_is_valid_with_symbolic_batch_and_time(quantized, stream):
    q = quantized["l2mu_syn"]
    m = build_onnx_qdq(q, streaming=stream)
    onnx.checker.check_model(m, full_check=True)
    assert [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim] == ["batch", "time", 6]
    for o in m.graph.output:
        assert o.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert {o.domain for o in m.opset_import} == {""}  # standard ops only, no edgeseq functions
    if stream:
        assert {f"state_in.{k}" for k in q.program.states} <= {i.name for i in m.graph.input}
    # the standard QDQ form: every weight is an integer initializer read by a DequantizeLinear
    kinds = Counter(n.op_type for g in [m.graph] + _scan_bodies(m) for n in g.node)
    assert kinds["QuantizeLinear"] > 0 and kinds["DequantizeLinear"] > 0
    for g in [m.graph] + _scan_bodies(m):
        inits = {t.name: t.data_type for t in g.initializer}
        dq_out = {n.output[0]: n.input[0] for n in g.node if n.op_type == "DequantizeLinear"}
        for n in g.node:
            if n.op_type == "Gemm":
                w = dq_out.get(n.input[1])
                src = inits.get(w) if w is not None else None
                if src is None:  # a weight dequantized in the enclosing graph (float product)
                    outer = {t.name: t.data_type for t in m.graph.initializer}
                    wsrc = {nn.output[0]: nn.input[0] for nn in m.graph.node if nn.op_type == "DequantizeLinear"}
                    src = outer.get(wsrc.get(n.input[1]))
                assert src in (onnx.TensorProto.INT8, onnx.TensorProto.INT16), n.name


def _scan_bodies(model):
    return [a.g for n in model.graph.node if n.op_type == "Scan" for a in n.attribute if a.name == "body"]


# ----------------------------------------------------------------------------------------------
# the kernels onnxruntime runs


def _node_events(s):
    events = json.loads(open(s.end_profiling()).read())
    return [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]


def _in_body(e) -> bool:
    return e["name"].startswith("s") and e["name"].split(".", 1)[0][1:].isdigit()


def _kernels(model, x, tmp_path, level=None):
    s = _session(model, level=level, profile_dir=tmp_path)
    s.run(None, {"x": x})
    ev = _node_events(s)
    return (
        Counter(e["args"]["op_name"] for e in ev if _in_body(e)),
        Counter(e["args"]["op_name"] for e in ev if not _in_body(e)),
        ev,
    )


def test_profiler_shows_fused_integer_kernels_inside_the_scan_bodies(quantized, tmp_path):
    x = _input(np.random.default_rng(6), 1, 20)
    # recurrent spikes x int8 weights: one QGemm per step inside the body, int8 x int8
    body, seq, ev = _kernels(build_onnx_qdq(quantized["lif_rec"]), x, tmp_path)
    assert body["QGemm"] == 20 and body["Gemm"] == 0, body
    assert seq["QGemm"] >= 3  # the Linear layers over the whole sequence
    # activation types: spikes (0/1) are uint8 (u8 x s8 cannot saturate below 129), the signed input int8
    kinds = Counter(
        (_in_body(e), list(e["args"]["input_type_shape"][0])[0]) for e in ev if e["args"]["op_name"] == "QGemm"
    )
    assert kinds[(True, "uint8")] == 20 and kinds[(False, "int8")] == 1 and kinds[(False, "uint8")] == 2, kinds
    # L2MU: four spike x int8 products per step fused; the int16 memory matrices stay float
    body, _, _ = _kernels(build_onnx_qdq(quantized["l2mu"]), x, tmp_path)
    assert body["QGemm"] == 4 * 20 and body["Gemm"] == 2 * 20, body
    # GRU: int16 recurrent state (the plan) -> float products in the loop; int8 input projection fused
    body, seq, _ = _kernels(build_onnx_qdq(quantized["gru"]), x, tmp_path)
    assert body["QGemm"] == 0 and body["Gemm"] >= 20 and seq["QGemm"] == 1


def test_fusion_needs_extended_optimizations(quantized, tmp_path):
    m = build_onnx_qdq(quantized["lif_rec"])
    x = _input(np.random.default_rng(6), 1, 10)
    levels = ort.GraphOptimizationLevel
    basic, _, _ = _kernels(m, x, tmp_path, levels.ORT_ENABLE_BASIC)
    ext, _, _ = _kernels(m, x, tmp_path, levels.ORT_ENABLE_EXTENDED)
    full, _, _ = _kernels(m, x, tmp_path, levels.ORT_ENABLE_ALL)
    assert basic["QGemm"] == 0 and basic["Gemm"] == 10 and basic["DequantizeLinear"] > 0
    assert ext["QGemm"] == 10 and full["QGemm"] == 10
    # fused or not, the numbers are the same
    outs = [
        _session(m, level=lv).run(["q.readout"], {"x": x})[0]
        for lv in (levels.ORT_DISABLE_ALL, levels.ORT_ENABLE_BASIC, levels.ORT_ENABLE_ALL)
    ]
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


def test_weights_must_be_body_initializers_for_fusion(quantized, tmp_path):
    """The same model with the Scan body's int8 weights dequantized in the main graph (the body then
    reads a float weight from the outer scope, the form a float model with hoisted constants has):
    onnxruntime no longer fuses, the product runs in float. The model keeps them in the body."""
    m = build_onnx_qdq(quantized["lif_rec"])
    x = _input(np.random.default_rng(6), 1, 10)
    moved = onnx.ModelProto()
    moved.CopyFrom(m)
    scan_at = next(
        i
        for i, n in enumerate(moved.graph.node)
        if n.op_type == "Scan"
        and any(t.data_type == onnx.TensorProto.INT8 for b in n.attribute if b.name == "body" for t in b.g.initializer)
    )
    body = next(a.g for a in moved.graph.node[scan_at].attribute if a.name == "body")
    inits = {t.name: t for t in body.initializer}
    n_moved = 0
    for node in list(body.node):
        w = inits.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if w is not None and w.data_type == onnx.TensorProto.INT8 and len(w.dims) == 2:
            for name in node.input:
                moved.graph.initializer.append(inits[name])
                body.initializer.remove(inits[name])
            body.node.remove(node)
            moved.graph.node.insert(scan_at, node)
            n_moved += 1
    assert n_moved == 1
    onnx.checker.check_model(moved, full_check=True)
    here, _, _ = _kernels(m, x, tmp_path)
    outside, _, _ = _kernels(moved, x, tmp_path)
    assert here["QGemm"] == 10 and here["Gemm"] == 0
    assert outside["QGemm"] == 0 and outside["Gemm"] == 10
    a = _session(m).run(["q.readout"], {"x": x})[0]
    b = _session(moved).run(["q.readout"], {"x": x})[0]
    assert np.array_equal(a, b)


def test_int8_states_fuse_inside_the_recurrent_loop(tmp_path):
    """Where the plan puts a recurrent state in int8 (the 'naive' preset), its in-loop product is a
    fused int8 kernel too, and the int8 pooled readout feeding the head is still int8 x int8."""
    from edgeseq.frontends import capture

    g = capture(build("gru"), torch.zeros(1, 8, 6))
    rng = np.random.default_rng(1)
    q = quantize(g, rng.normal(size=(48, 16, 6)) * 1.3, "naive")
    m = build_onnx_qdq(q)
    x = _input(rng, 2, 30)
    body, seq, ev = _kernels(m, x, tmp_path)
    assert body["QGemm"] >= 2 * 30, body  # h W_hrz and h W_hn of both layers, every step
    assert all(
        [list(t)[0] for t in e["args"]["input_type_shape"]][0] == "int8" for e in ev if e["args"]["op_name"] == "QGemm"
    )
    want_q, _ = _reference(q, x)
    got = _session(m).run(["q.head"], {"x": x})[0]
    assert np.array_equal(np.argmax(got, -1), np.argmax(want_q[0], -1))
    assert int(np.max(np.abs(got.astype(np.int64) - want_q[0]))) <= LSB_TOL["recurrent"]


def test_exact_under_the_int8_session_option_too(quantized, sessions):
    """onnxruntime's x86 default converts int8 Q/DQ pairs to uint8 (uint8 x int8 kernels saturate
    without VNNI); the model gives no product a Q -> DQ pair, so both settings agree."""
    m, s = sessions["lif_rec"]
    x = _input(np.random.default_rng(2), 3, 40)
    a = s.run(["q.readout"], {"x": x})[0]
    b = _session(m, config={"session.qdqisint8allowed": "1"}).run(["q.readout"], {"x": x})[0]
    assert np.array_equal(a, b)


# ----------------------------------------------------------------------------------------------
# beyond the zoo: convolution, layer norm, temporal outputs, split inputs


class _ConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(6, 12, 3, dilation=2)
        self.ln = torch.nn.LayerNorm(12)
        self.gru = torch.nn.GRU(12, 8, batch_first=True)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x):
        y = self.conv(torch.nn.functional.pad(x.transpose(1, 2), (4, 0))).transpose(1, 2)
        y, _ = self.gru(torch.relu(self.ln(y)))
        return self.fc(y)


def test_conv_layernorm_temporal_outputs_and_streaming():
    torch.manual_seed(2)
    g = edgeseq.capture(_ConvNet(), torch.randn(2, 10, 6))
    rng = np.random.default_rng(0)
    q = quantize(g, rng.normal(size=(32, 20, 6)), "edgeseq")
    x = _input(rng, 3, 37)
    want_q, _ = _reference(q, x)
    (got,) = _session(build_onnx_qdq(q)).run(["q.fc"], {"x": x})
    assert got.shape == (3, 37, 3)
    assert float(np.mean(np.argmax(got, -1) == np.argmax(want_q[0], -1))) >= 0.98
    # the program's integer LayerNorm (isqrt, divisions) is itself ~100 LSB from a float one here: the
    # QDQ model is as close to the interpreter as the fake-quant simulation (float LayerNorm) is
    (fake,), _ = q.run(x, mode="fake")
    fake_err = np.abs(np.rint(fake / q.program.outputs[0].scale) - want_q[0])
    err = np.abs(got.astype(np.int64) - want_q[0])
    assert err.max() <= fake_err.max() + LSB_TOL["recurrent"]
    assert np.percentile(err, 90) <= np.percentile(fake_err, 90) + 2
    s = _session(build_onnx_qdq(q, streaming=True))
    from edgeseq.quant.program import storage_dtype

    st = {f"state_in.{k}": np.zeros((3, sp.n), storage_dtype(sp.bits)) for k, sp in q.program.states.items()}
    outs = []
    for lo, hi in ((0, 5), (5, 37)):
        res = s.run(["q.fc"] + [f"state_out.{k}" for k in q.program.states], {"x": x[:, lo:hi], **st})
        outs.append(res[0])
        st = {f"state_in.{k}": v for k, v in zip(q.program.states, res[1:])}
    assert np.array_equal(np.concatenate(outs, axis=1), got)


def test_large_lmu_memory_uses_the_blocked_form():
    """d * order > KRON_MAX: one (order, order) product per memory dimension instead of a
    block-diagonal matrix; same agreement."""
    from edgeseq.frontends import capture
    from edgeseq.nn import build_model

    torch.manual_seed(0)
    model = build_model(
        "lmu", 6, 5, hidden=16, memory_d=3, order=100, theta=50.0, hidden_to_memory=True, memory_to_memory=True
    ).eval()
    q = quantize(capture(model, torch.zeros(1, 8, 6)), np.random.default_rng(0).normal(size=(32, 16, 6)), "edgeseq")
    info: dict = {}
    m = build_onnx_qdq(q, info=info)
    assert 3 * 100 > qdq.KRON_MAX and [100, 100] in [p["shape"] for p in info["products"] if p["where"] == "scan"]
    x = _input(np.random.default_rng(1), 3, 60)
    want_q, _ = _reference(q, x)
    got = _session(m).run(["q.head"], {"x": x})[0]
    assert np.array_equal(np.argmax(got, -1), np.argmax(want_q[0], -1))
    assert int(np.max(np.abs(got.astype(np.int64) - want_q[0]))) <= LSB_TOL["memory"]


def test_split_outlier_input_channels():
    """An outlier input channel carried in its own int16 input part: its product is float, the
    int8 part's product is still fused."""
    from edgeseq.frontends import capture

    rng = np.random.default_rng(1)
    g = capture(build("gru"), torch.zeros(1, 8, 6))
    calib = rng.normal(size=(48, 16, 6)) * 1.3
    calib[..., 2] = calib[..., 2] * 30 + 5
    q = quantize(g, calib, {"name": "split", "outlier_action": "split", "input_per_channel": False})
    assert [s.bits for s in q.program.inputs] == [8, 16]
    info: dict = {}
    m = build_onnx_qdq(q, info=info)
    first = [p for p in info["products"] if p["node"] == "rnn.l0" and p["where"] == "sequence"]
    assert sorted(p["act_bits"] for p in first) == [8, 16]
    x = _input(rng, 3, 30)
    x[..., 2] = x[..., 2] * 30 + 5
    want_q, _ = _reference(q, x)
    got = _session(m).run(["q.head"], {"x": x})[0]
    assert int(np.max(np.abs(got.astype(np.int64) - want_q[0]))) <= LSB_TOL["recurrent"]


# ----------------------------------------------------------------------------------------------
# the artifact, facade and CLI


@pytest.fixture(scope="module")
def artifact(quantized, tmp_path_factory):
    root = tmp_path_factory.mktemp("qdq")
    return OnnxArtifact.load(export_onnx_quantized(quantized["l2mu_syn"], root / "a", numerics="qdq").path)


def test_artifact_layout_manifest_and_golden(artifact, quantized):
    art, q = artifact, quantized["l2mu_syn"]
    m = art.manifest
    for f in (
        "model.onnx",
        "manifest.json",
        "graph.esq",
        "quantized.esq",
        "golden/input.npy",
        "golden/output_0.npy",
        "golden/output_0.int.npy",
    ):
        assert (art.path / f).is_file(), f
    assert m["numerics"] == "qdq" and art.numerics == "qdq" and m["format"] == "edgeseq-onnx"
    tol = m["quantization"]["tolerance"]
    assert tol["family"] == "spiking" and tol["max_lsb"] == LSB_TOL["spiking"]
    assert tol["lsb"] == LSB_TOL and tol["decision_agreement"] == MIN_AGREEMENT
    assert m["lowering"]["products"]["scan:integer"] == 4  # e_h, e_m, w_m, w_h: spikes x int8, fused
    row = m["check"]["outputs"][0]
    assert row["within_tolerance"] and row["max_lsb_err"] <= LSB_TOL["spiking"]
    assert m["check"]["spikes"]["agreement"] >= MIN_SPIKE_AGREEMENT and m["check"]["spikes"]["entries"] > 0
    assert m["outputs"][0]["integer_output"] == "q.readout" and m["outputs"][0]["integer_dtype"] == "int16"
    # golden vectors are the integer-exact interpreter's
    x = np.load(art.path / "golden/input.npy")
    want_q, _ = _reference(q, x)
    assert np.array_equal(np.load(art.path / "golden/output_0.int.npy"), want_q[0])
    (y,) = art.run(x)  # the model's own float32 outputs
    assert y.dtype == np.float32 and np.allclose(
        y, np.load(art.path / "golden/output_0.npy"), atol=LSB_TOL["spiking"] * m["outputs"][0]["scale"] + 1e-6
    )
    rows = art.verify_golden()
    assert rows[0]["max_lsb_err"] == row["max_lsb_err"]
    a = Artifact.load(art.path)
    assert a.kind == "onnx" and a.target == "onnx"
    assert np.array_equal(a.run(x), y)


def test_streaming_artifact_state_contract(quantized, tmp_path):
    q = quantized["lif_rec"]
    art = export_onnx_quantized(q, tmp_path / "s", numerics="qdq", streaming=True)
    tensors = art.manifest["state"]["tensors"]
    assert [t["key"] for t in tensors] == list(q.program.states)
    assert {t["key"]: t["dtype"] for t in tensors}["lifs.0/spk"] == "int8"
    assert {t["key"]: t["dtype"] for t in tensors}["lifs.0/mem"] == "int16"
    x = _input(np.random.default_rng(2), 2, 12)
    (a,), st = art.run(x[:, :5])
    (b,), st = art.run(x[:, 5:], st)
    whole = export_onnx_quantized(q, tmp_path / "w", numerics="qdq").run(x)[0]
    assert np.array_equal(b, whole)
    # a state the interpreter produced continues the sequence
    _, st_ref = _reference(q, x[:, :5])
    (c,), _ = art.run_integer(x[:, 5:], st_ref)
    assert int(np.max(np.abs(c.astype(np.int64) - _reference(q, x)[0][0]))) <= LSB_TOL["spiking"]


def test_export_facade_and_cli(quantized, tmp_path):
    from edgeseq.cli import main

    q = quantized["minlstm"]
    x = _input(np.random.default_rng(8), 2, 9)
    art = edgeseq.export(q, target="onnx", out=tmp_path / "f", golden_input=x, onnx_numerics="qdq")
    assert art.kind == "onnx" and art.manifest["numerics"] == "qdq"
    assert np.array_equal(np.load(tmp_path / "f" / "golden/input.npy"), x)
    assert edgeseq.export(q, target="onnx", out=tmp_path / "e").manifest["numerics"] == "integer"  # default
    plan = q.save(tmp_path / "m.q.esq")
    q.source.save(tmp_path / "m.esq")
    assert (
        main(
            [
                "export",
                str(tmp_path / "m.esq"),
                "--target",
                "onnx",
                "--quant",
                str(plan),
                "--onnx-numerics",
                "qdq",
                "--out",
                str(tmp_path / "c1"),
                "--streaming",
            ]
        )
        == 0
    )
    a = Artifact.load(tmp_path / "c1")
    assert a.manifest["numerics"] == "qdq" and a.manifest["streaming"]
    assert main(["export", str(plan), "--target", "onnx", "--onnx-numerics", "qdq", "--out", str(tmp_path / "c2")]) == 0
    got = OnnxArtifact.load(tmp_path / "c2").run_integer(x)[0]
    assert int(np.max(np.abs(got.astype(np.int64) - _reference(q, x)[0][0]))) <= LSB_TOL["recurrent"]
    # qdq needs a quantized graph and the onnx target
    assert (
        main(
            [
                "export",
                str(tmp_path / "m.esq"),
                "--target",
                "onnx",
                "--onnx-numerics",
                "qdq",
                "--out",
                str(tmp_path / "c3"),
            ]
        )
        == 2
    )
    assert not (tmp_path / "c3").exists()
    with pytest.raises(ConfigError, match="qdq"):
        edgeseq.export(q, target="x86", out=tmp_path / "c4", onnx_numerics="qdq")
    with pytest.raises(ConfigError, match="onnx_numerics"):
        edgeseq.export(q, target="onnx", out=tmp_path / "c5", onnx_numerics="fast")


# ----------------------------------------------------------------------------------------------
# bad input


def test_unsupported_op_is_a_typed_error_naming_op_and_node(quantized, tmp_path, monkeypatch):
    monkeypatch.delitem(qdq.LOWER, "GRU")
    q = quantized["gru"]
    first = next(n.name for n in q.graph.nodes if n.op.kind == "GRU")  # (a folded layer is a generic Scan)
    with pytest.raises(UnsupportedOpError) as ei:
        export_onnx_quantized(q, tmp_path / "u", numerics="qdq")
    msg = str(ei.value)
    assert "'GRU'" in msg and first in msg and "qdq" in msg
    assert not list(tmp_path.iterdir())


def test_bad_arguments(quantized, tmp_path):
    q = quantized["rnn"]
    with pytest.raises(ConfigError, match="numerics"):
        export_onnx_quantized(q, tmp_path / "a", numerics="int4")
    with pytest.raises(ConfigError, match="quantized graph"):
        export_onnx_quantized(q.graph, tmp_path / "b", numerics="qdq")
    with pytest.raises(ConfigError, match="opset"):
        build_onnx_qdq(q, opset=19)
    with pytest.raises(ConfigError, match="probe"):
        build_onnx_qdq(q, probes=["rnn:spk"])
    out = tmp_path / "c"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="already exists"):
        export_onnx_quantized(q, out, numerics="qdq")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_exact_weights_are_recovered_from_the_fake_parameters(quantized):
    """The QDQ weights are the integer program's own: per row, wq * scale == fake weight * input
    scale exactly (and a matrix with no exact integer form is detected)."""
    q = quantized["lif"]
    fk = q.fake_params["fcs.1"]["weight"]
    s_in = q.plan["lifs.0"].scale  # spikes feed fcs.1: scale 1
    wq, ws, exact = qdq.int_weights(fk * s_in[None, :], 8)
    prog_w = next(q.program.consts[op.w] for op in q.program.step if op.kind == "matvec" and op.node == "fcs.1")
    assert exact and np.array_equal(wq, prog_w)
    _, _, exact = qdq.int_weights(np.array([[1.0, np.pi / 1000.0]]), 8)
    assert not exact


# ----------------------------------------------------------------------------------------------
# every cell variant (tests/unit/cell_cases.py): its step program with the plan's points


@pytest.mark.parametrize("name", sorted(c for c in cell_cases.CASES if not c.startswith(NO_QDQ)))
def test_every_cell_variant_whole_and_streaming(name):
    """Each case quantized and exported at two lengths and two batch sizes against the integer
    interpreter (the family's tolerance, or as close as the fake-quant simulation of the same plan
    where that is further; spike trains of every population), chunk by chunk == whole."""
    from edgeseq.export.onnx.qlower import output_names
    from edgeseq.quant.program import storage_dtype

    g = cell_cases.graph_of(name)
    rng = np.random.default_rng(1)
    q = quantize(g, cell_cases.drive(name, rng, 16, 24), "edgeseq")
    p = q.program
    tol = LSB_TOL[qdq.family_of(g)]
    probes = qdq.spike_probes(q)
    assert probes or not any(t.spikes for t in g.output_types), name
    names = ["q." + n for n in output_names(p, "x")]
    whole = _session(build_onnx_qdq(q, probes=probes))
    stream = _session(build_onnx_qdq(q, streaming=True))
    for b, t in ((1, 1), (3, 37)):
        x = cell_cases.drive(name, rng, b, t).astype(np.float32)
        want_q, want_state, trace = _reference(q, x, trace=True)
        got = whole.run(names + ["probe." + s for s in probes], {"x": x})
        fake, _ = q.run(x, mode="fake")
        for gq, wq, fq, o in zip(got, want_q, fake, p.outputs):
            fake_err = int(np.max(np.abs(np.rint(fq / o.scale) - wq)))
            assert int(np.max(np.abs(gq.astype(np.int64) - wq))) <= max(tol, fake_err + 2), (name, b, t)
        for s, gs in zip(probes, got[len(names) :]):
            assert np.mean(gs.astype(np.int64) == trace[s]) >= MIN_SPIKE_AGREEMENT, (name, s)
        state = {k: np.zeros((b, sp.n), storage_dtype(sp.bits)) for k, sp in p.states.items()}
        parts = []
        for lo in range(0, t, 16):
            res = stream.run(
                names + [f"state_out.{k}" for k in p.states],
                {"x": x[:, lo : lo + 16], **{f"state_in.{k}": v for k, v in state.items()}},
            )
            parts.append(res[: len(names)])
            state = dict(zip(p.states, res[len(names) :]))
        for k, gq in enumerate(got[: len(names)]):
            assert np.array_equal(np.concatenate([c[k] for c in parts], axis=1), gq), name
        for k, v in state.items():
            assert v.dtype == storage_dtype(p.states[k].bits)
            assert int(np.max(np.abs(v.astype(np.int64) - want_state[k]))) <= 2 * tol + 2, (name, k)


@pytest.mark.parametrize("case", [c for c in NO_QDQ if c in ZOO])
def test_wide_points_feeding_products_are_refused(quantized, case):
    with pytest.raises(UnsupportedOpError, match="at most 16 bits") as e:
        build_onnx_qdq(quantized[case])
    assert "ssms.0" in str(e.value.where) and "--onnx-numerics exact" in (e.value.hint or "")
