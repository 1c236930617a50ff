"""Integer programs shared by the integer C backend tests (tests/unit/test_c_int.py and
tests/integration/test_c_int_targets.py): every zoo model quantized with the edgeseq and naive
presets, a hand-built program reaching every branch of the C lowering, and the bit-exact check
of a built model against the integer-exact interpreter."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

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
    ProgramBuilder,
    Requant,
    Select,
    Store,
    Sub,
)

from .zoo_cases import ZOO, build

PRESETS = ("edgeseq", "naive")
ZOO_KEYS = [(p, c) for p in PRESETS for c in ZOO]


@lru_cache(maxsize=None)
def zoo_quantized(preset: str, case: str):
    """The zoo model ``case`` captured and quantized with ``preset`` (calibration: seeded noise)."""
    import torch

    from edgeseq.frontends import capture
    from edgeseq.quant import quantize

    g = capture(build(case), torch.zeros(1, 8, 6))
    rng = np.random.default_rng(sum(map(ord, case + preset)))
    return quantize(g, rng.normal(size=(48, 16, 6)) * 1.3, preset)


@lru_cache(maxsize=None)
def har_lmu_quantized():
    """The HAR recipe's LMU without its front end (13.2k parameters, 6 inputs), quantized with the edgeseq
    preset on IMU-like noise (sizes and costs do not depend on training); also returns 48
    sequences of 128 steps of that noise."""
    import torch

    from edgeseq.frontends import capture
    from edgeseq.nn import build_model
    from edgeseq.quant import quantize
    from edgeseq.train.recipes import RECIPES

    torch.manual_seed(0)
    # the recipe's LMU on the raw channels (stem=0: without the conv front end), the size these cases pin
    m = build_model("lmu", 6, 6, **{**RECIPES["har"]["lmu"][0], "stem": 0}).eval()
    g = capture(m, torch.zeros(1, 8, 6))
    assert 12000 < g.num_params() < 14000
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(48, 128, 6)) * [0.3, 0.3, 0.3, 1, 1, 1] + [1, 0, 0, 0, 0, 0]).astype(np.float32)
    return quantize(g, x, "edgeseq"), x


def edge_program(seed=0):
    """Every micro-op and every branch of the C lowering that the quantizer's programs may not reach."""
    rng = np.random.default_rng(seed)
    b = ProgramBuilder()
    n = 6
    spec = InputSpec("x", np.arange(n), 16, np.full(n, 0.01), np.full(n, 100.0), np.linspace(-0.5, 0.5, n))
    x = b.add_input(spec)
    b.add_state("acc/sum", (n,), 32)
    b.add_state("mem/m", (n,), 16)
    b.add_state("ring/buf", (2, n), 16)
    mprev = b.emit(Load(out="mem.prev", state="mem/m"), n)
    # int64: a 40+-bit product, requant with a pre-shift and per-channel M / s (saturating, s = 1 .. 62)
    big = b.emit(Mul(out="big", a=x, b=b.const("k", [123456789], np.int32)), n)
    m = b.const("m", [1 << 30, (1 << 31) - 1, 1500000000, 0, 1 << 30, 1234567890], np.int32)
    sh = b.const("sh", [1, 5, 17, 30, 33, 62], np.int8)
    r1 = b.emit(Requant(out="r1", x=big, mult=m, shift=sh, pre=14), n, bits=20)
    # power-of-two multiplier fast paths (s <= 30 exact product, s > 30 rounding shift), per tensor
    m30 = b.const("m30", [1 << 30], np.int32)
    up = b.emit(Requant(out="up", x=x, mult=m30, shift=b.const("s14", [14], np.int8)), n, bits=24)
    s41 = b.const("s41", [41], np.int8)
    dn = b.emit(Requant(out="dn", x=up, mult=m30, shift=s41), n, bits=8)
    # uniform per-channel tables become literals; s <= 32 keeps the 64-bit path
    r2 = b.emit(
        Requant(out="r2", x=x, mult=b.const("mu", [1518500250] * n, np.int32), shift=b.const("su", [31] * n, np.int8)),
        n,
        bits=12,
    )
    # div (64-bit, negative numerators) and isqrt (32 and 64 bit)
    den = b.emit(
        Clamp(out="den", x=x, lo=b.const("one", [1], np.int16), hi=b.const("hi16", [32767], np.int16)), n, bits=16
    )
    d64 = b.emit(Div(out="d64", a=big, b=den), n)
    zero, hi16 = b.const("z", [0], np.int8), b.const("hi16", [32767], np.int16)
    pos = b.emit(Clamp(out="pos", x=big, lo=zero, hi=b.const("cap", [1 << 42], np.int64)), n, bits=44)
    s64 = b.emit(Isqrt(out="s64", x=pos), n)
    s32 = b.emit(Isqrt(out="s32", x=b.emit(Clamp(out="p16", x=x, lo=zero, hi=hi16), n, bits=16)), n)
    d32 = b.emit(Div(out="d32", a=x, b=b.const("seven", [7, 3, 5, 2, 9, 11], np.int8)), n)
    # lut: 2^16 + 1 entries (S = 0), int32 table with interpolation, 3 entries (k = 1), 256 entries on int8
    t0 = b.const("t65537", np.clip(np.arange(65537) - 32768, -32768, 32767) // 3, np.int16)
    l0 = b.emit(Lut(out="l0", x=x, table=t0), n, bits=16)
    t1 = b.const("t513", (np.sin(np.linspace(-3, 3, 513)) * (1 << 30)).astype(np.int64), np.int32)
    l1 = b.emit(Lut(out="l1", x=x, table=t1), n, bits=32)
    l2 = b.emit(Lut(out="l2", x=x, table=b.const("t3", [-30000, 5, 29999], np.int16)), n, bits=16)
    x8 = b.emit(Requant(out="x8", x=x, mult=m30, shift=b.const("s38", [38], np.int8)), n, bits=8)
    l3 = b.emit(Lut(out="l3", x=x8, table=b.const("t256", (np.arange(256) * 7 % 255) - 127, np.int8)), n, bits=8)
    # a one-value vector broadcast along the features, select, cmp_ge
    g1 = b.emit(Gather(out="g1", x=x, index=b.const("i2", [2], np.int8)), 1)
    bsum = b.emit(Add(out="bsum", a=x, b=g1), n)
    ge = b.emit(CmpGe(out="ge", a=x, b=b.const("thr", [-100, 0, 100, 5, -5, 0], np.int16)), n)
    sel = b.emit(Select(out="sel", c=ge, a=r1, b=g1), n)
    # state: load / store with the old value read after the store (no aliasing then), accumulate
    newm = b.emit(Clamp(out="newm", x=bsum, lo=b.const("lo16", [-32768], np.int16), hi=hi16), n, bits=16)
    b.emit(Store(out="mem/m", x=newm), n)
    delta = b.emit(Sub(out="delta", a=newm, b=mprev), n)
    sprev = b.emit(Load(out="acc.prev", state="acc/sum"), n)
    acc = b.emit(Add(out="acc.new", a=sprev, b=sel, accumulate=True), n, bits=32)
    b.emit(Store(out="acc/sum", x=acc), n)
    # a two-row history with a shift (gather over a concat that includes a constant)
    ring = b.emit(Load(out="ring.prev", state="ring/buf"), 2 * n)
    win = b.emit(Concat(out="win", xs=(ring, newm)), 3 * n)
    b.emit(
        Store(
            out="ring/buf",
            x=b.emit(Gather(out="shifted", x=win, index=b.const("shift", np.arange(n, 3 * n), np.int8)), 2 * n),
        ),
        2 * n,
    )
    cat = b.emit(Concat(out="cat", xs=(win, b.const("pad", [3, -3, 7], np.int16))), 3 * n + 3)
    # matvecs: int16 x int16 into int64 accumulators, blocked int8 weights, odd sizes for SIMD remainders
    W64 = b.const("W64", rng.integers(-32768, 32768, size=(4, 3 * n + 3)), np.int16)
    mv64 = b.emit(MatVec(out="mv64", x=cat, w=W64, bias=b.const("b64", [1 << 40, -(1 << 40), 3, -3], np.int64)), 4)
    Wb = b.const("Wb", rng.integers(-128, 128, size=(5, 7)), np.int8)
    cat2 = b.emit(Concat(out="cat2", xs=(x8, dn, b.const("pad2", [1, -2], np.int8)), blocks=2), 14)
    mvb = b.emit(MatVec(out="mvb", x=cat2, w=Wb, blocks=2, bias=b.const("bb", [100, -100, 0, 7, -7], np.int32)), 10)
    W8s16 = b.const("W8s16", rng.integers(-128, 128, size=(5, 9)), np.int8)
    cat3 = b.emit(Concat(out="cat3", xs=(x, l2, b.const("pad3", [5, -5, 9], np.int16)), blocks=1), 15)
    g9 = b.emit(Gather(out="g9", x=cat3, index=b.const("i9", [0, 3, 5, 6, 8, 9, 11, 12, 14], np.int8)), 9)
    mv816 = b.emit(MatVec(out="mv816", x=g9, w=W8s16), 5)
    W1616 = b.const("W1616", rng.integers(-32768, 32768, size=(3, 9)), np.int16)
    g9b = b.emit(Gather(out="g9b", x=cat3, index=b.const("i9b", [1, 2, 4, 7, 8, 10, 11, 13, 14], np.int8)), 9)
    mv1616 = b.emit(
        MatVec(
            out="mv1616",
            x=b.emit(Requant(out="g9q", x=g9b, mult=m30, shift=b.const("s32", [32], np.int8)), 9, bits=14),
            w=W1616,
        ),
        3,
    )
    # temporal outputs: one int32 per-channel-scaled vector, one int16
    outv = b.emit(Concat(out="out_t", xs=(r1, up, dn, r2, s32, d32, l0, l1, l3, sel, delta)), 11 * n)
    wide = b.emit(Concat(out="wide", xs=(d64, s64)), 2 * n)
    wideq = b.emit(Requant(out="wide_q", x=wide, mult=m30, shift=b.const("s30", [30], np.int8), pre=12), 2 * n, bits=32)
    mv64q = b.emit(Requant(out="mv64q", x=mv64, mult=m30, shift=b.const("s31", [31], np.int8), pre=10), 4, bits=32)
    mvs = b.emit(Concat(out="mvs", xs=(mv64q, mvb, mv816, mv1616)), 22)
    mvq = b.emit(Requant(out="mvq", x=mvs, mult=m30, shift=b.const("s36", [36], np.int8), pre=0), 22, bits=32)
    b.outputs.append(OutputSpec("t_values", outv, True, np.linspace(0.5, 2.0, 11 * n)))
    b.outputs.append(OutputSpec("t_wide", wideq, True, np.asarray([4096.0])))
    b.outputs.append(OutputSpec("t_mv", mvq, True, np.asarray([0.125])))
    # final: loads (aliased, the state is const there), a mean-like division, clamp
    b.section = "final"
    fs = b.emit(Load(out="f.sum", state="acc/sum"), n)
    fm = b.emit(Load(out="f.mem", state="mem/m"), n)
    fq = b.emit(Div(out="f.q", a=fs, b=b.const("f.den", [3], np.int8)), n)
    fy = b.emit(
        Clamp(
            out="f.y",
            x=b.emit(Add(out="f.sum2", a=fq, b=fm), n),
            lo=b.const("f.lo", [-1 << 30], np.int32),
            hi=b.const("f.hi", [1 << 30], np.int32),
        ),
        n,
        bits=32,
    )
    b.outputs.append(OutputSpec("pooled", fy, False, np.asarray([2.0**-10])))
    return b.build()


def check_bit_exact(run, info, prog, seed: int = 0, float_api: bool = False, steps: int = 50):
    """Run a built model through ``run(x, **Target.run options) -> RunResult`` and compare with
    ``edgeseq.quant.intexact`` bit for bit:

    1. float input, B = 3, T = ``steps``: integer outputs (step-wise and pooled) and final state
       (the model's own input quantizer against InputSpec.quantize);
    2. B = 1, T = 1;
    3. full-range integer input (the C API's ``qin``) continuing from the state of 1 (``init=``):
       saturation paths, state load, chunked == whole;
    4. with ``float_api``: the float API (what ``Artifact.run`` uses) equals the dequantized
       reference exactly, and esq_run over the sequence / over chunks equals esq_step per step.
    """
    from edgeseq.export.c.artifact import (
        _split_input,
        _state_array,
        _state_dict,
        dequantize,
        int_reference,
        split_outputs,
    )
    from edgeseq.quant import intexact

    rng = np.random.default_rng(seed)
    F = info["in_features"]
    nq = info["in_q_features"]

    def same(res, ref_outs, ref_state=None):
        got = split_outputs(info, res.step, res.pooled)
        names = [d["name"] for d in info["outputs"]]
        for name, g, r in zip(names, got, ref_outs):
            assert g.shape == r.shape and np.array_equal(g, r), (
                f"output '{name}': {int(np.count_nonzero(g != r)) if g.shape == r.shape else 'shape'} values differ"
            )
        if ref_state is not None:
            gst = _state_dict(info, res.state)
            for k, v in ref_state.items():
                assert np.array_equal(gst[k], v), f"state '{k}' differs"

    def ref(xq, state=None):
        outs, st = intexact.run(prog, _split_input(prog, xq), state)
        by = dict(zip([o.name for o in prog.outputs], outs))
        return [by[d["name"]] for d in info["outputs"]], st

    quant = lambda x: np.concatenate([s.quantize(x) for s in prog.inputs], axis=2)  # noqa: E731
    x = (rng.normal(size=(3, steps, F)) * 2.5).astype(np.float32)
    x[0, :3] *= 40  # saturating inputs
    r_outs, r_state = ref(quant(x))
    res = run(x, qout=True, state=True)
    same(res, r_outs, r_state)
    x1 = (rng.normal(size=(1, 1, F)) * 2).astype(np.float32)
    same(run(x1, qout=True, state=True), *ref(quant(x1)))
    xr = np.concatenate(
        [rng.integers(-(1 << (s.bits - 1)), 1 << (s.bits - 1), size=(3, 30, len(s.channels))) for s in prog.inputs],
        axis=2,
    )
    xr[0, 0] = [-(1 << (s.bits - 1)) for s in prog.inputs for _ in s.channels]
    xr[0, 1] = [(1 << (s.bits - 1)) - 1 for s in prog.inputs for _ in s.channels]
    assert xr.shape[2] == nq
    init = _state_array(info, r_state, 3)
    same(run(xr, qin=True, qout=True, state=True, init_state=init), *ref(xr, r_state))
    if float_api:
        step, pooled, state, _ = int_reference(prog, info, quant(x))
        fstep, fpooled = dequantize(info, step, pooled)
        res_f = run(x, state=True)
        assert np.array_equal(res_f.step.view(np.int32), fstep.view(np.int32))
        assert np.array_equal(res_f.pooled.view(np.int32), fpooled.view(np.int32))
        assert np.array_equal(res_f.state, state.astype(np.float32))
        for mode in ("run", "chunk:7"):
            other = run(x, mode=mode, state=True)
            for a, b in ((other.step, res_f.step), (other.pooled, res_f.pooled), (other.state, res_f.state)):
                assert np.array_equal(a.view(np.int32), b.view(np.int32)), mode
    return res


def kernel_programs(seed=0) -> list:
    """Programs aimed at the flavoured kernels' corners (intkernels): row counts that leave partial
    row groups (DSP 4, MVE 6, NEON 8), columns that leave partial chunks, int8 inputs the DSP widens,
    folded concats with odd strides and a one-column part (MVE weights stationary), input-stationary
    short rows with a bias, int16 weights with int8 inputs; vector elementwise units with every op
    and lengths that leave a scalar tail; vectors computed in their state's field."""
    rng = np.random.default_rng(seed)
    progs = []

    def w8(n, i):
        return rng.integers(-127, 128, size=(n, i))

    # 1. odd matvecs over int16 and int8 inputs, with and without bias, blocks over a folded concat
    b = ProgramBuilder()
    f = 9
    x16 = b.add_input(InputSpec("x", np.arange(f), 16, np.full(f, 0.01), np.full(f, 100.0), np.zeros(f)))
    x8 = b.emit(
        Requant(out="x8", x=x16, mult=b.const("m30", [1 << 30], np.int32), shift=b.const("s38", [38], np.int8)),
        f,
        bits=8,
    )
    outs = []
    for k, (n, i, src, bias) in enumerate(
        [(7, 9, x16, True), (13, 9, x8, False), (6, 9, x16, False), (25, 9, x8, True), (1, 9, x16, True)]
    ):
        W = b.const(f"W{k}", w8(n, i), np.int8)
        bb = b.const(f"b{k}", rng.integers(-5000, 5000, size=n), np.int32) if bias else None
        outs.append(b.emit(MatVec(out=f"y{k}", x=src, w=W, bias=bb), n))
    b.add_state("m", (3, 5), 16)
    mprev = b.emit(Load(out="m.prev", state="m"), 15)
    u = b.emit(
        Requant(out="u", x=x16, mult=b.const("m30b", [1 << 30], np.int32), shift=b.const("s31", [31], np.int8)),
        f,
        bits=16,
    )
    u3 = b.emit(Gather(out="u3", x=u, index=b.const("iu", [0, 4, 8], np.int8)), 3)
    cat = b.emit(Concat(out="cat", xs=(mprev, u3), blocks=3), 18)
    A = b.const("A", rng.integers(-3000, 3000, size=(5, 6)), np.int16)
    acc = b.emit(
        MatVec(out="acc", x=cat, w=A, blocks=3, bias=b.const("bA", rng.integers(-99, 99, size=5), np.int32)), 15
    )
    mnew = b.emit(
        Requant(
            out="m.new",
            x=acc,
            mult=b.const("mm", rng.integers(1 << 30, 1 << 31, size=15), np.int32),
            shift=b.const("ms", rng.integers(40, 44, size=15), np.int8),
        ),
        15,
        bits=16,
    )
    b.emit(Store(out="m", x=mnew), 15)
    # matvecs whose accumulators only a requantization reads (fused on DSP cores), one over blocks
    for k, (n, src, blocks) in enumerate([(7, x16, 1), (5, x8, 1), (3, u, 3)]):
        W = b.const(f"Wq{k}", w8(n, src and b.width(src) // blocks), np.int8)
        accq = b.emit(
            MatVec(
                out=f"accq{k}",
                x=src,
                w=W,
                blocks=blocks,
                bias=b.const(f"bq{k}", rng.integers(-999, 999, size=n), np.int32),
            ),
            n * blocks,
        )
        rq = b.emit(
            Requant(
                out=f"rq{k}",
                x=accq,
                mult=b.const(f"mq{k}", rng.integers(1 << 30, 1 << 31, size=n * blocks), np.int32),
                shift=b.const(f"sq{k}", rng.integers(30, 40, size=n * blocks), np.int8),
            ),
            n * blocks,
            bits=8,
        )
        outs.append(
            b.emit(
                Clamp(out=f"cq{k}", x=rq, lo=b.const("m100", [-100], np.int8), hi=b.const("p100", [100], np.int8)),
                n * blocks,
                bits=8,
            )
        )
    W16 = b.const("W16", rng.integers(-300, 300, size=(10, 9)), np.int16)
    outs.append(b.emit(MatVec(out="y16", x=x8, w=W16), 10))
    outs.append(b.emit(MatVec(out="yw", x=x16, w=b.const("Ww", w8(11, 9), np.int8)), 11))
    allv = b.emit(Concat(out="all", xs=(*outs, mnew)), sum(b.width(o) for o in outs) + 15)
    b.outputs.append(OutputSpec("y", allv, True, np.ones(1)))
    progs.append(b.build())

    # 2. vector elementwise units with every op, n = 10 (a scalar tail of 2), in-place state updates
    b = ProgramBuilder()
    n = 10
    x = b.add_input(InputSpec("x", np.arange(n), 16, np.full(n, 0.01), np.full(n, 100.0), np.zeros(n)))
    b.add_state("s", (n,), 32)
    b.add_state("h", (n,), 16)
    sp = b.emit(Load(out="s.prev", state="s"), n)
    hp = b.emit(Load(out="h.prev", state="h"), n)
    big = b.emit(Mul(out="big", a=x, b=b.const("k", rng.integers(-300, 300, size=n), np.int16)), n)
    r1 = b.emit(
        Requant(
            out="r1",
            x=big,
            mult=b.const("mult", rng.integers(1 << 30, 1 << 31, size=n), np.int32),
            shift=b.const("sh", rng.integers(28, 36, size=n), np.int8),
            pre=2,
        ),
        n,
        bits=16,
    )
    t = b.emit(
        Lut(out="t", x=r1, table=b.const("tanh", np.rint(np.tanh(np.linspace(-4, 4, 513)) * 32767), np.int16)),
        n,
        bits=16,
    )
    t8 = b.emit(
        Requant(out="t8", x=t, mult=b.const("m30", [1 << 30], np.int32), shift=b.const("s38", [38], np.int8)), n, bits=8
    )
    l8 = b.emit(Lut(out="l8", x=t8, table=b.const("t256", (np.arange(256) * 5 % 251) - 125, np.int8)), n, bits=8)
    ge = b.emit(CmpGe(out="ge", a=t, b=hp), n)
    sel = b.emit(Select(out="sel", c=ge, a=t, b=hp), n)
    cl = b.emit(
        Clamp(out="cl", x=sel, lo=b.const("lo", [-20000], np.int16), hi=b.const("hi", [20000], np.int16)), n, bits=16
    )
    d = b.emit(Sub(out="d", a=cl, b=l8), n)
    b.emit(Store(out="h", x=cl), n)
    s2 = b.emit(Add(out="s.new", a=sp, b=d, accumulate=True), n, bits=32)
    b.emit(Store(out="s", x=s2), n)
    b.outputs.append(OutputSpec("y", b.emit(Concat(out="o", xs=(s2, d, ge)), 3 * n), True, np.ones(1)))
    progs.append(b.build())
    return progs
