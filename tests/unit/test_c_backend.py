"""Self-contained C backend on the host (gcc): every zoo model and every op variant compiled and run
through the generated driver, compared with the float64 reference interpreter (<= 1e-4 max abs,
spike trains identical), at several sequence lengths and batch sizes; the streaming step API equals
whole-sequence and chunked execution; typed errors for missing tools, unsupported ops and models
that do not fit a microcontroller."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import edgeseq
from edgeseq.errors import ResourceError, ToolchainMissingError, UnsupportedOpError
from edgeseq.export.c import generate, supported_kinds
from edgeseq.export.c.artifact import reference_arrays, split_outputs
from edgeseq.export.c.cwriter import c_float
from edgeseq.ir import GraphBuilder, NeuronParams
from edgeseq.ir import ops as O
from edgeseq.ir.interpret import run_chunked
from edgeseq.ir.types import Act, Recurrence, ResetRule

from ..conftest import need_tool as require_tool
from . import cell_cases
from .zoo_cases import ZOO, build

TOL = 1e-4
SHAPES = [(1, 1), (3, 37), (2, 128)]  # (batch, steps)


# ---------------------------------------------------------------- graphs exercising every op variant


def _lin(b, rng, src, n_in, n_out, scale=1.0, bias=True, name=None):
    w = rng.standard_normal((n_out, n_in)) * scale / np.sqrt(n_in)
    return b.add(O.Linear(weight=w, bias=rng.standard_normal(n_out) * 0.3 if bias else None), src, name)


def ff_graph(seed=0):
    """Linear, every activation, Concat, LayerNorm, BatchNorm, Add, readouts last/mean/sum and
    pooled Linear / LayerNorm / Activation / Add / Concat; temporal and pooled outputs."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder(5)
    h = _lin(b, rng, "x", 5, 8, scale=2.5)
    acts = []
    for fn in Act:
        kw = {"slope": 0.2} if fn is Act.LEAKY_RELU else {"lo": -0.5, "hi": 0.7} if fn is Act.HARDTANH else {}
        acts.append(b.add(O.Activation(fn=fn, **kw), h, f"act_{fn.value}"))
    cat = b.add(O.Concat(), acts, "cat")
    ln = b.add(
        O.LayerNorm(weight=rng.uniform(0.5, 1.5, 8 * len(acts)), bias=rng.standard_normal(8 * len(acts))), cat, "ln"
    )
    bn = b.add(O.BatchNorm(mean=rng.standard_normal(8), var=rng.uniform(0.5, 2, 8)), h, "bn_plain")
    lnp = b.add(O.LayerNorm(), bn, "ln_plain")
    add = b.add(O.Add(), [lnp, bn], "add")
    nob = _lin(b, rng, add, 8, 4, bias=False, name="nobias")
    r_last = b.add(O.Readout(mode="last"), ln, "r_last")
    r_mean = b.add(O.Readout(mode="mean"), add, "r_mean")
    r_sum = b.add(O.Readout(mode="sum"), nob, "r_sum")
    p1 = _lin(b, rng, r_last, 8 * len(acts), 8, name="p_fc")
    p2 = b.add(O.Activation(fn="gelu"), p1, "p_gelu")
    p3 = b.add(O.LayerNorm(weight=np.ones(8) * 1.5), r_mean, "p_ln")
    p4 = b.add(O.Add(), [p2, p3], "p_add")
    p5 = b.add(O.Concat(), [p4, r_sum], "p_cat")
    return b.build([ln, p5, nob, r_mean])


def conv_graph(seed=1):
    rng = np.random.default_rng(seed)
    b = GraphBuilder(6)
    c1 = b.add(
        O.Conv1d(weight=rng.standard_normal((8, 3, 3)) * 0.5, bias=rng.standard_normal(8), dilation=2, groups=2),
        "x",
        "conv_dil_groups",
    )
    c2 = b.add(O.Conv1d(weight=rng.standard_normal((8, 8, 1)) * 0.4), c1, "conv_pointwise")
    c3 = b.add(
        O.Conv1d(weight=rng.standard_normal((4, 2, 4)) * 0.5, bias=rng.standard_normal(4), groups=4),
        c2,
        "conv_k4_groups4",
    )
    c4 = b.add(O.Conv1d(weight=rng.standard_normal((3, 4, 2)) * 0.5, dilation=5), c3, "conv_dil5")
    return b.build([c4, c1])


