"""NIR import and export: every supported node against NIR's own equations (a small simulator written
here from the NIR definitions), graphs written by snntorch's export_to_nir and Rockpool's to_nir against
those frameworks' own runs, round trips, the analytic LIF, and bad files (one line naming the node)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

nir = pytest.importorskip("nir")

import edgeseq  # noqa: E402
from edgeseq.errors import ConfigError, EdgeseqError, IRFormatError, UnsupportedOpError  # noqa: E402
from edgeseq.frontends.nir import NirOptions, load_nir  # noqa: E402
from edgeseq.ir.interpret import run  # noqa: E402

SHAPES = ((1, 23), (3, 50))  # (batch, steps)
R = np.random.default_rng(7)


def f32(*shape, lo=-1.0, hi=1.0):
    return R.uniform(lo, hi, shape).astype(np.float32)


def spikes(batch, steps, n, rate=0.3, seed=0):
    return (np.random.default_rng(seed).random((batch, steps, n)) < rate).astype(np.float64)


# ----------------------------------------------------------------------------------------------
# an independent NIR simulator (feed-forward graphs), written from the node definitions


def P(a):
    return np.asarray(a, dtype=np.float64)


def _coeff(tau, dt, method):
    tau = P(tau)
    if method == "euler":
        return 1 - dt / tau, dt / tau
    d = np.exp(-dt / tau)
    return d, 1 - d


def simulate(graph, x, dt, method):
    """Run a feed-forward nir.NIRGraph on x (B, T, F), per NIR's equations discretised by ``method``."""
    order, done = [], set()
    preds = {k: [s for s, d in graph.edges if d == k] for k in graph.nodes}
    while len(order) < len(graph.nodes):
        for k in graph.nodes:
            if k not in done and all(p in done for p in preds[k]):
                order.append(k)
                done.add(k)
    B, T, _ = x.shape
    state: dict = {}
    outs = []
    for t in range(T):
        val = {}
        for k in order:
            node = graph.nodes[k]
            kind = type(node).__name__
            inp = x[:, t] if kind == "Input" else sum(val[p] for p in preds[k])
            st = state.setdefault(k, {})
            if kind in ("Input", "Output", "Flatten"):
                y = inp.reshape(B, -1)
            elif kind == "Affine":
                y = inp @ node.weight.T.astype(np.float64) + node.bias
            elif kind == "Linear":
                y = inp @ node.weight.T.astype(np.float64)
            elif kind == "Scale":
                y = inp * node.scale
            elif kind == "Threshold":
                y = (inp > node.threshold).astype(np.float64)
            elif kind == "Delay":
                hist = st.setdefault("h", [])
                hist.append(inp)
                d = np.rint(node.delay / dt).astype(int)
                y = np.stack(
                    [hist[-1 - d[i]][:, i] if len(hist) > d[i] else np.zeros(B) for i in range(inp.shape[1])], 1
                )
            elif kind in ("Conv1d", "Conv2d", "SumPool2d", "AvgPool2d"):
                import torch
                import torch.nn.functional as F

                shape = tuple(int(v) for v in node.input_type["input"])
                xin = torch.as_tensor(inp.reshape((B,) + shape))
                if kind.startswith("Conv"):
                    conv = F.conv2d if kind == "Conv2d" else F.conv1d
                    y = conv(
                        xin,
                        torch.as_tensor(node.weight, dtype=torch.float64),
                        torch.as_tensor(node.bias, dtype=torch.float64),
                        stride=tuple(np.atleast_1d(node.stride)),
                        padding=tuple(np.atleast_1d(node.padding)),
                    ).numpy()
                else:
                    ks = tuple(int(v) for v in node.kernel_size)
                    y = F.avg_pool2d(xin, ks, tuple(int(v) for v in node.stride)).numpy()
                    y = y * (np.prod(ks) if kind == "SumPool2d" else 1)
            else:  # neurons
                v = st.get("v", np.zeros_like(inp))
                cur = inp
                if kind in ("CubaLI", "CubaLIF"):
                    sd, sa = _coeff(P(node.tau_syn), dt, method)
                    st["i"] = cur = sd * st.get("i", np.zeros_like(inp)) + sa * P(node.w_in) * inp
                if kind in ("I", "IF"):
                    v = v + dt * P(node.r) * cur
                else:
                    tau = P(node.tau) if kind in ("LI", "LIF") else P(node.tau_mem)
                    d, a = _coeff(tau, dt, method)
                    v = d * v + a * (P(node.v_leak) + P(node.r) * cur)
                if kind in ("IF", "LIF", "CubaLIF"):
                    z = (v > P(node.v_threshold)).astype(np.float64)
                    v = np.where(z > 0, P(node.v_reset), v)
                    y = z
                else:
                    y = v
                st["v"] = v
            val[k] = np.asarray(y, dtype=np.float64).reshape(B, -1)
        outs.append(val["output"])
    return np.stack(outs, 1)


