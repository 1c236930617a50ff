"""The ``edgeseq`` command line. Each sub-command lives in its own module (``COMMANDS``) exposing
``register(subparsers)``; this is the only place where strings become configs and targets.

Errors: an :class:`~edgeseq.errors.EdgeseqError` prints one line ``edgeseq: error: ...`` and exits
with status 2; set EDGESEQ_DEBUG=1 to see tracebacks. Anything else is an edgeseq bug and prints
``edgeseq: internal error: ...`` (status 70). SIGTERM / SIGHUP stop a command cleanly: its staging
directories are removed and the previous output stays (status 143 / 129).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .._version import __version__
from ..errors import EdgeseqError

COMMANDS = (
    "doctor",
    "ops",
    "info",
    "run",
    "train",
    "export",
    "prune",
    "quantize",
    "audit",
    "demo",
    "validate",
    "bench",
    "sweep",
)


def build_parser() -> argparse.ArgumentParser:
    from .args import Parser

    p = Parser(
        prog="edgeseq",
        description="Take recurrent, LMU and spiking sequence models to edge devices, and prove they still work there.",
    )
    p.add_argument("--version", action="version", version=f"edgeseq {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name.replace('-', '_')}").register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    debug = os.environ.get("EDGESEQ_DEBUG") == "1"
    from ..util.fs import Terminated, terminate_cleanly

    try:
        with terminate_cleanly():
            rc = args.func(args)
        return int(rc or 0)
    except Terminated as e:
        print(f"edgeseq: terminated by {e.name}; unfinished output removed", file=sys.stderr)
        return 128 + e.signum
    except EdgeseqError as e:
        if debug:
            raise
        print(f"edgeseq: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("edgeseq: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # an edgeseq bug: one line, traceback on request
        if debug:
            raise
        print(
            f"edgeseq: internal error: {type(e).__name__}: {e} (set EDGESEQ_DEBUG=1 for the traceback)", file=sys.stderr
        )
        return 70


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
