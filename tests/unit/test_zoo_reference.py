"""Every zoo model: the reference interpreter on the captured graph equals the PyTorch forward
(float32 torch, <= 1e-5 max abs; spiking outputs spike-identical), and parallel training forms
equal their sequential forms, gradients included."""

import numpy as np
import pytest
import torch

import edgeseq
from edgeseq.ir.interpret import run
from edgeseq.nn import LMU, MinGRU, MinLSTM, build_model

from .zoo_cases import ZOO, build

SPIKING_HIDDEN = {"lif", "lif_rec", "l2mu", "l2mu_syn", "lmuformer_spiking"}


@pytest.fixture(scope="module", params=sorted(ZOO))
def captured(request):
    model = build(request.param)
    x = torch.randn(2, 20, 6)
    return request.param, model, edgeseq.capture(model, x)


@pytest.mark.parametrize("steps", [1, 37, 128])
@pytest.mark.parametrize("batch", [1, 4])
def test_reference_matches_torch(captured, steps, batch):
    case, model, graph = captured
    torch.manual_seed(steps * 10 + batch)
    x = torch.randn(batch, steps, 6) * 2.0 + 0.5
    with torch.no_grad():
        want = model(x).double().numpy()
    (got,), _ = run(graph, x.double().numpy())
    assert got.shape == want.shape == (batch, 5)
    assert np.max(np.abs(got - want)) <= 1e-5


def _hidden_spike_values(graph, values):
    return {k: v for k, v in values.items() if graph.type_of(k).spikes}


@pytest.mark.parametrize("case", sorted(SPIKING_HIDDEN))
def test_spiking_hidden_layers_are_spike_identical(case):
    """Hidden spike trains (not only the logits) agree exactly over >= 100 steps."""
    model = build(case)
    x = torch.randn(3, 120, 6) * 2.0
    graph = edgeseq.capture(model, x[:, :5])
    _, _, values = run(graph, x.double().numpy(), trace=True)
    spikes = _hidden_spike_values(graph, values)
    assert spikes, "a spiking model must have spiking values"
    # the same spike trains from torch, through forward hooks on the modules that emit them
    recorded = {}
    modules = dict(model.named_modules())
    hooks = []
    for name in spikes:
        mod_name = name.split(".enc_pop")[0] if name.endswith("enc_pop") else name
        mod = modules.get(mod_name)
        if mod is None:
            continue
        hooks.append(
            mod.register_forward_hook(
                lambda m, i, o, name=name: recorded.__setitem__(name, (o[0] if isinstance(o, tuple) else o).detach())
            )
        )
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    checked = 0
    total_spikes = 0.0
    for name, torch_spk in recorded.items():
        if torch_spk.shape != spikes[name].shape:
            continue
        np.testing.assert_array_equal(spikes[name], torch_spk.double().numpy(), err_msg=name)
        total_spikes += float(spikes[name].sum())
        checked += 1
    assert checked >= 1
    assert total_spikes > 0, "test input must make neurons fire"


def test_zoo_covers_every_architecture():
    from edgeseq.nn import ARCHS

    assert {c.split("_")[0] for c in ZOO} == set(ARCHS)


# ---------------------------------------------------------------- parallel vs sequential forms


def _grads(module, loss):
    module.zero_grad()
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("cls", [MinGRU, MinLSTM])
@pytest.mark.parametrize("steps", [1, 37, 128, 512])
@pytest.mark.parametrize("candidate", ["minrnn_g", "identity"])
def test_minrnn_parallel_equals_sequential(cls, steps, candidate):
    torch.manual_seed(steps)
    m = cls(6, 16, candidate=candidate)
    x = torch.randn(4, steps, 6)
    h0 = torch.randn(4, 16)  # any sign: the chunked scan has no positivity requirement
    for init in (None, h0):
        yp = m.forward_parallel(x, init)
        gp = _grads(m, (yp * torch.linspace(-1, 1, 16)).sum())
        ys = m.forward_sequential(x, init)
        gs = _grads(m, (ys * torch.linspace(-1, 1, 16)).sum())
        assert torch.max(torch.abs(yp - ys)) <= 1e-5
        for k in gs:
            scale = max(1.0, float(gs[k].abs().max()))
            assert torch.max(torch.abs(gp[k] - gs[k])) <= 1e-5 * scale, k


