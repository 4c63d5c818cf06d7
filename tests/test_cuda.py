"""CUDA: clear one-line failures without a GPU; the real thing behind the ``gpu`` marker."""

import importlib.util
import sys
import types

import numpy as np
import pytest

from twolayer_xp import CudaUnavailableError, TwoLayerNet, backend, cuda_available, to_numpy
from twolayer_xp.backend.cupy_lib import check_cuda

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAVE_GPU = cuda_available()


@pytest.fixture(autouse=True)
def fresh_check():
    check_cuda.cache_clear()
    yield
    check_cuda.cache_clear()


def fake_cupy(monkeypatch, device_count=None, count_error=None, kernel_error=None):
    """A stand-in CuPy module whose runtime fails the way a GPU-less machine makes it fail."""

    class CUDARuntimeError(RuntimeError):
        pass

    def get_device_count():
        if count_error:
            raise CUDARuntimeError(count_error)
        return device_count

    def ones(*args, **kwargs):
        raise RuntimeError(kernel_error)

    class Device:
        def __init__(self, index=0):
            self.id = index

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=get_device_count), Device=Device
    )
    cupy.ones = ones
    cupy.float32 = np.float32
    monkeypatch.setitem(sys.modules, "cupy", cupy)


def assert_one_clear_line(excinfo, *phrases):
    message = str(excinfo.value)
    assert "\n" not in message
    for phrase in phrases:
        assert phrase in message, message


def test_cupy_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    with pytest.raises(CudaUnavailableError) as excinfo:
        TwoLayerNet(4, 5, 3, device="cuda")
    assert_one_clear_line(excinfo, "CuPy is not installed", "pip install cupy-cuda12x", "cupy-cuda13x")


def test_no_driver_or_gpu(monkeypatch):
    fake_cupy(
        monkeypatch,
        count_error="cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version\nmore detail",
    )
    with pytest.raises(CudaUnavailableError) as excinfo:
        TwoLayerNet(4, 5, 3, device="cuda")
    assert_one_clear_line(excinfo, "no usable NVIDIA GPU", "cudaErrorInsufficientDriver", "--device cpu")


def test_zero_gpus_visible(monkeypatch):
    fake_cupy(monkeypatch, device_count=0)
    with pytest.raises(CudaUnavailableError) as excinfo:
        backend.resolve("cuda")
    assert_one_clear_line(excinfo, "no NVIDIA GPU is visible")


def test_index_out_of_range(monkeypatch):
    fake_cupy(monkeypatch, device_count=1)
    with pytest.raises(CudaUnavailableError) as excinfo:
        backend.resolve("cuda:3")
    assert_one_clear_line(excinfo, "cuda:3", "only 1 GPU")


def test_gpu_cannot_run_kernels(monkeypatch):
    fake_cupy(monkeypatch, device_count=1, kernel_error="CompileException: nvrtc: libnvrtc.so.12 not found")
    with pytest.raises(CudaUnavailableError) as excinfo:
        backend.resolve("cuda")
    assert_one_clear_line(excinfo, "cannot run kernels", "[ctk]", "libnvrtc")


@pytest.mark.skipif(HAVE_GPU, reason="this machine has a usable GPU")
def test_this_machine_says_why_cuda_is_unavailable():
    assert not cuda_available()
    with pytest.raises(CudaUnavailableError) as excinfo:
        TwoLayerNet(4, 5, 3, device="cuda:0")
    assert_one_clear_line(excinfo, "fix:")


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_torch_cuda_without_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("torch sees a GPU here")
    with pytest.raises(CudaUnavailableError) as excinfo:
        TwoLayerNet(4, 5, 3, device="cuda", backend="torch")
    assert_one_clear_line(excinfo, "no GPU")


def test_numpy_cannot_be_asked_for_cuda():
    with pytest.raises(ValueError, match="CPU only"):
        backend.resolve("cuda", "numpy")


# -- on a real GPU ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-4)])
@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_GPU, reason="needs CuPy and a usable NVIDIA GPU")
def test_cuda_matches_numpy(dtype, tol, blobs):
    X, y = blobs(n=400, d=30, c=5, seed=2)
    runs = []
    for device in ("cpu", "cuda"):
        net = TwoLayerNet(30, 40, 5, std=1e-2, device=device, dtype=dtype, rng=9)
        stats = net.train(
            X[:300], y[:300], X[300:], y[300:], learning_rate=0.3, reg=1e-3, num_iters=150, batch_size=50
        )
        runs.append((stats, net.predict(X), net))
    (cpu_stats, cpu_pred, _), (gpu_stats, gpu_pred, gpu_net) = runs
    assert gpu_net.backend.name == "cupy"
    np.testing.assert_allclose(gpu_stats["loss_history"], cpu_stats["loss_history"], rtol=tol)
    assert np.mean(gpu_pred == cpu_pred) > 0.99
    assert isinstance(gpu_pred, np.ndarray)


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_GPU, reason="needs CuPy and a usable NVIDIA GPU")
def test_cuda_golden_toy(golden):
    np.random.seed(0)
    net = TwoLayerNet(4, 10, 3, std=1e-1, device="cuda")
    np.random.seed(1)
    X, y = 10 * np.random.randn(5, 4), np.array([0, 1, 2, 2, 1])
    assert np.sum(np.abs(net.loss(X) - golden["scores"])) < 1e-7
    assert abs(net.loss(X, y, reg=0.05)[0] - golden["loss"]) < 1e-12
    assert type(net.params["W1"]).__module__.startswith("cupy")
    assert to_numpy(net.params["W1"]).shape == (4, 10)
