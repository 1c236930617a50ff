"""Capture of plain torch and snntorch models: reference == torch at several lengths and batch
sizes; unsupported modules fail with typed errors naming the module path."""

import numpy as np
import pytest
import snntorch as snn
import torch
import torch.nn.functional as F
from torch import nn

import edgeseq
from edgeseq.errors import ShapeError, UnsupportedModuleError
from edgeseq.frontends import torch_forward
from edgeseq.ir.interpret import run


def check(model, in_features=5, layout="BTF", tol=1e-5, lengths=(1, 37, 128), batches=(1, 4)):
    torch.manual_seed(7)
    ex = torch.randn(2, 9, in_features)
    ex_model = ex.transpose(0, 1) if layout == "TBF" else ex
    graph = edgeseq.capture(model, ex_model)
    for steps in lengths:
        for b in batches:
            x = torch.randn(b, steps, in_features) * 1.5
            got, _ = run(graph, x.double().numpy())
            want = torch_forward(model, x, layout)
            assert len(got) == len(want)
            for k, (g, w) in enumerate(zip(got, want)):
                assert g.shape == w.shape
                if graph.output_types[k].spikes:
                    np.testing.assert_array_equal(g, w)
                else:
                    assert np.max(np.abs(g - w)) <= tol, (steps, b, np.max(np.abs(g - w)))
    return graph


class LastStep(nn.Module):
    def __init__(self, cell, batch_first=True, readout="index"):
        super().__init__()
        self.rnn = cell
        self.fc = nn.Linear(cell.hidden_size, 3)
        self.readout = readout
        self.is_lstm = isinstance(cell, nn.LSTM)

    def forward(self, x):
        out, h = self.rnn(x)
        if self.readout == "index":
            last = out[:, -1] if self.rnn.batch_first else out[-1]
        elif self.readout == "hn":
            last = (h[0] if self.is_lstm else h)[-1]
        else:
            last = out.mean(dim=1 if self.rnn.batch_first else 0)
        return self.fc(torch.tanh(last))


@pytest.mark.parametrize("cls", [nn.RNN, nn.GRU, nn.LSTM])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("readout", ["index", "hn", "mean"])
def test_torch_recurrent_layers(cls, batch_first, readout):
    torch.manual_seed(0)
    model = LastStep(cls(5, 10, num_layers=2, batch_first=batch_first), batch_first, readout)
    graph = check(model, layout="BTF" if batch_first else "TBF")
    kinds = [n.op.kind for n in graph.nodes]
    assert kinds.count(cls.__name__) == 2


def test_bare_gru_sequence_output():
    torch.manual_seed(0)
    check(nn.GRU(5, 8, batch_first=True))


def test_rnn_relu_and_no_bias():
    torch.manual_seed(0)
    check(LastStep(nn.RNN(5, 7, nonlinearity="relu", bias=False, batch_first=True)))


class ConvNet(nn.Module):
    def __init__(self, style):
        super().__init__()
        self.style = style
        k, d = 3, 2
        self.pad = (k - 1) * d
        self.conv = nn.Conv1d(5, 8, k, dilation=d, padding=self.pad if style == "trim" else 0)
        self.bn = nn.BatchNorm1d(8)
        self.pw = nn.Conv1d(8, 8, 1, groups=2)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(16, 4)
        self.bn.running_mean.uniform_(-1, 1)
        self.bn.running_var.uniform_(0.5, 2)

    def forward(self, x):
        y = x.transpose(1, 2)
        if self.style == "pad":
            y = self.conv(F.pad(y, (self.pad, 0)))
        else:
            y = self.conv(y)[..., : -self.pad]
        y = F.gelu(self.pw(torch.relu(self.bn(y))))
        y = self.norm(y.transpose(1, 2))
        y = torch.cat([y, torch.sigmoid(y)], dim=-1)
        return self.head(y) + self.head(y).tanh()


