"""Passes over step programs keep the float semantics and meet their stated guarantees."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseq.errors import VerificationError
from edgeseq.ir.cells import step_program
from edgeseq.ir.step import Add, Affine, Gt, Quant, StepBuilder, run_sequence
from edgeseq.ir.step.passes import (
    DeadCode,
    FoldBias,
    GroupStages,
    LinearState,
    SplitAffine,
    StripQuant,
    alias_buffers,
    hoist,
    input_only,
    liveness,
    schedule,
    sink,
)
from edgeseq.ir.types import Act

from .cell_cases import CASES, drive, graph_of


def _prog(name):
    g = graph_of(name)
    return step_program(g.nodes[0].op, g.in_features)


def _same(p, q, name):
    x = drive(name, np.random.default_rng(3), 2, 9)
    a, sa = run_sequence(p, [x])
    b, sb = run_sequence(q, [x])
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=0, atol=1e-12)
    for k in sa:
        np.testing.assert_allclose(sa[k], sb[k], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_passes_keep_semantics(name):
    p = _prog(name)
    for ps in (StripQuant(), SplitAffine(), DeadCode()):
        _same(p, ps(p), name)
    q = StripQuant()(p)
    assert not any(isinstance(op, Quant) for op in q.body)
    dep = input_only(SplitAffine()(q))
    for op in SplitAffine()(q).body:
        if isinstance(op, Affine):
            assert len({t.x in dep for t in op.terms}) == 1


@pytest.mark.parametrize("name", sorted(CASES))
def test_hoisted_sequence_then_loop_equals_the_program(name):
    p = _prog(name)
    h = hoist(p)
    x = drive(name, np.random.default_rng(4), 3, 11)
    b, t, _ = x.shape
    flat = x.reshape(b * t, 1, -1)
    carried = run_sequence(h.seq, [flat])[0] if h.carry else ()
    feeds = {h.seq.outputs[i]: c.reshape(b, t, -1) for i, c in enumerate(carried)}
    feeds.update({"x": x})
    got, st = run_sequence(h.loop, [feeds[i.name] for i in h.loop.inputs])
    want, st_w = run_sequence(StripQuant()(p), [x])
    for u, v in zip(got, want):
        np.testing.assert_allclose(u, v, rtol=0, atol=1e-12)
    assert not h.seq.states
    inputs = {i.name for i in p.inputs}
    for op in h.loop.body:  # no loop Affine reads a step input
        assert not (isinstance(op, Affine) and any(t.x in inputs for t in op.terms)), op


def test_hoisting_moves_input_projections_out_of_the_loop():
    h = hoist(_prog("gru"))
    loop_affines = [op for op in h.loop.body if isinstance(op, Affine)]
    assert loop_affines and all(t.x == "h" or t.x not in ("x",) for op in loop_affines for t in op.terms)
    assert any(isinstance(op, Affine) for op in h.seq.body)
    h = hoist(_prog("mingru"))  # minGRU: everything but the update leaves the loop
    assert not any(isinstance(op, Affine) for op in h.loop.body)


def test_schedule_fuses_elementwise_runs_and_keeps_what_is_read_later():
    p = hoist(_prog("lstm")).loop
    stages = schedule(p)
    assert sum(len(s.ops) for s in stages) == len(p.body)
    fused = [s for s in stages if s.fused]
    assert fused and max(len(s.ops) for s in fused) >= 4
    live = liveness(p)
    for i, s in enumerate(stages):
        for v in s.keep:
            assert live[v] > max(p.body.index(op) for op in s.ops)


def test_a_pass_that_breaks_its_guarantee_is_caught():
    class Bad(StripQuant):
        def run(self, prog):
            return prog  # keeps the Quants

    with pytest.raises(VerificationError, match="strip-quant"):
        Bad()(_prog("gru"))


@pytest.mark.parametrize("name", ["gru", "lstm", "lmu_full", "s4d"])
def test_initial_state_offset(name):
    """A program started from constants equals the original run from those constants, while its
    own states start at zero."""
    from edgeseq.ir.step.passes import with_initial_state

    p = _prog(name)
    rng = np.random.default_rng(8)
    init = {s.name: rng.normal(size=s.n) * 0.3 for s in p.states}
    q = with_initial_state(p, init)
    x = drive(name, rng, 2, 9)
    start = {k: np.broadcast_to(v, (2, v.size)).copy() for k, v in init.items()}
    want, st_w = run_sequence(p, [x], start)
    got, st_g = run_sequence(q, [x])
    for u, v in zip(got, want):
        np.testing.assert_allclose(u, v, rtol=0, atol=1e-12)
    for k in init:
        np.testing.assert_allclose(st_g[k] + init[k], st_w[k], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["gru", "lif_subtract", "lmu_full", "s4d"])
def test_delay_gates_the_recurrence(name):
    """With a delay d, the outputs from step d on equal the program run on the input from step d."""
    from edgeseq.ir.step.passes import with_delay

    p = _prog(name)
    q = with_delay(p, 3)
    x = drive(name, np.random.default_rng(9), 2, 12)
    late, _ = run_sequence(q, [x])
    want, _ = run_sequence(p, [x[:, 3:]])
    for u, v in zip(late, want):
        np.testing.assert_allclose(u[:, 3:], v, rtol=0, atol=1e-12)
    assert q.state_names == p.state_names + ("delay.count",)


@pytest.mark.parametrize("name", sorted(CASES))
def test_sunk_loop_then_post_equals_the_loop(name):
    loop = hoist(_prog(name)).loop
    s = sink(loop)
    x = drive(name, np.random.default_rng(6), 2, 13)
    h = hoist(_prog(name))
    b, t, _ = x.shape
    carried = run_sequence(h.seq, [x.reshape(b * t, 1, -1)])[0] if h.carry else ()
    feeds = {h.seq.outputs[i]: c.reshape(b, t, -1) for i, c in enumerate(carried)}
    feeds["x"] = x
    want, st_w = run_sequence(loop, [feeds[i.name] for i in loop.inputs])
    kept, st = run_sequence(s.loop, [feeds[i.name] for i in s.loop.inputs])
    feeds.update(zip(s.keep, kept))
    got, _ = run_sequence(s.post, [feeds[i.name] for i in s.post.inputs])
    for u, v in zip(got, want):
        np.testing.assert_allclose(u, v, rtol=0, atol=1e-12)
    for k in st:
        np.testing.assert_array_equal(st[k], st_w[k])
    assert not s.post.states
    need = set(s.loop.next_state.values())  # nothing in the loop is for outputs only
    for op in reversed(s.loop.body):
        if op.out in need:
            need.update(op.reads())
    assert all(op.out in need for op in s.loop.body)


def test_sink_moves_output_only_spikes_after_the_loop():
    loop = hoist(_prog("lif_subtract")).loop
    s = sink(loop)
    assert any(isinstance(op, Gt) for op in s.post.body) and len(s.loop.body) < len(loop.body)


@pytest.mark.parametrize("name", sorted(CASES))
def test_linear_state_keeps_semantics_and_never_adds_loop_work(name):
    p = DeadCode()(SplitAffine()(StripQuant()(_prog(name))))
    q = LinearState()(p)
    x = drive(name, np.random.default_rng(5), 2, 9)
    for u, v in zip(run_sequence(p, [x])[0], run_sequence(q, [x])[0]):
        np.testing.assert_allclose(u, v, rtol=0, atol=1e-12)
    assert len(hoist(q).loop.body) <= len(hoist(p).loop.body)


@pytest.mark.parametrize("name", ["mingru", "mingru_identity", "minlstm"])
def test_linear_state_leaves_one_multiply_add_in_the_loop(name):
    p = DeadCode()(SplitAffine()(StripQuant()(_prog(name))))
    loop = hoist(LinearState()(p)).loop
    assert [op.kind for op in loop.body] == ["Mul", "Add"] and len(hoist(p).loop.body) == 3
    with pytest.raises(VerificationError, match="quantization points"):
        LinearState()(_prog(name))


def test_match_binds_parameters_up_to_operand_order():
    from edgeseq.ir.step import StepBuilder
    from edgeseq.ir.step.match import match
    from edgeseq.ir.types import Act

    def prog(swap: bool, bias: bool, fn=Act.TANH):
        b = StepBuilder("p", {"x": 3}, {"h": 2})
        w, r = b.param("w", np.ones((2, 3))), b.param("r", np.ones((2, 2)))
        terms = [(r, "h"), (w, "x")] if swap else [(w, "x"), (r, "h")]
        a = b.affine(terms, b.param("b", np.zeros(2)) if bias else None)
        y = b.mul("h", b.act(fn, a)) if swap else b.mul(b.act(fn, a), "h")
        return b.build([y], {"h": y})

    pat = prog(False, True)
    assert match(pat, prog(True, True)) == {"w": "w", "r": "r", "b": "b"}
    assert match(pat, prog(True, False)) == {"w": "w", "r": "r", "b": None}  # an optional bias
    assert match(prog(False, False), prog(False, True)) is None  # a bias the pattern does not have
    assert match(pat, prog(False, True, Act.SIGMOID)) is None


@pytest.mark.parametrize("name", sorted(CASES))
def test_fold_bias_keeps_semantics(name):
    p = StripQuant()(_prog(name))
    q = FoldBias()(p)
    _same(p, q, name)
    folded = len(p.body) - len(q.body)
    assert folded == sum(isinstance(op, Add) for op in p.body) - sum(isinstance(op, Add) for op in q.body)


def test_fold_bias_starts_recurrent_products_from_the_input_projection():
    """GRU loop: each gate's product over h starts from its hoisted input projection."""
    h = hoist(_prog("gru"), elementwise=False)
    loop = FoldBias()(h.loop)
    rec = [op for op in loop.body if isinstance(op, Affine)]
    assert len(rec) == 3 and sum(op.bias in h.carry for op in rec) == 2
    assert len(loop.body) == len(h.loop.body) - 2


