"""ONNX backend: every exported model is run in a real onnxruntime session and compared with the
float64 reference interpreter (edgeseq.ir.interpret.run), at several sequence lengths and batch
sizes, whole-sequence, chunk by chunk (streaming) and with the functions inlined."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

import edgeseq  # noqa: E402
from edgeseq.errors import ArtifactError, ConfigError, ShapeError, UnsupportedOpError  # noqa: E402
from edgeseq.export.onnx import OnnxArtifact, build_onnx, export_onnx, supported_kinds  # noqa: E402
from edgeseq.export.onnx import lower as onnx_lower  # noqa: E402
from edgeseq.ir import ops as O  # noqa: E402
from edgeseq.ir.graph import Graph, GraphBuilder  # noqa: E402
from edgeseq.ir.interpret import run as reference  # noqa: E402
from edgeseq.ir.types import Act  # noqa: E402
from edgeseq.nn import build_model  # noqa: E402

from . import cell_cases  # noqa: E402

TOL = 1e-5
LENGTHS = (1, 50, 200)
BATCHES = (1, 3)

# ----------------------------------------------------------------------------------------------
# models under test


def _with_spike_outputs(g: Graph) -> Graph:
    """Expose every temporal spike train of a graph as an extra output, so spikes are compared too."""
    types = g.value_types
    extra = [v for n in g.nodes for v in n.outputs if types[v].spikes and types[v].temporal and v not in g.outputs]
    return Graph(g.inputs, g.nodes, tuple(g.outputs) + tuple(extra), g.metadata)


def _zoo(arch, seed=0, spikes=False, **cfg):
    def make():
        torch.manual_seed(seed)
        m = build_model(arch, 6, 5, **cfg)
        g = edgeseq.capture(m, torch.randn(2, 12, 6))
        return _with_spike_outputs(g) if spikes else g

    return make


def _torch_rnn(cls, batch_first, **kw):
    def make():
        torch.manual_seed(1)
        m = cls(6, 12, num_layers=2, batch_first=batch_first, **kw)
        x = torch.randn(2, 9, 6) if batch_first else torch.randn(9, 2, 6)
        return edgeseq.capture(m, x)

    return make


class _ConvNet(torch.nn.Module):
    """Causal dilated Conv1d + LayerNorm + GRU + Linear, as users write it in torch."""

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


def _convnet():
    torch.manual_seed(2)
    return edgeseq.capture(_ConvNet(), torch.randn(2, 10, 6))


def _snntorch():
    snn = pytest.importorskip("snntorch")
    torch.manual_seed(3)
    net = torch.nn.Sequential(
        torch.nn.Linear(6, 16),
        snn.Leaky(beta=0.9, init_hidden=True),
        torch.nn.Linear(16, 16),
        snn.RSynaptic(alpha=0.8, beta=0.9, linear_features=16, init_hidden=True, reset_mechanism="zero"),
        torch.nn.Linear(16, 12),
        snn.RLeaky(beta=0.85, all_to_all=False, init_hidden=True),
        torch.nn.Linear(12, 4),
        snn.Leaky(beta=0.8, init_hidden=True, output=True),
    )
    with torch.no_grad():
        net[0].weight.mul_(2.0)
    return _with_spike_outputs(edgeseq.capture(net, torch.randn(2, 10, 6)))


def _w(rng, *shape, scale=0.4):
    return rng.standard_normal(shape) * scale


def _feedforward_ir():
    """Every feed-forward op and activation, grouped conv, GRU with reset_after=False, all readouts."""
    rng = np.random.default_rng(4)
    b = GraphBuilder(5)
    c1 = b.add(O.Conv1d(weight=_w(rng, 6, 5, 3), bias=_w(rng, 6), dilation=2), "x", "conv")
    c2 = b.add(O.Conv1d(weight=_w(rng, 6, 3, 2), groups=2), c1, "gconv")
    c3 = b.add(O.Conv1d(weight=_w(rng, 4, 6, 1), bias=_w(rng, 4)), c2, "pointwise")
    ln = b.add(O.LayerNorm(eps=1e-3), c3, "ln")
    bn = b.add(O.BatchNorm(mean=_w(rng, 4), var=rng.uniform(0.5, 2.0, 4), weight=_w(rng, 4), bias=_w(rng, 4)), ln, "bn")
    acts = [b.add(O.Activation(fn=f, slope=0.2, lo=-0.5, hi=0.7), bn, f"act_{f.value}") for f in Act]
    cat = b.add(O.Concat(), acts, "cat")
    lin = b.add(O.Linear(weight=_w(rng, 8, 4 * len(acts), scale=0.2), bias=_w(rng, 8)), cat, "lin")
    lin2 = b.add(O.Linear(weight=_w(rng, 8, 5)), "x", "skip")
    add = b.add(O.Add(), [lin, lin2], "add")
    gru = b.add(O.GRU(w_ih=_w(rng, 18, 8), w_hh=_w(rng, 18, 6), b_ih=_w(rng, 18), reset_after=False), add, "gru_rb")
    rl = b.add(O.Readout(mode="last"), gru, "r_last")
    rm = b.add(O.Readout(mode="mean"), add, "r_mean")
    small = b.add(O.Linear(weight=_w(rng, 3, 4, scale=0.02)), c3, "small")  # keeps the sum float32-exact to 1e-5
    rs = b.add(O.Readout(mode="sum"), small, "r_sum")
    pc = b.add(O.Concat(), [rl, rm, rs], "pooled")
    ph = b.add(O.Linear(weight=_w(rng, 6, 17), bias=_w(rng, 6)), pc, "p_lin")
    pa = b.add(O.Activation(fn="gelu"), ph, "p_act")
    pn = b.add(O.LayerNorm(weight=_w(rng, 6) + 1.0, bias=_w(rng, 6)), pa, "p_ln")
    pb = b.add(O.BatchNorm(mean=_w(rng, 6), var=rng.uniform(0.5, 2.0, 6)), pn, "p_bn")
    return b.build([gru, pb, rs])


def _lmu_ir():
    """LMU variants the zoo does not build: every optional connection, no hidden cell with the large
    (batched) memory layout, a bias-only dense hidden cell, Euler discretisation."""
    rng = np.random.default_rng(5)
    b = GraphBuilder(4)
    h1 = b.add(
        O.LMU(
            e_x=_w(rng, 2, 4),
            order=5,
            theta=9.0,
            e_h=_w(rng, 2, 7, scale=0.1),
            e_m=_w(rng, 2, 10, scale=0.1),
            b_u=_w(rng, 2),
            w_m=_w(rng, 7, 10, scale=0.2),
            w_x=_w(rng, 7, 4),
            w_h=_w(rng, 7, 7, scale=0.1),
            b_h=_w(rng, 7),
            act="relu",
        ),
        "x",
        "lmu_full",
    )
    m2 = b.add(O.LMU(e_x=_w(rng, 5, 7), order=60, theta=30.0, e_h=_w(rng, 5, 300, scale=0.02)), h1, "lmu_mem")
    h3 = b.add(
        O.LMU(
            e_x=_w(rng, 1, 300, scale=0.05),
            order=4,
            theta=6.0,
            w_m=_w(rng, 6, 4),
            b_h=_w(rng, 6),
            act="sigmoid",
            discretizer="euler",
        ),
        m2,
        "lmu_dense",
    )
    r = b.add(O.Readout(mode="mean"), h3, "readout")
    return b.build([h3, r])


def _neuron(rng, n, **kw):
    return O.NeuronParams(beta=rng.uniform(0.6, 0.95, n), threshold=rng.uniform(0.5, 1.5, n), **kw)


def _spiking_ir():
    """LIF / CuBaLIF / L2MU variants: every reset rule, immediate reset, graded spikes, one-to-one and
    all-to-all recurrence, emit='both', synaptic L2MU populations, spike-count readout."""
    rng = np.random.default_rng(6)
    b = GraphBuilder(4)
    i1 = b.add(O.Linear(weight=_w(rng, 10, 4, scale=1.2), bias=_w(rng, 10)), "x", "fc1")
    s1 = b.add(
        O.LIF(
            neuron=_neuron(rng, 10, reset="zero", reset_delay=False, spike_scale=rng.uniform(0.5, 2, 10)),
            recurrence="one_to_one",
            v_rec=_w(rng, 10),
        ),
        i1,
        "lif_zero_now",
    )
    i2 = b.add(O.Linear(weight=_w(rng, 10, 10, scale=0.5), bias=_w(rng, 10, scale=0.1) + 0.1), s1, "fc2")
    s2, m2 = b.add(
        O.CuBaLIF(
            neuron=_neuron(rng, 10, alpha=rng.uniform(0.3, 0.9, 10), reset="zero_total"),
            recurrence="all_to_all",
            w_rec=_w(rng, 10, 10, scale=0.2),
            b_rec=_w(rng, 10, scale=0.1),
            emit="both",
        ),
        i2,
        "cuba_both",
    )
    i3 = b.add(O.Linear(weight=_w(rng, 8, 10, scale=0.8), bias=_w(rng, 8, scale=0.5)), s2, "fc3")
    s3 = b.add(
        O.LIF(neuron=O.NeuronParams(beta=0.9, threshold=0.8, reset="subtract", reset_delay=False)), i3, "lif_sub_now"
    )
    i4 = b.add(O.Linear(weight=_w(rng, 8, 8, scale=0.8), bias=_w(rng, 8, scale=0.5)), s3, "fc4")
    s4 = b.add(O.LIF(neuron=O.NeuronParams(beta=0.9, threshold=1.0, reset="none")), i4, "lif_none")
    d, order, hid = 2, 4, 6
    syn = {"alpha": 0.7, "beta": 0.85, "threshold": 0.4}
    l2 = b.add(
        O.L2MU(
            a=_w(rng, order, order, scale=0.3) + np.eye(order) * 0.5,
            b=_w(rng, order),
            e_x=_w(rng, d, 8),
            w_m=_w(rng, hid, d * order, scale=0.8),
            e_h=_w(rng, d, hid),
            b_u=_w(rng, d, scale=0.3) + 0.3,
            w_h=_w(rng, hid, hid),
            b_h=_w(rng, hid, scale=0.3) + 0.2,
            u_neuron=O.NeuronParams(**syn, reset="zero"),
            m_neuron=O.NeuronParams(**syn, reset="subtract", reset_delay=False),
            h_neuron=O.NeuronParams(**syn, reset="zero_total"),
        ),
        s4,
        "l2mu_syn",
    )
    cnt = b.add(O.Readout(mode="sum"), l2, "spike_count")
    last = b.add(O.Readout(mode="last"), m2, "last_mem")
    return b.build([s1, s2, m2, s3, s4, l2, cnt, last])


CASES = {
    "zoo_rnn": _zoo("rnn", hidden=8),
    "zoo_gru2": _zoo("gru", hidden=16, layers=2),
    "zoo_gru_mean": _zoo("gru", hidden=8, readout="mean"),
    "zoo_lstm": _zoo("lstm", hidden=16),
    "zoo_mingru2": _zoo("mingru", hidden=16, layers=2),
    "zoo_mingru_identity": _zoo("mingru", hidden=8, candidate="identity", bias=False, readout="mean"),
    "zoo_minlstm": _zoo("minlstm", hidden=16),
    "zoo_lmu": _zoo("lmu", hidden=16, memory_d=2, order=6, theta=20.0),
    "zoo_lmu_dense": _zoo("lmu", hidden=16, memory_d=2, order=6, theta=20.0, hidden_cell="dense", input_to_hidden=True),
    "zoo_lmu_rec": _zoo(
        "lmu",
        hidden=12,
        memory_d=3,
        order=4,
        theta=10.0,
        hidden_to_memory=True,
        memory_to_memory=True,
        memory_bias=True,
    ),
    "zoo_lif": _zoo("lif", spikes=True, hidden=16),
    "zoo_lif_rec": _zoo("lif", spikes=True, hidden=16, recurrent=True, reset="zero"),
    "zoo_l2mu": _zoo("l2mu", spikes=True, hidden=16, encoder_size=8),
    "zoo_l2mu_syn": _zoo("l2mu", spikes=True, hidden=12, encoder_size=8, memory_d=2, order=4, neuron="synaptic"),
    "zoo_lmuformer": _zoo("lmuformer", dim=16, memory_d=2, order=4),
    "zoo_lmuformer_spiking": _zoo("lmuformer", spikes=True, dim=16, memory_d=2, order=4, spiking=True),
    "torch_gru2_bf": _torch_rnn(torch.nn.GRU, True),
    "torch_lstm2_tbf": _torch_rnn(torch.nn.LSTM, False),
    "torch_rnn2_relu": _torch_rnn(torch.nn.RNN, True, nonlinearity="relu"),
    "torch_rnn2_tanh_tbf": _torch_rnn(torch.nn.RNN, False),
    "torch_conv_ln_gru": _convnet,
    "snntorch": _snntorch,
    "ir_feedforward": _feedforward_ir,
    "ir_lmu": _lmu_ir,
    "ir_spiking": _spiking_ir,
}


class _Exported:
    """One case exported once (whole, streaming, inline) with its sessions, reused by every test."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self._models: dict = {}
        self._sessions: dict = {}

    def model(self, streaming=False, inline=False, fused=False):
        key = (streaming, inline, fused)
        if key not in self._models:
            self._models[key] = build_onnx(self.graph, streaming=streaming, inline=inline, fused_rnn=fused)
        return self._models[key]

    def session(self, streaming=False, inline=False, fused=False):
        key = (streaming, inline, fused)
        if key not in self._sessions:
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.log_severity_level = 2
            self._sessions[key] = ort.InferenceSession(
                self.model(*key).SerializeToString(), so, providers=["CPUExecutionProvider"]
            )
        return self._sessions[key]

    def run(self, x, streaming=False, inline=False, state=None, fused=False):
        s = self.session(streaming, inline, fused)
        feeds = {self.graph.inputs[0].name: x.astype(np.float32)}
        n = len(self.graph.outputs)
        names = [o.name for o in s.get_outputs()]
        if not streaming:
            return s.run(names[:n], feeds)
        spec = self.graph.state_spec()
        state = state or {k: np.zeros((x.shape[0],) + sh, np.float32) for k, sh in spec.items()}
        feeds.update({"state_in." + k: v for k, v in state.items()})
        res = s.run(names, feeds)
        return res[:n], {k: v for k, v in zip(spec, res[n:])}


