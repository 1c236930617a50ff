"""Integer weights and storage types of the QDQ model: the program's own integers recovered from
its fake-quant parameters."""

from __future__ import annotations

import numpy as np
from onnx import helper

from ...quant.program import storage_dtype


def storage(bits: int) -> int:
    """The ONNX element type of the program's storage for ``bits``-bit integers."""
    return helper.np_dtype_to_tensor_dtype(np.dtype(storage_dtype(bits)))


def int_weights(wabs: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Per output row: integers ``wq`` (|wq| <= 2^(bits-1)-1) and a scale with ``wq * scale == wabs``.

    ``wabs`` is a weight matrix in the units of its (scale-absorbed) integer input, the form the
    integer program quantized per row; the fake-quant parameters times the input scale give it
    back up to float64 rounding, so an exact integer form exists and is found (the row maximum
    maps to the largest multiple that keeps every entry integral). Returns (wq, scale, exact);
    ``exact`` is False only if some row has no such form (then it is requantized to the nearest)."""
    w = np.asarray(wabs, np.float64)
    rows, cols = w.shape
    qm = (1 << (bits - 1)) - 1
    amax = np.abs(w).max(axis=1) if cols else np.zeros(rows)
    wq = np.zeros((rows, cols), np.int64)
    scale = np.ones(rows)
    exact = True

    def try_m(r: int, ms: np.ndarray):
        t = w[r][None, :] * (ms[:, None] / amax[r])
        ok = np.all(np.abs(t - np.rint(t)) <= 1e-6, axis=1)
        return int(ms[np.argmax(ok)]) if ok.any() else None

    for r in range(rows):
        if amax[r] == 0:
            continue
        m = try_m(r, np.array([qm]))
        if m is None:
            for lo in range(qm - 1, 0, -4096):
                m = try_m(r, np.arange(lo, max(lo - 4096, 0), -1))
                if m is not None:
                    break
        if m is None:
            m, exact = qm, False
        scale[r] = amax[r] / m
        wq[r] = np.clip(np.rint(w[r] / scale[r]), -qm, qm)
    return wq, scale, exact
