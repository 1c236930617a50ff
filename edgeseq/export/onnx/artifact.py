"""ONNX artifacts on disk: ``model.onnx`` + ``manifest.json`` + golden vectors.

Layout of an artifact directory::

    model.onnx             the model (see edgeseq.export.onnx.lower for its naming scheme)
    graph.esq              the IR graph it was exported from
    manifest.json          versions, graph summary, input/output/state specs, sha256 of every file,
                           the IR metadata and the measured agreement with the reference
    golden/input.npy       float32 input (B, T, F)
    golden/output_<k>.npy  float64 reference-interpreter output k for that input
    golden/state_<i>.npy   (streaming artifacts) reference state after the input, manifest maps keys

Quantized graphs export to the same layout with ``"numerics": "integer"`` in the manifest (see
:mod:`.quant`): integer state tensors, extra integer outputs (:meth:`OnnxArtifact.run_integer`),
``quantized.esq`` and the integer-exact interpreter's outputs as golden vectors; their QDQ form has
``"numerics": "qdq"`` and the same contract, within the tolerance its manifest states.

Artifacts are written atomically: the directory is complete or absent.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from ... import __version__
from ...errors import ArtifactError, ConfigError, ShapeError
from ...ir.graph import Graph
from ...util.fs import atomic_write_bytes, check_output_dir, output_dir
from ..manifest import open_checked, seal
from .lower import BATCH, STATE_IN, STATE_OUT, TIME, build_onnx, function_summary, state_input_name, state_output_name

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
FORMAT = "edgeseq-onnx"
FORMAT_VERSION = 1


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _session(model, threads: Optional[int] = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads is not None:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    data = model if isinstance(model, (bytes, str)) else model.SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _golden_input(graph: Graph, golden_input, example_seq_len: int) -> np.ndarray:
    from ...ir.interpret import check_input

    if golden_input is None:
        if (
            isinstance(example_seq_len, bool)
            or not isinstance(example_seq_len, (int, np.integer))
            or example_seq_len < 1
        ):
            raise ConfigError(
                f"example_seq_len must be a positive integer, got {example_seq_len!r}", where="export onnx"
            )
        rng = np.random.default_rng(0)
        return rng.standard_normal((2, int(example_seq_len), graph.in_features)).astype(np.float32)
    try:
        x = check_input(graph, golden_input, "golden input")
    except ShapeError as e:
        e.where = e.where or "export onnx: golden_input"
        e.hint = e.hint or f"pass an array of shape (batch, time, {graph.in_features})"
        raise
    return np.asarray(x, dtype=np.float32)


def compare(graph: Graph, got, want) -> list[dict]:
    """Per-output agreement of a runtime with the reference: max abs error, spike mismatches."""
    rows = []
    for k, (g, w) in enumerate(zip(got, want)):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        row = {"output": graph.outputs[k], "max_abs_err": float(np.max(np.abs(g - w))) if g.size else 0.0}
        if graph.output_types[k].spikes:
            row["spike_mismatches"] = int(np.count_nonzero(g != w))
        rows.append(row)
    return rows


def export_onnx(
    graph: Graph,
    out_dir,
    *,
    streaming: bool = False,
    inline: bool = False,
    force: bool = False,
    golden_input=None,
    example_seq_len: int = 50,
    opset: int = 21,
    fused_rnn: bool = True,
) -> "OnnxArtifact":
    """Export ``graph`` to the artifact directory ``out_dir`` (see the module docstring).

    Fails before any work if ``out_dir`` exists and is not empty (unless ``force``) or cannot be
    written (:class:`ArtifactError`). ``golden_input`` (B, T, F) defaults to a seeded random batch of
    ``example_seq_len`` steps; the golden outputs come from the float64 reference interpreter. The
    exported model is run on it with onnxruntime and the agreement is recorded in the manifest.
    ``streaming``, ``inline``, ``opset`` and ``fused_rnn`` are those of :func:`build_onnx`."""
    import onnx
    import onnxruntime

    from ...ir.interpret import run as reference_run

    if not isinstance(graph, Graph):
        raise ConfigError(f"export_onnx expects an edgeseq IR Graph, got {type(graph).__name__}")
    out = check_output_dir(out_dir, force)
    x = _golden_input(graph, golden_input, example_seq_len)
    model = build_onnx(graph, streaming=streaming, inline=inline, opset=opset, fused_rnn=fused_rnn)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:  # pragma: no cover - would be a lowering bug
        raise ArtifactError(
            f"the generated ONNX model is invalid: {e}",
            where=str(out),
            hint="please report this graph: the onnx lowering must always be valid",
        ) from None
    data = model.SerializeToString()
    want, ref_state = reference_run(graph, x.astype(np.float64))

    session = _session(data)
    feeds = {graph.inputs[0].name: x}
    spec = graph.state_spec()
    if streaming:
        feeds.update({state_input_name(k): np.zeros((x.shape[0],) + s, np.float32) for k, s in spec.items()})
    got = session.run([o.name for o in session.get_outputs()][: len(graph.outputs)], feeds)

    fused = {p.key: p.value for p in model.metadata_props}.get("edgeseq.fused_rnn") == "true"
    manifest = _manifest(graph, model, streaming=streaming, inline=inline, fused_rnn=fused)
    manifest["check"] = {
        "runtime": f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider",
        "input": "golden/input.npy",
        "outputs": compare(graph, got, want),
    }
    golden = {
        "input": "golden/input.npy",
        "input_shape": list(x.shape),
        "reference": "edgeseq.ir.interpret.run (float64) on the float32 input",
        "outputs": [f"golden/output_{k}.npy" for k in range(len(want))],
    }
    if streaming:
        golden["state"] = {k: f"golden/state_{i}.npy" for i, k in enumerate(spec)}
    manifest["golden"] = golden

    with output_dir(out, force) as stage:
        atomic_write_bytes(stage / MODEL_FILE, data)
        graph.save(stage / "graph.esq")
        atomic_write_bytes(stage / "golden" / "input.npy", _npy_bytes(x))
        for k, y in enumerate(want):
            atomic_write_bytes(stage / "golden" / f"output_{k}.npy", _npy_bytes(np.asarray(y, np.float64)))
        if streaming:
            for i, k in enumerate(spec):
                atomic_write_bytes(stage / "golden" / f"state_{i}.npy", _npy_bytes(ref_state[k]))
        seal(stage, manifest)
    return OnnxArtifact(out, manifest)


def manifest_base(graph: Graph, model, *, streaming: bool, inline: bool, fused_rnn: bool) -> dict:
    """What every ONNX artifact's manifest holds: format, versions, files, the graph, its input."""
    import onnx
    import onnxruntime

    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": {
            "edgeseq": __version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__,
            "opset": opset,
            "ir_version": model.ir_version,
        },
        "model": MODEL_FILE,
        "ir_graph": "graph.esq",
        "streaming": bool(streaming),
        "inline": bool(inline),
        "fused_rnn": bool(fused_rnn),
        "graph": {
            "in_features": graph.in_features,
            "num_params": graph.num_params(),
            "param_bytes": graph.param_bytes(),
            "nodes": [
                {
                    "name": n.name,
                    "kind": n.op.kind,
                    "inputs": list(n.inputs),
                    "outputs": list(n.outputs),
                    "params": n.op.num_params(),
                }
                for n in graph.nodes
            ],
            "outputs": list(graph.outputs),
            "summary": graph.summary(),
        },
        "functions": function_summary(model),
        "inputs": [{"name": graph.inputs[0].name, "shape": [BATCH, TIME, graph.in_features], "dtype": "float32"}],
        "metadata": _jsonable(dict(graph.metadata)),
    }


