"""A small live terminal view for streaming demos (ANSI redraw on a TTY, plain log lines otherwise)."""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


class LiveView:
    """Redraws a block of status lines in place. With ``live=False`` (or when the stream is not a
    terminal) it prints a log line at most every ``log_every`` seconds instead."""

    def __init__(self, stream: Optional[TextIO] = None, live: bool = True, log_every: float = 5.0):
        self.stream = stream or sys.stderr
        self.live = live and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.log_every = log_every
        self._lines = 0
        self._last_log = 0.0

    def update(self, lines: list[str], force_log: bool = False) -> None:
        if self.live:
            out = []
            if self._lines:
                out.append(f"\x1b[{self._lines}F")
            for line in lines:
                out.append("\x1b[2K" + line + "\n")
            self.stream.write("".join(out))
            self.stream.flush()
            self._lines = len(lines)
            return
        now = time.monotonic()
        if force_log or now - self._last_log >= self.log_every:
            self._last_log = now
            self.stream.write(" | ".join(s.strip() for s in lines if s.strip()) + "\n")
            self.stream.flush()

    def close(self) -> None:
        self._lines = 0


def bar(fraction: float, width: int = 24) -> str:
    fraction = min(max(fraction, 0.0), 1.0)
    full = int(round(fraction * width))
    return "[" + "#" * full + "." * (width - full) + "]"
