"""CUDA: clear one-line failures without a GPU; the real thing behind the ``gpu`` marker."""

import importlib.util
import sys
import types

import numpy as np
import pytest

from twolayer_xp import CudaUnavailableError, TwoLayerNet, backend, cuda_available, to_numpy
from twolayer_xp.backend import torch_lib
from twolayer_xp.backend.cupy_lib import check_cuda

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAVE_GPU = cuda_available()


@pytest.fixture(autouse=True)
def fresh_check():
    for proven in (check_cuda, torch_lib._prove):
        proven.cache_clear()
    yield
    for proven in (check_cuda, torch_lib._prove):
        proven.cache_clear()


class CUDARuntimeError(RuntimeError):
    """CuPy's: its text is the CUDA error's name, a colon, and CUDA's description."""


def fake_cupy(
    monkeypatch,
    device_count=None,
    count_error=None,
    kernel_error=None,
    driver=0,
    runtime=12080,
    capability=None,
):
    """A stand-in CuPy module whose runtime fails the way a GPU-less machine makes it fail.

    driver, runtime: what cudaDriverGetVersion (0: no driver; None: it fails) and
    cudaRuntimeGetVersion answer;
    capability: the GPU's compute capability as CuPy writes it ("86"), None: the query fails."""

    def get_device_count():
        if count_error:
            raise CUDARuntimeError(count_error)
        return device_count

    def driver_version():
        if driver is None:
            raise CUDARuntimeError("cudaErrorUnknown: unknown error")
        return driver

    def ones(*args, **kwargs):
        raise kernel_error if isinstance(kernel_error, BaseException) else RuntimeError(kernel_error)

    class Device:
        def __init__(self, index=0):
            self.id = index

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        @property
        def compute_capability(self):
            if capability is None:
                raise CUDARuntimeError("cudaErrorDevicesUnavailable: busy")
            return capability

    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(
            getDeviceCount=get_device_count,
            driverGetVersion=driver_version,
            runtimeGetVersion=lambda: runtime,
        ),
        Device=Device,
    )
    cupy.ones = ones
    cupy.float32 = np.float32
    monkeypatch.setitem(sys.modules, "cupy", cupy)


def cupy_failing_to_import(monkeypatch, original, chained=True):
    """`import cupy` raises what CuPy 13 and 14 raise when ``from cupy import _core`` fails
    (cupy/__init__.py): a framed multi-line ImportError, chained ``from`` the original error."""
    framed = ImportError(f"""
================================================================
Failed to import CuPy.

If you installed CuPy via wheels (cupy-cudaXXX or cupy-rocm-X-X), make sure that the package matches with the version of CUDA or ROCm installed.

On Linux, you may need to set LD_LIBRARY_PATH environment variable depending on how you installed CUDA/ROCm.
On Windows, try setting CUDA_PATH environment variable.

Check the Installation Guide for details:
  https://docs.cupy.dev/en/latest/install.html

Original error:
  {type(original).__name__}: {original}
================================================================
""")

    class Finder:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name != "cupy":
                return None
            if chained:
                raise framed from original
            raise framed

    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Finder, *sys.meta_path])


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


@pytest.mark.parametrize("chained", [True, False])
def test_cupy_installed_without_its_cuda_libraries(monkeypatch, chained):
    """CuPy 13 on a machine without the CUDA Toolkit: installing it again would change nothing."""
    missing = ImportError("libcublas.so.12: cannot open shared object file: No such file or directory")
    cupy_failing_to_import(monkeypatch, missing, chained=chained)
    with pytest.raises(CudaUnavailableError) as excinfo:
        TwoLayerNet(4, 5, 3, device="cuda")
    assert_one_clear_line(
        excinfo,
        "CuPy is installed",
        "ImportError: libcublas.so.12: cannot open",
        'pip install -U "cupy-cuda12x[ctk]>=14"',
    )
    message = str(excinfo.value)
    assert "not installed" not in message and "Failed to import" not in message and "====" not in message
    assert len(message) < 300, message


