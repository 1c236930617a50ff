"""Artifact manifests (``manifest.json``): the one writer and the one safe reader of every exporter.

Writing: :func:`seal` records every file of a finished staging directory in the manifest's
``files`` table (relative path -> sha256 and size) and writes the manifest atomically.

Reading: :func:`read_checked` (used by :func:`edgeseq.export.load_artifact`,
:func:`edgeseq.validate.open_artifact` and each exporter's own loader through :func:`open_checked`):

1. the manifest is read under the JSON caps of :mod:`edgeseq.util.safeio` and must be an object;
2. its ``format`` names the exporter (:data:`FORMATS`);
3. it is checked against that exporter's schema (:data:`SCHEMAS`: the fields the loaders use), so
   the loaders can rely on its shape;
4. every path it names (model, library, binary, graph, quantized graph, golden vectors, parts,
   the files of its ``files`` table) must be relative and stay inside the artifact directory, after
   ``..`` and symlinks are resolved. A bundle's parts are direct subdirectories holding an
   artifact of another kind (never a bundle: no loops).

Problems raise :class:`~edgeseq.errors.ArtifactError` naming the manifest and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from ..errors import ArtifactError
from ..util import schema as S
from ..util.safeio import inside, read_json

MANIFEST = "manifest.json"
FORMATS = {"edgeseq-onnx": "onnx", "edgeseq.tvm": "tvm", "edgeseq-c-artifact/1": "c", "edgeseq-bundle/1": "bundle"}

_PATH = S.Str(max_len=1024)
_OPT = {"ir_graph": _PATH, "quantized_graph": _PATH, "numerics": S.AnyJSON()}
_TVM_FILE = S.Obj({"file": _PATH, "shape": S.SHAPE}, {"dtype": S.DTYPE})
_FILES = S.Map(S.Obj({"sha256": S.SHA256}, {"bytes": S.Int(min=0)}), key=_PATH)

SCHEMAS: dict[str, S.Spec] = {
    "onnx": S.Obj(
        {
            "format_version": S.Int(),
            "inputs": S.List(S.Obj({"shape": S.List(S.OneOf(S.Str(), S.Int(min=0)), min_len=3, max_len=3)}), min_len=1),
            "outputs": S.List(S.Obj({"name": S.Str()}), min_len=1),
            "state": S.Obj(
                {"tensors": S.List(S.Obj({"key": S.Str(), "shape": S.List(S.OneOf(S.Str(), S.Int(min=0)))}))}
            ),
            "golden": S.Obj({"input": _PATH, "outputs": S.List(_PATH, min_len=1)}, {"integer_outputs": S.List(_PATH)}),
            "files": _FILES,
        },
        {"model": _PATH, "streaming": S.Bool(), **_OPT},
    ),
    "tvm": S.Obj(
        {
            "format_version": S.Int(),
            "tvm_version": S.Str(),
            "library": _PATH,
            "target": S.Obj({"name": S.Str()}),
            "signature": S.Obj({"in_features": S.Int(min=1)}),
            "golden": S.Obj(
                {
                    "input": _TVM_FILE,
                    "outputs": S.List(_TVM_FILE, min_len=1),
                    "state": S.List(S.Obj({"key": S.Str(), "file": _PATH, "shape": S.SHAPE})),
                },
                {"int_inputs": S.List(_TVM_FILE), "int_outputs": S.List(_TVM_FILE)},
            ),
            "files": _FILES,
        },
        _OPT,
    ),
    "c": S.Obj(
        {
            "target": S.Obj({"name": S.Str()}, {"options": S.Map()}),
            "binary": _PATH,
            "in_features": S.Int(min=1, max=1 << 24),
            "outputs": S.List(
                S.Obj({"name": S.Str(), "temporal": S.Bool(), "features": S.Int(min=0), "offset": S.Int(min=0)}),
                min_len=1,
            ),
            "state_layout": S.List(
                S.Obj({"key": S.Str(), "shape": S.SHAPE, "offset": S.Int(min=0), "size": S.Int(min=0)})
            ),
            "graph": S.Obj({"file": _PATH}),
            "golden": S.Obj(
                {"input": _PATH, "expected": S.OneOf(_PATH, S.Null())}, {"expected_int": _PATH, "shape": S.SHAPE}
            ),
            "files": _FILES,
            "sizes": S.Map(),
            "buffer_plan": S.Map(),
        },
        _OPT,
    ),
    "bundle": S.Obj(
        {
            "target": S.Str(),
            "default_runtime": S.Str(),
            "parts": S.Map(S.Obj({"dir": _PATH, "kind": S.Str()})),
            "files": _FILES,
        },
        {"cpu": S.OneOf(S.Null(), S.Str()), "golden": S.Obj({"dir": _PATH}), **_OPT},
    ),
}


def read_manifest(path) -> dict:
    """The manifest of the artifact directory ``path`` as a JSON object (bounded read)."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError("artifact directory not found", where=str(path))
    if not path.is_dir():
        raise ArtifactError("not a directory; pass an artifact directory written by an exporter", where=str(path))
    mf = path / MANIFEST
    if not mf.exists():
        raise ArtifactError(
            "not an edgeseq artifact (no manifest.json)",
            where=str(path),
            hint="pass a directory written by edgeseq export",
        )
    manifest = read_json(mf, ArtifactError, what="manifest.json")
    if not isinstance(manifest, dict):
        raise ArtifactError(f"manifest.json must be a JSON object, got {S.kind_of(manifest)}", where=str(mf))
    return manifest


