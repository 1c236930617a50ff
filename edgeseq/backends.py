"""Registry of execution backends and the IR op kinds each supports (drives ``edgeseq ops``).

A backend module exposes ``supported_kinds() -> set[str]``; backends are imported lazily, and a
backend whose module is not importable (optional dependency missing) is reported as unavailable.
"""

from __future__ import annotations

import importlib

# name -> (module, function, description)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "reference": ("edgeseq.ir.interpret", "supported_kinds", "float64 reference interpreter"),
    "onnx": ("edgeseq.export.onnx.lower", "supported_kinds", "ONNX (edgeseq-domain Scan functions) for onnxruntime"),
    "tvm": ("edgeseq.export.tvm", "supported_kinds", "TVM Relax + generated TIR scan kernels (x86, arm)"),
    "c": ("edgeseq.export.c.codegen", "supported_kinds", "self-contained C99 (x86, arm, cortex-m4/m7/m55)"),
    "onnx-int": ("edgeseq.export.onnx.qlower", "supported_kinds",
                 "ONNX integer program of a quantized graph (MatMulInteger, bit-exact) for onnxruntime"),
    "c-int": ("edgeseq.export.c.intgen", "supported_kinds",
              "integer C99 of a quantized graph (bit-exact; x86, arm, cortex-m4/m7/m55 with DSP / MVE kernels)"),
}


def supported(name: str) -> set[str] | None:
    module, fn, _ = BACKENDS[name]
    try:
        return set(getattr(importlib.import_module(module), fn)())
    except ImportError:
        return None


def support_table() -> tuple[list[str], list[list[str]]]:
    from .ir.ops import OP_REGISTRY

    cols = {name: supported(name) for name in BACKENDS}
    header = ["op", "category"] + list(BACKENDS)
    rows = []
    for kind, cls in OP_REGISTRY.items():
        row = [kind, cls.category]
        for name in BACKENDS:
            s = cols[name]
            row.append("n/a" if s is None else ("yes" if kind in s else "-"))
        rows.append(row)
    return header, rows
