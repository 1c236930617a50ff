"""Quantization points placed on step programs that declare none (edgeseq.ir.step.points): the float
program is unchanged, every place the integer lowering rounds gets its point, and a program placed
automatically quantizes as well as the hand-placed points of the named cells.

Every named cell of tests/unit/cell_cases.py, stripped of its points and given them by the pass,
quantizes; for one cell of each family the integer error against float is within a small margin of
the hand-placed points' error."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseq.errors import VerificationError
from edgeseq.ir import ops as O
from edgeseq.ir.cells import step_program
from edgeseq.ir.graph import GraphBuilder, Node
from edgeseq.ir.step import Activate, Gt, PointKind, QRole, Quant, StepBuilder, run_sequence
from edgeseq.ir.step.passes import StripQuant
from edgeseq.ir.step.points import FoldThreshold, PlacePoints, has_points, place_points, spike_states
from edgeseq.ir.types import Act

from .cell_cases import CASES, drive, graph_of


def _elman_lif(b: StepBuilder):
    """h = tanh(W x + U h + b); a LIF population driven by h (reset by subtraction, spikes
    carried back); an exp / div normaliser; a product of two products."""
    rng = np.random.default_rng(0)
    w = b.param("w", rng.normal(size=(5, 3)) * 0.5)
    u = b.param("u", rng.normal(size=(5, 5)) * 0.3)
    h = b.act(Act.TANH, b.add(b.affine([(w, "x"), (u, "h")]), b.param("bias", rng.normal(size=5) * 0.1)))
    thr = b.const(1.0)
    fired = b.gt(b.sub("mem", thr), b.const(0.0))
    mem = b.sub(b.add(b.mul(b.const(0.9), "mem"), h), b.mul(fired, thr))
    spk = b.gt(b.sub(mem, thr), b.const(0.0))
    e = b.act(Act.EXP, b.slice(h, 0, 2))
    ratio = b.div(e, b.add(b.slice(e, 0, 1), b.const(1.0)))
    prod = b.mul(b.mul(h, h), h)
    sel = b.select(spk, h, "mem")
    return b.build([h, spk, ratio, prod, sel], {"h": h, "mem": mem, "spk": spk})


def _program():
    b = StepBuilder("test", {"x": 3})
    for s in ("h", "mem", "spk"):
        b.state(s, 5)
    return _elman_lif(b)


def _same_float(p, q, steps=7):
    x = np.random.default_rng(1).normal(size=(2, steps, 3)) * 2
    a, sa = run_sequence(p, [x])
    b, sb = run_sequence(q, [x])
    for u, v in zip(a, b):
        assert np.array_equal(u, v)
    for k in sa:
        assert np.array_equal(sa[k], sb[k])


def test_placed_points_keep_the_float_program_and_cover_every_rounding_place():
    p = _program()
    q = place_points(p)
    for t in (1, 9):
        _same_float(p, q, t)
    prod = q.producers()
    # every table function reads a PRE point of its function and is read by a point
    for op in q.body:
        if isinstance(op, Activate) and op.fn is not Act.IDENTITY:
            src = prod[op.x]
            assert isinstance(src, Quant) and src.point.role is QRole.PRE and src.point.fn == op.fn.value
            assert any(isinstance(r, Quant) for r in q.consumers()[op.out])
    # states: tanh output is the state's unit point; the membrane a STATE point; spikes carried as spikes
    nxt = {s: prod[v] for s, v in q.next_state.items() if v in prod}
    assert nxt["h"].name.kind is PointKind.STATE and nxt["h"].point.role is QRole.UNIT
    assert nxt["mem"].name.kind is PointKind.STATE and nxt["mem"].point.role is QRole.STATE
    assert spike_states(p) == {"spk": None}
    assert isinstance(nxt["spk"], Gt) or nxt["spk"].point.role is QRole.SPIKES
    assert {s.name: s.point.role for s in q.states if s.point} == {"spk": QRole.SPIKES}
    # outputs: the state's point (h), spikes, and one output point each for the others
    roles = [prod[o].point.role for o in q.outputs]
    kinds = [prod[o].name.kind for o in q.outputs]
    assert kinds == [PointKind.STATE] + [PointKind.OUTPUT] * 4
    assert roles[1] is QRole.SPIKES
    # the membrane is compared with its threshold directly (no rounded difference)
    assert any(isinstance(op, Gt) and op.a == "mem" for op in q.body)


def test_place_points_leaves_declared_points_alone():
    prog = step_program(graph_of("gru").nodes[0].op, 5)
    assert has_points(prog) and place_points(prog) is prog
    with pytest.raises(VerificationError, match="already has quantization points"):
        PlacePoints()(prog)


def test_threshold_fold_is_exact_and_keeps_other_readers():
    b = StepBuilder("t", {"x": 2})
    d = b.sub("x", b.const(0.25))
    g = b.gt(d, b.const(0.0))
    p = b.build([g, d], {})
    q = FoldThreshold()(p)
    assert q.producers()[q.outputs[0]].a == "x"
    x = np.array([[[0.25, 0.25 + 2**-50], [0.2500000001, -1.0]]])
    assert np.array_equal(run_sequence(p, [x])[0][0], run_sequence(q, [x])[0][0])


def test_shared_constants_get_one_copy_per_reader():
    q = place_points(_program())
    reads = [r for op in q.body for r in dict.fromkeys(op.reads()) if q.is_param(r) and q.params[r].ndim < 2]
    assert len(reads) == len(set(reads))


def _graph(prog, n_in):
    gb = GraphBuilder(n_in)
    outs = gb.add(O.Scan(program=prog), "x", "cell")
    return gb.build(list(outs) if isinstance(outs, tuple) else [outs])


def _int_error(graph, name):
    from edgeseq.quant import quantize

    q = quantize(graph, drive(name, np.random.default_rng(0), 16, 12), "edgeseq", budget=None)
    x = drive(name, np.random.default_rng(1), 8, 20)
    yf, yi = q.run(x, mode="float")[0], q.run(x)[0]
    return max(_error(a, b, t.spikes) for a, b, t in zip(yi, yf, q.graph.output_types))


def _error(got, want, spikes: bool) -> float:
    """Spikes: the fraction that differ; else the rms error relative to the output's spread."""
    if spikes:
        return float(np.mean((got != 0) != (want != 0)))
    return float(np.sqrt(np.mean((got - want) ** 2)) / (np.std(want) + 1e-12))