@pytest.fixture(scope="module")
def exported():
    cache: dict[str, _Exported] = {}

    def get(name):
        if name not in cache:
            cache[name] = _Exported(CASES[name]())
        return cache[name]

    return get


def _input(graph, batch, steps, seed):
    x = np.random.default_rng(seed).standard_normal((batch, steps, graph.in_features)) * 1.5
    return x.astype(np.float32)


def _compare(graph, got, want, what):
    """Max abs error <= TOL (times the output's magnitude where it exceeds 1) for value outputs; identical spikes for spike outputs (same spike pattern,
    amplitudes equal to the reference's rounded to float32)."""
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        name = graph.outputs[k]
        assert g.shape == w.shape, (what, name, g.shape, w.shape)
        if graph.output_types[k].spikes:
            bad = int(np.count_nonzero(g != w.astype(np.float32)))
            assert bad == 0, f"{what}: output '{name}' has {bad} spike mismatches of {g.size}"
        else:
            err = float(np.max(np.abs(g.astype(np.float64) - w)))
            scale = max(1.0, float(np.max(np.abs(w))))  # float32 keeps ~7 digits of a large membrane
            assert err <= TOL * scale, f"{what}: output '{name}' max abs error {err:.3g} > {TOL} x {scale:.3g}"


# ----------------------------------------------------------------------------------------------
# numerics


