"""The GEMM floor of a step: ``X @ W1`` and ``X.T @ dH`` into preallocated outputs.

The array API has no ``out=``, so this names the libraries that do (benchmarks only; the
package itself never does).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def matmul_into(backend, a, b, out):
    """a @ b written into ``out``: numpy, CuPy and torch support it; elsewhere a plain matmul."""
    if backend.name == "numpy":
        return np.matmul(a, b, out=out)
    if backend.name == "cupy":
        import cupy

        return cupy.matmul(a, b, out=out)
    if backend.name == "torch":
        import torch

        return torch.matmul(a, b, out=out)
    return a @ b


def floor_fn(problem) -> Callable[[], None]:
    """The two dominant GEMMs of a step, into preallocated outputs, synchronized."""
    b, xp = problem.backend, problem.backend.xp
    N, D, H, _ = problem.shape
    X, W1 = problem.X, problem.params["W1"]
    dH = b.asarray(np.random.default_rng(1).standard_normal((N, H)), dtype=problem.dtype)
    hidden = xp.zeros((N, H), dtype=problem.dtype, device=b.device)
    dW1 = xp.zeros((D, H), dtype=problem.dtype, device=b.device)
    Xt = xp.matrix_transpose(X)

    def floor():
        matmul_into(b, X, W1, hidden)
        matmul_into(b, Xt, dH, dW1)
        b.synchronize()

    return floor
