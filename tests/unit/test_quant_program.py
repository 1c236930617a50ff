"""Integer programs: micro-op arithmetic edge cases, width checks, verification, serialisation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeseq.errors import IRFormatError, NumericsError, VerificationError
from edgeseq.quant import intexact
from edgeseq.quant.lower import make_table, quantize_multiplier
from edgeseq.quant.program import (
    Add,
    Clamp,
    CmpGe,
    Concat,
    Div,
    Gather,
    InputSpec,
    Isqrt,
    Load,
    Lut,
    MatVec,
    Mul,
    OutputSpec,
    Program,
    ProgramBuilder,
    Requant,
    Select,
    Store,
    Sub,
    bits_for,
    container_bits,
    int_range,
)


def _prog(ops, n_in=3, in_bits=16, out="y", vec_bits=None, consts=None, states=None, final=(), out_temporal=True):
    """A program from raw micro-ops; vector widths from ``vec_bits`` (name -> (n, bits))."""
    from edgeseq.quant.program import Vec

    spec = InputSpec("x", np.arange(n_in), in_bits, np.ones(n_in), np.ones(n_in), np.zeros(n_in))
    vecs = {"x": Vec("x", n_in, in_bits)}
    for k, (n, b) in (vec_bits or {}).items():
        vecs[k] = Vec(k, n, b)
    consts = {k: np.asarray(v) for k, v in (consts or {}).items()}
    p = Program(
        (spec,),
        vecs,
        dict(states or {}),
        consts,
        tuple(ops),
        tuple(final),
        (OutputSpec(out, out, out_temporal, np.ones(vecs[out].n)),),
    )
    return p


def _run1(prog, x):
    x = np.asarray(x, np.int64).reshape(1, 1, -1)
    (y,), _ = intexact.run(prog, x, check=True)
    return y[0, 0]


# ----------------------------------------------------------------------------------------------
# requant


def test_requant_rounds_half_up_including_negatives():
    # M = 2^30, s = 31: multiply by 1/2 exactly
    p = _prog(
        [Requant(out="y", x="x", mult="m", shift="s")],
        n_in=6,
        vec_bits={"y": (6, 8)},
        consts={"m": np.array([1 << 30], np.int32), "s": np.array([31], np.int8)},
    )
    y = _run1(p, [-5, -3, -1, 1, 3, 5])
    assert y.tolist() == [-2, -1, 0, 1, 2, 3]  # -2.5 -> -2, -1.5 -> -1, -0.5 -> 0, 0.5 -> 1, 1.5 -> 2, 2.5 -> 3


def test_requant_saturates_to_the_declared_width_and_pre_shift():
    p = _prog(
        [Requant(out="y", x="x", mult="m", shift="s")],
        n_in=4,
        in_bits=32,
        vec_bits={"y": (4, 8)},
        consts={"m": np.array([1 << 30], np.int32), "s": np.array([30], np.int8)},
    )
    assert _run1(p, [1000, -1000, 127, -128]).tolist() == [127, -128, 127, -128]
    # pre-shift: (x + 2^(pre-1)) >> pre first, then the multiplier; x beyond 32 bits is allowed
    p = _prog(
        [Requant(out="y", x="x", mult="m", shift="s", pre=4)],
        n_in=3,
        in_bits=40,
        vec_bits={"y": (3, 32)},
        consts={"m": np.array([1 << 30], np.int32), "s": np.array([30], np.int8)},
    )
    big = (1 << 34) + 8
    assert _run1(p, [big, -24, 23]).tolist() == [(big + 8) >> 4, (-24 + 8) >> 4, (23 + 8) >> 4]


def test_requant_zero_multiplier_and_per_channel_parameters():
    p = _prog(
        [Requant(out="y", x="x", mult="m", shift="s")],
        n_in=3,
        vec_bits={"y": (3, 16)},
        consts={"m": np.array([0, 1 << 30, 1610612736], np.int32), "s": np.array([1, 30, 31], np.int8)},
    )
    # 1610612736 / 2^31 = 0.75
    assert _run1(p, [1000, -7, 10]).tolist() == [0, -7, 8]  # 7.5 -> 8


def test_requant_input_over_32_bits_without_pre_shift_is_reported():
    p = _prog(
        [Requant(out="y", x="x", mult="m", shift="s", node="cell")],
        n_in=1,
        in_bits=40,
        vec_bits={"y": (1, 16)},
        consts={"m": np.array([1 << 30]), "s": np.array([40])},
    )
    with pytest.raises(NumericsError, match="cell") as ei:
        _run1(p, [1 << 33])
    assert "requant" in str(ei.value)


@pytest.mark.parametrize("ratio", [1e-9, 3.7e-5, 0.5, 0.9999999, 1.0, 1.5, 1000.0, 2.0**29])
def test_quantize_multiplier_matches_the_ratio(ratio):
    m, s = quantize_multiplier(ratio)
    assert (1 << 30) <= int(m[0]) < (1 << 31) and 1 <= int(s[0]) <= 62
    assert math.isclose(int(m[0]) * 2.0 ** -int(s[0]), ratio, rel_tol=2**-30)


def test_quantize_multiplier_edge_cases():
    m, s = quantize_multiplier([0.0, 1e-30])
    assert m.tolist() == [0, 0] and s.tolist() == [1, 1]
    with pytest.raises(NumericsError):
        quantize_multiplier(2.0**31)
    with pytest.raises(NumericsError):
        quantize_multiplier(-1.0)


# ----------------------------------------------------------------------------------------------
# other micro-ops


def test_div_rounds_half_up_and_rejects_non_positive_divisors():
    p = _prog([Div(out="y", a="x", b="k:2")], n_in=6, vec_bits={"y": (6, 16)}, consts={"k:2": np.array([2])})
    assert _run1(p, [-5, -3, -1, 1, 3, 5]).tolist() == [-2, -1, 0, 1, 2, 3]
    p = _prog([Div(out="y", a="x", b="x", node="n0")], n_in=2, vec_bits={"y": (2, 16)})
    with pytest.raises(NumericsError, match="divisor"):
        _run1(p, [0, 3])


def test_isqrt_is_exact():
    vals = [0, 1, 2, 3, 4, 15, 16, 17, (1 << 31) - 1, (1 << 40), (1 << 40) - 1, (1 << 61) + 12345]
    p = _prog([Isqrt(out="y", x="x")], n_in=len(vals), in_bits=63, vec_bits={"y": (len(vals), 32)})
    assert _run1(p, vals).tolist() == [math.isqrt(v) for v in vals]
    p = _prog([Isqrt(out="y", x="x")], n_in=1, vec_bits={"y": (1, 16)})
    with pytest.raises(NumericsError, match="negative"):
        _run1(p, [-1])


def test_lut_int8_direct_and_int16_interpolated():
    t8 = np.arange(256, dtype=np.int64) - 100
    p = _prog([Lut(out="y", x="x", table="t")], n_in=3, in_bits=8, vec_bits={"y": (3, 16)}, consts={"t": t8})
    assert _run1(p, [-128, 0, 127]).tolist() == [-100, 28, 155]
    # k = 2: 5 nodes at x = -32768, -16384, 0, 16384, 32768; S = 14
    t = np.array([0, 1000, 2000, -1000, 5], np.int64)
    p = _prog([Lut(out="y", x="x", table="t")], n_in=6, in_bits=16, vec_bits={"y": (6, 16)}, consts={"t": t})
    y = _run1(p, [-32768, -24576, 0, 8192, 8191, 32767]).tolist()
    # -24576: half way between nodes 0 and 1 -> 500; 8192: half way 2000 -> -1000 -> 500
    # 8191: 2000 + ((-3000 * 8191 + 8192) >> 14) = 2000 - 1499 ; 32767: node 3 + (1005 * 16383 + 8192) >> 14
    assert y == [0, 500, 2000, 500, 2000 + ((-3000 * 8191 + 8192) >> 14), -1000 + ((1005 * 16383 + 8192) >> 14)]


def test_make_table_matches_the_function_at_its_nodes():
    t = make_table("tanh", 6.0 / 32768, 16, 2.0**-15, 16, 9)
    assert t.size == 513 and t[0] == -32768 + 1 or t[0] <= -32700
    xs = (np.arange(513) * 128 - 32768) * (6.0 / 32768)
    assert np.max(np.abs(t - np.clip(np.floor(np.tanh(xs) * 32768 + 0.5), -32768, 32767))) == 0


def test_elementwise_ops_with_broadcast_constants():
    ops = [
        Mul(out="a", a="x", b="k2"),
        Sub(out="b", a="a", b="x"),
        Add(out="c", a="b", b="k2"),
        CmpGe(out="d", a="c", b="k5"),
        Select(out="e", c="d", a="x", b="kz"),
        Clamp(out="y", x="e", lo="kz", hi="k2"),
    ]
    consts = {"k2": np.array([2]), "k5": np.array([5]), "kz": np.array([0])}
    p = _prog(
        ops,
        n_in=4,
        in_bits=8,
        vec_bits={"a": (4, 10), "b": (4, 10), "c": (4, 10), "d": (4, 2), "e": (4, 8), "y": (4, 8)},
        consts=consts,
    )
    assert _run1(p, [1, 3, -4, 100]).tolist() == [0, 2, 0, 2]


def test_matvec_blocks_concat_blocks_and_gather():
    w = np.array([[1, 2, 3], [0, -1, 1]], np.int64)  # (N=2, I=3)
    ops = [
        Concat(out="c", xs=("x", "u"), blocks=2),
        MatVec(out="m", x="c", w="w", bias="b", blocks=2),
        Gather(out="y", x="m", index="g"),
    ]
    consts = {"w": w, "b": np.array([10, 20]), "u": np.array([0, 0]), "g": np.array([3, 2, 1, 0])}
    p = _prog(ops, n_in=4, in_bits=8, vec_bits={"c": (6, 8), "m": (4, 16), "y": (4, 16)}, consts=consts)
    # blocks of x: [1, 2], [3, 4]; interleaved with u=0 -> [1, 2, 0, 3, 4, 0]
    m0 = w @ np.array([1, 2, 0]) + [10, 20]
    m1 = w @ np.array([3, 4, 0]) + [10, 20]
    assert _run1(p, [1, 2, 3, 4]).tolist() == list(np.concatenate([m0, m1])[[3, 2, 1, 0]])


def test_state_load_store_and_chunked_equals_whole():
    from edgeseq.quant.program import StateSpec

    ops = [
        Load(out="s0", state="acc"),
        Add(out="s1", a="s0", b="x", accumulate=True),
        Store(out="acc", x="s1"),
        Load(out="y", state="acc"),
    ]
    p = _prog(
        ops,
        n_in=2,
        in_bits=8,
        vec_bits={"s0": (2, 32), "s1": (2, 32), "y": (2, 32)},
        states={"acc": StateSpec("acc", (2,), 32)},
    )
    p.verify()
    x = np.random.default_rng(0).integers(-128, 128, size=(3, 17, 2))
    whole, st = intexact.run(p, x)
    assert np.array_equal(whole[0], np.cumsum(x, axis=1))
    for chunk in (1, 4, 16):
        parts, st2 = intexact.run_chunked(p, x, chunk)
        assert np.array_equal(parts[0], whole[0]) and np.array_equal(st2["acc"], st["acc"])


def test_overflow_is_detected_with_node_and_micro_op():
    # declared too narrow on purpose: the interpreter names the node and the micro-op
    p = _prog([Add(out="y", a="x", b="x", node="lmu.0")], n_in=2, in_bits=8, vec_bits={"y": (2, 8)})
    with pytest.raises(NumericsError) as ei:
        _run1(p, [100, 1])
    msg = str(ei.value)
    assert "lmu.0" in msg and "add" in msg and "int8" in msg
    with pytest.raises(VerificationError, match="does not fit"):
        p.verify()


def test_verify_rejects_bad_programs():
    p = _prog([Add(out="y", a="x", b="nope")], vec_bits={"y": (3, 17)})
    with pytest.raises(VerificationError, match="nope"):
        p.verify()
    p = _prog(
        [Requant(out="y", x="x", mult="m", shift="s")],
        vec_bits={"y": (3, 8)},
        consts={"m": np.array([5]), "s": np.array([3])},
    )
    with pytest.raises(VerificationError, match="multiplier"):
        p.verify()
    p = _prog([MatVec(out="y", x="x", w="w")], vec_bits={"y": (2, 32)}, consts={"w": np.ones((2, 4), np.int8)})
    with pytest.raises(VerificationError, match="shapes"):
        p.verify()


def test_bits_helpers():
    assert bits_for(0, 1) == 2 and bits_for(-128, 127) == 8 and bits_for(-129, 0) == 9
    assert container_bits(9) == 16 and container_bits(33) == 64
    assert int_range(16) == (-32768, 32767)
    with pytest.raises(NumericsError):
        container_bits(65)


def test_builder_widths_and_json_round_trip():
    b = ProgramBuilder()
    b.add_input(InputSpec("x", np.arange(2), 8, np.ones(2), np.ones(2), np.zeros(2)))
    w = b.const("w", np.array([[127, -127], [1, 2]]))
    acc = b.emit(MatVec(out="acc", x="x", w=w), 2)
    assert b.vectors[acc].bits == bits_for(-127 * 128 * 2, 127 * 128 * 2)
    y = b.emit(Requant(out="y", x=acc, mult=b.scalar(1 << 30), shift=b.scalar(31)), 2, 8, np.ones(2))
    b.outputs.append(OutputSpec("y", y, True, np.ones(2)))
    p = b.build()
    q = Program.from_json(p.to_json(), p.consts)
    assert q.equals(p)
    x = np.array([[[5, -7], [127, -128]]])
    assert np.array_equal(intexact.run(p, x)[0][0], intexact.run(q, x)[0][0])
    with pytest.raises(IRFormatError):
        bad = p.to_json()
        bad["step"][0]["op"] = "conv"
        Program.from_json(bad, p.consts)