@pytest.mark.parametrize("name", sorted(CASES))
def test_group_stages_keeps_semantics_and_never_adds_stages(name):
    p = StripQuant()(_prog(name))
    q = GroupStages()(p)
    _same(p, q, name)
    assert len(schedule(q)) <= len(schedule(p))
    loop = hoist(p, elementwise=False).loop
    assert len(schedule(GroupStages()(loop))) <= len(schedule(loop))


def test_group_stages_puts_independent_products_first():
    """GRU: the three recurrent products, then all the gate arithmetic in one fused run."""
    loop = GroupStages()(hoist(_prog("gru"), elementwise=False).loop)
    stages = schedule(loop)
    assert [s.fused for s in stages] == [False, False, False, True]
    assert len(schedule(hoist(_prog("gru"), elementwise=False).loop)) == 6


@pytest.mark.parametrize("name", sorted(CASES))
def test_hoisting_input_projections_only_equals_the_program(name):
    p = _prog(name)
    h = hoist(p, elementwise=False)
    inputs = {i.name for i in p.inputs}
    assert all(isinstance(op, Affine) and all(t.x in inputs for t in op.terms) for op in h.seq.body)
    x = drive(name, np.random.default_rng(5), 2, 7)
    carried = run_sequence(h.seq, [x.reshape(14, 1, -1)])[0] if h.carry else ()
    feeds = {"x": x, **{c: v.reshape(2, 7, -1) for c, v in zip(h.seq.outputs, carried)}}
    got, _ = run_sequence(h.loop, [feeds[i.name] for i in h.loop.inputs])
    for u, v in zip(got, run_sequence(StripQuant()(p), [x])[0]):
        np.testing.assert_allclose(u, v, rtol=0, atol=1e-12)