@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference_at_several_lengths_and_batches(exported, case):
    ex = exported(case)
    x_all = _input(ex.graph, max(BATCHES), max(LENGTHS), seed=7)
    for steps in LENGTHS:
        for batch in BATCHES:
            x = x_all[:batch, :steps]
            want, _ = reference(ex.graph, x.astype(np.float64))
            _compare(ex.graph, ex.run(x), want, f"{case} B={batch} T={steps}")


@pytest.mark.parametrize("case", list(CASES))
def test_streaming_chunks_equal_whole_sequence(exported, case):
    ex = exported(case)
    g = ex.graph
    x = _input(g, 2, 29, seed=8)
    whole = ex.run(x)
    _, ref_state = reference(g, x.astype(np.float64))
    temporal = [t.temporal for t in g.output_types]
    for chunk in (1, 7):
        state, parts = None, []
        for s in range(0, x.shape[1], chunk):
            outs, state = ex.run(x[:, s : s + chunk], streaming=True, state=state)
            parts.append(outs)
        got = [
            np.concatenate([p[k] for p in parts], axis=1) if temporal[k] else parts[-1][k]
            for k in range(len(g.outputs))
        ]
        for k, (a, b) in enumerate(zip(got, whole)):
            if g.output_types[k].spikes:
                assert np.array_equal(a, b), f"{case} chunk={chunk}: spikes of '{g.outputs[k]}' differ"
            else:
                err = float(np.max(np.abs(a - b)))
                assert err <= TOL, f"{case} chunk={chunk}: '{g.outputs[k]}' differs by {err:.3g}"
        assert set(state) == set(g.state_spec())
        for key, v in state.items():  # membranes can be large: float32-relative tolerance
            err = float(np.max(np.abs(v - ref_state[key])))
            scale = max(1.0, float(np.max(np.abs(ref_state[key]))))
            assert err <= TOL * scale, f"{case} chunk={chunk}: state '{key}' differs from the reference by {err:.3g}"


