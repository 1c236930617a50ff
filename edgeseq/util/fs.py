"""Atomic file and directory output: an artifact is either complete or absent, never half-written,
and an existing output is only replaced when the caller asked for it (``force``)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from ..errors import ArtifactError


def check_parent(path: Path) -> None:
    """``path``'s directory exists or can be created: the nearest existing ancestor is a writable
    directory. Nothing is created here (a command that fails later leaves no empty directories)."""
    parent = path.parent
    probe = parent
    while not probe.exists():
        if probe.is_symlink():  # a dangling link
            raise ArtifactError("the output's parent is a broken symbolic link", where=str(probe))
        if probe == probe.parent:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ArtifactError("is not a directory", where=str(probe))
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ArtifactError("directory is not writable", where=str(probe))


def _make_parents(path: Path) -> list[Path]:
    """Create ``path``'s missing parent directories; returns those created (innermost last)."""
    missing = []
    p = path.parent
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    try:
        for d in reversed(missing):
            d.mkdir()
    except OSError as e:
        _remove_empty(missing)
        raise ArtifactError(f"cannot create directory ({e.strerror})", where=str(path.parent)) from None
    return list(reversed(missing))


def _remove_empty(dirs: list[Path]) -> None:
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_prefix(path: Path) -> str:
    short = os.fsdecode(os.fsencode(path.name)[:48]).rstrip(".") or "file"
    return f".{short}.{hashlib.sha256(os.fsencode(path.name)).hexdigest()[:8]}.edgeseq-tmp-"


