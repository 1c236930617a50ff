"""Safe IR files: one zip holding ``graph.json`` (structure, attributes, schema version, array
hashes) and one ``.npy`` per parameter array. Nothing is ever unpickled; arrays are loaded with
``allow_pickle=False`` and checked against their recorded dtype, shape and SHA-256.

Round trip is exact: attributes are JSON (floats in shortest-repr form), arrays keep dtype and bits.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import io
import json
import math
import typing
import zipfile
from dataclasses import fields
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from .._version import __version__
from ..errors import ConfigError, EdgeseqError, IRFormatError
from ..util import schema as S
from ..util.fs import as_path, atomic_write_bytes
from ..util.safeio import Budget, SafeZip, human
from ..util.schema import validate
from .graph import Graph, Input, Node
from .ops import Struct, op_class

FORMAT = "edgeseq-ir"
SCHEMA_VERSION = 1
SUFFIX = ".esq"


def _encode_struct(obj: Struct, key_prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    refs: dict[str, str] = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        kind = f.metadata.get("kind")
        if kind == "array":
            if v is not None:
                key = f"{key_prefix}{f.name}"
                arrays[key] = v
                refs[f.name] = key
        elif kind == "struct":
            attrs[f.name] = None if v is None else _encode_struct(v, f"{key_prefix}{f.name}.", arrays)
        elif kind == "program":
            for k, a in v.params.items():
                arrays[f"{key_prefix}{f.name}.{k}"] = a
            attrs[f.name] = {"program": v.to_json(), "array_prefix": f"{key_prefix}{f.name}."}
        elif isinstance(v, enum.Enum):
            attrs[f.name] = v.value
        else:
            attrs[f.name] = v
    return {"attrs": attrs, "arrays": refs}


def _encode_nodes(graph: Graph) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The JSON entries of the graph's nodes and the arrays they reference (by key)."""
    arrays: dict[str, np.ndarray] = {}
    nodes = []
    for i, n in enumerate(graph.nodes):
        enc = _encode_struct(n.op, f"n{i:04d}.", arrays)
        nodes.append({"name": n.name, "kind": n.op.kind, "inputs": list(n.inputs), "outputs": list(n.outputs), **enc})
    return nodes, arrays


def to_bytes(graph: Graph) -> bytes:
    nodes, arrays = _encode_nodes(graph)
    blobs = {}
    table = {}
    for key, a in arrays.items():
        buf = io.BytesIO()
        np.save(buf, a if a.flags.c_contiguous else a.copy(order="C"), allow_pickle=False)
        data = buf.getvalue()
        blobs[key] = data
        table[key] = {"dtype": a.dtype.str, "shape": list(a.shape), "sha256": hashlib.sha256(data).hexdigest()}
    try:
        meta = json.loads(json.dumps(graph.metadata))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"graph metadata must be JSON-serialisable: {e}") from e
    doc = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "producer": f"edgeseq {__version__}",
        "inputs": [{"name": i.name, "features": i.features} for i in graph.inputs],
        "outputs": list(graph.outputs),
        "nodes": nodes,
        "metadata": meta,
        "arrays": table,
        "graph_sha256": digest(graph),
    }
    out = io.BytesIO()

    def entry(name: str) -> zipfile.ZipInfo:  # a fixed timestamp: the same graph gives the same bytes
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        return info

    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(entry("graph.json"), json.dumps(doc, indent=1, allow_nan=False))
        for key, data in blobs.items():
            z.writestr(entry(f"arrays/{key}.npy"), data)
    return out.getvalue()


def save(graph: Graph, path) -> Path:
    path = as_path(path, "graph file path")
    atomic_write_bytes(path, to_bytes(graph))
    return path