@pytest.mark.parametrize("style", ["pad", "trim"])
def test_causal_conv_norm_residual(style):
    graph = check(ConvNet(style).eval(), tol=2e-5)
    assert {"Conv1d", "BatchNorm", "LayerNorm", "Concat", "Add"} <= {n.op.kind for n in graph.nodes}


def test_temporal_output_model():
    model = nn.Sequential(nn.Linear(5, 8), nn.LeakyReLU(0.1), nn.Hardtanh(-0.5, 0.7), nn.Linear(8, 2))
    check(model)


# ---------------------------------------------------------------- snntorch


def step_net(kind, reset="subtract", delay=True):
    torch.manual_seed(1)
    h = 20
    if kind == "Leaky":
        neuron = snn.Leaky(
            beta=torch.rand(h) * 0.5 + 0.4, threshold=0.8, init_hidden=True, reset_mechanism=reset, reset_delay=delay
        )
    elif kind == "RLeaky":
        neuron = snn.RLeaky(beta=0.85, linear_features=h, init_hidden=True, reset_mechanism=reset, reset_delay=delay)
    elif kind == "RLeaky_V":
        neuron = snn.RLeaky(
            beta=0.85, V=torch.rand(h), all_to_all=False, init_hidden=True, reset_mechanism=reset, reset_delay=delay
        )
    elif kind == "Synaptic":
        neuron = snn.Synaptic(alpha=0.7, beta=0.85, init_hidden=True, reset_mechanism=reset, reset_delay=delay)
    else:
        neuron = snn.RSynaptic(
            alpha=0.7, beta=0.85, linear_features=h, init_hidden=True, reset_mechanism=reset, reset_delay=delay
        )
    return nn.Sequential(
        nn.Linear(5, h), neuron, nn.Linear(h, 3), snn.Leaky(beta=0.9, threshold=0.5, init_hidden=True, output=True)
    )


CASES = [
    (k, r, d)
    for k in ("Leaky", "RLeaky", "RLeaky_V", "Synaptic", "RSynaptic")
    for r in ("subtract", "zero", "none")
    for d in (True, False)
    if not (k == "RSynaptic" and not d)
]


@pytest.mark.parametrize("kind,reset,delay", CASES)
def test_snntorch_step_networks_spike_identical(kind, reset, delay):
    net = step_net(kind, reset, delay)
    graph = check(net, lengths=(1, 37, 128), batches=(1, 4))
    assert [t.spikes for t in graph.output_types] == [True, False]
    # >= 100 steps with real activity in the hidden layer
    x = torch.randn(3, 150, 5) * 1.5
    _, _, values = run(graph, x.double().numpy(), trace=True)
    hidden = values[graph.nodes[1].outputs[0]]
    assert hidden.sum() > 10


def test_snntorch_reset_rules_are_normalised():
    from edgeseq.ir.types import ResetRule

    g = edgeseq.capture(step_net("Leaky", "zero"), torch.randn(1, 3, 5))
    assert g.nodes[1].op.neuron.reset is ResetRule.ZERO
    g = edgeseq.capture(step_net("RLeaky", "zero"), torch.randn(1, 3, 5))
    assert g.nodes[1].op.neuron.reset is ResetRule.ZERO_TOTAL


def test_snntorch_neuron_without_an_op_is_captured_by_its_loop():
    """Alpha has no named op: the step network is rolled from its per-step trace instead, and the
    capture is checked against snntorch at a length it did not trace."""
    net = nn.Sequential(nn.Linear(5, 4), snn.Alpha(alpha=0.9, beta=0.8, init_hidden=True))
    g = edgeseq.capture(net, torch.randn(2, 9, 5) * 3)
    assert [n.op.kind for n in g.nodes] == ["Scan"]