def scan_graph(seed=2):
    """Every recurrent op and option, side by side on one input."""
    rng = np.random.default_rng(seed)
    i, h = 6, 7
    g = lambda *s: rng.standard_normal(s) / np.sqrt(s[-1])  # noqa: E731
    v = lambda n: rng.standard_normal(n) * 0.2  # noqa: E731
    b = GraphBuilder(i)
    outs = [
        b.add(O.RNN(w_ih=g(h, i), w_hh=g(h, h), b_ih=v(h), b_hh=v(h), act="relu"), "x", "rnn_relu"),
        b.add(O.RNN(w_ih=g(h, i), w_hh=g(h, h)), "x", "rnn_tanh_nobias"),
        b.add(O.GRU(w_ih=g(3 * h, i), w_hh=g(3 * h, h), b_ih=v(3 * h), b_hh=v(3 * h)), "x", "gru"),
        b.add(
            O.GRU(w_ih=g(3 * h, i), w_hh=g(3 * h, h), b_ih=v(3 * h), b_hh=v(3 * h), reset_after=False),
            "x",
            "gru_reset_before",
        ),
        b.add(O.GRU(w_ih=g(3 * h, i), w_hh=g(3 * h, h), reset_after=False), "x", "gru_nobias"),
        b.add(O.LSTM(w_ih=g(4 * h, i), w_hh=g(4 * h, h), b_ih=v(4 * h), b_hh=v(4 * h)), "x", "lstm"),
        b.add(O.LSTM(w_ih=g(4 * h, i), w_hh=g(4 * h, h)), "x", "lstm_nobias"),
        b.add(O.MinGRU(w_z=g(h, i), w_h=g(h, i), b_z=v(h), b_h=v(h)), "x", "mingru"),
        b.add(O.MinGRU(w_z=g(h, i), w_h=g(h, i), candidate="identity"), "x", "mingru_identity"),
        b.add(O.MinLSTM(w_f=g(h, i), w_i=g(h, i), w_h=g(h, i), b_f=v(h), b_i=v(h), b_h=v(h)), "x", "minlstm"),
        b.add(O.MinLSTM(w_f=g(h, i), w_i=g(h, i), w_h=g(h, i), candidate="identity"), "x", "minlstm_identity"),
    ]
    d, order = 2, 5
    m = d * order
    outs += [
        # memory only (output m), with hidden-to-memory from m itself and memory-to-memory
        b.add(O.LMU(e_x=g(d, i), order=order, theta=12.0, e_h=g(d, m), e_m=g(d, m), b_u=v(d)), "x", "lmu_mem"),
        # hidden with recurrent w_h (state h), euler, relu
        b.add(
            O.LMU(
                e_x=g(d, i),
                order=order,
                theta=30.0,
                w_m=g(h, m),
                w_h=g(h, h),
                b_h=v(h),
                discretizer="euler",
                act="relu",
            ),
            "x",
            "lmu_euler_relu",
        ),
        # hidden with e_h only (state h, no w_h), input-to-hidden
        b.add(O.LMU(e_x=g(d, i), order=order, theta=8.0, e_h=g(d, h), w_m=g(h, m), w_x=g(h, i)), "x", "lmu_eh"),
        # hidden without any recurrence (no h state)
        b.add(O.LMU(e_x=g(1, i), order=3, theta=4.0, w_m=g(h, 3)), "x", "lmu_plain"),
    ]
    return b.build(outs)


def _neuron(rng, n, rule, delay, synaptic, vector, scale):
    beta = rng.uniform(0.6, 1.0, n) if vector else 0.85
    if vector:
        beta[0] = 1.3  # clipped to 1
    return NeuronParams(
        beta=beta,
        threshold=rng.uniform(0.7, 1.3, n) if vector else 1.0,
        alpha=(rng.uniform(0.3, 0.9, n) if vector else 0.6) if synaptic else None,
        reset=rule,
        reset_delay=delay,
        spike_scale=(rng.uniform(0.5, 2, n) if vector else 0.7) if scale else None,
    )


def spiking_graph(seed=3, synaptic=False):
    """LIF (or CuBaLIF) with every reset rule x reset_delay x recurrence, emits spikes / membrane /
    both, scalar and per-neuron parameters, graded spikes; plus two L2MU variants."""
    rng = np.random.default_rng(seed)
    n = 6
    b = GraphBuilder(4)
    cur = _lin(b, rng, "x", 4, n, scale=2.0, name="current")
    cls = O.CuBaLIF if synaptic else O.LIF
    outs, k = [], 0
    for rule in ResetRule:
        for delay in (True, False):
            for rec in Recurrence:
                emit = ("spikes", "membrane", "both")[k % 3]
                kw = {}
                if rec is Recurrence.ONE_TO_ONE:
                    kw["v_rec"] = rng.standard_normal(n) * 0.5 if k % 2 else 0.4
                elif rec is Recurrence.ALL_TO_ALL:
                    kw["w_rec"] = rng.standard_normal((n, n)) * 0.4
                    kw["b_rec"] = rng.standard_normal(n) * 0.1 if k % 2 else None
                op = cls(
                    neuron=_neuron(rng, n, rule, delay, synaptic, vector=k % 2 == 0, scale=k % 5 == 0),
                    recurrence=rec,
                    emit=emit,
                    **kw,
                )
                r = b.add(op, cur, f"{cls.kind.lower()}_{rule.value}_{'d' if delay else 'nd'}_{rec.value}")
                outs += list(r) if isinstance(r, tuple) else [r]
                k += 1
    # L2MU: synaptic populations with every optional weight / minimal plain LIF
    d, order, h = 2, 4, 5
    ms = d * order
    from edgeseq.ir import lmu_matrices

    a, bb = lmu_matrices(order, 6.0)
    spk_in = outs[0]
    neu = lambda m, rule=ResetRule.SUBTRACT: _neuron(rng, m, rule, True, synaptic, vector=True, scale=False)  # noqa: E731
    outs.append(
        b.add(
            O.L2MU(
                a=a,
                b=bb.ravel(),
                e_x=rng.standard_normal((d, n)) * 1.5,
                w_m=rng.standard_normal((h, ms)) * 1.5,
                u_neuron=neu(d),
                m_neuron=neu(ms, ResetRule.NONE),
                h_neuron=neu(h),
                e_h=rng.standard_normal((d, h)),
                e_m=rng.standard_normal((d, ms)) * 0.3,
                b_u=rng.standard_normal(d) * 0.2,
                w_x=rng.standard_normal((h, n)),
                w_h=rng.standard_normal((h, h)) * 0.5,
                b_h=rng.standard_normal(h) * 0.2,
            ),
            spk_in,
            "l2mu_full",
        )
    )
    outs.append(
        b.add(
            O.L2MU(
                a=a,
                b=bb.ravel(),
                e_x=rng.standard_normal((d, n)) * 2,
                w_m=rng.standard_normal((h, ms)) * 2,
                u_neuron=NeuronParams(beta=0.9, threshold=0.5, alpha=0.5 if synaptic else None),
                m_neuron=NeuronParams(beta=0.9, threshold=0.5, alpha=0.5 if synaptic else None, reset="zero"),
                h_neuron=NeuronParams(
                    beta=0.8, threshold=0.5, alpha=0.5 if synaptic else None, reset="zero_total", reset_delay=False
                ),
            ),
            spk_in,
            "l2mu_min",
        )
    )
    r = b.add(O.Readout(mode="sum"), outs[-1], "spike_count")
    return b.build(outs + [r])


