"""The quantizer's lowering entry point: an IR graph under a plan -> the integer program.

:class:`~edgeseq.quant.lower.Lowerer` walks the graph with the per-op rules of :mod:`.lower`;
every scan op (an op with a step program) goes through :func:`~edgeseq.quant.steplower.lower_scan`.
"""

from __future__ import annotations

import numpy as np

from ..ir.cells import cell_kinds
from ..ir.graph import Graph
from .lower import LOWER, Lowerer
from .plan import QuantPlan, WeightPlan
from .program import Program
from .steplower import lower_scan


def lower(graph: Graph, plan: QuantPlan) -> tuple[Program, dict[str, dict[str, np.ndarray]], dict[str, WeightPlan]]:
    """(integer program, fake-quant parameters per node, weight plans) of ``graph`` under ``plan``."""
    L = Lowerer(graph, plan, lower_scan)
    prog = L.run()
    prog.metadata["state_order"] = list(graph.state_spec())
    return prog, L.fake, L.weights


def supported_kinds() -> set[str]:
    """IR op kinds the quantizer lowers."""
    return {c.kind for c in LOWER} | cell_kinds()


def kinds_rendered_by(micro_ops) -> set[str]:
    """IR op kinds a backend that renders the micro-ops ``micro_ops`` (kinds) can take quantized:
    every kind the quantizer lowers when it renders every step micro-op, less the window ops when it
    does not render the window micro-ops (then window graphs are refused in one line)."""
    from .program import MICRO_OPS, WINDOW_MICRO_OPS

    have = set(micro_ops)
    if not {k for k, c in MICRO_OPS.items() if not c.window} <= have:
        return set()
    window = {k for k, c in WINDOW_MICRO_OPS.items() if c.kind not in have}
    return supported_kinds() - window
