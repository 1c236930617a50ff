"""Sequence classifiers of the model zoo. Every model maps raw (B, T, F) input to class logits,
is built from a JSON-able config (:func:`build_model`) so checkpoints hold no code, and is
capturable into the IR by :func:`edgeseq.capture`.

Architectures: rnn, gru, lstm, mingru, minlstm, lmu, s4d (float); lif, l2mu, lmuformer with
``spiking=True`` (spiking). The first layer of each is a fixed :class:`Standardize` of the raw
input, so the device sees raw physical units and the scaling folds into the first weights.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .l2mu import L2MU
from .layers import BatchNorm, CausalConv1d, Readout, Standardize
from .lmu import LMU
from .minrnn import MinGRU, MinLSTM
from .s4d import S4D
from .spiking import LIF


def _standardize(in_features: int, mean: Optional[Sequence[float]], std: Optional[Sequence[float]]) -> Standardize:
    mean = [0.0] * in_features if mean is None else list(mean)
    std = [1.0] * in_features if std is None else list(std)
    if len(mean) != in_features or len(std) != in_features:
        raise ConfigError(f"input mean/std need {in_features} values, got {len(mean)}/{len(std)}")
    return Standardize(mean, std)


class SpikeActivation(nn.Module):
    """A LIF layer used as an activation: (B, T, H) currents -> (B, T, H) spikes."""

    def __init__(self, size: int, beta: float = 0.9, threshold: float = 1.0, learn: bool = True):
        super().__init__()
        self.lif = LIF(size, beta=beta, threshold=threshold, learn_beta=learn, learn_threshold=learn)

    def forward(self, x: Tensor) -> Tensor:
        return self.lif(x)[0]


class RecurrentClassifier(nn.Module):
    """standardize -> [causal conv stem -> relu] -> recurrent stack (rnn | gru | lstm | mingru | minlstm |
    lmu) -> readout -> linear.

    ``stem=C`` adds a causal convolution (``stem_kernel`` taps, C channels) with a ReLU in front of the
    recurrence: a short learned filter bank over raw sensor / spectral frames that stays streamable
    (the device keeps ``stem_kernel - 1`` past frames)."""

    def __init__(
        self,
        arch: str,
        in_features: int,
        n_classes: int,
        hidden: int = 64,
        layers: int = 1,
        readout: str = "last",
        input_mean=None,
        input_std=None,
        stem: int = 0,
        stem_kernel: int = 5,
        **cell: Any,
    ):
        super().__init__()
        self.arch = arch
        self.norm = _standardize(in_features, input_mean, input_std)
        self.stem: Optional[nn.Module] = None
        if stem:
            if stem < 1 or stem_kernel < 1:
                raise ConfigError(f"stem channels and stem_kernel must be >= 1, got {stem} / {stem_kernel}")
            self.stem = CausalConv1d(in_features, stem, stem_kernel)
            in_features = stem
        self.rnn: Optional[nn.Module] = None
        self.layers = nn.ModuleList()
        if arch in ("rnn", "gru", "lstm"):
            cls = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[arch]
            self.rnn = cls(in_features, hidden, num_layers=layers, batch_first=True, **cell)
            out = hidden
        elif arch in ("mingru", "minlstm"):
            cls = MinGRU if arch == "mingru" else MinLSTM
            size = in_features
            for _ in range(layers):
                self.layers.append(cls(size, hidden, **cell))
                size = hidden
            out = hidden
        elif arch == "lmu":
            size = in_features
            for _ in range(layers):
                lmu = LMU(size, hidden, **cell)
                self.layers.append(lmu)
                size = lmu.hidden_size
            out = size
        else:
            raise ConfigError(f"RecurrentClassifier does not build '{arch}'")
        self.readout = Readout(readout)
        self.head = nn.Linear(out, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        if self.stem is not None:
            x = torch.relu(self.stem(x))
        if self.rnn is not None:
            x, _ = self.rnn(x)
        for layer in self.layers:
            x, _ = layer(x)
        return self.head(self.readout(x))


class LIFClassifier(nn.Module):
    """standardize -> [linear -> LIF] x layers -> linear -> non-resetting LIF membrane -> mean."""

    def __init__(
        self,
        in_features: int,
        n_classes: int,
        hidden: int = 64,
        layers: int = 2,
        beta: float = 0.9,
        threshold: float = 1.0,
        reset: str = "subtract",
        recurrent: bool = False,
        readout: str = "mean",
        input_mean=None,
        input_std=None,
    ):
        super().__init__()
        self.norm = _standardize(in_features, input_mean, input_std)
        self.fcs = nn.ModuleList()
        self.lifs = nn.ModuleList()
        size = in_features
        for i in range(layers):
            self.fcs.append(nn.Linear(size, hidden))
            rec = "all_to_all" if recurrent and i == 0 else "none"
            self.lifs.append(
                LIF(
                    hidden,
                    beta=beta,
                    threshold=threshold,
                    reset=reset,
                    recurrence=rec,
                    learn_beta=True,
                    learn_threshold=True,
                    per_neuron=True,
                )
            )
            size = hidden
        self.out_fc = nn.Linear(size, n_classes)
        self.out_lif = LIF(n_classes, beta=beta, reset="none", emit="membrane", learn_beta=True)
        self.readout = Readout(readout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        for fc, lif in zip(self.fcs, self.lifs):
            x, _ = lif(fc(x))
        mem, _ = self.out_lif(self.out_fc(x))
        return self.readout(mem)


class L2MUClassifier(nn.Module):
    """standardize -> L2MU (with spike encoder) -> linear -> non-resetting LIF membrane -> mean."""

    def __init__(
        self,
        in_features: int,
        n_classes: int,
        hidden: int = 64,
        memory_d: int = 4,
        order: int = 8,
        theta: float = 32.0,
        encoder_size: int = 32,
        neuron: str = "leaky",
        beta: float = 0.9,
        readout: str = "mean",
        input_mean=None,
        input_std=None,
        **cell: Any,
    ):
        super().__init__()
        self.norm = _standardize(in_features, input_mean, input_std)
        self.l2mu = L2MU(
            in_features, hidden, memory_d, order, theta, encoder_size=encoder_size, neuron=neuron, beta=beta, **cell
        )
        self.out_fc = nn.Linear(hidden, n_classes)
        self.out_lif = LIF(n_classes, beta=beta, reset="none", emit="membrane", learn_beta=True)
        self.readout = Readout(readout)

    def forward(self, x: Tensor) -> Tensor:
        s, _ = self.l2mu(self.norm(x))
        mem, _ = self.out_lif(self.out_fc(s))
        return self.readout(mem)


class LMUFormer(nn.Module):
    """LMUFormer-style model (Liu et al. 2024), causal and streamable:

        patch embedding: causal conv -> BN -> act -> causal conv -> BN -> act
        token mixer:     x + act(BN(LMU(x)))                (LMU with a dense hidden cell: FFT-trainable)
        channel mixer:   x + act(BN(W2 act(BN(W1 x))))
        head:            readout -> linear

    ``spiking=True`` replaces every activation by a LIF layer (the spiking LMUFormer)."""

    def __init__(
        self,
        in_features: int,
        n_classes: int,
        dim: int = 48,
        memory_d: int = 8,
        order: int = 8,
        theta: float = 32.0,
        kernel: int = 3,
        mlp_ratio: int = 2,
        spiking: bool = False,
        beta: float = 0.9,
        readout: str = "mean",
        input_mean=None,
        input_std=None,
    ):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ConfigError("LMUFormer dim must be an even number >= 2")
        self.spiking = spiking
        self.norm = _standardize(in_features, input_mean, input_std)

        def act(n):
            return SpikeActivation(n, beta) if spiking else nn.ReLU()

        half, hid = dim // 2, dim * mlp_ratio
        self.conv1, self.bn1, self.act1 = CausalConv1d(in_features, half, kernel), BatchNorm(half), act(half)
        self.conv2, self.bn2, self.act2 = CausalConv1d(half, dim, kernel), BatchNorm(dim), act(dim)
        self.lmu = LMU(
            dim, dim, memory_d, order, theta, hidden_cell="dense", input_to_hidden=True, activation="identity"
        )
        self.bn3, self.act3 = BatchNorm(dim), act(dim)
        self.fc1, self.bn4, self.act4 = nn.Linear(dim, hid), BatchNorm(hid), act(hid)
        self.fc2, self.bn5, self.act5 = nn.Linear(hid, dim), BatchNorm(dim), act(dim)
        self.readout = Readout(readout)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        y, _ = self.lmu(x)
        x = x + self.act3(self.bn3(y))
        y = self.act4(self.bn4(self.fc1(x)))
        x = x + self.act5(self.bn5(self.fc2(y)))
        return self.head(self.readout(x))


class S4DClassifier(nn.Module):
    """standardize -> linear encoder -> [x + W act(S4D(x))] x layers -> readout -> linear.

    Each block is a diagonal state-space layer (``modes`` modes per channel, complex pairs or real),
    a GELU and a position-wise linear map with a residual connection, as in the S4 / S4D models."""

    def __init__(
        self,
        in_features: int,
        n_classes: int,
        hidden: int = 64,
        modes: int = 16,
        layers: int = 2,
        complex_modes: bool = True,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        readout: str = "mean",
        input_mean=None,
        input_std=None,
    ):
        super().__init__()
        self.norm = _standardize(in_features, input_mean, input_std)
        self.encoder = nn.Linear(in_features, hidden)
        self.ssms = nn.ModuleList(S4D(hidden, modes, complex_modes, dt_min, dt_max) for _ in range(layers))
        self.mixers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.act = nn.GELU()
        self.readout = Readout(readout)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.encoder(self.norm(x))
        for ssm, mix in zip(self.ssms, self.mixers):
            y, _ = ssm(x)
            x = x + mix(self.act(y))
        return self.head(self.readout(x))


ARCHS = ("rnn", "gru", "lstm", "mingru", "minlstm", "lmu", "s4d", "lif", "l2mu", "lmuformer")
SPIKING_ARCHS = ("lif", "l2mu")


def build_model(arch: str, in_features: int, n_classes: int, **config: Any) -> nn.Module:
    """Build a zoo model from its JSON-able config; the config is kept on ``model.config``."""
    if arch in ("rnn", "gru", "lstm", "mingru", "minlstm", "lmu"):
        model: nn.Module = RecurrentClassifier(arch, in_features, n_classes, **config)
    elif arch == "lif":
        model = LIFClassifier(in_features, n_classes, **config)
    elif arch == "l2mu":
        model = L2MUClassifier(in_features, n_classes, **config)
    elif arch == "lmuformer":
        model = LMUFormer(in_features, n_classes, **config)
    elif arch == "s4d":
        model = S4DClassifier(in_features, n_classes, **config)
    else:
        raise ConfigError(f"unknown architecture '{arch}'; choose one of: {', '.join(ARCHS)}")
    model.config = {"arch": arch, "in_features": in_features, "n_classes": n_classes, **config}
    return model


def is_spiking(config: dict) -> bool:
    return config.get("arch") in SPIKING_ARCHS or bool(config.get("spiking"))
