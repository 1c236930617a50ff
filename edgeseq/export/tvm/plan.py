"""Lowering plans: what the TVM backend emits for one IR node, without touching TVM.

A node lowers to a short list of :class:`Call` s, each one generated kernel plus how its
parameters are bound:

- constants (weights, already transposed / folded / cast to the kernel's storage dtype),
- references to runtime values: ``"in0"``, ``"in1"`` (the node's inputs), ``"state:<name>"``
  (the node's incoming streaming state), ``"tmp:<name>"`` (a value produced by an earlier call of
  the same node, e.g. the hoisted input projection),
- and for outputs: ``"out0"``, ``"out1"`` (the node's IR outputs), ``"state:<name>"`` (outgoing
  state), ``"tmp:<name>"``.

:mod:`.lower` turns plans into Relax ``call_tir`` bindings; everything here is plain numpy and
text, so plans can be inspected and unit-tested without compiling.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .emit import Kernel


@dataclass
class Call:
    kernel: Kernel
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    ins: dict[str, str] = field(default_factory=dict)
    outs: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        names = {p.name for p in self.kernel.inputs()}
        bound = set(self.consts) | set(self.ins)
        if names != bound or set(self.consts) & set(self.ins):
            raise ValueError(f"{self.kernel.name}: inputs {sorted(names)} bound as {sorted(bound)}")
        if {p.name for p in self.kernel.outputs()} != set(self.outs):
            raise ValueError(f"{self.kernel.name}: outputs not all bound")
        for p in self.kernel.inputs():
            if p.name in self.consts:
                a = self.consts[p.name]
                if a.shape != tuple(p.shape) or a.dtype != np.dtype(p.dtype):
                    raise ValueError(
                        f"{self.kernel.name}.{p.name}: constant {a.shape} {a.dtype}, kernel wants {p.shape} {p.dtype}"
                    )


def f32(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64).astype(np.float32))
