"""PyTorch, on its CPU or a CUDA device."""

from __future__ import annotations

import contextlib

import array_api_compat as aac

from .base import Backend, CudaUnavailableError, import_or_explain, keep_freed_host_memory


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
            if not torch.cuda.is_available():
                raise CudaUnavailableError(
                    "CUDA requested but this torch build sees no GPU; run on a machine with an "
                    "NVIDIA GPU and a CUDA build of torch, or use --device cpu"
                )
            if device.index is None:  # "cuda" is torch's current GPU: named, so holds() compares alike
                device = torch.device("cuda", torch.cuda.current_device())
            count = torch.cuda.device_count()
            if device.index >= count:
                raise CudaUnavailableError(
                    f"CUDA device {device} requested but only {count} GPU(s) are visible"
                )
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

    def gpu_name(self) -> str | None:
        if not self._on_gpu:
            return None
        import torch

        return torch.cuda.get_device_name(self.device)


@contextlib.contextmanager
def _torch_threads(count: int):
    """torch's intra-op pool at ``count`` threads for the context (its own pool, which
    threadpoolctl does not see), restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
