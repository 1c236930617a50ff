"""Input layouts: the IR is batch-first, models are not always.

A captured graph records the layout its model takes (``graph.metadata["input_layout"]``):

- ``BTF``: (batch, time, features), the IR's own;
- ``TBF``: (time, batch, features): nn.RNN / GRU / LSTM with batch_first=False, snntorch data;
- ``static``: (batch, features), one input read at every step of a fixed number of steps
  (``graph.metadata["static_steps"]``), as in the snntorch tutorials.

:func:`to_ir` turns an input in the model's layout into the IR's (B, T, F); :func:`from_ir` turns
temporal outputs back (time-major for TBF and static models, as they return them). Entry points
that take user data (``edgeseq.reference``, ``Artifact.run``) accept the model's layout by default
and an explicit ``layout`` to override it; a shape that fits neither is a one-line error.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import ConfigError, ShapeError

LAYOUTS = ("BTF", "TBF", "static")


def layout_of(graph, layout: Optional[str] = None) -> str:
    lay = layout or graph.metadata.get("input_layout") or "BTF"
    if lay not in LAYOUTS:
        raise ConfigError(f"unknown input layout '{lay}'; expected one of: {', '.join(LAYOUTS)}")
    return lay


def to_ir(graph, x, layout: Optional[str] = None) -> np.ndarray:
    """``x`` in ``layout`` (default: the model's) -> (B, T, F)."""
    from ..util.finite import as_array

    lay = layout_of(graph, layout)
    x = as_array(x, "input")
    if lay == "static":
        if x.ndim != 2:
            raise ShapeError(
                f"this model takes a static (batch, features) input, got shape {x.shape}",
                hint="pass layout='BTF' to give the per-step (B, T, F) sequence directly",
            )
        steps = int(graph.metadata.get("static_steps", 1))
        return np.repeat(x[:, None, :], steps, axis=1)
    if x.ndim != 3:
        raise ShapeError(f"input must have shape {_describe(lay, graph.in_features)}, got shape {x.shape}")
    return np.swapaxes(x, 0, 1) if lay == "TBF" else x


def from_ir(graph, outputs: tuple, layout: Optional[str] = None) -> tuple:
    """Temporal (B, T, N) outputs -> the model's layout (time-major for TBF and static models)."""
    lay = layout_of(graph, layout)
    if lay == "BTF":
        return outputs
    types = graph.output_types
    return tuple(np.swapaxes(y, 0, 1) if t.temporal else y for y, t in zip(outputs, types))


def _describe(layout: str, f: int) -> str:
    return {"BTF": f"(batch, time, {f})", "TBF": f"(time, batch, {f})", "static": f"(batch, {f})"}[layout]