def _decode_struct(cls, enc: dict, arrays: dict[str, np.ndarray], where: str):
    if not isinstance(enc, dict) or not isinstance(enc.get("attrs"), dict) or not isinstance(enc.get("arrays"), dict):
        raise IRFormatError("malformed node entry (needs 'attrs' and 'arrays' objects)", where=where)
    kwargs: dict[str, Any] = {}
    known = {f.name: f for f in fields(cls)}
    for name, v in enc["attrs"].items():
        f = known.get(name)
        if f is None:
            raise IRFormatError(f"unknown attribute '{name}' for {cls.__name__}", where=where)
        if f.metadata.get("kind") == "array":
            raise IRFormatError(f"'{name}' of {cls.__name__} is an array, not an attribute", where=where)
        if f.metadata.get("kind") == "struct" and v is not None:
            v = _decode_struct(f.metadata["struct"], v, arrays, f"{where}.{name}")
        elif f.metadata.get("kind") == "program":
            v = _decode_program(v, arrays, where)
        elif _json_type_ok(_hints(cls).get(name), v) is False:
            raise IRFormatError(
                f"attribute '{name}' of {cls.__name__} must be {_hint_text(_hints(cls)[name])}, "
                f"got {S.kind_of(v)} {v!r:.40}",
                where=where,
            )
        kwargs[name] = v
    for name, key in enc["arrays"].items():
        if name not in known or known[name].metadata.get("kind") != "array":
            raise IRFormatError(f"unknown array '{name}' for {cls.__name__}", where=where)
        if not isinstance(key, str) or key not in arrays:
            raise IRFormatError(f"array {key!r} is missing from the file", where=where)
        kwargs[name] = arrays[key]
    try:
        return cls(**kwargs)
    except EdgeseqError as e:
        raise IRFormatError(f"invalid {cls.__name__}: {e.message}", where=where) from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as e:
        # an op's constructor checks its own attributes; from a file, any complaint means a bad file
        raise IRFormatError(f"cannot rebuild {cls.__name__}: {type(e).__name__}: {e}", where=where) from None


def _decode_program(enc, arrays: dict[str, np.ndarray], where: str):
    from .step import StepProgram

    if (
        not isinstance(enc, dict)
        or not isinstance(enc.get("program"), dict)
        or not isinstance(enc.get("array_prefix"), str)
        or not isinstance(enc["program"].get("params"), list)
    ):
        raise IRFormatError("malformed step program", where=where)
    prefix = enc["array_prefix"]
    params = {}
    for k in enc["program"]["params"]:
        key = f"{prefix}{k}"
        if key not in arrays:
            raise IRFormatError(f"step-program parameter '{k}' is missing from the file", where=where)
        params[k] = arrays[key]
    try:
        return StepProgram.from_json(enc["program"], params)
    except EdgeseqError as e:
        raise IRFormatError(e.message, where=where) from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as e:
        raise IRFormatError(f"malformed step program ({type(e).__name__}: {e})", where=where) from None


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved: no type check for that op
        return {}


def _json_type_ok(hint, v) -> Optional[bool]:
    """Whether the JSON value ``v`` fits the annotation ``hint`` (None: not checked here)."""
    if hint is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or (origin is not None and getattr(origin, "__name__", "") == "UnionType"):
        if v is None:
            return type(None) in args
        verdicts = [_json_type_ok(a, v) for a in args if a is not type(None)]
        return None if None in verdicts else any(verdicts)
    if hint is bool:
        return isinstance(v, bool)
    if hint is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if hint is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if hint is str:
        return isinstance(v, str)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return v in {m.value for m in hint}
    if hint in (tuple, list) or origin in (tuple, list):
        return isinstance(v, list)
    return None


def _hint_text(hint) -> str:
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in hint)
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


# ----------------------------------------------------------------------------------------------
# reading (untrusted input: every step goes through edgeseq.util.safeio)

_NODE = S.Obj(
    {
        "name": S.Str(max_len=256),
        "kind": S.Str(max_len=64),
        "inputs": S.List(S.Str(max_len=512)),
        "outputs": S.List(S.Str(max_len=512), min_len=1),
        "attrs": S.Map(),
        "arrays": S.Map(S.Str()),
    }
)
GRAPH_SCHEMA = S.Obj(
    {
        "format": S.Str(),
        "schema_version": S.Int(),
        "inputs": S.List(
            S.Obj({"name": S.Str(max_len=512), "features": S.Int(min=1, max=1 << 24)}), min_len=1, max_len=64
        ),
        "outputs": S.List(S.Str(max_len=512), min_len=1, max_len=4096),
        "nodes": S.List(_NODE, max_len=100_000),
        "arrays": S.Map(S.ARRAY_ENTRY, key=S.Str(max_len=512)),
    },
    {"metadata": S.Map(), "producer": S.Str(), "graph_sha256": S.SHA256},
)


def _check_header(doc: Any, where: str) -> None:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise IRFormatError("not an edgeseq IR file (wrong format tag)", where=where)
    version = doc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > SCHEMA_VERSION or version < 1:
        raise IRFormatError(
            f"IR schema version {version!r} is not supported by edgeseq {__version__} (supports 1..{SCHEMA_VERSION})",
            where=where,
            hint="upgrade edgeseq" if isinstance(version, int) and version > SCHEMA_VERSION else None,
        )


