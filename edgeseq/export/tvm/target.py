"""Targets of the TVM backend: ``"x86"`` (this machine, LLVM) and ``"arm"`` (aarch64 Linux, NEON).

``x86`` compiles for the CPU of the build machine (LLVM's host CPU name, e.g. ``emeraldrapids``,
so AVX-512 / AVX2 are used where present); pass ``cpu="x86-64-v3"`` (AVX2) or ``"x86-64"`` for an
artifact that runs on other x86 machines. ``arm`` compiles for ``aarch64-linux-gnu`` with NEON
(``cpu`` default ``cortex-a72``) and links the shared library with ``aarch64-linux-gnu-gcc``.
The vector width of the chosen CPU sets the kernel blocking (:class:`.emit.Schedule`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...errors import ConfigError
from .emit import Schedule

TARGETS = ("x86", "arm")


@dataclass(frozen=True)
class TvmTarget:
    name: str
    spec: dict = field(hash=False)
    sched: Schedule
    cross_compiler: str | None = None  # tool name in edgeseq.toolchains.TOOLS

    def tvm(self) -> Any:
        import tvm

        return tvm.target.Target(self.spec)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "tvm_target": self.spec,
            "vector_lanes": self.sched.lanes,
            "col_block": self.sched.col_block,
            "row_block": self.sched.row_block,
        }


def _x86_lanes(cpu: str) -> int:
    import tvm
    from tvm.target import codegen

    t = tvm.target.Target({"kind": "llvm", "mcpu": cpu})
    feats = set(codegen.llvm_get_cpu_features(t))
    if "avx512f" in feats:
        return 16
    if "avx2" in feats or "avx" in feats:
        return 8
    return 4


def resolve_target(target: "str | TvmTarget", cpu: str | None = None) -> TvmTarget:
    """The :class:`TvmTarget` for ``"x86"`` or ``"arm"`` (``cpu`` overrides the LLVM CPU)."""
    if isinstance(target, TvmTarget):
        return target
    if target not in TARGETS:
        raise ConfigError(f"unknown TVM target '{target}'; choose one of: {', '.join(TARGETS)}", where="tvm")
    from tvm.target import codegen

    if target == "x86":
        cpu = cpu or codegen.llvm_get_system_cpu()
        if not codegen.llvm_is_valid_cpu(cpu, "x86_64-linux-gnu"):
            raise ConfigError(f"LLVM does not know the x86 CPU '{cpu}'", where="tvm", hint="e.g. x86-64-v3")
        lanes = _x86_lanes(cpu)
        return TvmTarget("x86", {"kind": "llvm", "mcpu": cpu}, Schedule(lanes=lanes, col_block=4 * lanes, row_block=4))
    cpu = cpu or "cortex-a72"
    if not codegen.llvm_is_valid_cpu(cpu, "aarch64-linux-gnu"):
        raise ConfigError(f"LLVM does not know the aarch64 CPU '{cpu}'", where="tvm", hint="e.g. cortex-a72")
    spec = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"], "mcpu": cpu}
    return TvmTarget("arm", spec, Schedule(lanes=4, col_block=16, row_block=4), cross_compiler="aarch64-linux-gnu-gcc")
