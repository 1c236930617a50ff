"""Quantization: calibrate -> plan -> integer program, with an integer-exact reference interpreter.

    qg = edgeseq.quant.quantize(graph, calib_x, config="edgeseq")      # or "naive", a dict, a .json
    y, state = qg.run(x)                  # the integer program (dequantized outputs)
    y_fake, _ = qg.run(x, mode="fake")    # the float simulation of the same plan
    qg.save("model.q.esq"); qg = load_quantized("model.q.esq")

The stages, each usable on its own: :func:`calibrate` (statistics of every quantization point),
:func:`make_plan` (bits / scales / granularity), :func:`lower` (the integer program),
:mod:`~edgeseq.quant.intexact` (its exact execution), :mod:`~edgeseq.quant.fakequant`,
:mod:`~edgeseq.quant.outliers`, :mod:`~edgeseq.quant.search` (sensitivity and mixed precision),
:mod:`~edgeseq.quant.audit` (per-step error growth, SQNR per point). The integer semantics of the
micro-ops are documented in ``edgeseq/quant/README.md``.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np

from .audit import per_step_error, sqnr_table
from .calibrate import calibrate
from .config import PRESETS, Granularity, Observer, OutlierAction, QuantConfig, preset, resolve_config
from .lowering import lower
from .plan import QuantPlan, TensorPlan, WeightPlan, make_plan
from .program import MICRO_OPS, Program
from .qgraph import QuantizedGraph, is_quantized_file, load_quantized

__all__ = [
    "Granularity",
    "MICRO_OPS",
    "Observer",
    "OutlierAction",
    "PRESETS",
    "Program",
    "QuantConfig",
    "QuantPlan",
    "QuantizedGraph",
    "TensorPlan",
    "WeightPlan",
    "accuracy",
    "build",
    "calibrate",
    "is_quantized_file",
    "load_quantized",
    "lower",
    "make_plan",
    "per_step_error",
    "prepare",
    "preset",
    "quantize",
    "resolve_config",
    "sqnr_table",
]


def build(graph, stats, config, *, source=None, info: Optional[dict] = None) -> QuantizedGraph:
    """Plan and lower an already calibrated (prepared) graph."""
    cfg = resolve_config(config)
    plan = make_plan(graph, stats, cfg)
    program, fake, weights = lower(graph, plan)
    plan.weights = weights
    return QuantizedGraph(source if source is not None else graph, graph, plan, program, fake, dict(info or {}))


def prepare(graph, config) -> "Graph":  # noqa: F821 - documented type
    """The float graph the quantizer works on: BatchNorm folded when the config says so, and
    quantization points placed in step programs that declare none (loops captured from Python)."""
    from .passes import fold_batchnorm, place_scan_points

    cfg = resolve_config(config)
    return place_scan_points(fold_batchnorm(graph) if cfg.fold_batchnorm else graph)


def quantize(
    graph,
    calib_x,
    config: Union[str, dict, QuantConfig, None] = "edgeseq",
    *,
    val=None,
    budget: Optional[float] = 0.5,
    progress: bool = False,
    max_promotions: int = 8,
    stats=None,
    strict: bool = False,
) -> QuantizedGraph:
    """Quantize ``graph`` (an IR graph) with calibration sequences ``calib_x`` (N, T, F).

    ``config``: a preset name ('edgeseq' default, 'naive'), a dict, a .json path or a QuantConfig.
    ``val=(x, y)``: validation data; with ``budget`` (accuracy points), the mixed-precision search
    promotes the most sensitive points to 16 bits until the fake-quant accuracy is within ``budget``
    of float (at most ``max_promotions``); the result's ``info['search']`` records what it did, and
    ``strict=True`` raises :class:`BudgetError` when the budget is missed."""
    from ..errors import ConfigError, ShapeError
    from ..ir.graph import Graph
    from .sim import supported

    if not isinstance(graph, Graph):
        raise ConfigError(
            f"quantize expects an IR Graph, got {type(graph).__name__}", hint="edgeseq.capture or edgeseq.load one"
        )
    cfg = resolve_config(config)
    supported(graph)
    calib_x = _check_sequences(calib_x, graph.in_features, "calibration data")
    if val is not None:
        try:
            vx, vy = val
        except (TypeError, ValueError):
            raise ConfigError("val must be a pair (x, y) of validation sequences and labels") from None
        vx = _check_sequences(np.asarray(vx), graph.in_features, "validation data")
        vy = np.asarray(vy)
        if vy.shape != (len(vx),):
            raise ShapeError(f"validation labels must have shape ({len(vx)},), got {vy.shape}")
        val = (vx, vy)
    if budget is not None and not (np.isfinite(budget) and budget >= 0):
        raise ConfigError(f"the accuracy budget must be a non-negative number of points, got {budget}")
    g = prepare(graph, cfg)
    if stats is None:
        stats = calibrate(g, calib_x, batch_size=cfg.calib_batch, progress=progress)
    info = {"config": cfg.to_dict(), "calibration": {"sequences": int(stats.sequences), "steps": int(stats.steps)}}
    qg = build(g, stats, cfg, source=graph, info=info)
    if val is not None and budget is not None:
        from .search import mixed_precision

        qg = mixed_precision(
            qg, stats, val, budget=budget, progress=progress, max_promotions=max_promotions, strict=strict
        )
    return qg


def _check_sequences(x, features: int, what: str) -> np.ndarray:
    """(N, T, F) finite numbers with N, T >= 1, or a typed error naming what is wrong."""
    from ..errors import DatasetError, ShapeError
    from ..util.finite import as_array

    x = as_array(x, what)
    if x.ndim != 3 or x.shape[2] != features:
        raise ShapeError(f"{what} must be (N, T, {features}), got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DatasetError(f"{what} is empty (shape {x.shape}); at least one sequence of one step is needed")
    if not np.issubdtype(x.dtype, np.number):
        raise DatasetError(f"{what} must be numeric, got dtype {x.dtype}")
    from ..util.finite import check_finite

    return check_finite(x, what, allow=False)  # calibration sets the plan's scales: never non-finite


def accuracy(qg: QuantizedGraph, x, y, mode: str = "int", batch_size: int = 512) -> float:
    """Top-1 accuracy of the first output of ``qg`` in ``mode`` ('int', 'fake', 'float')."""
    return float(np.mean(qg.predict(x, mode, batch_size) == np.asarray(y)))
