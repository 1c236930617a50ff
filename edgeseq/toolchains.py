"""External tools edgeseq drives (cross compilers, emulators, speech synthesis), with install hints.

``require(name)`` returns the tool's path or raises :class:`ToolchainMissingError` carrying the
exact install command; ``edgeseq doctor`` lists them all. Nothing is probed at import time.
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass

from .errors import ConfigError, ToolchainMissingError


@dataclass(frozen=True)
class Tool:
    name: str  # executable
    apt: str  # Debian/Ubuntu package(s)
    purpose: str

    @property
    def install(self) -> str:
        return f"sudo apt-get install -y {self.apt}"

    def path(self) -> str | None:
        return shutil.which(self.name)


TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        Tool("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu libc6-dev-arm64-cross", "building for --target arm"),
        Tool("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu", "linking the TVM runtime driver for --target arm"),
        Tool("arm-none-eabi-gcc", "gcc-arm-none-eabi libnewlib-arm-none-eabi", "building Cortex-M firmware"),
        Tool("qemu-aarch64", "qemu-user", "running arm artifacts on this machine"),
        Tool("qemu-system-arm", "qemu-system-arm", "running Cortex-M firmware on emulated boards"),
        Tool("espeak-ng", "espeak-ng", "synthesising the keyword-spotting corpus"),
        Tool("flite", "flite", "the held-out second speech engine of the KWS corpus"),
        Tool("gcc", "gcc", "building the QEMU instruction-count plugin and host C artifacts"),
        Tool("arm-none-eabi-objdump", "binutils-arm-none-eabi", "per-op instruction profiles of Cortex-M firmware"),
        Tool("aarch64-linux-gnu-objdump", "binutils-aarch64-linux-gnu", "per-op instruction profiles of arm builds"),
    )
}

APT_ALL = sorted({p for t in TOOLS.values() for p in t.apt.split()} | {"qemu-user-static", "g++-aarch64-linux-gnu"})


def require(name: str) -> str:
    """Path of tool ``name`` or ToolchainMissingError with its install command."""
    tool = TOOLS.get(name)
    if tool is None:
        raise ConfigError(f"unknown tool '{name}'; known: {', '.join(sorted(TOOLS))}")
    path = tool.path()
    if path is None:
        raise ToolchainMissingError(tool.name, install=tool.install, purpose=tool.purpose)
    return path


@dataclass(frozen=True)
class PyDep:
    module: str
    pip: str
    purpose: str
    optional: bool = False


PY_DEPS = (
    PyDep("numpy", "numpy", "everything"),
    PyDep("scipy", "scipy", "LMU matrices, features"),
    PyDep("torch", "torch==2.13.0", "the model zoo, capture, training"),
    PyDep("onnx", "onnx", "ONNX export"),
    PyDep("onnxruntime", "onnxruntime", "running ONNX artifacts"),
    PyDep("onnxscript", "onnxscript", "torch's own ONNX exporter (baseline)"),
    PyDep("snntorch", "snntorch", "capturing snntorch networks"),
    PyDep("tvm", "apache-tvm", "TVM compilation"),
    PyDep("matplotlib", "matplotlib", "report plots"),
    PyDep("tqdm", "tqdm", "progress bars"),
    PyDep("triton", "triton", "GPU reference kernels (optional)", optional=True),
    PyDep("optuna", "optuna", "edgeseq sweep: proposing trials"),
    PyDep(
        "ray",
        "'edgeseq[distributed]'",
        "edgeseq sweep on Ray (optional: without it, trials run in-process)",
        optional=True,
    ),
)


def python_dep_present(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
