"""The float C helper library: the static helper functions at the top of every float ``model.c``
(static, so several models link side by side); :func:`prelude` picks the ones a model calls."""

from __future__ import annotations


def prelude(code: str) -> str:
    """The helper functions ``code`` calls (unused static functions would warn)."""
    import re

    parts = ["/* ---- helpers ---- */"]
    if re.search(r"\besq_dot\(", code):
        parts.append(_DOT)
    parts.append(_SCALAR)
    return "\n\n".join(p.strip("\n") for p in parts)


_DOT = r"""
/* sum_c w[c] x[c], four partial sums. */
static inline float esq_dot(const float *restrict w, const float *restrict x, int n)
{
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
    int c = 0;
    for (; c + 4 <= n; c += 4) {
        a0 += w[c] * x[c];
        a1 += w[c + 1] * x[c + 1];
        a2 += w[c + 2] * x[c + 2];
        a3 += w[c + 3] * x[c + 3];
    }
    for (; c < n; ++c)
        a0 += w[c] * x[c];
    return (a0 + a1) + (a2 + a3);
}
"""

_SCALAR = r"""
static inline float esq_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
static inline float esq_minrnn_g(float x) { return x >= 0.0f ? x + 0.5f : esq_sigmoid(x); }
static inline float esq_clamp(float x, float lo, float hi) { return x < lo ? lo : (x > hi ? hi : x); }

/* erf, Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7). */
static inline float esq_erf(float x)
{
    const float ax = x < 0.0f ? -x : x;
    const float t = 1.0f / (1.0f + 0.3275911f * ax);
    const float y = 1.0f - (((((1.061405429f * t - 1.453152027f) * t) + 1.421413741f) * t - 0.284496736f) * t
                            + 0.254829592f) * t * expf(-ax * ax);
    return x < 0.0f ? -y : y;
}

/* log(1 + t) for t in [0, 1]: 2 atanh(t / (2 + t)), series to s^15 (|error| < 1e-8). */
static inline float esq_log1p_unit(float t)
{
    const float s = t / (2.0f + t), s2 = s * s;
    return 2.0f * s * (1.0f + s2 * (1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 + s2 * (1.0f / 9
                       + s2 * (1.0f / 11 + s2 * (1.0f / 13 + s2 * (1.0f / 15))))))));
}

static inline float esq_softplus(float x)
{
    const float ax = x < 0.0f ? -x : x;
    return (x > 0.0f ? x : 0.0f) + esq_log1p_unit(expf(-ax));
}
"""