def _n(k, lo=0.5, hi=1.5):
    return R.uniform(lo, hi, k).astype(np.float32)


def neuron_node(kind, n):
    tau, r, vl, th = _n(n, 2e-3, 2e-2), _n(n), R.uniform(-0.1, 0.2, n).astype(np.float32), _n(n, 0.5, 1.0)
    vr = R.uniform(-0.2, 0.1, n).astype(np.float32)
    return {
        "I": lambda: nir.I(r=r),
        "IF": lambda: nir.IF(r=r * 300, v_threshold=th, v_reset=vr),
        "LI": lambda: nir.LI(tau=tau, r=r, v_leak=vl),
        "LIF": lambda: nir.LIF(tau=tau, r=r, v_leak=vl, v_threshold=th, v_reset=vr),
        "CubaLI": lambda: nir.CubaLI(tau_syn=_n(n, 1e-3, 5e-3), tau_mem=tau, r=r, v_leak=vl, w_in=_n(n)),
        "CubaLIF": lambda: nir.CubaLIF(
            tau_syn=_n(n, 1e-3, 5e-3), tau_mem=tau, r=r, v_leak=vl, v_threshold=th, v_reset=vr, w_in=_n(n)
        ),
    }[kind]()


def chain(*nodes, n_in):
    named = {"input": nir.Input(input_type={"input": np.array([n_in])})}
    names = ["input"]
    for i, node in enumerate(nodes):
        named[f"n{i}"] = node
        names.append(f"n{i}")
    out = nodes[-1].output_type["output"] if hasattr(nodes[-1], "output_type") else None
    named["output"] = nir.Output(output_type={"output": np.asarray(out)})
    names.append("output")
    return nir.NIRGraph(nodes=named, edges=list(zip(names, names[1:])), type_check=False)


CASES = {
    "Affine": lambda: chain(nir.Affine(weight=f32(4, 3), bias=f32(4)), n_in=3),
    "Linear": lambda: chain(nir.Linear(weight=f32(5, 3)), n_in=3),
    "Scale": lambda: chain(nir.Scale(scale=f32(3)), n_in=3),
    "Threshold": lambda: chain(
        nir.Affine(weight=f32(4, 3), bias=f32(4)), nir.Threshold(threshold=f32(4, lo=0, hi=0.5)), n_in=3
    ),
    "Delay": lambda: chain(nir.Delay(delay=np.array([0.0, 1e-3, 3e-3], np.float32)), n_in=3),
    "Conv2d+Flatten": lambda: chain(
        nir.Conv2d(input_shape=(5, 4), weight=f32(2, 1, 3, 3), stride=1, padding=1, dilation=1, groups=1, bias=f32(2)),
        nir.Flatten(start_dim=0, end_dim=-1, input_type={"input": np.array([2, 5, 4])}),
        nir.Affine(weight=f32(3, 40), bias=f32(3)),
        n_in=20,
    ),
    "Conv1d": lambda: chain(
        nir.Conv1d(input_shape=6, weight=f32(3, 2, 3), stride=1, padding=1, dilation=1, groups=1, bias=f32(3)),
        nir.Flatten(start_dim=0, end_dim=-1, input_type={"input": np.array([3, 6])}),
        n_in=12,
    ),
    "SumPool2d": lambda: chain(
        nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])), n_in=16
    ),
    "AvgPool2d": lambda: chain(
        nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])), n_in=16
    ),
    **{
        k: (lambda k=k: chain(nir.Affine(weight=f32(4, 3), bias=f32(4)), neuron_node(k, 4), n_in=3))
        for k in ("I", "IF", "LI", "LIF", "CubaLI", "CubaLIF")
    },
}


