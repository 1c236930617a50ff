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

Integer kernels (:mod:`.intgen`) have hazards of their own, which :func:`integer_hazards` reports
for every expression of a PrimFunc:

- integer arithmetic (``+ - * / % >> <<``) in a type narrower than 32 bits: TVM 0.27 emits it
  as plain wrapping LLVM i8/i16 arithmetic, so an exact micro-op computed in its operands' narrow
  type silently loses the carry (30000 + 30000 -> -5536). The integer emitters compute in int32 /
  int64, where the program's declared widths guarantee that nothing overflows (TVM marks those
  operations no-signed-wrap), and cast the result to the output's storage type;
- (a shift by a constant that is negative or not smaller than the operand's width is poison too;
  TVM 0.27 already rejects it when the expression is built);
- a float -> integer conversion whose operand is not clamped by constant limits inside the
  target type's range (``fptosi`` of an out-of-range value is poison: the input quantizer clamps
  in float64 first, to limits that are exactly representable);
- an ``assert`` inside a vectorised loop (run-time checks belong in scalar loops).
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


# ----------------------------------------------------------------------------------------------
# integer hazards

_EXPR_FIELDS = ("a", "b", "value", "condition", "true_value", "false_value", "base", "stride", "body")


def _dtype(expr) -> str:
    return str(getattr(expr, "ty", "") or getattr(expr, "dtype", ""))


def _int_bits(dt: str) -> int | None:
    """Width of a scalar or vector integer dtype string ('int16', 'int32x8'), else None."""
    base = dt.split("x")[0]
    for p in ("uint", "int"):
        if base.startswith(p) and base[len(p) :].isdigit():
            return int(base[len(p) :])
    return None


def _is_float(dt: str) -> bool:
    return dt.startswith(("float", "bfloat"))


def _expr_children(e) -> Iterator:
    for f in ("indices", "args"):  # buffer loads (TensorLoad in 0.27), intrinsic calls
        seq = getattr(e, f, None)
        if seq is not None:
            yield from seq
    for f in _EXPR_FIELDS:
        c = getattr(e, f, None)
        if c is not None and hasattr(c, "ty"):
            yield c


def _clamp_limits(e) -> tuple[list[float], list[float], object]:
    """Constant limits of nested T.min / T.max around an expression: (lows, highs, inner)."""
    from tvm.tirx import expr as E

    lows, highs = [], []
    while isinstance(e, (E.Min, E.Max)):
        const = [x for x in (e.a, e.b) if isinstance(x, (E.FloatImm, E.IntImm))]
        other = [x for x in (e.a, e.b) if not isinstance(x, (E.FloatImm, E.IntImm))]
        if len(const) != 1 or len(other) != 1:
            break
        (highs if isinstance(e, E.Min) else lows).append(float(const[0].value))
        e = other[0]
    return lows, highs, e


def _expr_hazards(e, found: list[str], seen: set) -> None:
    from tvm.tirx import expr as E

    key = e.id_ if hasattr(e, "id_") else id(e)
    if key in seen:
        return
    seen.add(key)
    dt = _dtype(e)
    bits = _int_bits(dt)
    arith = (E.Add, E.Sub, E.Mul, E.Div, E.Mod, E.FloorDiv, E.FloorMod, E.LShift, E.RShift)
    if isinstance(e, arith) and bits is not None and bits < 32:
        found.append(f"{dt} arithmetic '{e}' (narrower than 32 bits: compute exact ops in int32/int64)")
    if isinstance(e, E.Cast) and bits is not None and _is_float(_dtype(e.value)):
        lows, highs, _ = _clamp_limits(e.value)
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        if dt.startswith("uint"):
            lo, hi = 0, 2**bits - 1
        if not lows or not highs or max(lows) < lo or min(highs) > hi:
            found.append(f"float -> {dt} conversion of a value not clamped to the {dt} range: '{e}'")
    for c in _expr_children(e):
        _expr_hazards(c, found, seen)


def integer_hazards(func) -> list[str]:
    """Descriptions of the integer-arithmetic hazards of a PrimFunc (see the module docstring)."""
    from tvm import tirx

    found: list[str] = []
    seen: set = set()

    def walk(stmt, vectorized: bool):
        if isinstance(stmt, tirx.For):
            _expr_hazards(stmt.min, found, seen)
            _expr_hazards(stmt.extent, found, seen)
            vectorized = vectorized or stmt.kind == tirx.ForKind.VECTORIZED
        elif isinstance(stmt, tirx.BufferStore):
            _expr_hazards(stmt.value, found, seen)
            for i in stmt.indices:
                _expr_hazards(i, found, seen)
        elif isinstance(stmt, tirx.AssertStmt):
            if vectorized:
                found.append("assert inside a vectorized loop")
            _expr_hazards(stmt.condition, found, seen)
        elif isinstance(stmt, tirx.IfThenElse):
            _expr_hazards(stmt.condition, found, seen)
        elif isinstance(stmt, (tirx.Evaluate, tirx.Bind)):
            _expr_hazards(stmt.value, found, seen)
        for c in _children(stmt):
            walk(c, vectorized)

    walk(func.body, False)
    return found


def check_kernels(mod) -> None:
    """Raise UnsupportedOpError if any PrimFunc of ``mod`` has a vectorisation or an integer hazard."""
    from tvm import tirx

    for gv, func in mod.functions.items():
        if isinstance(func, tirx.PrimFunc):
            bad = vectorization_hazards(func) + integer_hazards(func)
            if bad:
                raise UnsupportedOpError(
                    f"generated kernel would be miscompiled by TVM: {'; '.join(bad)}",
                    where=f"kernel {gv.name_hint} [target tvm]",
                )
