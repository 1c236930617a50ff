"""Argument types of the command line: each parses and range-checks one kind of value once, so
the commands never see NaN budgets, negative counts or zero-length chunks, and the parser whose
errors are one line (``edgeseq: error: edgeseq export: argument --target: ...``)."""

from __future__ import annotations

import argparse
import math
import sys


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        message = " ".join(str(message).split())
        print(f"edgeseq: error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


class LazyChoices:
    """The choices of an option, imported on first use (so building the parser imports no torch)."""

    def __init__(self, module: str, attr: str):
        self.module, self.attr = module, attr
        self._values = None

    def _get(self) -> tuple:
        if self._values is None:
            import importlib

            self._values = tuple(getattr(importlib.import_module(self.module), self.attr))
        return self._values

    def __contains__(self, value) -> bool:
        return value in self._get()

    def __iter__(self):
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


def _number(text: str, kind, what: str):
    try:
        v = kind(text)
    except (TypeError, ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if isinstance(v, float) and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def count(text: str) -> int:
    """An integer >= 1."""
    v = _number(text, int, "an integer")
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def count0(text: str) -> int:
    """An integer >= 0."""
    v = _number(text, int, "an integer")
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {v}")
    return v


def seed(text: str) -> int:
    v = _number(text, int, "an integer")
    if not 0 <= v < 2 ** 32:
        raise argparse.ArgumentTypeError(f"must be in 0..2^32-1, got {v}")
    return v


def real(text: str) -> float:
    """A finite number."""
    return _number(text, float, "a number")


def positive(text: str) -> float:
    """A finite number > 0."""
    v = real(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return v


def nonnegative(text: str) -> float:
    """A finite number >= 0."""
    v = real(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return v


def fraction(text: str) -> float:
    """A number in [0, 1)."""
    v = real(text)
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return v
