"""Self-contained HTML reports: one file, inline CSS, plots embedded as base64 PNG (matplotlib Agg).

Building blocks shared by the quantization audit, demo and validation reports:

- plots -> PNG bytes: :func:`bar_png`, :func:`line_png`, :func:`confusion_png` (or any figure via
  :func:`figure_png`); :func:`img` turns PNG bytes into an ``<img>`` with a ``data:`` URI;
- HTML: :func:`table` (rows -> ``<table>``), :func:`section`, :func:`banner`, :func:`kv_table`,
  :func:`page` (the whole document); :func:`write_html` writes it atomically.

Nothing here loads external assets (no scripts, fonts, stylesheets or remote images), so a report
can be mailed, archived or opened offline. matplotlib is imported on first use.
"""

from __future__ import annotations

import base64
import html
import io
import math
import time
from typing import Any, Iterable, Mapping, Optional, Sequence

from .._version import __version__

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d2329;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:18px 28px 48px}
header{background:#1f3b57;color:#fff;padding:18px 28px}
header h1{margin:0;font-size:22px}header p{margin:4px 0 0;opacity:.85;font-size:13px}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:12px 18px;margin:16px 0}
h2{font-size:17px;margin:4px 0 10px;color:#1f3b57}
p.note{color:#555;font-size:13px;margin:4px 0 8px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 10px}
th,td{border:1px solid #dde1e6;padding:4px 9px;text-align:left}
th{background:#eef1f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.hl td{background:#fff6d6}caption{caption-side:top;text-align:left;font-size:13px;color:#444;padding:2px 0}
.banner{padding:12px 16px;border-radius:6px;font-weight:600;margin:14px 0}
.banner.pass{background:#e3f5e8;border:1px solid #6cbf84;color:#1e6b34}
.banner.fail{background:#fbe5e5;border:1px solid #d77;color:#8a1f1f}
.banner.info{background:#e8f0fb;border:1px solid #8fb0dd;color:#1f3b57}
img.plot{max-width:100%;height:auto;display:block;margin:6px 0}
footer{color:#777;font-size:12px;text-align:center;margin-top:24px}
code{background:#f0f2f4;padding:1px 4px;border-radius:3px}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    """A number for a table cell: ints as is, floats to ``digits`` significant digits, NaN as '-'."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.{max(1, digits - 1)}e}"
        return f"{value:.{digits}g}"
    return str(value)


# --------------------------------------------------------------------------------------- plots


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig, dpi: int = 100) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    plt = _plt()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def bar_png(
    labels: Sequence[str],
    values: Sequence[float] | Mapping[str, Sequence[float]],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    hline: Optional[float] = None,
    hline_label: str = "",
    horizontal: bool = False,
    log: bool = False,
    colors: Optional[Sequence[str]] = None,
    lim: Optional[tuple[float, float]] = None,
    size: tuple[float, float] = (8.0, 3.6),
) -> bytes:
    """Bar chart; ``values`` is one series or {series name: values} (grouped bars); ``lim``: value-axis range."""
    plt = _plt()
    series = dict(values) if isinstance(values, Mapping) else {"": list(values)}
    n = len(labels)
    h = max(size[1], 0.28 * n + 1.2) if horizontal else size[1]
    fig, ax = plt.subplots(figsize=(size[0], h))
    width = 0.8 / max(1, len(series))
    for k, (name, vals) in enumerate(series.items()):
        pos = [i + (k - (len(series) - 1) / 2) * width for i in range(n)]
        vals = [float("nan") if v is None else float(v) for v in vals]
        kw = {"label": name or None}
        if colors is not None and len(series) == 1:
            kw["color"] = list(colors)
        if horizontal:
            ax.barh(pos, vals, height=width, **kw)
        else:
            ax.bar(pos, vals, width=width, **kw)
    if horizontal:
        ax.set_yticks(range(n))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        ax.set(xlabel=ylabel, ylabel=xlabel)
        if log:
            ax.set_xscale("log")
        if hline is not None:
            ax.axvline(hline, color="crimson", ls="--", lw=1, label=hline_label or None)
        if lim is not None:
            ax.set_xlim(*lim)
    else:
        ax.set_xticks(range(n))
        ax.set_xticklabels(labels, rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center", fontsize=8)
        ax.set(xlabel=xlabel, ylabel=ylabel)
        if log:
            ax.set_yscale("log")
        if hline is not None:
            ax.axhline(hline, color="crimson", ls="--", lw=1, label=hline_label or None)
        if lim is not None:
            ax.set_ylim(*lim)
    ax.set_title(title, fontsize=11)
    ax.grid(True, axis="x" if horizontal else "y", alpha=0.3)
    if len(series) > 1 or hline_label:
        ax.legend(fontsize=8)
    return figure_png(fig)


def line_png(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    logy: bool = False,
    markers: bool = True,
    hlines: Optional[Mapping[str, float]] = None,
    xticklabels: Optional[Sequence[str]] = None,
    size: tuple[float, float] = (8.0, 3.6),
) -> bytes:
    """Line plot of one or more series over a shared x; ``hlines``: {label: y} reference lines."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=size)
    for name, ys in series.items():
        ys = [float("nan") if v is None else float(v) for v in ys]
        ax.plot(list(x)[: len(ys)], ys, marker="o" if markers else None, ms=3.5, lw=1.4, label=name)
    for k, (name, y) in enumerate((hlines or {}).items()):
        ax.axhline(y, ls="--", lw=1, color=f"C{(k + len(series)) % 10}", label=name)
    if logy:
        ax.set_yscale("log")
    if xticklabels is not None:
        ax.set_xticks(list(x))
        ax.set_xticklabels(xticklabels, fontsize=8)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3)
    if len(series) + len(hlines or {}) > 1 or any(series):
        ax.legend(fontsize=8)
    return figure_png(fig)


def confusion_png(
    matrix: Sequence[Sequence[float]], labels: Sequence[str], *, title: str = "confusion matrix", normalize: bool = True
) -> bytes:
    """Confusion matrix (rows: true class, columns: predicted), row-normalised by default, counts annotated."""
    import numpy as np

    plt = _plt()
    m = np.asarray(matrix, dtype=np.float64)
    shown = m / np.maximum(m.sum(axis=1, keepdims=True), 1) if normalize else m
    n = len(labels)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * n + 2.5), max(3.5, 0.5 * n + 2.0)))
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(title, fontsize=11)
    if n <= 16:
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(
                        j,
                        i,
                        f"{int(m[i, j])}" if float(m[i, j]).is_integer() else f"{m[i, j]:.2g}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if shown[i, j] > 0.6 else "black",
                    )
    fig.colorbar(im, ax=ax, fraction=0.046)
    return figure_png(fig)


def img(png: bytes, alt: str = "plot") -> str:
    """An ``<img>`` embedding ``png`` as a base64 data URI."""
    return f'<img class="plot" alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


# ---------------------------------------------------------------------------------------- html


def table(
    rows: Iterable[Mapping[str, Any] | Sequence[Any]],
    columns: Optional[Sequence[str]] = None,
    *,
    headers: Optional[Sequence[str]] = None,
    caption: str = "",
    digits: int = 4,
    highlight: Optional[Sequence[bool]] = None,
    formats: Optional[Mapping[str, Any]] = None,
) -> str:
    """Rows (dicts, or sequences with ``columns``/``headers``) -> an escaped HTML table.

    ``columns``: which dict keys, in order (default: keys of the first row); ``headers``: shown
    names; ``formats``: {column: callable(value) -> str}; ``highlight``: one bool per row."""
    rows = list(rows)
    if columns is None:
        columns = list(rows[0].keys()) if rows and isinstance(rows[0], Mapping) else list(headers or [])
    headers = list(headers) if headers is not None else list(columns)
    formats = dict(formats or {})
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr></thead><tbody>")
    for k, r in enumerate(rows):
        vals = [r.get(c) for c in columns] if isinstance(r, Mapping) else list(r)
        cls = ' class="hl"' if highlight is not None and k < len(highlight) and highlight[k] else ""
        cells = []
        for c, v in zip(columns, vals):
            text = formats[c](v) if c in formats else fmt(v, digits)
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            cells.append(f'<td class="num">{esc(text)}</td>' if num else f"<td>{esc(text)}</td>")
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def kv_table(items: Mapping[str, Any], caption: str = "") -> str:
    """A two-column key/value table."""
    return table([(k, v) for k, v in items.items()], columns=["key", "value"], headers=["", ""], caption=caption)


def banner(ok: Optional[bool], text: str) -> str:
    """A pass (green), fail (red) or informational (``ok=None``, blue) banner."""
    cls = "info" if ok is None else ("pass" if ok else "fail")
    label = "" if ok is None else ("PASS: " if ok else "FAIL: ")
    return f'<div class="banner {cls}">{esc(label + text)}</div>'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def section(title: str, *parts: str, sid: Optional[str] = None, note_text: str = "") -> str:
    """A titled report section; ``parts`` are HTML fragments (already escaped)."""
    ident = f' id="{esc(sid)}"' if sid else ""
    body = (note(note_text) if note_text else "") + "".join(parts)
    return f"<section{ident}><h2>{esc(title)}</h2>{body}</section>"


def page(title: str, sections: Sequence[str], *, subtitle: str = "", top: str = "") -> str:
    """The whole HTML document: header, ``top`` (e.g. a banner), sections, footer."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    sub = f"<p>{esc(subtitle)}</p>" if subtitle else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
        f"<style>{CSS}</style></head><body><header><h1>{esc(title)}</h1>{sub}</header><main>{top}"
        + "".join(sections)
        + f"<footer>generated by edgeseq {esc(__version__)} on {esc(stamp)}</footer></main></body></html>\n"
    )


def write_html(path, document: str):
    """Write an HTML document atomically (complete or absent, never half-written)."""
    from ..util.fs import atomic_write_text

    return atomic_write_text(path, document)
