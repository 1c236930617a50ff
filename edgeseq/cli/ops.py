"""edgeseq ops: what each backend supports, generated from the backends' registries: IR ops x
backends, step-program primitives x renderers, integer micro-ops x renderers."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("ops", help="tables of IR ops, step-program primitives and integer micro-ops x backends")
    p.add_argument("--markdown", action="store_true", help="print Markdown tables (for docs)")
    p.add_argument(
        "--table",
        choices=("ops", "primitives", "micro-ops", "all"),
        default="all",
        help="which table (default: all three)",
    )
    p.set_defaults(func=run)


def _print(header, rows, markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
        return
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def run(args) -> int:
    from ..backends import micro_op_table, primitive_table, support_table

    tables = {
        "ops": ("IR ops x backends", support_table),
        "primitives": ("step-program primitives x renderers", primitive_table),
        "micro-ops": ("integer micro-ops x renderers", micro_op_table),
    }
    chosen = list(tables) if args.table == "all" else [args.table]
    for i, key in enumerate(chosen):
        title, make = tables[key]
        if len(chosen) > 1:
            print(("\n" if i else "") + ("### " if args.markdown else "") + title + ("\n" if args.markdown else ""))
        _print(*make(), args.markdown)
    return 0