@pytest.mark.parametrize(
    "case", ["zoo_gru2", "zoo_lmu_rec", "zoo_l2mu", "zoo_lmuformer_spiking", "ir_feedforward", "ir_spiking", "snntorch"]
)
def test_inline_model_has_no_custom_domain_and_same_outputs(exported, case):
    ex = exported(case)
    model = ex.model(inline=True)
    onnx.checker.check_model(model, full_check=True)
    assert not model.functions
    assert all(o.domain in ("", "ai.onnx") for o in model.opset_import)
    domains = {n.domain for n in _all_nodes(model.graph)}
    assert domains <= {"", "ai.onnx"}, domains
    assert any(n.op_type == "Scan" for n in _all_nodes(model.graph))
    x = _input(ex.graph, 3, 40, seed=9)
    want, _ = reference(ex.graph, x.astype(np.float64))
    got = ex.run(x, inline=True)
    _compare(ex.graph, got, want, f"{case} inline")
    for a, b in zip(got, ex.run(x)):
        assert np.max(np.abs(a - b)) <= 1e-6


@pytest.mark.parametrize(
    "case",
    [
        "zoo_gru2",
        "zoo_lstm",
        "torch_rnn2_relu",
        "torch_rnn2_tanh_tbf",
        "torch_lstm2_tbf",
        "torch_conv_ln_gru",
        "ir_feedforward",
    ],
)
def test_fused_rnn_variant_matches_reference(exported, case):
    """fused_rnn=True: GRU/LSTM functions built on ONNX's own recurrent ops, same numbers."""
    ex = exported(case)
    g = ex.graph
    model = ex.model(fused=True)
    onnx.checker.check_model(model, full_check=True)
    last_only = {
        v
        for n in g.nodes
        for v in n.inputs
        if v not in g.outputs
        and all(m.op.kind == "Readout" and m.op.mode.value == "last" for m in g.nodes if v in m.inputs)
    }
    calls = {(n.op_type, n.overload): n for n in model.graph.node if n.domain == "edgeseq"}
    for f in model.functions:
        if f.name in ("GRU", "LSTM"):
            assert f.name in {n.op_type for n in f.node} and "Scan" not in {n.op_type for n in f.node}
            # whole-sequence: no final states; a sequence read only at its last step is the operator's
            # final state (its per-step output is not materialized)
            kernel = next(n for n in f.node if n.op_type == f.name)
            assert list(f.output) == ["y0"]
            assert (kernel.output[0] == "") == (calls[f.name, f.overload].output[0] in last_only)
    x = _input(g, 3, 120, seed=13)
    want, ref_state = reference(g, x.astype(np.float64))
    _compare(g, ex.run(x, fused=True), want, f"{case} fused")
    state, parts = None, []
    for s in range(0, x.shape[1], 7):
        outs, state = ex.run(x[:, s : s + 7], streaming=True, state=state, fused=True)
        parts.append(outs)
    temporal = [t.temporal for t in g.output_types]
    got = [np.concatenate([p[k] for p in parts], axis=1) if temporal[k] else parts[-1][k] for k in range(len(want))]
    _compare(g, got, want, f"{case} fused streaming")
    for key, v in state.items():
        assert np.max(np.abs(v - ref_state[key])) <= TOL * max(1.0, float(np.max(np.abs(ref_state[key]))))


