"""CuPy on an NVIDIA GPU, with a start-up probe that fails in one line saying what to fix."""

from __future__ import annotations

import functools
import math

import array_api_compat as aac

from twolayer_xp.errors import one_line

from .base import DTYPES, Backend, CudaUnavailableError

# CuPy's wheels are named for the CUDA major version of the driver (nvidia-smi's "CUDA Version").
CUPY_FIX = "pip install cupy-cuda12x (CUDA 12 drivers) or pip install cupy-cuda13x (CUDA 13)"


class CupyBackend(Backend):
    name = "cupy"
    module = "cupy"

    @classmethod
    def owns_type(cls, x) -> bool:
        return aac.is_cupy_array(x)

    @classmethod
    def create(cls, kind, index, device) -> Backend:
        if kind == "cpu":
            raise ValueError("backend 'cupy' runs on an NVIDIA GPU; use device='cuda' (or backend='numpy')")
        cupy = check_cuda(index if device is None else int(device.id))
        import array_api_compat.cupy as xp

        return cls(xp, device if device is not None else cupy.cuda.Device(index))

    @classmethod
    def host(cls, x):
        return x.get()

    @property
    def device_label(self) -> str:
        return f"cuda:{self.device.id}"

    @property
    def host_memory(self) -> bool:
        return False

    def supported_dtypes(self) -> tuple[str, ...]:
        return DTYPES  # the namespace info needs a live GPU; CUDA has both

    def activate(self):
        return self.device  # cupy.cuda.Device: current inside the with, the previous one after

    def synchronize(self) -> None:
        self.device.synchronize()

    def gpu_name(self) -> str | None:
        import cupy

        name = cupy.cuda.runtime.getDeviceProperties(self.device.id)["name"]
        return name.decode() if isinstance(name, bytes) else str(name)


def import_cupy():
    """Import CuPy, or raise CudaUnavailableError saying how to install it."""
    try:
        import cupy
    except ImportError as exc:
        raise CudaUnavailableError(
            f"CUDA requested but CuPy is not installed ({one_line(exc, named=True)}); fix: {CUPY_FIX}"
        ) from None
    return cupy


@functools.cache
def check_cuda(index: int):
    """CuPy, after proving that GPU ``index`` exists and can run a kernel and a matmul."""
    cupy = import_cupy()
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError: no driver, driver too old, no device node
        raise CudaUnavailableError(
            f"CUDA requested but CuPy finds no usable NVIDIA GPU or driver ({one_line(exc, named=True)}); "
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
            f"CuPy sees GPU {index} but cannot run kernels on it ({one_line(exc, named=True)}); "
            'fix: pip install "cupy-cuda12x[ctk]" (or cupy-cuda13x[ctk]) to get the CUDA libraries'
        ) from None
    if not math.isclose(value, 4 * 2 * math.e, rel_tol=1e-5):
        raise CudaUnavailableError(f"GPU {index} computed a wrong result in a smoke test ({value})")
    return cupy
