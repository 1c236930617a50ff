"""Step programs: the open form of a scan body (see :mod:`.program`)."""

from .builder import ACT, INNER, SPIKES, STATE, StepBuilder, pre, share, unit
from .evaluate import init_state, run_sequence, run_step
from .program import (PRIMS, Activate, Add, Affine, Concat, Div, Gather, Gt, Mul, ParamInfo, PointKind, PointName,
                      Port, Prim, QPoint, QRole, Quant, Select, Slice, StateSlot, StepProgram, Sub, Term, WeightKind)

__all__ = [
    "ACT", "INNER", "PRIMS", "SPIKES", "STATE", "Activate", "Add", "Affine", "Concat", "Div", "Gather", "Gt", "Mul",
    "ParamInfo", "PointKind", "PointName", "Port", "Prim", "QPoint", "QRole", "Quant", "Select", "Slice",
    "StateSlot", "StepBuilder", "StepProgram", "Sub", "Term", "WeightKind", "init_state", "pre", "run_sequence",
    "run_step", "share", "unit",
]