def _manifest(graph: Graph, model, *, streaming: bool, inline: bool, fused_rnn: bool) -> dict:
    m = manifest_base(graph, model, streaming=streaming, inline=inline, fused_rnn=fused_rnn)
    m["versions"]["edgeseq_domain"] = 1
    types = graph.output_types
    m["outputs"] = [
        {
            "index": k,
            "name": vi.name,
            "ir_value": name,
            "shape": [BATCH, TIME, t.features] if t.temporal else [BATCH, t.features],
            "dtype": "float32",
            "temporal": t.temporal,
            "spikes": t.spikes,
        }
        for k, (name, vi, t) in enumerate(zip(graph.outputs, model.graph.output, types))
    ]
    state = [
        {
            "key": k,
            "node": k.split("/", 1)[0],
            "state": k.split("/", 1)[1],
            "input": state_input_name(k),
            "output": state_output_name(k),
            "shape": [BATCH, *s],
            "dtype": "float32",
        }
        for k, s in graph.state_spec().items()
    ]
    m["state"] = {
        "scheme": f"input '{STATE_IN}<node>/<state>', output '{STATE_OUT}<node>/<state>', "
        "one pair per entry of graph.state_spec(), batch axis first; zeros start a sequence",
        "input_prefix": STATE_IN,
        "output_prefix": STATE_OUT,
        "tensors": state if streaming else [],
        "graph_state_spec": {k: list(s) for k, s in graph.state_spec().items()},
    }
    return m


