"""edgeseq: recurrent, LMU and spiking sequence models to edge devices, with proof they still work.

The pipeline, in the order data flows::

    capture -> IR -> prune / quantize -> export (onnx | tvm | c) -> targets (x86 | arm | cortex-m) -> validate

``import edgeseq`` is cheap: heavy backends (torch, onnxruntime, tvm) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__
from .errors import EdgeseqError

__all__ = [
    "__version__",
    "EdgeseqError",
    "capture",
    "load",
    "reference",
    "export",
    "quantize",
    "prune",
    "validate",
    "sweep",
]

_LAZY = {
    "capture": ("edgeseq.frontends", "capture"),
    "load": ("edgeseq.models", "load_graph"),
    "reference": ("edgeseq.ir.interpret", "reference"),
    "export": ("edgeseq.export", "export"),
    "quantize": ("edgeseq.quant", "quantize"),
    "prune": ("edgeseq.prune", "prune"),
    "validate": ("edgeseq.validate", "validate"),
    "sweep": ("edgeseq.sweep", "sweep"),
    "Graph": ("edgeseq.ir.graph", "Graph"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'edgeseq' has no attribute '{name}'") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