def _placed(name):
    g = graph_of(name)
    n = g.nodes[0]
    prog = StripQuant()(step_program(n.op, g.in_features))
    return g, g.with_nodes([Node(n.name, O.Scan(program=prog), n.inputs, n.outputs)])


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_cell_quantizes_from_placed_points(name):
    _, g = _placed(name)
    assert _int_error(g, name) < 0.2


@pytest.mark.parametrize("name", ["rnn_tanh", "gru", "lstm", "mingru", "lmu_full", "s4d", "cubalif_all", "embedding"])
def test_placed_points_quantize_like_the_hand_placed_ones(name):
    named, placed = _placed(name)
    assert _int_error(placed, name) <= 1.3 * _int_error(named, name) + 0.01


def test_placed_program_quantizes_end_to_end():
    from edgeseq.quant import intexact, quantize

    g = _graph(_program(), 3)
    rng = np.random.default_rng(0)
    q = quantize(g, rng.normal(size=(16, 12, 3)) * 2, "edgeseq", budget=None)
    x = rng.normal(size=(3, 15, 3)) * 2
    yf, yi, yk = q.run(x, mode="float")[0], q.run(x)[0], q.run(x, mode="fake")[0]
    outs, _ = intexact.run(q.program, q.quantize_input(x))
    for a, b in zip(intexact.dequantize_outputs(q.program, outs), yi):
        assert np.array_equal(a, b)
    errs = [_error(a, b, i == 1) for i, (a, b) in enumerate(zip(yi, yf))]
    # h, spikes, exp ratio, h^3 (the spike-selected output jumps wherever one spike flips)
    assert errs[0] < 0.05 and errs[1] < 0.05 and errs[2] < 0.1 and errs[3] < 0.1, errs
    assert max(_error(a, b, i == 1) for i, (a, b) in enumerate(zip(yk, yi))) < 0.01  # fake-quant = integer
