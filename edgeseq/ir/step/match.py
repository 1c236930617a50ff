"""Structural matching of step programs: the basis of pattern rewrites (fast paths).

``match(pattern, prog)`` decides whether ``prog`` computes its outputs and next states the way
``pattern`` does, op for op, and binds the pattern's parameters to the program's. Inputs and
states correspond by position; value names are free; ``Add`` and ``Mul`` match with their operands
in either order and an Affine's terms in any order; a pattern Affine's bias also matches an Affine
without one (bound to None: a zero bias). Dead ops of ``prog`` are ignored; Quant points are not
skipped (match a quant-stripped program against a pattern without points).

A backend that replaces a matched program by a fused kernel builds the kernel's constants from the
bound parameters; its tests check the rewrite against the generic rendering.
"""

from __future__ import annotations

from dataclasses import fields
from itertools import permutations
from typing import Optional

from .program import Add, Affine, Mul, Prim, StepProgram

_OPERANDS = {"x", "a", "b", "c", "index", "xs", "terms", "bias"}
_COMMUTATIVE = (Add, Mul)


def match(pattern: StepProgram, prog: StepProgram) -> Optional[dict[str, Optional[str]]]:
    """Pattern parameter -> program parameter (None for an absent optional bias), or None."""
    if (
        len(pattern.inputs) != len(prog.inputs)
        or len(pattern.states) != len(prog.states)
        or len(pattern.outputs) != len(prog.outputs)
    ):
        return None
    m = _Matcher(pattern, prog)
    for p, q in zip(pattern.inputs + pattern.states, prog.inputs + prog.states):
        m.vals[p.name] = q.name
    pairs = list(zip(pattern.outputs, prog.outputs))
    pairs += [(pattern.next_state[p.name], prog.next_state[q.name]) for p, q in zip(pattern.states, prog.states)]
    for pv, v in pairs:
        if not m.value(pv, v):
            return None
    return dict(m.params)


class _Matcher:
    def __init__(self, pattern: StepProgram, prog: StepProgram):
        self.pat, self.prog = pattern, prog
        self.pprod, self.prod = pattern.producers(), prog.producers()
        self.vals: dict[str, str] = {}
        self.params: dict[str, Optional[str]] = {}

    def _snapshot(self):
        return dict(self.vals), dict(self.params)

    def _restore(self, snap) -> None:
        self.vals, self.params = dict(snap[0]), dict(snap[1])

    def param(self, pp: str, v: Optional[str]) -> bool:
        if v is not None and not self.prog.is_param(v):
            return False
        if pp in self.params:
            return self.params[pp] == v
        self.params[pp] = v
        return True

    def value(self, pv: str, v: str) -> bool:
        if self.pat.is_param(pv):
            return self.param(pv, v)
        if pv in self.vals:
            return self.vals[pv] == v
        p, q = self.pprod.get(pv), self.prod.get(v)
        if p is None or q is None or type(p) is not type(q) or not self._same_attrs(p, q):
            return False
        self.vals[pv] = v
        if self._operands(p, q):
            return True
        del self.vals[pv]
        return False

    @staticmethod
    def _same_attrs(p: Prim, q: Prim) -> bool:
        return all(
            getattr(p, f.name) == getattr(q, f.name)
            for f in fields(p)
            if f.name not in _OPERANDS and f.name not in ("out", "n")
        )

    def _all(self, pairs) -> bool:
        snap = self._snapshot()
        if all(self.value(a, b) for a, b in pairs):
            return True
        self._restore(snap)
        return False

    def _operands(self, p: Prim, q: Prim) -> bool:
        if isinstance(p, Affine):
            return isinstance(q, Affine) and self._affine(p, q)
        a, b = p.reads(), q.reads()
        if len(a) != len(b):
            return False
        if self._all(zip(a, b)):
            return True
        return isinstance(p, _COMMUTATIVE) and self._all(zip(a, reversed(b)))

    def _affine(self, p: Affine, q: Affine) -> bool:
        if len(p.terms) != len(q.terms) or (p.bias is None and q.bias is not None):
            return False
        snap = self._snapshot()
        for order in permutations(q.terms):
            if all(t.blocks == u.blocks for t, u in zip(p.terms, order)) and self._all(
                [pair for t, u in zip(p.terms, order) for pair in ((t.w, u.w), (t.x, u.x))]
            ):
                if p.bias is None or self.param(p.bias, q.bias):
                    return True
            self._restore(snap)
        return False
