"""TVM backend, op by op: every op option, every activation, odd feature sizes (not multiples of the
vector width, 1, one more than a register block), pooled ops after readouts, and guards against
the vectorisation patterns TVM 0.27 silently miscompiles."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from edgeseq.errors import UnsupportedOpError  # noqa: E402
from edgeseq.export.tvm import compile_tvm  # noqa: E402
from edgeseq.export.tvm.lint import check_kernels, vectorization_hazards  # noqa: E402
from edgeseq.ir import ops as O  # noqa: E402
from edgeseq.ir.graph import GraphBuilder  # noqa: E402
from edgeseq.ir.interpret import run as reference  # noqa: E402
from edgeseq.ir.legendre import lmu_matrices  # noqa: E402
from edgeseq.ir.types import Act, Discretizer, ReadoutMode, Recurrence, ResetRule  # noqa: E402

from .test_export_tvm import (  # noqa: E402
    check_against_reference,
    check_chunks,
    check_state,
    lazily_compiled,
    make_input,
    with_spike_outputs,
)

# ----------------------------------------------------------------------------------------------
# op-variant graphs


def _w(rng, *shape, scale=0.4):
    return rng.standard_normal(shape) * scale


def g_linear_pooled():
    """Odd sizes, no bias, a pooled Linear / Activation / BatchNorm / LayerNorm chain after a readout."""
    rng = np.random.default_rng(1)
    b = GraphBuilder(7)
    v = b.add(O.Linear(_w(rng, 19, 7)), "x")
    v = b.add(O.Linear(_w(rng, 37, 19), _w(rng, 37)), v)
    r = b.add(O.Readout(ReadoutMode.SUM), v)
    p = b.add(O.Activation(Act.SILU), r)
    p = b.add(O.BatchNorm(_w(rng, 37), rng.uniform(0.5, 2, 37), _w(rng, 37), _w(rng, 37)), p)
    p = b.add(O.LayerNorm(None, None, eps=1e-3), p)
    p = b.add(O.Linear(_w(rng, 3, 37), _w(rng, 3)), p)
    q = b.add(O.Readout(ReadoutMode.LAST), v)
    q = b.add(O.Concat(), [q, p])
    return b.build([v, q])


def g_activations(pooled: bool):
    """Every activation kind side by side on 19 features (inputs scaled to reach saturation; exp
    on inputs clamped to [-4, 4], where float32 resolves it to the tolerance)."""
    b = GraphBuilder(19)
    src = "x"
    if pooled:
        src = b.add(O.Readout(ReadoutMode.MEAN), "x")
    clamped = b.add(O.Activation(Act.HARDTANH, lo=-4.0, hi=4.0), src)
    outs = [b.add(O.Activation(fn, slope=0.2, lo=-0.7, hi=1.3), clamped if fn is Act.EXP else src) for fn in Act]
    return b.build(b.add(O.Concat(), outs))


def g_conv_norm():
    """Causal dilated grouped Conv1d (history 6 > short chunks), K=1 conv, LayerNorm, Add."""
    rng = np.random.default_rng(2)
    b = GraphBuilder(6)
    c = b.add(O.Conv1d(_w(rng, 10, 3, 4), dilation=2, groups=2), "x")
    c = b.add(O.LayerNorm(rng.uniform(0.5, 1.5, 10), _w(rng, 10)), c)
    d = b.add(O.Conv1d(_w(rng, 10, 10, 1), _w(rng, 10)), c)
    e = b.add(O.Conv1d(_w(rng, 10, 10, 3), _w(rng, 10), dilation=3), c)
    s = b.add(O.Add(), [d, e])
    s = b.add(O.BatchNorm(_w(rng, 10), rng.uniform(0.5, 2, 10)), s)
    return b.build(s)


def _gated(kind, h, i=5, seed=3, bias=True, **kw):
    rng = np.random.default_rng(seed)
    g = {"RNN": 1, "GRU": 3, "LSTM": 4}[kind]
    cls = getattr(O, kind)
    return cls(
        _w(rng, g * h, i),
        _w(rng, g * h, h, scale=0.6 / np.sqrt(h) + 0.1),
        _w(rng, g * h) if bias else None,
        _w(rng, g * h) if bias else None,
        **kw,
    )


def g_gated_odd():
    """RNN relu without biases, GRU with reset_before, LSTM: hidden 19, 1 and 65 (a register block + 1)."""
    b = GraphBuilder(5)
    outs = [
        b.add(_gated("RNN", 19, bias=False, act=Act.RELU), "x"),
        b.add(_gated("GRU", 19, reset_after=False), "x"),
        b.add(_gated("LSTM", 19), "x"),
        b.add(_gated("GRU", 1), "x"),
        b.add(_gated("LSTM", 1), "x"),
        b.add(_gated("GRU", 65), "x"),
        b.add(_gated("RNN", 17), "x"),
    ]
    return b.build(outs)


def g_minrnn():
    rng = np.random.default_rng(4)
    b = GraphBuilder(5)
    h = 23
    a = b.add(O.MinGRU(_w(rng, h, 5), _w(rng, h, 5), candidate=Act.IDENTITY), "x")
    c = b.add(O.MinLSTM(_w(rng, h, h), _w(rng, h, h), _w(rng, h, h), candidate=Act.IDENTITY), a)
    d = b.add(O.MinLSTM(_w(rng, 7, 5), _w(rng, 7, 5), _w(rng, 7, 5), _w(rng, 7), _w(rng, 7), _w(rng, 7)), "x")
    return b.build([c, d])


def g_lmu_variants():
    """LMU without a hidden cell (e_h acts on m), with e_h / e_m / w_h / relu, and Euler."""
    rng = np.random.default_rng(5)
    b = GraphBuilder(4)
    d, order = 3, 5
    m = d * order
    v1 = b.add(
        O.LMU(_w(rng, d, 4), order, 7.0, e_h=_w(rng, d, m, scale=0.05), e_m=_w(rng, d, m, scale=0.05), b_u=_w(rng, d)),
        "x",
    )
    v2 = b.add(
        O.LMU(
            _w(rng, d, 4),
            order,
            25.0,
            e_h=_w(rng, d, 13, scale=0.02),
            w_m=_w(rng, 13, m, scale=0.2),
            w_h=_w(rng, 13, 13, scale=0.05),
            act=Act.RELU,
            discretizer=Discretizer.EULER,
        ),
        "x",
    )
    v3 = b.add(O.LMU(_w(rng, 1, 4), 9, 20.0, w_m=_w(rng, 6, 9), b_h=_w(rng, 6)), "x")  # b_h without w_x
    return b.build([v1, v2, v3])


def _nrn(n, rule, delay, alpha=None, scale=None, per_neuron=True, rng=None):
    rng = rng or np.random.default_rng(0)
    beta = rng.uniform(0.6, 1.05, n) if per_neuron else 0.9  # > 1 values are clipped like the reference
    thr = rng.uniform(0.5, 1.2, n) if per_neuron else 1.0
    return O.NeuronParams(beta, thr, alpha, rule, delay, scale)


def g_lif_rules():
    """Every reset rule with delayed and immediate reset, graded spikes, one-to-one recurrence,
    CuBaLIF with all-to-all recurrence emitting spikes and membrane."""
    rng = np.random.default_rng(6)
    n = 13
    b = GraphBuilder(4)
    cur = b.add(O.Linear(_w(rng, n, 4, scale=1.2), _w(rng, n, scale=0.3)), "x")
    outs = []
    for rule in ResetRule:
        for delay in (True, False):
            outs.append(
                b.add(
                    O.LIF(_nrn(n, rule, delay, rng=rng), emit="membrane" if rule is ResetRule.NONE else "spikes"), cur
                )
            )
    outs.append(
        b.add(
            O.LIF(
                _nrn(n, ResetRule.SUBTRACT, True, scale=rng.uniform(0.5, 2, n), rng=rng),
                Recurrence.ONE_TO_ONE,
                v_rec=-0.4,
            ),
            cur,
        )
    )
    s, m = b.add(
        O.CuBaLIF(
            _nrn(n, ResetRule.ZERO, False, alpha=rng.uniform(0.3, 0.9, n), rng=rng),
            Recurrence.ALL_TO_ALL,
            w_rec=_w(rng, n, n, scale=0.3),
            b_rec=_w(rng, n, scale=0.1),
            emit="both",
        ),
        cur,
    )
    outs += [s, m]
    outs.append(
        b.add(
            O.CuBaLIF(
                _nrn(n, ResetRule.SUBTRACT, True, alpha=0.5, per_neuron=False, rng=rng),
                Recurrence.ONE_TO_ONE,
                v_rec=_w(rng, n),
            ),
            cur,
        )
    )
    cnt = b.add(O.Readout(ReadoutMode.SUM), outs[0])
    return b.build(outs + [cnt])


def g_l2mu_synaptic():
    rng = np.random.default_rng(7)
    d, order, h, i = 2, 4, 9, 6
    m = d * order
    a, bb = lmu_matrices(order, 8.0, Discretizer.ZOH)
    b = GraphBuilder(5)
    cur = b.add(O.Linear(_w(rng, i, 5, scale=1.5)), "x")
    enc = b.add(O.LIF(_nrn(i, ResetRule.SUBTRACT, True, rng=rng)), cur)
    syn = dict(alpha=0.6, per_neuron=False, rng=rng)
    out = b.add(
        O.L2MU(
            a,
            bb[:, 0],
            _w(rng, d, i, scale=1.5),
            _w(rng, h, m, scale=1.0),
            _nrn(d, ResetRule.ZERO_TOTAL, True, **syn),
            _nrn(m, ResetRule.SUBTRACT, False, rng=rng),
            _nrn(h, ResetRule.ZERO, True, **syn),
            e_h=_w(rng, d, h),
            b_u=_w(rng, d),
            w_x=_w(rng, h, i),
            b_h=_w(rng, h),
        ),
        enc,
    )
    return b.build(out)


def probe_program():
    """A step program using every structural primitive and corner of the scan renderer that no
    named cell reaches: a blocked product of the input (a
    sequence kernel), interleaved Concat, Slice views and copies, Gather, one product with two
    block counts, Div by zero, Select, a broadcast single value, a state taking another state's
    old value, a state read after its new value, a state taking the input, outputs that are a
    state and the input."""
    from edgeseq.ir.step import StepBuilder

    rng = np.random.default_rng(0)
    b = StepBuilder("probe", {"x": 6}, {"a": 4, "b": 4, "c": 2, "d": 6})

    def w(o, i):
        return b.param(f"w{len(b.params)}", rng.standard_normal((o, i)) * 0.5)

    bp = b.affine([(w(2, 3), "x", 2)])
    p = b.affine([(w(4, 6), "x")], b.param("bx", rng.standard_normal(4)))
    u = b.concat(["a", p], blocks=2)
    g = b.gather(b.slice(u, 1, 7), [5, 0, 3, 3, 1, 2])
    m = b.affine([(w(4, 6), g), (w(2, 1), "c", 2)])
    q = b.div(m, b.add(b.mul("a", "a"), b.mul("b", "b")))  # 0 / 0 -> 0 at the zero state
    t = b.act(Act.TANH, b.add(b.select(b.gt(q, b.const(0.1)), q, b.mul("b", b.const(0.5))), p))
    y = b.add(t, b.slice("c", 0, 1))
    c = b.add(b.slice("a", 1, 3), b.slice(bp, 0, 2))
    z = b.mul("a", t)  # the old state after its new value, in the same fused loop
    return b.build([y, "b", u, "x", z], {"a": t, "b": "a", "c": c, "d": "x"})


def g_scan_probe():
    """A generic Scan op running :func:`probe_program`."""
    b = GraphBuilder(6)
    return b.build(list(b.add(O.Scan(program=probe_program()), "x")))


OP_GRAPHS = {
    "linear_pooled": g_linear_pooled,
    "acts_seq": lambda: g_activations(False),
    "acts_pooled": lambda: g_activations(True),
    "conv_norm": g_conv_norm,
    "gated_odd": g_gated_odd,
    "minrnn": g_minrnn,
    "lmu_variants": g_lmu_variants,
    "lif_rules": g_lif_rules,
    "l2mu_synaptic": g_l2mu_synaptic,
    "scan_probe": g_scan_probe,
}
INPUT_SCALE = {"acts_seq": 4.0, "acts_pooled": 4.0}


@pytest.fixture(scope="module")
def compiled():
    return lazily_compiled(lambda case: with_spike_outputs(OP_GRAPHS[case]()))


@pytest.mark.parametrize("case", sorted(OP_GRAPHS))
def test_op_variants_match_reference(compiled, case):
    graph, module = compiled(case)
    spikes = 0
    for k, (b, t) in enumerate([(1, 1), (3, 37), (2, 130)]):
        x = make_input(graph, b, t, seed=20 + k, scale=INPUT_SCALE.get(case, 1.0))
        y, _ = module.run(x)
        ref, _ = reference(graph, x)
        spikes += check_against_reference(graph, y, ref)
    if any(graph.type_of(o).spikes for o in graph.outputs):
        assert spikes > 0, "the test input must make the neurons fire"


@pytest.mark.parametrize(
    "case", ["conv_norm", "lif_rules", "l2mu_synaptic", "lmu_variants", "linear_pooled", "scan_probe"]
)
def test_op_variants_stream_in_chunks(compiled, case):
    graph, module = compiled(case)
    stream = module.with_streaming(True)
    x = make_input(graph, 2, 29, seed=30)
    whole, whole_state = stream.run(x)
    check_chunks(graph, stream, x, 2, whole, whole_state)  # chunks shorter than the conv history
    ref, ref_state = reference(graph, x)
    check_against_reference(graph, whole, ref)
    check_state(whole_state, ref_state)


def test_op_graphs_cover_every_op_kind():
    """These graphs and the cell cases (test_export_tvm) exercise every kind the backend lowers."""
    from edgeseq.export.tvm import supported_kinds

    from .cell_cases import CASES

    covered = {n.op.kind for f in OP_GRAPHS.values() for n in f().nodes}
    covered |= {make(np.random.default_rng(0)).kind for make in CASES.values()}
    window = {"Reverse", "Lookahead", "SelfAttention"}  # whole-window only: test_window.py, test_attention.py
    assert covered | window == supported_kinds() and not covered & window


def test_scan_probe_runs_a_hoisted_blocked_input_product_as_a_sequence_kernel(compiled):
    _, module = compiled("scan_probe")
    assert [k for k in module.kernels if k.startswith("probe")] == ["probe_seq", "probe_scan_a4_b4_c2_d6"]


# ----------------------------------------------------------------------------------------------
# guards against TVM's silent vectorisation miscompiles

# A scalar binding inside T.vectorized: TVM 0.27 gives every lane one lane's value.
BAD_KERNEL = """
@T.prim_func
def bad(x_h: T.handle, y_h: T.handle):
    T.func_attr({"tir.noalias": True})
    X = T.match_buffer(x_h, (2, 19), "float32")
    Y = T.match_buffer(y_h, (2, 19), "float32")
    for r in T.serial(2):
        for j in T.vectorized(19):
            v = X[r, j] * T.float32(2.0)
            Y[r, j] = v + T.float32(1.0)