@pytest.mark.parametrize("method", ["euler", "exact"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_node_matches_nir_equations(case, method):
    g = CASES[case]()
    per_step = {"Conv2d+Flatten": [1, 5, 4], "Conv1d": [2, 6], "SumPool2d": [1, 4, 4], "AvgPool2d": [1, 4, 4]}
    if case in per_step:  # NIR's per-step shape of an image / a 1-D signal
        g.nodes["input"] = nir.Input(input_type={"input": np.array(per_step[case])})
        g.nodes["n0"].input_type = {"input": np.array(per_step[case])}
    dt = 1e-3
    graph = load_nir(g, dt=dt, method=method, semantics="nir")
    assert graph.metadata["nir"] == {**graph.metadata["nir"], "dt": dt, "method": method, "semantics": "nir"}
    for batch, steps in SHAPES:
        x = spikes(batch, steps, graph.in_features, seed=steps) * 1.7
        want = simulate(g, x, dt, method)
        got = run(graph, x)[0][0]
        if graph.output_types[0].spikes:
            assert np.array_equal(got, want), f"{np.sum(got != want)} spikes differ"
        else:
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_single_lif_matches_the_analytic_solution():
    """tau dv/dt = -v + r I with constant I, dt = 1e-4: v(t) = r I (1 - exp(-t/tau)) exactly at every step
    (exact discretisation), within O(dt) with forward Euler; spikes at t* = -tau ln(1 - thr / (r I)),
    every t* after a reset to 0."""
    tau, r, current, thr, dt, T = 0.02, 2.0, 1.0, 1.5, 1e-4, 1200
    lif = nir.LIF(
        tau=np.array([tau]), r=np.array([r]), v_leak=np.zeros(1), v_threshold=np.array([thr]), v_reset=np.zeros(1)
    )
    li = nir.LI(tau=np.array([tau]), r=np.array([r]), v_leak=np.zeros(1))
    x = np.full((1, T, 1), current)
    t = dt * np.arange(1, T + 1)
    v_true = r * current * (1 - np.exp(-t / tau))
    v_exact = run(load_nir(chain(li, n_in=1), dt=dt, method="exact"), x)[0][0][0, :, 0]
    np.testing.assert_allclose(v_exact, v_true, rtol=1e-10, atol=1e-12)
    v_euler = run(load_nir(chain(li, n_in=1), dt=dt, method="euler"), x)[0][0][0, :, 0]
    assert np.max(np.abs(v_euler - v_true)) < 2 * dt / tau * r * current  # first order in dt / tau
    t_star = -tau * np.log(1 - thr / (r * current))  # 27.7 ms
    z = run(load_nir(chain(lif, n_in=1), dt=dt, method="exact"), x)[0][0][0, :, 0]
    steps = np.flatnonzero(z) + 1  # 1-based step numbers of the spikes
    want = np.ceil(t_star / dt) * np.arange(1, len(steps) + 1)  # the first step past t*, then every period
    assert len(steps) == int(T * dt / (np.ceil(t_star / dt) * dt)) and np.array_equal(steps, want)


# ----------------------------------------------------------------------------------------------
# real producers


def _snntorch_net(reset, recurrent, synaptic, seed=0, one_threshold=False):
    import snntorch as snn
    import torch

    torch.manual_seed(seed)
    thr = torch.full((6,), 0.8) if one_threshold else torch.rand(6) * 0.5 + 0.5
    lay = [
        torch.nn.Linear(3, 6),
        snn.Leaky(beta=torch.rand(6) * 0.5 + 0.45, threshold=thr, init_hidden=True, reset_mechanism=reset),
    ]
    if recurrent:
        lay += [
            torch.nn.Linear(6, 5),
            snn.RLeaky(
                beta=torch.rand(5) * 0.5 + 0.45,
                threshold=torch.ones(5),
                linear_features=5,
                init_hidden=True,
                reset_mechanism=reset,
            ),
        ]
    if synaptic:
        lay += [
            torch.nn.Linear(lay[-2].out_features, 2),
            snn.Synaptic(
                alpha=torch.rand(2) * 0.5 + 0.3,
                beta=torch.rand(2) * 0.5 + 0.45,
                threshold=torch.ones(2),
                init_hidden=True,
                reset_mechanism=reset,
            ),
        ]
    with torch.no_grad():  # drive the last layer to spike
        lay[-2].weight.abs_().mul_(2.0)
    return torch.nn.Sequential(*lay)


@pytest.mark.parametrize(
    "reset,recurrent,synaptic", [("zero", False, False), ("zero", True, True), ("subtract", True, True)]
)
def test_snntorch_export_to_nir_is_spike_identical(tmp_path, reset, recurrent, synaptic):
    """snntorch's export writes v_reset = 0 whatever the model's reset: a subtract-reset model is read
    back with reset='subtract' (the one fact the file lost)."""
    import torch
    from snntorch.export_nir import export_to_nir

    from edgeseq.frontends import torch_forward

    net = _snntorch_net(reset, recurrent, synaptic)
    nir.write(tmp_path / "snn.nir", export_to_nir(net, torch.zeros(1, 3), ignore_dims=[0]))
    graph = edgeseq.capture(str(tmp_path / "snn.nir"), nir=NirOptions(reset=None if reset == "zero" else reset))
    assert graph.metadata["nir"]["semantics"] == "snntorch" and graph.metadata["nir"]["dt"] == 1e-4
    for batch, steps in SHAPES:
        x = torch.as_tensor(spikes(batch, steps, 3, rate=0.5, seed=steps) * 2.0, dtype=torch.float32)
        want = torch_forward(net, x)[0]
        got = run(graph, x.double().numpy())[0][0]
        assert want.sum() > 0 and np.array_equal(got, want)


def test_edgeseq_to_nir_to_snntorch_import(tmp_path):
    """edgeseq -> NIR -> snntorch's import_from_nir gives the same spikes where that importer is not lossy:
    it builds every neuron with reset 'zero' and reset_delay=False, one threshold per layer, r = tau/dt at
    dt = 1e-4 -- which is NIR's own reset at the spike step, so a NIR-semantics graph (Leaky and
    CubaLIF populations, Euler, dt = 1e-4) comes back exactly. (snntorch's default Synaptic / RLeaky,
    with the reset one step late, and any subtract reset, do not.)"""
    import torch
    from snntorch import utils
    from snntorch.export_nir import export_to_nir
    from snntorch.import_nir import import_from_nir

    net = _snntorch_net("zero", False, True, seed=3, one_threshold=True)
    nir.write(tmp_path / "snn.nir", export_to_nir(net, torch.zeros(1, 3), ignore_dims=[0]))
    graph = edgeseq.capture(str(tmp_path / "snn.nir"), nir=NirOptions(semantics="nir"))
    assert {n.op.kind for n in graph.nodes} == {"Linear", "LeakyNeuron"}
    edgeseq.export(graph, target="nir", out=tmp_path / "art")
    back = import_from_nir(nir.read(tmp_path / "art" / "model.nir"))
    for batch, steps in SHAPES:
        x = torch.as_tensor(spikes(batch, steps, 3, rate=0.5, seed=steps) * 2.0, dtype=torch.float32)
        want = run(graph, x.double().numpy())[0][0]
        utils.reset(back)
        state, outs = None, []
        with torch.no_grad():
            for t in range(steps):
                y, state = back(x[:, t], state)
                outs.append(y)
        got = torch.stack(outs, 1).double().numpy()
        assert want.sum() > 0 and np.array_equal(got, want)


def test_rockpool_to_nir_is_spike_identical(tmp_path):
    """Rockpool's to_nir writes r = tau exp(-dt/tau) / dt: edgeseq recovers dt and reads LIFTorch's own
    dynamics (exact decays, subtractive reset)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("rockpool")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from rockpool.nn.combinators import Sequential
        from rockpool.nn.modules import LIFTorch, LinearTorch
        from rockpool.nn.modules.torch.nir import to_nir

        torch.manual_seed(0)
        net = Sequential(
            LinearTorch((3, 5)),
            LIFTorch(5, tau_mem=0.02, tau_syn=0.008, dt=1e-3, threshold=1.0, max_spikes_per_dt=1),
            LinearTorch((5, 2)),
            LIFTorch(2, tau_mem=0.03, tau_syn=0.01, dt=1e-3, max_spikes_per_dt=1),
        )
        nir.write(tmp_path / "rp.nir", to_nir(net, torch.zeros(1, 3)))
        graph = edgeseq.capture(str(tmp_path / "rp.nir"))
        assert graph.metadata["nir"]["semantics"] == "rockpool" and graph.metadata["nir"]["dt"] == 1e-3
        for batch, steps in SHAPES:
            x = torch.as_tensor(spikes(batch, steps, 3, rate=0.5, seed=steps) * 2.0, dtype=torch.float32)
            net.reset_state()
            want, _, _ = net(x)
            got = run(graph, x.double().numpy())[0][0]
            assert want.sum() > 0 and np.array_equal(got, want.detach().double().numpy())


def test_recurrent_and_nested_graph_under_nir_semantics(tmp_path):
    """A nested NIRGraph holding a recurrent CubaLIF (the RSynaptic shape) becomes one scan; the
    recurrent edge carries the previous step's spikes."""
    n = 4
    W, Wr = f32(n, 3), f32(n, n) * 0.8
    cuba = neuron_node("CubaLIF", n)
    inner = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([n])}),
            "lif": cuba,
            "rec": nir.Linear(weight=Wr),
            "output": nir.Output(output_type={"output": np.array([n])}),
        },
        edges=[("input", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")],
        type_check=False,
    )
    g = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([3])}),
            "fc": nir.Linear(weight=W),
            "rsyn": inner,
            "output": nir.Output(output_type={"output": np.array([n])}),
        },
        edges=[("input", "fc"), ("fc", "rsyn"), ("rsyn", "output")],
        type_check=False,
    )
    dt = 1e-3
    graph = load_nir(g, dt=dt, method="exact")
    assert [nd.op.kind for nd in graph.nodes] == ["Linear", "Scan"]
    for batch, steps in SHAPES:
        x = spikes(batch, steps, 3, rate=0.5, seed=steps) * 3
        i, v, z, outs = np.zeros((batch, n)), np.zeros((batch, n)), np.zeros((batch, n)), []
        sd, sa = _coeff(cuba.tau_syn, dt, "exact")
        md, ma = _coeff(cuba.tau_mem, dt, "exact")
        for t in range(steps):
            cur = x[:, t] @ W.T.astype(np.float64) + z @ Wr.T.astype(np.float64)
            i = sd * i + sa * cuba.w_in * cur
            v = md * v + ma * (cuba.v_leak + cuba.r * i)
            z = (v > cuba.v_threshold).astype(np.float64)
            v = np.where(z > 0, cuba.v_reset, v)
            outs.append(z)
        assert np.array_equal(run(graph, x)[0][0], np.stack(outs, 1))
    # and back to NIR: the cycle is written as its nodes again (checked spike for spike by the export)
    art = edgeseq.export(graph, target="nir", out=tmp_path / "art")
    assert art.manifest["round_trip"]["spikes_compared"] > 0
    written = nir.read(tmp_path / "art" / "model.nir")
    assert sorted(type(v).__name__ for v in written.nodes.values()) == [
        "CubaLIF",
        "Input",
        "Linear",
        "Linear",
        "Output",
    ]


