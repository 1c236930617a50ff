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
from .lower import lower
from .plan import QuantPlan, TensorPlan, WeightPlan, make_plan
from .program import MICRO_OPS, Program
from .qgraph import QuantizedGraph, is_quantized_file, load_quantized

__all__ = [
    "Granularity", "MICRO_OPS", "Observer", "OutlierAction", "PRESETS", "Program", "QuantConfig", "QuantPlan",
    "QuantizedGraph", "TensorPlan", "WeightPlan", "accuracy", "build", "calibrate", "is_quantized_file",
    "load_quantized", "lower",
    "make_plan", "per_step_error", "prepare", "preset", "quantize", "resolve_config", "sqnr_table",
]


def build(graph, stats, config, *, source=None, info: Optional[dict] = None) -> QuantizedGraph:
    """Plan and lower an already calibrated (prepared) graph."""
    cfg = resolve_config(config)
    plan = make_plan(graph, stats, cfg)
    program, fake, weights = lower(graph, plan)
    plan.weights = weights
    return QuantizedGraph(source if source is not None else graph, graph, plan, program, fake, dict(info or {}))


def prepare(graph, config) -> "Graph":  # noqa: F821 - documented type
    """The float graph the quantizer works on (BatchNorm folded when the config says so)."""
    from .passes import fold_batchnorm

    cfg = resolve_config(config)
    return fold_batchnorm(graph) if cfg.fold_batchnorm else graph


def quantize(graph, calib_x, config: Union[str, dict, QuantConfig, None] = "edgeseq", *, val=None,
             budget: Optional[float] = 0.5, progress: bool = False, max_promotions: int = 8,
             stats=None) -> QuantizedGraph:
    """Quantize ``graph`` (an IR graph) with calibration sequences ``calib_x`` (N, T, F).

    ``config``: a preset name ('edgeseq' default, 'naive'), a dict, a .json path or a QuantConfig.
    ``val=(x, y)``: validation data; with ``budget`` (accuracy points), the mixed-precision search
    promotes the most sensitive points to 16 bits until the fake-quant accuracy is within ``budget``
    of float (at most ``max_promotions``); the result's ``info['search']`` records what it did."""
    from ..errors import ShapeError
    from .sim import supported

    cfg = resolve_config(config)
    supported(graph)
    g = prepare(graph, cfg)
    calib_x = np.asarray(calib_x)
    if calib_x.ndim != 3 or calib_x.shape[2] != graph.in_features:
        raise ShapeError(f"calibration data must be (N, T, {graph.in_features}), got shape {calib_x.shape}")
    if stats is None:
        stats = calibrate(g, calib_x, batch_size=cfg.calib_batch, progress=progress)
    info = {"config": cfg.to_dict(), "calibration": {"sequences": int(stats.sequences), "steps": int(stats.steps)}}
    qg = build(g, stats, cfg, source=graph, info=info)
    if val is not None and budget is not None:
        from .search import mixed_precision

        qg = mixed_precision(qg, stats, val, budget=budget, progress=progress, max_promotions=max_promotions)
    return qg


def accuracy(qg: QuantizedGraph, x, y, mode: str = "int", batch_size: int = 512) -> float:
    """Top-1 accuracy of the first output of ``qg`` in ``mode`` ('int', 'fake', 'float')."""
    return float(np.mean(qg.predict(x, mode, batch_size) == np.asarray(y)))
