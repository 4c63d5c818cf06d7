"""Devices and array namespaces: the one module that knows array libraries by name.

Everything else in the package computes on ``backend.xp`` (an array-API namespace from
array-api-compat) and creates arrays with ``device=backend.device``. This module resolves a
user's ``device``/``backend`` choice once, moves arrays between the host (numpy) and the device,
synchronizes the device for timing, and owns the host random number generator.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import math
from dataclasses import dataclass
from typing import Any

import array_api_compat as aac
import numpy as np

BACKENDS = ("numpy", "cupy", "torch", "array_api_strict")
DTYPES = ("float32", "float64")

_CUPY_FIX = 'pip install "twolayer-xp[cuda12]" (CuPy for CUDA 12 drivers; [cuda13] for CUDA 13)'


class CudaUnavailableError(RuntimeError):
    """CUDA was asked for but cannot be used here; the message is one line with the fix."""


# --------------------------------------------------------------------------------------------
# Backend: a namespace plus a device


@dataclass(frozen=True)
class Backend:
    """An array namespace ``xp`` bound to one ``device``.

    name: one of BACKENDS. xp: the array-api-compat namespace. device: the library's own device
    object (``"cpu"`` for numpy, ``torch.device``, ``cupy.cuda.Device``, strict ``Device``).
    """

    name: str
    xp: Any
    device: Any

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, device={self.device_label})"

    @property
    def device_label(self) -> str:
        """Short, user-facing device name: 'cpu', 'cuda:0', 'device1', ..."""
        if self.name == "cupy":
            return f"cuda:{self.device.id}"
        if self.name == "torch":
            return str(self.device)
        if self.name == "array_api_strict":
            return self.device._device if hasattr(self.device, "_device") else str(self.device)
        return "cpu"

    @property
    def is_gpu(self) -> bool:
        return self.name == "cupy" or (self.name == "torch" and self.device.type == "cuda")

    def dtype(self, dtype: Any) -> Any:
        """The namespace's float dtype for ``dtype`` ('float32', 'float64', or a dtype object)."""
        name = dtype_name(dtype)
        xp_dtype = getattr(self.xp, name)
        info = self.xp.__array_namespace_info__()
        if self.name != "cupy":  # cupy's info needs a live GPU; CUDA supports both anyway
            supported = info.dtypes(device=self.device, kind="real floating")
            if name not in supported:
                raise ValueError(
                    f"dtype={name!r} is not supported on device {self.device_label} of "
                    f"{self.name}; use one of {sorted(supported)}"
                )
        return xp_dtype

    def owns(self, x: Any) -> bool:
        """True when ``x`` is an array of this backend's library (on any device)."""
        return _library_of(x) == self.name

    def asarray(self, x: Any, dtype: Any = None, copy: bool | None = None) -> Any:
        """Place a host (numpy) or same-library array on this device; ``copy=True`` before mutating."""
        if dtype is not None:
            dtype = self.dtype(dtype) if isinstance(dtype, str) else dtype
        return self.xp.asarray(x, dtype=dtype, device=self.device, copy=copy)

    def to_numpy(self, x: Any) -> np.ndarray:
        return to_numpy(x)

    def quiet_overflow(self):
        """Silence numpy's overflow/invalid warnings: training detects non-finite losses itself
        and says so in one message (strict computes with numpy underneath, so it counts too)."""
        if self.name in ("numpy", "array_api_strict"):
            return np.errstate(over="ignore", invalid="ignore")
        return contextlib.nullcontext()

    def matmul_into(self, a: Any, b: Any, out: Any) -> Any:
        """a @ b written into a preallocated ``out`` (for the benchmarks' GEMM floor; the array
        API has no ``out=``). numpy, CuPy and torch support it; elsewhere a plain matmul."""
        if self.name in ("numpy", "cupy"):
            return importlib.import_module(self.name).matmul(a, b, out=out)
        if self.name == "torch":
            import torch

            return torch.matmul(a, b, out=out)
        return a @ b

    def synchronize(self) -> None:
        """Wait for queued device work, so that a timer measures the work and not its launch."""
        if self.name == "cupy":
            self.device.synchronize()
        elif self.name == "torch" and self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)