def test_log_space_scan_equals_chunked_scan():
    from edgeseq.nn import chunked_scan, log_space_scan

    torch.manual_seed(0)
    a, b, h0 = torch.rand(3, 200, 8) * 0.98 + 0.01, torch.rand(3, 200, 8) + 0.1, torch.rand(3, 8)
    for init in (None, h0):
        want = chunked_scan(a, b, init)
        assert torch.allclose(log_space_scan(a.log(), b.log(), init), want, rtol=1e-5, atol=1e-6)
        for chunk in (1, 7, 200, 512):
            assert torch.allclose(chunked_scan(a, b, init, chunk=chunk), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("steps", [1, 37, 128, 300])  # <= 256 steps: Toeplitz product; longer: FFT
@pytest.mark.parametrize("cell", ["dense", "none"])
def test_lmu_parallel_equals_sequential(steps, cell):
    torch.manual_seed(steps)
    m = LMU(6, 16, memory_d=3, order=8, theta=30.0, hidden_cell=cell, input_to_hidden=cell == "dense")
    x = torch.randn(2, steps, 6)
    state = {"m": torch.randn(2, m.memory_size) * 0.3}
    for st in (None, state):
        yp, sp = m.forward_parallel(x, st)
        gp = _grads(m, (yp**2).sum())
        ys, ss = m.forward_sequential(x, st)
        gs = _grads(m, (ys**2).sum())
        assert torch.max(torch.abs(yp - ys)) <= 1e-5
        assert torch.max(torch.abs(sp["m"] - ss["m"])) <= 1e-5
        for k in gs:
            scale = max(1.0, float(gs[k].abs().max()))
            assert torch.max(torch.abs(gp[k] - gs[k])) <= 1e-5 * scale, k


def test_lmu_parallel_rejected_when_recurrent():
    from edgeseq.errors import ConfigError

    m = LMU(4, 8, memory_d=1, order=4, theta=8.0, hidden_to_memory=True, parallel=True)
    with pytest.raises(ConfigError):
        m(torch.randn(1, 5, 4))


def test_streaming_step_equals_forward():
    """Every zoo layer's step() over a sequence equals its forward()."""
    torch.manual_seed(0)
    x = torch.randn(2, 25, 6)
    for layer in (
        LMU(6, 8, memory_d=2, order=4, theta=10.0, hidden_to_memory=True, memory_to_memory=True),
        MinGRU(6, 8),
        MinLSTM(6, 8),
    ):
        y, _ = layer(x)
        if isinstance(layer, LMU):
            state = layer.init_state(2)
            steps = []
            for t in range(25):
                yt, state = layer.step(x[:, t], state)
                steps.append(yt)
        else:
            h = layer.init_state(2)
            steps = []
            for t in range(25):
                h = layer.step(x[:, t], h)
                steps.append(h)
        assert torch.max(torch.abs(torch.stack(steps, 1) - y)) <= 1e-5


def test_lif_step_runs_inside_torch_scan():
    """The functional LIF step is pure: it runs inside torch's scan higher-order op and matches the loop."""
    from torch._higher_order_ops.scan import scan

    from edgeseq.nn import leaky_step

    torch.manual_seed(0)
    cur = torch.randn(30, 3, 8) * 1.5  # time-major for scan

    def combine(mem, x_t):
        spk, mem = leaky_step(x_t, mem, 0.8, 1.0, "subtract", True)
        return mem, spk

    mem_final, spikes = scan(combine, torch.zeros(3, 8), cur)
    mem = torch.zeros(3, 8)
    loop = []
    for t in range(30):
        s, mem = leaky_step(cur[t], mem, 0.8, 1.0, "subtract", True)
        loop.append(s)
    assert torch.equal(spikes, torch.stack(loop))
    assert torch.equal(mem_final, mem)
    assert spikes.sum() > 0


def test_surrogate_gradient_matches_snntorch_atan():
    import snntorch.surrogate as sg

    from edgeseq.nn import spike

    x = torch.linspace(-2, 2, 101, requires_grad=True)
    spike(x, "atan", 2.0).sum().backward()
    ours = x.grad.clone()
    x.grad = None
    sg.atan(alpha=2.0)(x).sum().backward()
    torch.testing.assert_close(ours, x.grad)
    assert torch.equal(spike(x.detach()), (x.detach() > 0).float())


def test_build_model_unknown_arch():
    from edgeseq.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown architecture"):
        build_model("transformer", 3, 2)


# ---------------------------------------------------------------- fused LIF training scan


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"reset": "none", "emit": "membrane", "learn_beta": True},
        {"per_neuron": True, "learn_beta": True, "learn_threshold": True},
        {"surrogate": "fast_sigmoid", "learn_beta": True, "learn_threshold": True, "slope": 5.0},
    ],
)
@pytest.mark.parametrize("steps", [1, 37])
def test_fused_lif_scan_equals_step_loop(kw, steps, monkeypatch):
    """The fused feed-forward LIF scan gives the step loop's outputs exactly and its gradients (input,
    initial membrane, beta, threshold) to float32 rounding."""
    import edgeseq.nn.spiking as S

    torch.manual_seed(steps)
    layer = S.LIF(16, beta=0.8, threshold=0.7, **kw)
    x = (torch.randn(3, steps, 16) * 1.2).requires_grad_()
    m0 = (torch.randn(3, 16) * 0.5).requires_grad_()
    w = torch.linspace(-1, 1, 3 * steps * 16).reshape(3, steps, 16)
    got = {}
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(S.LIF, "fused", property(lambda self: False))
        assert layer.fused is fused
        layer.zero_grad()
        x.grad = m0.grad = None
        out, st = layer(x, {"mem": m0})
        ((out * w).sum() + (st["mem"] ** 2).sum()).backward()
        got[fused] = (
            out.detach(),
            st["mem"].detach(),
            x.grad.clone(),
            m0.grad.clone(),
            {n: p.grad.clone() for n, p in layer.named_parameters()},
        )
    (o1, s1, gx1, gm1, gp1), (o2, s2, gx2, gm2, gp2) = got[True], got[False]
    assert torch.equal(o1, o2) and torch.equal(s1, s2)
    assert torch.allclose(gx1, gx2, atol=1e-5) and torch.allclose(gm1, gm2, atol=1e-5)
    assert set(gp1) == set(gp2)
    for k in gp2:
        assert torch.allclose(gp1[k], gp2[k], rtol=1e-5, atol=1e-5), k
