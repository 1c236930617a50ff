"""``.npy`` arrays, standalone or zip members: header first (numeric dtypes only, never objects), the
declared size checked against the budget before the array is allocated."""

from __future__ import annotations

import hashlib
import io
import math
import struct
import tokenize
from pathlib import Path
from typing import Optional, Sequence, Type

import numpy as np

from ...errors import EdgeseqError
from .files import open_regular
from .limits import Budget, MiB, current_limits, human

# ----------------------------------------------------------------------------------------------
# .npy arrays (standalone or zip members)

NUMERIC_KINDS = "biufcSU"  # plain values and fixed-width strings; never objects (pickle)


def _check_dtype(dt: np.dtype, what: str, where: str, error) -> None:
    if dt.kind not in NUMERIC_KINDS or dt.fields is not None or dt.subdtype is not None or dt.hasobject:
        raise error(
            f"{what} has dtype {dt.str!r}; only plain numeric or string arrays are read (no objects, no pickle)",
            where=where,
        )


def _read_exact(fp, n: int) -> bytes:
    chunks = []
    while n > 0:
        b = fp.read(min(n, MiB))
        if not b:
            break
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


def _npy_header(fp, what: str, where: str, error) -> tuple[bytes, tuple, bool, np.dtype]:
    lim = current_limits()
    pre = _read_exact(fp, 8)
    if len(pre) < 8 or pre[:6] != b"\x93NUMPY":
        raise error(f"{what} is not a .npy array", where=where)
    major = pre[6]
    if major == 1:
        more = _read_exact(fp, 2)
        hlen = struct.unpack("<H", more)[0] if len(more) == 2 else -1
    elif major in (2, 3):
        more = _read_exact(fp, 4)
        hlen = struct.unpack("<I", more)[0] if len(more) == 4 else -1
    else:
        raise error(f"{what} has unsupported .npy version {major}", where=where)
    if hlen < 0 or hlen > lim.npy_header_bytes:
        raise error(f"{what} has a corrupt .npy header", where=where)
    header = _read_exact(fp, hlen)
    if len(header) != hlen:
        raise error(f"{what} is truncated (in its .npy header)", where=where)
    raw = pre + more + header
    try:
        b = io.BytesIO(raw)
        version = np.lib.format.read_magic(b)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(b, max_header_size=lim.npy_header_bytes)
    except (
        ValueError,
        TypeError,
        SyntaxError,
        MemoryError,
        RecursionError,
        struct.error,
        UnicodeDecodeError,
        tokenize.TokenError,
        IndexError,
        KeyError,
        AttributeError,
        OverflowError,
    ) as e:
        # numpy parses the header text with tokenize + ast.literal_eval: any of these means a corrupt header
        raise error(f"{what} has a corrupt .npy header ({type(e).__name__})", where=where) from None
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape) or len(shape) > 32:
        raise error(f"{what} declares an invalid shape {shape!r}", where=where)
    _check_dtype(dtype, what, where, error)
    return raw, shape, bool(fortran), dtype


def read_npy_stream(
    fp,
    *,
    what: str,
    where: str,
    error: Type[EdgeseqError],
    budget: Budget,
    dtype: Optional[str] = None,
    shape: Optional[Sequence[int]] = None,
    sha256: Optional[str] = None,
) -> np.ndarray:
    """One ``.npy`` array from a stream: the header is read and checked first (plain numeric dtype;
    ``dtype`` / ``shape`` when the caller declares them), the size is charged to ``budget`` before
    the array is allocated, exactly that many bytes are read, and trailing bytes are refused.
    ``sha256`` (of the whole .npy bytes) is checked when given."""
    raw, got_shape, fortran, got_dtype = _npy_header(fp, what, where, error)
    if dtype is not None and got_dtype.str != dtype:
        raise error(f"{what} has dtype {got_dtype.str}, the file declares {dtype}", where=where)
    if shape is not None and list(got_shape) != list(shape):
        raise error(f"{what} has shape {list(got_shape)}, the file declares {list(shape)}", where=where)
    count = math.prod(got_shape)
    nbytes = count * got_dtype.itemsize
    budget.take(nbytes, what, where, error)
    h = hashlib.sha256(raw) if sha256 is not None else None
    arr = np.empty(got_shape[::-1] if fortran else got_shape, dtype=got_dtype)
    buf = memoryview(arr.reshape(-1).view(np.uint8)) if nbytes else memoryview(b"")
    off = 0
    while off < nbytes:
        chunk = fp.read(min(nbytes - off, MiB))
        if not chunk:
            raise error(f"{what} is truncated ({off} of {nbytes} data bytes)", where=where)
        buf[off : off + len(chunk)] = chunk
        if h is not None:
            h.update(chunk)
        off += len(chunk)
    if fp.read(1):
        raise error(f"{what} holds more bytes than its header declares", where=where)
    if h is not None and h.hexdigest() != sha256:
        raise error(f"{what} does not match its checksum (corrupt file)", where=where)
    return arr.T if fortran else arr


def read_npy(path, error: Type[EdgeseqError], *, what: str = ".npy array", kind: str = "data") -> np.ndarray:
    """A standalone ``.npy`` file."""
    path = Path(path)
    f, size = open_regular(path, error, what)
    budget = Budget.for_kind(kind)
    with f:
        if size > budget.total + current_limits().npy_header_bytes:
            raise error(f"{what} is {human(size)}, more than {budget.limit_text()} allows", where=str(path))
        try:
            return read_npy_stream(f, what=what, where=str(path), error=error, budget=budget)
        except OSError as e:
            raise error(f"cannot read {what} ({e.strerror or e})", where=str(path)) from None
