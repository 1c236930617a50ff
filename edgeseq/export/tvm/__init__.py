"""TVM backend: IR graphs -> TVM Relax modules whose every layer is a generated TIR kernel.

Each recurrent / spiking layer is rendered from its step program (:mod:`.scan`): a scan kernel
(a ``T.serial`` time loop over on-chip state) with the input projections hoisted out of the loop
as one whole-sequence matmul; each feed-forward op is a generated vectorised kernel; Relax strings them together with ``R.call_tir``.
No TVM frontend is involved (TVM's importers unroll recurrences). Batch size and sequence length
are symbolic: one compiled module runs any (B, T).

Public API::

    compile_tvm(graph, target="x86", *, streaming=False) -> TvmModule      # .run(x, state=None)
    export_tvm(graph, out_dir, target="x86", force=False) -> TvmArtifact   # .so + manifest + golden
    TvmArtifact.load(out_dir).run(x) / .verify()                           # qemu-aarch64 for "arm"
    supported_kinds() -> set[str]

    compile_tvm_int(q, target="x86") -> TvmIntModule   # q = edgeseq.quant.quantize(...): integer kernels
    export_tvm_int(q, out_dir, target="x86")           # integer artifact (TvmArtifact, numerics "integer")

Targets: "x86" (this machine's CPU via LLVM) and "arm" (aarch64 Linux with NEON; runs under
qemu-aarch64 with the aarch64 TVM runtime, see :mod:`.runtime_arm`). Numbers: float32; quantized
graphs compile to integer programs (:mod:`.intexport`). Importing this package does not import TVM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from .artifact import TvmArtifact
    from .module import TvmModule

__all__ = [
    "compile_tvm",
    "export_tvm",
    "compile_tvm_int",
    "export_tvm_int",
    "supported_kinds",
    "TvmModule",
    "TvmArtifact",
    "TARGETS",
]

TARGETS = ("x86", "arm")


def supported_kinds() -> set[str]:
    """IR op kinds the TVM backend lowers (every Act kind and every option of these ops)."""
    from .rules import RULES

    return set(RULES)


def compile_tvm(
    graph,
    target: str = "x86",
    *,
    streaming: bool = False,
    cpu: str | None = None,
    functions: Sequence[str] | None = None,
) -> "TvmModule":
    """Compile ``graph`` with TVM for ``target`` ("x86" | "arm").

    ``streaming=False``: ``run(x)`` runs whole sequences from the zero state.
    ``streaming=True``: ``run(x, state)`` runs a chunk from ``state`` (zeros if None) and returns
    the new state (``graph.state_spec()`` keys), so chunked runs equal the whole sequence.
    ``cpu`` overrides the LLVM CPU of the target. Unsupported ops raise UnsupportedOpError before
    anything is compiled."""
    from ...errors import ConfigError
    from ...ir.graph import Graph
    from .build import compile_lowered
    from .lower import lower
    from .module import TvmModule
    from .target import resolve_target

    if not isinstance(graph, Graph):
        raise ConfigError(f"compile_tvm needs an edgeseq IR Graph, got {type(graph).__name__}", where="tvm")
    tgt = resolve_target(target, cpu)
    fns = tuple(functions) if functions else (("stream",) if streaming else ("main",))
    if "stream" in fns:
        graph.require_streaming(
            "a streaming TVM module (function 'stream')", hint="compile it whole-window (streaming=False)"
        )
    lowered = lower(graph, tgt.sched, fns)
    executable = compile_lowered(lowered, tgt)
    return TvmModule(graph, tgt, streaming, lowered, executable)


def export_tvm(graph, out_dir, target: str = "x86", force: bool = False, *, cpu: str | None = None) -> "TvmArtifact":
    """Compile ``graph`` and write an artifact directory (library, manifest, golden vectors)."""
    from .artifact import export_tvm as _export

    return _export(graph, out_dir, target, force, cpu=cpu)


def compile_tvm_int(q, target: str = "x86", **kw):
    """Compile the integer program of a quantized graph (see :mod:`.intexport`)."""
    from .intexport import compile_tvm_int as _compile

    return _compile(q, target, **kw)


def export_tvm_int(q, out_dir, target: str = "x86", cpu: str | None = None, **kw) -> "TvmArtifact":
    """Compile a quantized graph's integer program and write an artifact (see :mod:`.intexport`)."""
    from .intexport import export_tvm_int as _export

    return _export(q, out_dir, target, cpu, **kw)


def __getattr__(name: str):
    if name == "TvmModule":
        from .module import TvmModule

        return TvmModule
    if name == "TvmArtifact":
        from .artifact import TvmArtifact

        return TvmArtifact
    raise AttributeError(f"module 'edgeseq.export.tvm' has no attribute '{name}'")
