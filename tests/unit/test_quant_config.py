"""QuantConfig: presets, dict/JSON round trip, validation errors that name the field."""

from __future__ import annotations

import json

import pytest

from edgeseq.errors import ConfigError
from edgeseq.quant import QuantConfig, preset, resolve_config
from edgeseq.quant.config import Granularity, Observer, OutlierAction, TensorOverride


def test_presets():
    naive, es = preset("naive"), preset("edgeseq")
    assert naive.weight_granularity is Granularity.PER_TENSOR and naive.state_bits == 8 and naive.lmu_matrix_bits == 8
    assert naive.outlier_action is OutlierAction.NONE and naive.observer is Observer.MINMAX
    assert es.weight_granularity is Granularity.PER_CHANNEL and es.state_bits == 16 and es.lmu_matrix_bits == 16
    assert es.input_per_channel and es.outlier_action is OutlierAction.SMOOTH
    assert resolve_config(None).name == "edgeseq" and resolve_config("naive").name == "naive"
    with pytest.raises(ConfigError, match="naive, edgeseq"):
        preset("int4")


def test_dict_round_trip_with_overrides(tmp_path):
    cfg = preset("edgeseq").with_(observer="mse", overrides={"lmu:u": {"bits": 16}, "head": TensorOverride(8)})
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d
    again = QuantConfig.from_dict(d)
    assert again == cfg and again.observer is Observer.MSE and again.overrides["lmu:u"].bits == 16
    p = tmp_path / "q.json"
    p.write_text(json.dumps({"preset": "naive", "state_bits": 16}))
    c = resolve_config(str(p))
    assert c.name == "naive" and c.state_bits == 16 and c.weight_bits == 8


@pytest.mark.parametrize(
    "field,value,pattern",
    [
        ("weight_bits", 4, "weight_bits"),
        ("activation_bits", 12, "activation_bits"),
        ("state_bits", True, "state_bits"),
        ("percentile", 50.0, "percentile"),
        ("smooth_alpha", 1.5, "smooth_alpha"),
        ("outlier_threshold", 1.0, "outlier_threshold"),
        ("lut_table_bits", 20, "lut_table_bits"),
        ("observer", "median", "observer.*minmax, percentile, mse"),
        ("weight_granularity", "per_row", "granularity"),
        ("outlier_action", "clip", "outlier_action"),
        ("state_margin", 0.5, "state_margin"),
        ("input_offset", "yes", "input_offset"),
        ("accumulator_bits", 16, "accumulator_bits"),
    ],
)
def test_invalid_values_name_the_field(field, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        QuantConfig(**{field: value})


def test_unknown_fields_and_bad_sources(tmp_path):
    with pytest.raises(ConfigError, match="unknown quantization config field.*weight_bit"):
        QuantConfig.from_dict({"weight_bit": 8})
    with pytest.raises(ConfigError, match="unknown quantization config"):
        resolve_config("int4")
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json"):
        resolve_config(str(p))
    p.write_text(json.dumps({"state_bits": 7}))
    with pytest.raises(ConfigError, match="state_bits") as ei:
        resolve_config(str(p))
    assert "bad.json" in str(ei.value)
    with pytest.raises(ConfigError, match="override"):
        QuantConfig(overrides={"x": {"bits": 4}})
    with pytest.raises(ConfigError):
        resolve_config(3.5)
