"""Building objects from untrusted configs inside an address-space cap."""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

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
