"""onnxruntime's own quantizer as the incumbent baseline, measured on the same model.

:func:`ort_baseline` exports the float model to ONNX in every form a user could hand to
``onnxruntime.quantization``:

- ``edgeseq_functions``: edgeseq's default export (``edgeseq.<Kind>`` functions over ``Scan``);
- ``edgeseq_inline``: the same with the functions inlined (weights of the inlined bodies are
  ``Constant`` nodes, as ONNX functions cannot hold initializers);
- ``edgeseq_inline_init``: inlined, with every ``Constant`` turned into an initializer of its own
  graph (main graph or ``Scan`` body), so the quantizer can see all weights (its best case);
- ``edgeseq_fused``: GRU/LSTM as ONNX's own fused GRU/LSTM ops (graphs with GRU/LSTM only);
- ``torch_legacy``: torch's own exporter (``dynamo=False``, dynamic batch and time) for models
  holding a torch nn.RNN/GRU/LSTM, checked at a second sequence length (an unrolled time loop
  silently fixes the length).

and runs on each: ``quantize_static`` (QDQ, int8 activations and weights, MinMax calibration on
dataset samples; per tensor, per channel, and with ``EnableSubgraph``) and ``quantize_dynamic``
(int8 weights; with and without ``EnableSubgraph``). For every quantized model it records what
actually got quantized (QuantizeLinear / DequantizeLinear / MatMulInteger / DynamicQuantize* and
other integer nodes, counted in the main graph, in function bodies and inside Scan/Loop bodies; the
matrix products left in float; the integer kernels in onnxruntime's optimised graph) and the
accuracy on an evaluation set. A step that fails is recorded with its reason: failures are
findings of the baseline, not crashes.

This module imports onnx, onnxruntime and torch on use; ``import edgeseq`` does not load it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ConfigError, ShapeError

EXPORTS = ("edgeseq_functions", "edgeseq_inline", "edgeseq_inline_init", "edgeseq_fused", "torch_legacy")
METHODS = ("static_qdq", "static_qdq_per_channel", "static_qdq_subgraph", "dynamic", "dynamic_subgraph")

QUANT_OPS = (
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "ConvInteger",
    "QLinearMatMul",
    "QLinearConv",
    "QLinearAdd",
    "QLinearMul",
    "QGemm",
    "DynamicQuantizeLSTM",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
    "QAttention",
    "QLinearSigmoid",
    "QLinearLeakyRelu",
)
INTEGER_COMPUTE = (
    "MatMulInteger",
    "ConvInteger",
    "QLinearMatMul",
    "QLinearConv",
    "QGemm",
    "DynamicQuantizeLSTM",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
    "QAttention",
)
FLOAT_COMPUTE = ("MatMul", "Gemm", "Conv", "GRU", "LSTM", "RNN")
RECURRENT_OPS = ("GRU", "LSTM", "RNN", "DynamicQuantizeLSTM")


def _short(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip().splitlines()
    first = next((ln for ln in text if ln.strip()), "")
    return f"{type(e).__name__}: {first[:limit]}"


@contextlib.contextmanager
def _quiet():
    """Silence the quantizer's root-logger advice, Python warnings and C++ logging to stderr."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def _quiet_fds():
    """Silence file descriptors 1 and 2 (torch's exporter logs from C++)."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


# ------------------------------------------------------------------------------------ inspection


def _subgraphs(node):
    import onnx

    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.name, a.g
        for g in a.graphs:
            yield a.name, g


def op_inventory(model) -> dict:
    """Where every op of an ONNX model lives: counts per scope kind (``main``, ``function``,
    ``subgraph`` = Scan/Loop/If bodies, at any depth, inside functions too), the quantization
    nodes, and every matrix product / recurrent op classified as ``integer`` (an integer kernel),
    ``qdq`` (all its float inputs come from DequantizeLinear: onnxruntime runs it as an integer
    kernel), ``weight_qdq`` (only the weight does) or ``float``."""
    ops: dict[str, Counter] = {"main": Counter(), "function": Counter(), "subgraph": Counter()}
    compute: list[dict] = []

    def walk(nodes, scope: str, where: str, in_sub: bool):
        produced = {o: n.op_type for n in nodes for o in n.output}
        for n in nodes:
            standard = n.domain in ("", "ai.onnx", "com.microsoft")
            ops[scope][n.op_type if standard else f"{n.domain}.{n.op_type}"] += 1
            if standard and (n.op_type in INTEGER_COMPUTE or n.op_type in FLOAT_COMPUTE):
                if n.op_type in INTEGER_COMPUTE:
                    kind = "integer"
                else:
                    src = [produced.get(i) for i in list(n.input)[:2] if i]
                    dq = [s == "DequantizeLinear" for s in src]
                    kind = "qdq" if dq and all(dq) else ("weight_qdq" if len(dq) > 1 and dq[1] else "float")
                compute.append(
                    {
                        "op": n.op_type,
                        "name": n.name,
                        "where": where,
                        "in_loop_body": in_sub,
                        "recurrent": in_sub or n.op_type in RECURRENT_OPS,
                        "kind": kind,
                    }
                )
            for attr, g in _subgraphs(n):
                walk(g.node, "subgraph", f"{where}/{n.op_type}:{n.name}.{attr}", True)

    walk(model.graph.node, "main", "main", False)
    for f in model.functions:
        walk(f.node, "function", f"function:{f.domain}.{f.name}", False)
    quant = {scope: {k: v for k, v in c.items() if k in QUANT_OPS} for scope, c in ops.items()}
    total_q = Counter()
    for c in quant.values():
        total_q.update(c)

    def tally(rows):
        t = Counter(r["kind"] for r in rows)
        return {
            "total": len(rows),
            "integer": t["integer"],
            "qdq": t["qdq"],
            "weight_qdq": t["weight_qdq"],
            "float": t["float"],
        }

    return {
        "ops": {k: dict(v) for k, v in ops.items()},
        "quant_nodes": dict(total_q),
        "quant_nodes_by_scope": quant,
        "quant_nodes_in_subgraphs": int(sum(quant["subgraph"].values())),
        "compute": tally(compute),
        "recurrent_compute": tally([r for r in compute if r["recurrent"]]),
        "feedforward_compute": tally([r for r in compute if not r["recurrent"]]),
        "float_compute_ops": [f"{r['where']}: {r['op']}" for r in compute if r["kind"] == "float"][:40],
    }


def runtime_integer_ops(model_path: str) -> dict:
    """Integer kernels in onnxruntime's optimised graph (what actually runs), counted with subgraphs."""
    import onnx
    import onnxruntime as ort

    out = str(model_path) + ".ort_optimized.onnx"
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = out
    so.log_severity_level = 4
    ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    m = onnx.load(out)
    counts: Counter = Counter()

    def walk(nodes, sub: bool):
        for n in nodes:
            if n.op_type in INTEGER_COMPUTE or n.op_type.startswith("QLinear"):
                counts[("subgraph:" if sub else "") + n.op_type] += 1
            for _, g in _subgraphs(n):
                walk(g.node, True)

    walk(m.graph.node, False)
    for f in m.functions:
        walk(f.node, False)
    with contextlib.suppress(OSError):
        os.unlink(out)
    return dict(counts)


