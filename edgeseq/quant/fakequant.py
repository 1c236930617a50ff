"""Fake quantization: the float simulation of a quantized graph.

The float step functions of :mod:`edgeseq.quant.sim` run with the *dequantized* parameters the
lowering produced (every weight, bias, LMU matrix and neuron constant replaced by the float value
of its integer form) and with quantize-dequantize at every point of the plan, rounded as the
integer program rounds (half up; the input boundary with rint). What remains different from the
integer program is the order of some roundings (a multi-term sum is rounded once here, per term
there) and the interpolation of 16-bit tables; decisions agree on >= 99.9% of real inputs.

Fake quantization is fast (float BLAS) and differentiable in spirit: it drives the sensitivity
search and shows where error comes from, while :mod:`edgeseq.quant.intexact` is the oracle.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from ..ir.graph import Graph
from .plan import QuantPlan
from .sim import Point, simulate


class FakeQuantHook:
    """Quantize-dequantize each point per ``plan``; points listed in ``skip`` stay float."""

    def __init__(self, plan: QuantPlan, skip: frozenset = frozenset(), only: Optional[frozenset] = None):
        self.plan = plan
        self.skip = skip
        self.only = only
        self._cache: dict[str, object] = {}
        self._tables: dict[tuple, np.ndarray] = {}

    def __call__(self, name: str, x: np.ndarray, point: Point) -> np.ndarray:
        e = self._cache.get(name)
        if e is None:
            e = self._cache[name] = self.plan[name]
        if name in self.skip or (self.only is not None and name not in self.only):
            return x
        return e.fake(x)

    def alias(self, name: str, target: str) -> None:
        pass

    def active(self, name: str) -> bool:
        return name not in self.skip and (self.only is None or name in self.only)

    def table(self, fn, pre, pre_name, out_name, point, slope=0.01, lo=-1.0, hi=1.0):
        """fn(pre) through the integer program's table (exact emulation of the Lut micro-op)."""
        from ..ir.interpret import activation
        from .intexact import lut_apply
        from .lower import make_table

        ein, eout = self.plan[pre_name], self.plan[out_name]
        if (
            not self.active(pre_name)
            or not self.active(out_name)
            or not ein.per_tensor
            or not eout.per_tensor
            or ein.bits > 16
        ):
            return self(out_name, activation(fn, pre, slope, lo, hi), point)
        key = (pre_name, out_name)
        tab = self._tables.get(key)
        if tab is None:
            tab = self._tables[key] = make_table(
                fn.value,
                float(ein.scale[0]),
                ein.bits,
                float(eout.scale[0]),
                eout.bits,
                self.plan.config.lut_table_bits,
                slope,
                lo,
                hi,
            )
        lo_i, hi_i = -(1 << (ein.bits - 1)), (1 << (ein.bits - 1)) - 1
        q = np.clip(np.rint(pre / ein.scale[0]), lo_i, hi_i).astype(np.int64)
        return lut_apply(tab, q) * eout.scale


def fake_run(
    graph: Graph,
    plan: QuantPlan,
    params: Mapping[str, dict],
    x,
    state=None,
    *,
    trace: bool = False,
    skip: frozenset = frozenset(),
    only: Optional[frozenset] = None,
    float_weights: bool = False,
):
    """Run the fake-quantized graph. ``skip`` / ``only`` restrict the quantized activation points;
    ``float_weights=True`` keeps the float weights (activation-only quantization)."""
    hook = FakeQuantHook(plan, frozenset(skip), None if only is None else frozenset(only))
    return simulate(graph, x, hook, None if float_weights else params, state, trace=trace)
