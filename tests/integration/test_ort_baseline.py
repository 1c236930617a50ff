"""onnxruntime's quantizer as the baseline: on tiny GRU / LSTM / LMU models, every export form and
method is tried, what got quantized is counted (including inside Scan bodies), accuracy is measured,
and the quantizer's failures are recorded as findings with their reason."""

from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

import edgeseq  # noqa: E402
from edgeseq.audit.ort_baseline import audit_rows, constants_to_initializers, op_inventory, ort_baseline  # noqa: E402
from edgeseq.errors import ConfigError, ShapeError  # noqa: E402
from edgeseq.export.onnx import build_onnx  # noqa: E402
from edgeseq.nn import build_model  # noqa: E402


def tiny(arch, **cfg):
    torch.manual_seed(0)
    m = build_model(arch, 6, 5, **cfg).eval()
    x = np.random.default_rng(0).normal(size=(48, 16, 6)).astype(np.float32)
    with torch.no_grad():
        y = m(torch.from_numpy(x)).argmax(-1).numpy()  # labels = the float model's own decisions
    return m, x, y


def variant(res, export, method):
    return next(v for v in res["variants"] if v["export"] == export and v["method"] == method)


def test_gru_baseline_records_quantization_and_failures(tmp_path):
    m, x, y = tiny("gru", hidden=12)
    res = ort_baseline(m, x[:32], x, y, tmp_path)
    json.dumps(res, allow_nan=False)  # JSON-able
    assert set(res["float"]) == {
        "edgeseq_functions",
        "edgeseq_inline",
        "edgeseq_inline_init",
        "edgeseq_fused",
        "torch_legacy",
    }
    for name, f in res["float"].items():
        assert f["accuracy"] == 1.0, name  # every float export computes the model
    assert res["float"]["torch_legacy"]["time_symbolic"] and res["float"]["torch_legacy"]["correct_at_other_length"]
    assert res["torch_accuracy"] == 1.0
    assert len(res["variants"]) == 5 * 5
    for v in res["variants"]:
        assert v["status"] in ("ok", "failed")
        if v["status"] == "ok":
            assert 0.0 <= v["accuracy"] <= 1.0 and (tmp_path / f"{v['export']}.{v['method']}.onnx").exists()
        else:
            assert v["error"] and v["stage"] in ("quantize", "load", "run")
    # quantize_static never enters the Scan body, even with EnableSubgraph
    for exp in ("edgeseq_functions", "edgeseq_inline", "edgeseq_inline_init"):
        for meth in ("static_qdq", "static_qdq_per_channel", "static_qdq_subgraph"):
            v = variant(res, exp, meth)
            assert v["status"] == "ok" and v["quant_nodes_in_subgraphs"] == 0
            assert not v["quantized_recurrence"]
    # dynamic + EnableSubgraph quantizes the recurrent matmuls once the weights are initializers
    v = variant(res, "edgeseq_inline_init", "dynamic_subgraph")
    assert v["quantized_recurrence"] and v["quant_nodes_in_subgraphs"] > 0
    assert v["recurrent_compute"]["integer"] == v["recurrent_compute"]["total"] > 0
    assert any(k.startswith("subgraph:") for k in v["runtime_integer_ops"])
    # ... but not while they are Constant nodes of an inlined function body
    assert not variant(res, "edgeseq_inline", "dynamic_subgraph")["quantized_recurrence"]
    # the ONNX GRU op is never quantized
    for meth in ("static_qdq", "dynamic", "dynamic_subgraph"):
        v = variant(res, "torch_legacy", meth)
        assert v["status"] == "ok" and not v["quantized_recurrence"]
        assert "main: GRU" in v["float_compute_ops"]
    s = res["summary"]
    assert s["recurrence_quantized_by"] == ["edgeseq_inline_init/dynamic_subgraph"]
    assert s["variants_ok"] + s["variants_failed"] == 25
    rows = audit_rows(res, include_float=True)
    assert len(rows) == 30 and {r["kind"] for r in rows} == {"float", "ort_baseline"}
    assert all(r.get("error") for r in rows if r["status"] == "failed")