def detect_kind(manifest: dict, where: str = MANIFEST) -> str:
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    try:
        return FORMATS[fmt]  # type: ignore[index]  # any JSON value; a wrong one is reported below
    except (KeyError, TypeError):
        shown = repr(fmt) if isinstance(fmt, (str, int, float, type(None))) else S.kind_of(fmt)
        raise ArtifactError(
            f"unknown artifact format {shown[:60]}; edgeseq reads: {', '.join(FORMATS)}", where=where
        ) from None


def _paths(kind: str, m: dict) -> Iterator[tuple[str, Any]]:
    """(field, relative path) of every path the manifest of ``kind`` names."""
    for k in ("ir_graph", "quantized_graph"):
        if k in m:
            yield k, m[k]
    g = m.get("golden") or {}
    if kind == "onnx":
        yield "model", m.get("model", "model.onnx")
        yield "golden.input", g["input"]
        for i, p in enumerate(g["outputs"]):
            yield f"golden.outputs[{i}]", p
        for i, p in enumerate(g.get("integer_outputs", [])):
            yield f"golden.integer_outputs[{i}]", p
    elif kind == "tvm":
        yield "library", m["library"]
        yield "golden.input.file", g["input"]["file"]
        for key in ("outputs", "state", "int_inputs", "int_outputs"):
            for i, e in enumerate(g.get(key, [])):
                yield f"golden.{key}[{i}].file", e["file"]
    elif kind == "c":
        yield "binary", m["binary"]
        yield "graph.file", m["graph"]["file"]
        for key in ("input", "expected", "expected_int"):
            if isinstance(g.get(key), str):
                yield f"golden.{key}", g[key]
    else:
        for name, part in m["parts"].items():
            yield f"parts.{name}.dir", part["dir"]
        if "dir" in g:
            yield "golden.dir", g["dir"]
    yield from ((f"files.{k}", k) for k in m["files"])


def check_manifest(path: Path, manifest: dict, kind: str) -> None:
    """Schema and path containment of an artifact's manifest (see the module docstring)."""
    where = str(Path(path) / MANIFEST)
    S.validate(manifest, SCHEMAS[kind], ArtifactError, where=where, what=f"{kind} manifest")
    for field, rel in _paths(kind, manifest):
        inside(path, rel, ArtifactError, what=field, where=where)
    if kind == "bundle":
        parts = manifest["parts"]
        if not parts:
            raise ArtifactError("the bundle manifest lists no parts", where=where)
        if manifest["default_runtime"] not in parts:
            raise ArtifactError(
                f"default_runtime '{manifest['default_runtime']}' is not one of the parts ({', '.join(parts)})",
                where=where,
            )
        for name, part in parts.items():
            d = part["dir"]
            if "/" in d or "\\" in d or d in (".", ".."):
                raise ArtifactError(f"part '{name}' must be a subdirectory of the bundle, got '{d}'", where=where)


