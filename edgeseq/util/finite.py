"""The NaN / Inf policy, in one place.

**Non-finite values are rejected where data enters edgeseq.** Inputs (to the reference interpreter,
the integer-exact interpreter, an artifact's ``run``, ``edgeseq run``), initial states, calibration
and validation data (quantization, the audit, ``edgeseq validate --data``), recordings (the demos'
CSV / WAV input), golden vectors and model parameters (checkpoints, IR graphs) that hold NaN,
+Inf or -Inf raise :class:`~edgeseq.errors.NumericsError` naming the array and the index of the
first non-finite value, before any work is done::

    input contains 3 NaN/Inf values (first: nan at index (0, 17, 2))

A NaN that enters a recurrence never leaves its state, and an Inf saturates an int8 plan's scales:
accepting them silently gives wrong answers that look like answers. When non-finite values are
meant (for example to test how a deployed model behaves on a faulty sensor), allow them
explicitly, for one block of code or for a whole process::

    with edgeseq.util.finite.allow_nonfinite():
        y, _ = edgeseq.reference(graph, x_with_nan)

    EDGESEQ_ALLOW_NONFINITE=1 edgeseq run model.esq x_with_nan.npy

Model parameters are never allowed to be non-finite (a checkpoint or graph with NaN weights is
corrupt, not a test case).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Iterator, Optional

import numpy as np

from ..errors import NumericsError

ENV = "EDGESEQ_ALLOW_NONFINITE"
_ALLOW: contextvars.ContextVar[Optional[bool]] = contextvars.ContextVar("edgeseq_allow_nonfinite", default=None)


def nonfinite_allowed() -> bool:
    v = _ALLOW.get()
    if v is not None:
        return v
    return os.environ.get(ENV, "") not in ("", "0")


@contextlib.contextmanager
def allow_nonfinite(allow: bool = True) -> Iterator[None]:
    """Inside the block, inputs, states and data with NaN / Inf are accepted (see the module doc)."""
    token = _ALLOW.set(bool(allow))
    try:
        yield
    finally:
        _ALLOW.reset(token)


def as_array(x, what: str) -> np.ndarray:
    """``np.asarray(x)``, or ShapeError when ``x`` is not a rectangular array (ragged nested lists,
    objects that numpy cannot convert)."""
    from ..errors import ShapeError

    try:
        a = np.asarray(x)
    except (ValueError, TypeError, OverflowError) as e:
        raise ShapeError(f"{what} is not a rectangular numeric array ({str(e).splitlines()[0][:120]})") from None
    if a.dtype.kind not in "biufc":
        raise ShapeError(f"{what} must be numeric, got dtype {a.dtype}")
    return a


def first_nonfinite(a: np.ndarray) -> Optional[tuple[tuple[int, ...], float, int]]:
    """(index of the first non-finite value, that value, how many there are) or None."""
    a = np.asarray(a)
    if a.dtype.kind not in "fc":
        return None
    bad = ~np.isfinite(a)
    if not bad.any():
        return None
    idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), a.shape))
    return idx, a[idx].item(), int(bad.sum())


def check_finite(
    a, what: str, where: Optional[str] = None, *, allow: Optional[bool] = None, parameter: bool = False
) -> np.ndarray:
    """``a`` as an array if every value is finite; else NumericsError naming ``what`` and the index
    of the first NaN / Inf. ``allow`` overrides the policy for this call (None: the context /
    environment); ``parameter=True`` (model weights) ignores any allowance."""
    a = np.asarray(a)
    if not parameter and (allow if allow is not None else nonfinite_allowed()):
        return a
    hit = first_nonfinite(a)
    if hit is None:
        return a
    idx, value, n = hit
    at = idx[0] if len(idx) == 1 else idx
    many = f"{n} NaN/Inf values" if n > 1 else "a NaN/Inf value"
    hint = None if parameter else f"clean the data, or allow non-finite values explicitly ({ENV}=1)"
    raise NumericsError(f"{what} contains {many} (first: {value} at index {at})", where=where, hint=hint)


__all__ = ["as_array", "check_finite", "first_nonfinite", "allow_nonfinite", "nonfinite_allowed", "ENV"]