# ----------------------------------------------------------------------------------------------
# structure of the exported models


def _all_nodes(graph):
    for n in graph.node:
        yield n
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(a.g)


def _dims(vi):
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


@pytest.mark.parametrize("case", ["zoo_gru2", "zoo_lmuformer_spiking", "ir_feedforward", "ir_spiking"])
@pytest.mark.parametrize("streaming", [False, True])
def test_model_is_valid_with_symbolic_batch_and_time(exported, case, streaming):
    ex = exported(case)
    model = ex.model(streaming=streaming)
    onnx.checker.check_model(model, full_check=True)
    g = ex.graph
    assert _dims(model.graph.input[0]) == ["batch", "time", g.in_features]
    for vi, t in zip(model.graph.output, g.output_types):
        assert _dims(vi) == (["batch", "time", t.features] if t.temporal else ["batch", t.features])
    spec = g.state_spec()
    if streaming:
        ins = {vi.name: _dims(vi) for vi in model.graph.input[1:]}
        outs = {vi.name: _dims(vi) for vi in model.graph.output[len(g.outputs) :]}
        assert ins == {"state_in." + k: ["batch", *s] for k, s in spec.items()}
        assert outs == {"state_out." + k: ["batch", *s] for k, s in spec.items()}
    else:
        assert len(model.graph.input) == 1 and len(model.graph.output) == len(g.outputs)
    # the time dimension stays symbolic through shape inference (no unrolled / fixed-length export)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    for vi in inferred.graph.output[: len(g.outputs)]:
        assert "time" in _dims(vi) or len(_dims(vi)) == 2


def test_each_scan_op_is_one_edgeseq_function_node_over_scan(exported):
    ex = exported("ir_spiking")
    model = ex.model()
    g = ex.graph
    custom = [n for n in model.graph.node if n.domain == "edgeseq"]
    scan_nodes = [n for n in g.nodes if n.op.is_scan]
    assert [n.name for n in custom] == [n.name for n in scan_nodes]
    assert [n.op_type for n in custom] == [n.op.kind for n in scan_nodes]
    funcs = {(f.name, f.overload): f for f in model.functions}
    assert set(funcs) == {(n.op_type, n.overload) for n in custom}
    for f in funcs.values():
        assert f.domain == "edgeseq"
        assert sum(n.op_type == "Scan" for n in f.node) >= 1
    # a stack of identical layers shares one function
    gru = exported("zoo_gru2").model()
    assert len(gru.functions) == 1
    assert sum(n.op_type == "GRU" and n.domain == "edgeseq" for n in gru.graph.node) == 2


