"""GPU reference kernels (edgeseq.validate.gpu) against the float64 interpreter.

Every scan family (linear: minGRU, minLSTM, LMU memory; nonlinear: RNN, GRU, LSTM, LIF, CuBa-LIF;
plus the LMU / L2MU step loops) runs through ``reference_run`` with the plain-torch kernels and,
when triton is installed, with the Triton kernels in Triton's CPU interpreter (TRITON_INTERPRET=1
is set here before triton is imported when there is no CUDA device). Agreement: <= 1e-5 relative
(max abs error / max |reference|) for B in {1, 16} and T in {1, 100, 512} in float32. The
interpreter is slow per program and per op, so these graphs have tiny hidden sizes.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest
import torch

if not torch.cuda.is_available() and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the first import of triton

import edgeseq  # noqa: E402
from edgeseq.errors import ConfigError, ShapeError, ToolchainMissingError  # noqa: E402
from edgeseq.ir import GraphBuilder, NeuronParams  # noqa: E402
from edgeseq.ir import ops as O  # noqa: E402
from edgeseq.ir.interpret import run  # noqa: E402
from edgeseq.validate.gpu import ReferenceRunner, reference_run, resolve, status  # noqa: E402

from .zoo_cases import ZOO, build  # noqa: E402

REL = 1e-5
SIZES = [(b, t) for b in (1, 16) for t in (1, 100, 512)]
IN = 3


def _w(rng, rows, cols, gain=1.0):
    return rng.standard_normal((rows, cols)) * gain / np.sqrt(cols)


def family_graph(name: str, h: int = 4, seed: int = 0):
    """One small graph per scan family / variant: a projection in front, the scan, a readout head."""
    rng = np.random.default_rng(seed)
    b = lambda n: rng.standard_normal(n) * 0.2  # noqa: E731
    g = GraphBuilder(IN)
    x = "x"
    if name in ("rnn_tanh", "rnn_relu"):
        y = g.add(O.RNN(w_ih=_w(rng, h, IN), w_hh=_w(rng, h, h, 0.8), b_ih=b(h), b_hh=b(h), act=name[4:]), x)
    elif name in ("gru", "gru_cho"):
        y = g.add(
            O.GRU(
                w_ih=_w(rng, 3 * h, IN), w_hh=_w(rng, 3 * h, h), b_ih=b(3 * h), b_hh=b(3 * h), reset_after=name == "gru"
            ),
            x,
        )
    elif name == "lstm":
        y = g.add(O.LSTM(w_ih=_w(rng, 4 * h, IN), w_hh=_w(rng, 4 * h, h), b_ih=b(4 * h), b_hh=b(4 * h)), x)
    elif name in ("mingru", "mingru_identity"):
        y = g.add(
            O.MinGRU(
                w_z=_w(rng, h, IN),
                w_h=_w(rng, h, IN),
                b_z=b(h),
                b_h=b(h),
                candidate="identity" if name.endswith("identity") else "minrnn_g",
            ),
            x,
        )
    elif name == "minlstm":
        y = g.add(
            O.MinLSTM(w_f=_w(rng, h, IN), w_i=_w(rng, h, IN), w_h=_w(rng, h, IN), b_f=b(h), b_i=b(h), b_h=b(h)), x
        )
    elif name == "lmu_memory":  # memory only (the output is m_t)
        y = g.add(O.LMU(e_x=_w(rng, 2, IN), order=4, theta=30.0, b_u=b(2)), x)
    elif name == "lmu_hidden":  # memory scan + recurrent hidden cell
        y = g.add(
            O.LMU(
                e_x=_w(rng, 2, IN),
                order=4,
                theta=30.0,
                w_m=_w(rng, h, 8),
                w_x=_w(rng, h, IN),
                w_h=_w(rng, h, h, 0.5),
                b_h=b(h),
            ),
            x,
        )
    elif name == "lmu_m2m":  # memory-to-memory feedback: one dense transition matrix, euler
        y = g.add(
            O.LMU(
                e_x=_w(rng, 2, IN), order=4, theta=40.0, e_m=_w(rng, 2, 8, 0.02), w_m=_w(rng, h, 8), discretizer="euler"
            ),
            x,
        )
    elif name == "lmu_h2m":  # hidden-to-memory feedback: a nonlinear step loop
        y = g.add(
            O.LMU(
                e_x=_w(rng, 2, IN),
                order=4,
                theta=30.0,
                e_h=_w(rng, 2, h, 0.3),
                w_m=_w(rng, h, 8),
                w_h=_w(rng, h, h, 0.5),
            ),
            x,
        )
    elif name in ("lif", "lif_zero_121", "cubalif_a2a", "cubalif_total"):
        cur = g.add(O.Linear(weight=_w(rng, h, IN, 2.0), bias=b(h) + 0.3), x)
        syn = name.startswith("cubalif")
        neuron = NeuronParams(
            beta=rng.uniform(0.7, 0.95, h),
            threshold=rng.uniform(0.6, 1.2, h),
            alpha=rng.uniform(0.4, 0.9, h) if syn else None,
            reset={"lif": "subtract", "lif_zero_121": "zero", "cubalif_a2a": "subtract", "cubalif_total": "zero_total"}[
                name
            ],
            reset_delay=name != "lif_zero_121",
            spike_scale=rng.uniform(0.5, 1.5, h) if name == "lif_zero_121" else None,
        )
        rec = {
            "lif": {},
            "lif_zero_121": {"recurrence": "one_to_one", "v_rec": rng.uniform(-0.5, 0.5, h)},
            "cubalif_a2a": {"recurrence": "all_to_all", "w_rec": _w(rng, h, h, 0.5), "b_rec": b(h)},
            "cubalif_total": {"recurrence": "all_to_all", "w_rec": _w(rng, h, h, 0.5)},
        }[name]
        cls = O.CuBaLIF if syn else O.LIF
        y = g.add(cls(neuron=neuron, emit="both", **rec), cur)
        spk, mem = y
        r = g.add(O.Readout(mode="sum"), spk)
        return g.build([spk, mem, r])
    elif name in ("leaky_cubalif", "leaky_subtract", "leaky_cubali"):  # NIR neurons (frontends.nir)
        cur = g.add(O.Linear(weight=_w(rng, h, IN, 2.0), bias=b(h) + 0.3), x)
        spiking = name != "leaky_cubali"
        y = g.add(
            O.LeakyNeuron(
                decay=rng.uniform(0.7, 0.99, h),
                gain=rng.uniform(0.5, 1.5, h),
                bias=b(h) * 0.1,
                syn_decay=None if name == "leaky_subtract" else rng.uniform(0.4, 0.9, h),
                threshold=rng.uniform(0.6, 1.2, h) if spiking else None,
                v_reset=b(h) if name == "leaky_cubalif" else None,
                reset="subtract" if name == "leaky_subtract" else "zero",
                emit="both" if spiking else "membrane",
            ),
            cur,
        )
        if spiking:
            return g.build(list(y) + [g.add(O.Readout(mode="sum"), y[0])])
    else:  # pragma: no cover
        raise KeyError(name)
    r = g.add(O.Readout(mode="mean"), y)
    head = g.add(O.Linear(weight=_w(rng, 3, h if name != "lmu_memory" else 8), bias=b(3)), r)
    return g.build([y, head])


LINEAR = ["mingru", "mingru_identity", "minlstm", "lmu_memory", "lmu_hidden", "lmu_m2m", "leaky_cubali"]
NONLINEAR = [
    "rnn_tanh",
    "rnn_relu",
    "gru",
    "gru_cho",
    "lstm",
    "lif",
    "lif_zero_121",
    "cubalif_a2a",
    "cubalif_total",
    "leaky_cubalif",
    "leaky_subtract",
]
FAMILIES = LINEAR + NONLINEAR + ["lmu_h2m"]


def _rel_errors(got, want):
    out = []
    for a, b in zip(got, want):
        scale = max(float(np.max(np.abs(b))), 1e-12)
        out.append(float(np.max(np.abs(np.asarray(a, np.float64) - b))) / scale)
    return out


def _check(graph, x, kernels, dtype, tol):
    want, wst = run(graph, x)
    got, gst = reference_run(graph, x, device="cpu", dtype=dtype, kernels=kernels)
    assert [a.shape for a in got] == [b.shape for b in want]
    errs = _rel_errors(got, want)
    assert max(errs) <= tol, (errs, graph)
    assert set(gst) == set(wst)
    st = _rel_errors([gst[k] for k in wst], [wst[k] for k in wst])
    assert max(st, default=0.0) <= tol, st
    for a, b, t in zip(got, want, graph.output_types):
        if t.spikes:  # identical firing (graded amplitudes are within the tolerance above)
            assert np.array_equal(a != 0, b != 0), "spike trains differ"


# ----------------------------------------------------------------------------------------------- torch


@pytest.mark.parametrize("family", FAMILIES)
def test_torch_kernels_match_interpreter(family):
    g = family_graph(family)
    rng = np.random.default_rng(7)
    for bsz, steps in SIZES:
        x = rng.standard_normal((bsz, steps, IN))
        _check(g, x, "torch", "float32", REL)
        _check(g, x, "torch", "float64", 1e-10)


@pytest.mark.parametrize("case", sorted(ZOO))
def test_torch_reference_runs_every_zoo_model(case):
    g = edgeseq.capture(build(case), torch.randn(1, 8, 6))
    x = np.random.default_rng(3).standard_normal((3, 60, 6))
    _check(g, x, "torch", "float64", 1e-10)
    _check(g, x, "torch", "float32", 1e-4 if case == "lmu_full" else REL)  # lmu_full: unstable euler memory


def test_plan_names_the_kernel_of_every_node():
    def plan_of(family):
        g = family_graph(family)
        plan = ReferenceRunner(g, device="cpu", kernels="torch").plan
        assert set(plan) == {n.name for n in g.nodes}
        return plan[g.nodes[0].name]

    assert "parallel doubling scan" in plan_of("lmu_hidden")
    assert "fused recurrent hidden cell" in plan_of("lmu_hidden")
    assert "associative scan" in plan_of("mingru")
    assert "step loop" in plan_of("lmu_h2m")
    assert "fused per-step GRU" in plan_of("gru")


def test_streaming_state_in_chunks_equals_whole_sequence():
    g = family_graph("cubalif_a2a")
    x = np.random.default_rng(1).standard_normal((2, 90, IN))
    whole, st_w = reference_run(g, x, device="cpu", dtype="float64")
    first, st = reference_run(g, x[:, :37], device="cpu", dtype="float64")
    second, st2 = reference_run(g, x[:, 37:], st, device="cpu", dtype="float64")
    np.testing.assert_allclose(np.concatenate([first[0], second[0]], 1), whole[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(second[2], whole[2], rtol=0, atol=1e-12)  # the readout carries its sum
    for k in st_w:
        np.testing.assert_allclose(st2[k], st_w[k], rtol=0, atol=1e-12)


def test_typed_errors():
    g = family_graph("gru")
    with pytest.raises(ConfigError, match="unknown device"):
        reference_run(g, np.zeros((1, 2, IN)), device="tpu")
    with pytest.raises(ConfigError, match="float32 or float64"):
        reference_run(g, np.zeros((1, 2, IN)), dtype="int8")
    with pytest.raises(ConfigError, match="unknown kernel set"):
        reference_run(g, np.zeros((1, 2, IN)), kernels="cuda")
    with pytest.raises(ShapeError, match="features"):
        reference_run(g, np.zeros((1, 2, IN + 1)), device="cpu")
    with pytest.raises(ConfigError, match="needs an edgeseq IR Graph"):
        reference_run("model.esq", np.zeros((1, 2, IN)))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            reference_run(g, np.zeros((1, 2, IN)), device="cuda")
        dev, mod = resolve("auto", "auto")
        assert dev.type == "cpu" and mod.NAME == "torch"
    info = status()
    assert {"cuda", "triton"} <= set(info)


# ------------------------------------------------------------------------------------- triton (interpreter)


def _need_triton_here():
    if importlib.util.find_spec("triton") is None:
        with pytest.raises(ToolchainMissingError, match="pip install"):
            resolve("cpu", "triton")
        pytest.skip(
            "triton is not installed: pip install 'edgeseq[gpu]' (or pip install triton) to test the "
            "Triton kernels (in Triton's CPU interpreter without a GPU)"
        )
    from edgeseq.validate.gpu import triton_kernels

    if not torch.cuda.is_available() and not triton_kernels.interpreting():
        pytest.skip(
            "triton was imported before TRITON_INTERPRET=1 could be set; run this file alone "
            "(TRITON_INTERPRET=1 pytest tests/unit/test_gpu_reference.py)"
        )
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("family", LINEAR + NONLINEAR)
def test_triton_kernels_match_interpreter(family):
    device = _need_triton_here()
    g = family_graph(family, h=3)
    rng = np.random.default_rng(11)
    runner = ReferenceRunner(g, device=device, dtype="float32", kernels="triton")
    assert runner.kernels == "triton"
    for bsz, steps in SIZES:
        x = rng.standard_normal((bsz, steps, IN))
        want, wst = run(g, x)
        got, gst = runner.run(x)
        errs = _rel_errors(got, want) + _rel_errors([gst[k] for k in wst], [wst[k] for k in wst])
        assert max(errs) <= REL, (family, bsz, steps, errs)
        for a, b, t in zip(got, want, g.output_types):
            if t.spikes:
                assert np.array_equal(a != 0, b != 0), (family, bsz, steps)


@pytest.mark.parametrize("family", ["gru", "lstm", "minlstm", "lmu_m2m", "cubalif_a2a"])
def test_triton_kernels_float64(family):
    device = _need_triton_here()
    g = family_graph(family, h=3)
    x = np.random.default_rng(5).standard_normal((16, 40, IN))
    want, _ = run(g, x)
    got, _ = ReferenceRunner(g, device=device, dtype="float64", kernels="triton").run(x)
    assert max(_rel_errors(got, want)) <= 1e-12
