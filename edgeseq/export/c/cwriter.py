"""Small helpers for writing C source text: float literals, constant tables, identifiers, indentation."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ...errors import ConfigError, NumericsError

_C_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
C_KEYWORDS = frozenset(
    "auto break case char const continue default do double else enum extern float for goto if inline int long "
    "register restrict return short signed sizeof static struct switch typedef union unsigned void volatile while "
    "_Bool _Complex _Imaginary".split()
)


def c_float(value, where: str | None = None) -> str:
    """The shortest decimal literal that parses back to the same float32 value (with an ``f`` suffix)."""
    f = np.float32(value)
    if not np.isfinite(f):
        raise NumericsError(f"value {value!r} is not finite and cannot be written as a C constant", where=where)
    if f == 0:
        return "-0.0f" if np.signbit(f) else "0.0f"
    a = abs(float(f))
    if 1e-4 <= a < 1e7:
        s = np.format_float_positional(f, unique=True, trim="0")
    else:
        s = np.format_float_scientific(f, unique=True, trim="0")
    if "." not in s and "e" not in s:
        s += ".0"
    return s + "f"


def c_ident(name: str) -> str:
    """A C identifier derived from an IR name ('layers.0' -> 'layers_0')."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if not s or s[0].isdigit():
        s = "n_" + s
    return s


def check_prefix(prefix: str) -> str:
    if not _C_IDENT.match(prefix) or prefix in C_KEYWORDS or len(prefix) > 24:
        raise ConfigError(
            f"C symbol prefix '{prefix}' is not a valid C identifier (letters, digits, _; at most 24 characters)"
        )
    return prefix


def float_table(name: str, values: np.ndarray, comment: str = "", per_line: int = 8, where: str | None = None) -> str:
    """``static const float name[n] = {...};`` for a flattened array (row-major)."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if flat.size == 0:
        raise ConfigError(f"constant table '{name}' is empty", where=where)
    lits = [c_float(v, where) for v in flat]
    lines = []
    if comment:
        lines.append(f"/* {comment} */")
    lines.append(f"static const float {name}[{flat.size}] = {{")
    for i in range(0, len(lits), per_line):
        lines.append("    " + ", ".join(lits[i : i + per_line]) + ",")
    lines.append("};")
    return "\n".join(lines)


INT_RANGES = {
    "int8_t": (-128, 127),
    "uint8_t": (0, 255),
    "int16_t": (-32768, 32767),
    "int32_t": (-(2**31), 2**31 - 1),
    "int64_t": (-(2**63), 2**63 - 1),
}


def c_int(value: int) -> str:
    """A C99 integer literal for ``value`` (int range: plain; beyond: INT64_C; the minima spelt safely)."""
    v = int(value)
    if -(2**31) < v < 2**31:
        return str(v)
    if v == -(2**31):
        return "(-2147483647 - 1)"
    if v == -(2**63):
        return "INT64_MIN"
    if not -(2**63) < v < 2**63:
        raise ConfigError(f"integer {v} does not fit 64 bits")
    return f"INT64_C({v})"


def int_table(
    name: str, values: np.ndarray, ctype: str, comment: str = "", per_line: int = 16, where: str | None = None
) -> str:
    """``static const <ctype> name[n] = {...};`` for integer tables (fixed-point weights, LUTs)."""
    flat = np.asarray(values).reshape(-1)
    lo, hi = INT_RANGES[ctype]
    if (
        flat.size == 0
        or (flat.dtype.kind == "f" and np.any(flat != np.round(flat)))
        or int(flat.min()) < lo
        or int(flat.max()) > hi
    ):
        raise ConfigError(f"table '{name}' is not integral within the {ctype} range", where=where)
    lits = [c_int(int(v)) for v in flat]
    lines = [f"/* {comment} */"] if comment else []
    lines.append(f"static const {ctype} {name}[{flat.size}] = {{")
    for i in range(0, len(lits), per_line):
        lines.append("    " + ", ".join(lits[i : i + per_line]) + ",")
    lines.append("};")
    return "\n".join(lines)


def indent(lines: Iterable[str] | str, level: int = 1) -> list[str]:
    if isinstance(lines, str):
        lines = lines.split("\n")
    pad = "    " * level
    return [(pad + ln) if ln.strip() else "" for ln in lines]


@dataclass
class CSources:
    """Generated C sources (file name -> text) and what they contain (``info``: sizes, layouts)."""

    prefix: str
    files: dict[str, str]
    info: dict[str, Any] = field(default_factory=dict)

    def write(self, directory) -> list[Path]:
        from ...util.fs import atomic_write_text

        directory = Path(directory)
        return [atomic_write_text(directory / name, text) for name, text in self.files.items()]
