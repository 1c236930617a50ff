"""Sensitivity ranking and greedy mixed-precision search.

:func:`sensitivity` quantizes one thing at a time in the fake-quant simulation (everything else
float) and measures the change of validation accuracy and the SQNR of the model output: every
activation point of the plan, and every weight matrix. The ranking says which tensors the 8-bit
plan hurts most.

:func:`mixed_precision` starts from the plan of a quantized graph and, while its (fake-quant)
validation accuracy is more than ``budget`` points below float, promotes the most sensitive
remaining 8-bit tensor to 16 bits (a config override) and re-plans, so the budget is met with few
high-precision tensors. The integer program is rebuilt at each step; fake-quant and integer
decisions agree (see :mod:`edgeseq.quant.fakequant`), so the search runs on the fast simulation.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from ..errors import BudgetError
from .audit import sqnr_db
from .config import TensorOverride
from .fakequant import fake_run
from .qgraph import QuantizedGraph
from .sim import IdentityHook, graph_params, simulate

PROMOTABLE_ROLES = ("input", "act", "pre", "inner", "state", "unit")


def _predict(run, x, batch: int = 512):
    outs = []
    for s in range(0, len(x), batch):
        (y, *_), _ = run(x[s : s + batch])
        outs.append(np.asarray(y))
    return np.concatenate(outs)


def float_logits(qg: QuantizedGraph, x) -> np.ndarray:
    return _predict(lambda xb: simulate(qg.graph, xb, IdentityHook()), x)


def fake_logits(qg: QuantizedGraph, x, **kw) -> np.ndarray:
    return _predict(lambda xb: fake_run(qg.graph, qg.plan, qg.fake_params, xb, **kw), x)


def _weight_params(qg: QuantizedGraph, wname: str) -> dict:
    """Float parameters everywhere except the one quantized weight matrix ``wname``."""
    base = {k: dict(v) for k, v in graph_params(qg.graph).items()}
    node, _, param = wname.split("#")[0].rpartition(".")
    keys = {"AB": ("abar", "bbar"), "A": ("abar",), "B": ("bbar",), "ab": ("a", "b")}.get(param, (param,))
    for k in keys:
        if node in qg.fake_params and k in qg.fake_params[node]:
            base[node][k] = qg.fake_params[node][k]
    return base


def promotable(qg: QuantizedGraph) -> list[str]:
    pts = [k for k, e in qg.plan.entries.items() if e.role in PROMOTABLE_ROLES and e.bits < 16 and not e.absorbed]
    ws = [k.split("#")[0] for k, w in qg.plan.weights.items() if w.bits < 16]
    return pts + sorted(set(ws))


def sensitivity(
    qg: QuantizedGraph, x, y, *, points: Optional[Sequence[str]] = None, progress: bool = False
) -> list[dict]:
    """Rank tensors by the damage of quantizing them alone (fake quant, everything else float).

    Returns rows {'name', 'kind' ('activation'|'weight'), 'bits', 'accuracy', 'drop', 'sqnr_db'}
    sorted by accuracy drop, then by output SQNR (lowest first)."""
    y = np.asarray(y)
    ref = float_logits(qg, x)
    acc_f = float(np.mean(ref.argmax(-1) == y))
    names = list(points) if points is not None else promotable(qg)
    it = names
    if progress:
        from tqdm import tqdm

        it = tqdm(names, desc="sensitivity", unit="tensor", leave=False)
    rows = []
    for name in it:
        if name in qg.plan:
            out = _predict(
                lambda xb: fake_run(qg.graph, qg.plan, qg.fake_params, xb, only=frozenset([name]), float_weights=True),
                x,
            )
            kind, bits = "activation", qg.plan[name].bits
        else:
            prm = _weight_params(qg, name)
            out = _predict(lambda xb: fake_run(qg.graph, qg.plan, prm, xb, only=frozenset()), x)
            kind = "weight"
            bits = next((w.bits for k, w in qg.plan.weights.items() if k.split("#")[0] == name), 8)
        acc = float(np.mean(out.argmax(-1) == y))
        rows.append(
            {
                "name": name,
                "kind": kind,
                "bits": int(bits),
                "accuracy": acc,
                "drop": acc_f - acc,
                "sqnr_db": sqnr_db(ref, out),
            }
        )
    rows.sort(key=lambda r: (-r["drop"], r["sqnr_db"]))
    return rows


def format_sensitivity(rows: list[dict]) -> str:
    w = max([len(r["name"]) for r in rows] + [6])
    lines = [f"{'tensor'.ljust(w)}  kind        bits  accuracy   drop   SQNR dB"]
    for r in rows:
        s = "inf" if math.isinf(r["sqnr_db"]) else f"{r['sqnr_db']:.1f}"
        lines.append(
            f"{r['name'].ljust(w)}  {r['kind']:<10}  {r['bits']:>4}  {r['accuracy']:.4f}  "
            f"{100 * r['drop']:+5.2f}  {s:>7}"
        )
    return "\n".join(lines)


MAX_VAL = 2048  # validation sequences the search evaluates at most


def mixed_precision(
    qg: QuantizedGraph,
    stats,
    val,
    *,
    budget: float = 0.5,
    max_promotions: int = 8,
    progress: bool = False,
    strict: bool = False,
    max_val: int = MAX_VAL,
) -> QuantizedGraph:
    """Greedy promotion to 16 bits until fake-quant validation accuracy is within ``budget``
    accuracy points of float. ``strict=True`` raises BudgetError when the budget cannot be met."""
    from . import build

    x, y = val
    x, y = np.asarray(x)[:max_val], np.asarray(y)[:max_val]
    acc_f = float(np.mean(float_logits(qg, x).argmax(-1) == y))
    acc = float(np.mean(fake_logits(qg, x).argmax(-1) == y))
    record = {
        "budget_points": budget,
        "float_accuracy": acc_f,
        "start_accuracy": acc,
        "promoted": [],
        "steps": [],
        "validation_sequences": int(len(y)),
    }
    if 100 * (acc_f - acc) <= budget:
        record.update(final_accuracy=acc, met=True)
        qg.info["search"] = record
        return qg
    ranking = sensitivity(qg, x, y, progress=progress)
    record["sensitivity"] = [
        {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in r.items()} for r in ranking
    ]
    cfg = qg.plan.config
    best = (acc, qg)
    for r in ranking[:max_promotions]:
        ov = dict(cfg.overrides)
        ov[r["name"]] = TensorOverride(bits=16)
        cfg = cfg.with_(overrides=ov, name=cfg.name)
        cand = build(qg.graph, stats, cfg, source=qg.source, info=dict(qg.info))
        acc_c = float(np.mean(fake_logits(cand, x).argmax(-1) == y))
        record["promoted"].append(r["name"])
        record["steps"].append({"promoted": r["name"], "accuracy": acc_c})
        if acc_c > best[0]:
            best = (acc_c, cand)
        if 100 * (acc_f - acc_c) <= budget:
            best = (acc_c, cand)
            break
    acc_b, out = best
    met = 100 * (acc_f - acc_b) <= budget
    record.update(
        final_accuracy=acc_b, met=met, promoted=[k for k, o in out.plan.config.overrides.items() if o.bits == 16]
    )
    out.info["search"] = record
    if strict and not met:
        raise BudgetError(
            f"mixed precision reached {100 * acc_b:.2f}% vs float {100 * acc_f:.2f}% on "
            f"{len(y)} validation sequences (budget {budget} points) after {len(record['steps'])} "
            f"promotions to 16 bits",
            hint="allow a larger --budget, keep the best plan with "
            "--allow-miss, or fine-tune with QAT (--qat-epochs N)",
        )
    return out
