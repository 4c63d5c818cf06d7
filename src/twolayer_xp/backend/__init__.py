"""Devices and array namespaces: the one package that knows array libraries by name.

``resolve(device, backend)`` turns a user's choice into a ``Backend`` (one class per library:
numpy, CuPy, torch, array-api-strict) once, at the entry point; everything downstream computes on
``backend.xp`` and creates arrays with ``device=backend.device``.
"""

from __future__ import annotations

from typing import Any

from .base import DTYPES, Backend, CudaUnavailableError, dtype_name
from .cupy_lib import CupyBackend, check_cuda
from .numpy_lib import NumpyBackend
from .strict_lib import StrictBackend
from .torch_lib import TorchBackend

LIBRARIES: dict[str, type[Backend]] = {
    cls.name: cls for cls in (NumpyBackend, CupyBackend, TorchBackend, StrictBackend)
}
BACKENDS = tuple(LIBRARIES)
_ALIASES = {"strict": "array_api_strict", "np": "numpy", "cp": "cupy"}

__all__ = [
    "BACKENDS",
    "DTYPES",
    "Backend",
    "CudaUnavailableError",
    "cuda_available",
    "dtype_name",
    "host_view",
    "is_array",
    "library_of",
    "resolve",
    "to_numpy",
]


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
        return LIBRARIES[name or ("numpy" if kind == "cpu" else "cupy")].create(kind, index, None)
    library = _device_library(device)
    if name is not None and library != name:
        raise ValueError(f"device {device!r} belongs to {library}, not to backend {name!r}")
    return LIBRARIES[library].create(None, None, device)


def library_of(x: Any) -> type[Backend] | None:
    """The Backend class whose library ``x`` is an array of, or None."""
    return next((cls for cls in LIBRARIES.values() if cls.owns_type(x)), None)


def is_array(x: Any) -> bool:
    """True for an array of any library this package supports."""
    return library_of(x) is not None


def host_view(x: Any):
    """``x`` as a numpy array when its values are in host memory already (numpy's, torch's on
    the CPU, array-api-strict's on its CPU_DEVICE): looking at them costs no device sync. None
    for an array on a device (a GPU's, or strict's stand-ins for one)."""
    cls = library_of(x)
    return cls.host_view(x) if cls is not None else None


def to_numpy(x: Any):
    """Bring any supported array (or Python scalar) to the host as a numpy array."""
    cls = library_of(x)
    return cls.host(x) if cls is not None else NumpyBackend.host(x)


def cuda_available() -> bool:
    """True when CuPy is installed and GPU 0 passes the smoke test."""
    try:
        check_cuda(0)
    except CudaUnavailableError:
        return False
    return True


def _backend_name(backend: Any) -> str:
    if isinstance(backend, str):
        key = backend.lower().replace("-", "_")
        key = _ALIASES.get(key, key)
        if key not in LIBRARIES:
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
    if text in ("cuda", "gpu"):
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
