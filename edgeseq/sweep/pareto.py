"""Pareto fronts, the chosen model, and the comparison with a reference model.

Criteria are (metric, maximize) pairs over a trial's ``metrics``. A trial *dominates* another when
it is at least as good in every criterion and strictly better in one.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from .proposer import Constraints

Criteria = Sequence[tuple[str, bool]]

# what a sweep optimises on the held-out validation subjects, and what it reports on the test split
SEARCH_ACCURACY = "accuracy_int8_val"
TEST_ACCURACY = "accuracy_int8_test"
COSTS: tuple[tuple[str, bool], ...] = (("instructions_per_inference", False), ("flash_bytes", False))


def criteria(accuracy: str, metrics_present: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """Accuracy plus the device costs this target measures (instructions, flash where the board has it)."""
    return [(accuracy, True)] + [c for c in COSTS if c[0] in metrics_present]


def _complete(rec: Mapping, crit: Criteria) -> bool:
    m = rec.get("metrics") or {}
    return rec.get("status") == "ok" and all(m.get(k) is not None for k, _ in crit)


def dominates(a: Mapping[str, Any], b: Mapping[str, Any], crit: Criteria) -> bool:
    """``a`` and ``b`` are metrics dicts."""
    better = False
    for k, maximize in crit:
        x, y = float(a[k]), float(b[k])
        if (x < y) if maximize else (x > y):
            return False
        better |= (x > y) if maximize else (x < y)
    return better


def front(records: Sequence[Mapping], crit: Criteria) -> list[int]:
    """Numbers of the trials no other trial dominates (successful trials only), in trial order."""
    ok = [r for r in records if _complete(r, crit)]
    return [r["number"] for r in ok if not any(dominates(o["metrics"], r["metrics"], crit) for o in ok if o is not r)]


def choose(records: Sequence[Mapping], constraints: Constraints, crit: Criteria) -> tuple[Optional[int], str]:
    """The model a sweep recommends, and why.

    Among the successful trials that meet every constraint: with a minimum accuracy, the cheapest
    (fewest instructions, then least flash, then the most accurate); without one, the most accurate
    on the validation subjects (ties: fewest instructions, then least flash)."""
    ok = [r for r in records if _complete(r, crit) and constraints.met(r["metrics"])]
    if not ok:
        return None, (
            "no trial met the constraints: " + constraints.describe() if constraints.terms() else "no trial completed"
        )
    acc = crit[0][0]
    costs = [k for k, _ in crit[1:]]

    def cost_key(r):
        return tuple(float(r["metrics"][k]) for k in costs)

    if constraints.min_accuracy is not None:
        best = min(ok, key=lambda r: (*cost_key(r), -float(r["metrics"][acc]), r["number"]))
        why = (
            f"the fewest {costs[0].replace('_', ' ') if costs else 'resources'} among the {len(ok)} trials "
            f"that meet {constraints.describe()}"
        )
    else:
        best = min(ok, key=lambda r: (-float(r["metrics"][acc]), *cost_key(r), r["number"]))
        why = f"the highest int8 accuracy on the validation subjects among the {len(ok)} trials" + (
            f" that meet {constraints.describe()}" if constraints.terms() else ""
        )
    return best["number"], why


def _kb(v: float) -> str:
    return f"{v / 1024:.1f} KB"


def _mi(v: float) -> str:
    return f"{v / 1e6:.2f} M"


def how(a: Mapping[str, Any], b: Mapping[str, Any], crit: Criteria) -> str:
    """Metrics ``a`` against ``b`` on ``crit`` (+ RAM when both have it), as one phrase."""
    parts = []
    for k, maximize in crit:
        x, y = float(a[k]), float(b[k])
        if k.startswith("accuracy"):
            parts.append(f"int8 accuracy {100 * x:.2f}% vs {100 * y:.2f}% ({100 * (x - y):+.2f} points)")
        elif k == "instructions_per_inference":
            parts.append(
                f"{_mi(x)} vs {_mi(y)} instructions per inference ({y / x:.2f}x fewer)"
                if x < y
                else f"{_mi(x)} vs {_mi(y)} instructions per inference"
            )
        elif k == "flash_bytes":
            parts.append(
                f"{_kb(x)} vs {_kb(y)} flash ({100 * (1 - x / y):.0f}% less)"
                if x < y
                else f"{_kb(x)} vs {_kb(y)} flash"
            )
        else:
            parts.append(f"{k} {x:g} vs {y:g}")
    if a.get("ram_bytes") is not None and b.get("ram_bytes") is not None:
        parts.append(f"{_kb(a['ram_bytes'])} vs {_kb(b['ram_bytes'])} RAM")
    return ", ".join(parts)


def versus(
    records: Sequence[Mapping], baseline: Mapping[str, Any], crit: Criteria, name: str, chosen: Optional[int] = None
) -> dict:
    """Which trials dominate the reference model ``baseline`` (its metrics) on ``crit``; the one
    named is the chosen model when it is among them, else the most accurate of them."""
    ok = [r for r in records if _complete(r, crit)]
    doms = [r for r in ok if dominates(r["metrics"], baseline, crit)]
    out: dict[str, Any] = {
        "criteria": [k for k, _ in crit],
        "dominating_trials": [r["number"] for r in doms],
        "chosen_dominates": chosen is not None and any(r["number"] == chosen for r in doms),
    }
    if doms:
        pick = next((r for r in doms if r["number"] == chosen), None) or max(
            doms, key=lambda r: (float(r["metrics"][crit[0][0]]), -r["number"])
        )
        out["trial"] = pick["number"]
        out["how"] = f"trial {pick['number']} dominates {name}: " + how(pick["metrics"], baseline, crit)
    return out
