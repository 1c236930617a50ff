"""QDQ ONNX artifacts: ``export_onnx_quantized(q, out, numerics="qdq")``.

The model is :func:`.qdq.build_onnx_qdq` (the float model with QuantizeLinear / DequantizeLinear at
the plan's points, fused into integer kernels by onnxruntime). The artifact has the layout of the
exact integer one (:mod:`.quant`): ``model.onnx``, ``graph.esq``, ``quantized.esq``, ``golden/``
(the integer-exact interpreter's outputs, float and integer, and its state for streaming
artifacts), and a manifest with ``"numerics": "qdq"``, the integer outputs ``q.<name>``, the
program's integer states and ``quantization.tolerance``: the agreement the QDQ model keeps with the
interpreter for this model's family (:data:`.qdq.TOLERANCE`). The export runs the model on the
golden input and records the measured agreement (``check``, with ``within_tolerance``), like the
float export does; it does not refuse to write (QDQ is approximate by design).

``OnnxArtifact.run(x)`` returns the model's own float32 outputs; ``run_integer(x)`` its integer
outputs (``q.<name>``, the quantized values before the final DequantizeLinear).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ... import __version__
from ...errors import ArtifactError, ConfigError
from ...util.fs import atomic_write_bytes, atomic_write_json, check_output_dir, output_dir, sha256_file
from .artifact import FORMAT, FORMAT_VERSION, MANIFEST_FILE, MODEL_FILE, OnnxArtifact, _golden_input, _jsonable, \
    _npy_bytes, _session
from .lower import BATCH, STATE_IN, STATE_OUT, TIME, state_input_name, state_output_name
from .qdq import TOLERANCE, build_onnx_qdq, family_of, spike_probes
from .qlower import INT_OUT, PROBE, output_names

NUMERICS = ("exact", "qdq")


def export_onnx_qdq(q, out_dir, force: bool = False, streaming: bool = False, golden_input=None, *,
                    example_seq_len: int = 50, opset: int = 21) -> OnnxArtifact:
    """Write the QDQ artifact of the quantized graph ``q`` to ``out_dir`` (see the module docstring);
    arguments as :func:`edgeseq.export.onnx.export_onnx_quantized`."""
    import onnx
    import onnxruntime

    from ...quant import intexact
    from .quant import _is_quantized, storage_type_np

    if not _is_quantized(q):
        raise ConfigError(f"export_onnx_quantized expects a quantized graph, got {type(q).__name__}",
                          hint="quantize it first: edgeseq.quant.quantize(graph, calib_x)")
    out = check_output_dir(out_dir, force)
    x = _golden_input(q.graph, golden_input, example_seq_len)
    info: dict = {}
    model = build_onnx_qdq(q, streaming=streaming, opset=opset, info=info)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:  # pragma: no cover - would be a lowering bug
        raise ArtifactError(f"the generated ONNX model is invalid: {e}", where=str(out),
                            hint="please report this quantized graph: the QDQ lowering must always be valid") from None
    data = model.SerializeToString()
    p = q.program
    want_q, want_state, trace = intexact.run(p, q.quantize_input(x), trace=True)
    want = intexact.dequantize_outputs(p, want_q)

    feeds = {q.graph.inputs[0].name: x}
    if streaming:
        feeds.update({state_input_name(k): np.zeros((x.shape[0], s.n), storage_type_np(s.bits))
                      for k, s in p.states.items()})
    onames = output_names(p, q.graph.inputs[0].name)
    n = len(p.outputs)
    res = _session(data).run(onames + [INT_OUT + nm for nm in onames], feeds)
    got, got_q = res[:n], res[n:]
    # spike trains: the same model with every spiking population exposed as an output
    probes = spike_probes(q)
    got_spikes = []
    if probes:
        pm = build_onnx_qdq(q, streaming=streaming, opset=opset, probes=probes)
        got_spikes = _session(pm.SerializeToString()).run([PROBE + s for s in probes], feeds)
    family = family_of(q.graph)
    tol = TOLERANCE["lsb"][family]
    rows = compare(q, got, got_q, want, want_q)
    for r in rows:
        r["within_tolerance"] = r["max_lsb_err"] <= tol and r.get("decision_agreement", 1.0) >= \
            TOLERANCE["decision_agreement"]
    spikes = spike_summary(probes, got_spikes, trace)

    manifest = _manifest(q, model, info, streaming=streaming, family=family)
    manifest["check"] = {"runtime": f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider",
                         "session_options": "onnxruntime defaults (ORT_ENABLE_ALL)",
                         "input": "golden/input.npy", "reference": "edgeseq.quant.intexact.run",
                         "outputs": rows, "spikes": spikes}
    golden = {"input": "golden/input.npy", "input_shape": list(x.shape),
              "reference": "edgeseq.quant.intexact.run (the integer-exact interpreter) on the float32 input",
              "outputs": [f"golden/output_{k}.npy" for k in range(n)],
              "integer_outputs": [f"golden/output_{k}.int.npy" for k in range(n)]}
    if streaming:
        golden["state"] = {k: f"golden/state_{i}.npy" for i, k in enumerate(p.states)}
    manifest["golden"] = golden

    with output_dir(out, force) as stage:
        atomic_write_bytes(stage / MODEL_FILE, data)
        q.graph.save(stage / "graph.esq")
        q.save(stage / "quantized.esq")
        atomic_write_bytes(stage / "golden" / "input.npy", _npy_bytes(x))
        for k in range(n):
            atomic_write_bytes(stage / "golden" / f"output_{k}.npy", _npy_bytes(np.asarray(want[k], np.float64)))
            atomic_write_bytes(stage / "golden" / f"output_{k}.int.npy", _npy_bytes(np.asarray(want_q[k], np.int64)))
        if streaming:
            for i, k in enumerate(p.states):
                atomic_write_bytes(stage / "golden" / f"state_{i}.npy", _npy_bytes(want_state[k]))
        manifest["files"] = {str(f.relative_to(stage)): {"sha256": sha256_file(f), "bytes": f.stat().st_size}
                             for f in sorted(stage.rglob("*")) if f.is_file()}
        atomic_write_json(stage / MANIFEST_FILE, manifest)
    return OnnxArtifact(out, manifest)


def compare(q, got, got_q, want, want_q) -> list[dict]:
    """Per output: integer LSB error against the interpreter, float error, decisions, spikes."""
    types = {n: t for n, t in zip(q.graph.outputs, q.graph.output_types)}
    rows = []
    for o, g, gq, w, wq in zip(q.program.outputs, got, got_q, want, want_q):
        gq64 = np.asarray(gq, np.int64)
        d = np.abs(gq64 - np.asarray(wq, np.int64))
        row = {"output": o.name, "lsb_mismatches": int(np.count_nonzero(d)),
               "mismatch_fraction": float(np.count_nonzero(d) / max(d.size, 1)),
               "max_lsb_err": int(d.max()) if d.size else 0,
               "max_abs_err": float(np.max(np.abs(np.asarray(g, np.float64) - w))) if w.size else 0.0}
        if w.size and w.shape[-1] > 1:
            row["decision_agreement"] = float(np.mean(np.argmax(np.asarray(g, np.float64), -1) == np.argmax(w, -1)))
        t = types.get(o.name)
        if t is not None and t.spikes:
            row["spike_mismatches"] = int(np.count_nonzero(d))
        rows.append(row)
    return rows


def spike_summary(probes, got, trace) -> dict:
    """Spike trains of every spiking population against the interpreter's (identical entries)."""
    pops = {}
    total = bad = 0
    for name, g in zip(probes, got):
        ref = np.asarray(trace[name], np.int64)
        mis = int(np.count_nonzero(np.asarray(g, np.int64) != ref))
        pops[name] = {"spikes": int(ref.sum()), "mismatches": mis, "entries": int(ref.size)}
        total += ref.size
        bad += mis
    return {"populations": pops, "entries": int(total), "mismatches": int(bad),
            "agreement": 1.0 if total == 0 else float(1.0 - bad / total)}