# ----------------------------------------------------------------------------------------- exports


def constants_to_initializers(model):
    """A copy of ``model`` in which every ``Constant`` node holding a tensor becomes an initializer of
    the graph it lives in (main graph or a Scan/Loop body): the form onnxruntime's quantizer needs
    to see a weight, and to keep quantized weights local to a loop body."""
    import onnx
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)

    def fix(graph):
        keep = []
        for n in graph.node:
            for _, g in _subgraphs(n):
                fix(g)
            value = next((a for a in n.attribute if a.name == "value" and a.type == onnx.AttributeProto.TENSOR), None)
            if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and value is not None:
                t = numpy_helper.from_array(numpy_helper.to_array(value.t), n.output[0])
                graph.initializer.append(t)
            else:
                keep.append(n)
        del graph.node[:]
        graph.node.extend(keep)

    fix(m.graph)
    return m


def _torch_has_rnn(module) -> bool:
    from torch import nn

    return any(isinstance(m, (nn.RNN, nn.GRU, nn.LSTM)) for m in module.modules())


def torch_legacy_export(module, example) -> bytes:
    """torch.onnx.export with the legacy exporter, dynamic batch and time (see FIELD-NOTES: the
    dynamo exporter fixes the sequence length of nn.GRU/LSTM)."""
    import torch

    buf = io.BytesIO()
    with _quiet(), _quiet_fds(), torch.no_grad():
        torch.onnx.export(
            module.eval(),
            (torch.as_tensor(example),),
            buf,
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            opset_version=17,
            dynamic_axes={"x": {0: "batch", 1: "time"}, "y": {0: "batch"}},
        )
    return buf.getvalue()


