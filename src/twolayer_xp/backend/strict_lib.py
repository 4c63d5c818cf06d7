"""array-api-strict: the standard and nothing more, with fake devices that catch misplacement."""

from __future__ import annotations

import numpy as np

from .base import Backend, blas_threads, blas_threads_in_effect, blas_threads_now, import_or_explain


class StrictBackend(Backend):
    name = "array_api_strict"
    module = "array_api_strict"
    host_inputs_only = True  # it builds on numpy, which refuses another library's device arrays

    @classmethod
    def owns_type(cls, x) -> bool:
        return type(x).__module__.startswith("array_api_strict")

    @classmethod
    def create(cls, kind, index, device) -> Backend:
        if kind == "cuda":
            raise ValueError("backend 'array_api_strict' has no CUDA device; use one of its Device objects")
        xs = import_or_explain("array_api_strict", "pip install array-api-strict")
        return cls(xs, device if device is not None else _cpu())

    @classmethod
    def host(cls, x) -> np.ndarray:
        return np.asarray(x.to_device(_cpu()))  # numpy refuses other devices

    @classmethod
    def in_host_memory(cls, x) -> bool:
        return x.device == _cpu()  # its other devices stand in for GPUs

    @property
    def device_label(self) -> str:
        return getattr(self.device, "_device", str(self.device))

    def quiet_overflow(self):
        return np.errstate(over="ignore", invalid="ignore")  # strict computes with numpy underneath

    def limit_threads(self, count):
        return blas_threads(count)

    def threads_in_effect(self):
        return blas_threads_in_effect()

    def threads_now(self):
        return blas_threads_now()


def _cpu():
    """array-api-strict's CPU device, whose arrays numpy reads (it refuses the others')."""
    import array_api_strict as xs

    return xs.Device("CPU_DEVICE")
