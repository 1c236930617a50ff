"""ONNX backend: edgeseq IR graphs -> ONNX models that onnxruntime runs with no plugin.

Every recurrent or spiking op becomes one ``edgeseq.<Kind>`` node defined by a model-local
ONNX function rendered from the op's step program (:mod:`.render`): a standard ``Scan`` over
time, or ONNX's own GRU / LSTM op where the program computes exactly that (:mod:`.fused`);
feed-forward ops map to standard ONNX ops. Batch and time are symbolic dimensions.
``streaming=True`` exports a chunk-at-a-time model with explicit state inputs and outputs;
``inline=True`` flattens the functions.

    model = build_onnx(graph)                      # onnx.ModelProto
    art = export_onnx(graph, "out/gru_onnx")       # model.onnx + manifest.json + golden vectors
    y, = OnnxArtifact.load("out/gru_onnx").run(x)
    art = export_onnx_quantized(qgraph, "out/gru_int8")   # integer program of a quantized graph
    art = export_onnx_quantized(qgraph, "out/gru_qdq", numerics="qdq")   # QDQ model (integer kernels)


This package imports onnx and onnxruntime; ``import edgeseq`` does not load it.
"""

from __future__ import annotations

from .artifact import OnnxArtifact, export_onnx
from .lower import STATE_IN, STATE_OUT, build_onnx, inline_functions, supported_kinds
from .qdq import build_onnx_qdq
from .qlower import build_onnx_quantized
from .quant import export_onnx_quantized

__all__ = [
    "build_onnx",
    "export_onnx",
    "OnnxArtifact",
    "supported_kinds",
    "inline_functions",
    "STATE_IN",
    "STATE_OUT",
    "build_onnx_quantized",
    "export_onnx_quantized",
    "build_onnx_qdq",
]