"""


def test_lint_flags_the_scalar_let_pattern_that_tvm_miscompiles():
    func = tvm.script.from_source(BAD_KERNEL)
    hazards = vectorization_hazards(func)
    assert hazards and any("'v'" in h for h in hazards), hazards
    with pytest.raises(UnsupportedOpError, match="miscompiled"):
        check_kernels(tvm.IRModule({"bad": func}))
    # and the pattern really is wrong in this TVM (if this starts to pass, TVM fixed the bug;
    # the lint stays as a guard either way)
    lib = tvm.compile(
        tvm.IRModule({"bad": func.with_attr("global_symbol", "bad")}), target=tvm.target.Target({"kind": "llvm"})
    ).jit()
    x = np.arange(38, dtype=np.float32).reshape(2, 19)
    y = tvm.runtime.tensor(np.zeros_like(x))
    lib["bad"](tvm.runtime.tensor(x), y)
    if np.array_equal(y.numpy(), 2 * x + 1):
        pytest.xfail("TVM vectorises this scalar binding correctly now")
    assert len(np.unique(y.numpy()[0])) == 1  # every lane got the same value


@pytest.mark.parametrize("case", sorted(OP_GRAPHS))
def test_generated_kernels_have_no_vectorisation_hazards(compiled, case):
    _, module = compiled(case)
    funcs = {gv.name_hint: f for gv, f in module.lowered.mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    assert funcs
    for name, f in funcs.items():
        assert vectorization_hazards(f) == [], name
    # every vectorised loop stores lane-indexed values: the compiled results above would show a
    # broadcast lane (features differ per lane in every test graph); here check the loops exist
    text = "\n".join(module.kernels.values())
    assert "T.vectorized" in text


def test_kernels_are_vectorised_with_a_tail_for_odd_sizes(compiled):
    """H=19 on a 16-/8-/4-lane target: a full-vector loop plus a vectorised remainder loop."""
    _, module = compiled("gated_odd")
    lanes = module.target.sched.lanes
    src = module.kernels["rnn_relu_scan_h19"]
    assert f"T.vectorized({lanes})" in src and f"T.vectorized({19 % lanes})" in src


@pytest.mark.parametrize("cpu,lanes", [("x86-64-v3", 8), ("x86-64", 4)])
@pytest.mark.parametrize("case", ["gated_odd", "lif_rules", "scan_probe"])
def test_other_vector_widths_match_reference(case, cpu, lanes):
    """Portable x86 CPUs (AVX2: 8 lanes, SSE2: 4 lanes) give other blockings and tails."""
    graph = with_spike_outputs(OP_GRAPHS[case]())
    module = compile_tvm(graph, "x86", cpu=cpu)
    assert module.target.sched.lanes == lanes
    x = make_input(graph, 2, 45, seed=40)
    check_against_reference(graph, module.run(x)[0], reference(graph, x)[0])


def test_activation_accuracy_on_a_dense_grid(compiled):
    """The rational tanh / sigmoid stay within 1e-6 of float64 everywhere (saturation included);
    the activations built on them within 1e-6 relative to |x|; exp within 1e-6 relative to exp(x)."""
    graph, module = compiled("acts_seq")
    grid = np.linspace(-30.0, 30.0, 19 * 4001).astype(np.float32).reshape(1, 4001, 19)
    y, _ = module.run(grid)
    (ref,), _ = reference(graph, grid)
    for i, fn in enumerate(Act):
        err = np.abs(y[..., 19 * i : 19 * (i + 1)] - ref[..., 19 * i : 19 * (i + 1)])
        bound = 1e-6 * np.maximum(1.0, np.abs(ref[..., 19 * i : 19 * (i + 1)] if fn is Act.EXP else grid))
        assert np.all(err <= bound), f"{fn.value}: max error {err.max():.3g}"


def test_every_step_primitive_has_a_rendering():
    from edgeseq.export.tvm.scan import RULES
    from edgeseq.ir.step import PRIMS

    assert set(RULES) == set(PRIMS.values())
    assert {c.kind for c, r in RULES.items() if r.lanewise} == {c.kind for c in PRIMS.values() if c.elementwise}