def to_numpy(x: Any) -> np.ndarray:
    """Bring any supported array (or Python scalar) to the host as a numpy array."""
    library = _library_of(x)
    if library == "cupy":
        return x.get()
    if library == "torch":
        return x.detach().cpu().numpy()
    if library == "array_api_strict":
        import array_api_strict as xs

        return np.asarray(x.to_device(xs.Device("CPU_DEVICE")))
    return np.asarray(x)


def _library_of(x: Any) -> str | None:
    if isinstance(x, np.ndarray) or aac.is_numpy_array(x):
        return "numpy"
    if aac.is_cupy_array(x):
        return "cupy"
    if aac.is_torch_array(x):
        return "torch"
    if type(x).__module__.startswith("array_api_strict"):
        return "array_api_strict"
    return None


def as_host_array(name: str, x: Any) -> np.ndarray:
    """A user's list or nested sequence as a numpy array; TypeError naming ``name`` otherwise."""
    try:
        return np.asarray(x)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}") from None


def is_array(x: Any) -> bool:
    """True for an array of any library this package supports."""
    return _library_of(x) is not None


def dtype_name(dtype: Any) -> str:
    """'float32' or 'float64' for a name or any library's float dtype; ValueError otherwise."""
    if isinstance(dtype, str):
        name = dtype
    else:
        name = str(dtype).rsplit(".", 1)[-1].strip("'>")
        name = {"float": "float64", "double": "float64"}.get(name, name)
    if name not in DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return name


# --------------------------------------------------------------------------------------------
# Resolution: (device, backend) given by a user -> Backend


def resolve(device: Any = "cpu", backend: Any = None) -> Backend:
    """Resolve a user's choice to a Backend.

    device: "cpu", "cuda", "cuda:N", or a library's own device object (torch.device,
    cupy.cuda.Device, array_api_strict.Device). backend: None (cpu -> numpy, cuda -> CuPy,
    device objects -> their library), a name in BACKENDS, or a namespace module.
    """
    name = _backend_name(backend) if backend is not None else None
    if device is None:
        device = "cpu"
    if isinstance(device, str):
        kind, index = _parse_device(device)
        if name is None:
            name = "numpy" if kind == "cpu" else "cupy"
        return _MAKERS[name](kind, index, None)
    library = _device_library(device)
    if name is None:
        name = library
    if library != name:
        raise ValueError(f"device {device!r} belongs to {library}, not to backend {name!r}")
    return _MAKERS[name](None, None, device)


def _backend_name(backend: Any) -> str:
    if isinstance(backend, str):
        key = backend.lower().replace("-", "_")
        key = {"strict": "array_api_strict", "np": "numpy", "cp": "cupy"}.get(key, key)
        if key not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
        return key
    module = getattr(backend, "__name__", "")
    for name in BACKENDS:
        if module == name or module.startswith(name + ".") or module.endswith("." + name):
            return name
    raise TypeError(
        f"backend must be a name ({', '.join(BACKENDS)}) or one of those modules; got {backend!r}"
    )


def _parse_device(device: str) -> tuple[str, int | None]:
    text = device.strip().lower()
    if text == "cpu":
        return "cpu", None
    if text == "cuda" or text == "gpu":
        return "cuda", 0
    if text.startswith("cuda:") and text[5:].isdigit():
        return "cuda", int(text[5:])
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N'; got {device!r}")


def _device_library(device: Any) -> str:
    module = type(device).__module__
    for name in ("torch", "cupy", "array_api_strict"):
        if module.startswith(name):
            return name
    raise TypeError(
        f"device must be 'cpu', 'cuda', 'cuda:N' or a torch/CuPy/array-api-strict device; got {device!r}"
    )


def _make_numpy(kind, index, device):
    if kind == "cuda":
        raise ValueError("backend 'numpy' runs on the CPU only; use device='cpu' (or backend='cupy')")
    import array_api_compat.numpy as xp

    return Backend("numpy", xp, "cpu")