def test_cupy_installed_without_a_driver(monkeypatch):
    cupy_failing_to_import(monkeypatch, ImportError("libcuda.so.1: cannot open shared object file"))
    with pytest.raises(CudaUnavailableError) as excinfo:
        backend.resolve("cuda")
    assert_one_clear_line(excinfo, "no NVIDIA driver", "libcuda.so.1", "--device cpu")
    assert "pip install" not in str(excinfo.value)


def test_cupy_installed_without_a_dependency(monkeypatch):
    cupy_failing_to_import(monkeypatch, ModuleNotFoundError("No module named 'fastrlock'", name="fastrlock"))
    with pytest.raises(CudaUnavailableError) as excinfo:
        backend.resolve("cuda")
    assert_one_clear_line(
        excinfo, "CuPy is installed but fails to import", "fastrlock", "pip install cupy-cuda12x"
    )
    assert "not installed" not in str(excinfo.value)


INSUFFICIENT_DRIVER = (
    "cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version\nmore detail"
)


def test_no_driver(monkeypatch):
    """CuPy links the CUDA runtime, which says 'insufficient driver' when there is no driver at all."""
    fake_cupy(monkeypatch, count_error=INSUFFICIENT_DRIVER, driver=0)
    with pytest.raises(CudaUnavailableError) as excinfo:
        TwoLayerNet(4, 5, 3, device="cuda")
    assert_one_clear_line(excinfo, "no NVIDIA driver", "cudaErrorInsufficientDriver", "--device cpu")
    assert "more detail" not in str(excinfo.value)


def test_wheel_for_a_newer_cuda_than_the_driver(monkeypatch):
    """cupy-cuda13x on a CUDA 12.8 driver: the fix is the wheel for the driver, not another machine."""
    fake_cupy(monkeypatch, count_error=INSUFFICIENT_DRIVER, driver=12080, runtime=13000)
    with pytest.raises(CudaUnavailableError) as excinfo:
        backend.resolve("cuda")
    assert_one_clear_line(
        excinfo,
        "supports CUDA 12.8",
        "needs CUDA 13.0",
        "pip uninstall -y cupy-cuda13x && pip install cupy-cuda12x",
        "update the NVIDIA driver",
    )
    assert "run on a machine" not in str(excinfo.value)


def test_a_driver_older_than_any_wheel(monkeypatch):
    fake_cupy(monkeypatch, count_error=INSUFFICIENT_DRIVER, driver=11040, runtime=12080)
    with pytest.raises(CudaUnavailableError) as excinfo:
        backend.resolve("cuda")
    assert_one_clear_line(excinfo, "supports CUDA 11.4", "update the NVIDIA driver to one for CUDA 12")
    assert "cupy-cuda11x" not in str(excinfo.value)


def test_insufficient_driver_of_unknown_version(monkeypatch):
    fake_cupy(monkeypatch, count_error=INSUFFICIENT_DRIVER, driver=None)
    with pytest.raises(CudaUnavailableError) as excinfo:
        backend.resolve("cuda")
    assert_one_clear_line(
        excinfo, "missing or older", "CUDA Version", "pip install cupy-cuda12x", "--device cpu"
    )


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


class OutOfMemoryError(MemoryError):
    """CuPy's (cupy.cuda.memory): a MemoryError."""


class DynamicLibNotFoundError(RuntimeError):
    """cuda-pathfinder's, which CuPy 14 uses to load NVRTC: the cause, then the folders searched."""


