"""Safe IR files: one zip holding ``graph.json`` (structure, attributes, schema version, array
hashes) and one ``.npy`` per parameter array. Nothing is ever unpickled; arrays are loaded with
``allow_pickle=False`` and checked against their recorded dtype, shape and SHA-256.

Round trip is exact: attributes are JSON (floats in shortest-repr form), arrays keep dtype and bits.
"""

from __future__ import annotations

import enum
import hashlib
import io
import json
import zipfile
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import ConfigError, EdgeseqError, IRFormatError
from ..util.fs import atomic_write_bytes
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


def to_bytes(graph: Graph) -> bytes:
    arrays: dict[str, np.ndarray] = {}
    nodes = []
    for i, n in enumerate(graph.nodes):
        enc = _encode_struct(n.op, f"n{i:04d}.", arrays)
        nodes.append({"name": n.name, "kind": n.op.kind, "inputs": list(n.inputs), "outputs": list(n.outputs), **enc})
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
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("graph.json", json.dumps(doc, indent=1, allow_nan=False))
        for key, data in blobs.items():
            z.writestr(f"arrays/{key}.npy", data)
    return out.getvalue()


def save(graph: Graph, path) -> Path:
    path = Path(path)
    atomic_write_bytes(path, to_bytes(graph))
    return path


def _decode_struct(cls, enc: dict, arrays: dict[str, np.ndarray], where: str):
    if not isinstance(enc, dict) or "attrs" not in enc or "arrays" not in enc:
        raise IRFormatError("malformed node entry", where=where)
    kwargs: dict[str, Any] = {}
    known = {f.name: f for f in fields(cls)}
    for name, v in enc["attrs"].items():
        f = known.get(name)
        if f is None:
            raise IRFormatError(f"unknown attribute '{name}' for {cls.__name__}", where=where)
        if f.metadata.get("kind") == "struct" and v is not None:
            v = _decode_struct(f.metadata["struct"], v, arrays, where)
        elif f.metadata.get("kind") == "program":
            v = _decode_program(v, arrays, where)
        kwargs[name] = v
    for name, key in enc["arrays"].items():
        if name not in known or known[name].metadata.get("kind") != "array":
            raise IRFormatError(f"unknown array '{name}' for {cls.__name__}", where=where)
        if key not in arrays:
            raise IRFormatError(f"array '{key}' is missing from the file", where=where)
        kwargs[name] = arrays[key]
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise IRFormatError(f"cannot rebuild {cls.__name__}: {e}", where=where) from e


def _decode_program(enc, arrays: dict[str, np.ndarray], where: str):
    from .step import StepProgram

    if not isinstance(enc, dict) or not isinstance(enc.get("program"), dict) or \
            not isinstance(enc.get("array_prefix"), str) or not isinstance(enc["program"].get("params"), list):
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


def from_bytes(data: bytes, where: str = "<bytes>") -> Graph:
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
        names = set(z.namelist())
        if "graph.json" not in names:
            raise IRFormatError("not an edgeseq IR file (no graph.json)", where=where)
        doc = json.loads(z.read("graph.json").decode("utf-8"))
    except zipfile.BadZipFile as e:
        raise IRFormatError(f"corrupt or truncated IR file ({e})", where=where) from e
    except (UnicodeDecodeError, json.JSONDecodeError, EOFError, zlib_error()) as e:
        raise IRFormatError(f"corrupt graph.json ({e})", where=where) from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise IRFormatError("not an edgeseq IR file (wrong format tag)", where=where)
    version = doc.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
        raise IRFormatError(
            f"IR schema version {version!r} is not supported by edgeseq {__version__} "
            f"(supports 1..{SCHEMA_VERSION})",
            where=where,
            hint="upgrade edgeseq" if isinstance(version, int) and version > SCHEMA_VERSION else None,
        )
    try:
        arrays: dict[str, np.ndarray] = {}
        for key, info in doc["arrays"].items():
            member = f"arrays/{key}.npy"
            if member not in names:
                raise IRFormatError(f"array '{key}' is missing from the file", where=where)
            blob = z.read(member)
            if hashlib.sha256(blob).hexdigest() != info["sha256"]:
                raise IRFormatError(f"array '{key}' does not match its checksum (corrupt file)", where=where)
            a = np.load(io.BytesIO(blob), allow_pickle=False)
            if a.dtype.str != info["dtype"] or list(a.shape) != info["shape"]:
                raise IRFormatError(f"array '{key}' has unexpected dtype/shape", where=where)
            arrays[key] = a
        inputs = [Input(str(i["name"]), int(i["features"])) for i in doc["inputs"]]
        nodes = []
        for entry in doc["nodes"]:
            nwhere = f"{where}: node '{entry.get('name')}'"
            try:
                cls = op_class(entry["kind"])
            except ConfigError as e:
                raise IRFormatError(e.message, where=nwhere) from None
            op = _decode_struct(cls, entry, arrays, nwhere)
            nodes.append(Node(str(entry["name"]), op, tuple(entry["inputs"]), tuple(entry["outputs"])))
        outputs = tuple(doc["outputs"])
        metadata = doc.get("metadata", {})
    except IRFormatError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, EOFError, zipfile.BadZipFile, zlib_error()) as e:
        raise IRFormatError(f"malformed IR file ({type(e).__name__}: {e})", where=where) from e
    try:
        return Graph(inputs, nodes, outputs, metadata)
    except EdgeseqError as e:
        e.where = f"{where}: {e.where}" if e.where else where
        raise


def zlib_error():
    import zlib

    return zlib.error


def load(path) -> Graph:
    """Load an IR file written by :meth:`Graph.save`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IRFormatError("file not found", where=str(path)) from None
    except IsADirectoryError:
        candidate = path / "model.esq"
        if candidate.is_file():
            return load(candidate)
        raise IRFormatError("is a directory, not an IR file", where=str(path)) from None
    except OSError as e:
        raise IRFormatError(f"cannot read ({e.strerror})", where=str(path)) from None
    return from_bytes(data, where=str(path))
