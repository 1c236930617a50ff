"""Constructs capture does not support, recognised in a model's source so the error names the line,
the construct and what to write instead (instead of a tracing failure deep inside torch)."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass

from torch import nn

from ..errors import UnsupportedModuleError


@dataclass(frozen=True)
class Construct:
    pattern: re.Pattern
    message: str
    instead: str


CONSTRUCTS: tuple[Construct, ...] = (
    Construct(
        re.compile(r"\b(pack_padded_sequence|pack_sequence|PackedSequence)\b"),
        "packed sequences are not supported ({match})",
        "pass the padded (B, T, F) batch to the RNN itself (out, _ = self.lstm(x)); for sequences of "
        "different lengths, run each for its own length (the exported model streams its state between "
        "chunks)",
    ),
)


def _source_lines(fn):
    try:
        lines, start = inspect.getsourcelines(fn)
        return inspect.getsourcefile(fn) or "<unknown>", start, lines
    except (OSError, TypeError):
        return None


def check_constructs(module: nn.Module) -> None:
    """Raise a one-line :class:`UnsupportedModuleError` for the first known unsupported construct in
    the ``forward`` of ``module`` or of one of its submodules (module path, file and line)."""
    seen: set[type] = set()
    for path, m in module.named_modules():
        if type(m) in seen or type(m).__module__.startswith("torch."):
            continue
        seen.add(type(m))
        src = _source_lines(type(m).forward)
        if src is None:
            continue
        file, start, lines = src
        for k, line in enumerate(lines):
            code = line.split("#", 1)[0]
            for c in CONSTRUCTS:
                hit = c.pattern.search(code)
                if hit:
                    where = f"{path or type(m).__name__} ({file.rsplit('/', 1)[-1]}:{start + k})"
                    raise UnsupportedModuleError(c.message.format(match=hit.group(0)), where=where, hint=c.instead)