def _session(model_or_path, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 4
    src = model_or_path if isinstance(model_or_path, (str, bytes)) else model_or_path.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _run(sess, x: np.ndarray, batch: int = 256) -> np.ndarray:
    name = sess.get_inputs()[0].name
    outs = [
        sess.run(None, {name: np.ascontiguousarray(x[s : s + batch], dtype=np.float32)})[0]
        for s in range(0, len(x), batch)
    ]
    return np.concatenate(outs)


class _Reader:
    """onnxruntime CalibrationDataReader over (N, T, F) samples in batches."""

    def __init__(self, x: np.ndarray, name: str, batch: int = 32):
        self.items = [{name: np.ascontiguousarray(x[s : s + batch], dtype=np.float32)} for s in range(0, len(x), batch)]
        self.i = 0

    def get_next(self):
        if self.i >= len(self.items):
            return None
        self.i += 1
        return self.items[self.i - 1]

    def rewind(self):
        self.i = 0


def _reader(x, name):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_Reader, CalibrationDataReader):
        pass

    return Reader(x, name)


def quantize(method: str, src: str, dst: str, calib_x: np.ndarray, input_name: str) -> None:
    """Run one onnxruntime quantization ``method`` (see METHODS) from ``src`` to ``dst``."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    with _quiet():
        if method.startswith("static"):
            quantize_static(
                src,
                dst,
                _reader(calib_x, input_name),
                quant_format=QuantFormat.QDQ,
                per_channel=method == "static_qdq_per_channel",
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                extra_options={"EnableSubgraph": True} if method.endswith("subgraph") else None,
            )
        elif method.startswith("dynamic"):
            quantize_dynamic(
                src,
                dst,
                weight_type=QuantType.QInt8,
                extra_options={"EnableSubgraph": True} if method.endswith("subgraph") else None,
            )
        else:
            raise ConfigError(f"unknown onnxruntime quantization method '{method}'; known: {', '.join(METHODS)}")


# ------------------------------------------------------------------------------------------- main


def _as_graph(graph_or_model, calib_x):
    """(IR graph or None, torch module or None, onnx model or None, capture error or None)."""
    from ..errors import EdgeseqError
    from ..ir.graph import Graph

    if isinstance(graph_or_model, Graph):
        return graph_or_model, None, None, None
    try:
        import onnx

        if isinstance(graph_or_model, onnx.ModelProto):
            return None, None, graph_or_model, None
    except ImportError:  # pragma: no cover
        pass
    if isinstance(graph_or_model, (str, os.PathLike)) and str(graph_or_model).endswith(".onnx"):
        import onnx

        return None, None, onnx.load(str(graph_or_model)), None
    try:
        import torch

        if isinstance(graph_or_model, torch.nn.Module):
            from ..frontends import capture

            try:
                graph = capture(graph_or_model, np.asarray(calib_x[:2], dtype=np.float32))
            except EdgeseqError as e:  # torch's own export may still work: recorded, not raised
                return None, graph_or_model, None, str(e)
            return graph, graph_or_model, None, None
    except ImportError:  # pragma: no cover
        pass
    raise ConfigError(
        f"ort_baseline takes an edgeseq IR Graph, a torch nn.Module or an ONNX model, got "
        f"{type(graph_or_model).__name__}"
    )


def float_exports(
    graph=None, module=None, onnx_model=None, example=None, other_length_x=None, exports=EXPORTS
) -> dict[str, dict]:
    """{export name: {"model": onnx.ModelProto} or {"error": reason}} for the requested export forms."""
    out: dict[str, dict] = {}
    if onnx_model is not None:
        out["given"] = {"model": onnx_model}
        return out
    if graph is not None:
        from ..export.onnx import build_onnx

        kinds = {n.op.kind for n in graph.nodes}
        builders: dict[str, Callable] = {
            "edgeseq_functions": lambda: build_onnx(graph, fused_rnn=False),
            "edgeseq_inline": lambda: build_onnx(graph, inline=True, fused_rnn=False),
            "edgeseq_inline_init": lambda: constants_to_initializers(build_onnx(graph, inline=True, fused_rnn=False)),
        }
        if kinds & {"GRU", "LSTM"}:
            builders["edgeseq_fused"] = lambda: build_onnx(graph, fused_rnn=True)
        for name, make in builders.items():
            if name not in exports:
                continue
            try:
                out[name] = {"model": make()}
            except Exception as e:  # noqa: BLE001 - an export failure is a finding, recorded
                out[name] = {"error": _short(e), "stage": "export"}
    if module is not None and "torch_legacy" in exports and _torch_has_rnn(module):
        import onnx

        try:
            entry: dict[str, Any] = {"model": onnx.load_from_string(torch_legacy_export(module, example))}
            inp = entry["model"].graph.input[0].type.tensor_type.shape.dim
            entry["time_symbolic"] = len(inp) > 1 and bool(inp[1].dim_param)
            if other_length_x is not None:
                import torch

                with torch.no_grad():
                    want = module.eval()(torch.as_tensor(other_length_x)).numpy()
                try:
                    got = _run(_session(entry["model"]), other_length_x)
                    entry["correct_at_other_length"] = bool(np.abs(got - want).max() < 1e-3)
                except Exception as e:  # noqa: BLE001 - a fixed-length graph may refuse other lengths
                    entry["correct_at_other_length"] = False
                    entry["other_length_error"] = _short(e)
            out["torch_legacy"] = entry
        except Exception as e:  # noqa: BLE001 - torch's exporter does not handle every model: recorded
            out["torch_legacy"] = {"error": _short(e), "stage": "export"}
    return out


def ort_baseline(
    graph_or_model,
    calib_x,
    eval_x,
    eval_y,
    workdir,
    *,
    exports=EXPORTS,
    methods=METHODS,
    calib_samples: int = 256,
    log: Callable = lambda *a: None,
    val_x=None,
    val_y=None,
) -> dict:
    """Quantize the float model with onnxruntime's quantizer in every export form and method and
    measure it. ``graph_or_model``: an IR Graph, a torch module (captured; torch's own export is
    added for nn.RNN/GRU/LSTM models) or an ONNX model / path. ``calib_x`` (N, T, F): calibration
    samples (the first ``calib_samples`` are used); ``eval_x``/``eval_y``: evaluation set;
    ``val_x``/``val_y`` (optional): validation data, on which every variant's ``validation_accuracy``
    is measured too, so a best variant can be chosen without looking at the evaluation set.
    Writes the float and quantized models under ``workdir`` and returns a JSON-able dict::

        {"float": {export: {accuracy, bytes, ops, ...} | {error}},
         "variants": [{export, method, status, accuracy, agreement_with_float, max_abs_logit_error,
                       quant_nodes, quant_nodes_in_subgraphs, compute, recurrent_compute,
                       runtime_integer_ops, bytes, error?, stage?}],
         "summary": {...}}
    """
    import onnx

    calib_x = np.asarray(calib_x, dtype=np.float32)
    eval_x = np.asarray(eval_x, dtype=np.float32)
    eval_y = np.asarray(eval_y)
    if calib_x.ndim != 3 or eval_x.ndim != 3 or calib_x.shape[-1] != eval_x.shape[-1]:
        raise ShapeError(
            f"calib_x and eval_x must be (N, T, F) with the same F, got {calib_x.shape} and {eval_x.shape}",
            where="ort_baseline",
        )
    if eval_y.shape != (len(eval_x),):
        raise ShapeError(f"eval_y must have shape ({len(eval_x)},), got {eval_y.shape}", where="ort_baseline")
    bad = sorted(set(methods) - set(METHODS))
    if bad:
        raise ConfigError(f"unknown onnxruntime quantization method(s) {bad}; known: {', '.join(METHODS)}")
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    calib = calib_x[:calib_samples]
    graph, module, given, capture_error = _as_graph(graph_or_model, calib_x)
    other = None
    if module is not None:
        t2 = max(2, calib_x.shape[1] // 2 + 3)
        other = calib_x[:4, :t2]
    t0 = time.perf_counter()
    floats = float_exports(graph, module, given, calib_x[:2], other, exports)
    result: dict[str, Any] = {
        "n_eval": int(len(eval_x)),
        "n_calib": int(len(calib)),
        "steps": int(eval_x.shape[1]),
        "float": {},
        "variants": [],
        "methods": list(methods),
    }
    if graph is not None:
        result["graph"] = {"nodes": [n.op.kind for n in graph.nodes], "parameters": int(graph.num_params())}
    if capture_error:
        result["capture_error"] = capture_error
    if module is not None:
        from ..train.loop import accuracy, predict

        result["torch_accuracy"] = accuracy(predict(module, eval_x), eval_y)
    ref_logits: dict[str, np.ndarray] = {}
    for name, entry in floats.items():
        rec = {k: v for k, v in entry.items() if k != "model"}
        if "model" in entry:
            path = work / f"{name}.float.onnx"
            try:
                onnx.save(entry["model"], str(path))
                logits = _run(_session(str(path)), eval_x)
                ref_logits[name] = logits
                rec.update(
                    {
                        "accuracy": float(np.mean(logits.argmax(-1) == eval_y)),
                        "bytes": path.stat().st_size,
                        "inventory": op_inventory(entry["model"]),
                    }
                )
            except Exception as e:  # noqa: BLE001 - recorded
                rec.update({"error": _short(e), "stage": "float_run"})
        result["float"][name] = rec
        log(f"float {name}: " + (f"accuracy {rec['accuracy']:.4f}" if "accuracy" in rec else rec.get("error", "")))
    for name in floats:
        if name not in ref_logits:
            continue
        src = work / f"{name}.float.onnx"
        input_name = floats[name]["model"].graph.input[0].name
        for method in methods:
            row: dict[str, Any] = {"export": name, "method": method}
            dst = work / f"{name}.{method}.onnx"
            stage = "quantize"
            try:
                quantize(method, str(src), str(dst), calib, input_name)
                qm = onnx.load(str(dst))
                inv = op_inventory(qm)
                row.update(
                    {
                        "quant_nodes": inv["quant_nodes"],
                        "quant_nodes_in_subgraphs": inv["quant_nodes_in_subgraphs"],
                        "quant_nodes_by_scope": inv["quant_nodes_by_scope"],
                        "compute": inv["compute"],
                        "recurrent_compute": inv["recurrent_compute"],
                        "feedforward_compute": inv["feedforward_compute"],
                        "float_compute_ops": inv["float_compute_ops"],
                        "bytes": dst.stat().st_size,
                    }
                )
                stage = "load"
                row["runtime_integer_ops"] = runtime_integer_ops(str(dst))
                sess = _session(str(dst))
                stage = "run"
                logits = _run(sess, eval_x)
                ref = ref_logits[name]
                row.update(
                    {
                        "status": "ok",
                        "accuracy": float(np.mean(logits.argmax(-1) == eval_y)),
                        "agreement_with_float": float(np.mean(logits.argmax(-1) == ref.argmax(-1))),
                        "max_abs_logit_error": float(np.abs(logits - ref).max()),
                    }
                )
                if val_x is not None:
                    vl = _run(sess, np.asarray(val_x, dtype=np.float32))
                    row["validation_accuracy"] = float(np.mean(vl.argmax(-1) == np.asarray(val_y)))
                row["quantized_anything"] = bool(
                    inv["compute"]["integer"] + inv["compute"]["qdq"] + inv["compute"]["weight_qdq"]
                )
                row["quantized_recurrence"] = bool(
                    inv["recurrent_compute"]["integer"]
                    + inv["recurrent_compute"]["qdq"]
                    + inv["recurrent_compute"]["weight_qdq"]
                )
            except Exception as e:  # noqa: BLE001 - a quantizer failure is a finding, recorded with its reason
                row.update({"status": "failed", "stage": stage, "error": _short(e)})
            result["variants"].append(row)
            log(
                f"{name} {method}: "
                + (
                    f"accuracy {row['accuracy']:.4f}, agreement {row['agreement_with_float']:.4f}, "
                    f"quant nodes {row['quant_nodes']}"
                    if row.get("status") == "ok"
                    else f"FAILED at {row['stage']}: {row['error']}"
                )
            )
    ok = [v for v in result["variants"] if v.get("status") == "ok"]
    best = max(ok, key=lambda v: (v["accuracy"], v["quantized_recurrence"]), default=None)
    float_acc = max((r["accuracy"] for r in result["float"].values() if "accuracy" in r), default=None)
    result["summary"] = {
        "float_accuracy": float_acc,
        "variants_ok": len(ok),
        "variants_failed": len(result["variants"]) - len(ok),
        "best": None if best is None else {k: best[k] for k in ("export", "method", "accuracy")},
        "any_recurrence_quantized": any(v["quantized_recurrence"] for v in ok),
        "recurrence_quantized_by": sorted({f"{v['export']}/{v['method']}" for v in ok if v["quantized_recurrence"]}),
        "nothing_quantized": sorted({f"{v['export']}/{v['method']}" for v in ok if not v["quantized_anything"]}),
        "failed": sorted(
            {f"{v['export']}/{v['method']}: {v['error']}" for v in result["variants"] if v.get("status") != "ok"}
        ),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return result


def audit_rows(result: dict, include_float: bool = False) -> list[dict]:
    """``accuracy`` rows of the audit schema (README.md, kind ``ort_baseline``) for every quantized
    variant of an :func:`ort_baseline` result (and the float exports with ``include_float``)."""
    rows = []
    if include_float:
        for k, v in result["float"].items():
            rows.append(
                {
                    "variant": f"ort:{k}/float32",
                    "kind": "float",
                    "accuracy": v.get("accuracy"),
                    "bytes": v.get("bytes"),
                    "status": "ok" if "accuracy" in v else "failed",
                    **({"error": v["error"]} if "error" in v else {}),
                }
            )
    for v in result["variants"]:
        q = v.get("quant_nodes") or {}
        row = {
            "variant": f"ort:{v['export']}/{v['method']}",
            "kind": "ort_baseline",
            "accuracy": v.get("accuracy"),
            "status": v.get("status", "failed"),
        }
        if v.get("agreement_with_float") is not None:
            row["agreement_with_float"] = v["agreement_with_float"]
        if v.get("bytes") is not None:
            row["bytes"] = int(v["bytes"])
        if v.get("status") == "ok":
            rc = v.get("recurrent_compute") or {}
            done = rc.get("integer", 0) + rc.get("qdq", 0) + rc.get("weight_qdq", 0)
            row["note"] = (
                f"{sum(q.values())} quantization nodes "
                f"({v.get('quant_nodes_in_subgraphs', 0)} in loop bodies); "
                f"recurrent matmuls quantized {done}/{rc.get('total', 0)}"
            )
        else:
            row["error"] = f"{v.get('stage', '')}: {v.get('error', '')}"
        rows.append(row)
    return rows
