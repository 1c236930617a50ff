"""edgeseq doctor: which Python dependencies and external toolchains are present, with install hints."""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser("doctor", help="check Python dependencies and toolchains (with install hints)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--strict", action="store_true", help="exit non-zero if anything required is missing")
    p.set_defaults(func=run)


def collect() -> dict:
    from ..toolchains import PY_DEPS, TOOLS, python_dep_present

    py = [
        {
            "module": d.module,
            "present": python_dep_present(d.module),
            "install": f"pip install {d.pip}",
            "purpose": d.purpose,
            "optional": d.optional,
        }
        for d in PY_DEPS
    ]
    tools = [
        {"tool": t.name, "present": t.path() is not None, "path": t.path(), "install": t.install, "purpose": t.purpose}
        for t in TOOLS.values()
    ]
    return {"python": sys.version.split()[0], "python_deps": py, "toolchains": tools}


def run(args) -> int:
    info = collect()
    missing = [d for d in info["python_deps"] if not d["present"] and not d["optional"]]
    missing += [t for t in info["toolchains"] if not t["present"]]
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"edgeseq doctor (Python {info['python']})\n\nPython packages:")
        for d in info["python_deps"]:
            mark = "ok " if d["present"] else ("-- " if d["optional"] else "MISSING")
            hint = "" if d["present"] else f"   -> {d['install']}"
            print(f"  [{mark:7}] {d['module']:<12} {d['purpose']}{hint}")
        print("\nToolchains:")
        for t in info["toolchains"]:
            mark = "ok" if t["present"] else "MISSING"
            hint = f"   ({t['path']})" if t["present"] else f"   -> {t['install']}"
            print(f"  [{mark:7}] {t['tool']:<22} {t['purpose']}{hint}")
        print("\n" + ("everything is installed" if not missing else f"{len(missing)} missing (see hints above)"))
    return 1 if (missing and args.strict) else 0
