"""The tolerance policy of ``edgeseq validate``: what "the artifact computes the model" means.

One :class:`FormatTolerance` per number format of the artifact's outputs, plus task-level limits:

============  =================================================================================
float32       max abs error <= 1e-4 against the reference (outputs of every artifact kind)
float16       max abs error <= 1e-2
int8, int16,  bit exact: 0 LSB of the output quantisation step (raise ``lsb`` to allow rounding),
integer       against the integer-exact interpreter; the step of each output comes from the
              artifact's manifest (or its stored quantized graph), one per output or per feature
qdq           the LSBs the exporter declares in the manifest for the model's family
              (``quantization.tolerance.lsb``, e.g. 16 for recurrent models); 16 when it declares
              none; a ``qdq`` entry in a tolerance file replaces both
spikes        identical spike trains (``spike_mismatches`` = 0) in every format
decisions     argmax of pooled outputs identical on >= 99% of sequences (``min_decision_agreement``)
accuracy      task accuracy within 1 point of the reference's (``max_accuracy_drop`` = 0.01)
============  =================================================================================

Errors of integer formats are counted in whole LSBs: a float32 output ``q * scale`` differs from
the reference's float64 ``q * scale`` by its rounding, which is no LSB (see
:func:`~edgeseq.validate.compare.output_metrics`).

Override any of it with a JSON file (``edgeseq validate --tolerance tol.json``)::

    {"formats": {"float32": {"max_abs": 1e-3}}, "spike_mismatches": 2, "min_decision_agreement": 0.98}
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping, Optional

from ..errors import ConfigError


class NumberFormat(str, enum.Enum):
    """Number format of an artifact's arithmetic (as recorded by its exporter)."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    INT16 = "int16"
    INT8 = "int8"
    INTEGER = "integer"  # an integer program of mixed widths (edgeseq.quant)
    QDQ = "qdq"  # float model with Quantize/DequantizeLinear at the plan's points (edgeseq.export.onnx.qdq)

    @property
    def is_integer(self) -> bool:
        """Outputs on an integer grid, checked against the integer-exact interpreter in LSBs."""
        return self in (NumberFormat.INT8, NumberFormat.INT16, NumberFormat.INTEGER, NumberFormat.QDQ)


@dataclass(frozen=True)
class FormatTolerance:
    """Allowed deviation of one number format: ``max_abs`` (float formats) or ``lsb`` units of the
    output quantisation step (integer formats; 0 = bit exact)."""

    max_abs: Optional[float] = None
    lsb: Optional[int] = None

    def __post_init__(self):
        if self.max_abs is None and self.lsb is None:
            raise ConfigError("a format tolerance needs 'max_abs' or 'lsb'")
        if self.max_abs is not None and not (isinstance(self.max_abs, (int, float)) and self.max_abs >= 0):
            raise ConfigError(f"'max_abs' must be a non-negative number, got {self.max_abs!r}")
        if self.lsb is not None and not (
            isinstance(self.lsb, int) and not isinstance(self.lsb, bool) and self.lsb >= 0
        ):
            raise ConfigError(f"'lsb' must be a non-negative integer, got {self.lsb!r}")

    def limit(self, lsb_size: Optional[float]) -> tuple[float, str]:
        """(absolute limit, description). Integer formats need the output's LSB size."""
        if self.lsb is not None and lsb_size is not None:
            return self.lsb * lsb_size, (f"{self.lsb} LSB" if self.lsb else "bit exact")
        if self.max_abs is not None:
            return float(self.max_abs), f"max abs {self.max_abs:g}"
        return 0.0, "bit exact"


def _default_formats() -> dict[NumberFormat, FormatTolerance]:
    return {
        NumberFormat.FLOAT32: FormatTolerance(max_abs=1e-4),
        NumberFormat.FLOAT16: FormatTolerance(max_abs=1e-2),
        NumberFormat.INT16: FormatTolerance(lsb=0),
        NumberFormat.INT8: FormatTolerance(lsb=0),
        NumberFormat.INTEGER: FormatTolerance(lsb=0),
        NumberFormat.QDQ: QDQ_DEFAULT,
    }


# A QDQ model rounds differently from the integer program (float32 arithmetic between the points):
# unless a tolerance file says otherwise, the limit is the one its exporter declares in the manifest
# for the model's family (quantization.tolerance.lsb), and this value when it declares none.
QDQ_DEFAULT = FormatTolerance(lsb=16)


