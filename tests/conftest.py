"""Fixtures every test module shares: the backend matrix, factories and ``assert_close``.

numpy and array-api-strict always run; strict's fake "device1" rejects any array left on the
default device, and its "no_float64" device stands in for float32-only accelerators. torch runs
when it is importable. CUDA cases live in test_cuda.py behind the ``gpu`` marker.
Test modules take these as fixtures; none imports another test module.
"""

from __future__ import annotations

import importlib.util

import array_api_strict as xs
import numpy as np
import pytest
from array_api_compat import device as device_of

from twolayer_xp import TwoLayerNet
from twolayer_xp.backend import library_of, resolve, to_numpy

HAS_TORCH = importlib.util.find_spec("torch") is not None

# id -> (backend, device) as a user would pass them: the one test matrix
CASES = {
    "numpy": (None, "cpu"),
    "strict": ("array_api_strict", "cpu"),
    "strict-device1": ("array_api_strict", xs.Device("device1")),
    "strict-no_float64": ("array_api_strict", xs.Device("no_float64")),
    "torch": ("torch", "cpu"),
}
FLOAT64 = ["numpy", "strict", "strict-device1", "torch"]
FLOAT32 = ["numpy", "strict-device1", "strict-no_float64", "torch"]
BEHAVIOUR = ["numpy", "strict-device1", "torch"]


def _params(ids):
    skip_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
    return [pytest.param(i, id=i, marks=[skip_torch] if i == "torch" else []) for i in ids]


@pytest.fixture(params=_params(FLOAT64))
def case64(request):
    """A backend case id that supports float64 (the golden CS231n values need it)."""
    return request.param


@pytest.fixture(params=_params(FLOAT32))
def case32(request):
    return request.param


@pytest.fixture(params=_params(BEHAVIOUR))
def case(request):
    """A backend case id for tests of behaviour rather than numbers."""
    return request.param


@pytest.fixture(scope="session")
def has_torch():
    return HAS_TORCH


@pytest.fixture(scope="session")
def make_net():
    """make_net(case_id, D, H, C, **kwargs): a TwoLayerNet on that case's backend and device."""

    def make(case_id, *args, **kwargs):
        backend, device = CASES[case_id]
        return TwoLayerNet(*args, backend=backend, device=device, **kwargs)

    return make


@pytest.fixture(scope="session")
def backend_of():
    """backend_of(case_id): the resolved Backend of a case."""
    return lambda case_id: resolve(CASES[case_id][1], CASES[case_id][0])


@pytest.fixture
def toy_data():
    """CS231n's toy problem: 5 points in 4-D, 3 classes."""
    np.random.seed(1)
    X = 10 * np.random.randn(5, 4)
    y = np.array([0, 1, 2, 2, 1])
    return X, y


@pytest.fixture(scope="session")
def golden():
    """CS231n's toy-model values (float64): scores of the seed-0 net, its loss at reg=0.05."""
    scores = np.asarray(
        [
            [-0.81233741, -1.27654624, -0.70335995],
            [-0.17129677, -1.18803311, -0.47310444],
            [-0.51590475, -1.01354314, -0.8504215],
            [-0.15419291, -0.48629638, -0.52901952],
            [-0.00618733, -0.12435261, -0.15226949],
        ]
    )
    return {"scores": scores, "loss": 1.30378789133, "final_toy_loss": 0.017149607938732093}


def _blobs(n=300, d=20, c=4, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    centers = 3 * rng.standard_normal((c, d))
    y = rng.integers(0, c, size=n)
    X = centers[y] + rng.standard_normal((n, d))
    return X.astype(dtype), y


@pytest.fixture(scope="session")
def blobs():
    """blobs(n, d, c, seed, dtype): a small, learnable problem of Gaussian blobs (numpy)."""
    return _blobs


@pytest.fixture(scope="session")
def assert_close():
    """SciPy's xp_assert_close idea: an array's library, device, dtype and shape are checked
    before its values, so a result that drifted to the host or to float64 fails loudly.

    assert_close(actual, expected, backend=None, dtype=None, rtol=1e-7, atol=0): ``backend``
    (a Backend) says where ``actual`` must live; ``dtype`` a name it must have.
    """

    def check(actual, expected, backend=None, dtype=None, rtol=1e-7, atol=0.0):
        if backend is not None:
            assert library_of(actual) is type(backend), (
                f"{type(actual).__name__} is not an array of {backend.name}"
            )
            if backend.name != "numpy":
                assert device_of(actual) == backend.device, (
                    f"on {device_of(actual)}, expected {backend.device}"
                )
        if dtype is not None:
            assert str(actual.dtype).rsplit(".", 1)[-1] == dtype, f"dtype {actual.dtype}, expected {dtype}"
        expected = to_numpy(expected) if library_of(expected) is not None else np.asarray(expected)
        assert tuple(actual.shape) == expected.shape, (
            f"shape {tuple(actual.shape)}, expected {expected.shape}"
        )
        np.testing.assert_allclose(to_numpy(actual), expected, rtol=rtol, atol=atol)

    return check


@pytest.fixture(scope="session")
def cifar():
    """Writers of synthetic CIFAR-10 files in the real pickle format (tests/cifar_fixture.py)."""
    import cifar_fixture

    return cifar_fixture


@pytest.fixture(scope="session")
def train():
    """train(*args): ``twolayer-xp train`` in this process; returns its exit code."""
    from twolayer_xp.app import cli

    return lambda *args: cli.main(["train", *map(str, args)])


@pytest.fixture(scope="session")
def one_error_line():
    """one_error_line(capsys): the single stderr line of a failed command (asserted to be one
    line, to start with 'twolayer-xp', to say 'error', and to hold no traceback)."""

    def check(capsys):
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("twolayer-xp") and "error" in lines[0] and "Traceback" not in err
        return lines[0]

    return check


@pytest.fixture
def outside_activate(monkeypatch):
    """array-api-strict standing in for CuPy's current device (``Backend.activate``): the list,
    filled as the test runs, of (function, caller) for each strict function called outside an
    ``activate()``. Its settings functions, which scikit-learn's config reads, are left alone."""
    import contextlib
    import traceback

    from twolayer_xp.backend.strict_lib import StrictBackend

    active, outside = [], []

    @contextlib.contextmanager
    def activate(self):
        active.append(self.device)
        try:
            yield
        finally:
            active.pop()

    def guarded(name, function):
        def call(*args, **kwargs):
            if not active:
                outside.append((name, traceback.extract_stack(limit=2)[0].name))
            return function(*args, **kwargs)

        return call

    monkeypatch.setattr(StrictBackend, "activate", activate, raising=False)
    for name in dir(xs):
        function = getattr(xs, name)
        if callable(function) and not name.startswith("_") and not isinstance(function, type):
            if "flags" not in name:
                monkeypatch.setattr(xs, name, guarded(name, function))
    return outside