def _make_strict(kind, index, device):
    if kind == "cuda":
        raise ValueError("backend 'array_api_strict' has no CUDA device; use one of its Device objects")
    xs = _import_or_explain("array_api_strict", "pip install array-api-strict")
    return Backend("array_api_strict", xs, device if device is not None else xs.Device("CPU_DEVICE"))


def _make_torch(kind, index, device):
    torch = _import_or_explain("torch", "pip install torch")
    import array_api_compat.torch as xp

    if device is None:
        device = torch.device("cpu" if kind == "cpu" else f"cuda:{index}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CudaUnavailableError(
                "CUDA requested but this torch build sees no GPU; run on a machine with an "
                "NVIDIA GPU and a CUDA build of torch, or use device='cpu'"
            )
        count = torch.cuda.device_count()
        if (device.index or 0) >= count:
            raise CudaUnavailableError(f"CUDA device {device} requested but only {count} GPU(s) are visible")
    return Backend("torch", xp, device)


def _make_cupy(kind, index, device):
    if kind == "cpu":
        raise ValueError("backend 'cupy' runs on an NVIDIA GPU; use device='cuda' (or backend='numpy')")
    cupy = _check_cuda(index if device is None else int(device.id))
    import array_api_compat.cupy as xp

    return Backend("cupy", xp, device if device is not None else cupy.cuda.Device(index))


_MAKERS = {
    "numpy": _make_numpy,
    "cupy": _make_cupy,
    "torch": _make_torch,
    "array_api_strict": _make_strict,
}


def _import_or_explain(module: str, fix: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"backend {module!r} is not installed ({_one_line(exc)}); fix: {fix}") from None


# --------------------------------------------------------------------------------------------
# CUDA: fail fast, in one line, with the fix


def import_cupy():
    """Import CuPy, or raise CudaUnavailableError saying how to install it."""
    try:
        import cupy
    except ImportError as exc:
        raise CudaUnavailableError(
            f"CUDA requested but CuPy is not installed ({_one_line(exc)}); fix: {_CUPY_FIX}"
        ) from None
    return cupy


@functools.cache
def _check_cuda(index: int):
    """CuPy, after proving that GPU ``index`` exists and can run a kernel and a matmul."""
    cupy = import_cupy()
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError: no driver, driver too old, no device node
        raise CudaUnavailableError(
            f"CUDA requested but CuPy finds no usable NVIDIA GPU or driver ({_one_line(exc)}); "
            "fix: run on a machine with an NVIDIA GPU and its driver (e.g. a Colab GPU runtime), "
            "or use --device cpu"
        ) from None
    if count == 0:
        raise CudaUnavailableError(
            "CUDA requested but no NVIDIA GPU is visible (CUDA_VISIBLE_DEVICES?); "
            "fix: run on a machine with a GPU, or use --device cpu"
        )
    if index >= count:
        raise CudaUnavailableError(
            f"device cuda:{index} requested but only {count} GPU(s) are visible; "
            f"fix: use cuda:0..cuda:{count - 1}"
        )
    try:  # elementwise kernels need NVRTC, matmul needs cuBLAS: prove both before training
        with cupy.cuda.Device(index):
            a = cupy.ones((2, 2), dtype=cupy.float32)
            value = float(cupy.sum(cupy.exp(a) @ a))
    except Exception as exc:
        raise CudaUnavailableError(
            f"CuPy sees GPU {index} but cannot run kernels on it ({_one_line(exc)}); "
            'fix: pip install "cupy-cuda12x[ctk]" (or cupy-cuda13x[ctk]) to get the CUDA libraries'
        ) from None
    if not math.isclose(value, 4 * 2 * math.e, rel_tol=1e-5):
        raise CudaUnavailableError(f"GPU {index} computed a wrong result in a smoke test ({value})")
    return cupy


def cuda_available() -> bool:
    """True when CuPy is installed and GPU 0 passes the smoke test."""
    try:
        _check_cuda(0)
    except CudaUnavailableError:
        return False
    return True


