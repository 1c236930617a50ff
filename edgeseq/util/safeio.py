"""Safe reading of files edgeseq did not write itself (or that may have been damaged since).

Every loader (IR graphs, checkpoints, quantization plans, artifact manifests, golden vectors, data
arrays, CSV / WAV recordings, JSON configs) reads through this module, so the same rules hold
everywhere:

- **bounded memory**: a file is never read whole before it is checked. Zip archives are opened only
  after their central directory is sized (member count, directory bytes); each member is inflated as
  a stream and stops at its cap, so a zip bomb costs no more than its cap. ``.npy`` members are read
  header first: dtype and shape are checked against what the enclosing document declares, and the
  declared size against the remaining budget, *before* the array is allocated;
- **one overall cap per file** (:class:`Limits`, configurable): the bytes inflated from one model,
  plan or checkpoint file (nested archives included) and from one data file;
- **structure before use**: JSON is parsed with duplicate keys, NaN / Infinity and absurd nesting
  refused, then checked against a schema (:mod:`edgeseq.util.schema`) by the caller;
- **paths stay inside**: a path read from a manifest or plan is resolved (symlinks too) and must stay
  inside its artifact directory (:func:`inside`).

Problems raise the caller's typed error (``error=``: IRFormatError, CheckpointError, ArtifactError,
DatasetError, ConfigError, ...) with a one-line message naming the file and the member.

Limits: ``EDGESEQ_MAX_MODEL_MB`` (default 128: bytes inflated from one model / plan / checkpoint /
artifact file), ``EDGESEQ_MAX_DATA_MB`` (default 2048: one data file), or in Python
``with safeio.limits(model_bytes=...)``.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import io
import json
import math
import os
import stat
import struct
import tokenize
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Optional, Sequence, Type

import numpy as np

from ..errors import EdgeseqError

MiB = 1 << 20


def _env_mb(name: str, default_mb: int) -> int:
    v = os.environ.get(name)
    if not v:
        return default_mb * MiB
    try:
        mb = float(v)
    except ValueError:
        mb = -1.0
    if not mb > 0 or not math.isfinite(mb):
        from ..errors import ConfigError

        raise ConfigError(f"{name} must be a positive number of MiB, got {v!r}")
    return int(mb * MiB)


@dataclass(frozen=True)
class Limits:
    """Caps applied while reading untrusted files (bytes unless named otherwise)."""

    model_bytes: int = 128 * MiB  # inflated bytes of one model / plan / checkpoint / artifact file
    data_bytes: int = 2048 * MiB  # inflated bytes of one data file (.npz, .npy, CSV, WAV)
    json_bytes: int = 16 * MiB  # one JSON document
    json_containers: int = 250_000  # objects + arrays in one JSON document
    json_depth: int = 64  # nesting depth of one JSON document
    zip_members: int = 65_536  # entries of one zip archive
    zip_directory_bytes: int = 16 * MiB  # size of its central directory
    npy_header_bytes: int = 65_536  # one .npy header

    @classmethod
    def from_env(cls) -> "Limits":
        return cls(model_bytes=_env_mb("EDGESEQ_MAX_MODEL_MB", 128), data_bytes=_env_mb("EDGESEQ_MAX_DATA_MB", 2048))


_LIMITS: contextvars.ContextVar[Optional[Limits]] = contextvars.ContextVar("edgeseq_safeio_limits", default=None)


def current_limits() -> Limits:
    lim = _LIMITS.get()
    return lim if lim is not None else Limits.from_env()


@contextlib.contextmanager
def limits(**overrides: int) -> Iterator[Limits]:
    """Use other caps inside the block: ``with limits(model_bytes=512 * MiB): load(path)``."""
    lim = replace(current_limits(), **overrides)
    token = _LIMITS.set(lim)
    try:
        yield lim
    finally:
        _LIMITS.reset(token)


def human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


LIMIT_HINT = {"model": "EDGESEQ_MAX_MODEL_MB", "data": "EDGESEQ_MAX_DATA_MB"}


class Budget:
    """Bytes still allowed to be inflated from one file (shared by nested archives)."""

    def __init__(self, total: int, kind: str = "model"):
        self.total = int(total)
        self.left = int(total)
        self.kind = kind

    @classmethod
    def for_kind(cls, kind: str) -> "Budget":
        lim = current_limits()
        return cls(lim.model_bytes if kind == "model" else lim.data_bytes, kind)

    def over(self, n: int) -> bool:
        return n > self.left

    def refund(self, n: int) -> None:
        self.left = min(self.total, self.left + int(n))

    def limit_text(self) -> str:
        return f"the {human(self.total)} load limit (raise it with {LIMIT_HINT.get(self.kind, 'EDGESEQ_MAX_MODEL_MB')})"

    def take(self, n: int, what: str, where: str, error: Type[EdgeseqError]) -> None:
        if n > self.left:
            raise error(f"{what} would take {human(n)}, more than {self.limit_text()} allows", where=where)
        self.left -= n


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
# JSON


class _Reject(ValueError):
    pass


def _no_constant(name: str):
    raise _Reject(f"{name} is not allowed (non-finite numbers are rejected)")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise _Reject(f"number {text[:20]} is out of range")
    return v


def _pairs(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise _Reject(f"duplicate key {k!r}")
        out[k] = v
    return out


def _depth(doc: Any, max_depth: int) -> int:
    deepest = 0
    stack = [(doc, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            children = v.values()
        elif isinstance(v, list):
            children = v
        else:
            continue
        deepest = max(deepest, d)
        if d > max_depth:
            return d
        stack.extend((c, d + 1) for c in children)
    return deepest


def parse_json(data: bytes | str, error: Type[EdgeseqError], *, where: str, what: str = "JSON document") -> Any:
    """Parse one JSON document under the caps of :class:`Limits`: UTF-8 only, no duplicate keys,
    no NaN / Infinity, bounded size, container count and depth."""
    lim = current_limits()
    if isinstance(data, str):
        text = data
        size = len(text)
    else:
        size = len(data)
    if size > lim.json_bytes:
        raise error(f"{what} is {human(size)}, more than the {human(lim.json_bytes)} allowed", where=where)
    if not isinstance(data, str):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise error(f"{what} is not UTF-8 text (byte {e.start})", where=where) from None
    containers = text.count("{") + text.count("[")
    if containers > lim.json_containers:
        raise error(f"{what} holds more than {lim.json_containers} objects/arrays", where=where)
    try:
        doc = json.loads(text, object_pairs_hook=_pairs, parse_constant=_no_constant, parse_float=_finite_float)
    except _Reject as e:
        raise error(f"{what} is invalid: {e}", where=where) from None
    except RecursionError:
        raise error(f"{what} is nested too deeply", where=where) from None
    except json.JSONDecodeError as e:
        raise error(f"{what} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})", where=where) from None
    except ValueError as e:  # e.g. an integer literal with thousands of digits
        raise error(f"{what} is invalid ({e})", where=where) from None
    if _depth(doc, lim.json_depth) > lim.json_depth:
        raise error(f"{what} is nested more than {lim.json_depth} levels deep", where=where)
    return doc


def read_json(path, error: Type[EdgeseqError], *, what: str = "JSON file") -> Any:
    """A JSON file (see :func:`parse_json`)."""
    data = read_file(path, error, max_bytes=current_limits().json_bytes, what=what)
    return parse_json(data, error, where=str(path), what=what)


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


__all__ = [
    "Limits",
    "limits",
    "current_limits",
    "Budget",
    "SafeZip",
    "parse_json",
    "read_json",
    "read_file",
    "read_text",
    "read_npy",
    "read_npz",
    "npz_keys",
    "read_npy_stream",
    "inside",
    "open_regular",
    "is_zip_with",
    "human",
    "MiB",
]


# ----------------------------------------------------------------------------------------------
# building objects from untrusted configs


def _vm_size() -> Optional[int]:
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@contextlib.contextmanager
def address_space_guard(extra_bytes: int) -> Iterator[None]:
    """While the block runs, the process may grow by at most ``extra_bytes`` of address space
    (Linux RLIMIT_AS): building a model from a config read from a file cannot allocate
    hundreds of gigabytes; it gets MemoryError / an allocation error instead. No-op where the
    limit is unavailable."""
    try:
        import resource
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    vm = _vm_size()
    if vm is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    new = vm + int(extra_bytes)
    if soft != resource.RLIM_INFINITY and soft < new:
        new = soft
    if hard != resource.RLIM_INFINITY and new > hard:
        new = hard
    try:
        resource.setrlimit(resource.RLIMIT_AS, (new, hard))
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# ----------------------------------------------------------------------------------------------
# CSV tables (streamed: memory grows with the values kept, not with the text)


MAX_LINE = 1 << 20


def _bounded_lines(text, error, where: str, limit: int = MAX_LINE):
    """The lines of a text stream, refusing one longer than ``limit`` characters (one endless line
    would otherwise be read whole)."""
    n = 0
    while True:
        line = text.readline(limit + 1)
        if not line:
            return
        n += 1
        if len(line) > limit:
            raise error(f"line {n} is longer than {limit} characters", where=where)
        yield line


def read_csv_columns(
    path,
    error: Type[EdgeseqError],
    *,
    required: Sequence[str],
    optional: Sequence[str] = (),
    numeric: Sequence[str] = (),
    convert: Optional[dict] = None,
    hint: Optional[str] = None,
    what: str = "CSV file",
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Columns of a CSV file with a header row, read row by row under the data limit.

    ``numeric`` columns become float64 arrays (a value that is not a number, or NaN / Inf, is an
    error naming the line and column: the NaN/Inf policy); ``convert`` maps a column name to
    ``fn(text, line) -> int`` (e.g. label names to class ids), giving an int64 array. Blank rows are
    skipped. Returns (columns present, header)."""
    import array
    import csv

    from .finite import nonfinite_allowed

    path = Path(path)
    where = str(path)
    f, size = open_regular(path, error, what)
    budget = Budget.for_kind("data")
    convert = dict(convert or {})
    with f:
        if size > budget.total:
            raise error(f"{what} is {human(size)}, more than {budget.limit_text()} allows", where=where)
        text = io.TextIOWrapper(f, encoding="utf-8-sig", newline="")
        reader = csv.reader(_bounded_lines(text, error, where))
        try:
            try:
                header = [h.strip().lower() for h in next(reader)]
            except StopIteration:
                raise error(f"the {what} is empty", where=where) from None
            missing = [c for c in required if c not in header]
            if missing:
                raise error(
                    f"missing column(s) {', '.join(missing)}; found {', '.join(h for h in header if h) or 'none'}",
                    where=where,
                    hint=hint,
                )
            wanted = [c for c in list(required) + list(optional) if c in header]
            dup = [c for c in wanted if header.count(c) > 1]
            if dup:
                raise error(f"column '{dup[0]}' appears more than once in the header", where=where)
            idx = {c: header.index(c) for c in wanted}
            need = max(idx.values()) + 1 if idx else 0
            cols = {c: array.array("d" if c not in convert else "q") for c in wanted}
            allow_nan = nonfinite_allowed()
            for row in reader:
                if not any(c.strip() for c in row):
                    continue
                line = reader.line_num
                if len(row) < need:
                    raise error(f"line {line} has {len(row)} fields; the header names {len(header)}", where=where)
                for c, i in idx.items():
                    v = row[i].strip()
                    if c in convert:
                        cols[c].append(int(convert[c](v, line)))
                        continue
                    if c not in numeric:
                        continue
                    try:
                        x = float(v)
                    except ValueError:
                        raise error(f"line {line}, column '{c}': {v[:40]!r} is not a number", where=where) from None
                    if not allow_nan and not math.isfinite(x):
                        raise error(
                            f"line {line}, column '{c}': {v[:40]!r} is NaN or Inf (non-finite values are rejected)",
                            where=where,
                            hint="clean the recording, or allow non-finite values "
                            "explicitly (EDGESEQ_ALLOW_NONFINITE=1)",
                        )
                    cols[c].append(x)
        except csv.Error as e:
            raise error(f"malformed CSV ({e})", where=where) from None
        except UnicodeDecodeError as e:
            raise error(f"{what} is not UTF-8 text ({e.reason} at byte {e.start})", where=where) from None
        except OSError as e:
            raise error(f"cannot read {what} ({e.strerror or e})", where=where) from None
    out = {
        c: np.frombuffer(a, dtype=np.float64 if a.typecode == "d" else np.int64).copy()
        for c, a in cols.items()
        if c in numeric or c in convert
    }
    return out, header


