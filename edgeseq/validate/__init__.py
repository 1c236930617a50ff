"""Validation: run an exported artifact on its own runner and prove it still computes the model.

    from edgeseq.validate import validate
    report = validate("out/gru-m4", data="har", out="out/gru-m4/validation")
    report.passed, [c.name for c in report.failed]
    report.raise_for_failure()          # ToleranceError naming the failed checks

    edgeseq validate out/gru-m4 --reference auto --data har --tolerance tol.json --out report/

Any artifact directory the exporters write (onnx; tvm x86 / arm; c x86 / arm / cortex-m*; the
x86 / arm bundles of ``edgeseq export``, part by part) is detected from its ``manifest.json`` and
compared with the reference (the float64 interpreter, or the GPU reference kernels of
:mod:`edgeseq.validate.gpu`) on the IR graph stored with it, under a :class:`TolerancePolicy` per
number format. Integer artifacts (exported from a quantized graph: integer C, integer TVM, ONNX
exact and QDQ, their bundles) are compared with the integer-exact interpreter running the
quantized graph stored with them (``quantized.esq``), in LSBs of each output: bit exact, QDQ
within the LSBs its exporter declares. The report holds max / mean abs error, error per time
step, decision and spike agreement, task accuracy, latency (native) or instruction counts
(emulated), sizes and the reference's throughput; ``out`` receives validation.json and report.html.
"""

from __future__ import annotations

from .artifacts import Artifact, detect_kind, open_artifact
from .compare import Check
from .runner import Reference, ValidationReport, load_data, validate
from .tolerance import FormatTolerance, NumberFormat, TolerancePolicy

__all__ = [
    "validate",
    "ValidationReport",
    "TolerancePolicy",
    "FormatTolerance",
    "NumberFormat",
    "Check",
    "Artifact",
    "open_artifact",
    "detect_kind",
    "Reference",
    "load_data",
    "reference_run",
]


def reference_run(graph, x, state=None, **kw):
    """The GPU / torch reference kernels on a whole graph (see :func:`edgeseq.validate.gpu.reference_run`)."""
    from .gpu import reference_run as _run

    return _run(graph, x, state, **kw)


def _make_callable() -> None:
    """``edgeseq.validate`` is both this package and the facade verb ``edgeseq.validate(dir, ...)``:
    whichever is imported first, calling the package calls :func:`validate`."""
    import sys
    import types

    class _ValidateModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return validate(*args, **kwargs)

    sys.modules[__name__].__class__ = _ValidateModule


_make_callable()