def gpu_name(backend: Backend) -> str | None:
    """The GPU's marketing name, for reports; None on a CPU."""
    if backend.name == "cupy":
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(backend.device.id)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    if backend.name == "torch" and backend.device.type == "cuda":
        import torch

        return torch.cuda.get_device_name(backend.device)
    return None


def library_versions(backend: Backend | None = None) -> dict[str, str]:
    """Versions of numpy, array-api-compat and the backend's library, for run records."""
    versions = {"numpy": np.__version__, "array_api_compat": aac.__version__}
    if backend is not None and backend.name != "numpy":
        module = importlib.import_module(backend.name)
        versions[backend.name] = getattr(module, "__version__", "unknown")
    return versions


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    text = text[0] if text else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------------------------
# Host random numbers: one stream, whatever the device


class HostRNG:
    """The host-side random stream used for weights and minibatches.

    rng: None for numpy's legacy global state (what CS231n code seeds with ``np.random.seed``),
    an int seed, a ``numpy.random.Generator`` or a ``numpy.random.RandomState``. Draws happen on
    the host and are then sent to the device, so one seed gives one trajectory on every backend.
    """

    def __init__(self, rng: Any = None):
        if rng is None:
            self._source = np.random  # the module's functions share the state np.random.seed sets
        elif isinstance(rng, (np.random.Generator, np.random.RandomState)):
            self._source = rng
        elif isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
            if rng < 0:
                raise ValueError(f"rng seed must be >= 0, got {rng}")
            self._source = np.random.default_rng(int(rng))
        else:
            raise TypeError(
                f"rng must be None, an int seed, a numpy Generator or RandomState; got {type(rng).__name__}"
            )

    @classmethod
    def from_state(cls, snapshot: dict) -> HostRNG:
        """A new stream that continues from ``get_state()``'s snapshot (never the global one)."""
        if snapshot.get("kind") == "RandomState":
            rng = cls(np.random.RandomState())
        elif snapshot.get("kind") == "Generator":
            name = snapshot["state"].get("bit_generator")
            if name not in ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"):
                raise ValueError(f"unknown bit generator {name!r} in random state")
            rng = cls(np.random.Generator(getattr(np.random, name)()))
        else:
            raise ValueError(f"random state of kind {snapshot.get('kind')!r} is not one this package writes")
        rng.set_state(snapshot)
        return rng

    @property
    def is_legacy(self) -> bool:
        """A RandomState (or numpy's global one): CS231n's randn / choice streams."""
        return self._source is np.random or isinstance(self._source, np.random.RandomState)

    def standard_normal(self, shape: tuple[int, ...]) -> np.ndarray:
        if self.is_legacy:
            return self._source.randn(*shape)  # CS231n's np.random.randn stream
        return self._source.standard_normal(shape)

    def minibatch_indices(self, num_train: int, size: int) -> np.ndarray:
        """``size`` row indices in [0, num_train), drawn with replacement.

        Drawing n*B at once gives the same indices as n draws of B (tested), which is what lets a
        run fetch all its minibatches in one transfer and still match CS231n's per-step
        ``np.random.choice(num_train, batch_size)``.
        """
        if self.is_legacy:
            return self._source.choice(num_train, size)
        return self._source.integers(0, num_train, size=size)

    def get_state(self) -> dict:
        """A JSON-serializable snapshot of the stream (for checkpoints)."""
        if self.is_legacy:
            kind, keys, pos, has_gauss, cached = self._source.get_state()
            return {
                "kind": "RandomState",
                "state": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            }
        return {"kind": "Generator", "state": self._source.bit_generator.state}

    def set_state(self, snapshot: dict) -> None:
        kind = snapshot.get("kind")
        if kind == "RandomState" and self.is_legacy:
            name, keys, pos, has_gauss, cached = snapshot["state"]
            self._source.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        elif kind == "Generator" and not self.is_legacy:
            self._source.bit_generator.state = snapshot["state"]
        else:
            raise ValueError(f"random state of kind {kind!r} cannot restore a {type(self._source).__name__}")
