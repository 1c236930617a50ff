"""Where onnxruntime has an int8 recurrent kernel: torch's own ONNX export of an LSTM / GRU in float against onnxruntime's own dynamic int8 quantization of it, by hidden size (the kernel edgeseq's QDQ export uses for LSTMs with --fused-rnn; GRUs have none).

torch.nn.LSTM / GRU (64 inputs, hidden 128 / 256 / 512, B = 1, T = 128) exported by torch (ONNX LSTM /
GRU ops), then ``onnxruntime.quantization.quantize_dynamic`` (int8 weights): onnxruntime turns the
LSTM op into its contrib op ``com.microsoft.DynamicQuantizeLSTM`` (int8 weights, the input and the
state quantized on the fly per step, float32 state and gates); it has no int8 GRU kernel and leaves the
GRU op in float. One thread, median thread CPU time of 30 runs, both sessions in one process.

What this means for edgeseq's quantized exports (the onnxruntime table above): a QDQ or integer
program runs the recurrence as a Scan of per-step QuantizeLinear / MatMulInteger / DequantizeLinear
and lookup nodes, so it cannot use the fused LSTM / GRU kernels the float export maps to, and at
hidden 128 every per-step node's dispatch costs more than the arithmetic int8 saves. The one int8
recurrent kernel onnxruntime has (DynamicQuantizeLSTM) does not compute edgeseq's integer program
(dynamic per-step activation scales, float gates and state instead of the plan's fixed scales and
lookup activations); the QDQ export's ``--fused-rnn`` lowers an LSTM to it within a stated tolerance.

Results: benchmarks/results/ort_int8.json.

    python -m benchmarks.bench_ort_int8 [--quick]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import write_results

HIDDEN = (128, 256, 512)


def _session(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _thread_ms(sess, feed: dict, runs: int) -> float:
    for _ in range(3):
        sess.run(None, feed)
    ts = []
    for _ in range(runs):
        t0 = time.thread_time()
        sess.run(None, feed)
        ts.append(time.thread_time() - t0)
    return 1e3 * float(np.median(ts))


def one(kind: str, hidden: int, tmp: Path, runs: int) -> dict:
    import logging

    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.manual_seed(0)
    m = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(64, hidden, batch_first=True).eval()
    x = torch.randn(1, 128, 64)
    f, q = tmp / f"{kind}{hidden}.onnx", tmp / f"{kind}{hidden}_int8.onnx"
    torch.onnx.export(m, (x,), str(f), input_names=["x"], dynamo=False, opset_version=17)
    logging.getLogger().setLevel(logging.ERROR)  # quantize_dynamic's pre-processing advice
    quantize_dynamic(str(f), str(q), weight_type=QuantType.QInt8)
    rnn_op = next(
        n.op_type for n in onnx.load(str(q)).graph.node if n.op_type in ("LSTM", "GRU", "DynamicQuantizeLSTM")
    )
    sf, sq = _session(f), _session(q)
    feed = {"x": x.numpy()}
    yf, yq = sf.run(None, feed)[0], sq.run(None, feed)[0]
    tf, tq = _thread_ms(sf, feed, runs), _thread_ms(sq, feed, runs)
    return {
        "model": kind,
        "hidden": hidden,
        "float ORT (ms)": round(tf, 3),
        "ORT dynamic int8 (ms)": round(tq, 3),
        "int8 speedup": round(tf / tq, 2),
        "int8 recurrent op": rnn_op,
        "max abs diff vs float": float(f"{np.abs(yf - yq).max():.3g}"),
    }


NOTES = [
    "Why edgeseq's generic quantized ONNX (QDQ, integer program) is slower than its float export in "
    "onnxruntime: the float export maps the recurrence to onnxruntime's fused GRU / LSTM kernels; a quantized "
    "recurrence without such a kernel can only be a Scan of per-step nodes, which loses the fused kernel "
    "(edgeseq's float export as Scan is already slower) and adds per-step quantize / MatMulInteger / "
    "dequantize and lookup nodes whose dispatch outweighs the int8 arithmetic at these sizes.",
    "onnxruntime's only int8 recurrent kernel is DynamicQuantizeLSTM (below: faster than float from hidden "
    "128 up); it quantizes the input and state per step with scales computed on the fly and keeps the gates "
    "and state in float32. edgeseq's QDQ export with --fused-rnn lowers an LSTM-shaped program to it (the "
    "program's own int8 weights; tolerance 'recurrent_fused' against the integer program, stated in "
    "edgeseq.export.onnx.qdq.TOLERANCE and the manifest): the 'QDQ fused' column of the onnxruntime table. "
    "There is no int8 GRU kernel: quantize_dynamic leaves the GRU op in float (speedup about 1), and a "
    "quantized GRU, RNN, LMU, minGRU or LIF runs as a Scan.",
]


def edgeseq_exports() -> tuple[list[dict], str | None]:
    """bench_onnx's GRU / LSTM rows (float fused, float Scan, QDQ, integer program), if measured."""
    import json

    from benchmarks.common import results_dir

    path = results_dir() / "onnx.json"
    if not path.is_file():
        return [], None
    d = json.loads(path.read_text())
    rows = []
    for kind in ("gru", "lstm"):
        m = d.get("results", {}).get(kind, {}).get("methods", {})
        ms = {k: (m.get(k) or {}).get("median_ms") for k in ("edgeseq_onnx", "edgeseq_onnx_scan", "edgeseq_onnx_qdq")}
        ms["edgeseq_onnx_int8"] = (m.get("edgeseq_onnx_int8") or {}).get("median_ms")
        if ms["edgeseq_onnx"]:
            rows.append(
                {
                    "model": kind,
                    "float, fused op (ms)": round(ms["edgeseq_onnx"], 3),
                    "float, Scan (ms)": round(ms["edgeseq_onnx_scan"], 3) if ms["edgeseq_onnx_scan"] else None,
                    "QDQ (ms)": round(ms["edgeseq_onnx_qdq"], 3) if ms["edgeseq_onnx_qdq"] else None,
                    "integer program (ms)": round(ms["edgeseq_onnx_int8"], 3) if ms["edgeseq_onnx_int8"] else None,
                }
            )
    return rows, d.get("date")


def run(quick: bool = False, write: bool = True) -> dict:
    import onnxruntime as ort
    import torch

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeseq-ort-int8-") as tmp:
        for kind in ("lstm", "gru"):
            for h in HIDDEN[:1] if quick else HIDDEN:
                rows.append(one(kind, h, Path(tmp), 10 if quick else 30))
                print(rows[-1], flush=True)
    tables = {"torch's export in onnxruntime: float against onnxruntime's dynamic int8": rows}
    edgeseq_rows, date = edgeseq_exports()
    if edgeseq_rows:
        tables[f"edgeseq's exports of one graph in onnxruntime, hidden 128 (bench_onnx, run {date})"] = edgeseq_rows
    data = {
        "config": {"inputs": 64, "batch": 1, "steps": 128, "threads": 1, "onnxruntime": ort.__version__},
        "notes": NOTES,
        "tables": tables,
        "results": rows,
    }
    if write:
        write_results("ort_int8", data)
    return data


if __name__ == "__main__":
    import sys

    run(quick="--quick" in sys.argv[1:])
