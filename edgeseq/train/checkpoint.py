"""Safe checkpoints: a zip holding ``checkpoint.json`` (the model's JSON config, metrics, tensor table
with SHA-256) and one ``.npy`` per tensor of the state dict. Loading rebuilds the model from its
config with :func:`edgeseq.nn.build_model` and never unpickles anything."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import CheckpointError, ConfigError
from ..util.fs import atomic_write_bytes

FORMAT = "edgeseq-checkpoint"
VERSION = 1


def checkpoint_bytes(model, metrics: dict | None = None, extra: dict | None = None) -> bytes:
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise ConfigError("only models built with edgeseq.nn.build_model (which carry .config) can be checkpointed")
    tensors = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    table, blobs = {}, {}
    for k, a in tensors.items():
        buf = io.BytesIO()
        np.save(buf, a, allow_pickle=False)
        blobs[k] = buf.getvalue()
        table[k] = {"dtype": a.dtype.str, "shape": list(a.shape), "sha256": hashlib.sha256(blobs[k]).hexdigest()}
    doc = {"format": FORMAT, "version": VERSION, "producer": f"edgeseq {__version__}", "config": config,
           "metrics": metrics or {}, "extra": extra or {}, "tensors": table}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("checkpoint.json", json.dumps(doc, indent=1, allow_nan=False))
        for i, (k, data) in enumerate(blobs.items()):
            z.writestr(f"tensors/{i:04d}.npy", data)
    return out.getvalue()


def save_checkpoint(model, path, metrics: dict | None = None, extra: dict | None = None) -> Path:
    """Write ``model`` (built by build_model) to ``path`` atomically."""
    return atomic_write_bytes(path, checkpoint_bytes(model, metrics, extra))


def read_checkpoint(path) -> tuple[dict, dict[str, np.ndarray]]:
    """(document, tensors) of a checkpoint file, every tensor checked against its hash."""
    path = Path(path)
    where = str(path)
    try:
        z = zipfile.ZipFile(path)
        doc = json.loads(z.read("checkpoint.json"))
    except FileNotFoundError:
        raise CheckpointError("file not found", where=where) from None
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError, EOFError, OSError) as e:
        raise CheckpointError(f"not a readable edgeseq checkpoint ({type(e).__name__})", where=where) from None
    if doc.get("format") != FORMAT:
        raise CheckpointError("not an edgeseq checkpoint (wrong format tag)", where=where)
    if not isinstance(doc.get("version"), int) or doc["version"] > VERSION:
        raise CheckpointError(f"checkpoint version {doc.get('version')!r} is newer than this edgeseq supports",
                              where=where, hint="upgrade edgeseq")
    tensors = {}
    try:
        for i, (k, info) in enumerate(doc["tensors"].items()):
            blob = z.read(f"tensors/{i:04d}.npy")
            if hashlib.sha256(blob).hexdigest() != info["sha256"]:
                raise CheckpointError(f"tensor '{k}' does not match its checksum (corrupt file)", where=where)
            tensors[k] = np.load(io.BytesIO(blob), allow_pickle=False)
    except (KeyError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise CheckpointError(f"corrupt or truncated checkpoint ({type(e).__name__}: {e})", where=where) from None
    return doc, tensors


def load_checkpoint(path) -> tuple[Any, dict]:
    """Rebuild the model of a checkpoint; returns (model in eval mode, document)."""
    import torch

    from ..nn import build_model

    doc, tensors = read_checkpoint(path)
    cfg = dict(doc.get("config") or {})
    try:
        arch, fin, ncls = cfg.pop("arch"), cfg.pop("in_features"), cfg.pop("n_classes")
        model = build_model(arch, fin, ncls, **cfg)
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"invalid model config ({e})", where=str(path)) from None
    except ConfigError as e:
        raise CheckpointError(f"invalid model config ({e.message})", where=str(path)) from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise CheckpointError(f"tensors do not match the config (missing: {missing[:5]}, unexpected: {extra[:5]})",
                              where=str(path))
    for k, v in expected.items():
        if tuple(v.shape) != tensors[k].shape:
            raise CheckpointError(f"tensor '{k}' has shape {tensors[k].shape}, the config expects {tuple(v.shape)}",
                                  where=str(path))
        if tensors[k].dtype.kind == "f" and not np.all(np.isfinite(tensors[k])):
            raise CheckpointError(f"tensor '{k}' contains NaN/Inf", where=str(path))
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in tensors.items()})
    return model.eval(), doc
