"""Small graph algorithms on named nodes."""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence


def strongly_connected(names: Sequence[str], succ: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components of a directed graph (Tarjan, iterative: no recursion limit),
    each listed after every component it has edges to."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]
    for root in names:
        if root in index:
            continue
        work = [(root, iter(succ.get(root, ())))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(succ.get(w, ()))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    out.append(comp)
    return out
