"""Every named cell's step program against the reference interpreter's own per-cell equations
(the specification): outputs and states at several lengths and batch sizes, whole and chunked."""

from __future__ import annotations

import numpy as np
import pytest

from edgeseq.ir import run
from edgeseq.ir.cells import cell_kinds, step_program
from edgeseq.ir.step import StepProgram, run_sequence

from .cell_cases import CASES, drive, graph_of


def _program(graph):
    node = graph.nodes[0]
    return node, step_program(node.op, graph.in_features)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("batch,steps", [(1, 1), (3, 17), (2, 64)])
def test_step_program_equals_specification(name, batch, steps):
    g = graph_of(name)
    node, prog = _program(g)
    x = drive(name, np.random.default_rng(steps + batch), batch, steps)
    want, want_state = run(g, x)
    got, got_state = run_sequence(prog, [x])
    for w, y in zip(want, got):
        if g.type_of(g.outputs[0]).spikes:
            np.testing.assert_array_equal(y, w)
        np.testing.assert_allclose(y, w, rtol=0, atol=1e-12)
    for s in prog.state_names:
        np.testing.assert_allclose(got_state[s], want_state[f"{node.name}/{s}"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_chunked_equals_whole(name):
    g = graph_of(name)
    _, prog = _program(g)
    x = drive(name, np.random.default_rng(1), 2, 30)
    whole, st = run_sequence(prog, [x])
    a, st_a = run_sequence(prog, [x[:, :11]])
    b, st_b = run_sequence(prog, [x[:, 11:]], st_a)
    for w, y0, y1 in zip(whole, a, b):
        np.testing.assert_array_equal(np.concatenate([y0, y1], axis=1), w)
    for k in st:
        np.testing.assert_array_equal(st[k], st_b[k])


def test_state_order_is_the_ops_state_order():
    for name in CASES:
        g = graph_of(name)
        node, prog = _program(g)
        assert prog.state_names == tuple(node.op.state_shapes(g.input_types(node))), name


def test_every_cell_kind_is_covered():
    covered = {graph_of(n).nodes[0].op.kind for n in CASES}
    assert covered | {"Scan"} == cell_kinds()  # the generic Scan carries any of these programs (tests below)


def test_programs_round_trip_through_json():
    for name in CASES:
        _, prog = _program(graph_of(name))
        back = StepProgram.from_json(prog.to_json(), prog.params)
        assert back.to_json() == prog.to_json()


@pytest.mark.parametrize("name", ["gru", "lstm", "lmu_full", "lif_one_to_one", "l2mu_syn", "s4d"])
def test_generic_scan_of_a_step_program(name, tmp_path):
    """A Scan op carrying any step program: the interpreter runs it, it saves and loads exactly, and
    it quantizes like the named cell it came from."""
    from edgeseq.ir import GraphBuilder, load
    from edgeseq.ir import ops as O
    from edgeseq.quant import quantize

    g = graph_of(name)
    node, prog = _program(g)
    b = GraphBuilder(g.in_features)
    outs = b.add(O.Scan(program=prog), "x", "cell")
    gs = b.build(list(outs) if isinstance(outs, tuple) else [outs])
    x = drive(name, np.random.default_rng(5), 3, 19)
    want, _ = run(g, x)
    got, st = run(gs, x)
    for w, y in zip(want, got):  # the program is the specification's equations to rounding
        np.testing.assert_allclose(y, w, rtol=0, atol=1e-12)
    assert set(st) == {f"cell/{s}" for s in prog.state_names}
    gs.save(tmp_path / "scan.esq")
    back = load(tmp_path / "scan.esq")
    assert back.nodes[0].op.program.to_json() == prog.to_json()
    np.testing.assert_array_equal(run(back, x)[0][0], got[0])
    calib = drive(name, np.random.default_rng(6), 16, 12)
    q_named, q_scan = quantize(g, calib), quantize(gs, calib)
    assert q_named.program.op_counts() == q_scan.program.op_counts()
    np.testing.assert_array_equal(q_named.run(x)[0][0], q_scan.run(x)[0][0])


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_cell_quantizes(name):
    """Every cell variant through the generic integer lowering: the integer program tracks the
    float reference, agrees with the fake-quant simulation and runs chunked == whole."""
    from edgeseq.quant import intexact, quantize

    g = graph_of(name)
    rng = np.random.default_rng(11)
    qg = quantize(g, drive(name, rng, 48, 16))
    x = drive(name, rng, 16, 16)
    ys_f, _ = run(g, x)
    ys_i, _ = qg.run(x)
    ys_k, _ = qg.run(x, mode="fake")
    for yf, yi, yk, t in zip(ys_f, ys_i, ys_k, g.output_types):
        if t.spikes:  # spikes: most decisions agree (one LSB can move a threshold crossing)
            assert np.mean((yi != 0) == (yf != 0)) > 0.9
            continue
        s = np.sqrt(np.mean(yf**2)) + 1e-9
        assert np.sqrt(np.mean((yi - yf) ** 2)) / s < 0.1, "integer program too far from float"
        assert np.sqrt(np.mean((yi - yk) ** 2)) / s < 0.05, "integer program and fake quantization disagree"
    xq = qg.quantize_input(x[:3, :9])
    whole, st = intexact.run(qg.program, xq)
    parts, st2 = intexact.run_chunked(qg.program, xq, 4)
    assert all(np.array_equal(a, b) for a, b in zip(whole, parts))
    assert all(np.array_equal(st[k], st2[k]) for k in st)
