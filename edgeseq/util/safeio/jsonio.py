"""JSON parsed with duplicate keys, NaN / Infinity and absurd nesting refused, within the caps."""

from __future__ import annotations

import json
import math
from typing import Any, Type

from ...errors import EdgeseqError
from .files import read_file
from .limits import current_limits, human

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
