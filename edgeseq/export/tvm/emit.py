"""TVMScript source emitter for the generated TIR kernels of the TVM backend.

Every kernel edgeseq hands to TVM is a plain-TIR ``PrimFunc`` written out as TVMScript text by the
generators in :mod:`.ff`, :mod:`.scan` and :mod:`.intgen` and parsed by ``tvm.script.from_source``. This module
holds the pieces they share:

- :class:`Schedule`: the blocking a target asks for (vector lanes, register-blocked columns and
  rows);
- :class:`Kernel`: one PrimFunc under construction (parameters with static or symbolic shapes,
  local scratch buffers, statements), with the two loop idioms every kernel is built from:
  :meth:`Kernel.vec` (an elementwise loop vectorised over a feature axis, with a separate tail
  loop for sizes that are not a multiple of the vector width) and :meth:`Kernel.matvec` (a
  register-blocked matrix-vector product against pre-transposed weights, one or several terms).

Rule enforced here (and checked on the lowered TIR by :mod:`.lint`): a vectorised loop body only
holds buffer stores. Intermediate values go to local buffers, never to scalar ``x = ...``
bindings: TVM 0.27 broadcasts a scalar let-binding inside ``T.vectorized`` wrongly (a silent
miscompile that yields one lane's value in every lane).

Symbolic sizes: ``"B"`` (batch) and ``"T"`` (sequence length) in a shape become the TIR variables
``B`` and ``TT`` bound from the arguments at run time, so one kernel serves every batch size and
sequence length.
"""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, Union

Dim = Union[int, str]
SYMBOLS = {"B": "B", "T": "TT"}


@dataclass(frozen=True)
class Schedule:
    """Blocking of the generated loops for one target.

    ``lanes``: float32 lanes of one vector register; ``col_block``: outputs accumulated in registers
    by a matrix-vector product (a multiple of ``lanes``); ``row_block``: sequence steps processed
    together by the hoisted (whole-sequence) projections."""

    lanes: int = 8
    col_block: int = 32
    row_block: int = 4

    def __post_init__(self):
        if self.lanes < 1 or self.col_block < self.lanes or self.row_block < 1:
            raise ValueError(f"invalid schedule {self}")


def f32(v: float) -> str:
    """A float32 literal in TVMScript."""
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"non-finite constant {v}")
    return f"T.float32({v!r})"


def _dim(d: Dim) -> str:
    return SYMBOLS[d] if isinstance(d, str) else str(int(d))


@dataclass
class Param:
    name: str
    shape: tuple[Dim, ...]
    dtype: str
    output: bool


