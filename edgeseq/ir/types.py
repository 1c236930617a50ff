"""Small typed vocabulary of the IR: value types and the enums that replace strings.

Strings are parsed into these enums once, at the boundary (CLI, file loading, capture), with
:func:`parse_enum`, which names the accepted values when it fails.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeVar

from ..errors import ConfigError


@dataclass(frozen=True)
class ValueType:
    """Type of a value flowing between IR nodes.

    ``temporal`` values have shape (B, T, features) and are processed step by step; non-temporal
    (pooled) values have shape (B, features) and appear after a :class:`~edgeseq.ir.ops.Readout`.
    ``spikes`` marks values that only hold 0 or the neuron's spike amplitude (exact in any dtype).
    """

    features: int
    temporal: bool = True
    spikes: bool = False

    def describe(self) -> str:
        shape = "(B, T, %d)" % self.features if self.temporal else "(B, %d)" % self.features
        return shape + (" spikes" if self.spikes else "")


class Act(str, enum.Enum):
    """Pointwise activation functions."""

    IDENTITY = "identity"
    RELU = "relu"
    TANH = "tanh"
    SIGMOID = "sigmoid"
    HARDSIGMOID = "hardsigmoid"
    SILU = "silu"
    GELU = "gelu"  # exact erf form
    GELU_TANH = "gelu_tanh"  # tanh approximation
    LEAKY_RELU = "leaky_relu"  # uses Activation.slope
    HARDTANH = "hardtanh"  # uses Activation.lo / hi
    SOFTPLUS = "softplus"
    EXP = "exp"
    MINRNN_G = "minrnn_g"  # x + 0.5 for x >= 0, sigmoid(x) below: minGRU/minLSTM positive candidate


#: activations that quantize as a clamp of the integers (no table): the output keeps the input's grid
CLAMP_ACTS = (Act.IDENTITY, Act.RELU, Act.HARDTANH)
#: table activations whose output has a fixed unit scale, and the name of that unit
UNIT_ACTS = {Act.TANH: "tanh", Act.SIGMOID: "sigmoid", Act.HARDSIGMOID: "sigmoid"}


class ResetRule(str, enum.Enum):
    """What a spiking neuron does after a spike (R_t = H(U_{t-1} - threshold), H strict).

    SUBTRACT:   U_t = beta U_{t-1} + I_t - R_t * threshold
    ZERO:       U_t = beta (1 - R_t) U_{t-1} + I_t          (snntorch Leaky)
    ZERO_TOTAL: U_t = (1 - R_t) (beta U_{t-1} + I_t)        (snntorch RLeaky, Synaptic, RSynaptic)
    NONE:       U_t = beta U_{t-1} + I_t
    """

    SUBTRACT = "subtract"
    ZERO = "zero"
    ZERO_TOTAL = "zero_total"
    NONE = "none"


class NeuronKind(str, enum.Enum):
    """LEAKY: one membrane (LIF). SYNAPTIC: current-based LIF with a synaptic current (alpha, beta)."""

    LEAKY = "leaky"
    SYNAPTIC = "synaptic"


class Recurrence(str, enum.Enum):
    """Recurrent connection of a spiking layer onto its own input current, from S_{t-1}."""

    NONE = "none"
    ONE_TO_ONE = "one_to_one"  # I_t += V * S_{t-1}
    ALL_TO_ALL = "all_to_all"  # I_t += W S_{t-1} + b


class Discretizer(str, enum.Enum):
    """Discretisation of the continuous Legendre system (dt = 1 step)."""

    ZOH = "zoh"
    EULER = "euler"


class ReadoutMode(str, enum.Enum):
    """Temporal readouts: LAST step, MEAN over steps, SUM over steps (a spike count on spikes)."""

    LAST = "last"
    MEAN = "mean"
    SUM = "sum"


E = TypeVar("E", bound=enum.Enum)


def parse_enum(cls: type[E], value: object, what: str | None = None) -> E:
    """Parse ``value`` (an enum member or its string value) into ``cls`` or raise ConfigError."""
    if isinstance(value, cls):
        return value
    try:
        return cls(str(value).lower())
    except ValueError:
        choices = ", ".join(m.value for m in cls)
        raise ConfigError(f"unknown {what or cls.__name__} '{value}'; expected one of: {choices}") from None