# ----------------------------------------------------------------------------------------------
# HDF5 trees (NIR files)

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def read_hdf5_tree(
    path,
    error: Type[EdgeseqError],
    *,
    what: str = "HDF5 file",
    install: str = "pip install h5py",
    max_depth: int = 32,
    max_objects: int = 100_000,
    max_strings: int = 1 << 18,
) -> dict:
    """The groups of an HDF5 file as nested dicts of numpy arrays and strings.

    The file is read whole under the model cap and opened from memory; links that leave it (soft,
    external) and datasets stored elsewhere (virtual, external) are refused; each dataset's
    declared size is charged to the model budget before it is read, so compressed data cannot
    inflate past the cap; nesting depth and object count are bounded."""
    where = str(path)
    lim = current_limits()
    data = read_file(path, error, max_bytes=lim.model_bytes, what=what)
    if not data.startswith(HDF5_MAGIC):
        raise error(f"not an HDF5 file (no HDF5 signature at the start), so not a {what}", where=where)
    try:
        import h5py
    except ImportError:
        from ..errors import ToolchainMissingError

        raise ToolchainMissingError("h5py", install=install, purpose=f"reading {what}s") from None
    budget = Budget(lim.model_bytes, "model")
    count = [0]

    def group(g, at: str, depth: int) -> dict:
        if depth > max_depth:
            raise error(f"groups nested deeper than {max_depth} levels", where=f"{where}:{at}")
        out: dict = {}
        for key in g.keys():
            count[0] += 1
            if count[0] > max_objects:
                raise error(f"more than {max_objects} objects", where=where)
            here = f"{at}/{key}"
            link = g.get(key, getlink=True)
            if not isinstance(link, h5py.HardLink):
                raise error(f"{type(link).__name__} '{here}' points outside the file (refused)", where=where)
            item = g[key]
            if isinstance(item, h5py.Group):
                out[key] = group(item, here, depth + 1)
            elif isinstance(item, h5py.Dataset):
                out[key] = dataset(item, here)
            else:  # pragma: no cover - named datatypes
                raise error(f"'{here}' is neither a group nor a dataset", where=where)
        return out

    def dataset(d, at: str):
        if d.is_virtual or d.external:
            raise error(f"dataset '{at}' is stored outside the file (refused)", where=where)
        dt = d.dtype
        if h5py.check_string_dtype(dt) is not None or dt.kind in "SO":
            if d.size > max_strings:
                raise error(f"string dataset '{at}' holds {d.size} strings (at most {max_strings})", where=where)
            budget.take(int(d.size) * 256, f"dataset '{at}'", where, error)
            v = d[()]
            if isinstance(v, bytes):
                return v.decode("utf-8", "replace")
            return np.array(
                [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in np.ravel(v)], dtype=object
            ).reshape(np.shape(v))
        if dt.kind not in "biuf" or dt.itemsize > 8:
            raise error(f"dataset '{at}' has dtype {dt}; only numbers and strings are read", where=where)
        n = int(np.prod(d.shape, dtype=np.int64)) * dt.itemsize if d.shape is not None else 0
        budget.take(n, f"dataset '{at}' ({d.shape} {dt})", where, error)
        return np.asarray(d[()])

    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            return group(f, "", 0)
    except EdgeseqError:
        raise
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as e:
        raise error(f"damaged {what} ({type(e).__name__}: {str(e)[:120]})", where=where) from None
