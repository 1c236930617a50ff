"""Typed errors raised by edgeseq.

Every error carries the place it concerns (``where``: a file, a layer, a module path, a target) and,
when there is one, a ``hint`` that says how to fix it. The CLI prints ``str(err)`` as one line and
exits non-zero; library users catch :class:`EdgeseqError` or one of its subclasses.
"""

from __future__ import annotations


class EdgeseqError(Exception):
    """Base class of all edgeseq errors."""

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class ConfigError(EdgeseqError, ValueError):
    """An option, config name or config value is invalid."""


class ShapeError(EdgeseqError, ValueError):
    """A tensor has the wrong rank, feature size or dtype."""


class NumericsError(EdgeseqError, ValueError):
    """Weights or data contain NaN or Inf, or a value is out of its valid range."""


class IRFormatError(EdgeseqError):
    """An IR file is corrupt, truncated, of an unknown schema version, or not an IR file."""


class VerificationError(EdgeseqError):
    """An IR graph violates the IR contract (names, types, state)."""


class UnsupportedModuleError(EdgeseqError):
    """Capture met a module or operation it cannot represent; nothing is dropped silently."""


class UnsupportedOpError(EdgeseqError):
    """A backend or target cannot lower an IR op."""


class ToolchainMissingError(EdgeseqError):
    """An external tool (cross compiler, qemu, espeak-ng, ...) is not installed."""

    def __init__(self, tool: str, *, install: str, purpose: str | None = None):
        self.tool = tool
        self.install = install
        what = f"'{tool}' is not installed" + (f" (needed for {purpose})" if purpose else "")
        super().__init__(what, hint=f"install it with: {install}")


class DatasetError(EdgeseqError):
    """A dataset is missing, incomplete or malformed."""


class ArtifactError(EdgeseqError):
    """An output location cannot be used (exists without --force, not writable) or an artifact is invalid."""


class ToleranceError(EdgeseqError):
    """A validation check failed its tolerance."""


class CheckpointError(EdgeseqError):
    """A checkpoint cannot be loaded safely or does not match its config."""


class BudgetError(EdgeseqError):
    """A quantization or pruning plan cannot meet the requested accuracy budget."""


class ResourceError(EdgeseqError):
    """A model does not fit the memory of a target device."""
