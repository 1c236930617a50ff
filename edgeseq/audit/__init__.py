"""Quantization accuracy audit: the onnxruntime-quantizer baseline (:mod:`.ort_baseline`) and the
self-contained HTML audit report (:mod:`.report`, schema in ``README.md``).

Submodules load their heavy dependencies (onnx, onnxruntime, matplotlib) on use.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ort_baseline": ("edgeseq.audit.ort_baseline", "ort_baseline"),
    "audit_rows": ("edgeseq.audit.ort_baseline", "audit_rows"),
    "write_report": ("edgeseq.audit.report", "write_report"),
    "render_report": ("edgeseq.audit.report", "render_report"),
    "validate_audit": ("edgeseq.audit.report", "validate_audit"),
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'edgeseq.audit' has no attribute '{name}'") from None
    return getattr(importlib.import_module(module), attr)
