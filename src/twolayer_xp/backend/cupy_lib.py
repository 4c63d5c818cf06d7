"""CuPy on an NVIDIA GPU, with a start-up probe that fails in one line saying what to fix."""

from __future__ import annotations

import functools
import re

import array_api_compat as aac

from twolayer_xp.errors import one_line

from .base import DTYPES, Backend, CudaUnavailableError
from .gpu_failures import (
    CUDA13_OLDEST,
    NO_DRIVER_FIX,
    NO_KERNEL_FOR_ARCH,
    capability_text,
    gpu_state,
    quoted,
    too_few_gpus,
    too_old,
    wrong_result,
)

CUDA_MAJORS = (12, 13)  # the CUDA majors of CuPy's wheels this package installs (pyproject's extras)


def _wheel(major: int) -> str:
    """CuPy's wheel for CUDA ``major``: named for the driver's CUDA major (nvidia-smi's "CUDA Version")."""
    return f"cupy-cuda{major}x"


def _for_wheel(command: str, major: int | None = None) -> str:
    """``command`` (holding ``{wheel}``) for the wheel of CUDA ``major``; unknown: one per CUDA_MAJORS."""
    if major in CUDA_MAJORS:
        return command.format(wheel=_wheel(major))
    return " or ".join(f"{command.format(wheel=_wheel(m))} (CUDA {m} drivers)" for m in CUDA_MAJORS)


CUPY_FIX = _for_wheel("pip install {wheel}")
# The [ctk] extra (NVIDIA's CUDA libraries as wheels: NVRTC, cuBLAS, ...) exists from CuPy 14 on.
CTK_INSTALL = 'pip install -U "{wheel}[ctk]>=14"'
# A CUDA library that did not load: CuPy 13's ImportError or NVRTC SoftLink, CuPy 14's cuda-pathfinder.
_LIBRARY_LOAD = re.compile(
    r"nvrtc|cublas|cudart|lib\w+\.so|\.dll|Failure finding|cannot open shared object", re.I
)
_NO_DRIVER_LIBRARY = re.compile(r"libcuda\.so|nvcuda\.dll")


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
        # cupy.cuda.Device: current inside the with; CuPy keeps the previous one per thread
        return self.device

    def synchronize(self) -> None:
        self.device.synchronize()

    def gpu_name(self) -> str | None:
        import cupy

        name = cupy.cuda.runtime.getDeviceProperties(self.device.id)["name"]
        return name.decode() if isinstance(name, bytes) else str(name)


def import_cupy():
    """Import CuPy, or raise CudaUnavailableError saying what is wrong and the command that fixes it."""
    try:
        import cupy
    except ModuleNotFoundError as exc:
        if exc.name != "cupy":  # a dependency of CuPy's (fastrlock, cuda-pathfinder) is missing
            raise CudaUnavailableError(_import_failure(exc)) from None
        raise CudaUnavailableError(
            f"CUDA requested but CuPy is not installed ({one_line(exc, named=True)}); fix: {CUPY_FIX}"
        ) from None
    except ImportError as exc:
        raise CudaUnavailableError(_import_failure(exc)) from None
    return cupy


def _import_failure(exc: ImportError) -> str:
    """Why an installed CuPy failed to import, and the fix. CuPy 13 and 14 (cupy/__init__.py) wrap
    the failure in a framed, multi-line "Failed to import CuPy ... Original error: <type>: <text>"
    raised ``from`` the original: that original, usually a CUDA library that did not load, is quoted."""
    cause = _original_error(exc)
    if _NO_DRIVER_LIBRARY.search(cause):
        return _no_driver(cause)
    if _LIBRARY_LOAD.search(cause):
        version = re.search(r"\.so\.(\d+)", cause)  # libcublas.so.12: the wheel's CUDA major
        fix = _for_wheel(CTK_INSTALL, int(version.group(1)) if version else None)
        return f"CuPy is installed but cannot load the CUDA libraries it needs ({cause}); fix: {fix}"
    return (
        f"CuPy is installed but fails to import ({cause}); fix: uninstall every CuPy wheel "
        f"(pip freeze | grep -i cupy), then {CUPY_FIX}"
    )


def _original_error(exc: ImportError) -> str:
    """The error under CuPy's frame, quoted: its ``__cause__``, else the frame's "Original error"."""
    if exc.__cause__ is not None:
        return quoted(exc.__cause__)
    text = str(exc)
    if "Original error:" in text:
        return quoted(text.split("Original error:", 1)[1].split("=====", 1)[0])
    return quoted(exc)


