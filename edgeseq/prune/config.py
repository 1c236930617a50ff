"""Typed pruning configs. Strings (CLI, YAML) are parsed into these once, at the boundary."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Optional

from ..errors import ConfigError
from ..ir.types import parse_enum


class Criterion(str, enum.Enum):
    """How the importance of a hidden unit (structured) is scored.

    ``weight``: L2 norm of all weights that feed the unit (its rows in every gate of the input and
    recurrent matrices) and that read it (its columns in the recurrent matrix and in the next
    layer or readout head); needs no data. ``activation``: the expected squared change of the
    consumers' inputs when the unit alone is removed, from calibration data: sum over consumers of
    E[a_j^2] |W[:, j]|^2 (Var[a_j] where the unit's mean can be folded into the consumer's bias);
    the classifier head uses the statistics of the temporal readout. ``reconstruction``: greedy
    backward elimination on calibration data: repeatedly remove the unit whose removal least
    increases the error of the best least-squares reconstruction of every consumer's input from the
    remaining units (accounts for correlated units, which per-unit scores cannot). ``random``: a
    seeded random ranking (a baseline). Groups whose activity is not observable (LMU memory
    dimensions, the L2MU spike encoder) use ``weight`` under the data-driven criteria."""

    WEIGHT = "weight"
    ACTIVATION = "activation"
    RECONSTRUCTION = "reconstruction"
    RANDOM = "random"


class Compensation(str, enum.Enum):
    """What happens to the layers that read removed units (needs calibration data).

    ``none``: their columns are simply dropped. ``mean``: each removed unit's mean contribution is
    folded into the consumer's bias (exact for a unit with constant output). ``lstsq``: the kept
    columns (and the bias) of every linear consumer are refit by least squares so that the
    consumer's input is reconstructed as well as possible from the kept units on the calibration
    data; consumers without a bias get the no-intercept fit."""

    NONE = "none"
    MEAN = "mean"
    LSTSQ = "lstsq"


def _fraction(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number in [0, 1), got {value!r}") from None
    if not 0.0 <= v < 1.0:
        raise ConfigError(f"{name} must lie in [0, 1), got {v}")
    return v


@dataclass(frozen=True)
class StructuredConfig:
    """Remove whole hidden units (and optionally LMU memory dimensions): the result is a smaller
    dense model of the same architecture, rebuilt from its config.

    ``sparsity``: fraction of hidden units removed in every layer (spiking encoders included);
    ``memory_sparsity``: fraction of LMU / L2MU memory dimensions removed (each dimension is
    ``order`` memory cells); ``criterion``: see :class:`Criterion`; ``min_units``: never keep
    fewer units per layer; ``seed``: for the random criterion; ``compensate``: see
    :class:`Compensation` (applies when calibration data is given; ``True``/``False`` mean
    ``lstsq``/``none``)."""

    sparsity: float = 0.5
    memory_sparsity: float = 0.0
    criterion: Criterion = Criterion.RECONSTRUCTION
    min_units: int = 1
    seed: int = 0
    compensate: Compensation = Compensation.LSTSQ

    def __post_init__(self):
        object.__setattr__(self, "sparsity", _fraction(self.sparsity, "sparsity"))
        object.__setattr__(self, "memory_sparsity", _fraction(self.memory_sparsity, "memory_sparsity"))
        object.__setattr__(self, "criterion", parse_enum(Criterion, self.criterion, "pruning criterion"))
        comp = self.compensate
        if isinstance(comp, bool):
            comp = Compensation.LSTSQ if comp else Compensation.NONE
        object.__setattr__(self, "compensate", parse_enum(Compensation, comp, "compensation"))
        if not isinstance(self.min_units, int) or self.min_units < 1:
            raise ConfigError(f"min_units must be an integer >= 1, got {self.min_units!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kind"] = "structured"
        d["criterion"] = self.criterion.value
        d["compensate"] = self.compensate.value
        return d


@dataclass(frozen=True)
class UnstructuredConfig:
    """Zero the ``sparsity`` fraction of smallest-magnitude weights of every weight matrix
    (per tensor, i.e. per layer). The zeros are kept by masks through fine-tuning; the model keeps
    its shapes. ``include`` / ``exclude``: optional substrings of parameter names to restrict
    which weights are pruned (the learnable L2MU memory transition ``a`` is always excluded)."""

    sparsity: float = 0.5
    include: Optional[tuple[str, ...]] = None
    exclude: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "sparsity", _fraction(self.sparsity, "sparsity"))
        if self.include is not None:
            object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kind"] = "unstructured"
        return d


CONFIGS = (StructuredConfig, UnstructuredConfig)
