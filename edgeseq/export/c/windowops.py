"""The C rendering of the window ops (``Reverse``, ``Lookahead``; their equations are the reference
interpreter's, :data:`edgeseq.ir.interpret.WINDOW`): copies between two ``T x n`` sequence buffers,
shared by the float and the integer window models."""

from __future__ import annotations

from typing import Callable

from ...errors import UnsupportedOpError

DEFAULT_WINDOW_STEPS = 128  # the longest window a C window model holds, unless told otherwise


def _reverse(row_out: Callable[[str], str], row_in: Callable[[str], str], n: int, ctype: str, steps: int) -> list[str]:
    return ["for (int t = 0; t < T; ++t)", f"    memcpy({row_out('t')}, {row_in('T - 1 - t')}, {n} * sizeof({ctype}));"]


def _lookahead(
    row_out: Callable[[str], str], row_in: Callable[[str], str], n: int, ctype: str, steps: int
) -> list[str]:
    return [
        "for (int t = 0; t < T; ++t) {",
        f"    if (t + {steps} < T)",
        f"        memcpy({row_out('t')}, {row_in(f't + {steps}')}, {n} * sizeof({ctype}));",
        "    else",
        f"        memset({row_out('t')}, 0, {n} * sizeof({ctype}));",
        "}",
    ]


#: window op kind (IR op kind, or the micro-op's) -> C lines over a window of ``T`` steps
RENDER = {"Reverse": _reverse, "reverse": _reverse, "Lookahead": _lookahead, "lookahead": _lookahead}


def window_copy(kind: str, steps: int, row_out, row_in, n: int, ctype: str) -> list[str]:
    """``y = op(x)`` over the window: ``row_out(t)`` / ``row_in(t)`` give the C pointer to row t
    (a C expression) of the output / input buffer of ``n`` values of ``ctype``."""
    fn = RENDER.get(kind)
    if fn is None:
        raise UnsupportedOpError(f"the C backend has no rendering of window op '{kind}'")
    return fn(row_out, row_in, n, ctype, int(steps))


def stateless_api(prefix: str, apis) -> list[str]:
    """``<p>_state_save<api>`` / ``<p>_state_load<api>`` of a window model, for each (api suffix, word
    type) of ``apis``: it carries no state between windows (``<P>_STATE_FLOATS`` is 0), so they do nothing."""
    p, lines = prefix, []
    for api, wt in apis:
        lines += [
            f"void {p}_state_save{api}(const {p}_state *s, {wt} *out)",
            "{",
            "    (void)s;",
            "    (void)out;",
            "}",
            "",
            f"void {p}_state_load{api}({p}_state *s, const {wt} *in)",
            "{",
            "    memset(s, 0, sizeof *s);",
            "    (void)in;",
            "}",
            "",
        ]
    return lines
