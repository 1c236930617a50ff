"""Quantized ONNX export: every zoo model's integer program run in a real onnxruntime session and
compared with the integer-exact interpreter (edgeseq.quant.intexact), bit for bit, at several
lengths and batch sizes, whole-sequence and chunk by chunk, plus the artifact contract, the
kernels onnxruntime actually runs inside the Scan bodies (profiler) and the error paths.

Tolerance policy (per model family): the lowering is exact, so every family (recurrent: rnn, gru,
lstm, mingru, minlstm; Legendre memory: lmu*, lmuformer; spiking: lif*, l2mu*,
lmuformer_spiking) gets 0 output LSBs of integer error and identical decisions and spikes; the
float outputs may differ from the float64 dequantized reference by one float32 rounding.
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
from edgeseq.errors import ArtifactError, ConfigError, ShapeError, UnsupportedOpError  # noqa: E402
from edgeseq.export import Artifact  # noqa: E402
from edgeseq.export.onnx import (  # noqa: E402
    OnnxArtifact,
    build_onnx_quantized,
    export_onnx_quantized,
    qlower,  # noqa: E402
)
from edgeseq.quant import intexact, load_quantized, quantize  # noqa: E402

from .zoo_cases import FAMILY, ZOO, build  # noqa: E402

LENGTHS = (1, 50, 200)
BATCHES = (1, 3)
LSB_TOL = {"recurrent": 0, "memory": 0, "spiking": 0}  # integer output error allowed, in output LSBs
MIN_AGREEMENT = 0.995  # argmax decisions vs the interpreter
SPIKING = [c for c in ZOO if FAMILY[c] == "spiking"]
STREAMING = ["gru", "lmu_full", "lif_rec", "l2mu_syn", "lmuformer", "lmuformer_spiking"]
F32_REL = 2.0**-23


def _input(rng, b, t, loud=False):
    x = rng.normal(size=(b, t, 6)) * 1.5
    if loud:  # far outside the calibration range: every saturating path is exercised
        x[:, ::3] *= 12.0
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def quantized():
    """Every zoo case quantized as in test_quant_zoo (edgeseq preset)."""
    from edgeseq.frontends import capture

    rng = np.random.default_rng(7)
    out = {}
    for case in ZOO:
        g = capture(build(case), torch.zeros(1, 8, 6))
        out[case] = quantize(g, rng.normal(size=(48, 16, 6)) * 1.3, "edgeseq")
    return out


@pytest.fixture(scope="module")
def exported(quantized, tmp_path_factory):
    """case -> loaded whole-sequence artifact (one export per case, shared by every test)."""
    root = tmp_path_factory.mktemp("qonnx")
    return {case: OnnxArtifact.load(export_onnx_quantized(q, root / case).path) for case, q in quantized.items()}


@pytest.fixture(scope="module")
def streaming(quantized, tmp_path_factory):
    root = tmp_path_factory.mktemp("qonnx_stream")
    return {
        case: OnnxArtifact.load(export_onnx_quantized(quantized[case], root / case, streaming=True).path)
        for case in STREAMING
    }


def _reference(q, x, state=None):
    outs, st = intexact.run(q.program, q.quantize_input(x), state)
    return outs, intexact.dequantize_outputs(q.program, outs), st


# ----------------------------------------------------------------------------------------------
# numerics


@pytest.mark.parametrize("case", list(ZOO))
def test_matches_the_integer_interpreter_at_several_lengths_and_batches(exported, quantized, case):
    q, art = quantized[case], exported[case]
    rng = np.random.default_rng(3)
    tol = LSB_TOL[FAMILY[case]]
    decisions = agree = 0
    for t in LENGTHS:
        for b in BATCHES:
            x = _input(rng, b, t, loud=(t == 50))
            want_q, want, _ = _reference(q, x)
            got_q = art.run_integer(x)
            got = art.run(x)
            model_f32 = art.run(x, model_dequantize=True)
            for gq, wq, g, w, f in zip(got_q, want_q, got, want, model_f32):
                assert gq.dtype == np.int16 and gq.shape == wq.shape
                assert int(np.max(np.abs(gq.astype(np.int64) - wq))) <= tol, (case, t, b)
                if tol == 0:  # exact integers dequantize to exactly the interpreter's floats
                    assert np.array_equal(g, w), (case, t, b)
                # the model's own DequantizeLinear outputs: one float32 rounding away
                assert f.dtype == np.float32 and f.shape == w.shape
                assert np.all(np.abs(f - w) <= F32_REL * np.abs(w) + 1e-30), (case, t, b)
            decisions += b
            agree += int(np.sum(np.argmax(got[0], -1) == np.argmax(want[0], -1)))
    assert agree / decisions >= MIN_AGREEMENT


@pytest.mark.parametrize("case", list(ZOO))
def test_decision_agreement_on_a_larger_batch(exported, quantized, case):
    q, art = quantized[case], exported[case]
    x = _input(np.random.default_rng(11), 48, 40)
    want_q, want, _ = _reference(q, x)
    (got,) = art.run(x)
    assert float(np.mean(np.argmax(got, -1) == np.argmax(want[0], -1))) >= MIN_AGREEMENT
    assert np.array_equal(art.run_integer(x)[0].astype(np.int64), want_q[0])


@pytest.mark.parametrize("case", SPIKING)
def test_spike_trains_are_identical(quantized, case):
    """Every 0/1 vector of the program (spikes, reset masks) exposed as a probe output."""
    q = quantized[case]
    spikes = [op.out for op in q.program.step if op.kind == "cmp_ge"]
    model = build_onnx_quantized(q, probes=spikes)
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = _input(np.random.default_rng(5), 3, 60)
    got = s.run([qlower.PROBE + v for v in spikes], {"x": x})
    _, _, trace = intexact.run(q.program, q.quantize_input(x), trace=True)
    fired = 0
    for v, g in zip(spikes, got):
        assert np.array_equal(g.astype(np.int64), trace[v]), v
        fired += int(trace[v].sum())
    assert fired > 0  # the comparison is not vacuous


@pytest.mark.parametrize("case", STREAMING)
def test_streaming_chunks_equal_whole_sequence(streaming, exported, quantized, case):
    q, art = quantized[case], streaming[case]
    x = _input(np.random.default_rng(9), 3, 50)
    whole = exported[case].run_integer(x)
    want_q, _, want_state = _reference(q, x)
    assert np.array_equal(whole[0].astype(np.int64), want_q[0])
    state = None
    for lo, hi in ((0, 1), (1, 8), (8, 50)):
        outs, state = art.run_integer(x[:, lo:hi], state)
        ref, _, _ = _reference(q, x[:, :hi])
        # pooled outputs after a chunk are the readout over every step so far
        assert np.array_equal(outs[0].astype(np.int64), ref[0]), (lo, hi)
    for k, v in state.items():
        assert v.dtype == np.dtype(art.manifest["state"]["tensors"][list(state).index(k)]["dtype"])
        assert np.array_equal(v.astype(np.int64), want_state[k]), k
    # the float outputs of the last chunk are the dequantized integers
    y, _ = art.run(x[:, 8:], _state_after(art, x[:, :8]))
    assert np.array_equal(y[0], want_q[0] * q.program.outputs[0].scale)
    y, _ = art.run(x[:, 8:], _state_after(art, x[:, :8]), model_dequantize=True)
    assert np.allclose(y[0], want_q[0] * q.program.outputs[0].scale, rtol=F32_REL, atol=0)


def _state_after(art, x):
    _, st = art.run(x)
    return st


def test_streaming_state_is_the_programs_integer_state(streaming, quantized):
    art, q = streaming["lif_rec"], quantized["lif_rec"]
    tensors = art.manifest["state"]["tensors"]
    assert [t["key"] for t in tensors] == list(q.program.states)
    for t in tensors:
        s = q.program.states[t["key"]]
        assert t["shape"] == ["batch", s.n] and t["bits"] == s.bits
    assert {t["key"]: t["dtype"] for t in tensors}["lifs.0/spk"] == "int8"
    assert {t["key"]: t["dtype"] for t in tensors}["lifs.0/mem"] == "int16"
    x = _input(np.random.default_rng(2), 2, 10)
    st = art.init_state(2)
    bad = {k: v.astype(np.float32) for k, v in st.items()}
    with pytest.raises(ShapeError, match="integer"):
        art.run(x, bad)
    big = dict(st)
    big["lifs.0/mem"] = np.full_like(st["lifs.0/mem"], 40000, dtype=np.int64)
    with pytest.raises(ShapeError, match="outside int16"):
        art.run(x, big)
    # a state the interpreter produced continues the sequence exactly
    _, _, st_ref = _reference(q, x[:, :4])
    outs, _ = art.run_integer(x[:, 4:], st_ref)
    assert np.array_equal(outs[0].astype(np.int64), _reference(q, x)[0][0])


class _ConvNet(torch.nn.Module):
    """Causal dilated Conv1d + LayerNorm + GRU + Linear with a temporal output (beyond the zoo:
    integer division and square root in the step program, per-step outputs)."""

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


def test_layernorm_conv_and_temporal_outputs(tmp_path):
    torch.manual_seed(2)
    g = edgeseq.capture(_ConvNet(), torch.randn(2, 10, 6))
    rng = np.random.default_rng(0)
    q = quantize(g, rng.normal(size=(32, 20, 6)), "edgeseq")
    assert {"isqrt", "div"} <= set(q.program.op_counts()) and q.program.outputs[0].temporal
    art = export_onnx_quantized(q, tmp_path / "c")
    stream = export_onnx_quantized(q, tmp_path / "s", streaming=True)
    x = _input(rng, 3, 37, loud=True)
    want_q, want, _ = _reference(q, x)
    (got_q,) = art.run_integer(x)
    assert got_q.shape == (3, 37, 3) and np.array_equal(got_q.astype(np.int64), want_q[0])
    assert np.array_equal(art.run(x)[0], want[0])
    (a,), st = stream.run_integer(x[:, :20])
    (b,), _ = stream.run_integer(x[:, 20:], st)
    assert np.array_equal(np.concatenate([a, b], axis=1).astype(np.int64), want_q[0])


def test_split_outlier_input_channels(tmp_path):
    """An outlier input channel carried in its own int16 input part (two boundary quantizers)."""
    from edgeseq.frontends import capture

    rng = np.random.default_rng(1)
    g = capture(build("gru"), torch.zeros(1, 8, 6))
    calib = rng.normal(size=(48, 16, 6)) * 1.3
    calib[..., 2] = calib[..., 2] * 30 + 5
    q = quantize(g, calib, {"name": "split", "outlier_action": "split", "input_per_channel": False})
    assert [s.bits for s in q.program.inputs] == [8, 16]
    art = export_onnx_quantized(q, tmp_path / "s")
    x = _input(rng, 3, 30)
    x[..., 2] = x[..., 2] * 30 + 5
    assert np.array_equal(art.run_integer(x)[0].astype(np.int64), _reference(q, x)[0][0])


def _synthetic_program():
    """A hand-written program covering what the zoo does not: a state whose next value ignores it
    but whose previous value is read (a 'shift' stage), a state that is never stored ('frozen'),
    an int40 recurrence with pre-shifted per-channel requantisation and per-channel clamp,
    vector >= vector, select, concat with a constant, gather, isqrt and div in the step program,
    a temporal output and a pooled one from the final program."""
    from edgeseq.quant import program as P

    pb = P.ProgramBuilder()
    f = 4
    x = pb.add_input(P.InputSpec("x", np.arange(f), 8, np.full(f, 0.05), np.full(f, 20.0), np.zeros(f)))
    pb.add_state("d/prev", (f,), 8)
    pb.add_state("z/bias", (f,), 16)
    pb.add_state("acc/s", (f,), 40)
    k = pb.const
    prev = pb.emit(P.Load(out="d/prev.v", state="d/prev", node="d"), f)
    diff = pb.emit(P.Sub(out="d:diff", a=x, b=prev, node="d"), f)
    pb.emit(P.Store(out="d/prev", x=x, node="d"), f)
    y0 = pb.emit(P.Add(out="z:y", a=diff, b=pb.emit(P.Load(out="z/bias.v", state="z/bias", node="z"), f), node="z"), f)
    big = pb.emit(P.Mul(out="acc:big", a=y0, b=k("k65536", np.full(f, 65536)), node="acc"), f)
    sp = pb.emit(P.Load(out="acc/s.v", state="acc/s", node="acc"), f)
    dec = pb.emit(
        P.Requant(
            out="acc:dec",
            x=sp,
            mult=k("m", np.array([1 << 30, 1500000000, 1200000000, 2000000000])),
            shift=k("s", np.array([31, 31, 32, 33])),
            pre=9,
            node="acc",
        ),
        f,
        bits=40,
    )
    s3 = pb.emit(
        P.Clamp(
            out="acc:s3",
            x=pb.emit(P.Add(out="acc:s2", a=dec, b=big, node="acc"), f),
            lo=k("lo40", np.full(f, -(1 << 39) + 1)),
            hi=k("hi40", np.array([(1 << 39) - 1, 1 << 38, 1 << 37, 1 << 36])),
            node="acc",
        ),
        f,
        bits=40,
    )
    pb.emit(P.Store(out="acc/s", x=s3, node="acc"), f)
    q8 = pb.emit(
        P.Requant(out="o:q8", x=s3, mult=k("m1", np.array([1 << 30])), shift=k("s1", np.array([44])), pre=10, node="o"),
        f,
        bits=8,
    )
    sel = pb.emit(
        P.Select(out="o:sel", c=pb.emit(P.CmpGe(out="o:ge", a=q8, b=diff, node="o"), f), a=q8, b=diff, node="o"), f
    )
    cat = pb.emit(P.Concat(out="o:cat", xs=(sel, k("pad", np.array([3, -3]))), node="o"), f + 2)
    gat = pb.emit(P.Gather(out="o:gat", x=cat, index=k("idx", np.array([5, 0, 4, 1, 2])), node="o"), 5)
    rt = pb.emit(P.Isqrt(out="o:rt", x=pb.emit(P.Mul(out="o:sq", a=gat, b=gat, node="o"), 5), node="o"), 5)
    dv = pb.emit(P.Div(out="o:dv", a=gat, b=k("three", np.array([3])), node="o"), 5)
    pb.outputs.append(
        P.OutputSpec("seq_out", pb.emit(P.Add(out="o:out", a=rt, b=dv, node="o"), 5), True, np.full(5, 0.5))
    )
    pb.section = "final"
    fs = pb.emit(P.Load(out="acc/s.fin", state="acc/s", node="fin"), f)
    fq = pb.emit(
        P.Requant(
            out="fin:q", x=fs, mult=k("m2", np.array([1 << 30])), shift=k("s2", np.array([40])), pre=10, node="fin"
        ),
        f,
        bits=16,
    )
    pb.outputs.append(P.OutputSpec("pooled", fq, False, np.full(f, 0.25)))
    return pb.build()


def test_synthetic_program_every_stage_kind_exact():
    import types

    from edgeseq.quant.program import storage_dtype

    prog = _synthetic_program()
    assert [s.kind for s in qlower.plan_stages(prog).stages] == ["shift", "frozen", "scan"]
    graph = types.SimpleNamespace(inputs=[types.SimpleNamespace(name="x")], in_features=4, nodes=[], metadata={})
    q = types.SimpleNamespace(
        program=prog, graph=graph, plan=types.SimpleNamespace(config=types.SimpleNamespace(name="synthetic"))
    )
    rng = np.random.default_rng(0)
    for stream in (False, True):
        m = build_onnx_quantized(q, streaming=stream)
        onnx.checker.check_model(m, full_check=True)
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        for b, t in ((1, 1), (2, 5), (3, 17)):
            x = (rng.normal(size=(b, t, 4)) * 3).astype(np.float32)
            st0 = {k: rng.integers(-100, 100, size=(b, sp.n)) for k, sp in prog.states.items()}
            want, want_state = intexact.run(prog, prog.inputs[0].quantize(x), st0 if stream else None)
            feeds = {"x": x}
            names = ["q.seq_out", "q.pooled"]
            if stream:
                feeds.update({f"state_in.{k}": v.astype(storage_dtype(prog.states[k].bits)) for k, v in st0.items()})
                names += [f"state_out.{k}" for k in prog.states]
            res = s.run(names, feeds)
            for got, ref in zip(res, list(want) + [want_state[k] for k in prog.states]):
                assert np.array_equal(got.astype(np.int64), ref), (stream, b, t)


def test_interpolated_and_expanded_tables_give_the_same_integers(quantized):
    q = quantized["gru"]
    assert any(q.program.consts[op.table].size != 256 for op in q.program.step if op.kind == "lut")
    x = _input(np.random.default_rng(4), 3, 40, loud=True)
    res = []
    for expand in (True, False):
        s = ort.InferenceSession(
            build_onnx_quantized(q, expand_tables=expand).SerializeToString(), providers=["CPUExecutionProvider"]
        )
        res.append(s.run(["q.head"], {"x": x})[0])
    assert np.array_equal(res[0], res[1])
    assert np.array_equal(res[0].astype(np.int64), _reference(q, x)[0][0])


# ----------------------------------------------------------------------------------------------
# model structure and the kernels onnxruntime runs


@pytest.mark.parametrize("stream", [False, True])
def test_model_is_valid_with_symbolic_batch_and_time(quantized, stream):
    q = quantized["lmuformer_spiking"]
    m = build_onnx_quantized(q, streaming=stream)
    onnx.checker.check_model(m, full_check=True)
    dims = [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "time", 6]
    for o in m.graph.output:
        assert o.type.tensor_type.shape.dim[0].dim_param == "batch"
    if stream:
        names = {i.name for i in m.graph.input}
        assert {f"state_in.{k}" for k in q.program.states} <= names
    # no float arithmetic anywhere but the two boundaries: every matrix product has integer weights
    ints = (onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64)
    for graph in [m.graph] + _scan_bodies(m):
        inits = {t.name: t.data_type for t in graph.initializer}
        assert not {n.op_type for n in graph.node} & {"Gemm", "Tanh", "Sigmoid", "QuantizeLinear"}
        for n in graph.node:
            if n.op_type in ("MatMul", "MatMulInteger"):
                assert inits[n.input[1]] in ints, n.name


def _scan_bodies(model):
    return [a.g for n in model.graph.node if n.op_type == "Scan" for a in n.attribute if a.name == "body"]


def test_int8_weights_are_initializers_of_the_scan_body(quantized):
    m = build_onnx_quantized(quantized["lif_rec"])
    found = 0
    for body in _scan_bodies(m):
        inits = {t.name: t for t in body.initializer}
        for n in body.node:
            if n.op_type == "MatMulInteger":
                assert n.input[1] in inits and inits[n.input[1]].data_type == onnx.TensorProto.INT8
                found += 1
    assert found >= 1


def _profile(model, x, tmp_path):
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "prof")
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    s.run(None, {"x": x})
    events = json.loads(open(s.end_profiling()).read())
    return [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]


INTEGER_KERNELS = ("QLinear", "MatMulInteger", "QGemm", "DynamicQuantize", "ConvInteger")


def test_profiler_shows_integer_kernels_inside_the_scan_bodies(quantized, tmp_path):
    x = _input(np.random.default_rng(6), 1, 20)
    # spiking layers with recurrent spikes: the int8 MatMulInteger runs in the loop, once per step
    ev = _profile(build_onnx_quantized(quantized["lif_rec"]), x, tmp_path)
    body = [e for e in ev if e["name"].startswith("scan")]
    kernels = Counter(e["args"]["op_name"] for e in body)
    assert sum(v for k, v in kernels.items() if any(s in k for s in INTEGER_KERNELS)) >= 20, kernels
    mmi = [e for e in body if e["args"]["op_name"] == "MatMulInteger"]
    assert all(list(t)[0] == "int8" for e in mmi for t in e["args"]["input_type_shape"])
    # GRU: int16 recurrent state x int8 weights -> the in-loop products are integer MatMuls, the
    # input projections (int8 x int8) are MatMulInteger over the whole sequence; no float kernel
    # runs in any Scan body
    ev = _profile(build_onnx_quantized(quantized["gru"]), x, tmp_path)
    body = [e for e in ev if e["name"].startswith("scan")]
    assert Counter(e["args"]["op_name"] for e in body)["MatMul"] >= 20
    types = {
        list(t)[0] for e in body for t in e["args"].get("input_type_shape", []) + e["args"].get("output_type_shape", [])
    }
    assert types <= {"int8", "int16", "int32", "int64", "bool"}, types
    assert any(e["args"]["op_name"] == "MatMulInteger" for e in ev if not e["name"].startswith("scan"))


def test_state_independent_work_is_hoisted_out_of_the_loop(exported):
    stages = exported["gru"].manifest["lowering"]["stages"]
    scans = [s for s in stages if s["kind"] == "scan"]
    assert [s["states"] for s in scans] == [["rnn.l0/h"], ["rnn.l1/h"]]  # one loop per layer
    assert all("MatMulInteger" not in s["body_op_types"] for s in scans)  # x W_ih over the whole sequence
    kinds = {s["kind"] for s in exported["lif"].manifest["lowering"]["stages"]}
    assert "accumulate" in kinds  # mean readout: no loop for the running sum and the step count


# ----------------------------------------------------------------------------------------------
# the artifact


def test_artifact_layout_manifest_and_golden(exported, quantized):
    art, q = exported["l2mu_syn"], quantized["l2mu_syn"]
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
    assert m["numerics"] == "integer" and m["format"] == "edgeseq-onnx"
    assert m["versions"]["onnxruntime"] == ort.__version__ and m["versions"]["opset"] == 21
    assert m["quantization"]["plan"]["config"] == "edgeseq"
    weights = m["quantization"]["plan"]["weights"]
    assert weights and all(w["bits"] in (8, 16) for w in weights)
    assert m["outputs"][0]["integer_output"] == "q.readout" and m["outputs"][0]["integer_dtype"] == "int16"
    assert m["check"]["outputs"][0]["lsb_mismatches"] == 0
    assert m["lowering"]["kernels"]["MatMulInteger"]["scan"] > 0  # recurrent spikes x int8 weights, per step
    # golden vectors are the integer-exact interpreter's
    x = np.load(art.path / "golden/input.npy")
    want_q, want, _ = _reference(q, x)
    assert np.array_equal(np.load(art.path / "golden/output_0.int.npy"), want_q[0])
    assert np.array_equal(np.load(art.path / "golden/output_0.npy"), want[0])
    rows = art.verify_golden()
    assert rows[0]["lsb_mismatches"] == 0 and rows[0]["max_abs_err"] == 0.0
    q2 = load_quantized(art.path / "quantized.esq")
    assert q2.program.equals(q.program)
    # through the export facade's loader
    a = Artifact.load(art.path)
    assert a.kind == "onnx" and a.target == "onnx"
    assert np.array_equal(a.run(x), want[0])
    # tampering is detected
    with open(art.path / "golden/output_0.int.npy", "ab") as f:
        f.write(b"\0")
    try:
        with pytest.raises(ArtifactError, match="sha256"):
            OnnxArtifact.load(art.path)
    finally:
        data = (art.path / "golden/output_0.int.npy").read_bytes()[:-1]
        (art.path / "golden/output_0.int.npy").write_bytes(data)


def test_edgeseq_validate_passes_bit_exact(exported, tmp_path):
    """The validation harness holds integer artifacts to 0 LSB against their golden vectors."""
    from edgeseq.cli import main

    assert (
        main(["validate", str(exported["lif_rec"].path), "--out", str(tmp_path / "v"), "--quiet", "--no-measure"]) == 0
    )
    doc = json.loads((tmp_path / "v" / "validation.json").read_text())
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["golden.readout.max_abs_error"]["status"] == "pass"
    assert checks["golden.readout.max_abs_error"]["value"] == 0.0


def test_export_facade_and_cli(quantized, tmp_path):
    from edgeseq.cli import main

    q = quantized["minlstm"]
    x = _input(np.random.default_rng(8), 2, 9)
    art = edgeseq.export(q, target="onnx", out=tmp_path / "f", golden_input=x)
    assert art.kind == "onnx" and art.manifest["numerics"] == "integer"
    assert np.array_equal(np.load(tmp_path / "f" / "golden/input.npy"), x)
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
                "--out",
                str(tmp_path / "c1"),
                "--streaming",
            ]
        )
        == 0
    )
    a = Artifact.load(tmp_path / "c1")
    assert a.manifest["numerics"] == "integer" and a.manifest["streaming"]
    assert main(["export", str(plan), "--target", "onnx", "--out", str(tmp_path / "c2")]) == 0
    (y,) = OnnxArtifact.load(tmp_path / "c2").run(x)
    assert np.allclose(y, _reference(q, x)[1][0], rtol=1e-6, atol=0)
    # --quant must name a quantized graph
    assert (
        main(
            [
                "export",
                str(tmp_path / "m.esq"),
                "--target",
                "onnx",
                "--quant",
                str(tmp_path / "m.esq"),
                "--out",
                str(tmp_path / "c3"),
            ]
        )
        == 2
    )
    assert not (tmp_path / "c3").exists()
    # ... made from MODEL
    other = quantized["rnn"].save(tmp_path / "other.q.esq")
    assert (
        main(
            [
                "export",
                str(tmp_path / "m.esq"),
                "--target",
                "onnx",
                "--quant",
                str(other),
                "--out",
                str(tmp_path / "c4"),
            ]
        )
        == 2
    )
    assert not (tmp_path / "c4").exists()


# ----------------------------------------------------------------------------------------------
# bad input


def test_unsupported_micro_op_is_a_typed_error_naming_op_and_node(quantized, tmp_path, monkeypatch):
    monkeypatch.delitem(qlower.LOWER, "lut")
    with pytest.raises(UnsupportedOpError) as ei:
        export_onnx_quantized(quantized["gru"], tmp_path / "u")
    msg = str(ei.value)
    assert "'lut'" in msg and "rnn.l0" in msg and "GRU" in msg
    assert not (tmp_path / "u").exists()
    assert not list(tmp_path.iterdir())


def test_existing_output_dir_needs_force_and_nothing_is_half_written(quantized, tmp_path, monkeypatch):
    q = quantized["rnn"]
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="already exists"):
        export_onnx_quantized(q, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    # a failure while writing leaves the old directory alone and no staging directory behind
    monkeypatch.setattr(type(q), "save", lambda self, path: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        export_onnx_quantized(q, out, force=True)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
    monkeypatch.undo()
    art = export_onnx_quantized(q, out, force=True)
    assert not (out / "keep.txt").exists() and (art.path / "model.onnx").is_file()


def test_bad_arguments(quantized, tmp_path):
    with pytest.raises(ConfigError, match="quantized graph"):
        export_onnx_quantized(quantized["rnn"].graph, tmp_path / "a")
    with pytest.raises(ShapeError):
        export_onnx_quantized(quantized["rnn"], tmp_path / "b", golden_input=np.zeros((2, 5, 4), np.float32))
    with pytest.raises(ConfigError, match="probe"):
        build_onnx_quantized(quantized["rnn"], probes=["nope"])
    with pytest.raises(ConfigError, match="opset"):
        build_onnx_quantized(quantized["rnn"], opset=17)
    assert not list(tmp_path.iterdir())


def test_integer_outputs_need_a_quantized_artifact(tmp_path, quantized):
    from edgeseq.export.onnx import export_onnx

    art = export_onnx(quantized["rnn"].graph, tmp_path / "f")
    with pytest.raises(ConfigError, match="no integer outputs"):
        art.run_integer(np.zeros((1, 3, 6), np.float32))
