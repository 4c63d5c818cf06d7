"""numpy on the CPU: the reference backend."""

from __future__ import annotations

import types

import numpy as np

from .base import Backend, blas_threads, blas_threads_in_effect, blas_threads_now, keep_freed_host_memory


class NumpyBackend(Backend):
    name = "numpy"
    module = "numpy"
    host_arrays = True  # numpy's arrays are the host's own
    host_inputs_only = True

    @classmethod
    def in_host_memory(cls, x) -> bool:
        return True

    @classmethod
    def owns_type(cls, x) -> bool:
        return isinstance(x, (np.ndarray, np.generic))

    @classmethod
    def create(cls, kind, index, device) -> Backend:
        if kind == "cuda":
            raise ValueError("backend 'numpy' runs on the CPU only; use --device cpu (or --backend cupy)")
        keep_freed_host_memory()
        return cls(_lean_namespace(), "cpu")

    def quiet_overflow(self):
        return np.errstate(over="ignore", invalid="ignore")

    def limit_threads(self, count):
        return blas_threads(count)

    def threads_in_effect(self):
        return blas_threads_in_effect()

    def threads_now(self):
        return blas_threads_now()


def _lean_namespace():
    """array-api-compat's numpy namespace, with the calls a training step makes most often
    bound straight to numpy's C entry points: ``np.sum`` and friends go through two Python
    wrapper layers (~1 us each, a sixth of a small step). Same functions, same results."""
    import array_api_compat.numpy as compat

    lean = types.ModuleType("twolayer_xp.backend.numpy_lib.xp", compat.__doc__)
    lean.__dict__.update({k: v for k, v in vars(compat).items() if not k.startswith("__")})
    lean.__array_namespace_info__ = compat.__array_namespace_info__
    lean.__array_api_version__ = compat.__array_api_version__
    lean.sum = _reduction(np.add.reduce, np.sum)
    lean.max = _reduction(np.maximum.reduce, np.max)
    lean.take = lambda x, indices, /, *, axis=None: x.take(indices, axis=axis)
    lean.astype = _astype(compat.astype)
    if hasattr(np.ndarray, "mT"):  # numpy >= 2: the same view, without compat's swapaxes (~1.5 us)
        lean.matrix_transpose = lambda x, /: x.mT
    return lean


def _reduction(ufunc_reduce, fallback):
    def reduce(x, /, *, axis=None, dtype=None, keepdims=False):
        if dtype is None and axis is not None and x.dtype != np.bool_:
            return ufunc_reduce(x, axis=axis, keepdims=keepdims)
        return fallback(x, axis=axis, dtype=dtype, keepdims=keepdims)  # the standard's dtype rules

    return reduce


def _astype(fallback):
    def astype(x, dtype, /, *, copy=True, device=None):
        if device is None and copy:
            return x.astype(dtype)
        return fallback(x, dtype, copy=copy, device=device)

    return astype
