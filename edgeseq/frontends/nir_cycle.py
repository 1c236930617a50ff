"""A cycle of NIR nodes (a recurrent population) -> one scan.

snntorch's RLeaky / RSynaptic pattern (a LIF / CubaLIF whose spikes feed back through one Affine,
Linear or Scale) under snntorch semantics becomes their LIF / CuBaLIF op with all-to-all or
one-to-one recurrence. Any other cycle becomes a :class:`~edgeseq.ir.ops.Scan` whose step program
holds the cycle's nodes in order: edges that close the cycle (the back edges of a depth-first walk
from where the input enters) carry their source's value of the previous step, as a state. Neurons
are :func:`edgeseq.ir.cells.leaky.population` steps, the same lowering every LeakyNeuron uses.
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import ConfigError, ShapeError, UnsupportedOpError
from ..ir import ops as O
from ..ir.step import ACT, INNER, SPIKES, STATE, StepBuilder
from ..ir.types import Recurrence

_LINEAR = ("Affine", "Linear", "Scale")


def lower_cycle(cv, comp: list[str]) -> None:
    nodes = cv.nodes
    names = set(comp)
    kinds = {nodes[k].type for k in comp}
    neurons = [k for k in comp if nodes[k].type in ("I", "IF", "LI", "LIF", "CubaLI", "CubaLIF")]
    if not neurons:
        raise ConfigError(
            "a cycle without a neuron has no state to carry (an algebraic loop)",
            where=cv.where(", ".join(sorted(comp))),
        )
    _check_every_cycle_has_state(cv, comp, set(neurons))
    for k in comp:
        if nodes[k].type in ("Delay", "Input", "Output", "Conv1d", "Conv2d", "SumPool2d", "AvgPool2d"):
            raise UnsupportedOpError(f"{nodes[k].type} inside a recurrent cycle is not supported", where=cv.where(k))
    ext = [(p, k) for k in comp for p in cv.preds[k] if p not in names]
    if not ext:
        raise ConfigError("a recurrent cycle that no input reaches", where=cv.where(", ".join(sorted(comp))))
    if (
        cv.semantics.value == "snntorch"
        and len(comp) == 2
        and len(neurons) == 1
        and kinds & set(_LINEAR)
        and _snn_pattern(cv, comp, neurons[0])
    ):
        return
    _scan(cv, comp, ext, set(neurons))


def _check_every_cycle_has_state(cv, comp, neurons: set) -> None:
    from ..util.graphs import strongly_connected

    rest = [k for k in comp if k not in neurons]
    succ = {k: [d for d in cv.succ[k] if d in rest] for k in rest}
    for c in strongly_connected(rest, succ):
        if len(c) > 1 or c[0] in succ[c[0]]:
            raise ConfigError(
                "a cycle that passes no neuron has no state to carry (an algebraic loop)",
                where=cv.where(", ".join(sorted(c))),
            )


def _ext_input(cv, ext: list[tuple[str, str]], name: str) -> tuple[str, dict]:
    """One input value for the scan: the distinct outside values entering the cycle, concatenated.
    Returns (value, {source: (start, stop)})."""
    srcs: list[str] = []
    for p, _ in ext:
        if p not in srcs:
            srcs.append(p)
    spans, at = {}, 0
    for p in srcs:
        n = int(np.prod(cv.shape[p]))
        spans[p] = (at, at + n)
        at += n
    if len(srcs) == 1:
        return cv.value[srcs[0]], spans
    return cv.builder.add(O.Concat(), [cv.value[p] for p in srcs], f"{name}.in"), spans


def _snn_pattern(cv, comp: list[str], lif: str) -> bool:
    """snntorch's RLeaky / RSynaptic: lif -> rec -> lif with rec fed by lif alone."""
    rec = next(k for k in comp if k != lif)
    node, r = cv.nodes[lif], cv.nodes[rec]
    if cv.preds[rec] != [lif] or any(d != lif for d in cv.succ[rec]) or r.type not in _LINEAR:
        return False
    ext = [p for p in cv.preds[lif] if p != rec]
    sizes = {int(np.prod(cv.shape[p])) for p in ext}
    if len(sizes) != 1:
        raise ShapeError(f"inputs into the population differ in size {sorted(sizes)}", where=cv.where(lif))
    n_x = sizes.pop()
    x = cv.value[ext[0]]
    for p in ext[1:]:  # several outside inputs into one population add up
        x = cv.builder.add(O.Add(), (x, cv.value[p]), f"{lif}.sum")
    if r.type == "Scale":
        rec_kw = dict(recurrence=Recurrence.ONE_TO_ONE, v_rec=cv._vec(r, "scale", n_x))
    else:
        W = r.p["weight"]
        if W.shape != (n_x, n_x):
            raise ShapeError(
                f"recurrent weight has shape {W.shape}, the population has {n_x} neurons", where=cv.where(rec)
            )
        bias = np.broadcast_to(r.p["bias"], (n_x,)) if r.type == "Affine" else None
        rec_kw = dict(recurrence=Recurrence.ALL_TO_ALL, w_rec=W, b_rec=bias)
    op = cv.snn_neuron(node, n_x, rec_kw)
    y = cv._add(node, op, x)
    cv.value[lif] = cv.value[rec] = y
    cv.shape[lif] = (n_x,)
    cv.shape[rec] = (n_x,)
    cv.map[rec] = y
    return True


