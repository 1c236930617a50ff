"""Typed quantization configuration and the named presets.

Strings become enums here, once; every invalid value raises :class:`~edgeseq.errors.ConfigError`
naming the field. Presets:

- ``naive``: what a generic int8 toolchain does: per-tensor int8 weights and activations, int8
  recurrent state, int8 LMU matrices and 256-entry tables, min/max calibration, per-tensor
  symmetric input quantization, no outlier handling. A baseline that shows what goes wrong.
- ``edgeseq`` (default): per-channel int8 weights; int8 activations (per tensor, 99.99th-percentile
  ranges); 16-bit recurrent state, LMU A/B in int16, LIF membranes in int16, 16-bit gate
  pre-activations with interpolated tables; a per-channel input quantizer with offsets (raw sensor
  units); outlier channels of internal activations detected and handled by SmoothQuant-style scale
  migration into the consuming weights.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from ..errors import ConfigError
from ..ir.types import parse_enum


class Granularity(str, enum.Enum):
    PER_TENSOR = "per_tensor"
    PER_CHANNEL = "per_channel"


class Observer(str, enum.Enum):
    MINMAX = "minmax"
    PERCENTILE = "percentile"
    MSE = "mse"


class OutlierAction(str, enum.Enum):
    """What to do with detected outlier channels of an activation consumed by linear maps."""

    NONE = "none"
    PER_CHANNEL = "per_channel"  # a per-channel activation scale, absorbed by the consuming weights
    SMOOTH = "smooth"  # SmoothQuant migration with strength smooth_alpha
    SPLIT = "split"  # the outlier channels travel in a separate int16 vector


@dataclass(frozen=True)
class TensorOverride:
    """Per-point override (from the mixed-precision search or a config file)."""

    bits: Optional[int] = None
    granularity: Optional[Granularity] = None
    observer: Optional[Observer] = None

    def __post_init__(self):
        if self.granularity is not None:
            object.__setattr__(self, "granularity", parse_enum(Granularity, self.granularity, "granularity"))
        if self.observer is not None:
            object.__setattr__(self, "observer", parse_enum(Observer, self.observer, "observer"))
        if self.bits is not None and self.bits not in (8, 16):
            raise ConfigError(f"override bits must be 8 or 16, got {self.bits!r}", where="overrides")

    def to_dict(self) -> dict:
        d = {}
        if self.bits is not None:
            d["bits"] = self.bits
        if self.granularity is not None:
            d["granularity"] = self.granularity.value
        if self.observer is not None:
            d["observer"] = self.observer.value
        return d


_ENUMS = {
    "weight_granularity": Granularity,
    "activation_granularity": Granularity,
    "observer": Observer,
    "state_observer": Observer,
    "outlier_action": OutlierAction,
}


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize a graph. See the module docstring for the presets.

    Bits are signed widths. ``state_bits`` applies to recurrent state (GRU/LSTM h and c, LMU memory
    and its input, minGRU h) and LIF membranes/synaptic currents; ``lut_bits`` to the inputs and
    outputs of sigmoid/tanh tables (gate pre-activations and gates); ``lut_table_bits`` is log2 of
    the interpolation intervals of 16-bit tables (2^k + 1 entries); ``accumulator_bits`` (32) is the
    matvec accumulator every weight matrix must fit in the worst case (16-bit matrices on 16-bit
    inputs give up a little weight precision for it; 64 lifts the constraint)."""

    name: str = "custom"
    weight_bits: int = 8
    weight_granularity: Granularity = Granularity.PER_CHANNEL
    activation_bits: int = 8
    activation_granularity: Granularity = Granularity.PER_TENSOR
    observer: Observer = Observer.PERCENTILE
    percentile: float = 99.99
    state_bits: int = 16
    state_observer: Observer = Observer.MINMAX
    state_margin: float = 1.1
    lmu_matrix_bits: int = 16
    lut_bits: int = 16
    lut_table_bits: int = 9
    readout_bits: int = 16
    accumulator_bits: int = 32
    input_per_channel: bool = True
    input_offset: bool = True
    outlier_threshold: float = 6.0
    outlier_action: OutlierAction = OutlierAction.SMOOTH
    smooth_alpha: float = 0.5
    split_bits: int = 16
    fold_batchnorm: bool = True
    calib_batch: int = 256
    overrides: Mapping[str, TensorOverride] = field(default_factory=dict)

    def __post_init__(self):
        for name, cls in _ENUMS.items():
            object.__setattr__(self, name, parse_enum(cls, getattr(self, name), name))
        ov = {}
        for k, v in dict(self.overrides or {}).items():
            if isinstance(v, TensorOverride):
                ov[str(k)] = v
            elif isinstance(v, Mapping):
                try:
                    ov[str(k)] = TensorOverride(**v)
                except TypeError as e:
                    raise ConfigError(f"invalid override for '{k}': {e}", where="overrides") from None
            else:
                raise ConfigError(f"override for '{k}' must be a mapping, got {type(v).__name__}", where="overrides")
        object.__setattr__(self, "overrides", ov)
        self.validate()

    def validate(self) -> None:
        def bad(fieldname, msg):
            raise ConfigError(f"{msg}, got {getattr(self, fieldname)!r}", where=f"QuantConfig.{fieldname}")

        for f in ("weight_bits", "lmu_matrix_bits"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) not in (8, 16):
                bad(f, "must be 8 or 16")
        for f in ("activation_bits", "state_bits", "lut_bits", "split_bits", "readout_bits"):
            if (
                not isinstance(getattr(self, f), int)
                or isinstance(getattr(self, f), bool)
                or getattr(self, f) not in (8, 16)
            ):
                bad(f, "must be 8 or 16")
        if not isinstance(self.accumulator_bits, int) or self.accumulator_bits not in (32, 64):
            bad("accumulator_bits", "must be 32 or 64")
        if not isinstance(self.lut_table_bits, int) or not 4 <= self.lut_table_bits <= 12:
            bad("lut_table_bits", "must be an integer in [4, 12]")
        if not isinstance(self.percentile, (int, float)) or not 90.0 <= self.percentile <= 100.0:
            bad("percentile", "must lie in [90, 100]")
        if not isinstance(self.state_margin, (int, float)) or not 1.0 <= self.state_margin <= 4.0:
            bad("state_margin", "must lie in [1, 4]")
        if not isinstance(self.outlier_threshold, (int, float)) or not self.outlier_threshold > 1.0:
            bad("outlier_threshold", "must be > 1 (ratio of a channel's range to the median channel's)")
        if not isinstance(self.smooth_alpha, (int, float)) or not 0.0 <= self.smooth_alpha <= 1.0:
            bad("smooth_alpha", "must lie in [0, 1]")
        if not isinstance(self.calib_batch, int) or self.calib_batch < 1:
            bad("calib_batch", "must be a positive integer")
        for f in ("input_per_channel", "input_offset", "fold_batchnorm"):
            if not isinstance(getattr(self, f), bool):
                bad(f, "must be true or false")
        if not isinstance(self.name, str) or not self.name:
            bad("name", "must be a non-empty string")

    # -- conversion -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, enum.Enum):
                v = v.value
            elif f.name == "overrides":
                v = {k: o.to_dict() for k, o in v.items()}
            d[f.name] = v
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "QuantConfig":
        if not isinstance(d, Mapping):
            raise ConfigError(f"a quantization config must be a mapping, got {type(d).__name__}")
        base = d.get("preset")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known - {"preset"})
        if unknown:
            raise ConfigError(
                f"unknown quantization config field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        kw = {k: v for k, v in d.items() if k != "preset"}
        if base is not None:
            return preset(str(base)).with_(**kw)
        return cls(**kw)

    def with_(self, **changes) -> "QuantConfig":
        known = {f.name for f in fields(self)}
        for k in changes:
            if k not in known:
                raise ConfigError(f"unknown quantization config field '{k}'")
        return replace(self, **changes)

    def override(self, point: str) -> TensorOverride:
        return self.overrides.get(point, TensorOverride())


def _naive() -> QuantConfig:
    return QuantConfig(
        name="naive",
        weight_bits=8,
        weight_granularity=Granularity.PER_TENSOR,
        activation_bits=8,
        activation_granularity=Granularity.PER_TENSOR,
        observer=Observer.MINMAX,
        state_bits=8,
        state_observer=Observer.MINMAX,
        state_margin=1.0,
        lmu_matrix_bits=8,
        lut_bits=8,
        readout_bits=8,
        input_per_channel=False,
        input_offset=False,
        outlier_action=OutlierAction.NONE,
    )


def _edgeseq() -> QuantConfig:
    return QuantConfig(name="edgeseq")


PRESETS = {"naive": _naive, "edgeseq": _edgeseq}


def preset(name: str) -> QuantConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown quantization preset '{name}'; choose one of: {', '.join(PRESETS)}") from None


def resolve_config(config: Union[str, Path, Mapping, QuantConfig, None]) -> QuantConfig:
    """A QuantConfig from a preset name, a JSON file path, a dict or a QuantConfig (None: edgeseq)."""
    if config is None:
        return preset("edgeseq")
    if isinstance(config, QuantConfig):
        return config
    if isinstance(config, Mapping):
        return QuantConfig.from_dict(config)
    if isinstance(config, (str, Path)):
        s = str(config)
        if s in PRESETS:
            return preset(s)
        p = Path(s)
        if p.suffix == ".json" or p.exists():
            from ..util.safeio import read_json

            doc = read_json(p, ConfigError, what="config file")  # bounded, UTF-8 JSON (edgeseq.util.safeio)
            try:
                return QuantConfig.from_dict(doc)
            except ConfigError as e:
                e.where = f"{s}: {e.where}" if e.where else s
                raise
        raise ConfigError(f"unknown quantization config '{s}'; use a preset ({', '.join(PRESETS)}) or a .json file")
    raise ConfigError(f"cannot make a quantization config from {type(config).__name__}")
