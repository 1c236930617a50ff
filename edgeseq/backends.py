"""What each backend supports, read from the backends' own registries (drives ``edgeseq ops``).

Three tables:

- IR ops x backends: a backend module exposes ``supported_kinds() -> set[str]``;
- step-program primitives x renderers: the rule registry (keyed by primitive type) of the
  reference semantics, the quantizer's lowering and each float renderer;
- integer micro-ops x renderers: the integer-exact interpreter's semantics and each integer
  backend's registry.

Modules are imported lazily; one whose module is not importable (optional dependency missing) is
reported as unavailable ("n/a").
"""

from __future__ import annotations

import importlib

# name -> (module, function, description)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "reference": ("edgeseq.ir.interpret", "supported_kinds", "float64 reference interpreter"),
    "onnx": ("edgeseq.export.onnx.lower", "supported_kinds", "ONNX (edgeseq-domain Scan functions) for onnxruntime"),
    "tvm": ("edgeseq.export.tvm", "supported_kinds", "TVM Relax + generated TIR scan kernels (x86, arm)"),
    "c": ("edgeseq.export.c.codegen", "supported_kinds", "self-contained C99 (x86, arm, cortex-m4/m7/m55)"),
    "onnx-int": (
        "edgeseq.export.onnx.qlower",
        "supported_kinds",
        "ONNX integer program of a quantized graph (MatMulInteger, bit-exact) for onnxruntime",
    ),
    "c-int": (
        "edgeseq.export.c.intgen",
        "supported_kinds",
        "integer C99 of a quantized graph (bit-exact; x86, arm, cortex-m4/m7/m55 with DSP / MVE kernels)",
    ),
}


# renderer -> (module, registry attribute (keyed by primitive class), description)
PRIMITIVE_RENDERERS: dict[str, tuple[str, str, str]] = {
    "reference": ("edgeseq.ir.step.evaluate", "SEMANTICS", "float64 evaluation: the primitive's definition"),
    "quantizer": ("edgeseq.quant.steplower", "RULES", "lowering to integer micro-ops"),
    "onnx": ("edgeseq.export.onnx.render", "RULES", "ONNX Scan bodies (float; QDQ adds Q/DQ at the points)"),
    "tvm": ("edgeseq.export.tvm.scan", "RULES", "TIR scan kernels"),
    "c": ("edgeseq.export.c.step_f32", "RULES", "float32 C"),
}

# renderer -> (module, registry attribute (keyed by micro-op class or kind), description)
MICRO_OP_RENDERERS: dict[str, tuple[str, str, str]] = {
    "intexact": ("edgeseq.quant.intexact", "DEFINED", "integer-exact interpreter: the micro-op's definition"),
    "onnx-int": ("edgeseq.export.onnx.qlower", "LOWER", "ONNX integer program"),
    "tvm-int": ("edgeseq.export.tvm.intgen", "RENDERED", "TIR integer kernels"),
    "c-int": ("edgeseq.export.c.intgen", "SUPPORTED", "integer C (DSP / MVE / NEON kernels)"),
}
# micro-ops every integer renderer handles structurally (state load / store), outside the registries
STRUCTURAL_MICRO_OPS = ("load", "store")


def _names(keys) -> set[str]:
    return {k if isinstance(k, str) else getattr(k, "kind", k.__name__) for k in keys}


def registry_names(module: str, attr: str) -> set[str] | None:
    """Names (primitive / micro-op kinds) a renderer's registry covers; None when unavailable."""
    try:
        return _names(getattr(importlib.import_module(module), attr))
    except ImportError:
        return None


def _matrix(label: str, universe, renderers: dict, extra=()) -> tuple[list[str], list[list[str]]]:
    cols = {name: registry_names(mod, attr) for name, (mod, attr, _) in renderers.items()}
    rows = []
    for kind in sorted(universe):
        row = [kind]
        for name in renderers:
            have = cols[name]
            row.append("n/a" if have is None else ("yes" if kind in have or kind in extra else "-"))
        rows.append(row)
    return [label, *renderers], rows


def primitive_table() -> tuple[list[str], list[list[str]]]:
    """Step-program primitives x renderers."""
    from .ir.step.evaluate import SEMANTICS

    return _matrix("primitive", _names(SEMANTICS), PRIMITIVE_RENDERERS)


def micro_op_table() -> tuple[list[str], list[list[str]]]:
    """Integer micro-ops x renderers."""
    from .quant.program import MICRO_OPS

    return _matrix("micro-op", MICRO_OPS, MICRO_OP_RENDERERS, extra=STRUCTURAL_MICRO_OPS)


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