def program_graph(seed=5):
    """S4D (complex and real modes), streaming attention pooling, embedding lookups (of feature 0,
    ids rounded to the table's rows and clamped; per step and pooled), a generic Scan carrying a
    step program and a discretised NIR neuron (LeakyNeuron with a synapse)."""
    from edgeseq.ir.cells import step_program

    rng = np.random.default_rng(seed)
    h, n = 4, 3
    b = GraphBuilder(h)
    s4d = dict(
        log_dt=rng.uniform(np.log(0.01), np.log(0.5), h),
        a_re=-rng.uniform(0.2, 1.0, (h, n)),
        b_re=rng.standard_normal((h, n)),
        c_re=rng.standard_normal((h, n)) * 0.5,
    )
    cplx = dict(
        a_im=np.pi * np.arange(n) * np.ones((h, 1)),
        b_im=rng.standard_normal((h, n)) * 0.3,
        c_im=rng.standard_normal((h, n)) * 0.5,
        d=rng.standard_normal(h),
    )
    ids = b.add(O.Linear(weight=np.eye(1, h)), "x", "id")  # exactly x[0]: same rows as the reference
    gru = O.GRU(w_ih=rng.standard_normal((3 * 5, h)) * 0.4, w_hh=rng.standard_normal((3 * 5, 5)) * 0.4)
    outs = [
        b.add(O.S4D(**s4d, **cplx), "x", "s4d"),
        b.add(O.S4D(**s4d), "x", "s4d_real"),
        b.add(O.AttentionPool(values=h - 1), "x", "attention"),
        b.add(O.Embedding(table=rng.standard_normal((7, 3))), ids, "embedding"),
        b.add(O.Scan(program=step_program(gru, h)), "x", "scan_gru"),
        b.add(
            O.LeakyNeuron(
                decay=rng.uniform(0.6, 0.99, h),
                gain=rng.uniform(0.2, 1.5, h),
                syn_decay=rng.uniform(0.5, 0.9, h),
                threshold=rng.uniform(0.4, 1.0, h),
                reset="subtract",
            ),
            "x",
            "leaky",
        ),
    ]
    last_id = b.add(O.Readout(mode="last"), ids, "last_id")
    outs.append(b.add(O.Embedding(table=rng.standard_normal((5, 2))), last_id, "pooled_embedding"))
    return b.build(outs)


OP_GRAPHS = {
    "ops_ff": ff_graph,
    "ops_conv": conv_graph,
    "ops_scan": scan_graph,
    "ops_lif": spiking_graph,
    "ops_cubalif": lambda: spiking_graph(4, synaptic=True),
    "ops_programs": program_graph,
}


def with_spike_outputs(graph):
    """The graph with every spiking value also exposed as an output (to check spike trains)."""
    spk = [v for v in graph.value_types if graph.type_of(v).spikes and v not in graph.outputs]
    return graph.with_nodes(graph.nodes, outputs=tuple(graph.outputs) + tuple(spk))


def zoo_graph(case):
    return with_spike_outputs(edgeseq.capture(build(case), torch.randn(2, 10, 6)))


def make_input(graph, batch, steps, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, steps, graph.in_features)) * 2.0 + 0.3).astype(np.float32)