# ----------------------------------------------------------------------------------------------
# export and round trips


def _leaky_graph(**kw):
    from edgeseq.ir import ops as O
    from edgeseq.ir.graph import GraphBuilder

    b = GraphBuilder(3)
    h = b.add(O.Linear(weight=f32(5, 3) * 2, bias=f32(5) * 0.2), "x", "fc")
    h = b.add(O.LeakyNeuron(**kw), h, "pop")
    y = b.add(O.Linear(weight=f32(2, 5)), h, "out_fc")
    y = b.add(O.LeakyNeuron(decay=np.full(2, 0.9), threshold=np.full(2, 0.7)), y, "out")
    return b.build(y, {})


ROUND_TRIPS = {
    "lif_zero_vreset": dict(
        decay=_n(5, 0.6, 0.95), gain=_n(5), bias=_n(5, 0, 0.1), threshold=_n(5, 0.5, 1.0), v_reset=_n(5, -0.2, 0.0)
    ),
    "lif_subtract": dict(decay=_n(5, 0.6, 0.95), threshold=_n(5, 0.5, 1.0), reset="subtract"),
    "cubalif": dict(decay=_n(5, 0.6, 0.95), syn_decay=_n(5, 0.3, 0.8), syn_gain=_n(5), threshold=_n(5, 0.5, 1.0)),
    "if": dict(decay=np.ones(5), gain=_n(5), threshold=_n(5, 0.5, 1.0)),
    "li": dict(decay=_n(5, 0.6, 0.95), gain=_n(5), emit="membrane"),
}


