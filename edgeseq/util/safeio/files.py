"""Plain files and the paths read from manifests and plans: regular files only, read within a cap;
paths resolved and kept inside their artifact directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, BinaryIO, Optional, Type

from ...errors import EdgeseqError
from .limits import Budget, human

# ----------------------------------------------------------------------------------------------
# plain files


def open_regular(path: Path, error: Type[EdgeseqError], what: str = "file") -> tuple[BinaryIO, int]:
    """Open ``path`` for reading if it is a regular file; (file, size). Devices, FIFOs and
    directories are refused (reading /dev/zero or a FIFO would never end)."""
    where = str(path)
    try:  # non-blocking: opening a FIFO must not wait for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        f = os.fdopen(fd, "rb")
    except FileNotFoundError:
        raise error(f"no such file ({what})", where=where) from None
    except IsADirectoryError:
        raise error(f"is a directory, not a {what}", where=where) from None
    except OSError as e:
        raise error(f"cannot read {what} ({e.strerror or e})", where=where) from None
    try:
        st = os.fstat(f.fileno())
    except OSError as e:
        f.close()
        raise error(f"cannot read {what} ({e.strerror or e})", where=where) from None
    if stat.S_ISDIR(st.st_mode):
        f.close()
        raise error(f"is a directory, not a {what}", where=where)
    if not stat.S_ISREG(st.st_mode):
        f.close()
        raise error(f"is not a regular file (a device, pipe or socket cannot be read as {what})", where=where)
    if hasattr(os, "set_blocking"):
        os.set_blocking(f.fileno(), True)
    return f, int(st.st_size)


def read_file(
    path, error: Type[EdgeseqError], *, max_bytes: int, what: str = "file", budget: Optional[Budget] = None
) -> bytes:
    """The bytes of a regular file no larger than ``max_bytes``."""
    path = Path(path)
    f, size = open_regular(path, error, what)
    with f:
        if size > max_bytes:
            raise error(f"{what} is {human(size)}, more than the {human(max_bytes)} allowed", where=str(path))
        if budget is not None:
            budget.take(size, what, str(path), error)
        try:
            data = f.read(max_bytes + 1)
        except OSError as e:
            raise error(f"cannot read {what} ({e.strerror or e})", where=str(path)) from None
    if len(data) > max_bytes:
        raise error(f"{what} grew past {human(max_bytes)} while being read", where=str(path))
    return data


def read_text(path, error: Type[EdgeseqError], *, max_bytes: int, what: str = "text file") -> str:
    data = read_file(path, error, max_bytes=max_bytes, what=what)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(
            f"{what} is not UTF-8 text (byte {e.start}: {data[e.start : e.start + 1]!r})", where=str(path)
        ) from None


# ----------------------------------------------------------------------------------------------
# paths read from manifests and plans


def inside(root, rel: Any, error: Type[EdgeseqError], *, what: str = "path", where: Optional[str] = None) -> Path:
    """``root / rel`` when ``rel`` is a relative path that stays inside ``root`` after resolving
    ``..`` and symlinks; otherwise ``error``. The result may not exist."""
    root = Path(root)
    where = where or str(root)
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise error(f"{what} must be a non-empty relative path, got {rel!r}", where=where)
    p = Path(rel)
    if p.is_absolute() or rel.startswith("~"):
        raise error(f"{what} '{rel}' is absolute; paths in an artifact must be relative to it", where=where)
    try:
        base = root.resolve()
        full = (root / p).resolve()
    except (OSError, RuntimeError) as e:  # symlink loops
        raise error(f"{what} '{rel}' cannot be resolved ({e})", where=where) from None
    if full != base and base not in full.parents:
        raise error(f"{what} '{rel}' points outside the artifact directory", where=where)
    return root / p
