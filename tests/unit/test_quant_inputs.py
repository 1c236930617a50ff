"""Bad input to the quantizer gets a typed error naming the problem: NaN/Inf calibration data, empty
or wrongly shaped calibration and validation sets, negative budgets, unknown configs, and a budget
that cannot be met (strict mode), with no output file left behind by the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeseq.errors import BudgetError, ConfigError, DatasetError, NumericsError, ShapeError
from edgeseq.frontends import capture
from edgeseq.quant import quantize
from tests.unit.zoo_cases import build


@pytest.fixture(scope="module")
def graph():
    return capture(build("lmu"), torch.zeros(1, 8, 6))


def test_nan_calibration_names_the_sequences(graph, rng):
    x = rng.normal(size=(10, 12, 6))
    x[3, 5, 2] = np.nan
    x[7, 0, 0] = np.inf
    with pytest.raises(
        NumericsError, match=r"calibration data contains 2 NaN/Inf values \(first: nan at index \(3, 5, 2\)\)"
    ):
        quantize(graph, x)


@pytest.mark.parametrize(
    "shape, err, msg",
    [
        ((0, 12, 6), DatasetError, "is empty"),
        ((4, 0, 6), DatasetError, "is empty"),
        ((4, 12, 5), ShapeError, r"must be \(N, T, 6\), got shape \(4, 12, 5\)"),
        ((12, 6), ShapeError, r"must be \(N, T, 6\)"),
    ],
)
def test_empty_or_misshapen_calibration(graph, shape, err, msg):
    with pytest.raises(err, match=msg):
        quantize(graph, np.zeros(shape))


def test_validation_set_is_checked(graph, rng):
    x = rng.normal(size=(8, 12, 6))
    with pytest.raises(ShapeError, match=r"validation labels must have shape \(8,\)"):
        quantize(graph, x, val=(x, np.zeros(5, int)))
    bad = x.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(
        NumericsError, match=r"validation data contains a NaN/Inf value \(first: nan at index \(0, 0, 0\)\)"
    ):
        quantize(graph, x, val=(bad, np.zeros(8, int)))
    with pytest.raises(ConfigError, match="non-negative"):
        quantize(graph, x, val=(x, np.zeros(8, int)), budget=-1.0)


def test_unknown_config_name(graph, rng):
    with pytest.raises(ConfigError, match="nosuch"):
        quantize(graph, rng.normal(size=(4, 8, 6)), "nosuch")


def test_budget_that_cannot_be_met_raises_in_strict_mode(rng):
    # naive per-tensor int8 on inputs with one channel 30x larger than the rest: the small channels
    # lose their resolution, so decisions flip; labels are the float decisions (float accuracy 100%)
    g = capture(build("lmu"), torch.zeros(1, 8, 6))
    x = rng.normal(size=(200, 16, 6))
    x[..., 0] *= 30.0
    from edgeseq.ir import run

    (yf,), _ = run(g, x)
    y = yf.argmax(-1)
    q = quantize(g, x[:64], "naive")
    assert (q.predict(x, "fake") != y).any(), "test setup: naive int8 must flip some decisions"
    with pytest.raises(BudgetError, match=r"vs float 100.00% on 200 validation sequences \(budget 0.0 points\)"):
        quantize(g, x[:64], "naive", val=(x, y), budget=0.0, max_promotions=0, strict=True)
    # not strict: the best plan is returned with the miss recorded
    q2 = quantize(g, x[:64], "naive", val=(x, y), budget=0.0, max_promotions=0)
    assert q2.info["search"]["met"] is False and q2.info["search"]["final_accuracy"] < 1.0