def check_outputs(graph, info, x, res, tol=TOL, relative=False):
    """Max abs error <= tol on every output (times max(1, max |ref|) if ``relative``: the synthetic
    op graphs let membranes grow into the hundreds), spike outputs identical; returns (max error, spikes)."""
    _, _, ref_state, ref = reference_arrays(graph, info, x)
    got = split_outputs(info, res.step, res.pooled)
    worst, spikes = 0.0, 0
    for name, r, g in zip(graph.outputs, ref, got):
        assert r.shape == g.shape, name
        if graph.type_of(name).spikes:  # same spike pattern (graded amplitudes are float32 there)
            np.testing.assert_array_equal(g != 0, r != 0, err_msg=f"spike train '{name}' differs")
            spikes += int(np.count_nonzero(r))
        err = float(np.max(np.abs(r - g)))
        scale = max(1.0, float(np.max(np.abs(r)))) if relative else 1.0
        assert err <= tol * scale, f"output '{name}': max abs error {err:.3g} > {tol} x {scale:.3g}"
        worst = max(worst, err)
    if res.state.size:
        rel = np.abs(ref_state - res.state) / np.maximum(1.0, np.abs(ref_state))
        assert rel.max() <= tol, f"final state differs (max rel error {rel.max():.3g})"
    return worst, spikes


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def x86():
    require_tool("gcc")
    from edgeseq.targets import get_target

    return get_target("x86")


@pytest.fixture(scope="module")
def builds(x86, tmp_path_factory):
    """Lazily built (graph, sources, binary) per case, shared by the tests of this module."""
    cache = {}

    def get(case):
        if case not in cache:
            graph = OP_GRAPHS[case]() if case in OP_GRAPHS else zoo_graph(case)
            src = generate(graph, target="x86")
            d = tmp_path_factory.mktemp(case)
            binary = x86.build(src, d)
            assert "warning" not in x86.build_log, x86.build_log
            cache[case] = (graph, src, binary)
        return cache[case]

    return get


# ---------------------------------------------------------------- equivalence with the reference


@pytest.mark.parametrize("case", sorted(ZOO))
def test_zoo_model_matches_reference(builds, x86, case):
    graph, src, binary = builds(case)
    spikes = 0
    for k, (batch, steps) in enumerate(SHAPES):
        x = make_input(graph, batch, steps, seed=k)
        res = x86.run(binary, x, mode="step", state=True)
        spikes += check_outputs(graph, src.info, x, res)[1]
    if any(graph.type_of(o).spikes for o in graph.outputs):
        assert spikes > 0, "the test input must make the neurons fire"


@pytest.mark.parametrize("case", sorted(OP_GRAPHS))
def test_op_variants_match_reference(builds, x86, case):
    graph, src, binary = builds(case)
    for k, (batch, steps) in enumerate([(1, 1), (4, 50)]):
        x = make_input(graph, batch, steps, seed=10 + k)
        check_outputs(graph, src.info, x, x86.run(binary, x, mode="step", state=True), relative=True)


def test_cell_groups_cover_every_case():
    assert sorted(n.name for g in CELL_GROUPS for n in cells_graph(g).nodes) == sorted(cell_cases.CASES)


def test_every_ir_op_kind_is_lowered():
    from edgeseq.ir.interpret import supported_kinds as reference_kinds
    from edgeseq.ir.ops import OP_REGISTRY

    # window ops (Reverse, Lookahead): whole-window models (tests/integration/test_window_targets.py)
    window = {k for k, cls in OP_REGISTRY.items() if cls.category == "window"}
    assert window and window <= reference_kinds()
    assert supported_kinds() == set(OP_REGISTRY) == reference_kinds()
    covered = {n.op.kind for f in OP_GRAPHS.values() for n in f().nodes}
    assert covered == set(OP_REGISTRY) - window  # the op-variant graphs below exercise every streaming kind


# ---------------------------------------------------------------- every cell case, whole / step / chunked

CELL_TOL = 1e-5  # float32 C vs the float64 reference on a host
CELL_SHAPES = [(1, 9), (3, 40)]  # (batch, steps)
SPIKING_CASES = ("lif", "cubalif", "l2mu")


def cell_group(name: str) -> str:
    """Cases that share one input: spiking cells (a firing drive), id inputs, the others."""
    if name.startswith(SPIKING_CASES):
        return "spiking"
    return "ids" if cell_cases.in_features(name) == 1 else "dense"


CELL_GROUPS = ["dense", "spiking", "ids"]


def cells_graph(group: str):
    """Every case of cell_cases.py in ``group`` side by side on one input, with every spike train
    as an output."""
    names = [c for c in sorted(cell_cases.CASES) if cell_group(c) == group]
    b = GraphBuilder(cell_cases.in_features(names[0]))
    outs = []
    for name in names:
        r = b.add(cell_cases.CASES[name](np.random.default_rng(sorted(cell_cases.CASES).index(name))), "x", name)
        outs += list(r) if isinstance(r, tuple) else [r]
    return with_spike_outputs(b.build(outs))


