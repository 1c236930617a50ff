"""Atomic file and directory output: an artifact is either complete or absent, never half-written,
and an existing output is only replaced when the caller asked for it (``force``)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from ..errors import ArtifactError


def _check_parent(path: Path) -> None:
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ArtifactError(f"cannot create directory ({e.strerror})", where=str(parent)) from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ArtifactError("directory is not writable", where=str(parent))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same directory and a rename."""
    path = Path(path)
    _check_parent(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp creates 0600
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ArtifactError(f"cannot write ({e.strerror})", where=str(path)) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False, default=_json_default) + "\n")


def _json_default(o: Any):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def check_output_dir(path: str | os.PathLike, force: bool = False) -> Path:
    """Fail early (before any work) if ``path`` cannot become an output directory."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise ArtifactError("exists and is not a directory", where=str(path))
        if not force and any(path.iterdir()):
            raise ArtifactError("output directory already exists", where=str(path), hint="pass --force to replace it")
    _check_parent(path)
    return path


@contextlib.contextmanager
def output_dir(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a fresh staging directory; on success it replaces ``path`` in one rename.

    If the body raises, the staging directory is removed and ``path`` is left untouched."""
    path = check_output_dir(path, force)
    stage = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial"))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    os.chmod(stage, 0o777 & ~_umask())  # mkdtemp creates 0700; a finished artifact gets normal permissions
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
    try:
        os.replace(stage, path)
    except OSError as e:
        if old is not None:
            os.replace(old, path)
        shutil.rmtree(stage, ignore_errors=True)
        raise ArtifactError(f"cannot move the finished artifact into place ({e.strerror})", where=str(path)) from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
