"""Named cells as step programs: each recurrent / spiking op kind lowers here, in one place.

``step_program(op, n_in)`` returns the :class:`~edgeseq.ir.step.StepProgram` of a scan op whose
input has ``n_in`` features (cached per op and width). The program's inputs are the op's inputs (``x``), its states are the op's ``state_shapes``
in the same order, and its outputs are the op's outputs. Quantization points carry the names the
quantization plan uses (``<node>:<name>``, ``<node>/<state>``).

The reference interpreter keeps its own per-cell equations (the specification); tests check every
lowering against it.
"""

from __future__ import annotations

import weakref
from typing import Callable

from ...errors import UnsupportedOpError
from ..ops import Op, Scan
from ..step import StepProgram

LOWERINGS: dict[type[Op], Callable[[Op, int], StepProgram]] = {}
_CACHE: "weakref.WeakKeyDictionary[Op, dict[int, StepProgram]]" = weakref.WeakKeyDictionary()


def lowering(*classes):
    """Register ``fn(op, n_in) -> StepProgram`` for op classes."""

    def deco(fn):
        for c in classes:
            LOWERINGS[c] = fn
        return fn

    return deco


def has_step_program(op: Op) -> bool:
    _load()
    return type(op) in LOWERINGS or getattr(op, "program", None) is not None


def step_program(op: Op, n_in: int) -> StepProgram:
    """The step program of a scan op with ``n_in`` input features (a generic Scan's own)."""
    own = getattr(op, "program", None)
    if own is not None:
        return own
    _load()
    per_op = _CACHE.setdefault(op, {})
    prog = per_op.get(n_in)
    if prog is None:
        fn = LOWERINGS.get(type(op))
        if fn is None:
            raise UnsupportedOpError(
                f"op kind '{op.kind}' has no step program",
                hint="scan kinds: " + ", ".join(sorted(c.kind for c in LOWERINGS)),
            )
        prog = per_op[n_in] = fn(op, n_in)
    return prog


def cell_kinds() -> set[str]:
    """Kinds of the scan ops: the named cells and the generic Scan (which carries its program)."""
    _load()
    return {c.kind for c in LOWERINGS} | {Scan.kind}


def _load() -> None:
    from . import attention, embedding, gated, l2mu, leaky, lmu, minrnn, s4d, spiking  # noqa: F401  (registration)


def running_readout(mode, n: int):
    """A readout as a scan: at every step the mean / sum / last of the steps so far (the Readout
    op's semantics as a step program, for readouts that must be gated, see passes.with_delay)."""
    from ..step import ACT, STATE, StepBuilder
    from ..types import ReadoutMode

    mode = ReadoutMode(mode)
    b = StepBuilder(
        f"Readout.{mode.value}",
        {"x": n},
        {"sum": n, "count": 1}
        if mode is ReadoutMode.MEAN
        else ({"sum": n} if mode is ReadoutMode.SUM else {"last": n}),
    )
    if mode is ReadoutMode.LAST:
        last = b.quant_state("last", "x", STATE)
        return b.build([last], {"last": last})
    total = b.quant_state("sum", b.add("sum", "x"), STATE)
    nxt = {"sum": total}
    y = total
    if mode is ReadoutMode.MEAN:
        nxt["count"] = b.quant_state("count", b.add("count", b.const(1.0)), STATE)
        y = b.quant_output(0, b.div(total, nxt["count"]), ACT)
    return b.build([y], nxt)
