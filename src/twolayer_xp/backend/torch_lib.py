"""PyTorch, on its CPU or a CUDA device."""

from __future__ import annotations

import contextlib
import functools
import re

import array_api_compat as aac

from .base import Backend, CudaUnavailableError, SharedLimit, import_or_explain, keep_freed_host_memory
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


def _torch_install(build: str) -> str:
    """The command installing torch's ``build`` ("cu126": CUDA 12.6) from torch's own index, in
    place of the torch installed (pip would call that one satisfied and change nothing)."""
    return f"pip uninstall -y torch && pip install torch --index-url https://download.pytorch.org/whl/{build}"


TORCH_CUDA_FIX = f"{_torch_install('cu126')} (CUDA 12 drivers; cu130 for CUDA 13 drivers)"


class TorchBackend(Backend):
    name = "torch"
    module = "torch"

    @classmethod
    def owns_type(cls, x) -> bool:
        return aac.is_torch_array(x)

    @classmethod
    def create(cls, kind, index, device) -> Backend:
        torch = import_or_explain("torch", "pip install torch")
        import array_api_compat.torch as xp

        if device is None:
            device = torch.device("cpu" if kind == "cpu" else f"cuda:{index}")
        if device.type == "cuda":
            device = check_torch_cuda(torch, device)
        if device.type == "cpu":
            keep_freed_host_memory()
        return cls(xp, device)

    @classmethod
    def host(cls, x):
        return x.detach().cpu().numpy()

    @classmethod
    def in_host_memory(cls, x) -> bool:
        return x.device.type == "cpu"

    @classmethod
    def host_view(cls, x):
        try:
            return super().host_view(x)
        except TypeError:  # a dtype numpy lacks (bfloat16), whose range float32 holds anyway
            return None

    @property
    def device_label(self) -> str:
        return str(self.device)

    @property
    def _on_gpu(self) -> bool:
        return self.device.type == "cuda"

    @property
    def host_memory(self) -> bool:
        return not self._on_gpu

    @property
    def host_arrays(self) -> bool:
        return not self._on_gpu

    def synchronize(self) -> None:
        if self._on_gpu:
            import torch

            torch.cuda.synchronize(self.device)

    def limit_threads(self, count):
        if count is None or self._on_gpu:
            return contextlib.nullcontext()
        return _torch_threads(count)

    def threads_in_effect(self):
        return None if self._on_gpu else _torch_threads.outside()

    def threads_now(self):
        return None if self._on_gpu else _torch_pool_threads()

    def gpu_name(self) -> str | None:
        if not self._on_gpu:
            return None
        import torch

        return torch.cuda.get_device_name(self.device)


def _set_torch_threads(count: int):
    """torch's intra-op pool (its own, which threadpoolctl does not see) at ``count`` threads;
    returns how to set it back."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    return lambda: torch.set_num_threads(before)


def _torch_pool_threads() -> int:
    import torch

    return torch.get_num_threads()


_torch_threads = SharedLimit(_set_torch_threads, _torch_pool_threads)


def check_torch_cuda(torch, device):
    """``device`` (a CUDA torch.device) with its index named, after proving torch computes on it;
    else CudaUnavailableError, one line with the fix."""
    if torch.version.cuda is None and torch.version.hip is None:
        raise CudaUnavailableError(
            f"CUDA requested but torch {torch.__version__} is a CPU-only build; "
            f"fix: {TORCH_CUDA_FIX}, or use --device cpu"
        )
    try:
        torch.cuda.init()  # raises saying why: no driver, a driver too old for this build, no GPU
    except Exception as exc:
        fix = _driver_fix(torch, str(exc)) if "too old" in str(exc) else NO_DRIVER_FIX
        raise CudaUnavailableError(
            f"CUDA requested but torch {torch.__version__} cannot use a GPU here ({quoted(exc)}); fix: {fix}"
        ) from None
    if device.index is None:  # "cuda" is torch's current GPU: named, so holds() compares alike
        device = torch.device("cuda", torch.cuda.current_device())
    count = torch.cuda.device_count()
    if device.index >= count:
        raise CudaUnavailableError(too_few_gpus(device.index, count))
    _prove(device.index)
    return device


def _driver_fix(torch, reason: str) -> str:
    """The fix for torch's "driver too old (found version 12080)": torch's build for the driver's
    CUDA when there is one (a cu130 torch on a CUDA 12 driver), else a newer driver."""
    found = re.search(r"found version (\d+)", reason)
    built = int((torch.version.cuda or "0").split(".")[0])
    if found and int(found.group(1)) // 1000 == 12 and built > 12:
        return f"{_torch_install('cu126')} (the build for the driver's CUDA 12), or update the NVIDIA driver"
    return f'update the NVIDIA driver to one for CUDA {torch.version.cuda} (nvidia-smi\'s "CUDA Version"), or use --device cpu'


@functools.cache
def _prove(index: int) -> None:
    """Run an exp and a matmul on GPU ``index`` once per process, so that a GPU this torch has no
    kernels for (or a full or busy one) fails at start in one line, not in a traceback mid-run."""
    import torch

    try:
        a = torch.ones((2, 2), dtype=torch.float32, device=f"cuda:{index}")
        value = float(torch.sum(torch.exp(a) @ a))
    except Exception as exc:
        said = f"torch sees GPU {index} but cannot compute on it ({quoted(exc)})"
        state = gpu_state(exc, index)
        if state:
            raise CudaUnavailableError(f"{said}: {state}") from None
        if NO_KERNEL_FOR_ARCH.search(str(exc)):  # CUDA 12.6 predates 10.0; CUDA 13 dropped below 7.5
            capability = tuple(torch.cuda.get_device_capability(index))
            if too_old(capability):
                raise CudaUnavailableError(f"{said}: {too_old(capability)}") from None
            build = (
                _torch_install("cu130") + " (needs a CUDA 13 driver)"
                if capability >= CUDA13_OLDEST
                else _torch_install("cu126")
            )
            fix = f"install a torch build with code for compute capability {capability_text(capability)}: {build}"
        else:
            fix = "check the GPU with nvidia-smi, or use --device cpu"
        raise CudaUnavailableError(f"{said}; fix: {fix}") from None
    if wrong_result(index, value):
        raise CudaUnavailableError(wrong_result(index, value))
