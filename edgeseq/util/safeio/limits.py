"""Caps on what edgeseq inflates from one untrusted file: :class:`Limits` (configurable, per
context) and the :class:`Budget` shared by nested archives."""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from dataclasses import dataclass, replace
from typing import Iterator, Optional, Type

from ...errors import EdgeseqError

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
        from ...errors import ConfigError

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