def test_module_not_allowed_in_a_step_network_is_named():
    net = nn.Sequential(nn.Linear(5, 4), nn.GRU(4, 4), snn.Leaky(beta=0.9, init_hidden=True))
    with pytest.raises(UnsupportedModuleError, match=r"^1: torch.nn.modules.rnn.GRU is not supported inside"):
        edgeseq.capture(net, torch.randn(1, 3, 5))


def test_snntorch_needs_init_hidden():
    net = nn.Sequential(nn.Linear(5, 4), snn.Leaky(beta=0.9))
    with pytest.raises(UnsupportedModuleError, match="init_hidden=True"):
        edgeseq.capture(net, torch.randn(1, 3, 5))


def test_rsynaptic_reset_delay_false_is_rejected():
    net = nn.Sequential(
        nn.Linear(5, 4), snn.RSynaptic(alpha=0.5, beta=0.5, linear_features=4, init_hidden=True, reset_delay=False)
    )
    with pytest.raises(UnsupportedModuleError, match="reset_delay"):
        edgeseq.capture(net, torch.randn(1, 3, 5))


# ---------------------------------------------------------------- unsupported / bad input


class Holder(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.block = nn.Sequential(nn.Linear(5, 5), inner)

    def forward(self, x):
        return self.block(x)


@pytest.mark.parametrize(
    "inner,pattern",
    [
        (nn.Hardshrink(), "block.1: .*Hardshrink is not supported.*supported: .*torch.nn.GRU"),
        (
            nn.MultiheadAttention(5, 1),
            "block.1: nn.MultiheadAttention is captured as self-attention only.*attn\\(x, x, x\\)",
        ),
        (nn.LSTM(5, 5, proj_size=3, batch_first=True), "block.1: LSTM with proj_size is not supported"),
        (nn.Conv1d(5, 5, 3, padding=1), "receives a \\(B, T, F\\)"),
    ],
)
def test_unsupported_modules_name_their_path(inner, pattern):
    with pytest.raises(UnsupportedModuleError, match=pattern):
        edgeseq.capture(Holder(inner), torch.randn(1, 4, 5))


def test_noncausal_conv_is_a_window_graph_and_a_longer_output_is_rejected():
    class M(nn.Module):
        def __init__(self, pad):
            super().__init__()
            self.conv = nn.Conv1d(5, 5, 3, padding=pad)

        def forward(self, x):
            return self.conv(x.transpose(1, 2)).transpose(1, 2)

    g = edgeseq.capture(M(1), torch.randn(1, 4, 5))  # symmetric: reads one future step
    assert g.is_window and "conv" in g.metadata["window"] and [n.op.kind for n in g.window_nodes] == ["Lookahead"]
    with pytest.raises(UnsupportedModuleError, match="changes the sequence length"):
        edgeseq.capture(M(3), torch.randn(1, 4, 5))


def test_snntorch_neuron_on_whole_sequence_rejected():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 4)
            self.lif = snn.Leaky(beta=0.9, init_hidden=True)

        def forward(self, x):
            return self.lif(self.fc(x))

    with pytest.raises(UnsupportedModuleError, match="step functions"):
        edgeseq.capture(M(), torch.randn(1, 4, 5))


def test_untraceable_forward_is_reported():
    class Loop(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 5)

        def forward(self, x):
            for _ in range(int(x.sum() > 0) + 1):
                x = self.fc(x)
            return x

    with pytest.raises(UnsupportedModuleError, match="control flow that depends on tensor values"):
        edgeseq.capture(Loop(), torch.randn(1, 4, 5))


def test_lstm_cell_state_is_rejected():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(5, 4, batch_first=True)

        def forward(self, x):
            _, (h, c) = self.rnn(x)
            return c[-1]

    with pytest.raises(UnsupportedModuleError, match="recurrent state of 'rnn'"):
        edgeseq.capture(M(), torch.randn(1, 4, 5))


def test_bad_example_input():
    with pytest.raises(ShapeError, match="3-D"):
        edgeseq.capture(nn.GRU(5, 4, batch_first=True), torch.randn(4, 5))
