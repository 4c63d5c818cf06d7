"""Backends every test body runs on: one body, compared across libraries (CuPy's idea).

numpy and array-api-strict always run; strict's fake "device1" rejects any array left on the
default device, and its "no_float64" device stands in for float32-only accelerators. torch runs
when it is importable. CUDA cases live in test_cuda.py behind the ``gpu`` marker.
"""

from __future__ import annotations

import importlib.util

import array_api_strict as xs
import numpy as np
import pytest

from twolayer_xp import TwoLayerNet
from twolayer_xp.backend import resolve

HAS_TORCH = importlib.util.find_spec("torch") is not None

# id -> (backend, device) as a user would pass them
CASES = {
    "numpy": (None, "cpu"),
    "strict": ("array_api_strict", "cpu"),
    "strict-device1": ("array_api_strict", xs.Device("device1")),
    "strict-no_float64": ("array_api_strict", xs.Device("no_float64")),
    "torch": ("torch", "cpu"),
}
FLOAT64 = ["numpy", "strict", "strict-device1", "torch"]
FLOAT32 = ["numpy", "strict-device1", "strict-no_float64", "torch"]


def _params(ids):
    marks = lambda i: (
        [pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")] if i == "torch" else []
    )
    return [pytest.param(i, id=i, marks=marks(i)) for i in ids]


@pytest.fixture(params=_params(FLOAT64))
def case64(request):
    """A backend case that supports float64 (the golden CS231n values need it)."""
    return request.param


@pytest.fixture(params=_params(FLOAT32))
def case32(request):
    return request.param


@pytest.fixture(params=_params(["numpy", "strict-device1", "torch"]))
def case(request):
    """A backend case for tests of behaviour rather than numbers."""
    return request.param


def make_net(case_id, *args, **kwargs):
    backend, device = CASES[case_id]
    return TwoLayerNet(*args, backend=backend, device=device, **kwargs)


def backend_of(case_id):
    backend, device = CASES[case_id]
    return resolve(device, backend)


@pytest.fixture
def toy_data():
    """CS231n's toy problem: 5 points in 4-D, 3 classes."""
    np.random.seed(1)
    X = 10 * np.random.randn(5, 4)
    y = np.array([0, 1, 2, 2, 1])
    return X, y


def blobs(n=300, d=20, c=4, seed=0, dtype=np.float64):
    """A small, learnable classification problem: Gaussian blobs around random centers."""
    rng = np.random.default_rng(seed)
    centers = 3 * rng.standard_normal((c, d))
    y = rng.integers(0, c, size=n)
    X = centers[y] + rng.standard_normal((n, d))
    return X.astype(dtype), y
