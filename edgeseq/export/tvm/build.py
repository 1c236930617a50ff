"""Compile a lowered module with TVM (``tvm.compile``) into a Relax VM executable.

The Relax pipeline is edgeseq's own short list of the default passes minus the ones that assume
schedulable (block-structured) TIR: the kernels are already scheduled by their generators, so
nothing needs fusing, legalising (beyond the zero initial states) or tuning.
"""

from __future__ import annotations

import tvm
from tvm import relax

from ...errors import EdgeseqError
from .lower import Lowered
from .target import TvmTarget


def relax_pipeline() -> tvm.transform.Pass:
    t = relax.transform
    return tvm.transform.Sequential(
        [
            t.LegalizeOps(),
            t.ToNonDataflow(),
            t.RemovePurityChecking(),
            t.CallTIRRewrite(),
            t.StaticPlanBlockMemory(),
            t.LowerAllocTensor(),
            t.KillAfterLastUse(),
            t.LowerRuntimeBuiltin(),
            t.ComputePrimValue(),
            t.VMShapeLower(),
            t.AttachGlobalSymbol(),
        ]
    )


def compile_lowered(lowered: Lowered, target: TvmTarget):
    """``relax.VMExecutable`` for ``lowered`` on ``target``."""
    try:
        return tvm.compile(lowered.mod, target=target.tvm(), relax_pipeline=relax_pipeline())
    except EdgeseqError:
        raise
    except Exception as e:  # TVM raises its own error types; keep the message, add the place
        from ...errors import UnsupportedOpError

        raise UnsupportedOpError(
            f"TVM failed to compile the generated module: {str(e).strip().splitlines()[-1]}",
            where=f"target tvm/{target.name}",
        ) from e


def export_library(executable, target: TvmTarget, path):
    """Write ``executable`` as a shared library at ``path``: with the host C compiler for x86,
    with ``aarch64-linux-gnu-gcc`` for arm."""
    from pathlib import Path

    from tvm.support import cc

    from ...toolchains import require

    path = Path(path)
    # -s: drop the static symbol table and the debug info LLVM emits (the runtime resolves the
    # kernels through the dynamic symbol table, which stays)
    if target.cross_compiler:
        fcompile = cc.cross_compiler(require(target.cross_compiler), options=["-s"])
    else:
        fcompile = cc.cross_compiler(require("gcc"), options=["-s"])
    try:
        executable.export_library(str(path), fcompile=fcompile)
    except Exception as e:
        from ...errors import ArtifactError

        raise ArtifactError(f"linking the shared library failed: {str(e).strip()[-2000:]}", where=str(path)) from e
    return path