def check_cell_cases(target, binary, graph, info, tol=CELL_TOL):
    """Every (batch, steps) of CELL_SHAPES: esq_step per step, esq_run over the whole sequence and
    over chunks of 4 agree bit for bit, and match the reference: spike trains identical, outputs
    and final states to ``tol`` times the magnitude of their cell's values (max(1, |outputs|,
    |states|): an unstable Euler LMU memory grows into the hundreds)."""
    spiking = any(graph.type_of(o).spikes for o in graph.outputs)
    spikes = 0
    for k, (batch, steps) in enumerate(CELL_SHAPES):
        x = cell_cases.drive(graph.nodes[0].name, np.random.default_rng(k), batch, steps).astype(np.float32)
        runs = [target.run(binary, x, mode=m, state=True) for m in ("step", "run", "chunk:4")]
        for r in runs[1:]:
            np.testing.assert_array_equal(r.step, runs[0].step)
            np.testing.assert_array_equal(r.state, runs[0].state)
        _, _, ref_state, ref = reference_arrays(graph, info, x)
        got = dict(zip(graph.outputs, split_outputs(info, runs[0].step, runs[0].pooled)))
        want = dict(zip(graph.outputs, ref))
        for e in info["state_layout"]:
            sl = slice(e["offset"], e["offset"] + e["size"])
            want[e["key"]], got[e["key"]] = ref_state[:, sl], runs[0].state[:, sl]
        for node in graph.nodes:
            keys = [k for k in want if k in node.outputs or k.split("/")[0] == node.name]
            scale = max([1.0] + [float(np.abs(want[k]).max()) for k in keys])
            for key in keys:
                if key in graph.outputs and graph.type_of(key).spikes:
                    np.testing.assert_array_equal(got[key] != 0, want[key] != 0, err_msg=f"spike train '{key}' differs")
                    spikes += int(np.count_nonzero(want[key]))
                err = float(np.abs(want[key] - got[key]).max())
                assert err <= tol * scale, f"'{key}' ({batch}x{steps}): max abs error {err:.3g} > {tol} x {scale:.3g}"
    assert not spiking or spikes > 0


@pytest.mark.parametrize("group", CELL_GROUPS)
def test_every_cell_case_matches_reference(x86, tmp_path, group):
    graph = cells_graph(group)
    src = generate(graph, target="x86")
    binary = x86.build(src, tmp_path)
    assert "warning" not in x86.build_log, x86.build_log
    check_cell_cases(x86, binary, graph, src.info)


def test_every_primitive_and_state_pattern_renders(x86, tmp_path, monkeypatch):
    """A step program no named cell has (placed on a CuBaLIF node's interface: input x, states
    syn / mem / spk, two outputs) exercising what the cells do not: blocked Concat, Slice, Gather,
    Div by zero, Select, an Affine mixing block structures, a one-value broadcast, swapped states,
    a state copied from another state and an old state as output. The C step equals the
    float64 evaluation of the program, per step and chunked."""
    from edgeseq.export.c import step_f32
    from edgeseq.ir.step import StepBuilder, run_sequence

    rng = np.random.default_rng(0)
    bld = StepBuilder("custom", {"x": 4}, {"syn": 4, "mem": 4, "spk": 4})
    c = bld.concat(["x", "mem"], blocks=2)
    sl, g = bld.slice(c, 2, 6), bld.gather(c, [7, 0, 3, 5])
    a = bld.affine(
        [(bld.param("w1", rng.standard_normal((4, 8))), c), (bld.param("w2", rng.standard_normal((2, 2))), sl, 2)],
        bld.param("bias", rng.standard_normal(4)),
    )
    den = bld.select(bld.gt(g, bld.const(0.2)), g, bld.const(0.0))
    one = bld.affine([(bld.param("w3", rng.standard_normal((1, 4))), "spk")])
    y = bld.add(bld.act(Act.TANH, bld.div(a, den)), bld.mul(one, "spk"))
    prog = bld.build([y, "mem"], {"syn": "mem", "mem": "syn", "spk": y})
    monkeypatch.setattr(step_f32, "step_program", lambda op, n: prog)
    b = GraphBuilder(4)
    op = O.CuBaLIF(
        neuron=NeuronParams(beta=0.9, threshold=1.0, alpha=0.5), recurrence="one_to_one", v_rec=0.3, emit="both"
    )
    graph = b.build(list(b.add(op, "x", "cell")))
    src = generate(graph, target="x86")
    binary = x86.build(src, tmp_path)
    assert "warning" not in x86.build_log, x86.build_log
    x = make_input(graph, 2, 7, seed=3)
    (want_y, want_mem), state = run_sequence(prog, [x.astype(np.float64)])
    for mode in ("step", "chunk:3"):
        res = x86.run(binary, x, mode=mode, state=True)
        got_y, got_mem = split_outputs(src.info, res.step, res.pooled)
        np.testing.assert_allclose(got_y, want_y, rtol=0, atol=1e-5)
        np.testing.assert_allclose(got_mem, want_mem, rtol=0, atol=1e-5)
        for e in src.info["state_layout"]:
            got = res.state[:, e["offset"] : e["offset"] + e["size"]]
            np.testing.assert_allclose(got, state[e["key"].split("/")[1]], rtol=0, atol=1e-5)


# ---------------------------------------------------------------- streaming API


@pytest.mark.parametrize("case", ["gru", "lmuformer", "l2mu_syn", "lif_rec", "ops_conv"])
def test_step_api_equals_run_and_chunked_reference(builds, x86, case):
    """esq_step per step == esq_run over the sequence == esq_run over chunks (bit for bit), and all
    equal the reference's chunked run, final state included."""
    graph, src, binary = builds(case)
    x = make_input(graph, 3, 41, seed=7)
    step = x86.run(binary, x, mode="step", state=True)
    whole = x86.run(binary, x, mode="run", state=True)
    chunked = x86.run(binary, x, mode="chunk:5", state=True)
    for other in (whole, chunked):
        np.testing.assert_array_equal(other.step, step.step)
        np.testing.assert_array_equal(other.pooled, step.pooled)
        np.testing.assert_array_equal(other.state, step.state)
    outs, state = run_chunked(graph, x.astype(np.float64), 5)
    for name, r, g in zip(graph.outputs, outs, split_outputs(src.info, step.step, step.pooled)):
        assert np.max(np.abs(r - g)) <= TOL * max(1.0, np.max(np.abs(r))), name
    for e in src.info["state_layout"]:
        got = step.state[:, e["offset"] : e["offset"] + e["size"]]
        ref = state[e["key"]].reshape(3, -1)
        assert np.max(np.abs(ref - got) / np.maximum(1, np.abs(ref))) <= TOL, e["key"]


