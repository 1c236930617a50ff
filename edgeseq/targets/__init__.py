"""Device targets for the self-contained C backend: a registry of :class:`Target` objects.

======================  ===========================================================================
``x86``                 host gcc with -march=native (``x86:x86-64``: any x86-64), runs natively,
                        wall-time latency
``arm``                 aarch64 Linux, static, runs under ``qemu-aarch64 -L /usr/aarch64-linux-gnu``;
                        ``arm:cortex-a72`` / ``arm:cortex-a76`` set ``-mcpu`` and QEMU ``-cpu``
``cortex-m4``           firmware for QEMU mps2-an386 (qemu-system-arm, semihosting I/O)
``cortex-m7``           firmware for QEMU mps2-an500
``cortex-m55``          firmware for QEMU mps3-an547 (Armv8.1-M with MVE)
``null``                build only: host C compile with -pedantic -Werror (no cross tools needed)
======================  ===========================================================================

    from edgeseq.targets import get_target
    t = get_target("cortex-m4")
    t.check_toolchain()                      # ToolchainMissingError with the apt command
    binary = t.build(edgeseq.export.c.generate(graph), "build/")
    t.run(binary, x).pooled                  # (B, P) outputs
    t.cost(binary, x)["instructions"]        # per inference / per step, under QEMU

Every target takes ``compiler=`` (``auto``, ``gcc``, ``clang``, ``clang-NN``; see
:mod:`edgeseq.targets.compilers`), and :mod:`edgeseq.targets.profile` breaks a model's instructions
per step down by micro-op.
"""

from __future__ import annotations

from typing import Callable

from ..errors import ConfigError
from .base import BuildError, Capabilities, RunResult, Target, TargetRunError
from .cortexm import BOARDS, make_cortexm
from .hosted import make_arm, make_null, make_x86

TARGETS: dict[str, Callable[..., Target]] = {
    "x86": make_x86,
    "arm": make_arm,
    "cortex-m4": lambda **kw: make_cortexm("cortex-m4", **kw),
    "cortex-m7": lambda **kw: make_cortexm("cortex-m7", **kw),
    "cortex-m55": lambda **kw: make_cortexm("cortex-m55", **kw),
    "null": make_null,
}

__all__ = [
    "BOARDS",
    "BuildError",
    "Capabilities",
    "RunResult",
    "TARGETS",
    "Target",
    "TargetRunError",
    "get_target",
    "target_names",
]


def target_names() -> list[str]:
    return list(TARGETS)


def get_target(name: "str | Target", **options) -> Target:
    """The target called ``name`` (``"arm:cortex-a72"`` selects a CPU), configured by ``options``
    (e.g. ``cpu=``, ``opt_level=``; Cortex-M: ``flash_bytes=``, ``ram_bytes=``, ``stack_bytes=``)."""
    if isinstance(name, Target):
        if options:
            raise ConfigError("options cannot be applied to an existing Target object")
        return name
    base, _, cpu = str(name).partition(":")
    if cpu:
        options.setdefault("cpu", cpu)
    try:
        factory = TARGETS[base]
    except KeyError:
        raise ConfigError(f"unknown target '{name}'; known targets: {', '.join(TARGETS)}") from None
    try:
        return factory(**options)
    except TypeError as e:
        raise ConfigError(f"invalid options for target '{base}': {e}") from None