def _clean_stale_tmp(path: Path) -> None:
    """Remove the temporary files of killed writers of ``path`` (their pid is in the name)."""
    prefix = _tmp_prefix(path)
    try:
        entries = [e for e in path.parent.iterdir() if e.name.startswith(prefix)]
    except OSError:
        return
    for e in entries:
        m = re.match(r"(\d+)-", e.name[len(prefix) :])
        if m and not _pid_alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                e.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same directory and a rename (a
    temporary file left by a killed writer is removed by the next write to ``path``)."""
    path = as_path(path)
    check_name_lengths(path, str(path))
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    check_parent(path)
    if path.is_dir():
        raise ArtifactError("is a directory; name a file to write", where=str(path))
    if path.exists() and not path.is_file():  # never replace a device node, FIFO or socket
        raise ArtifactError("is not a regular file (a device, pipe or socket); refusing to replace it", where=str(path))
    _make_parents(path)
    _clean_stale_tmp(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{_tmp_prefix(path)}{os.getpid()}-", suffix=".tmp")
    except OSError as e:
        raise ArtifactError(f"cannot write ({e.strerror})", where=str(path)) from None
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


def check_output_file(path: str | os.PathLike, force: bool = False) -> Path:
    """Fail early (before any work) if ``path`` cannot become an output file: an existing file is
    only replaced with ``force``; directories, over-long names and unwritable places are refused."""
    path = as_path(path)
    check_name_lengths(path, str(path))
    if path.is_dir():
        raise ArtifactError("is a directory; name a file to write", where=str(path))
    if path.exists() and not path.is_file():
        raise ArtifactError("is not a regular file (a device, pipe or socket); refusing to replace it", where=str(path))
    if path.exists() and not force:
        raise ArtifactError("output file already exists", where=str(path), hint="pass --force to replace it")
    check_parent(path)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(
        path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False, default=_json_default) + "\n"
    )


def _json_default(o: Any):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


NAME_MAX_FALLBACK = 255
LOCK_SUFFIX = ".lock"  # a staging directory's lock is its sibling "<stage>.lock" (nothing extra inside it)
OWNER_FILE = ".edgeseq-output.json"


def _name_max(parent: Path) -> int:
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return int(os.pathconf(probe, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return NAME_MAX_FALLBACK


def as_path(path, what: str = "output path") -> Path:
    """``path`` (a str or os.PathLike naming a str path) as a Path, or ArtifactError."""
    if isinstance(path, Path):
        return path
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise ArtifactError(f"the {what} must be a string or a path, got {type(path).__name__}")
    if not path.strip():
        raise ArtifactError(f"the {what} is empty", where=repr(path))
    if "\x00" in path:
        raise ArtifactError(f"the {what} contains a NUL character", where=repr(path))
    return Path(path)


def resolve_output(path: str | os.PathLike) -> Path:
    """The directory an ``--out`` really names: a symlink is followed (the output goes where it
    points, the link stays); the current directory, its parents, the home directory and a file
    system root are refused, and so is a name longer than the file system allows."""
    p = as_path(path)
    raw = str(p)
    check_name_lengths(p, raw)
    try:
        if p.is_symlink():
            p = Path(os.path.realpath(p))
        p = Path(os.path.abspath(p))
        real = p.resolve()
        cwd = Path.cwd().resolve()
        home = Path.home().resolve()
    except (OSError, RuntimeError) as e:
        raise ArtifactError(f"cannot resolve the output path ({e})", where=str(raw)) from None
    if real == cwd or real in cwd.parents or real == home or real == Path(real.anchor):
        raise ArtifactError(
            "refusing to use the current directory, one of its parents, the home directory or a "
            "file system root as an output directory",
            where=str(raw),
            hint="name a new directory, e.g. --out build/NAME",
        )
    check_name_lengths(p, str(raw))
    return p


def check_name_lengths(p: Path, raw: str) -> None:
    """Refuse a path with a component or a total length the file system cannot hold (checked
    before the path is used, so the error names it instead of failing half-way)."""
    shown = raw[:120] + ("..." if len(raw) > 120 else "")
    if len(os.fsencode(str(p))) >= 4096:
        raise ArtifactError(f"the path is {len(os.fsencode(str(p)))} bytes long; the system allows 4095", where=shown)
    limit = _name_max(Path(os.path.abspath(p)).parent)
    for part in p.parts:
        if len(os.fsencode(part)) > limit:
            raise ArtifactError(
                f"the name '{part[:40]}...' is {len(os.fsencode(part))} bytes long; the file system allows {limit}",
                where=shown,
            )


def _stage_prefix(path: Path) -> str:
    """Hidden sibling names of the staging directories of ``path`` (short enough for any name)."""
    name = path.name
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:8]
    short = os.fsdecode(os.fsencode(name)[:48]).rstrip(".") or "out"
    return f".{short}.{digest}.edgeseq-"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stage_owner(stage: Path) -> Optional[int]:
    """The pid of the run writing ``stage`` when that run is still alive, else None."""
    m = re.search(r"\.edgeseq-(?:stage|old)-(\d+)-", stage.name)
    pid = int(m.group(1)) if m else -1
    lock = stage.with_name(stage.name + LOCK_SUFFIX)
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return pid if _pid_alive(pid) and pid != os.getpid() else None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return pid if pid > 0 else 0  # held: a live run
    else:
        young = time.time() - os.fstat(fd).st_mtime < 5.0  # created but not yet locked by its run
        return pid if young and pid != os.getpid() and _pid_alive(pid) else None
    finally:
        os.close(fd)


def stale_stages(path: str | os.PathLike) -> tuple[list[Path], list[tuple[Path, int]]]:
    """(staging directories of ``path`` left by runs that died, those of runs still writing)."""
    path = Path(path)
    prefix = _stage_prefix(path)
    dead: list[Path] = []
    live: list[tuple[Path, int]] = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return dead, live
    for e in entries:
        if not e.name.startswith(prefix) or e.is_symlink():
            continue
        if e.name.endswith(LOCK_SUFFIX):
            if (
                not e.with_name(e.name[: -len(LOCK_SUFFIX)]).exists()
                and _stage_owner(e.with_name(e.name[: -len(LOCK_SUFFIX)])) is None
            ):
                with contextlib.suppress(OSError):
                    e.unlink()  # the lock of a finished or removed stage
            continue
        if not e.is_dir():
            continue
        owner = _stage_owner(e)
        (dead.append(e) if owner is None else live.append((e, owner)))
    return dead, live


def clean_stale(path: str | os.PathLike, log=None) -> list[tuple[Path, int]]:
    """Remove what killed runs left next to ``path`` (staging directories, temporary files); returns
    the staging directories of runs that are still writing."""
    path = Path(path)
    dead, live = stale_stages(path)
    for d in dead:
        shutil.rmtree(d, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(d.with_name(d.name + LOCK_SUFFIX))
        if d.exists():
            print(f"edgeseq: warning: cannot remove the unfinished output {d} of an earlier run", file=sys.stderr)
        else:
            (log or (lambda m: print(f"edgeseq: note: {m}", file=sys.stderr)))(
                f"removed the unfinished output of a killed earlier run ({d.name})"
            )
    return live


def _owner_of(path: Path) -> Optional[str]:
    try:
        with open(path / OWNER_FILE, "rb") as f:
            doc = json.loads(f.read(4096).decode("utf-8"))
        return doc.get("owner") if isinstance(doc, dict) and isinstance(doc.get("owner"), str) else None
    except (OSError, ValueError):
        return None


def check_output_dir(path: str | os.PathLike, force: bool = False, *, owner: Optional[str] = None) -> Path:
    """Fail early (before any work) if ``path`` cannot become an output directory; returns the
    directory that will be written (a symlinked ``path`` is followed). Staging directories left
    next to it by killed runs are removed here; one of a run still writing it is an error (without
    ``force``). An existing directory written by the same ``owner`` (e.g. ``"edgeseq demo har"``)
    is replaced without ``force``."""
    path = resolve_output(path)
    if path.exists():
        if not path.is_dir():
            raise ArtifactError("exists and is not a directory", where=str(path))
        replaceable = force or (owner is not None and _owner_of(path) == owner)
        try:
            nonempty = any(path.iterdir())
        except OSError as e:
            raise ArtifactError(f"cannot read the output directory ({e.strerror})", where=str(path)) from None
        if not replaceable and nonempty:
            raise ArtifactError("output directory already exists", where=str(path), hint="pass --force to replace it")
    check_parent(path)
    live = clean_stale(path)
    if live and not force:
        stage, pid = live[0]
        raise ArtifactError(
            f"another edgeseq run (pid {pid}) is writing this output directory",
            where=str(path),
            hint="wait for it to finish, or pass --force to replace its result",
        )
    return path


# -- renames that cannot lose the previous output --------------------------------------------------

_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_AT_FDCWD = -100


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """Linux renameat2(2); False when the system or file system does not offer it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(dst))


