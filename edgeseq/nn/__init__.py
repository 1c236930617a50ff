"""The edgeseq model zoo in PyTorch: cells with parallel (training) and streaming (step) forms,
spiking neurons as pure functional steps, and ready-made sequence classifiers.

All layers take batch-first input (B, T, F) and return ``(y, state)`` like torch's RNNs.
"""

from ..ir.legendre import lmu_matrices
from .functional import act_fn
from .l2mu import L2MU
from .layers import BatchNorm, CausalConv1d, Readout, Standardize
from .lmu import LMU
from .minrnn import MinGRU, MinLSTM, chunked_scan, log_space_scan
from .models import (
    ARCHS,
    L2MUClassifier,
    LIFClassifier,
    LMUFormer,
    RecurrentClassifier,
    S4DClassifier,
    SpikeActivation,
    build_model,
    is_spiking,
)
from .s4d import S4D
from .spiking import LIF, NeuronPopulation, leaky_step, spike, synaptic_step

__all__ = [
    "ARCHS",
    "BatchNorm",
    "CausalConv1d",
    "L2MU",
    "L2MUClassifier",
    "LIF",
    "LIFClassifier",
    "LMU",
    "LMUFormer",
    "MinGRU",
    "MinLSTM",
    "NeuronPopulation",
    "Readout",
    "RecurrentClassifier",
    "S4D",
    "S4DClassifier",
    "SpikeActivation",
    "Standardize",
    "act_fn",
    "build_model",
    "chunked_scan",
    "is_spiking",
    "leaky_step",
    "lmu_matrices",
    "log_space_scan",
    "spike",
    "synaptic_step",
]
