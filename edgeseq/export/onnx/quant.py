"""Quantized ONNX artifacts: the integer program of a quantized graph as an onnxruntime model.

    qg = edgeseq.quant.quantize(graph, calib_x, "edgeseq")
    art = export_onnx_quantized(qg, "out/gru_int8")          # model.onnx, manifest.json, golden/
    y, = OnnxArtifact.load("out/gru_int8").run(x)             # dequantized exactly as qg.run(x) (float64)
    q, = OnnxArtifact.load("out/gru_int8").run_integer(x)     # the integers themselves
    art = export_onnx_quantized(qg, "out/gru_qdq", numerics="qdq")   # QDQ model instead (see .qdq)

The model is lowered from ``qg.program`` by :mod:`.qlower`: int8 weights (the plan's per-channel
symmetric weights, exactly the program's constants) feed ``MatMulInteger`` kernels, activations
and states are integer tensors at the plan's widths and scales, and every other micro-op is a
short chain of standard integer ONNX ops with the exact semantics of ``edgeseq/quant/README.md``.
The exported model therefore reproduces the integer-exact interpreter bit for bit: the export
runs it on the golden input and refuses to write an artifact whose integers differ.

Layout of the artifact directory (in addition to the float artifact's, see :mod:`.artifact`)::

    model.onnx                 integer model: float input, float outputs (DequantizeLinear) plus
                               integer outputs 'q.<name>'; streaming: integer state in/out
    graph.esq                  the prepared float graph the program implements
    quantized.esq              the quantized graph (plan + program), edgeseq.quant.load_quantized
    golden/input.npy           float32 input
    golden/output_<k>.npy      float64 dequantized outputs of the integer-exact interpreter
    golden/output_<k>.int.npy  its integer outputs (int64)
    golden/state_<i>.npy       (streaming) its integer state after the input
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
from .qlower import INT_OUT, build_onnx_quantized, output_names

_DTYPE_NAMES = {np.dtype(np.int8): "int8", np.dtype(np.int16): "int16", np.dtype(np.int32): "int32",
                np.dtype(np.int64): "int64"}

TOLERANCE = {
    "integer_outputs": "exact: every integer output and state equals the integer-exact interpreter "
                       "(edgeseq.quant.intexact.run) bit for bit (0 LSB) for every model family",
    "float_outputs": "OnnxArtifact.run: q * scale in float64, identical to the interpreter's dequantized outputs; "
                     "the model's own float32 outputs (DequantizeLinear): |y - q*scale| <= 2^-23 |q*scale| "
                     "(one float32 rounding)",
    "decisions": "argmax of the float outputs equals the interpreter's (ties resolve identically)",
}


def _dtype_name(bits: int) -> str:
    from ...quant.program import storage_dtype

    return _DTYPE_NAMES[np.dtype(storage_dtype(bits))]


def _is_quantized(q) -> bool:
    return hasattr(q, "program") and hasattr(q, "plan") and hasattr(q, "graph")


def export_onnx_quantized(q, out_dir, force: bool = False, streaming: bool = False, golden_input=None, *,
                          example_seq_len: int = 50, opset: int = 21, expand_tables="auto",
                          numerics: str = "exact") -> OnnxArtifact:
    """Export the quantized graph ``q`` (:class:`~edgeseq.quant.QuantizedGraph`) to ``out_dir``.

    ``numerics``: 'exact' (default) lowers the integer program, bit-exact (this module);
    'qdq' writes the float model with QuantizeLinear / DequantizeLinear pairs at the plan's points
    that onnxruntime fuses into integer kernels, within a stated tolerance of the integer program
    (:mod:`.qdqexport`; ``expand_tables`` does not apply).

    Fails before any work if ``out_dir`` exists and is not empty (unless ``force``) or cannot be
    written (:class:`ArtifactError`), and with :class:`UnsupportedOpError` (naming the micro-op and
    the IR node) if the program holds a micro-op this backend cannot lower. ``golden_input``
    (B, T, F) defaults to a seeded random batch of ``example_seq_len`` steps; its golden outputs
    are the integer-exact interpreter's. ``streaming=True`` exports a chunk-at-a-time model with the
    program's integer states as inputs and outputs. ``expand_tables`` (True / False / 'auto':
    within 1 MiB) stores interpolated int16 tables evaluated at each possible input (one
    ``Gather`` per lookup instead of the interpolation; same integers, larger file)."""
    import onnx
    import onnxruntime

    from ...quant import intexact

    if numerics == "qdq":
        from .qdqexport import export_onnx_qdq

        return export_onnx_qdq(q, out_dir, force, streaming, golden_input, example_seq_len=example_seq_len,
                               opset=opset)
    if numerics != "exact":
        raise ConfigError(f"unknown ONNX numerics '{numerics}'; choose 'exact' (the integer program, bit-exact) "
                          "or 'qdq' (QuantizeLinear/DequantizeLinear for onnxruntime's integer kernels)",
                          where="export onnx")
    if not _is_quantized(q):
        raise ConfigError(f"export_onnx_quantized expects a quantized graph, got {type(q).__name__}",
                          hint="quantize it first: edgeseq.quant.quantize(graph, calib_x)")
    out = check_output_dir(out_dir, force)
    x = _golden_input(q.graph, golden_input, example_seq_len)
    info: dict = {}
    model = build_onnx_quantized(q, streaming=streaming, opset=opset, expand_tables=expand_tables, info=info)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:  # pragma: no cover - would be a lowering bug
        raise ArtifactError(f"the generated ONNX model is invalid: {e}", where=str(out),
                            hint="please report this quantized graph: the integer lowering must always be valid") \
            from None
    data = model.SerializeToString()
    p = q.program
    want_q, want_state = intexact.run(p, q.quantize_input(x))
    want = intexact.dequantize_outputs(p, want_q)

    session = _session(data)
    feeds = {q.graph.inputs[0].name: x}
    if streaming:
        feeds.update({state_input_name(k): np.zeros((x.shape[0], s.n), storage_type_np(s.bits))
                      for k, s in p.states.items()})
    onames = output_names(p, q.graph.inputs[0].name)
    names = onames + [INT_OUT + nm for nm in onames]
    if streaming:
        names += [state_output_name(k) for k in p.states]
    res = session.run(names, feeds)
    n = len(p.outputs)
    got, got_q = res[:n], res[n:2 * n]
    rows = _compare(q, got, got_q, want, want_q)
    bad = [r for r in rows if r["lsb_mismatches"]]
    if streaming:
        for k, v in zip(p.states, res[2 * n:]):
            if not np.array_equal(np.asarray(v, np.int64), want_state[k]):
                bad.append({"output": f"state {k}"})
    if bad:
        raise ArtifactError(
            f"onnxruntime {onnxruntime.__version__} does not reproduce the integer program on the golden input "
            f"({', '.join(r['output'] for r in bad)} differ); nothing was written", where=str(out),
            hint="report the model and this machine's CPU: an integer kernel of this onnxruntime build is not exact")

    manifest = _manifest(q, model, info, streaming=streaming, expand_tables=expand_tables)
    manifest["check"] = {"runtime": f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider",
                         "input": "golden/input.npy", "reference": "edgeseq.quant.intexact.run",
                         "outputs": rows}
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


def storage_type_np(bits: int):
    from ...quant.program import storage_dtype

    return storage_dtype(bits)


def _compare(q, got, got_q, want, want_q) -> list[dict]:
    """Per output: integer mismatches and max LSB error, float error, argmax agreement, spikes."""
    types = {n: t for n, t in zip(q.graph.outputs, q.graph.output_types)}
    rows = []
    for o, g, gq, w, wq in zip(q.program.outputs, got, got_q, want, want_q):
        gq64 = np.asarray(gq, np.int64)
        exact = gq64.astype(np.float64) * o.scale  # what OnnxArtifact.run returns
        rel = np.abs(np.asarray(g, np.float64) - w) / np.maximum(np.abs(w), np.finfo(np.float64).tiny)
        row = {"output": o.name, "lsb_mismatches": int(np.count_nonzero(gq64 != wq)),
               "max_lsb_err": int(np.max(np.abs(gq64 - wq))) if wq.size else 0,
               "max_abs_err": float(np.max(np.abs(exact - w))) if w.size else 0.0,
               "model_float32_max_rel_err": float(np.max(rel)) if w.size else 0.0}
        if w.size and w.shape[-1] > 1:
            row["decision_agreement"] = float(np.mean(np.argmax(exact, -1) == np.argmax(w, -1)))
        t = types.get(o.name)
        if t is not None and t.spikes:
            row["spike_mismatches"] = int(np.count_nonzero(gq64 != wq))
        rows.append(row)
    return rows


def _scale(scale):
    """One float for a per-tensor scale (what validators read as the output LSB), else the list."""
    v = [float(x) for x in np.ravel(scale)]
    return v[0] if len(set(v)) == 1 else v


def _plan_summary(q) -> dict:
    plan = q.plan
    by = Counter(f"{e.role}:int{e.bits}" for e in plan.entries.values())
    return {
        "config": plan.config.name,
        "points_by_role_and_bits": dict(sorted(by.items())),
        "points": [{"name": e.name, "role": e.role, "bits": int(e.bits), "granularity": e.granularity,
                    "scale_min": float(np.min(e.scale)), "scale_max": float(np.max(e.scale))}
                   for e in plan.entries.values()],
        "weights": [{"name": w.name, "bits": int(w.bits), "granularity": w.granularity, "shape": list(w.shape),
                     "sqnr_db": None if not np.isfinite(w.sqnr_db) else float(w.sqnr_db)}
                    for w in plan.weights.values()],
        "outliers": _jsonable(plan.outliers),
        "search": _jsonable(q.info.get("search")) if q.info.get("search") else None,
    }


def _manifest(q, model, info: dict, *, streaming: bool, expand_tables: bool) -> dict:
    import onnx
    import onnxruntime

    graph, p = q.graph, q.program
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    types = {n: t for n, t in zip(graph.outputs, graph.output_types)}
    outputs = []
    for k, (o, name) in enumerate(zip(p.outputs, output_names(p, graph.inputs[0].name))):
        t = types.get(o.name)
        n = p.vectors[o.vec].n
        shape = [BATCH, TIME, n] if o.temporal else [BATCH, n]
        outputs.append({"index": k, "name": name, "ir_value": o.name, "shape": shape, "dtype": "float32",
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
                   "rule": "q = clip(rint((float(x[c]) - offset) * inv_scale), -2^(bits-1), 2^(bits-1)-1) in float32"}
                  for s in p.inputs]
    kinds = Counter(n.op_type for n in model.graph.node)
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "numerics": "integer",
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
            "tolerance": TOLERANCE,
        },
        "lowering": {
            "scheme": "integer program -> standard ONNX integer ops (edgeseq.export.onnx.qlower)",
            "stages": _jsonable(info.get("stages", [])), "kernels": info.get("kernels", {}),
            "expand_tables": expand_tables, "main_graph_op_types": dict(sorted(kinds.items())),
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
