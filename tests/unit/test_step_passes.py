"""Passes over step programs keep the float semantics and meet their stated guarantees."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseq.errors import VerificationError
from edgeseq.ir.cells import step_program
from edgeseq.ir.step import Affine, Quant, run_sequence
from edgeseq.ir.step.passes import DeadCode, SplitAffine, StripQuant, hoist, input_only, liveness, schedule

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
