"""Passes over step programs keep the float semantics and meet their stated guarantees."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseq.errors import VerificationError
from edgeseq.ir.cells import step_program
from edgeseq.ir.step import Add, Affine, Quant, StepBuilder, run_sequence
from edgeseq.ir.step.passes import (
    DeadCode,
    FoldBias,
    GroupStages,
    SplitAffine,
    StripQuant,
    hoist,
    input_only,
    liveness,
    schedule,
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
