"""Zip archives sized from their central directory before anything is inflated; members inflated as
streams within the budget; ``.npz`` files on top."""

from __future__ import annotations

import contextlib
import io
import math
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Optional, Sequence, Type

import numpy as np

from ...errors import EdgeseqError
from .files import open_regular
from .jsonio import parse_json
from .limits import Budget, current_limits, human
from .npy import _read_exact, read_npy_stream

# ----------------------------------------------------------------------------------------------
# zip archives

_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    struct.error,
    KeyError,
    IndexError,
    OverflowError,
    UnicodeDecodeError,
)

_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"


def _zip_directory(fp, size: int) -> tuple[int, int]:
    """(entries, central directory bytes) from the end-of-central-directory record, read without
    parsing the directory itself (so a million-entry archive is refused cheaply)."""
    tail_len = min(size, 22 + 65535)
    fp.seek(size - tail_len)
    tail = fp.read(tail_len)
    pos = tail.rfind(_EOCD)
    if pos < 0 or len(tail) - pos < 22:
        raise zipfile.BadZipFile("no end-of-central-directory record")
    entries, cd_size = struct.unpack_from("<HI", tail, pos + 10)
    if (entries == 0xFFFF or cd_size == 0xFFFFFFFF) and pos >= 20 and tail[pos - 20 : pos - 16] == _ZIP64_LOCATOR:
        (z64_off,) = struct.unpack_from("<Q", tail, pos - 20 + 8)
        if z64_off + 56 > size:
            raise zipfile.BadZipFile("corrupt zip64 record")
        fp.seek(z64_off)
        rec = fp.read(56)
        if rec[:4] != b"PK\x06\x06":
            raise zipfile.BadZipFile("corrupt zip64 record")
        entries, cd_size = struct.unpack_from("<QQ", rec, 32)
    return int(entries), int(cd_size)