def test_state_save_load_resumes_a_sequence(builds, x86, tmp_path):
    """A C harness: run 9 steps, save the canonical state, reset, load it into a fresh state and
    finish; identical to an uninterrupted run (ring buffers included)."""
    graph, src, binary = builds("lmuformer")
    srcdir = binary.parent.parent / "src"
    harness = tmp_path / "resume.c"
    harness.write_text(r"""
#include <stdio.h>
#include <string.h>
#include "model.h"
static esq_state a, b;
int main(void) {
    float x[20][ESQ_IN_FEATURES], ya[ESQ_POOLED_OUT_FEATURES], yb[ESQ_POOLED_OUT_FEATURES];
    float saved[ESQ_STATE_FLOATS], sa[ESQ_STATE_FLOATS], sb[ESQ_STATE_FLOATS];
    for (int t = 0; t < 20; ++t) for (int f = 0; f < ESQ_IN_FEATURES; ++f) x[t][f] = (float)((t * 7 + f * 3) % 11) * 0.3f - 1.4f;
    esq_reset(&a); esq_run(&a, &x[0][0], 20, 0); esq_pooled(&a, ya); esq_state_save(&a, sa);
    esq_reset(&b); esq_run(&b, &x[0][0], 9, 0); esq_state_save(&b, saved);
    esq_reset(&b); memset(&b, 0x55, sizeof b); esq_state_load(&b, saved);
    esq_run(&b, &x[9][0], 11, 0); esq_pooled(&b, yb); esq_state_save(&b, sb);
    return memcmp(ya, yb, sizeof ya) != 0 || memcmp(sa, sb, sizeof sa) != 0;
}
""")
    exe = tmp_path / "resume"
    subprocess.run(
        ["gcc", "-std=c99", "-O2", "-I", str(srcdir), str(harness), str(srcdir / "model.c"), "-lm", "-o", str(exe)],
        check=True,
        capture_output=True,
    )
    assert subprocess.run([str(exe)], capture_output=True).returncode == 0


# ---------------------------------------------------------------- generated code properties


def test_buffer_plan_matches_compiled_struct(builds, x86):
    graph, src, binary = builds("lmuformer")
    plan = src.info["buffer_plan"]
    assert x86.sizes(binary)["state_struct_bytes"] == plan["struct_bytes_estimate"]
    # values are reused: the arena is smaller than all per-step values together
    assert plan["scratch_bytes"] < 4 * sum(graph.type_of(o).features for n in graph.nodes for o in n.outputs)
    assert plan["state_bytes"] >= 4 * src.info["state_floats"]


def test_weights_are_const_and_state_is_caller_owned(builds):
    graph, src, binary = builds("gru")
    code = src.files["model.c"]
    assert "static const float W_" in code and "malloc" not in code
    model_o = binary.parent.parent / "obj" / "model.o"
    from edgeseq.targets.elf import ElfFile

    secs = ElfFile(model_o).section_sizes()
    assert secs["data"] == 0 and secs["bss"] == 0  # no hidden globals
    # every weight table is read-only data (bias pairs summed ahead of time are stored once)
    assert secs["rodata"] >= src.info["weights_bytes"] >= 0.9 * 4 * graph.num_params()


def test_strict_c99_null_target(need_tool, tmp_path):
    need_tool("gcc")
    obj = None
    from edgeseq.targets import get_target

    t = get_target("null")
    for name, f in OP_GRAPHS.items():
        obj = t.build(generate(f(), target="null"), tmp_path / name)  # -pedantic -Werror
        assert obj.exists() and t.sizes(obj)["model"]["const_bytes"] > 0
    with pytest.raises(Exception, match="only builds"):
        t.run(obj, np.zeros((1, 2, 5), np.float32))


def test_custom_prefix(x86, tmp_path):
    from edgeseq.targets.elf import ElfFile

    graph = zoo_graph("minlstm")
    src = generate(graph, prefix="har", target="x86")
    assert "void har_step(har_state *s" in src.files["model.h"] and "HAR_IN_FEATURES" in src.files["model.h"]
    binary = x86.build(src, tmp_path)
    assert {"har_step", "har_run", "har_pooled", "har_reset"} <= set(ElfFile(binary).symbols())
    x = make_input(graph, 2, 9, 0)
    check_outputs(graph, src.info, x, x86.run(binary, x))
    with pytest.raises(edgeseq.errors.ConfigError, match="prefix"):
        generate(graph, prefix="2bad")


