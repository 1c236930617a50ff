"""Structural schemas for JSON documents read from files (graph.json, checkpoint.json, quant.json,
manifest.json, configs): checked once, right after parsing, so the code that uses a document can
assume its shape. A mismatch raises the caller's typed error naming the file and the exact place::

    graph.json: nodes[3].inputs[0] must be a string, got int

Specs compose: ``Obj(required, optional)``, ``List(item)``, ``Map(value)``, ``Str()``, ``Int()``,
``Num()``, ``Bool()``, ``Null()``, ``OneOf(a, b)``, ``Const(v)``, ``AnyJSON()``.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional, Type

from ..errors import EdgeseqError

_JSON_NAMES = {
    dict: "object",
    list: "list",
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    type(None): "null",
}


def kind_of(v: Any) -> str:
    return _JSON_NAMES.get(type(v), type(v).__name__)


class SchemaMismatch(Exception):
    def __init__(self, path: str, message: str):
        self.path, self.message = path, message
        super().__init__(f"{path}: {message}" if path else message)


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    k = str(key)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
        k = repr(k)
    return f"{path}.{k}" if path else k


class Spec:
    desc = "a value"

    def check(self, v: Any, path: str) -> None:
        raise NotImplementedError

    def fail(self, v: Any, path: str, what: Optional[str] = None) -> None:
        got = kind_of(v)
        if isinstance(v, (str, int, float)) and not isinstance(v, bool) and len(repr(v)) <= 40:
            got += f" {v!r}"
        raise SchemaMismatch(path, f"must be {what or self.desc}, got {got}")


class AnyJSON(Spec):
    desc = "any value"

    def check(self, v, path):
        return None


class Str(Spec):
    def __init__(self, *, pattern: Optional[str] = None, max_len: int = 4096, choices=None):
        self.pattern = re.compile(pattern) if pattern else None
        self.max_len = max_len
        self.choices = tuple(choices) if choices else None
        self.desc = ("one of " + ", ".join(repr(c) for c in self.choices)) if self.choices else "a string"

    def check(self, v, path):
        if not isinstance(v, str) or len(v) > self.max_len:
            self.fail(v, path)
        if self.choices and v not in self.choices:
            self.fail(v, path)
        if self.pattern and not self.pattern.fullmatch(v):
            self.fail(v, path, f"a string matching {self.pattern.pattern}")


class Int(Spec):
    def __init__(self, *, min: Optional[int] = None, max: Optional[int] = None):
        self.min, self.max = min, max
        rng = ""
        if min is not None and max is not None:
            rng = f" in {min}..{max}"
        elif min is not None:
            rng = f" >= {min}"
        elif max is not None:
            rng = f" <= {max}"
        self.desc = f"an integer{rng}"

    def check(self, v, path):
        if not isinstance(v, int) or isinstance(v, bool):
            self.fail(v, path)
        if (self.min is not None and v < self.min) or (self.max is not None and v > self.max):
            self.fail(v, path)


class Num(Spec):
    def __init__(self, *, min: Optional[float] = None, positive: bool = False):
        self.min, self.positive = min, positive
        self.desc = "a positive number" if positive else ("a number" if min is None else f"a number >= {min}")

    def check(self, v, path):
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            self.fail(v, path)
        if (self.positive and not v > 0) or (self.min is not None and v < self.min):
            self.fail(v, path)


class Bool(Spec):
    desc = "true or false"

    def check(self, v, path):
        if not isinstance(v, bool):
            self.fail(v, path)


class Null(Spec):
    desc = "null"

    def check(self, v, path):
        if v is not None:
            self.fail(v, path)


class Const(Spec):
    def __init__(self, value: Any):
        self.value = value
        self.desc = repr(value)

    def check(self, v, path):
        if type(v) is not type(self.value) or v != self.value:
            self.fail(v, path)


class OneOf(Spec):
    def __init__(self, *specs: Spec):
        self.specs = specs
        self.desc = " or ".join(s.desc for s in specs)

    def check(self, v, path):
        for s in self.specs:
            try:
                s.check(v, path)
                return
            except SchemaMismatch:
                continue
        self.fail(v, path)


def Optional_(spec: Spec) -> Spec:
    return OneOf(Null(), spec)


class List(Spec):
    def __init__(self, item: Spec = AnyJSON(), *, min_len: int = 0, max_len: Optional[int] = None):
        self.item, self.min_len, self.max_len = item, min_len, max_len
        self.desc = "a list" + (" (non-empty)" if min_len == 1 else "")

    def check(self, v, path):
        if not isinstance(v, list):
            self.fail(v, path)
        if len(v) < self.min_len or (self.max_len is not None and len(v) > self.max_len):
            n = f"{self.min_len}..{self.max_len}" if self.max_len is not None else f"at least {self.min_len}"
            raise SchemaMismatch(path, f"must have {n} entries, got {len(v)}")
        for i, item in enumerate(v):
            self.item.check(item, _join(path, i))


class Map(Spec):
    """An object with arbitrary keys (``key``: a Str spec) and values of one spec."""

    def __init__(self, value: Spec = AnyJSON(), *, key: Optional[Str] = None):
        self.value, self.key = value, key
        self.desc = "an object"

    def check(self, v, path):
        if not isinstance(v, dict):
            self.fail(v, path)
        for k, item in v.items():
            if self.key is not None:
                self.key.check(k, _join(path, k) + " (key)")
            self.value.check(item, _join(path, k))


class Obj(Spec):
    """An object with ``required`` and ``optional`` keys (extra keys are allowed unless ``closed``)."""

    desc = "an object"

    def __init__(
        self,
        required: Optional[Mapping[str, Spec]] = None,
        optional: Optional[Mapping[str, Spec]] = None,
        *,
        closed: bool = False,
    ):
        self.required = dict(required or {})
        self.optional = dict(optional or {})
        self.closed = closed

    def check(self, v, path):
        if not isinstance(v, dict):
            self.fail(v, path)
        for k, spec in self.required.items():
            if k not in v:
                raise SchemaMismatch(path, f"is missing the key '{k}'")
            spec.check(v[k], _join(path, k))
        for k, spec in self.optional.items():
            if k in v:
                spec.check(v[k], _join(path, k))
        if self.closed:
            extra = sorted(set(v) - set(self.required) - set(self.optional))
            if extra:
                raise SchemaMismatch(path, f"has unknown key '{extra[0]}'")


def validate(doc: Any, spec: Spec, error: Type[EdgeseqError], *, where: str, what: str) -> Any:
    """``doc`` if it matches ``spec``; else ``error`` with a one-line message naming the place."""
    try:
        spec.check(doc, "")
    except SchemaMismatch as e:
        place = f"{what}: {e.path}" if e.path else what
        raise error(f"{place} {e.message}", where=where) from None
    return doc


# shared pieces
SHA256 = Str(pattern=r"[0-9a-f]{64}")
SHAPE = List(Int(min=0), max_len=32)
DTYPE = Str(pattern=r"[<>|=]?[biufc][0-9]{1,2}")
ARRAY_ENTRY = Obj({"dtype": DTYPE, "shape": SHAPE, "sha256": SHA256})

__all__ = [
    "Spec",
    "AnyJSON",
    "Str",
    "Int",
    "Num",
    "Bool",
    "Null",
    "Const",
    "OneOf",
    "Optional_",
    "List",
    "Map",
    "Obj",
    "validate",
    "SchemaMismatch",
    "kind_of",
    "SHA256",
    "SHAPE",
    "DTYPE",
    "ARRAY_ENTRY",
]
