"""Structural checks on generated TIR against patterns TVM 0.27 silently miscompiles.

Inside a ``T.vectorized`` loop every lane must write its own element. TVM 0.27 breaks a scalar
binding there (``v = expr`` in TVMScript becomes a one-element local buffer, or a ``Bind``): the
vectoriser lets every lane write the same location, so all lanes then read one lane's value.
:func:`vectorization_hazards` reports, for every vectorised loop,

- a ``Bind`` or a buffer allocation inside it;
- a buffer store whose indices do not depend on the loop variable (a lane-invariant store).

The generators never emit these (intermediate values go to lane-indexed local buffers);
:func:`check_kernels` runs on every module before compilation, and the unit tests prove the check
fires on the known-bad pattern and that kernels it passes compute per-lane values correctly.
"""

from __future__ import annotations

from typing import Iterator

from ...errors import UnsupportedOpError


def _children(stmt) -> Iterator:
    from tvm import tirx

    if isinstance(stmt, tirx.SeqStmt):
        yield from stmt.seq
    elif isinstance(stmt, (tirx.For, tirx.While, tirx.AttrStmt)):
        yield stmt.body
    elif isinstance(stmt, tirx.IfThenElse):
        yield stmt.then_case
        if stmt.else_case is not None:
            yield stmt.else_case
    else:
        for attr in ("body", "block"):  # block-structured TIR (SBlockRealize / SBlock) and others
            child = getattr(stmt, attr, None)
            if child is not None:
                yield child


def _uses(expr, var) -> bool:
    from tvm.tirx.analysis import undefined_vars

    return any(v.same_as(var) for v in undefined_vars(expr, []))


def vectorization_hazards(func) -> list[str]:
    """Descriptions of the miscompile-prone statements inside vectorised loops of a PrimFunc."""
    from tvm import tirx

    found: list[str] = []

    def walk(stmt, loops: tuple):
        if isinstance(stmt, tirx.For) and stmt.kind == tirx.ForKind.VECTORIZED:
            loops = loops + (stmt.loop_var,)
        if loops:
            where = f"vectorized loop '{loops[-1]}'"
            if isinstance(stmt, tirx.Bind):
                found.append(f"scalar binding '{stmt.var}' inside {where}")
            elif isinstance(stmt, tirx.AllocBuffer):
                found.append(f"buffer '{stmt.buffer.name}' allocated inside {where}")
            elif isinstance(stmt, tirx.BufferStore):
                if not any(_uses(i, loops[-1]) for i in stmt.indices):
                    found.append(f"store to '{stmt.buffer.name}' does not depend on the lane of {where}")
        for c in _children(stmt):
            walk(c, loops)

    walk(func.body, ())
    return found


def check_kernels(mod) -> None:
    """Raise UnsupportedOpError if any PrimFunc of ``mod`` has a vectorisation hazard."""
    from tvm import tirx

    for gv, func in mod.functions.items():
        if isinstance(func, tirx.PrimFunc):
            bad = vectorization_hazards(func)
            if bad:
                raise UnsupportedOpError(f"generated kernel would be miscompiled by TVM: {'; '.join(bad)}",
                                         where=f"kernel {gv.name_hint} [target tvm]")
