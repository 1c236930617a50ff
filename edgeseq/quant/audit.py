"""Quantization audits: where the error comes from and how it grows over time.

- :func:`trace_points`: the value of every quantization point over time in one execution mode
  ('float' reference, 'fake' simulation, 'int' program dequantized);
- :func:`per_step_error`: per point and time step, the RMS difference between a quantized
  execution and the float reference (error growth through each recurrence), with the reference
  RMS for scale;
- :func:`sqnr_table`: signal-to-quantization-noise ratio (dB) of every point, accumulated over
  the whole pipeline (the quantized pipeline's value vs the float pipeline's value).

Use a few dozen sequences: traces hold every point at every step.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

import numpy as np

from .qgraph import QuantizedGraph
from .sim import Point, simulate


class _TraceHook:
    def __init__(self, quantize=None):
        self.quantize = quantize
        self.t = -1
        self.values: dict[str, list] = {}
        self.final: dict[str, np.ndarray] = {}

    def step(self, t):
        self.t = t

    def __call__(self, name, x, point: Point):
        if self.quantize is not None:
            x = self.quantize(name, x, point)
        if self.t >= 0:
            lst = self.values.setdefault(name, [])
            if len(lst) == self.t:
                lst.append(np.array(x, dtype=np.float64, copy=True))
            elif len(lst) == self.t + 1:
                lst[self.t] = np.array(x, dtype=np.float64, copy=True)  # a point quantized twice: keep the last
        else:
            self.final[name] = np.array(x, dtype=np.float64, copy=True)
        return x

    def alias(self, name, target):
        pass

    def table(self, fn, pre, pre_name, out_name, point, slope=0.01, lo=-1.0, hi=1.0):
        tab = getattr(self.quantize, "table", None)
        if tab is None:
            from ..ir.interpret import activation

            return self(out_name, activation(fn, pre, slope, lo, hi), point)
        y = tab(fn, pre, pre_name, out_name, point, slope, lo, hi)
        q, self.quantize = self.quantize, None
        try:
            return self(out_name, y, point)
        finally:
            self.quantize = q

    def result(self) -> dict[str, np.ndarray]:
        out = {k: np.stack(v, axis=1) for k, v in self.values.items() if v}
        out.update(self.final)
        return out


def trace_points(qg: QuantizedGraph, x, mode: str = "int") -> dict[str, np.ndarray]:
    """{point: (B, T, n) temporal or (B, n) pooled values} in ``mode`` ('float', 'fake', 'int')."""
    if mode == "float":
        h = _TraceHook()
        simulate(qg.graph, x, h)
        return h.result()
    if mode == "fake":
        from .fakequant import FakeQuantHook

        fq = FakeQuantHook(qg.plan)
        h = _TraceHook(fq)
        simulate(qg.graph, x, h, qg.fake_params)
        return h.result()
    if mode != "int":
        from ..errors import ConfigError

        raise ConfigError(f"unknown trace mode '{mode}'; choose float, fake or int")
    prog = qg.program
    _, _, vals = qg.run_int(qg.quantize_input(x), trace=True)
    out: dict[str, np.ndarray] = {}
    offsets = {s.vec: s for s in prog.inputs}
    for name, v in prog.vectors.items():
        if not v.tag or name not in vals or v.scale is None:
            continue
        a = vals[name].astype(np.float64) * v.scale
        if name in offsets and not _boundary(qg, v.tag):
            a = a + offsets[name].offset
        out[v.tag] = a
    return out


def _boundary(qg, tag) -> bool:
    return tag in qg.plan and qg.plan[tag].boundary


def _pairs(qg: QuantizedGraph, x, mode: str, points: Optional[Iterable[str]]):
    ref = trace_points(qg, x, "float")
    got = trace_points(qg, x, mode)
    names = [p for p in (points or got) if p in got and qg.plan.resolve(p) in ref or p in ref and p in got]
    for p in names:
        r = ref.get(p, ref.get(qg.plan.resolve(p)))
        g = got[p]
        if r is None or r.shape != g.shape:
            continue
        yield p, r, g


def per_step_error(qg: QuantizedGraph, x, points: Optional[Iterable[str]] = None, mode: str = "int") -> dict:
    """{point: {'rmse': (T,), 'ref_rms': (T,), 'rel': (T,)}} for temporal points (mode 'int'/'fake')."""
    out = {}
    for p, r, g in _pairs(qg, x, mode, points):
        if r.ndim != 3:
            continue
        d = g - r
        rmse = np.sqrt(np.mean(d * d, axis=(0, 2)))
        rr = np.sqrt(np.mean(r * r, axis=(0, 2)))
        out[p] = {"rmse": rmse, "ref_rms": rr, "rel": rmse / np.maximum(rr, 1e-30)}
    return out


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.sum((got - ref) ** 2))
    sig = float(np.sum(ref**2))
    if noise == 0:
        return float("inf")
    if sig == 0:
        return float("-inf")
    return 10.0 * math.log10(sig / noise)


def sqnr_table(qg: QuantizedGraph, x, mode: str = "int", as_text: bool = False):
    """Rows (point, role, bits, SQNR dB) of every point, accumulated through the pipeline."""
    rows = []
    for p, r, g in _pairs(qg, x, mode, None):
        e = qg.plan[p]
        rows.append({"point": p, "role": e.role, "bits": e.bits, "sqnr_db": sqnr_db(r, g)})
    if not as_text:
        return rows
    w = max([len(r["point"]) for r in rows] + [5])
    lines = [f"{'point'.ljust(w)}  role      bits  SQNR dB"]
    for r in rows:
        lines.append(f"{r['point'].ljust(w)}  {r['role']:<8}  {r['bits']:>4}  {r['sqnr_db']:7.1f}")
    return "\n".join(lines)
