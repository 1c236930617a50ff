"""Models written the way people write them (tutorials, paper repositories, forum answers), with
random weights: the corpus that capture is measured on.

Each case builds ``(model, example_input)``; the input is in the model's own layout (time-major
models get (T, B, F)). ``expect`` is 'capture' (must capture and match torch) or the start of the
one-line error the capture must raise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

F_IN, CLASSES = 6, 4


@dataclass
class Case:
    name: str
    build: Callable
    style: str
    expect: str = "capture"
    time_major: bool = False
    spiking: bool = False
    static: bool = False
    ids: bool = False  # feature 0 holds integer token ids


CASES: dict[str, Case] = {}


def case(name: str, style: str, **kw):
    def deco(fn):
        CASES[name] = Case(name, fn, style, **kw)
        return fn

    return deco


def example(c: Case, batch: int = 3, steps: int = 10, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, steps, F_IN, generator=g) * (2.0 if c.spiking else 1.0)
    if c.ids:
        x[..., 0] = torch.randint(0, 20, (batch, steps), generator=g).float()
    if c.static:
        return x[:, 0]
    return x.transpose(0, 1).contiguous() if c.time_major else x


# ------------------------------------------------------------------------------------- time loops


@case("gru_cell_loop", "GRUCell loop, zeros from x.size(0), stack, last step")
def _gru_cell_loop():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = nn.GRUCell(F_IN, 16)
            self.fc = nn.Linear(16, CLASSES)

        def forward(self, x):
            h = torch.zeros(x.size(0), 16, device=x.device)
            outs = []
            for t in range(x.size(1)):
                h = self.cell(x[:, t], h)
                outs.append(h)
            return self.fc(torch.stack(outs, dim=1)[:, -1])

    return M()


@case("lstm_cell_loop", "LSTMCell loop with an (h, c) tuple, head on the final h")
def _lstm_cell_loop():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = nn.LSTMCell(F_IN, 12)
            self.out = nn.Linear(12, CLASSES)

        def forward(self, x):
            b = x.size(0)
            hx, cx = torch.zeros(b, 12), torch.zeros(b, 12)
            for t in range(x.size(1)):
                hx, cx = self.cell(x[:, t, :], (hx, cx))
            return self.out(hx)

    return M()


@case("gru_cell_unbind", "GRUCell over x.unbind(1), mean of the outputs")
def _gru_cell_unbind():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = nn.GRUCell(F_IN, 10)
            self.head = nn.Linear(10, CLASSES)

        def forward(self, x):
            h = x.new_zeros(x.shape[0], 10)
            ys = []
            for xt in x.unbind(1):
                h = self.cell(xt, h)
                ys.append(h)
            return self.head(torch.stack(ys, 1).mean(dim=1))

    return M()


@case("elman_params", "Elman RNN with explicit parameters, h = tanh(x W + h U + b)")
def _elman_params():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.W = nn.Parameter(torch.randn(F_IN, 14) * 0.3)
            self.U = nn.Parameter(torch.randn(14, 14) * 0.2)
            self.b = nn.Parameter(torch.zeros(14))
            self.fc = nn.Linear(14, CLASSES)

        def forward(self, x):
            h = torch.zeros(x.size(0), 14)
            for t in range(x.size(1)):
                h = torch.tanh(x[:, t] @ self.W + h @ self.U + self.b)
            return self.fc(h)

    return M()


@case("gru_handwritten", "GRU written gate by gate with one Linear per gate")
def _gru_handwritten():
    class Cell(nn.Module):
        def __init__(self, i, h):
            super().__init__()
            self.xz, self.hz = nn.Linear(i, h), nn.Linear(h, h, bias=False)
            self.xr, self.hr = nn.Linear(i, h), nn.Linear(h, h, bias=False)
            self.xn, self.hn = nn.Linear(i, h), nn.Linear(h, h)

        def forward(self, x, h):
            z = torch.sigmoid(self.xz(x) + self.hz(h))
            r = torch.sigmoid(self.xr(x) + self.hr(h))
            n = torch.tanh(self.xn(x) + r * self.hn(h))
            return (1 - z) * n + z * h

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = Cell(F_IN, 12)
            self.fc = nn.Linear(12, CLASSES)

        def forward(self, x):
            h = torch.zeros(x.shape[0], 12)
            for t in range(x.shape[1]):
                h = self.cell(x[:, t], h)
            return self.fc(h)

    return M()


@case("lstm_handwritten", "LSTM from one Linear over cat([x, h]) chunked into four gates")
def _lstm_handwritten():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.gates = nn.Linear(F_IN + 10, 40)
            self.fc = nn.Linear(10, CLASSES)

        def forward(self, x):
            h = torch.zeros(x.size(0), 10)
            c = torch.zeros(x.size(0), 10)
            for t in range(x.size(1)):
                i, f, g, o = self.gates(torch.cat([x[:, t], h], dim=1)).chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            return self.fc(h)

    return M()


@case("lmu_public_cell", "public PyTorch LMU cell: A, B from scipy cont2discrete as buffers")
def _lmu_public():
    from scipy.signal import cont2discrete

    class LMUCell(nn.Module):
        def __init__(self, input_size, hidden_size, memory_size, theta):
            super().__init__()
            q = np.arange(memory_size, dtype=np.float64).reshape(-1, 1)
            r = (2 * q + 1) / theta
            i, j = np.meshgrid(q, q, indexing="ij")
            a = np.where(i < j, -1, (-1.0) ** (i - j + 1)) * r
            b = ((-1.0) ** q) * r
            ad, bd, *_ = cont2discrete((a, b, np.ones((1, memory_size)), np.zeros((1,))), dt=1.0, method="zoh")
            self.register_buffer("A", torch.tensor(ad, dtype=torch.float32))
            self.register_buffer("B", torch.tensor(bd, dtype=torch.float32))
            self.e_x = nn.Parameter(torch.randn(1, input_size) * 0.3)
            self.e_h = nn.Parameter(torch.randn(1, hidden_size) * 0.1)
            self.e_m = nn.Parameter(torch.zeros(1, memory_size))
            self.W_x = nn.Parameter(torch.randn(hidden_size, input_size) * 0.3)
            self.W_h = nn.Parameter(torch.randn(hidden_size, hidden_size) * 0.1)
            self.W_m = nn.Parameter(torch.randn(hidden_size, memory_size) * 0.3)

        def forward(self, x, state):
            h, m = state
            u = F.linear(x, self.e_x) + F.linear(h, self.e_h) + F.linear(m, self.e_m)
            m = F.linear(m, self.A) + F.linear(u, self.B)
            h = torch.tanh(F.linear(x, self.W_x) + F.linear(h, self.W_h) + F.linear(m, self.W_m))
            return h, m

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = LMUCell(F_IN, 16, 8, 10.0)
            self.fc = nn.Linear(16, CLASSES)

        def forward(self, x):
            h = torch.zeros(x.size(0), 16)
            m = torch.zeros(x.size(0), 8)
            for t in range(x.size(1)):
                h, m = self.cell(x[:, t], (h, m))
            return self.fc(h)

    return M()


@case("mingru_loop", "minGRU written as a sequential loop")
def _mingru_loop():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.z = nn.Linear(F_IN, 12)
            self.h = nn.Linear(F_IN, 12)
            self.fc = nn.Linear(12, CLASSES)

        def forward(self, x):
            h = torch.zeros(x.size(0), 12)
            for t in range(x.size(1)):
                z = torch.sigmoid(self.z(x[:, t]))
                h = (1 - z) * h + z * self.h(x[:, t])
            return self.fc(h)

    return M()


@case("leaky_integrator", "a hand-written leaky integrator v = a v + (1 - a) x with a learned decay")
def _leaky_integrator():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(F_IN, 8)
            self.logit = nn.Parameter(torch.randn(8))
            self.fc = nn.Linear(8, CLASSES)

        def forward(self, x):
            u = self.proj(x)  # over the whole sequence, before the loop
            a = torch.sigmoid(self.logit)
            v = torch.zeros(x.size(0), 8)
            for t in range(x.size(1)):
                v = a * v + (1 - a) * u[:, t]
            return self.fc(torch.relu(v))

    return M()


@case("gru_cell_seq2seq", "GRUCell loop returning every step's output (sequence to sequence)")
def _gru_seq2seq():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = nn.GRUCell(F_IN, 8)
            self.fc = nn.Linear(8, CLASSES)

        def forward(self, x):
            h = torch.zeros(x.size(0), 8)
            outs = []
            for t in range(x.size(1)):
                h = self.cell(x[:, t], h)
                outs.append(self.fc(h))
            return torch.stack(outs, dim=1)

    return M()


@case("stacked_cells", "two GRUCells stacked inside one loop")
def _stacked_cells():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.GRUCell(F_IN, 10), nn.GRUCell(10, 10)
            self.fc = nn.Linear(10, CLASSES)

        def forward(self, x):
            h1 = torch.zeros(x.size(0), 10)
            h2 = torch.zeros(x.size(0), 10)
            for t in range(x.size(1)):
                h1 = self.c1(x[:, t], h1)
                h2 = self.c2(h1, h2)
            return self.fc(h2)

    return M()


@case("lstm_cell_time_major", "LSTMCell loop over a time-major (T, B, F) input", time_major=True)
def _lstm_time_major():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = nn.LSTMCell(F_IN, 9)
            self.fc = nn.Linear(9, CLASSES)

        def forward(self, x):
            h = torch.zeros(x.size(1), 9)
            c = torch.zeros(x.size(1), 9)
            for t in range(x.size(0)):
                h, c = self.cell(x[t], (h, c))
            return self.fc(h)

    return M()


@case("relu_rnn_dropout", "Elman RNNCell (relu) with dropout, residual input projection")
def _relu_rnn():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = nn.RNNCell(F_IN, 12, nonlinearity="relu")
            self.skip = nn.Linear(F_IN, 12)
            self.drop = nn.Dropout(0.2)
            self.fc = nn.Linear(12, CLASSES)

        def forward(self, x):
            h = torch.zeros(x.size(0), 12)
            for t in range(x.size(1)):
                h = self.cell(x[:, t], h) * 0.5 + self.skip(x[:, t]) * 0.5
            return self.fc(self.drop(h))

    return M()


# ------------------------------------------------------------------------------------- snntorch loops


def _snn():
    import snntorch as snn

    return snn


@case(
    "snn_tutorial_static",
    "snntorch tutorial 5: static input repeated over num_steps, spk/mem records",
    spiking=True,
    static=True,
)
def _snn_static():
    snn = _snn()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.num_steps = 12
            self.fc1, self.lif1 = nn.Linear(F_IN, 16), snn.Leaky(beta=0.95)
            self.fc2, self.lif2 = nn.Linear(16, CLASSES), snn.Leaky(beta=0.95)

        def forward(self, x):
            mem1 = self.lif1.init_leaky()
            mem2 = self.lif2.init_leaky()
            spk2_rec, mem2_rec = [], []
            for step in range(self.num_steps):
                cur1 = self.fc1(x)
                spk1, mem1 = self.lif1(cur1, mem1)
                cur2 = self.fc2(spk1)
                spk2, mem2 = self.lif2(cur2, mem2)
                spk2_rec.append(spk2)
                mem2_rec.append(mem2)
            return torch.stack(spk2_rec, dim=0), torch.stack(mem2_rec, dim=0)

    return Net()


@case(
    "snn_tutorial_temporal", "snntorch tutorial: time-varying (T, B, F) input, x[step]", time_major=True, spiking=True
)
def _snn_temporal():
    snn = _snn()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.lif1 = nn.Linear(F_IN, 16), snn.Leaky(beta=0.9)
            self.fc2, self.lif2 = nn.Linear(16, CLASSES), snn.Leaky(beta=0.9)

        def forward(self, x):
            mem1 = self.lif1.init_leaky()
            mem2 = self.lif2.init_leaky()
            spk2_rec, mem2_rec = [], []
            for step in range(x.size(0)):
                spk1, mem1 = self.lif1(self.fc1(x[step]), mem1)
                spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
                spk2_rec.append(spk2)
                mem2_rec.append(mem2)
            return torch.stack(spk2_rec), torch.stack(mem2_rec)

    return Net()


@case("snn_synaptic_loop", "snntorch Synaptic neurons in a loop (init_synaptic)", time_major=True, spiking=True)
def _snn_synaptic():
    snn = _snn()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.syn1 = nn.Linear(F_IN, 12), snn.Synaptic(alpha=0.8, beta=0.9)
            self.fc2, self.syn2 = nn.Linear(12, CLASSES), snn.Synaptic(alpha=0.8, beta=0.9)

        def forward(self, x):
            syn1, mem1 = self.syn1.init_synaptic()
            syn2, mem2 = self.syn2.init_synaptic()
            rec = []
            for step in range(x.shape[0]):
                spk1, syn1, mem1 = self.syn1(self.fc1(x[step]), syn1, mem1)
                spk2, syn2, mem2 = self.syn2(self.fc2(spk1), syn2, mem2)
                rec.append(spk2)
            return torch.stack(rec).sum(0)

    return Net()


@case("snn_leaky_reset_zero", "snntorch Leaky with reset_mechanism='zero', mean membrane readout", spiking=True)
def _snn_zero():
    snn = _snn()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.lif1 = nn.Linear(F_IN, 12), snn.Leaky(beta=0.85, reset_mechanism="zero")
            self.fc2 = nn.Linear(12, CLASSES)

        def forward(self, x):
            mem = self.lif1.init_leaky()
            out = []
            for t in range(x.size(1)):
                spk, mem = self.lif1(self.fc1(x[:, t]), mem)
                out.append(self.fc2(spk))
            return torch.stack(out, 1).mean(1)

    return Net()


@case("snn_rleaky_loop", "snntorch RLeaky (all-to-all recurrence) in a loop", time_major=True, spiking=True)
def _snn_rleaky():
    snn = _snn()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.rlif = nn.Linear(F_IN, 10), snn.RLeaky(beta=0.9, linear_features=10)
            self.fc2 = nn.Linear(10, CLASSES)

        def forward(self, x):
            spk, mem = self.rlif.init_rleaky()
            rec = []
            for step in range(x.size(0)):
                spk, mem = self.rlif(self.fc1(x[step]), spk, mem)
                rec.append(spk)
            return self.fc2(torch.stack(rec).mean(0))

    return Net()


@case("snn_membrane_readout", "snntorch Leaky hidden layer, non-spiking output membrane, sum over time", spiking=True)
def _snn_membrane():
    snn = _snn()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.lif1 = nn.Linear(F_IN, 14), snn.Leaky(beta=0.9)
            self.fc2, self.li = nn.Linear(14, CLASSES), snn.Leaky(beta=0.8, reset_mechanism="none")

        def forward(self, x):
            m1, m2 = self.lif1.init_leaky(), self.li.init_leaky()
            mems = []
            for xt in x.unbind(1):
                s1, m1 = self.lif1(self.fc1(xt), m1)
                _, m2 = self.li(self.fc2(s1), m2)
                mems.append(m2)
            return torch.stack(mems, 1).sum(1)

    return Net()


# ------------------------------------------------------------------------------------- torch recurrent layers


@case("gru_h0_zeros", "nn.GRU with h0 = zeros(1, x.size(0), H) passed explicitly")
def _gru_h0():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(F_IN, 16, batch_first=True)
            self.fc = nn.Linear(16, CLASSES)

        def forward(self, x):
            h0 = torch.zeros(1, x.size(0), 16, device=x.device)
            out, _ = self.gru(x, h0)
            return self.fc(out[:, -1, :])

    return M()


@case("lstm_h0_c0_zeros", "nn.LSTM (2 layers) with (h0, c0) zeros from x.size(0)")
def _lstm_h0():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(F_IN, 12, num_layers=2, batch_first=True)
            self.fc = nn.Linear(12, CLASSES)

        def forward(self, x):
            h0 = torch.zeros(2, x.size(0), 12)
            c0 = torch.zeros(2, x.size(0), 12)
            out, (hn, cn) = self.lstm(x, (h0, c0))
            return self.fc(out[:, -1])

    return M()


@case("gru_learned_h0", "nn.GRU with a learned initial state expanded over the batch")
def _gru_learned_h0():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(F_IN, 10, batch_first=True)
            self.h0 = nn.Parameter(torch.randn(1, 1, 10) * 0.5)
            self.fc = nn.Linear(10, CLASSES)

        def forward(self, x):
            out, _ = self.gru(x, self.h0.expand(-1, x.size(0), -1).contiguous())
            return self.fc(out[:, -1])

    return M()


@case("gru_hn_squeeze", "nn.GRU, head on h_n.squeeze(0)")
def _gru_hn_squeeze():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(F_IN, 12, batch_first=True)
            self.fc = nn.Linear(12, CLASSES)

        def forward(self, x):
            _, h_n = self.gru(x)
            return self.fc(h_n.squeeze(0))

    return M()


@case("lstm_hn_last_layer", "2-layer nn.LSTM, head on h_n[-1]")
def _lstm_hn_last():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(F_IN, 10, num_layers=2, batch_first=True)
            self.fc = nn.Linear(10, CLASSES)

        def forward(self, x):
            _, (h_n, _) = self.lstm(x)
            return self.fc(h_n[-1])

    return M()


@case("lstm_time_major", "nn.LSTM with batch_first=False on a (T, B, F) input", time_major=True)
def _lstm_tm():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(F_IN, 10)
            self.fc = nn.Linear(10, CLASSES)

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.fc(out[-1])

    return M()


@case("lstm_proj_size", "nn.LSTM with proj_size", expect="LSTM with proj_size is not supported")
def _lstm_proj():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(F_IN, 16, proj_size=6, batch_first=True)
            self.fc = nn.Linear(6, CLASSES)

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.fc(out[:, -1])

    return M()


@case("gru_stacked_modules", "two nn.GRU modules with a LayerNorm between them")
def _gru_stacked():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.g1, self.norm, self.g2 = (
                nn.GRU(F_IN, 12, batch_first=True),
                nn.LayerNorm(12),
                nn.GRU(12, 8, batch_first=True),
            )
            self.fc = nn.Linear(8, CLASSES)

        def forward(self, x):
            y, _ = self.g1(x)
            y, _ = self.g2(self.norm(y))
            return self.fc(y.mean(dim=1))

    return M()


# ------------------------------------------------------------------------------------- convolutional front ends


@case("conv_same_bn_gru", "HAR style: Conv1d padding='same' + BatchNorm + ReLU + GRU (window)")
def _conv_same():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(F_IN, 16, 5, padding="same")
            self.bn = nn.BatchNorm1d(16)
            self.gru = nn.GRU(16, 16, batch_first=True)
            self.fc = nn.Linear(16, CLASSES)

        def forward(self, x):
            y = F.relu(self.bn(self.conv(x.transpose(1, 2)))).transpose(1, 2)
            out, _ = self.gru(y)
            return self.fc(out[:, -1])

    m = M()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.3, 0.3)
        m.bn.running_var.uniform_(0.5, 1.5)
    return m


@case("deepconvlstm", "DeepConvLSTM: four valid Conv1d layers + 2-layer LSTM (streams with a delay)")
def _deepconvlstm():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleList([nn.Conv1d(F_IN if i == 0 else 8, 8, 3) for i in range(4)])
            self.lstm = nn.LSTM(8, 16, num_layers=2, batch_first=True)
            self.fc = nn.Linear(16, CLASSES)

        def forward(self, x):
            y = x.permute(0, 2, 1)
            for c in self.convs:
                y = F.relu(c(y))
            out, _ = self.lstm(y.permute(0, 2, 1))
            return self.fc(out[:, -1, :])

    return M()


@case("conv_symmetric_pad", "Conv1d with padding=k//2 + LSTM + mean (window)")
def _conv_sym():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(F_IN, 12, 3, padding=1)
            self.lstm = nn.LSTM(12, 12, batch_first=True)
            self.fc = nn.Linear(12, CLASSES)

        def forward(self, x):
            out, _ = self.lstm(torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2))
            return self.fc(out.mean(1))

    return M()


@case("causal_conv_gru", "causally padded Conv1d (F.pad left) + GRU")
def _causal_conv():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(F_IN, 10, 4)
            self.gru = nn.GRU(10, 10, batch_first=True)
            self.fc = nn.Linear(10, CLASSES)

        def forward(self, x):
            y = self.conv(F.pad(x.transpose(1, 2), (3, 0)))
            out, _ = self.gru(torch.relu(y).transpose(1, 2))
            return self.fc(out[:, -1])

    return M()


@case(
    "conv_snn_frames",
    "convolutional SNN: Conv1d + Leaky on per-step frames, Flatten, Linear + Leaky",
    time_major=True,
    spiking=True,
)
def _conv_snn():
    snn = _snn()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(1, 4, 3, padding=1)
            self.lif1 = snn.Leaky(beta=0.9)
            self.flat = nn.Flatten()
            self.fc = nn.Linear(4 * F_IN, CLASSES)
            self.lif2 = snn.Leaky(beta=0.9)

        def forward(self, x):
            m1, m2 = self.lif1.init_leaky(), self.lif2.init_leaky()
            rec = []
            for step in range(x.size(0)):
                s1, m1 = self.lif1(self.conv(x[step].unsqueeze(1)), m1)
                s2, m2 = self.lif2(self.fc(self.flat(s1)), m2)
                rec.append(s2)
            return torch.stack(rec)

    return Net()


@case("snn_step_flatten", "snntorch step network (init_hidden=True) with nn.Flatten", spiking=True)
def _snn_step_flatten():
    snn = _snn()
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(F_IN, 12),
        snn.Leaky(beta=0.9, init_hidden=True),
        nn.Linear(12, CLASSES),
        snn.Leaky(beta=0.9, init_hidden=True),
    )


@case("snn_synaptic_output", "snntorch step network ending in Synaptic(output=True)", spiking=True)
def _snn_syn_output():
    snn = _snn()
    return nn.Sequential(
        nn.Linear(F_IN, 12),
        snn.Synaptic(alpha=0.8, beta=0.9, init_hidden=True),
        nn.Linear(12, CLASSES),
        snn.Synaptic(alpha=0.8, beta=0.9, init_hidden=True, output=True),
    )


@case("snn_rsynaptic_output", "snntorch step network ending in RSynaptic(output=True)", spiking=True)
def _snn_rsyn_output():
    snn = _snn()
    return nn.Sequential(
        nn.Linear(F_IN, 10), snn.RSynaptic(alpha=0.8, beta=0.9, linear_features=10, init_hidden=True, output=True)
    )


# ------------------------------------------------------------------------------------- bidirectional, attention


@case("bigru_last", "bidirectional nn.GRU, out[:, -1] (window)")
def _bigru():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(F_IN, 8, batch_first=True, bidirectional=True)
            self.fc = nn.Linear(16, CLASSES)

        def forward(self, x):
            out, _ = self.gru(x)
            return self.fc(out[:, -1])

    return M()


@case("bilstm_mean", "bidirectional 2-layer nn.LSTM, mean over time (window)")
def _bilstm():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(F_IN, 8, num_layers=2, batch_first=True, bidirectional=True)
            self.fc = nn.Linear(16, CLASSES)

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.fc(out.mean(1))

    return M()


@case("attention_pool_gru", "GRU + softmax attention pooling over time")
def _attn():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(F_IN, 12, batch_first=True)
            self.score = nn.Linear(12, 1)
            self.fc = nn.Linear(12, CLASSES)

        def forward(self, x):
            out, _ = self.gru(x)
            w = torch.softmax(self.score(out), dim=1)
            return self.fc((w * out).sum(dim=1))

    return M()


@case(
    "mha_classifier",
    "time-major nn.MultiheadAttention self-attention classifier, mean over time (window)",
    time_major=True,
)
def _mha():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(F_IN, 16)
            self.attn = nn.MultiheadAttention(16, 4)
            self.fc = nn.Linear(16, CLASSES)

        def forward(self, x):
            h = torch.relu(self.embed(x))
            a, _ = self.attn(h, h, h)
            return self.fc((h + a).mean(0))

    return M()


@case("conv_mha", "Conv1d padding='same' + ReLU + nn.MultiheadAttention(batch_first=True)[0], last step (window)")
def _conv_mha():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(F_IN, 12, 3, padding="same")
            self.attn = nn.MultiheadAttention(12, 2, batch_first=True)
            self.fc = nn.Linear(12, CLASSES)

        def forward(self, x):
            y = torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
            y = self.attn(y, y, y, need_weights=False)[0]
            return self.fc(y[:, -1])

    return M()


# ------------------------------------------------------------------------------------- other front ends / neurons


@case("embedding_gru", "nn.Embedding of token ids (feature 0) + GRU", ids=True)
def _embedding():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 8)
            self.gru = nn.GRU(8, 8, batch_first=True)
            self.fc = nn.Linear(8, CLASSES)

        def forward(self, x):
            ids = x[..., 0].long().clamp(0, 19)
            out, _ = self.gru(self.emb(ids))
            return self.fc(out[:, -1])

    return M()


@case(
    "packed_sequence_lstm", "pack_padded_sequence with per-sample lengths", expect="packed sequences are not supported"
)
def _packed():
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(F_IN, 8, batch_first=True)
            self.fc = nn.Linear(8, CLASSES)

        def forward(self, x):
            lengths = torch.full((x.size(0),), x.size(1), dtype=torch.long)
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.lstm(packed)
            out, _ = pad_packed_sequence(out, batch_first=True)
            return self.fc(out[:, -1])

    return M()


@case("snn_alpha", "snntorch Alpha neuron step network", spiking=True)
def _snn_alpha():
    snn = _snn()
    return nn.Sequential(
        nn.Linear(F_IN, 10),
        snn.Alpha(alpha=0.9, beta=0.8, init_hidden=True),
        nn.Linear(10, CLASSES),
        snn.Alpha(alpha=0.9, beta=0.8, init_hidden=True),
    )


@case("snn_lapicque", "snntorch Lapicque neuron step network", spiking=True)
def _snn_lapicque():
    snn = _snn()
    return nn.Sequential(
        nn.Linear(F_IN, 10),
        snn.Lapicque(beta=0.9, init_hidden=True),
        nn.Linear(10, CLASSES),
        snn.Lapicque(beta=0.9, init_hidden=True),
    )


@case("tcn_causal_dilated", "TCN-style causal dilated convolutions with residual, last step")
def _tcn():
    class Block(nn.Module):
        def __init__(self, c, d):
            super().__init__()
            self.pad = 2 * d
            self.conv = nn.Conv1d(c, c, 3, dilation=d)

        def forward(self, x):
            return x + torch.relu(self.conv(F.pad(x, (self.pad, 0))))

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Conv1d(F_IN, 8, 1)
            self.blocks = nn.Sequential(Block(8, 1), Block(8, 2))
            self.fc = nn.Linear(8, CLASSES)

        def forward(self, x):
            y = self.blocks(self.inp(x.transpose(1, 2)))
            return self.fc(y[:, :, -1])

    return M()


# ------------------------------------------------------------------------------------- edgeseq.nn models


def _zoo(arch: str, **kw):
    from edgeseq.nn import build_model

    return lambda: build_model(arch, F_IN, CLASSES, **kw)


for _arch, _kw in {
    "lmu": dict(hidden=16, memory_d=2, order=6, theta=12.0),
    "mingru": dict(hidden=12),
    "gru": dict(hidden=12),
    "l2mu": dict(hidden=12, encoder_size=8),
    "lmuformer": dict(dim=12, memory_d=2, order=4),
    "s4d": dict(hidden=8, modes=4),
}.items():
    case(f"edgeseq_{_arch}", f"edgeseq.nn {_arch} classifier", spiking=_arch == "l2mu")(_zoo(_arch, **_kw))

del math