@pytest.mark.parametrize(
    "error,runtime,capability,said,unsaid",
    [
        (  # CuPy 13: NVRTC is loaded when the first kernel compiles
            "CuPy failed to load libnvrtc.so.12: OSError: libnvrtc.so.12: cannot open shared object file",
            12080,
            "86",
            ["libnvrtc.so.12", 'pip install -U "cupy-cuda12x[ctk]>=14"'],
            [],
        ),
        (  # CuPy 14
            DynamicLibNotFoundError(
                'Failure finding "libnvrtc.so": No such file: libnvrtc.so*\n  listdir("/x")'
            ),
            13000,
            "86",
            ['Failure finding "libnvrtc.so"', 'pip install -U "cupy-cuda13x[ctk]>=14"'],
            ["listdir"],
        ),
        (
            OutOfMemoryError("Out of memory allocating 512 bytes (allocated so far: 0 bytes)."),
            12080,
            "86",
            ["Out of memory allocating 512 bytes", "memory is full", "nvidia-smi"],
            ["[ctk]"],
        ),
        (
            "cudaErrorDevicesUnavailable: CUDA-capable device(s) is/are busy or unavailable",
            12080,
            "86",
            ["exclusive compute mode", "nvidia-smi -i 0 -c DEFAULT"],
            ["[ctk]"],
        ),
        (  # a Pascal GPU under cupy-cuda13x
            "CUDA_ERROR_NO_BINARY_FOR_GPU: no kernel image is available for execution on the device",
            13000,
            "61",
            [
                "CUDA 13 dropped compute capability 6.1",
                "pip uninstall -y cupy-cuda13x && pip install cupy-cuda12x",
            ],
            ["[ctk]"],
        ),
        (
            "cudaErrorNoKernelImageForDevice: no kernel image is available for execution on the device",
            12020,
            "120",
            ["compute capability 12.0 is newer", 'pip install -U "cupy-cuda12x[ctk]>=14"'],
            [],
        ),
        (  # a Kepler GPU: no CUDA CuPy supports has code for it
            "CUDA_ERROR_NO_BINARY_FOR_GPU: no kernel image is available for execution on the device",
            12080,
            "35",
            ["compute capability 3.5 is older than CUDA 12 and 13 support", "--device cpu"],
            ["[ctk]"],
        ),
        (  # the GPU's compute capability unknown: both ways out
            "CUDA_ERROR_NO_BINARY_FOR_GPU: no kernel image is available for execution on the device",
            13000,
            None,
            [
                'pip install -U "cupy-cuda13x[ctk]>=14"',
                "older than compute capability 7.5 needs cupy-cuda12x",
            ],
            [],
        ),
        (
            "cudaErrorLaunchFailure: unspecified launch failure",
            12080,
            "86",
            ["cudaErrorLaunchFailure", "cupy.show_config()", "--device cpu"],
            ["[ctk]"],
        ),
    ],
    ids=[
        "nvrtc-cupy13",
        "nvrtc-cupy14",
        "out-of-memory",
        "busy",
        "pascal-on-cuda13",
        "blackwell-on-cuda12.2",
        "kepler",
        "unknown-gpu",
        "other",
    ],
)
def test_gpu_cannot_run_kernels(monkeypatch, error, runtime, capability, said, unsaid):
    """The [ctk] extra (CuPy 14+) is the fix only when a CUDA library did not load."""
    fake_cupy(monkeypatch, device_count=1, kernel_error=error, runtime=runtime, capability=capability)
    with pytest.raises(CudaUnavailableError) as excinfo:
        backend.resolve("cuda")
    assert_one_clear_line(excinfo, "cannot run kernels", *said)
    assert not [words for words in unsaid if words in str(excinfo.value)], str(excinfo.value)


@pytest.mark.skipif(HAVE_GPU, reason="this machine has a usable GPU")
def test_this_machine_says_why_cuda_is_unavailable():
    assert not cuda_available()
    with pytest.raises(CudaUnavailableError) as excinfo:
        TwoLayerNet(4, 5, 3, device="cuda:0")
    assert_one_clear_line(excinfo, "fix:")