def _products_summary(products: list[dict]) -> dict:
    c = Counter((p["where"], "integer" if p["integer_kernel"] else "float") for p in products)
    return {f"{w}:{k}": v for (w, k), v in sorted(c.items())}


def _manifest(q, model, info: dict, *, streaming: bool, family: str) -> dict:
    import onnx
    import onnxruntime

    from .quant import _dtype_name, _plan_summary, _scale

    graph, p = q.graph, q.program
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    types = {nm: t for nm, t in zip(graph.outputs, graph.output_types)}
    outputs = []
    for k, (o, name) in enumerate(zip(p.outputs, output_names(p, graph.inputs[0].name))):
        t = types.get(o.name)
        n = p.vectors[o.vec].n
        outputs.append({"index": k, "name": name, "ir_value": o.name,
                        "shape": [BATCH, TIME, n] if o.temporal else [BATCH, n], "dtype": "float32",
                        "temporal": bool(o.temporal), "spikes": bool(t.spikes) if t is not None else False,
                        "integer_output": INT_OUT + name, "integer_dtype": _dtype_name(p.vectors[o.vec].bits),
                        "bits": int(p.vectors[o.vec].bits), "scale": _scale(o.scale)})
    state = [{"key": k, "node": k.split("/", 1)[0], "state": k.split("/", 1)[-1],
              "input": state_input_name(k), "output": state_output_name(k), "shape": [BATCH, s.n],
              "dtype": _dtype_name(s.bits), "bits": int(s.bits), "graph_shape": list(s.shape),
              "scale": None if s.scale is None else [float(v) for v in np.ravel(s.scale)]}
             for k, s in p.states.items()]
    quantizers = [{"vector": s.vec, "channels": [int(c) for c in s.channels], "bits": int(s.bits),
                   "scale": [float(v) for v in s.scale], "offset": [float(v) for v in s.offset],
                   "rule": "q = QuantizeLinear((float32(x[c]) - offset) * inv_scale) (half to even, saturating)"}
                  for s in p.inputs]

    def walk(g, where, acc):
        for nd in g.node:
            acc[where][nd.op_type] += 1
            for a in nd.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g, "scan", acc)
        return acc

    ops = walk(model.graph, "sequence", {"sequence": Counter(), "scan": Counter()})
    tol = dict(TOLERANCE)
    tol["family"] = family
    tol["max_lsb"] = TOLERANCE["lsb"][family]
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "numerics": "qdq",
        "versions": {"edgeseq": __version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                     "numpy": np.__version__, "opset": opset, "ir_version": model.ir_version},
        "model": MODEL_FILE, "ir_graph": "graph.esq", "quantized_graph": "quantized.esq",
        "streaming": bool(streaming), "inline": True, "fused_rnn": False,
        "graph": {
            "in_features": graph.in_features, "num_params": graph.num_params(), "param_bytes": graph.param_bytes(),
            "nodes": [{"name": nd.name, "kind": nd.op.kind, "inputs": list(nd.inputs), "outputs": list(nd.outputs),
                       "params": nd.op.num_params()} for nd in graph.nodes],
            "outputs": list(graph.outputs), "summary": graph.summary(),
        },
        "quantization": {
            "plan": _plan_summary(q),
            "program": {"micro_ops_per_step": len(p.step), "final_micro_ops": len(p.final),
                        "op_counts": p.op_counts(), "sizes": q.sizes(), "metadata": _jsonable(p.metadata)},
            "family": family,
            "tolerance": tol,
        },
        "lowering": {
            "scheme": "float model + QuantizeLinear/DequantizeLinear at the plan's points (edgeseq.export.onnx.qdq); "
                      "onnxruntime fuses DequantizeLinear(int8) x DequantizeLinear(int8 weight) Gemms into QGemm",
            "fusion": "onnxruntime graph optimization level ORT_ENABLE_EXTENDED or ORT_ENABLE_ALL (the default); "
                      "ORT_ENABLE_BASIC runs every product in float",
            "products": _products_summary(info.get("products", [])),
            "product_list": _jsonable(info.get("products", [])),
            "points": info.get("points", {}),
            "inexact_weights": info.get("inexact_weights", []),
            "op_types": {k: dict(sorted(v.items())) for k, v in ops.items()},
            "model_bytes": model.ByteSize(),
        },
        "functions": [],
        "inputs": [{"name": graph.inputs[0].name, "shape": [BATCH, TIME, graph.in_features], "dtype": "float32",
                    "quantizers": quantizers}],
        "outputs": outputs,
        "state": {
            "scheme": f"input '{STATE_IN}<key>', output '{STATE_OUT}<key>', one pair per state of the integer "
                      "program (flat (batch, n), its declared storage type); zeros start a sequence",
            "input_prefix": STATE_IN, "output_prefix": STATE_OUT,
            "tensors": state if streaming else [],
            "program_states": {k: {"n": s.n, "dtype": _dtype_name(s.bits), "bits": int(s.bits)}
                               for k, s in p.states.items()},
        },
        "metadata": _jsonable(dict(graph.metadata)),
    }