class SafeZip:
    """A zip archive (a path or bytes) read under :class:`Limits`.

    ``read_bytes(member, max_bytes)``, ``read_json(member)``, ``read_npy(member, dtype=, shape=,
    sha256=)`` inflate as streams and stop at their cap; every inflated byte is charged to the
    shared ``budget`` (one per top-level file). Use as a context manager."""

    def __init__(
        self, source, *, where: str, error: Type[EdgeseqError], budget: Optional[Budget] = None, what: str = "archive"
    ):
        self.where, self.error, self.what = where, error, what
        self.budget = budget or Budget.for_kind("model")
        lim = current_limits()
        if isinstance(source, (bytes, bytearray, memoryview)):
            fp: BinaryIO = io.BytesIO(bytes(source))
            size = len(source)
        else:
            fp, size = open_regular(Path(source), error, what)
        self._fp = fp
        try:
            if size > self.budget.total + lim.zip_directory_bytes:
                raise error(f"{what} is {human(size)}, more than {self.budget.limit_text()} allows", where=where)
            try:
                entries, cd_size = _zip_directory(fp, size)
            except _ZIP_ERRORS as e:
                raise error(f"corrupt or truncated {what} ({e})", where=where) from None
            if entries > lim.zip_members:
                raise error(f"{what} has {entries} members, more than the {lim.zip_members} allowed", where=where)
            if cd_size > lim.zip_directory_bytes:
                raise error(
                    f"{what} has a {human(cd_size)} directory, more than the {human(lim.zip_directory_bytes)} allowed",
                    where=where,
                )
            fp.seek(0)
            try:
                self.zip = zipfile.ZipFile(fp)
                infos = self.zip.infolist()
            except _ZIP_ERRORS as e:
                raise error(f"corrupt or truncated {what} ({e})", where=where) from None
            if len(infos) > lim.zip_members:
                raise error(f"{what} has {len(infos)} members, more than the {lim.zip_members} allowed", where=where)
            self.infos = {}
            for info in infos:
                if info.filename in self.infos:
                    raise error(f"{what} holds member '{info.filename}' twice", where=where)
                self.infos[info.filename] = info
        except BaseException:
            fp.close()
            raise

    @property
    def names(self) -> set[str]:
        return set(self.infos)

    def __contains__(self, member: str) -> bool:
        return member in self.infos

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.zip.close()
        with contextlib.suppress(Exception):
            self._fp.close()

    def __enter__(self) -> "SafeZip":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _info(self, member: str) -> zipfile.ZipInfo:
        info = self.infos.get(member)
        if info is None:
            raise self.error(f"member '{member}' is missing from the {self.what}", where=self.where)
        if info.flag_bits & 0x1:
            raise self.error(f"member '{member}' is encrypted", where=self.where)
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_LZMA):
            raise self.error(
                f"member '{member}' uses an unsupported compression method ({info.compress_type})", where=self.where
            )
        return info

    @contextlib.contextmanager
    def _open(self, member: str) -> Iterator[BinaryIO]:
        self._info(member)
        try:
            with self.zip.open(member) as fp:
                yield fp
        except EdgeseqError:
            raise
        except _ZIP_ERRORS as e:
            raise self.error(f"member '{member}' is corrupt ({type(e).__name__}: {e})", where=self.where) from None

    def read_bytes(self, member: str, max_bytes: int, what: Optional[str] = None) -> bytes:
        what = what or f"member '{member}'"
        info = self._info(member)
        if info.file_size > max_bytes:
            raise self.error(
                f"{what} declares {human(info.file_size)}, more than the {human(max_bytes)} allowed", where=self.where
            )
        if self.budget.over(info.file_size):
            raise self.error(
                f"{what} declares {human(info.file_size)}, more than {self.budget.limit_text()} allows",
                where=self.where,
            )
        with self._open(member) as fp:
            data = _read_exact(fp, max_bytes + 1)
            if len(data) > max_bytes:
                raise self.error(
                    f"{what} inflates past {human(max_bytes)} (a zip bomb or a corrupt archive)", where=self.where
                )
            fp.read(1)  # reach EOF: the CRC check
        self.budget.take(len(data), what, self.where, self.error)
        return data

    def read_json(self, member: str, what: Optional[str] = None) -> Any:
        what = what or member
        data = self.read_bytes(member, current_limits().json_bytes, what)
        return parse_json(data, self.error, where=f"{self.where}: {member}", what=what)

    def read_npy(
        self,
        member: str,
        *,
        dtype: Optional[str] = None,
        shape: Optional[Sequence[int]] = None,
        sha256: Optional[str] = None,
        what: Optional[str] = None,
    ) -> np.ndarray:
        what = what or f"array '{member}'"
        if shape is not None and dtype is not None:
            declared = math.prod(shape) * np.dtype(dtype).itemsize
            if self.budget.over(declared):
                raise self.error(
                    f"{what} is declared as {list(shape)} {dtype} ({human(declared)}), more than "
                    f"{self.budget.limit_text()} allows",
                    where=self.where,
                )
        with self._open(member) as fp:
            return read_npy_stream(
                fp,
                what=what,
                where=self.where,
                error=self.error,
                budget=self.budget,
                dtype=dtype,
                shape=shape,
                sha256=sha256,
            )


def is_zip_with(path, member: str) -> bool:
    """True if ``path`` is a readable zip archive holding ``member`` (cheap; no member is read)."""
    try:
        f, size = open_regular(Path(path), EdgeseqError)
    except EdgeseqError:
        return False
    with f:
        try:
            entries, cd_size = _zip_directory(f, size)
            lim = current_limits()
            if entries > lim.zip_members or cd_size > lim.zip_directory_bytes:
                return False
            f.seek(0)
            with zipfile.ZipFile(f) as z:
                return member in z.NameToInfo
        except _ZIP_ERRORS:
            return False


def read_npz(
    path,
    error: Type[EdgeseqError],
    *,
    what: str = ".npz file",
    kind: str = "data",
    keys: Optional[Sequence[str]] = None,
) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (``keys``: only those, when present), each read header first
    under the data budget; object arrays are refused."""
    out = {}
    with SafeZip(path, where=str(path), error=error, budget=Budget.for_kind(kind), what=what) as z:
        for member in sorted(z.names):
            if not member.endswith(".npy"):
                continue
            key = member[:-4]
            if keys is not None and key not in keys:
                continue
            out[key] = z.read_npy(member, what=f"array '{key}'")
    return out


def npz_keys(path, error: Type[EdgeseqError], *, what: str = ".npz file") -> set[str]:
    with SafeZip(path, where=str(path), error=error, budget=Budget.for_kind("data"), what=what) as z:
        return {m[:-4] for m in z.names if m.endswith(".npy")}
