"""The C rendering of the window ops (their equations are the reference interpreter's,
:data:`edgeseq.ir.interpret.WINDOW`): ``Reverse`` and ``Lookahead`` are copies between two ``T x n``
sequence buffers, shared by the float and the integer window models; ``SelfAttention`` is a
whole-window computation (float models)."""

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


def _self_attention(op, row_out: Callable[[str], str], row_in: Callable[[str], str], n: int, steps: int) -> list[str]:
    """Multi-head self-attention over the window (packed [q, k, v] rows of ``n`` = 3E floats -> E):
    per query step and head, scores over every key step, a max-shifted softmax, the weighted sum."""
    e, h = n // 3, int(op.num_heads)
    d = e // h
    return [
        "{",
        f"    float w_[{steps}];",
        "    for (int t = 0; t < T; ++t) {",
        f"        const float *q_ = {row_in('t')};",
        f"        float *y_ = {row_out('t')};",
        f"        for (int h = 0; h < {h}; ++h) {{",
        "            float m_ = 0.0f;",
        "            for (int u = 0; u < T; ++u) {",
        f"                const float *k_ = {row_in('u')} + {e};",
        "                float s_ = 0.0f;",
        f"                for (int j = 0; j < {d}; ++j)",
        f"                    s_ += q_[h * {d} + j] * k_[h * {d} + j];",
        f"                w_[u] = s_ * {1.0 / d**0.5!r}f;",
        "                if (u == 0 || w_[u] > m_)",
        "                    m_ = w_[u];",
        "            }",
        "            float z_ = 0.0f;",
        "            for (int u = 0; u < T; ++u) {",
        "                w_[u] = expf(w_[u] - m_);",
        "                z_ += w_[u];",
        "            }",
        f"            for (int j = 0; j < {d}; ++j)",
        f"                y_[h * {d} + j] = 0.0f;",
        "            for (int u = 0; u < T; ++u) {",
        f"                const float *v_ = {row_in('u')} + {2 * e};",
        "                const float p_ = w_[u] / z_;",
        f"                for (int j = 0; j < {d}; ++j)",
        f"                    y_[h * {d} + j] += p_ * v_[h * {d} + j];",
        "            }",
        "        }",
        "    }",
        "}",
    ]


#: window op kind -> float C lines of a whole-window computation (``op``, row_out, row_in, input
#: features, the longest window): ops that compute rather than copy, float models only
COMPUTE_F32 = {"SelfAttention": _self_attention}


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


def stateless_info() -> dict:
    """The state entries of a window model's info: it carries no state between windows."""
    return {"state_floats": 0, "state_layout": [], "state_spec": {}}
