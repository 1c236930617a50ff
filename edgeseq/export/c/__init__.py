"""Self-contained C backend: IR graph -> C99 model (``model.h`` / ``model.c``) with a streaming
one-sequence API, a host/device driver, and built artifacts for the targets in :mod:`edgeseq.targets`.

    from edgeseq.export.c import export_c, CArtifact
    art = export_c(graph, "out/gru-m4", target="cortex-m4")
    y, = art.run(x)            # runs under qemu-system-arm, compared with the reference at export
    art.cost(x)                # executed instructions per inference / per step, flash and RAM bytes

Quantized graphs (:mod:`edgeseq.quant`) go through the integer backend instead: their integer
program becomes C (:mod:`edgeseq.export.c.intgen`), bit-exact against the integer-exact
interpreter (``export_c_int`` / ``IntCArtifact`` in :mod:`edgeseq.export.c.intexport`).
"""

from __future__ import annotations

from .codegen import F32, CSources, Emitter, generate, register, supported_kinds

__all__ = [
    "F32",
    "CArtifact",
    "CSources",
    "Emitter",
    "IntCArtifact",
    "export_c",
    "export_c_int",
    "generate",
    "register",
    "supported_kinds",
]


def __getattr__(name: str):
    if name in ("export_c", "CArtifact", "IntCArtifact"):
        from . import artifact

        return getattr(artifact, name)
    if name == "export_c_int":
        from . import intexport

        return getattr(intexport, name)
    raise AttributeError(f"module 'edgeseq.export.c' has no attribute '{name}'")