def test_weights_are_attributes_recurrent_ones_inside_the_scan_body(exported):
    """Input projections run once over the sequence before the Scan; recurrent weights are Constant
    nodes of the Scan body itself (what onnxruntime needs to fuse QDQ weights into integer kernels).
    Attributes are named after the step program's parameters (stacked rows joined by '_')."""
    model = exported("zoo_gru2").model()
    (fn,) = model.functions
    top_refs = {a.ref_attr_name for n in fn.node if n.op_type == "Constant" for a in n.attribute} - {""}
    (scan,) = [n for n in fn.node if n.op_type == "Scan"]
    body = scan.attribute[0].g
    body_refs = {a.ref_attr_name for n in body.node if n.op_type == "Constant" for a in n.attribute} - {""}
    assert {"w_ir_w_iz_t", "w_in_t"} <= top_refs and not [r for r in top_refs if "w_h" in r]
    assert {"w_hr_w_hz_t", "w_hn_t"} <= body_refs and not [r for r in body_refs if "w_i" in r]
    assert not [n for n in body.node if n.op_type == "MatMul"]
    node = next(n for n in model.graph.node if n.domain == "edgeseq")
    attrs = {a.name: onnx.numpy_helper.to_array(a.t) for a in node.attribute}
    op = exported("zoo_gru2").graph.nodes[1].op
    h = op.hidden_size
    np.testing.assert_allclose(attrs["w_hn_t"], np.asarray(op.w_hh)[2 * h :].T, rtol=0, atol=0)
    np.testing.assert_allclose(attrs["w_hr_w_hz_t"], np.asarray(op.w_hh)[: 2 * h].T, rtol=0, atol=0)


def test_onnxruntime_keeps_recurrent_weights_as_scan_body_initializers(exported, tmp_path):
    """After onnxruntime inlines the functions, the recurrent weights are initializers of the Scan
    body (not outer-scope values) and the input projections live in the main graph."""
    model = exported("zoo_gru2").model()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    opt = onnx.load(str(tmp_path / "optimized.onnx"))
    scans = [n for n in opt.graph.node if n.op_type == "Scan"]
    assert len(scans) == 2
    for scan in scans:
        body = next(a.g for a in scan.attribute if a.type == onnx.AttributeProto.GRAPH)
        inits = " ".join(i.name for i in body.initializer)
        assert "w_hr_w_hz_t" in inits and "w_hn_t" in inits, inits
    assert sum("w_ir_w_iz_t" in i.name for i in opt.graph.initializer) == 2


def test_supported_kinds_cover_the_reference_interpreter():
    from edgeseq.ir.interpret import supported_kinds as reference_kinds

    assert reference_kinds() <= supported_kinds()
    assert all(isinstance(k, str) for k in supported_kinds())