@functools.cache
def check_cuda(index: int):
    """CuPy, after proving that GPU ``index`` exists and can run a kernel and a matmul."""
    cupy = import_cupy()
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError: no driver, driver too old, no device node
        raise CudaUnavailableError(_driver_failure(cupy, exc)) from None
    if count == 0:
        raise CudaUnavailableError(
            "CUDA requested but no NVIDIA GPU is visible (CUDA_VISIBLE_DEVICES?); "
            "fix: run on a machine with a GPU, or use --device cpu"
        )
    if index >= count:
        raise CudaUnavailableError(too_few_gpus(index, count))
    try:  # elementwise kernels need NVRTC, matmul needs cuBLAS: prove both before training
        with cupy.cuda.Device(index):
            a = cupy.ones((2, 2), dtype=cupy.float32)
            value = float(cupy.sum(cupy.exp(a) @ a))
    except Exception as exc:
        raise CudaUnavailableError(_kernel_failure(cupy, index, exc)) from None
    if wrong_result(index, value):
        raise CudaUnavailableError(wrong_result(index, value))
    return cupy


def _driver_failure(cupy, exc: Exception) -> str:
    """Why CuPy cannot count GPUs, and the fix. The CUDA runtime (linked into CuPy) says
    cudaErrorInsufficientDriver both with no driver at all and with a driver for an older CUDA
    major than the wheel's (cupy-cuda13x on a CUDA 12 driver); the driver's version tells which."""
    if "InsufficientDriver" not in str(exc):  # e.g. cudaErrorNoDevice: a driver but no GPU
        return f"CUDA requested but CuPy finds no usable NVIDIA GPU ({quoted(exc)}); fix: {NO_DRIVER_FIX}"
    driver = _version(cupy.cuda.runtime.driverGetVersion)  # 0: no driver installed (CUDA's docs)
    built = _version(cupy.cuda.runtime.runtimeGetVersion)
    if driver == 0:
        return _no_driver(quoted(exc))
    if driver is None or built is None:
        return (
            f"CUDA requested but the NVIDIA driver is missing or older than CuPy's CUDA ({quoted(exc)}); "
            f'fix: install the wheel for nvidia-smi\'s "CUDA Version" ({CUPY_FIX}) or update the driver; '
            "without a GPU, use --device cpu"
        )
    major, needed = driver // 1000, built // 1000
    if major in CUDA_MAJORS and major < needed:
        fix = f"pip uninstall -y {_wheel(needed)} && pip install {_wheel(major)}, or update the NVIDIA driver"
    else:
        fix = f"update the NVIDIA driver to one for CUDA {needed}, or use --device cpu"
    return (
        f'CUDA requested but the NVIDIA driver supports CUDA {_dotted(driver)} (nvidia-smi\'s "CUDA Version") '
        f"and this CuPy needs CUDA {_dotted(built)} ({quoted(exc)}); fix: {fix}"
    )


def _no_driver(cause: str) -> str:
    return f"CUDA requested but there is no NVIDIA driver here ({cause}); fix: {NO_DRIVER_FIX}"


def _kernel_failure(cupy, index: int, exc: Exception) -> str:
    """Why GPU ``index`` (counted, so the driver works) cannot run the smoke test, and the fix."""
    said = f"CuPy sees GPU {index} but cannot run kernels on it ({quoted(exc)})"
    state = gpu_state(exc, index)
    if state:
        return f"{said}: {state}"
    if NO_KERNEL_FOR_ARCH.search(str(exc)):
        return f"{said}: {_arch_fix(cupy, index)}"
    if _LIBRARY_LOAD.search(str(exc)):
        built = _version(cupy.cuda.runtime.runtimeGetVersion)
        return f"{said}; fix: {_for_wheel(CTK_INSTALL, built and built // 1000)} to get the CUDA libraries"
    return f'{said}; fix: see what CuPy finds with python -c "import cupy; cupy.show_config()", or use --device cpu'


def _arch_fix(cupy, index: int) -> str:
    """The fix for a GPU whose architecture CuPy's CUDA has no code for: too old, or too new."""
    try:
        capability = divmod(int(cupy.cuda.Device(index).compute_capability), 10)  # "86": (8, 6)
    except Exception:
        capability = None
    built = _version(cupy.cuda.runtime.runtimeGetVersion)
    upgrade = f"{_for_wheel(CTK_INSTALL, built and built // 1000)} (a CuPy and CUDA that know newer GPUs)"
    if capability is None:
        older = (
            f"; a GPU older than compute capability {capability_text(CUDA13_OLDEST)} needs {_wheel(12)}"
            if built and built >= 13000
            else ""
        )
        return (
            f"this CuPy's CUDA has no code for its architecture; fix: {upgrade}{older}, or use --device cpu"
        )
    if too_old(capability):
        return too_old(capability)
    if capability < CUDA13_OLDEST and built and built >= 13000:
        return (
            f"CUDA 13 dropped compute capability {capability_text(capability)} (it needs "
            f"{capability_text(CUDA13_OLDEST)}+); fix: pip uninstall -y {_wheel(13)} && pip install {_wheel(12)}"
        )
    return f"compute capability {capability_text(capability)} is newer than this CuPy's CUDA knows; fix: {upgrade}"


def _version(query) -> int | None:
    """A CUDA version query's answer (1000 * major + 10 * minor), or None when it fails too."""
    try:
        return int(query())
    except Exception:
        return None


def _dotted(version: int) -> str:
    """12.6 for CUDA's 12060."""
    return f"{version // 1000}.{version % 1000 // 10}"
