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
    if not 0 <= v < 2**32:
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


def add_nir_options(p) -> None:
    """How a .nir model is read (a continuous-time graph stores no time step)."""
    g = p.add_argument_group("NIR models (.nir)")
    g.add_argument(
        "--nir-dt",
        type=positive,
        metavar="SECONDS",
        help="time step (default: the producer's; 1e-4 s, snntorch's export step)",
    )
    g.add_argument(
        "--nir-method", choices=("euler", "exact"), help="discretisation: forward Euler (default) or exact exp(-dt/tau)"
    )
    g.add_argument(
        "--nir-reset",
        choices=("zero", "subtract"),
        help="override the reset rule: to v_reset (NIR's) or subtract the threshold",
    )
    g.add_argument(
        "--nir-semantics",
        choices=("auto", "nir", "snntorch"),
        default="auto",
        help="neuron semantics: snntorch's Leaky/Synaptic (auto: for snntorch's exports) or NIR's",
    )


def nir_options(args):
    """The NirOptions of :func:`add_nir_options`' flags (None when none was given)."""
    given = {k: getattr(args, "nir_" + k, None) for k in ("dt", "method", "reset")}
    sem = getattr(args, "nir_semantics", "auto")
    if not any(v is not None for v in given.values()) and sem in (None, "auto"):
        return None
    from ..frontends.nir import NirOptions

    return NirOptions(semantics=sem or "auto", **given)