class Kernel:
    """One generated PrimFunc: parameters, local scratch buffers and a statement list.

    Parameters are passed by ``call_tir`` inputs first, then outputs, each in declaration order
    (the order :meth:`inputs` and :meth:`outputs` report); they may be declared in any order. Kernels are pure functions of their
    parameters: identical sources are shared between layers by the lowering."""

    def __init__(self, name: str, sched: Schedule):
        self.name = name
        self.sched = sched
        self.params: list[Param] = []
        self._allocs: list[str] = []
        self._alloc_names: set[str] = set()
        self._lines: list[str] = []
        self._depth = 1
        self._uid = 0
        self._aliases: list[str] = []

    # -- declarations ---------------------------------------------------------------------------
    def input(self, name: str, shape: Sequence[Dim], dtype: str = "float32") -> str:
        return self._param(name, shape, dtype, False)

    def output(self, name: str, shape: Sequence[Dim], dtype: str = "float32") -> str:
        return self._param(name, shape, dtype, True)

    def _param(self, name, shape, dtype, output) -> str:
        if any(p.name == name for p in self.params) or name in self._alloc_names:
            raise ValueError(f"duplicate kernel parameter {name}")
        self.params.append(Param(name, tuple(shape), dtype, output))
        return name

    def inputs(self) -> list[Param]:
        return [p for p in self.params if not p.output]

    def outputs(self) -> list[Param]:
        return [p for p in self.params if p.output]

    def scratch(self, name: str, size: int, dtype: str = "float32") -> str:
        """A scratch buffer of ``size`` elements, allocated once per call.

        Scope "global": on CPU, TVM keeps a constant-size "global" allocation under 1 KiB as a
        stack alloca, which LLVM promotes to registers (accumulators); larger ones, and every
        "local" one, become TVMBackendAllocWorkspace calls, whose results LLVM must assume
        may alias each other (it then stores accumulators back on every step)."""
        if name in self._alloc_names:
            return name
        self._alloc_names.add(name)
        self._allocs.append(f'{name} = T.alloc_buffer(({max(int(size), 1)},), "{dtype}")')
        return name

    def flat(self, name: str, param: str) -> str:
        """A 2-D (rows, features) view ``name`` of the leading-dims-flattened parameter ``param``."""
        p = next(p for p in self.params if p.name == param)
        rows = " * ".join(_dim(d) for d in p.shape[:-1]) or "1"
        self._aliases.append(f'{name} = T.decl_buffer(({rows}, {_dim(p.shape[-1])}), "{p.dtype}", data={param}.data)')
        return name

    def fresh(self, base: str) -> str:
        self._uid += 1
        return f"{base}{self._uid}"

    # -- statements -----------------------------------------------------------------------------
    def line(self, text: str) -> None:
        self._lines.append("    " * self._depth + text)

    @contextmanager
    def block(self, header: str) -> Iterator[None]:
        self.line(header)
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    @contextmanager
    def loop(self, var: str, extent: Union[int, str], kind: str = "serial") -> Iterator[str]:
        with self.block(f"for {var} in T.{kind}({extent}):"):
            yield var

    def vec(self, n: int, body: Callable[[str], Sequence[str]], lanes: int | None = None) -> None:
        """Elementwise loop over ``range(n)``: ``body(j)`` returns the store statements for index
        expression ``j``. Full vectors of ``lanes`` plus one vectorised tail of ``n % lanes``."""
        self.lanes_loop(n, lambda j, lane: body(j), lanes)

    def lanes_loop(self, n: int, body: Callable[[str, str], Sequence[str]], lanes: int | None = None) -> None:
        """:meth:`vec` whose ``body(j, lane)`` also gets the lane variable (``j`` modulo the vector
        width): per-lane temporaries live in buffers of ``lanes`` elements indexed by it."""
        lanes = lanes or self.sched.lanes
        full, rem = divmod(int(n), lanes)
        if full:
            jo, ji = self.fresh("jo"), self.fresh("ji")
            with self.loop(jo, full):
                with self.loop(ji, lanes, "vectorized"):
                    for s in body(f"{jo} * {lanes} + {ji}", ji):
                        self.line(s)
        if rem:
            ji = self.fresh("jt")
            with self.loop(ji, rem, "vectorized"):
                for s in body(f"{full * lanes} + {ji}", ji):
                    self.line(s)

    def matvec(
        self,
        *,
        n_out: int,
        terms: Sequence[tuple[int, Callable[[str, str], str], Callable[[str], str]]],
        init: Callable[[str], str] | None,
        store: Callable[[str, str], Sequence[str]],
        acc: str = "acc",
    ) -> None:
        """``out[j] = init(j) + sum over terms (n_in, weight, vec) of sum_k vec(k) * weight(k, j)``
        for ``j < n_out``, ``k < n_in``.

        Register-blocked: ``col_block`` outputs stay in an accumulator while the reductions run
        over ``k`` (one broadcast of ``vec(k)`` and ``col_block / lanes`` fused multiply-adds per
        step). ``store(j, value)`` returns the statements that consume the result."""
        cb = self.sched.col_block
        self.scratch(acc, cb)
        full, rem = divmod(int(n_out), cb)
        blocks: list[tuple[str | None, int, int]] = []
        if full:
            blocks.append((self.fresh("jb"), full, cb))
        if rem:
            blocks.append((None, full * cb, rem))
        for var, extent_or_base, width in blocks:
            ji = self.fresh("jv")
            if var is not None:
                ctx = self.loop(var, extent_or_base)
                base = f"{var} * {width}"
            else:
                ctx = nullcontext()
                base = str(extent_or_base)
            with ctx:
                col = f"{base} + {ji}"
                with self.loop(ji, width, "vectorized"):
                    self.line(f"{acc}[{ji}] = {init(col) if init else f32(0.0)}")
                for n_in, weight, vec in terms:
                    if not n_in:
                        continue
                    k = self.fresh("k")
                    with self.loop(k, n_in):
                        ji2 = self.fresh("jv")
                        col2 = f"{base} + {ji2}"
                        with self.loop(ji2, width, "vectorized"):
                            self.line(f"{acc}[{ji2}] = {acc}[{ji2}] + {vec(k)} * {weight(k, col2)}")
                ji3 = self.fresh("jv")
                with self.loop(ji3, width, "vectorized"):
                    for s in store(f"{base} + {ji3}", f"{acc}[{ji3}]"):
                        self.line(s)

    # -- output ---------------------------------------------------------------------------------
    def source(self) -> str:
        args = ", ".join(f"{p.name}_h: T.handle" for p in self.inputs() + self.outputs())
        out = ["@T.prim_func(private=True)", f"def {self.name}({args}):", '    T.func_attr({"tir.noalias": True})']
        used = {d for p in self.params for d in p.shape if isinstance(d, str)}
        for sym in ("B", "T"):
            if sym in used:
                out.append(f"    {SYMBOLS[sym]} = T.int64()")
        for p in self.inputs() + self.outputs():
            shape = ", ".join(_dim(d) for d in p.shape) + ("," if len(p.shape) == 1 else "")
            out.append(f'    {p.name} = T.match_buffer({p.name}_h, ({shape}), "{p.dtype}")')
        out += ["    " + a for a in self._aliases]
        out += ["    " + a for a in self._allocs]
        out += self._lines or ["    T.evaluate(0)"]
        return "\n".join(out) + "\n"