def test_float_literals_round_trip():
    rng = np.random.default_rng(0)
    vals = np.concatenate(
        [
            rng.standard_normal(2000) * 10.0 ** rng.integers(-40, 38, 2000),
            [0.0, -0.0, 1.0, 1e-45, 3.4028235e38, 0.1, 1 / 3],
        ]
    ).astype(np.float32)
    for v in vals:
        lit = c_float(v)
        assert lit.endswith("f")
        assert np.float32(float(lit[:-1])) == v or (v == 0 and float(lit[:-1]) == 0)


# ---------------------------------------------------------------- errors


def test_unsupported_numeric_names_node_op_and_target():
    graph = zoo_graph("gru")
    node = next(n for n in graph.nodes if n.op.kind == "GRU")
    with pytest.raises(UnsupportedOpError) as e:
        generate(graph, numerics={node.name: "i8"}, target="cortex-m4")
    msg = str(e.value)
    assert "GRU" in msg and node.name in msg and "cortex-m4" in msg and "i8" in msg


def test_unknown_op_kind_is_unsupported(monkeypatch):
    """An IR op kind without a C lowering (a newer op) is refused by name, not skipped."""
    from edgeseq.ir import ops as ops_mod

    class Sqrt2(O.Op):
        kind = "Sqrt2"
        category = "activation"

        def infer(self, ins):
            return (ins[0],)

    Sqrt2 = dataclass(frozen=True, eq=False)(Sqrt2)
    monkeypatch.setitem(ops_mod.OP_REGISTRY, "Sqrt2", Sqrt2)
    b = GraphBuilder(3)
    graph = b.build(b.add(Sqrt2(), "x", "odd"))
    with pytest.raises(UnsupportedOpError, match=r"node 'odd' \(Sqrt2\), target arm"):
        generate(graph, target="arm")


@pytest.mark.parametrize("target", ["arm", "cortex-m4", "cortex-m55", "x86"])
def test_missing_toolchain_names_the_apt_command(monkeypatch, tmp_path, target):
    from edgeseq.export.c import export_c
    from edgeseq.targets import get_target

    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(ToolchainMissingError, match="sudo apt-get install -y") as e:
        get_target(target).check_toolchain()
    assert e.value.tool in ("aarch64-linux-gnu-gcc", "arm-none-eabi-gcc", "gcc")
    out = tmp_path / "art"
    with pytest.raises(ToolchainMissingError):
        export_c(zoo_graph("rnn"), out, target=target)
    assert not out.exists()


def test_missing_emulator_only(monkeypatch, tmp_path):
    """Compiler present, emulator missing: building works, running names qemu and its package."""
    import shutil

    from edgeseq.targets import get_target

    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("arm-none-eabi-gcc not installed")
    only = tmp_path / "bin"
    only.mkdir()
    os.symlink(shutil.which("arm-none-eabi-gcc"), only / "arm-none-eabi-gcc")
    monkeypatch.setenv("PATH", str(only))
    t = get_target("cortex-m4")
    assert "arm-none-eabi-gcc" in t.check_toolchain(run=False)
    with pytest.raises(ToolchainMissingError, match="qemu-system-arm") as e:
        t.check_toolchain(run=True)
    assert "apt-get install -y qemu-system-arm" in str(e.value)


def test_model_too_large_for_mcu_raises_resource_error():
    """Checked before any code is generated: a GRU with 3.1 M weights does not fit 4 MiB of flash."""
    from edgeseq.targets import get_target

    rng = np.random.default_rng(0)
    h = 700
    b = GraphBuilder(64)
    graph = b.build(
        b.add(
            O.GRU(
                w_ih=rng.standard_normal((3 * h, 64)).astype(np.float32),
                w_hh=rng.standard_normal((3 * h, h)).astype(np.float32),
            ),
            "x",
            "big",
        )
    )
    with pytest.raises(ResourceError, match=r"\d+ bytes of flash; cortex-m4 \(mps2-an386\) has 4194304") as e:
        get_target("cortex-m4").precheck_graph(graph)
    assert str(4 * graph.num_params()) in str(e.value)
    small = get_target("cortex-m55", ram_bytes=16 * 1024)
    info = generate(zoo_graph("gru"), target="cortex-m55").info
    with pytest.raises(ResourceError, match="RAM"):
        small.precheck(info)


# ---------------------------------------------------------------- fixed-point extension point