class OnnxArtifact:
    """An exported ONNX model directory, run with onnxruntime.

    ``run(x)`` returns the tuple of outputs (numpy float32, one per graph output); a streaming
    artifact's ``run(x, state)`` returns ``(outputs, new_state)`` with the state keyed like
    ``graph.state_spec()`` (``state=None`` starts from zeros)."""

    def __init__(self, path, manifest: Mapping, *, threads: Optional[int] = None):
        self.path = Path(path)
        self.manifest = dict(manifest)
        self.threads = threads
        self._session = None

    @classmethod
    def load(cls, path, *, threads: Optional[int] = None, verify: bool = True) -> "OnnxArtifact":
        """Open an artifact directory; ``verify`` checks every file against its manifest sha256."""
        path = Path(path)
        return cls(path, open_checked(path, "onnx", verify=verify), threads=threads)

    # -- properties --------------------------------------------------------------------------------
    @property
    def streaming(self) -> bool:
        return bool(self.manifest.get("streaming"))

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.get("model", MODEL_FILE)

    @property
    def in_features(self) -> int:
        return int(self.manifest["inputs"][0]["shape"][2])

    @property
    def state_keys(self) -> list[str]:
        return [t["key"] for t in self.manifest["state"]["tensors"]]

    @property
    def session(self):
        """The onnxruntime InferenceSession (CPU), created on first use."""
        if self._session is None:
            try:
                self._session = _session(str(self.model_path), self.threads)
            except Exception as e:  # onnxruntime raises its own exception types
                raise ArtifactError(f"onnxruntime cannot load the model ({e})", where=str(self.model_path)) from None
        return self._session

    @property
    def numerics(self) -> str:
        """'float32', 'integer' for a quantized graph's integer program (see .quant), or 'qdq' for its
        QuantizeLinear/DequantizeLinear model (see .quant: ``run`` returns the model's float32
        outputs, ``run_integer`` its integer outputs)."""
        return str(self.manifest.get("numerics", "float32"))

    def init_state(self, batch: int) -> dict[str, np.ndarray]:
        return {
            t["key"]: np.zeros((batch,) + tuple(t["shape"][1:]), np.dtype(t.get("dtype", "float32")))
            for t in self.manifest["state"]["tensors"]
        }

    # -- execution -------------------------------------------------------------------------------
    def _check_x(self, x) -> np.ndarray:
        x = np.asarray(x)
        f = self.in_features
        if x.ndim != 3 or x.shape[2] != f or x.shape[0] < 1 or x.shape[1] < 1:
            raise ShapeError(
                f"input must have shape (batch, time, {f}) with batch, time >= 1, got {x.shape}", where=str(self.path)
            )
        if x.dtype.kind not in "fiub":
            raise ShapeError(f"input must be numeric, got dtype {x.dtype}", where=str(self.path))
        return np.ascontiguousarray(x, dtype=np.float32)

    def run(self, x, state: Optional[Mapping[str, np.ndarray]] = None, *, model_dequantize: bool = False):
        """Outputs for ``x`` (float32 for a float model). An integer (quantized) artifact returns its
        integer outputs dequantized exactly like the integer-exact interpreter (float64
        ``q * scale``, so they equal the golden outputs bit for bit); ``model_dequantize=True``
        returns the model's own float32 ``DequantizeLinear`` outputs instead."""
        if self.numerics == "integer" and not model_dequantize:
            res = self.run_integer(x, state)
            outs, new_state = res if self.streaming else (res, None)
            ys = tuple(
                np.asarray(q, np.float64) * np.asarray(o["scale"], np.float64).reshape(-1)
                for q, o in zip(outs, self.manifest["outputs"])
            )
            return (ys, new_state) if self.streaming else ys
        return self._run(x, state, [o["name"] for o in self.manifest["outputs"]])

    def run_integer(self, x, state: Optional[Mapping[str, np.ndarray]] = None):
        """A quantized artifact's integer outputs (the program's output vectors, before
        dequantization), like :meth:`run` otherwise."""
        names = [o.get("integer_output") for o in self.manifest["outputs"]]
        if not all(names):
            raise ConfigError(
                "this artifact has no integer outputs (it is a float32 model)",
                where=str(self.path),
                hint="export a quantized graph: edgeseq.export(qgraph, target='onnx', ...)",
            )
        return self._run(x, state, names)

    def _run(self, x, state, out_names: list[str]):
        x = self._check_x(x)
        feeds = {self.manifest["inputs"][0]["name"]: x}
        if not self.streaming:
            if state is not None:
                raise ConfigError(
                    "this artifact takes whole sequences and has no state inputs",
                    where=str(self.path),
                    hint="export with streaming=True for chunked execution",
                )
            return tuple(self.session.run(out_names, feeds))
        tensors = self.manifest["state"]["tensors"]
        if state is None:
            state = self.init_state(x.shape[0])
        keys = {t["key"] for t in tensors}
        if set(state) != keys:
            missing, extra = sorted(keys - set(state)), sorted(set(state) - keys)
            raise ShapeError(
                "state does not match the artifact's state contract"
                + (f"; missing: {', '.join(missing)}" if missing else "")
                + (f"; unexpected: {', '.join(extra)}" if extra else ""),
                where=str(self.path),
            )
        for t in tensors:
            a = np.asarray(state[t["key"]])
            want = (x.shape[0],) + tuple(t["shape"][1:])
            if a.shape != want:
                raise ShapeError(f"state '{t['key']}' must have shape {want}, got {a.shape}", where=str(self.path))
            dtype = np.dtype(t.get("dtype", "float32"))
            if dtype.kind == "i":
                if a.dtype.kind not in "iub":
                    raise ShapeError(
                        f"state '{t['key']}' is integer ({dtype.name}), got dtype {a.dtype}",
                        where=str(self.path),
                        hint="pass the state this artifact returned",
                    )
                info = np.iinfo(dtype)
                if a.size and (int(a.min()) < info.min or int(a.max()) > info.max):
                    raise ShapeError(f"state '{t['key']}' has values outside {dtype.name}", where=str(self.path))
            feeds[t["input"]] = np.ascontiguousarray(a, dtype=dtype)
        res = self.session.run(out_names + [t["output"] for t in tensors], feeds)
        n = len(out_names)
        return tuple(res[:n]), {t["key"]: v for t, v in zip(tensors, res[n:])}

    def verify_golden(self) -> list[dict]:
        """Run the golden input and compare with the stored reference outputs (max abs error and, for
        spiking outputs, the number of mismatching spikes)."""
        g = self.manifest["golden"]
        x = np.load(self.path / g["input"], allow_pickle=False)
        want = [np.load(self.path / p, allow_pickle=False) for p in g["outputs"]]
        got = self.run(x)
        got = got[0] if self.streaming else got
        rows = []
        for k, (a, b) in enumerate(zip(got, want)):
            info = self.manifest["outputs"][k]
            row = {"output": info["ir_value"], "max_abs_err": float(np.max(np.abs(a.astype(np.float64) - b)))}
            if info.get("spikes"):
                row["spike_mismatches"] = int(np.count_nonzero(a != b))
            rows.append(row)
        if g.get("integer_outputs"):
            got_q = self.run_integer(x)
            got_q = got_q[0] if self.streaming else got_q
            for row, a, path in zip(rows, got_q, g["integer_outputs"]):
                b = np.load(self.path / path, allow_pickle=False)
                row["lsb_mismatches"] = int(np.count_nonzero(a.astype(np.int64) != b))
                row["max_lsb_err"] = int(np.max(np.abs(a.astype(np.int64) - b))) if b.size else 0
        return rows

    def __repr__(self) -> str:
        kind = "streaming" if self.streaming else "whole-sequence"
        return f"OnnxArtifact({str(self.path)!r}, {kind})"