def test_import_edgeseq_does_not_load_onnx():
    code = (
        "import sys, edgeseq, edgeseq.ir.interpret; assert 'onnx' not in sys.modules and "
        "'onnxruntime' not in sys.modules, [m for m in sys.modules if 'onnx' in m]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------------------------
# artifacts


def test_export_writes_a_verified_artifact(exported, tmp_path):
    ex = exported("zoo_lmuformer_spiking")
    out = tmp_path / "art"
    x = _input(ex.graph, 2, 33, seed=10)
    art = export_onnx(ex.graph, out, golden_input=x)
    assert sorted(p.name for p in out.iterdir()) == ["golden", "graph.esq", "manifest.json", "model.onnx"]
    m = json.loads((out / "manifest.json").read_text())
    assert m["versions"]["onnx"] == onnx.__version__ and m["versions"]["onnxruntime"] == ort.__version__
    assert m["versions"]["opset"] == 21 and m["versions"]["edgeseq"] == edgeseq.__version__
    assert m["inputs"][0]["shape"] == ["batch", "time", 6]
    assert m["outputs"][0]["shape"] == ["batch", 5] and m["outputs"][0]["dtype"] == "float32"
    assert m["metadata"]["model_config"]["arch"] == "lmuformer"
    assert set(m["files"]) == {"model.onnx", "graph.esq", "golden/input.npy"} | {
        f"golden/output_{k}.npy" for k in range(len(ex.graph.outputs))
    }
    from edgeseq.util.fs import sha256_file

    for name, info in m["files"].items():
        assert sha256_file(out / name) == info["sha256"]
    np.testing.assert_array_equal(np.load(out / "golden/input.npy"), x)
    want, _ = reference(ex.graph, x.astype(np.float64))
    for k, w in enumerate(want):
        np.testing.assert_array_equal(np.load(out / f"golden/output_{k}.npy"), w)
    assert all(r["max_abs_err"] <= TOL for r in m["check"]["outputs"] if "spike_mismatches" not in r)
    loaded = OnnxArtifact.load(out)
    assert loaded.path == out and loaded.manifest == art.manifest
    assert isinstance(loaded.session, ort.InferenceSession)
    x2 = _input(ex.graph, 3, 61, seed=11)
    want2, _ = reference(ex.graph, x2.astype(np.float64))
    _compare(ex.graph, loaded.run(x2), want2, "artifact")
    rows = loaded.verify_golden()
    assert all(r["max_abs_err"] <= TOL or r.get("spike_mismatches") == 0 for r in rows)
    with pytest.raises(ShapeError):
        loaded.run(x2[:, :, :4])
    with pytest.raises(ConfigError):
        loaded.run(x2, state={})


def test_streaming_artifact_carries_state(exported, tmp_path):
    ex = exported("zoo_lmu_rec")
    art = export_onnx(ex.graph, tmp_path / "s", streaming=True, example_seq_len=20)
    m = art.manifest
    keys = list(ex.graph.state_spec())
    assert [t["key"] for t in m["state"]["tensors"]] == keys
    assert [t["input"] for t in m["state"]["tensors"]] == ["state_in." + k for k in keys]
    assert set(m["golden"]["state"]) == set(keys)
    art = OnnxArtifact.load(tmp_path / "s")
    x = _input(ex.graph, 2, 25, seed=12)
    want, ref_state = reference(ex.graph, x.astype(np.float64))
    state = None
    for s in range(0, 25, 10):
        outs, state = art.run(x[:, s : s + 10], state)
    _compare(ex.graph, outs, want, "streaming artifact")
    for k in keys:
        assert np.max(np.abs(state[k] - ref_state[k])) <= TOL
    with pytest.raises(ShapeError):
        art.run(x, {k: v for k, v in state.items() if k != keys[0]})
    with pytest.raises(ShapeError):
        art.run(x[:1], state)


def test_inline_artifact(exported, tmp_path):
    ex = exported("zoo_mingru2")
    art = export_onnx(ex.graph, tmp_path / "i", inline=True)
    assert art.manifest["inline"] is True and art.manifest["functions"] == []
    assert art.manifest["fused_rnn"] is False
    model = onnx.load(str(tmp_path / "i" / "model.onnx"))
    assert {n.domain for n in _all_nodes(model.graph)} <= {""}
    assert all(r["max_abs_err"] <= TOL for r in art.verify_golden())


# ----------------------------------------------------------------------------------------------
# bad input: typed errors, nothing left behind


def test_unsupported_op_is_a_typed_error_before_any_output(exported, tmp_path, monkeypatch):
    g = exported("zoo_gru2").graph
    monkeypatch.delitem(onnx_lower.LOWER, "GRU")
    assert "GRU" not in supported_kinds()
    with pytest.raises(UnsupportedOpError) as e:
        build_onnx(g)
    msg = str(e.value)
    assert "rnn.l0" in msg and "GRU" in msg and "onnx" in msg
    with pytest.raises(UnsupportedOpError):
        export_onnx(g, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_dir_needs_force(exported, tmp_path):
    g = exported("zoo_rnn").graph
    out = tmp_path / "art"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(ArtifactError) as e:
        export_onnx(g, out)
    assert "force" in str(e.value)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    export_onnx(g, out, force=True)
    assert (out / "model.onnx").is_file() and not (out / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_unwritable_location(exported, tmp_path):
    g = exported("zoo_rnn").graph
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running with privileges that ignore directory permissions")
        with pytest.raises(ArtifactError):
            export_onnx(g, ro / "art")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_location_under_a_file_is_unwritable(exported, tmp_path):
    g = exported("zoo_rnn").graph
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    with pytest.raises(ArtifactError):
        export_onnx(g, blocker / "art")
    with pytest.raises(ArtifactError):
        export_onnx(g, blocker)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_failure_while_writing_leaves_nothing(exported, tmp_path, monkeypatch):
    from edgeseq.export.onnx import artifact as onnx_artifact

    g = exported("zoo_rnn").graph

    def fail(stage, manifest, files=None):  # the manifest write, the exporter's last step
        raise ArtifactError("disk full (simulated)", where=str(stage))

    monkeypatch.setattr(onnx_artifact, "seal", fail)
    with pytest.raises(ArtifactError, match="simulated"):
        export_onnx(g, tmp_path / "art")
    assert list(tmp_path.iterdir()) == []


def test_bad_golden_input_and_options(exported, tmp_path):
    g = exported("zoo_rnn").graph
    for bad in (
        np.zeros((2, 10, 5), np.float32),
        np.zeros((10, 6), np.float32),
        np.zeros((2, 0, 6)),
        np.full((1, 4, 6), np.nan),
    ):
        with pytest.raises((ShapeError, edgeseq.errors.NumericsError)):
            export_onnx(g, tmp_path / "out", golden_input=bad)
    with pytest.raises(ConfigError):
        export_onnx(g, tmp_path / "out", example_seq_len=0)
    with pytest.raises(ConfigError):
        build_onnx(g, opset=11)
    with pytest.raises(ConfigError):
        build_onnx("not a graph")
    assert list(tmp_path.iterdir()) == []


def test_load_rejects_tampered_or_missing_artifacts(exported, tmp_path):
    g = exported("zoo_rnn").graph
    export_onnx(g, tmp_path / "a")
    golden = tmp_path / "a" / "golden" / "input.npy"
    golden.write_bytes(golden.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ArtifactError):
        OnnxArtifact.load(tmp_path / "a")
    with pytest.raises(ArtifactError):
        OnnxArtifact.load(tmp_path / "nothing")


@pytest.mark.parametrize("case", ["zoo_lif", "zoo_l2mu_syn", "zoo_lmuformer_spiking", "snntorch", "ir_spiking"])
def test_spiking_cases_do_spike(exported, case):
    """The spike comparisons above are only meaningful if the test models actually spike."""
    ex = exported(case)
    x = _input(ex.graph, 3, 200, seed=7)
    got = ex.run(x)
    rates = {n: float(np.mean(y != 0)) for n, y, t in zip(ex.graph.outputs, got, ex.graph.output_types) if t.spikes}
    assert rates and all(0.005 < r < 0.95 for r in rates.values()), rates


@pytest.mark.parametrize("case", list(CASES))
def test_function_variants_are_named_by_their_overload(exported, case):
    """Each (family, overload) names one function body; nodes of the same variant share it."""
    model = exported(case).model()
    names = [(f.name, f.overload) for f in model.functions]
    assert len(names) == len(set(names))
    assert not [o for _, o in names if ".v" in o], names


# ----------------------------------------------------------------------------------------------
# every cell variant (tests/unit/cell_cases.py), rendered from its step program


def _cell_session(model):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", sorted(cell_cases.CASES))
def test_every_cell_variant_whole_and_streaming(name):
    """Each case at two lengths and two batch sizes against the reference, whole and in chunks
    (final states too); the default export (fused kernels where a pattern matches) equals the
    generic Scan rendering, and the fused kernel is used exactly for the GRU / LSTM programs."""
    g = cell_cases.graph_of(name)
    generic, default = build_onnx(g, fused_rnn=False), build_onnx(g)
    fused = {p.key: p.value for p in default.metadata_props}["edgeseq.fused_rnn"] == "true"
    assert fused == name.startswith(("gru", "lstm")), name
    s_gen, s_def = _cell_session(generic), _cell_session(default)
    stream = _cell_session(build_onnx(g, fused_rnn=False, streaming=True))
    spec = g.state_spec()
    for b, t in ((1, 1), (3, 37)):
        x = cell_cases.drive(name, np.random.default_rng(b * t), b, t).astype(np.float32)
        want, want_state = reference(g, x.astype(np.float64))
        got = s_gen.run(None, {"x": x})
        _compare(g, got, want, f"{name} B={b} T={t}")
        for u, v in zip(s_def.run(None, {"x": x}), got):
            assert np.max(np.abs(u - v)) <= TOL, f"{name}: the fused kernel differs from the Scan rendering"
        state = {"state_in." + k: np.zeros((b,) + s, np.float32) for k, s in spec.items()}
        parts = []
        for lo in range(0, t, 16):
            res = stream.run(None, {"x": x[:, lo : lo + 16], **state})
            parts.append(res[: len(g.outputs)])
            state = {"state_in." + k: v for k, v in zip(spec, res[len(g.outputs) :])}
        chunked = [np.concatenate([p[k] for p in parts], axis=1) for k in range(len(g.outputs))]
        _compare(g, chunked, want, f"{name} B={b} T={t} streaming")
        for k in spec:
            w = want_state[k]
            assert np.max(np.abs(state["state_in." + k] - w)) <= TOL * max(1.0, float(np.max(np.abs(w)))), (name, k)
