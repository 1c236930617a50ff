"""C compilers for the targets: GCC (the default, Debian's cross compilers) and Clang/LLVM.

Every target compiles with either; the objects are always linked by the target's GCC (its C
library, start-up files and libgcc), so Clang needs nothing beyond Debian's ``clang`` package.
A target's ``compiler`` option picks one:

- ``gcc``: the target's GCC;
- ``clang`` (the newest Clang installed, version 14 or later) or ``clang-NN`` (that version);
- ``auto`` (the default): Clang where the installed one executes fewer instructions than GCC on
  this target (:data:`PREFERRED`, measured by ``benchmarks/bench_device.py``), else GCC.

Both compilers build bit-identical integer models (checked at export like every build).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import lru_cache

from ..errors import ConfigError, ToolchainMissingError

CLANG_NAMES = tuple(f"clang-{v}" for v in range(22, 13, -1)) + ("clang",)
CLANG_APT = "clang lld llvm"
MIN_CLANG = 14

# auto: the oldest Clang that executes fewer instructions than GCC 12 on each target (measured by
# benchmarks/bench_device.py, tables in benchmarks/BENCHMARKS.md: Clang 19 wins on the float models
# on every target by 25-56%; on the int8 HAR model it is 4-6% ahead on cortex-m55 and aarch64 and
# within 0.3% of GCC on cortex-m4 / m7 (whose kernels are inline assembly); Clang 14 wins on
# cortex-m55 and aarch64 for the int8 model but crashes compiling a float GRU for cortex-m55); GCC
# elsewhere and when older.
PREFERRED: dict[str, int] = {
    "cortex-m4": 19,
    "cortex-m7": 19,
    "cortex-m55": 19,
    "arm": 19,
}


@lru_cache(maxsize=None)
def clang_major(path: str) -> int:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    m = re.search(r"clang version (\d+)", out)
    return int(m.group(1)) if m else 0


def find_clang(name: str = "clang") -> str | None:
    """Path of Clang ``name`` (``clang``: the newest installed, ``clang-NN``: that version), or None."""
    names = CLANG_NAMES if name == "clang" else (name,)
    for n in names:
        p = shutil.which(n)
        if p and clang_major(p) >= MIN_CLANG:
            return p
    return None


def require_clang(name: str = "clang") -> str:
    p = find_clang(name)
    if p is None:
        pkgs = CLANG_APT if name == "clang" else f"{name} lld-{name[6:]} llvm-{name[6:]}"
        raise ToolchainMissingError(
            name,
            install=f"sudo apt-get install -y {pkgs}",
            purpose=f"building with Clang/LLVM (version {MIN_CLANG} or later)",
        )
    return p


def check_compiler(name: str) -> str:
    """Validate a ``compiler`` option value."""
    name = str(name)
    if name in ("auto", "gcc", "clang") or re.fullmatch(r"clang-\d+", name):
        return name
    raise ConfigError(f"unknown compiler '{name}'; expected auto, gcc, clang or clang-NN (e.g. clang-19)")


def resolve(option: str, target_name: str) -> str:
    """The compiler a target builds with: ``gcc`` or a Clang executable name (``clang-NN``)."""
    option = check_compiler(option)
    if option == "auto":
        p = find_clang()
        need = PREFERRED.get(target_name)
        option = "clang" if p is not None and need is not None and clang_major(p) >= need else "gcc"
    if option == "clang":  # the newest installed, by its versioned name (a rebuild picks the same one)
        p = find_clang()
        return os.path.basename(p) if p else "clang"
    return option


@lru_cache(maxsize=None)
def gcc_system_includes(gcc: str) -> tuple[str, ...]:
    """The C library's include directories of a (cross) GCC, without GCC's own headers (Clang
    brings its own stdint.h, arm_acle.h, arm_mve.h, arm_neon.h)."""
    try:
        err = subprocess.run(
            [gcc, "-E", "-v", "-x", "c", "/dev/null", "-o", "/dev/null"], capture_output=True, text=True, timeout=60
        ).stderr
    except (OSError, subprocess.SubprocessError):
        return ()
    dirs, on = [], False
    for line in err.splitlines():
        if line.startswith("#include <...> search starts here"):
            on = True
        elif line.startswith("End of search list"):
            on = False
        elif on:
            d = os.path.normpath(line.strip())
            if "/lib/gcc/" not in d:
                dirs.append(d)
    return tuple(dirs)
