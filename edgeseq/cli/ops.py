"""edgeseq ops: the op x backend support table, generated from the op and backend registries."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("ops", help="table of IR ops and the backends/targets that support them")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table (for docs)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..backends import support_table

    header, rows = support_table()
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
        return 0
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    return 0
