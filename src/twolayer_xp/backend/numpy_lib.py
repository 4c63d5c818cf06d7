"""numpy on the CPU: the reference backend."""

from __future__ import annotations

import numpy as np

from .base import Backend


class NumpyBackend(Backend):
    name = "numpy"
    module = "numpy"

    @classmethod
    def owns_type(cls, x) -> bool:
        return isinstance(x, (np.ndarray, np.generic))

    @classmethod
    def create(cls, kind, index, device) -> Backend:
        if kind == "cuda":
            raise ValueError("backend 'numpy' runs on the CPU only; use device='cpu' (or backend='cupy')")
        import array_api_compat.numpy as xp

        return cls(xp, "cpu")

    def quiet_overflow(self):
        return np.errstate(over="ignore", invalid="ignore")