@pytest.mark.parametrize("method", ["euler", "exact"])
@pytest.mark.parametrize("case", sorted(ROUND_TRIPS))
def test_edgeseq_graph_round_trips_through_nir(tmp_path, case, method):
    graph = _leaky_graph(**ROUND_TRIPS[case])
    art = edgeseq.export(graph, target="nir", out=tmp_path / "art", target_options={"dt": 5e-4, "method": method})
    assert art.manifest["round_trip"]["spikes_compared"] > 0 and art.manifest["method"] == method
    back = edgeseq.capture(str(tmp_path / "art" / "model.nir"))
    pop = back.node("pop").op
    for field in ("decay", "gain", "bias", "syn_decay", "syn_gain", "threshold", "v_reset"):
        a, b = getattr(graph.node("pop").op, field), getattr(pop, field)
        assert (a is None) == (b is None) or np.allclose(a if a is not None else 1.0, b if b is not None else 1.0)
        if a is not None and b is not None:
            np.testing.assert_allclose(np.broadcast_to(b, (5,)), np.broadcast_to(a, (5,)), rtol=2e-6)
    assert pop.reset == graph.node("pop").op.reset
    for batch, steps in SHAPES:
        x = spikes(batch, steps, 3, rate=0.4, seed=steps) * 2
        assert np.array_equal(run(back, x)[0][0], run(graph, x)[0][0])


