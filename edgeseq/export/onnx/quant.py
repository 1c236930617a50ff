"""Quantized ONNX artifacts: a quantized graph's integer program (``numerics="exact"``, the
default) or its QDQ model (``numerics="qdq"``) as an onnxruntime model.

    qg = edgeseq.quant.quantize(graph, calib_x, "edgeseq")
    art = export_onnx_quantized(qg, "out/gru_int8")          # model.onnx, manifest.json, golden/
    y, = OnnxArtifact.load("out/gru_int8").run(x)             # dequantized exactly as qg.run(x) (float64)
    q, = OnnxArtifact.load("out/gru_int8").run_integer(x)     # the integers themselves
    art = export_onnx_quantized(qg, "out/gru_qdq", numerics="qdq")

'exact': the model is lowered from ``qg.program`` by :mod:`.qlower`: int8 weights (the plan's
per-channel symmetric weights, exactly the program's constants) feed ``MatMulInteger`` kernels,
activations and states are integer tensors at the plan's widths and scales, and every other
micro-op is a short chain of standard integer ONNX ops with the exact semantics of
``edgeseq/quant/README.md``. The model reproduces the integer-exact interpreter bit for bit: the
export runs it on the golden input and refuses to write an artifact whose integers differ.

'qdq': the float model with QuantizeLinear / DequantizeLinear at the plan's points (:mod:`.qdq`),
fused by onnxruntime into integer kernels; approximate by design, within the tolerance its
manifest states for the model's family (``quantization.tolerance``). The export runs it on the
golden input and records the measured agreement and the spike trains of every population
(``check``, with ``within_tolerance``); it does not refuse to write. ``run(x)`` returns the model's
own float32 outputs.

Layout of the artifact directory (in addition to the float artifact's, see :mod:`.artifact`)::

    model.onnx                 float input, float outputs (DequantizeLinear) plus integer outputs
                               'q.<name>'; streaming: the program's integer states in/out
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

from ...errors import ArtifactError, ConfigError
from ...util.fs import atomic_write_bytes, check_output_dir, output_dir
from ..manifest import seal
from .artifact import MODEL_FILE, OnnxArtifact, _golden_input, _jsonable, _npy_bytes, _session, manifest_base
from .lower import STATE_IN, STATE_OUT, state_input_name, state_output_name
from .qdq import TOLERANCE as QDQ_TOLERANCE
from .qdq import build_onnx_qdq, spike_probes, tolerance_key
from .qlower import INT_OUT, PROBE, build_onnx_quantized, output_names

NUMERICS = ("exact", "qdq")
_DTYPE_NAMES = {
    np.dtype(np.int8): "int8",
    np.dtype(np.int16): "int16",
    np.dtype(np.int32): "int32",
    np.dtype(np.int64): "int64",
}

TOLERANCE = {
    "integer_outputs": "exact: every integer output and state equals the integer-exact interpreter "
    "(edgeseq.quant.intexact.run) bit for bit (0 LSB) for every model family",
    "float_outputs": "OnnxArtifact.run: q * scale in float64, identical to the interpreter's dequantized outputs; "
    "the model's own float32 outputs (DequantizeLinear): |y - q*scale| <= 2^-23 |q*scale| "
    "(one float32 rounding)",
    "decisions": "argmax of the float outputs equals the interpreter's (ties resolve identically)",
}


def storage_type_np(bits: int):
    from ...quant.program import storage_dtype

    return storage_dtype(bits)


def _dtype_name(bits: int) -> str:
    return _DTYPE_NAMES[np.dtype(storage_type_np(bits))]


def _is_quantized(q) -> bool:
    return hasattr(q, "program") and hasattr(q, "plan") and hasattr(q, "graph")


def export_onnx_quantized(
    q,
    out_dir,
    force: bool = False,
    streaming: bool = False,
    golden_input=None,
    *,
    example_seq_len: int = 50,
    opset: int = 21,
    expand_tables="auto",
    numerics: str = "exact",
    fused_rnn: bool = False,
) -> OnnxArtifact:
    """Export the quantized graph ``q`` (:class:`~edgeseq.quant.QuantizedGraph`) to ``out_dir``.

    ``numerics``: 'exact' (default) the integer program, bit-exact; 'qdq' the QDQ model within a
    stated tolerance (see the module docstring; ``expand_tables`` applies to 'exact' only).
    ``fused_rnn`` ('qdq' only): LSTMs run on onnxruntime's quantized LSTM kernel, one node per
    sequence instead of a ``Scan`` (faster, within the wider ``recurrent_fused`` tolerance).

    Fails before any work if ``out_dir`` exists and is not empty (unless ``force``) or cannot be
    written (:class:`ArtifactError`), and with :class:`UnsupportedOpError` (naming the op or micro-op
    and the IR node) for what the lowering cannot handle. ``golden_input`` (B, T, F) defaults to a
    seeded random batch of ``example_seq_len`` steps; its golden outputs are the integer-exact
    interpreter's. ``streaming=True`` exports a chunk-at-a-time model with the program's integer
    states as inputs and outputs. ``expand_tables`` (True / False / 'auto': within 1 MiB) stores
    interpolated int16 tables evaluated at each possible input (one ``Gather`` per lookup instead of
    the interpolation; same integers, larger file)."""
    import onnx
    import onnxruntime

    from ...quant import intexact

    if numerics not in NUMERICS:
        raise ConfigError(
            f"unknown ONNX numerics '{numerics}'; choose 'exact' (the integer program, bit-exact) "
            "or 'qdq' (QuantizeLinear/DequantizeLinear for onnxruntime's integer kernels)",
            where="export onnx",
        )
    if not _is_quantized(q):
        raise ConfigError(
            f"export_onnx_quantized expects a quantized graph, got {type(q).__name__}",
            hint="quantize it first: edgeseq.quant.quantize(graph, calib_x)",
        )
    qdq = numerics == "qdq"
    out = check_output_dir(out_dir, force)
    x = _golden_input(q.graph, golden_input, example_seq_len)
    info: dict = {}
    model = (
        build_onnx_qdq(q, streaming=streaming, opset=opset, info=info, fused_rnn=fused_rnn)
        if qdq
        else build_onnx_quantized(q, streaming=streaming, opset=opset, expand_tables=expand_tables, info=info)
    )
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:  # pragma: no cover - would be a lowering bug
        raise ArtifactError(
            f"the generated ONNX model is invalid: {e}",
            where=str(out),
            hint="please report this quantized graph: the lowering must always be valid",
        ) from None
    data = model.SerializeToString()
    p = q.program
    want_q, want_state, trace = intexact.run(p, q.quantize_input(x), trace=True)
    want = intexact.dequantize_outputs(p, want_q)

    feeds = {q.graph.inputs[0].name: x}
    if streaming:
        feeds.update(
            {state_input_name(k): np.zeros((x.shape[0], s.n), storage_type_np(s.bits)) for k, s in p.states.items()}
        )
    onames = output_names(p, q.graph.inputs[0].name)
    n = len(p.outputs)
    res = _session(data).run(
        onames + [INT_OUT + nm for nm in onames] + ([state_output_name(k) for k in p.states] if streaming else []),
        feeds,
    )
    rows = compare(q, res[:n], res[n : 2 * n], want, want_q, exact=not qdq)
    check = {
        "runtime": f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider",
        "input": "golden/input.npy",
        "reference": "edgeseq.quant.intexact.run",
        "outputs": rows,
    }
    if qdq:
        family = tolerance_key(q.graph, info)
        tol = dict(QDQ_TOLERANCE, family=family, max_lsb=QDQ_TOLERANCE["lsb"][family])
        agree = tol["fused_decision_agreement" if family == "recurrent_fused" else "decision_agreement"]
        for r in rows:
            r["within_tolerance"] = r["max_lsb_err"] <= tol["max_lsb"] and r.get("decision_agreement", 1.0) >= agree
        probes = spike_probes(q)  # the same model with every spiking population exposed
        got = (
            _session(
                build_onnx_qdq(
                    q, streaming=streaming, opset=opset, probes=probes, fused_rnn=fused_rnn
                ).SerializeToString()
            ).run([PROBE + s for s in probes], feeds)
            if probes
            else []
        )
        check.update(session_options="onnxruntime defaults (ORT_ENABLE_ALL)", spikes=spike_summary(probes, got, trace))
    else:
        tol = TOLERANCE
        bad = [r["output"] for r in rows if r["lsb_mismatches"]]
        bad += [
            f"state {k}"
            for k, v in zip(p.states, res[2 * n :])
            if not np.array_equal(np.asarray(v, np.int64), want_state[k])
        ]
        if bad:
            raise ArtifactError(
                f"onnxruntime {onnxruntime.__version__} does not reproduce the integer program on the golden input "
                f"({', '.join(bad)} differ); nothing was written",
                where=str(out),
                hint="report the model and this machine's CPU: an integer kernel of this onnxruntime build is not "
                "exact",
            )

    manifest = _manifest(
        q, model, info, numerics=numerics, streaming=streaming, tolerance=tol, expand_tables=expand_tables
    )
    manifest["check"] = check
    golden = {
        "input": "golden/input.npy",
        "input_shape": list(x.shape),
        "reference": "edgeseq.quant.intexact.run (the integer-exact interpreter) on the float32 input",
        "outputs": [f"golden/output_{k}.npy" for k in range(n)],
        "integer_outputs": [f"golden/output_{k}.int.npy" for k in range(n)],
    }
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
        seal(stage, manifest)
    return OnnxArtifact(out, manifest)


def compare(q, got, got_q, want, want_q, *, exact: bool) -> list[dict]:
    """Per output against the interpreter: integer mismatches and max LSB error, the error of what
    ``OnnxArtifact.run`` returns (q * scale for 'exact', the model's float32 for 'qdq'), argmax
    agreement, spikes."""
    types = {n: t for n, t in zip(q.graph.outputs, q.graph.output_types)}
    rows = []
    for o, g, gq, w, wq in zip(q.program.outputs, got, got_q, want, want_q):
        gq64 = np.asarray(gq, np.int64)
        d = np.abs(gq64 - np.asarray(wq, np.int64))
        y = gq64.astype(np.float64) * o.scale if exact else np.asarray(g, np.float64)
        rel = np.abs(np.asarray(g, np.float64) - w) / np.maximum(np.abs(w), np.finfo(np.float64).tiny)
        row = {
            "output": o.name,
            "lsb_mismatches": int(np.count_nonzero(d)),
            "mismatch_fraction": float(np.count_nonzero(d) / max(d.size, 1)),
            "max_lsb_err": int(d.max()) if d.size else 0,
            "max_abs_err": float(np.max(np.abs(y - w))) if w.size else 0.0,
            "model_float32_max_rel_err": float(np.max(rel)) if w.size else 0.0,
        }
        if w.size and w.shape[-1] > 1:
            row["decision_agreement"] = float(np.mean(np.argmax(y, -1) == np.argmax(w, -1)))
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
    return {
        "populations": pops,
        "entries": int(total),
        "mismatches": int(bad),
        "agreement": 1.0 if total == 0 else float(1.0 - bad / total),
    }


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
        "points": [
            {
                "name": e.name,
                "role": e.role,
                "bits": int(e.bits),
                "granularity": e.granularity,
                "scale_min": float(np.min(e.scale)),
                "scale_max": float(np.max(e.scale)),
            }
            for e in plan.entries.values()
        ],
        "weights": [
            {
                "name": w.name,
                "bits": int(w.bits),
                "granularity": w.granularity,
                "shape": list(w.shape),
                "sqnr_db": None if not np.isfinite(w.sqnr_db) else float(w.sqnr_db),
            }
            for w in plan.weights.values()
        ],
        "outliers": _jsonable(plan.outliers),
        "search": _jsonable(q.info.get("search")) if q.info.get("search") else None,
    }


def _lowering(model, info: dict, numerics: str, expand_tables) -> dict:
    import onnx

    def walk(g, where, acc):
        for nd in g.node:
            acc[where][nd.op_type] += 1
            for a in nd.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g, "scan", acc)
        return acc

    if numerics == "exact":
        return {
            "scheme": "integer program -> standard ONNX integer ops (edgeseq.export.onnx.qlower)",
            "stages": _jsonable(info.get("stages", [])),
            "kernels": info.get("kernels", {}),
            "expand_tables": expand_tables,
            "main_graph_op_types": dict(sorted(Counter(n.op_type for n in model.graph.node).items())),
            "model_bytes": model.ByteSize(),
        }
    products = Counter((p["where"], "integer" if p["integer_kernel"] else "float") for p in info.get("products", []))
    ops = walk(model.graph, "sequence", {"sequence": Counter(), "scan": Counter()})
    return {
        "scheme": "float model + QuantizeLinear/DequantizeLinear at the plan's points (edgeseq.export.onnx.qdq); "
        "onnxruntime fuses DequantizeLinear(int8) x DequantizeLinear(int8 weight) Gemms into QGemm",
        "fusion": "onnxruntime graph optimization level ORT_ENABLE_EXTENDED or ORT_ENABLE_ALL (the default); "
        "ORT_ENABLE_BASIC runs every product in float",
        "products": {f"{w}:{k}": v for (w, k), v in sorted(products.items())},
        "product_list": _jsonable(info.get("products", [])),
        "points": info.get("points", {}),
        "inexact_weights": info.get("inexact_weights", []),
        "op_types": {k: dict(sorted(v.items())) for k, v in ops.items()},
        "model_bytes": model.ByteSize(),
    }


def _manifest(q, model, info: dict, *, numerics: str, streaming: bool, tolerance: dict, expand_tables) -> dict:
    graph, p = q.graph, q.program
    types = {nm: t for nm, t in zip(graph.outputs, graph.output_types)}
    outputs = []
    for k, (o, name) in enumerate(zip(p.outputs, output_names(p, graph.inputs[0].name))):
        t = types.get(o.name)
        n = p.vectors[o.vec].n
        outputs.append(
            {
                "index": k,
                "name": name,
                "ir_value": o.name,
                "shape": [*_dims(o.temporal), n],
                "dtype": "float32",
                "temporal": bool(o.temporal),
                "spikes": bool(t.spikes) if t is not None else False,
                "integer_output": INT_OUT + name,
                "integer_dtype": _dtype_name(p.vectors[o.vec].bits),
                "bits": int(p.vectors[o.vec].bits),
                "scale": _scale(o.scale),
            }
        )
    state = [
        {
            "key": k,
            "node": k.split("/", 1)[0],
            "state": k.split("/", 1)[-1],
            "input": state_input_name(k),
            "output": state_output_name(k),
            "shape": ["batch", s.n],
            "dtype": _dtype_name(s.bits),
            "bits": int(s.bits),
            "graph_shape": list(s.shape),
            "scale": None if s.scale is None else [float(v) for v in np.ravel(s.scale)],
        }
        for k, s in p.states.items()
    ]
    rule = (
        "q = QuantizeLinear((float32(x[c]) - offset) * inv_scale) (half to even, saturating)"
        if numerics == "qdq"
        else "q = clip(rint((float(x[c]) - offset) * inv_scale), -2^(bits-1), 2^(bits-1)-1) in float32"
    )
    m = manifest_base(graph, model, streaming=streaming, inline=True, fused_rnn=False)
    m["inputs"][0]["quantizers"] = [
        {
            "vector": s.vec,
            "channels": [int(c) for c in s.channels],
            "bits": int(s.bits),
            "scale": [float(v) for v in s.scale],
            "offset": [float(v) for v in s.offset],
            "rule": rule,
        }
        for s in p.inputs
    ]
    m.update(
        {
            "numerics": "qdq" if numerics == "qdq" else "integer",
            "quantized_graph": "quantized.esq",
            "quantization": {
                "plan": _plan_summary(q),
                "program": {
                    "micro_ops_per_step": len(p.step),
                    "final_micro_ops": len(p.final),
                    "op_counts": p.op_counts(),
                    "sizes": q.sizes(),
                    "metadata": _jsonable(p.metadata),
                },
                "tolerance": tolerance,
                **({"family": tolerance["family"]} if "family" in tolerance else {}),
            },
            "lowering": _lowering(model, info, numerics, expand_tables),
            "functions": [],
            "outputs": outputs,
            "state": {
                "scheme": f"input '{STATE_IN}<key>', output '{STATE_OUT}<key>', one pair per state of the integer "
                "program (flat (batch, n), its declared storage type); zeros start a sequence",
                "input_prefix": STATE_IN,
                "output_prefix": STATE_OUT,
                "tensors": state if streaming else [],
                "program_states": {
                    k: {"n": s.n, "dtype": _dtype_name(s.bits), "bits": int(s.bits)} for k, s in p.states.items()
                },
            },
        }
    )
    return m


def _dims(temporal: bool) -> list:
    return ["batch", "time"] if temporal else ["batch"]
