"""Pruning of zoo models, before capture (the IR of a pruned model is simply a smaller IR).

    res = edgeseq.prune(model, StructuredConfig(sparsity=0.5))      # genuinely smaller model
    res = edgeseq.prune(model, UnstructuredConfig(sparsity=0.8))    # same shapes, masked zeros
    res.model, res.masks, res.report

- :class:`StructuredConfig`: remove whole hidden units (all gates, the recurrent matrix, the
  consumer's input columns) and optionally LMU memory dimensions; the pruned model is rebuilt from
  its config, so it checkpoints, reloads and captures like any zoo model (:mod:`.structured`).
- :class:`UnstructuredConfig`: per-layer magnitude pruning with masks that survive fine-tuning
  (:mod:`.unstructured`).
- :func:`finetune`, :func:`prune_and_finetune`, :func:`sweep` (:mod:`.recipe`), and the
  ``edgeseq prune`` command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import ConfigError
from .config import CONFIGS, Criterion, StructuredConfig, UnstructuredConfig
from .recipe import evaluate_accuracy, finetune, prune_and_finetune, sweep, sweep_markdown, sweep_plot, task_data
from .structured import (
    Slice,
    UnitGroup,
    count_parameters,
    prune_structured,
    rebuild,
    unit_activity,
    unit_groups,
    unit_importance,
)
from .unstructured import PruneMasks, nonzero_parameters, prunable_weights, prune_unstructured, sparse_bytes

__all__ = [
    "Criterion",
    "PruneMasks",
    "PruneResult",
    "Slice",
    "StructuredConfig",
    "UnitGroup",
    "UnstructuredConfig",
    "count_parameters",
    "evaluate_accuracy",
    "finetune",
    "nonzero_parameters",
    "prunable_weights",
    "prune",
    "prune_and_finetune",
    "prune_structured",
    "prune_unstructured",
    "rebuild",
    "sparse_bytes",
    "sweep",
    "sweep_markdown",
    "sweep_plot",
    "task_data",
    "unit_activity",
    "unit_groups",
    "unit_importance",
]


@dataclass
class PruneResult:
    """``model``: the pruned model (a new object; the input is untouched); ``masks``: the keep-masks
    of unstructured pruning (None for structured); ``report``: JSON-able numbers and decisions."""

    model: Any
    masks: Optional[PruneMasks] = None
    report: dict = field(default_factory=dict)


def prune(model, config, *, calib_x=None) -> PruneResult:
    """Prune a torch model with a typed config (:class:`StructuredConfig` or :class:`UnstructuredConfig`).
    ``calib_x`` (N, T, F): calibration sequences for the activation criterion."""
    from ..ir.graph import Graph

    if isinstance(model, Graph):
        raise ConfigError(
            "prune works on the torch model, before capture",
            hint="prune the model, then edgeseq.capture the pruned model",
        )
    if isinstance(config, StructuredConfig):
        new, report = prune_structured(model, config, calib_x)
        return PruneResult(new, None, report)
    if isinstance(config, UnstructuredConfig):
        new, masks, report = prune_unstructured(model, config)
        return PruneResult(new, masks, report)
    raise ConfigError(
        f"unknown pruning config {type(config).__name__}; registered: {', '.join(c.__name__ for c in CONFIGS)}"
    )


from ..util.modcall import make_callable  # noqa: E402

make_callable(__name__, "prune")  # ``edgeseq.prune(...)`` works after ``import edgeseq.prune`` too