@dataclass(frozen=True)
class TolerancePolicy:
    """Every limit ``edgeseq validate`` checks (see the module docstring for the defaults)."""

    formats: Mapping[NumberFormat, FormatTolerance] = field(default_factory=_default_formats)
    spike_mismatches: int = 0
    min_decision_agreement: float = 0.99
    max_accuracy_drop: float = 0.01
    golden_consistency: float = 1e-5  # stored golden outputs vs the reference on the stored graph (relative)

    def __post_init__(self):
        fm = {}
        for k, v in dict(self.formats).items():
            key = _parse_format(k)
            fm[key] = v if isinstance(v, FormatTolerance) else _format_tol(v, key.value)
        object.__setattr__(self, "formats", fm)
        if (
            not isinstance(self.spike_mismatches, int)
            or isinstance(self.spike_mismatches, bool)
            or self.spike_mismatches < 0
        ):
            raise ConfigError(f"'spike_mismatches' must be a non-negative integer, got {self.spike_mismatches!r}")
        for name in ("min_decision_agreement", "max_accuracy_drop"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
                raise ConfigError(f"'{name}' must be a number in [0, 1], got {v!r}")
        if not isinstance(self.golden_consistency, (int, float)) or self.golden_consistency < 0:
            raise ConfigError(f"'golden_consistency' must be a non-negative number, got {self.golden_consistency!r}")

    def for_format(self, fmt: "NumberFormat | str") -> FormatTolerance:
        fmt = _parse_format(fmt)
        try:
            return self.formats[fmt]
        except KeyError:
            raise ConfigError(f"the tolerance policy has no entry for number format '{fmt.value}'") from None

    # -- (de)serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "formats": {
                k.value: {n: v for n, v in asdict(t).items() if v is not None} for k, t in self.formats.items()
            },
            "spike_mismatches": self.spike_mismatches,
            "min_decision_agreement": self.min_decision_agreement,
            "max_accuracy_drop": self.max_accuracy_drop,
            "golden_consistency": self.golden_consistency,
        }

    def merged(self, overrides: Mapping[str, Any], where: str = "tolerance") -> "TolerancePolicy":
        """This policy with the entries of ``overrides`` (the JSON layout of :meth:`to_dict`) replaced."""
        if not isinstance(overrides, Mapping):
            raise ConfigError("a tolerance override must be a JSON object", where=where)
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(
                f"unknown tolerance key(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}", where=where
            )
        changes: dict[str, Any] = {k: v for k, v in overrides.items() if k != "formats"}
        if "formats" in overrides:
            if not isinstance(overrides["formats"], Mapping):
                raise ConfigError("'formats' must map format names to {max_abs|lsb}", where=where)
            formats = dict(self.formats)
            for name, spec in overrides["formats"].items():
                try:
                    formats[_parse_format(name)] = _format_tol(spec, name)
                except ConfigError as e:
                    e.where = where
                    raise
            changes["formats"] = formats
        try:
            return replace(self, **changes)
        except ConfigError as e:
            e.where = e.where or where
            raise

    @classmethod
    def load(cls, path) -> "TolerancePolicy":
        """The default policy overridden by the JSON file at ``path``."""
        from ..util.safeio import read_json

        path = Path(path)
        data = read_json(path, ConfigError, what="tolerance file")  # bounded, UTF-8 JSON (edgeseq.util.safeio)
        if not isinstance(data, Mapping):
            raise ConfigError("the tolerance file must hold a JSON object", where=str(path))
        return cls().merged(data, where=str(path))


def _parse_format(name: "NumberFormat | str") -> NumberFormat:
    if isinstance(name, NumberFormat):
        return name
    try:
        return NumberFormat(str(name).lower())
    except ValueError:
        raise ConfigError(
            f"unknown number format '{name}'; known: {', '.join(f.value for f in NumberFormat)}"
        ) from None


def _format_tol(spec: Any, name: str) -> FormatTolerance:
    if isinstance(spec, FormatTolerance):
        return spec
    if not isinstance(spec, Mapping) or not set(spec) <= {"max_abs", "lsb"}:
        raise ConfigError(f"format '{name}' needs an object with 'max_abs' and/or 'lsb', got {spec!r}")
    return FormatTolerance(max_abs=spec.get("max_abs"), lsb=spec.get("lsb"))


def format_of(numerics: Mapping[str, str] | str | None) -> NumberFormat:
    """The number format of an artifact from its exporter's per-node numerics (e.g. the C backend's
    ``{"gru": "f32", ...}``): the narrowest format any node uses, float32 when nothing is recorded."""
    if numerics is None:
        return NumberFormat.FLOAT32
    values = [numerics] if isinstance(numerics, str) else list(numerics.values())
    order = [
        NumberFormat.QDQ,
        NumberFormat.INT8,
        NumberFormat.INT16,
        NumberFormat.INTEGER,
        NumberFormat.FLOAT16,
        NumberFormat.FLOAT32,
    ]
    found = set()
    for v in values:
        s = str(v).lower()
        if s in ("integer", "int"):
            found.add(NumberFormat.INTEGER)
        elif s == "qdq":
            found.add(NumberFormat.QDQ)
        elif s in ("f32", "float32", "fp32"):
            found.add(NumberFormat.FLOAT32)
        elif s in ("f16", "float16", "fp16", "half"):
            found.add(NumberFormat.FLOAT16)
        elif "16" in s:
            found.add(NumberFormat.INT16)
        elif "8" in s:
            found.add(NumberFormat.INT8)
        else:
            raise ConfigError(f"unknown numeric format '{v}' in the artifact manifest")
    for f in order:
        if f in found:
            return f
    return NumberFormat.FLOAT32