def _sizes(cv, comp: list[str], ext) -> dict[str, int]:
    """Output size of every node of the cycle (from weights, or carried through elementwise nodes)."""
    size: dict[str, int] = {}
    for k in comp:
        node = cv.nodes[k]
        if node.type in ("Affine", "Linear"):
            size[k] = int(node.p["weight"].shape[0])
    for p, _ in ext:
        size.setdefault(p, int(np.prod(cv.shape[p])))
    changed = True
    while changed:
        changed = False
        for k in comp:
            if k in size:
                continue
            known = [size[p] for p in cv.preds[k] if p in size]
            if known:
                size[k] = known[0]
                changed = True
    missing = [k for k in comp if k not in size]
    if missing:
        raise ShapeError("cannot tell the size of nodes in the cycle", where=cv.where(", ".join(missing)))
    return size


def _scan(cv, comp: list[str], ext, neurons: set) -> None:
    names = set(comp)
    size = _sizes(cv, comp, ext)
    x, spans = _ext_input(cv, ext, comp[0])
    entries = [k for _, k in ext]
    back = _back_edges(cv, comp, entries)
    order = _order(cv, comp, back)
    tag = lambda k: re.sub(r"[^A-Za-z0-9_.:\-]", "_", k)  # noqa: E731
    b = StepBuilder("nir.cycle", {"x": sum(e - s for s, e in spans.values())})
    delayed = sorted({s for s, _ in back}, key=order.index)
    for k in order:
        if k in neurons:
            if cv.nodes[k].type in ("CubaLI", "CubaLIF"):
                b.state(f"{tag(k)}.syn", size[k])
            b.state(f"{tag(k)}.mem", size[k])
    for k in delayed:
        spk = cv.nodes[k].type in ("IF", "LIF", "CubaLIF")
        b.state(f"{tag(k)}.out", size[k], SPIKES if spk else None)
    val: dict[str, str] = {}
    nxt: dict[str, str] = {}
    ops: dict[str, O.Op] = {}
    from ..ir.cells.leaky import population

    for k in order:
        node, w = cv.nodes[k], cv.where(k)
        terms = []
        for p in cv.preds[k]:
            if p not in names:
                s, e = spans[p]
                terms.append("x" if (s, e) == (0, b.sizes["x"]) else b.slice("x", s, e))
            elif (p, k) in back:
                terms.append(f"{tag(p)}.out")
            else:
                terms.append(val[p])
        if len({b.size(t) for t in terms}) != 1:
            raise ShapeError(f"incoming edges carry different sizes {sorted({b.size(t) for t in terms})}", where=w)
        cur = terms[0]
        for t in terms[1:]:
            cur = b.add(cur, t)
        if len(terms) > 1:  # a sum of differently scaled values gets its own scale
            cur = b.quant(f"{tag(k)}.sum", cur, INNER)
        n = b.size(cur)
        t = node.type
        if t in ("Affine", "Linear"):
            W = node.p["weight"]
            if W.ndim != 2 or W.shape[1] != n:
                raise ShapeError(f"{t} weight {W.shape} does not take the {n} values it receives", where=w)
            bias = b.param(f"{tag(k)}.bias", np.broadcast_to(node.p["bias"], (W.shape[0],))) if t == "Affine" else None
            y = b.quant(
                f"{tag(k)}.y", b.affine([(b.param(f"{tag(k)}.weight", W, source=f"{tag(k)}.weight"), cur)], bias), INNER
            )
        elif t == "Scale":
            y = b.mul(b.param(f"{tag(k)}.scale", cv._vec(node, "scale", n)), cur)
        elif t == "Flatten":
            y = cur
        elif t == "Threshold":
            y = b.gt(cur, b.param(f"{tag(k)}.threshold", cv._vec(node, "threshold", n)))
        elif k in neurons:
            op = ops[k] = cv.neuron_op(node, n)
            spk, mem, st = population(
                b, op, cur, f"{tag(k)}.syn", f"{tag(k)}.mem", prefix=f"{tag(k)}.", pop=f"{tag(k)}."
            )
            nxt.update(st)
            y = spk if spk is not None else mem
        else:  # pragma: no cover - lower_cycle refuses the rest
            raise UnsupportedOpError(f"{t} inside a recurrent cycle is not supported", where=w)
        val[k] = y
    for k in delayed:
        spk = cv.nodes[k].type in ("IF", "LIF", "CubaLIF")
        nxt[f"{tag(k)}.out"] = val[k] if spk else b.quant_state(f"{tag(k)}.out", val[k], STATE)
    leaving = [k for k in order if any(d not in names for d in cv.succ[k])]
    outs = []
    for i, k in enumerate(leaving):
        spk = cv.nodes[k].type in ("IF", "LIF", "CubaLIF", "Threshold")
        outs.append(b.quant_output(i, val[k], SPIKES if spk else ACT))
    if not outs:
        raise ConfigError("nothing leaves the recurrent cycle", where=cv.where(", ".join(sorted(comp))))
    prog = b.build(outs, nxt)
    name = "cycle." + tag(leaving[0])
    ys = cv.builder.add(O.Scan(program=prog), x, name)
    ys = (ys,) if isinstance(ys, str) else ys
    for k, y in zip(leaving, ys):
        cv.value[k], cv.shape[k] = y, (size[k],)
    for k in comp:
        cv.map[k] = ys[0]
    # the cycle's NIR structure, so that an export can write it back (parameters stay in the program)
    cv.cycles[ys[0]] = {
        "nodes": [
            {"name": k, "type": cv.nodes[k].type, "tag": tag(k), **({"reset": ops[k].reset.value} if k in ops else {})}
            for k in order
        ],
        "edges": [[s, d] for s, d in cv.edges if s in names and d in names],
        "inputs": [[cv.value[p], k] for p, k in ext],
        "outputs": leaving,
    }


def _back_edges(cv, comp: list[str], entries: list[str]) -> set:
    names = set(comp)
    state, back = {}, set()
    for root in entries + comp:
        if root in state:
            continue
        stack = [(root, iter([d for d in cv.succ[root] if d in names]))]
        state[root] = 1
        while stack:
            v, it = stack[-1]
            for w in it:
                if state.get(w) == 1:
                    back.add((v, w))
                elif w not in state:
                    state[w] = 1
                    stack.append((w, iter([d for d in cv.succ[w] if d in names])))
                    break
            else:
                state[v] = 2
                stack.pop()
    return back


def _order(cv, comp: list[str], back: set) -> list[str]:
    names = set(comp)
    indeg = {k: sum(1 for p in cv.preds[k] if p in names and (p, k) not in back) for k in comp}
    ready = [k for k in comp if indeg[k] == 0]
    out = []
    while ready:
        k = ready.pop(0)
        out.append(k)
        for d in cv.succ[k]:
            if d in names and (k, d) not in back:
                indeg[d] -= 1
                if indeg[d] == 0:
                    ready.append(d)
    return out