def test_lstm_dynamic_quantizes_only_the_torch_export(tmp_path):
    m, x, y = tiny("lstm", hidden=8)
    res = ort_baseline(m, x[:32], x, y, tmp_path, exports=("edgeseq_fused", "torch_legacy"), methods=("dynamic",))
    v = variant(res, "torch_legacy", "dynamic")
    assert v["quant_nodes"].get("DynamicQuantizeLSTM") == 1 and v["quantized_recurrence"]
    assert v["runtime_integer_ops"].get("DynamicQuantizeLSTM") == 1
    # inside an edgeseq function the LSTM op is out of the dynamic quantizer's reach
    assert not variant(res, "edgeseq_fused", "dynamic")["quantized_recurrence"]


def test_lmu_graph_input_has_no_torch_export(tmp_path):
    m, x, y = tiny(
        "lmu", hidden=8, memory_d=2, order=4, theta=8.0, hidden_cell="dense", input_to_hidden=True, readout="mean"
    )
    g = edgeseq.capture(m, x[:2])
    res = ort_baseline(g, x[:32], x, y, tmp_path, methods=("static_qdq", "dynamic_subgraph"))
    assert set(res["float"]) == {"edgeseq_functions", "edgeseq_inline", "edgeseq_inline_init"}
    assert "torch_accuracy" not in res and res["graph"]["nodes"][0] == "BatchNorm"
    v = variant(res, "edgeseq_inline_init", "dynamic_subgraph")
    assert v["status"] == "ok" and v["quant_nodes_in_subgraphs"] > 0


def test_unrolled_torch_export_is_flagged(tmp_path):
    """A model whose time loop torch unrolls at export time: the baseline reports it."""
    _, x, _ = tiny("mingru", hidden=8)

    class Wrap(torch.nn.Module):  # a torch GRU next to a Python time loop
        def __init__(self):
            super().__init__()
            self.gru = torch.nn.GRU(6, 4, batch_first=True)
            self.head = torch.nn.Linear(4, 5)

        def forward(self, x):
            y, _ = self.gru(x)
            acc = y[:, 0]
            for t in range(1, y.shape[1]):
                acc = acc + y[:, t]
            return self.head(acc)

    w = Wrap().eval()
    with torch.no_grad():
        yy = w(torch.from_numpy(x)).argmax(-1).numpy()
    res = ort_baseline(w, x[:16], x, yy, tmp_path, exports=("torch_legacy",), methods=("dynamic",))
    f = res["float"]["torch_legacy"]
    assert f["accuracy"] == 1.0 and f["correct_at_other_length"] is False
    # edgeseq's capture refuses it in one line (the reason is recorded next to torch's numbers)
    assert res["capture_error"] and "\n" not in res["capture_error"] and set(res["float"]) == {"torch_legacy"}


def test_inventory_and_constant_hoisting():
    m, x, y = tiny("gru", hidden=6)
    g = edgeseq.capture(m, x[:2])
    inl = build_onnx(g, inline=True, fused_rnn=False)
    inv = op_inventory(inl)
    assert inv["ops"]["subgraph"]["Constant"] >= 1 and inv["recurrent_compute"]["total"] == 2
    assert inv["quant_nodes"] == {}
    fixed = constants_to_initializers(inl)
    assert "Constant" not in op_inventory(fixed)["ops"]["subgraph"]
    import onnxruntime as ort

    a = ort.InferenceSession(inl.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    b = ort.InferenceSession(fixed.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(a, b)
    fn = op_inventory(build_onnx(g, fused_rnn=False))
    assert fn["ops"]["main"].get("edgeseq.GRU") == 1 and "GRU" not in fn["ops"]["main"]


def test_bad_inputs(tmp_path):
    m, x, y = tiny("gru", hidden=4)
    with pytest.raises(ShapeError):
        ort_baseline(m, x[:, :, :3], x, y, tmp_path)
    with pytest.raises(ShapeError):
        ort_baseline(m, x, x, y[:3], tmp_path)
    with pytest.raises(ConfigError, match="unknown onnxruntime quantization method"):
        ort_baseline(m, x, x, y, tmp_path, methods=("int4_magic",))
    with pytest.raises(ConfigError, match="IR Graph, a torch nn.Module or an ONNX model"):
        ort_baseline(object(), x, x, y, tmp_path)
