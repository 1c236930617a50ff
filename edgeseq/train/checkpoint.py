"""Safe checkpoints: a zip holding ``checkpoint.json`` (the model's JSON config, metrics, tensor table
with SHA-256) and one ``.npy`` per tensor of the state dict. Loading rebuilds the model from its
config with :func:`edgeseq.nn.build_model` and never unpickles anything."""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import CheckpointError, ConfigError, EdgeseqError
from ..util import schema as S
from ..util.finite import check_finite
from ..util.fs import atomic_write_bytes
from ..util.safeio import SafeZip, address_space_guard, human
from ..util.schema import validate

FORMAT = "edgeseq-checkpoint"
VERSION = 1


def _content_sha256(config: dict, table: dict) -> str:
    """Binds a checkpoint's config to its tensors (a config edited after saving is detected)."""
    text = json.dumps({"config": config, "tensors": table}, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
    config = json.loads(json.dumps(config, allow_nan=False))
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "producer": f"edgeseq {__version__}",
        "config": config,
        "metrics": metrics or {},
        "extra": extra or {},
        "tensors": table,
        "content_sha256": _content_sha256(config, table),
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("checkpoint.json", json.dumps(doc, indent=1, allow_nan=False))
        for i, (k, data) in enumerate(blobs.items()):
            z.writestr(f"tensors/{i:04d}.npy", data)
    return out.getvalue()


def save_checkpoint(model, path, metrics: dict | None = None, extra: dict | None = None) -> Path:
    """Write ``model`` (built by build_model) to ``path`` atomically."""
    return atomic_write_bytes(path, checkpoint_bytes(model, metrics, extra))


SCHEMA = S.Obj(
    {
        "format": S.Str(),
        "version": S.Int(),
        "config": S.Obj(
            {
                "arch": S.Str(max_len=64),
                "in_features": S.Int(min=1, max=1 << 20),
                "n_classes": S.Int(min=1, max=1 << 20),
            }
        ),
        "tensors": S.Map(S.ARRAY_ENTRY, key=S.Str(max_len=512)),
    },
    {"metrics": S.Map(), "extra": S.Map(), "producer": S.Str(), "content_sha256": S.SHA256},
)


def read_checkpoint(path) -> tuple[dict, dict[str, np.ndarray]]:
    """(document, tensors) of a checkpoint file: structure checked against the schema, sizes
    against the load limit before anything is allocated, every tensor against its dtype, shape
    and hash (see :mod:`edgeseq.util.safeio`)."""
    if not isinstance(path, (str, Path)) or (isinstance(path, str) and not path):
        raise CheckpointError(f"expected the path of a .ckpt file, got {type(path).__name__} {path!r:.40}")
    path = Path(path)
    where = str(path)
    with SafeZip(path, where=where, error=CheckpointError, what="checkpoint") as z:
        if "checkpoint.json" not in z:
            raise CheckpointError("not an edgeseq checkpoint (no checkpoint.json)", where=where)
        doc = z.read_json("checkpoint.json")
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise CheckpointError("not an edgeseq checkpoint (wrong format tag)", where=where)
        version = doc.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise CheckpointError(f"checkpoint version {version!r} is not valid", where=where)
        if version > VERSION:
            raise CheckpointError(
                f"checkpoint version {version!r} is newer than this edgeseq supports",
                where=where,
                hint="upgrade edgeseq",
            )
        validate(doc, SCHEMA, CheckpointError, where=where, what="checkpoint.json")
        if "content_sha256" in doc and doc["content_sha256"] != _content_sha256(doc["config"], doc["tensors"]):
            raise CheckpointError(
                "checkpoint.json was modified after saving (config or tensor table does not match its content hash)",
                where=where,
            )
        table = doc["tensors"]
        total = sum(math.prod(e["shape"]) * np.dtype(e["dtype"]).itemsize for e in table.values())
        if z.budget.over(total):
            raise CheckpointError(
                f"the tensors are declared as {human(total)}, more than {z.budget.limit_text()} allows", where=where
            )
        tensors = {}
        for i, (k, info) in enumerate(table.items()):
            member = f"tensors/{i:04d}.npy"
            if member not in z:
                raise CheckpointError(f"tensor '{k}' ({member}) is missing from the file", where=where)
            tensors[k] = z.read_npy(
                member, dtype=info["dtype"], shape=info["shape"], sha256=info["sha256"], what=f"tensor '{k}'"
            )
    return doc, tensors


SIZE_FREE = 1024  # config integers up to this need not appear as a tensor dimension


def _config_ints(v, path: str = "") -> list[tuple[str, int]]:
    if isinstance(v, bool):
        return []
    if isinstance(v, int):
        return [(path, v)]
    if isinstance(v, dict):
        return [item for k, x in v.items() for item in _config_ints(x, f"{path}.{k}" if path else str(k))]
    if isinstance(v, list):
        return [item for i, x in enumerate(v) for item in _config_ints(x, f"{path}[{i}]")]
    return []


def check_config_sizes(config: dict, tensors: dict[str, np.ndarray], where: str) -> None:
    """Refuse a config whose sizes cannot describe the tensors in the file before a model is built
    from it (a config that declares a 10^6-unit layer next to 64-unit tensors would otherwise
    allocate hundreds of gigabytes): every integer above SIZE_FREE must be a tensor dimension."""
    dims = {int(d) for a in tensors.values() for d in a.shape}
    for name, v in _config_ints(config):
        if v < 0:
            raise CheckpointError(f"config '{name}' is negative ({v})", where=where)
        if v > SIZE_FREE and v not in dims:
            raise CheckpointError(
                f"config '{name}' = {v} matches no tensor dimension in the file (largest "
                f"{max(dims, default=0)}); the config does not describe these tensors",
                where=where,
            )


def load_checkpoint(path) -> tuple[Any, dict]:
    """Rebuild the model of a checkpoint; returns (model in eval mode, document)."""
    doc, tensors = read_checkpoint(path)
    where = str(path)
    cfg = dict(doc["config"])
    check_config_sizes(cfg, tensors, where)
    for k, a in tensors.items():
        if a.dtype.kind == "f":
            check_finite(a, f"tensor '{k}'", where, parameter=True)

    import torch

    from ..nn import build_model

    declared = sum(a.nbytes for a in tensors.values())
    try:
        arch, fin, ncls = cfg.pop("arch"), cfg.pop("in_features"), cfg.pop("n_classes")
        with address_space_guard(4 * declared + (1 << 30)):
            model = build_model(arch, fin, ncls, **cfg)
    except ConfigError as e:
        raise CheckpointError(f"invalid model config ({e.message})", where=where) from None
    except MemoryError:
        raise CheckpointError(
            "the model config needs far more memory than the tensors in the file; the config does not describe them",
            where=where,
        ) from None
    except (
        KeyError,
        TypeError,
        ValueError,
        RuntimeError,
        IndexError,
        AttributeError,
        OverflowError,
        ZeroDivisionError,
        EdgeseqError,
    ) as e:
        # build_model checks the config with whatever its layers raise; from a file, any complaint is a bad config
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if isinstance(e, RuntimeError) and "memory" in msg.lower():
            msg = "the config needs far more memory than the tensors in the file"
        raise CheckpointError(f"invalid model config ({msg[:200]})", where=where) from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"tensors do not match the config (missing: {missing[:5]}, unexpected: {extra[:5]})", where=where
        )
    for k, v in expected.items():
        if tuple(v.shape) != tensors[k].shape:
            raise CheckpointError(
                f"tensor '{k}' has shape {tensors[k].shape}, the config expects {tuple(v.shape)}", where=where
            )
        want = torch.empty(0, dtype=v.dtype).numpy().dtype
        if tensors[k].dtype != want:
            raise CheckpointError(f"tensor '{k}' has dtype {tensors[k].dtype}, the config expects {want}", where=where)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in tensors.items()})
    return model.eval(), doc
