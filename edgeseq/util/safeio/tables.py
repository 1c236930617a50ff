"""CSV tables, streamed: memory grows with the values kept, not with the text."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Optional, Sequence, Type

import numpy as np

from ...errors import EdgeseqError
from .files import open_regular
from .limits import Budget, human

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

    from ..finite import nonfinite_allowed

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