def test_hoisting_input_projections_keeps_b_u_in_the_lmu_memory_product():
    """u = e_x x is input-only, but B u stays a term of the one blocked memory product."""
    loop = hoist(_prog("lmu"), elementwise=False).loop
    (mem,) = [op for op in loop.body if isinstance(op, Affine) and op.terms[0].blocks > 1]
    assert len(mem.terms) == 2 and mem.terms[0].x == "m"


def test_hoisting_products_only_keeps_a_product_of_loop_work_in_the_loop():
    """With elementwise=False an input-only Affine whose operand stays in the loop stays too."""
    b = StepBuilder("p", {"x": 3}, {"h": 2})
    w = b.param("w", np.arange(6.0).reshape(2, 3) / 7)
    v = b.param("v", np.ones((2, 3)) / 3)
    a = b.affine([(w, "x")])  # leaves the loop
    t = b.affine([(v, b.act(Act.TANH, "x"))])  # reads a value computed in the loop: stays
    h = b.add("h", b.add(a, t))
    p = b.build([h], {"h": h})
    for elementwise in (False, True):
        hs = hoist(p, elementwise=elementwise)
        if not elementwise:
            assert hs.carry == (a,) and any(op.out == t for op in hs.loop.body)
        x = np.random.default_rng(0).standard_normal((2, 4, 3))
        carried = run_sequence(hs.seq, [x.reshape(8, 1, 3)])[0]
        feeds = {"x": x, **{c: v.reshape(2, 4, -1) for c, v in zip(hs.seq.outputs, carried)}}
        got, _ = run_sequence(hs.loop, [feeds[i.name] for i in hs.loop.inputs])
        np.testing.assert_allclose(got[0], run_sequence(p, [x])[0][0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_group_stages_keeps_semantics_and_never_adds_stages_after_dead_code(name):
    p = DeadCode()(StripQuant()(_prog(name)))
    q = GroupStages()(p)
    _same(p, q, name)
    assert len(schedule(q)) <= len(schedule(p))


def test_group_stages_fuses_a_gated_cell_into_one_elementwise_stage():
    for name in ("gru", "lstm", "mingru", "minlstm"):
        p = DeadCode()(StripQuant()(_prog(name)))
        stages = schedule(GroupStages()(p))
        assert [s.fused for s in stages].count(True) == 1, name
        assert not stages[-1].ops[0].kind == "Affine"


def _pool_run(prog, stages, plan, x, steps):
    """Run ``prog`` stage by stage with every stored value in ONE flat pool at the plan's offsets,
    element by element in fused stages and row by row in Affines (as a C rendering does): a wrong
    aliasing decision overwrites a value still to be read and changes the result."""
    from edgeseq.ir.step.evaluate import SEMANTICS

    pool = np.full(plan.size, np.nan)
    state = {s.name: np.zeros(s.n) for s in prog.states}
    outs = []
    for t in range(steps):
        env = {"x": x[t]}
        env.update(state)

        def val(name, i=None):
            if prog.is_param(name):
                a = prog.params[name] if prog.params[name].ndim == 2 else prog.params[name].reshape(-1)
            elif name in plan.offset:
                a = pool[plan.offset[name] : plan.offset[name] + prog.size(name)]
            else:
                a = env[name]
            if i is None:
                return a
            return a[0] if a.size == 1 else a[i]

        def put(name, value, i=None):
            if name in plan.offset:
                o = plan.offset[name]
                if i is None:
                    pool[o : o + prog.size(name)] = value
                else:
                    pool[o + i] = value
            elif i is None:
                env[name] = np.array(value, dtype=float)
            else:
                env.setdefault(name, np.zeros(prog.size(name)))[i] = value

        for st in stages:
            if st.fused:
                for i in range(st.n):
                    local = {}
                    for op in st.ops:
                        v = SEMANTICS[type(op)](op, lambda r: np.atleast_2d(local[r] if r in local else val(r, i)))
                        local[op.out] = float(np.asarray(v).reshape(-1)[0])
                    for op in st.ops:
                        if op.out in st.keep:
                            put(op.out, local[op.out], i)
            elif isinstance(st.ops[0], Affine):
                op = st.ops[0]
                for j in range(op.n):
                    acc = val(op.bias)[j] if op.bias else 0.0
                    for term in op.terms:
                        w = prog.params[term.w]
                        blk, row = divmod(j, w.shape[0])
                        acc += w[row] @ val(term.x)[blk * w.shape[1] : (blk + 1) * w.shape[1]]
                    put(op.out, acc, j)
            else:
                op = st.ops[0]
                put(op.out, SEMANTICS[type(op)](op, lambda r: np.atleast_2d(val(r)))[0])
        outs.append([np.array(val(o)) for o in prog.outputs])
        state = {s: np.array(val(v)) for s, v in prog.next_state.items()}
    return outs


@pytest.mark.parametrize("name", sorted(CASES))
def test_alias_buffers_shares_space_only_between_disjoint_lifetimes(name):
    p = GroupStages()(DeadCode()(StripQuant()(_prog(name))))
    stages = schedule(p)
    stored = set()
    for st in stages:
        stored |= st.keep if st.fused else {op.out for op in st.ops}
    plan = alias_buffers(p, stages, stored, align=4)
    assert all(o % 4 == 0 for o in plan.offset.values())
    assert plan.size <= sum(-(-p.size(v) // 4) * 4 for v in stored)
    x = drive(name, np.random.default_rng(5), 1, 6)
    got = _pool_run(p, stages, plan, x[0], 6)
    want, _ = run_sequence(p, [x])
    for t, step in enumerate(got):
        for k, g in enumerate(step):
            np.testing.assert_allclose(g, want[k][0, t], rtol=0, atol=1e-12)


def test_alias_buffers_reuses_space():
    p = GroupStages()(DeadCode()(StripQuant()(_prog("l2mu"))))
    stages = schedule(p)
    stored = set()
    for st in stages:
        stored |= st.keep if st.fused else {op.out for op in st.ops}
    plan = alias_buffers(p, stages, stored)
    assert plan.size < sum(p.size(v) for v in stored)


def test_alias_buffers_never_writes_over_an_operand_of_the_same_stage():
    """L2MU at deployment size: a fused stage reads a 32-wide product and writes another 32-wide
    value; sharing space with a shift would overwrite element j > i before it is read."""
    torch = pytest.importorskip("torch")
    from edgeseq.frontends import capture
    from edgeseq.ir import ops as O
    from edgeseq.nn import build_model

    torch.manual_seed(0)
    g = capture(build_model("l2mu", 6, 6, hidden=32, encoder_size=16).eval(), torch.zeros(1, 8, 6))
    op = next(n.op for n in g.nodes if isinstance(n.op, O.L2MU))
    p = GroupStages()(DeadCode()(StripQuant()(step_program(op, 16))))
    stages = schedule(p)
    stored = set()
    for st in stages:
        stored |= st.keep if st.fused else {op.out for op in st.ops}
    plan = alias_buffers(p, stages, stored, align=4)
    for st in stages:
        written = {op.out for op in st.ops} & set(plan.offset)
        read = {r for op in st.ops for r in op.reads()} & set(plan.offset)
        for w in written:
            for r in read - {w}:
                a, b = plan.offset[w], plan.offset[r]
                assert a + p.size(w) <= b or b + p.size(r) <= a, (w, r)