def test_fixed_point_emitters_plug_in(x86, tmp_path, monkeypatch):
    """A (test-only) int8 lowering registered per (kind, numeric) is picked by the numeric plan:
    int8 weights, int32 accumulation, 64-bit multiply-shift requantisation to an int8 value between
    nodes, a 256-entry tanh lookup table; its integer arenas join the static buffer plan. The C
    result equals a numpy emulation of the same integer arithmetic bit for bit."""
    from edgeseq.export.c import codegen as cg

    sx, sw, so = 4.0 / 127, 1.0 / 127, 2.0 / 127
    mult = sx * sw / so
    shift = 30
    m0 = int(round(mult * (1 << shift)))

    class LinearQ8(cg.Emitter):
        kind, numeric = "Linear", "q8demo"

        def temps(self, ctx):
            return {"xq": (ctx.n_in(), "int8_t"), "acc": (ctx.n_out(), "int32_t")}

        def out_ctype(self, ctx, i):
            return "int8_t"

        def step(self, ctx):
            o, n = ctx.op.weight.shape
            wq = ctx.const("wq", np.clip(np.round(ctx.op.weight / sw), -127, 127), ctype="int8_t")
            xq, acc = ctx.tmp("xq"), ctx.tmp("acc")
            return (
                f"for (int i = 0; i < {n}; ++i) {{ float v = {ctx.inp()}[i] * {c_float(1 / sx)};\n"
                f"    v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);\n"
                f"    {xq}[i] = (int8_t)(v >= 0.0f ? (int)(v + 0.5f) : -(int)(0.5f - v)); }}\n"
                f"for (int r = 0; r < {o}; ++r) {{ int32_t a = 0;\n"
                f"    for (int c = 0; c < {n}; ++c) a += (int32_t){wq}[r * {n} + c] * {xq}[c];\n"
                f"    {acc}[r] = a;\n"
                f"    int64_t q = ((int64_t)a * {m0} + ((int64_t)1 << {shift - 1})) >> {shift};\n"
                f"    {ctx.out()}[r] = (int8_t)(q > 127 ? 127 : (q < -128 ? -128 : q)); }}\n"
            )

    class TanhLUT(cg.Emitter):
        kind, numeric = "Activation", "q8demo"

        def step(self, ctx):
            lut = ctx.const("lut", np.tanh(np.arange(-128, 128) * so))
            return f"for (int i = 0; i < {ctx.n_in()}; ++i) {ctx.out()}[i] = {lut}[{ctx.inp()}[i] + 128];\n"

    monkeypatch.setitem(cg.EMITTERS, ("Linear", "q8demo"), LinearQ8())
    monkeypatch.setitem(cg.EMITTERS, ("Activation", "q8demo"), TanhLUT())
    rng = np.random.default_rng(0)
    w = rng.uniform(-1, 1, (5, 7))
    b = GraphBuilder(7)
    y = b.add(O.Activation(fn="tanh"), b.add(O.Linear(weight=w), "x", "fc"), "act")
    graph = b.build(y)
    src = generate(graph, numerics={"fc": "q8demo", "act": "q8demo"}, target="x86")
    header = src.files["model.h"]
    assert "int32_t scratch_i32[" in header and "int8_t scratch_i8[" in header
    assert "static const int8_t W_fc_wq[35]" in src.files["model.c"]
    binary = x86.build(src, tmp_path)
    assert "warning" not in x86.build_log
    x = rng.uniform(-4, 4, (2, 9, 7)).astype(np.float32)
    got = x86.run(binary, x).step
    # numpy emulation of the integer pipeline
    v = np.clip(x * np.float32(1 / sx), -127, 127).astype(np.float32)
    xq = np.where(v >= 0, np.floor(v + np.float32(0.5)), -np.floor(np.float32(0.5) - v)).astype(np.int64)
    wq = np.clip(np.round(w / sw), -127, 127).astype(np.int64)
    acc = xq @ wq.T
    q = np.clip((acc * m0 + (1 << (shift - 1))) >> shift, -128, 127)
    want = np.tanh(q * so).astype(np.float32)
    np.testing.assert_array_equal(got, want)
    (ref,), _ = edgeseq.ir.run(graph, x.astype(np.float64))
    assert np.max(np.abs(got - ref)) < 0.1  # int8 quantisation error, not a bug


# ---------------------------------------------------------------- artifacts on the host


def test_export_c_x86_artifact(x86, tmp_path):
    from edgeseq.errors import ArtifactError, ToleranceError
    from edgeseq.export.c import CArtifact, export_c
    from edgeseq.targets.driver import read_output

    graph = zoo_graph("lmu_dense")
    x = make_input(graph, 2, 24, seed=1)
    art = export_c(graph, tmp_path / "a", target="x86", golden_input=x)
    m = art.manifest
    assert m["golden"]["verification"]["max_abs_error"] <= TOL and m["target"]["name"] == "x86"
    assert m["state_spec"] == {k: list(v) for k, v in graph.state_spec().items()}
    loaded = CArtifact.load(tmp_path / "a")
    (y,), state = loaded.run(x, state=True)
    (ref,), ref_state = edgeseq.ir.run(graph, x.astype(np.float64))
    assert np.max(np.abs(y - ref)) <= TOL
    for k in ref_state:
        assert np.max(np.abs(state[k] - ref_state[k])) <= TOL * max(1, np.abs(ref_state[k]).max()), k
    assert loaded.run_golden()["max_abs_error"] <= TOL
    subprocess.run([str(art.path / "run.sh"), "run", "golden/input.bin", "out.bin"], cwd=art.path, check=True)
    assert np.allclose(read_output(art.path / "out.bin")["pooled"], ref, atol=TOL)
    cost = loaded.cost(x)
    assert cost["latency"]["per_inference_s"] > 0 and "instructions" not in cost
    # replace only with force; a failed export leaves nothing behind
    with pytest.raises(ArtifactError, match="already exists"):
        export_c(graph, tmp_path / "a", target="x86")
    export_c(graph, tmp_path / "a", target="x86", force=True)
    with pytest.raises(ToleranceError, match="differs from the reference"):
        export_c(graph, tmp_path / "b", target="x86", tolerance=0.0)
    assert not (tmp_path / "b").exists()