@pytest.fixture
def cuda_torch(monkeypatch):
    """The installed torch, made to look like a CUDA 12.6 build on a machine with one GPU, up to
    the point where the test makes it fail."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.version, "cuda", "12.6")
    for name, answer in [("init", None), ("current_device", 0), ("device_count", 1)]:
        monkeypatch.setattr(torch.cuda, name, lambda answer=answer: answer)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (12, 0))
    return torch


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_torch_cpu_only_build(monkeypatch):
    import torch

    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None)
    with pytest.raises(CudaUnavailableError) as excinfo:
        TwoLayerNet(4, 5, 3, device="cuda", backend="torch")
    assert_one_clear_line(
        excinfo,
        "CPU-only build",
        "pip install torch --index-url https://download.pytorch.org/whl/cu126",
        "--device cpu",
    )


@pytest.mark.parametrize(
    "build,reason,said",
    [
        (
            "12.6",
            "Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU",
            ["run on a machine", "--device cpu"],
        ),
        (  # a cu130 torch on a CUDA 12.8 driver: torch's build for CUDA 12 runs there
            "13.0",
            "The NVIDIA driver on your system is too old (found version 12080). Please update your GPU driver",
            ["whl/cu126", "update the NVIDIA driver"],
        ),
        (
            "12.6",
            "The NVIDIA driver on your system is too old (found version 11040). Please update your GPU driver",
            ["update the NVIDIA driver to one for CUDA 12.6"],
        ),
    ],
    ids=["no-driver", "cu130-on-a-cuda12-driver", "cuda11-driver"],
)
def test_torch_cuda_build_without_a_usable_driver(cuda_torch, monkeypatch, build, reason, said):
    monkeypatch.setattr(cuda_torch.version, "cuda", build)

    def fail():
        raise RuntimeError(reason)

    monkeypatch.setattr(cuda_torch.cuda, "init", fail)
    with pytest.raises(CudaUnavailableError) as excinfo:
        backend.resolve("cuda", "torch")
    assert_one_clear_line(excinfo, "cannot use a GPU", reason[:40], *said)


NO_KERNEL_IMAGE = RuntimeError(
    "CUDA error: no kernel image is available for execution on the device\n"
    "CUDA kernel errors might be asynchronously reported at some other API call"
)


@pytest.mark.parametrize(
    "error,capability,said",
    [
        (NO_KERNEL_IMAGE, (12, 0), ["no kernel image", "compute capability 12.0", "whl/cu130"]),
        (NO_KERNEL_IMAGE, (6, 1), ["compute capability 6.1", "whl/cu126"]),
        (NO_KERNEL_IMAGE, (3, 5), ["compute capability 3.5 is older than CUDA 12 and 13", "--device cpu"]),
        ("OutOfMemoryError", (12, 0), ["CUDA out of memory", "memory is full", "nvidia-smi"]),
    ],
    ids=["no-kernel-image", "pascal-on-cu130", "kepler", "out-of-memory"],
)
def test_torch_gpu_that_cannot_compute_fails_at_start(cuda_torch, monkeypatch, error, capability, said):
    """A GPU this torch has no kernels for fails when the backend is made, in one line, not at the
    first training step in a traceback."""
    monkeypatch.setattr(cuda_torch.cuda, "get_device_capability", lambda index=None: capability)
    if error == "OutOfMemoryError":
        error = cuda_torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def ones(*args, **kwargs):
        raise error

    monkeypatch.setattr(cuda_torch, "ones", ones)
    with pytest.raises(CudaUnavailableError) as excinfo:
        backend.resolve("cuda:0", "torch")
    assert_one_clear_line(excinfo, "torch sees GPU 0 but cannot compute on it", *said)
    assert "asynchronously" not in str(excinfo.value)


def test_torch_names_the_gpus_there_are(cuda_torch):
    """torch's "only 1 GPU(s) are visible" gave no fix, unlike CuPy's."""
    with pytest.raises(CudaUnavailableError) as excinfo:
        backend.resolve("cuda:3", "torch")
    assert_one_clear_line(excinfo, "cuda:3", "only 1 GPU", "fix: use cuda:0..cuda:0")


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