def read_checked(path, *, nested: bool = False) -> tuple[dict, str]:
    """(manifest, kind) of the artifact directory ``path``, checked (see the module docstring).
    ``nested``: a part of a bundle (which may not itself be a bundle)."""
    path = Path(path)
    manifest = read_manifest(path)
    kind = detect_kind(manifest, str(path / MANIFEST))
    if nested and kind == "bundle":
        raise ArtifactError("a bundle part may not itself be a bundle", where=str(path / MANIFEST))
    check_manifest(path, manifest, kind)
    return manifest, kind


def integrity_table(manifest: dict) -> dict[str, str]:
    """Relative path -> sha256 of every file the manifest records."""
    return {k: v["sha256"] for k, v in manifest["files"].items()}


def file_problems(path: Path, manifest: dict) -> list[str]:
    """Files recorded in the manifest that are missing, not regular files, or whose sha256 differs."""
    from ..util.fs import sha256_file

    problems = []
    for rel, digest in sorted(integrity_table(manifest).items()):
        p = path / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
        elif sha256_file(p) != digest:
            problems.append(f"{rel}: sha256 differs from the manifest (modified after export)")
    return problems


def seal(stage: Path, manifest: dict, files: Optional[Iterable[Path]] = None) -> dict:
    """Record ``files`` (default: every regular file under ``stage``) in ``manifest["files"]``
    (relative path -> sha256 and bytes) and write ``stage/manifest.json`` atomically. The last
    step of every exporter, inside its staging directory."""
    from ..util.fs import atomic_write_json, sha256_file

    stage = Path(stage)
    paths = sorted(stage.rglob("*")) if files is None else sorted(files)
    manifest["files"] = {
        p.relative_to(stage).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in paths
        if p.is_file() and p.name != MANIFEST
    }
    atomic_write_json(stage / MANIFEST, manifest)
    return manifest


def open_checked(path, kind: str, *, verify: bool = True) -> dict:
    """The checked manifest of the ``kind`` artifact at ``path`` (see :func:`read_checked`); with
    ``verify`` every recorded file must be present and match its sha256."""
    path = Path(path)
    manifest, found = read_checked(path)
    if found != kind:
        raise ArtifactError(
            f"a {found} artifact, not a {kind} artifact",
            where=str(path / MANIFEST),
            hint="open it with edgeseq.export.load_artifact",
        )
    problems = file_problems(path, manifest) if verify else []
    if problems:
        rel, what = problems[0].split(": ", 1)
        raise ArtifactError(
            f"file '{rel}' listed in the manifest: {what}", where=str(path), hint="re-export the artifact"
        )
    return manifest


def golden_file(path: Path, rel: str, what: str = "golden file", max_bytes: Optional[int] = None) -> Path:
    """``path / rel`` when it is a regular file inside the artifact no larger than the model limit."""
    from ..util.safeio import current_limits, human

    p = inside(path, rel, ArtifactError, what=what, where=str(path / MANIFEST))
    if not p.is_file():
        raise ArtifactError(f"{what} '{rel}' is missing", where=str(path))
    cap = current_limits().model_bytes if max_bytes is None else max_bytes
    size = p.stat().st_size
    if size > cap:
        raise ArtifactError(f"{what} '{rel}' is {human(size)}, more than the {human(cap)} allowed", where=str(path))
    return p


__all__ = [
    "FORMATS",
    "SCHEMAS",
    "read_manifest",
    "detect_kind",
    "check_manifest",
    "read_checked",
    "integrity_table",
    "file_problems",
    "golden_file",
    "seal",
    "open_checked",
]