def _install_new(stage: Path, path: Path) -> None:
    """Move ``stage`` to ``path``, which must not exist (or be an empty directory): a concurrent run
    that created ``path`` first keeps it."""
    with contextlib.suppress(FileNotFoundError, OSError):
        if path.is_dir() and not path.is_symlink():
            path.rmdir()  # only succeeds when empty
    if path.exists() or path.is_symlink():
        raise FileExistsError(errno.EEXIST, "exists", str(path))
    if not _renameat2(stage, path, _RENAME_NOREPLACE):
        os.rename(stage, path)  # fails on a non-empty directory


def _install_replacing(stage: Path, path: Path, trash: Path) -> None:
    """Put ``stage`` at ``path`` and the previous output at ``trash``; ``path`` always holds a
    complete output (one atomic exchange where the system offers it)."""
    if _renameat2(stage, path, _RENAME_EXCHANGE):
        os.rename(stage, trash)
        return
    os.rename(path, trash)
    try:
        os.rename(stage, path)
    except OSError:
        os.rename(trash, path)
        raise


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM / SIGHUP (see :func:`terminate_cleanly`)."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        self.name = signal.Signals(signum).name
        super().__init__(128 + self.signum)


def raise_on_signal(signum, frame) -> None:
    """Signal handler: a termination request becomes :class:`Terminated` so ``finally`` blocks
    and staging clean-up run before the process exits."""
    raise Terminated(signum)


@contextlib.contextmanager
def terminate_cleanly() -> Iterator[None]:
    """While the block runs in the main thread, SIGTERM / SIGHUP raise :class:`Terminated` (so
    staging directories are removed) unless the program installed its own handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                saved[sig] = signal.signal(sig, raise_on_signal)
    try:
        yield
    finally:
        for sig, old in saved.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, old)


@contextlib.contextmanager
def output_dir(path: str | os.PathLike, force: bool = False, *, owner: Optional[str] = None) -> Iterator[Path]:
    """Yield a fresh staging directory next to ``path``; on success it becomes ``path`` in one rename.

    If the body raises (or the process gets SIGTERM / SIGHUP), the staging directory is removed and
    ``path`` is left untouched; if the process is killed outright, the next run to ``path`` removes
    it (see :func:`check_output_dir`). Without ``force`` exactly one of several concurrent runs to a
    new ``path`` wins; the others raise ArtifactError. With ``owner`` the directory is marked as
    that command's output (which it may replace without ``force`` next time)."""
    path = check_output_dir(path, force, owner=owner)
    replace_existing = force or (owner is not None and path.exists() and _owner_of(path) == owner)
    prefix = _stage_prefix(path)
    created = _make_parents(path)
    try:
        stage = Path(tempfile.mkdtemp(dir=path.parent, prefix=f"{prefix}stage-{os.getpid()}-", suffix=".partial"))
    except OSError as e:
        _remove_empty(created)
        raise ArtifactError(f"cannot create a staging directory ({e.strerror})", where=str(path.parent)) from None
    done = False
    lock_fd = -1
    lock = stage.with_name(stage.name + LOCK_SUFFIX)
    try:
        with terminate_cleanly():
            lock_fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            if owner is not None:
                (stage / OWNER_FILE).write_text(json.dumps({"owner": owner}) + "\n")
            yield stage
            os.chmod(stage, 0o777 & ~_umask())  # mkdtemp creates 0700; a finished output gets normal permissions
            try:
                if replace_existing and path.exists():
                    trash = path.with_name(f"{prefix}old-{os.getpid()}-{os.urandom(4).hex()}.partial")
                    _install_replacing(stage, path, trash)
                    shutil.rmtree(trash, ignore_errors=True)
                else:
                    _install_new(stage, path)
            except FileExistsError:
                raise ArtifactError(
                    "another run created this output directory first; nothing was replaced",
                    where=str(path),
                    hint="pass --force to replace it",
                ) from None
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise ArtifactError(
                        "another run created this output directory first; nothing was replaced",
                        where=str(path),
                        hint="pass --force to replace it",
                    ) from None
                raise ArtifactError(
                    f"cannot move the finished output into place ({e.strerror})", where=str(path)
                ) from None
            done = True
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
        if lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.unlink(lock)
            os.close(lock_fd)
        if not done:
            _remove_empty(created)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