def test_snntorch_captured_graph_round_trips(tmp_path):
    import torch

    net = _snntorch_net("subtract", True, True, seed=5)
    graph = edgeseq.capture(net, torch.zeros(1, 8, 3))
    art = edgeseq.export(graph, target="nir", out=tmp_path / "art")
    assert art.manifest["semantics"] == "snntorch" and art.manifest["round_trip"]["spikes_compared"] > 0
    back = edgeseq.capture(str(tmp_path / "art" / "model.nir"))
    assert [n.op.kind for n in back.nodes] == [n.op.kind for n in graph.nodes]


def test_non_spiking_parts_do_not_export(tmp_path):
    from edgeseq.ir import ops as O
    from edgeseq.ir.graph import GraphBuilder

    b = GraphBuilder(3)
    h = b.add(O.GRU(w_ih=f32(12, 3), w_hh=f32(12, 4)), "x", "gru")
    with pytest.raises(UnsupportedOpError, match="node 'gru'.*GRU has no NIR equivalent"):
        edgeseq.export(b.build(h, {}), target="nir", out=tmp_path / "a")
    assert not (tmp_path / "a").exists()


# ----------------------------------------------------------------------------------------------
# bad files


def _write(path, graph):
    nir.write(str(path), graph)
    return path


def _good():
    return chain(nir.Affine(weight=f32(4, 3), bias=f32(4)), neuron_node("LIF", 4), n_in=3)


