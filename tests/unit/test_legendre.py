import numpy as np
import pytest
from scipy.signal import cont2discrete

from edgeseq.errors import ConfigError
from edgeseq.ir.legendre import legendre_system
from edgeseq.nn import lmu_matrices


@pytest.mark.parametrize("order,theta", [(1, 1.0), (4, 10.0), (8, 32.0), (12, 100.0), (16, 784.0), (6, 2.5)])
def test_zoh_matches_scipy(order, theta):
    a, b = legendre_system(order)
    ad, bd, *_ = cont2discrete((a / theta, b / theta, np.eye(order), np.zeros((order, 1))), dt=1.0, method="zoh")
    abar, bbar = lmu_matrices(order, theta, "zoh")
    assert abar.shape == (order, order) and bbar.shape == (order, 1)
    np.testing.assert_allclose(abar, ad, atol=1e-12, rtol=0)
    np.testing.assert_allclose(bbar, bd, atol=1e-12, rtol=0)
    # the Legendre system's identity B = -A e0 gives Bbar = e0 - Abar[:, 0]
    e0 = np.eye(order)[:, 0]
    np.testing.assert_allclose(bbar[:, 0], e0 - abar[:, 0], atol=1e-12)


@pytest.mark.parametrize("order,theta", [(4, 10.0), (8, 32.0), (12, 100.0)])
def test_euler(order, theta):
    a, b = legendre_system(order)
    ad, bd, *_ = cont2discrete((a / theta, b / theta, np.eye(order), np.zeros((order, 1))), dt=1.0, method="euler")
    abar, bbar = lmu_matrices(order, theta, "euler")
    np.testing.assert_allclose(abar, ad, atol=1e-12)
    np.testing.assert_allclose(bbar, bd, atol=1e-12)


def test_legendre_definition():
    a, b = legendre_system(3)
    # A[i, j] = (2i+1) * (-1 if i < j else (-1)^(i-j+1)); B[i] = (2i+1)(-1)^i
    assert a.tolist() == [[-1, -1, -1], [3, -3, -3], [-5, 5, -5]]
    assert b[:, 0].tolist() == [1, -3, 5]


@pytest.mark.parametrize(
    "bad",
    [
        dict(order=0, theta=1.0),
        dict(order=2.5, theta=1.0),
        dict(order=4, theta=0.0),
        dict(order=4, theta=1.0, discretizer="bilinear"),
    ],
)
def test_bad_arguments(bad):
    with pytest.raises(ConfigError):
        lmu_matrices(**bad)


def test_returned_arrays_are_copies():
    abar, _ = lmu_matrices(4, 8.0)
    abar[:] = 0
    assert lmu_matrices(4, 8.0)[0].any()