def read_arrays(z: SafeZip, table: Mapping[str, Mapping], member_of, what: str = "array") -> dict[str, np.ndarray]:
    """The arrays an (already schema-checked) table declares: the declared total is charged to the
    budget before anything is read, then each member is read against its dtype, shape and hash."""
    total = sum(math.prod(e["shape"]) * np.dtype(e["dtype"]).itemsize for e in table.values())
    if z.budget.over(total):
        raise IRFormatError(
            f"the file declares {human(total)} of arrays, more than {z.budget.limit_text()} allows", where=z.where
        )
    arrays = {}
    for key, info in table.items():
        member = member_of(key)
        if member not in z:
            raise IRFormatError(f"{what} '{key}' is missing from the file", where=z.where)
        a = z.read_npy(member, dtype=info["dtype"], shape=info["shape"], sha256=info["sha256"], what=f"{what} '{key}'")
        a.setflags(write=False)
        arrays[key] = a
    return arrays


def read_graph(z: SafeZip, where: str) -> Graph:
    """The float graph of an open IR archive (``graph.json`` + ``arrays/``)."""
    if "graph.json" not in z:
        raise IRFormatError("not an edgeseq IR file (no graph.json)", where=where)
    doc = z.read_json("graph.json")
    _check_header(doc, where)
    validate(doc, GRAPH_SCHEMA, IRFormatError, where=where, what="graph.json")
    arrays = read_arrays(z, doc["arrays"], lambda key: f"arrays/{key}.npy")
    inputs = [Input(i["name"], i["features"]) for i in doc["inputs"]]
    nodes = []
    for k, entry in enumerate(doc["nodes"]):
        nwhere = f"{where}: node '{entry['name']}'"
        try:
            cls = op_class(entry["kind"])
        except ConfigError as e:
            raise IRFormatError(e.message, where=nwhere) from None
        op = _decode_struct(cls, entry, arrays, nwhere)
        nodes.append(Node(entry["name"], op, tuple(entry["inputs"]), tuple(entry["outputs"])))
    try:
        graph = Graph(inputs, nodes, tuple(doc["outputs"]), doc.get("metadata", {}))
    except EdgeseqError as e:
        e.where = f"{where}: {e.where}" if e.where else where
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, RecursionError) as e:
        raise IRFormatError(f"the graph in the file is inconsistent ({type(e).__name__}: {e})", where=where) from None
    if "graph_sha256" in doc and digest(graph) != doc["graph_sha256"]:
        raise IRFormatError(
            "graph.json was modified after saving (the graph does not match its content hash)", where=where
        )
    return graph


def from_bytes(data: bytes, where: str = "<bytes>", *, budget: Optional[Budget] = None) -> Graph:
    """The graph in the bytes of an IR file (see :func:`load`)."""
    with SafeZip(data, where=where, error=IRFormatError, budget=budget, what="IR file") as z:
        return read_graph(z, where)


def load(path) -> Graph:
    """Load an IR file written by :meth:`Graph.save` (a directory: its ``model.esq`` or ``graph.esq``).
    ``edgeseq.load`` (:func:`edgeseq.models.load_graph`) also reads ``.nir`` graphs.

    Bounded memory on any file, structure checked before use, arrays checked against their
    declared dtype, shape and SHA-256 (see :mod:`edgeseq.util.safeio`); raises IRFormatError (or
    the graph verifier's typed error) naming the file."""
    if not isinstance(path, (str, Path)) or (isinstance(path, str) and not path):
        raise IRFormatError(f"expected the path of an .esq file, got {type(path).__name__} {path!r:.40}")
    path = Path(path)
    if path.is_dir():
        for name in ("model.esq", "graph.esq"):
            if (path / name).is_file():
                return load(path / name)
        raise IRFormatError("is a directory, not an IR file", where=str(path))
    with SafeZip(path, where=str(path), error=IRFormatError, what="IR file") as z:
        return read_graph(z, str(path))


def digest(graph: Graph) -> str:
    """SHA-256 of a graph's content: inputs, nodes (names, kinds, wiring, attributes, array bytes)
    and outputs; metadata is left out. Plans and artifacts record it to name the graph they belong to."""
    nodes, arrays = _encode_nodes(graph)
    table = {}
    for key, a in arrays.items():
        a = np.ascontiguousarray(a)
        table[key] = [a.dtype.str, list(a.shape), hashlib.sha256(a.tobytes()).hexdigest()]
    doc = {
        "inputs": [[i.name, i.features] for i in graph.inputs],
        "outputs": list(graph.outputs),
        "nodes": nodes,
        "arrays": table,
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