def _bad_cases(tmp_path):
    import h5py

    cases = {}
    p = tmp_path / "text.nir"
    p.write_text("not hdf5 at all")
    cases["text"] = (p, IRFormatError, "no HDF5 signature")
    good = _write(tmp_path / "good.nir", _good())
    p = tmp_path / "truncated.nir"
    p.write_bytes(good.read_bytes()[:700])
    cases["truncated"] = (p, IRFormatError, "damaged NIR file")
    p = _write(tmp_path / "unknown.nir", _good())
    with h5py.File(p, "r+") as f:
        del f["node/nodes/n1/type"]
        f["node/nodes/n1/type"] = "Spiral"
    cases["unknown"] = (p, UnsupportedOpError, r":n1: NIR node type 'Spiral' is not supported")
    p = _write(tmp_path / "missing.nir", _good())
    with h5py.File(p, "r+") as f:
        del f["node/nodes/n1/tau"]
    cases["missing"] = (p, IRFormatError, ":n1: LIF node lacks tau")
    p = _write(tmp_path / "shapes.nir", chain(nir.Affine(weight=f32(4, 3), bias=f32(4)), neuron_node("LIF", 6), n_in=3))
    cases["shapes"] = (p, EdgeseqError, ":n1: .*6 values for 4 neurons")
    loop = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([3])}),
            "a": nir.Linear(weight=f32(3, 3)),
            "b": nir.Linear(weight=f32(3, 3)),
            "output": nir.Output(output_type={"output": np.array([3])}),
        },
        edges=[("input", "a"), ("a", "b"), ("b", "a"), ("b", "output")],
        type_check=False,
    )
    cases["stateless cycle"] = (_write(tmp_path / "loop.nir", loop), ConfigError, ":a, b: a cycle without a neuron")
    p = _write(tmp_path / "nan.nir", _good())
    with h5py.File(p, "r+") as f:
        f["node/nodes/n0/bias"][0] = np.nan
    cases["nan"] = (p, IRFormatError, ":n0: parameter 'bias' holds NaN")
    p = _write(tmp_path / "external.nir", _good())
    with h5py.File(p, "r+") as f:
        del f["node/nodes/n0/weight"]
        f["node/nodes/n0/weight"] = h5py.ExternalLink("/etc/passwd", "/x")
    cases["external link"] = (p, IRFormatError, "points outside the file")
    p = _write(tmp_path / "bomb.nir", _good())
    with h5py.File(p, "r+") as f:  # 2 GiB of zeros declared, a few KiB on disk
        del f["node/nodes/n0/weight"]
        f.create_dataset(
            "node/nodes/n0/weight", shape=(1 << 14, 1 << 14), dtype="f8", compression="gzip", chunks=(1024, 1024)
        )
    cases["compression bomb"] = (p, EdgeseqError, "n0/weight")
    p = _write(tmp_path / "edge.nir", _good())
    with h5py.File(p, "r+") as f:
        e = f["node/edges"][()]
        del f["node/edges"]
        e[0, 1] = b"ghost"
        f["node/edges"] = e
    cases["edge"] = (p, IRFormatError, "unknown node 'ghost'")
    return cases


def test_edgeseq_load_reads_nir(tmp_path):
    g = edgeseq.load(_write(tmp_path / "m.nir", _good()))
    assert [n.op.kind for n in g.nodes] == ["Linear", "LeakyNeuron"] and g.metadata["nir"]["semantics"] == "nir"


def test_bad_files_raise_one_line_naming_the_node(tmp_path):
    for name, (path, err, pattern) in _bad_cases(tmp_path).items():
        with pytest.raises(err, match=pattern) as info:
            load_nir(path)
        assert "\n" not in str(info.value), name
        assert str(path) in str(info.value), name


def test_bad_file_on_the_command_line(tmp_path, capsys):
    from edgeseq.cli import main

    cases = _bad_cases(tmp_path)
    for name in ("text", "unknown", "missing", "shapes", "stateless cycle", "external link"):
        path = cases[name][0]
        rc = main(["info", str(path)])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and "internal error" not in err and "Traceback" not in err, err
        assert len(err.splitlines()) == 1 and err.startswith("edgeseq: error: ") and str(path) in err, err
    # and through the installed entry point once, as a user runs it
    p = subprocess.run(
        [sys.executable, "-m", "edgeseq", "info", str(cases["unknown"][0])], capture_output=True, text=True
    )
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "'Spiral' is not supported" in p.stderr, p.stderr
