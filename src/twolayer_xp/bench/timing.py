"""Timing helpers shared by ``benchmarks/``, the notebook and ``bench.report``.

A "step" is what one SGD iteration costs on an already-sampled minibatch: forward, softmax
cross-entropy, L2, backward and the in-place update. The "floor" is the two GEMMs that dominate
it, ``X @ W1`` and ``X.T @ dH``, into preallocated outputs (``benchmarks/floor.py``): no
implementation of the step can beat it on the same library. Every timed call ends with ``backend.synchronize()``, so GPU
timings measure the work and not its launch.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from twolayer_xp.backend import Backend, resolve
from twolayer_xp.core import kernels

# name -> (N, D, H, C): minibatch rows, features, hidden units, classes
SHAPES = {
    "cifar-h100": (200, 3072, 100, 10),
    "cifar-h500": (200, 3072, 500, 10),
    "cifar-n1000": (1000, 3072, 500, 10),
    "small": (64, 64, 100, 10),
}
STEPS_PER_SYNC = 10  # compare_devices' steps between syncs


def flops_per_step(shape: tuple) -> int:
    """FLOPs of one step of ``shape`` (N, D, H, C): ``kernels.step_flops``."""
    return kernels.step_flops(*shape)


@dataclass
class Problem:
    """A random minibatch and params of ``shape`` on a backend, for timing."""

    backend: Backend
    shape: tuple
    dtype: Any
    params: dict
    X: Any
    y: Any
    learning_rate: float = 1e-4
    reg: float = 1e-3


def make_problem(backend: Backend | str, shape: tuple, dtype: str = "float32", seed: int = 0) -> Problem:
    """Data drawn on the host (same numbers on every backend) and placed on the device."""
    if isinstance(backend, str):
        backend = resolve(backend)
    N, D, H, C = shape
    rng = np.random.default_rng(seed)
    put = lambda a: backend.asarray(a, dtype=dtype, copy=True)  # noqa: E731
    params = {
        "W1": put(1e-2 * rng.standard_normal((D, H))),
        "b1": put(np.zeros(H)),
        "W2": put(1e-2 * rng.standard_normal((H, C))),
        "b2": put(np.zeros(C)),
    }
    X = put(rng.standard_normal((N, D)))
    y = backend.asarray(rng.integers(0, C, size=N))
    return Problem(backend, shape, backend.dtype(dtype), params, X, y)


def step_fn(problem: Problem, steps: int = 1) -> Callable[[], None]:
    """``steps`` SGD steps of our kernels in a row, in place on the problem's params, then one
    device sync: the clock never stops on work still queued."""
    p, sync = problem, problem.backend.synchronize
    with p.backend.activate():  # its class column is made on the current device
        ctx = kernels.context(p.y, p.shape[3], p.backend.xp)  # as the training loop resolves it

    def step():
        with p.backend.activate():
            for _ in range(steps):
                kernels.sgd_step(p.params, p.X, p.y, p.learning_rate, p.reg, ctx)
            sync()

    return step


def time_interleaved(
    fns: dict[str, Callable[[], None]],
    rounds: int = 5,
    repeats: int = 20,
    warmup: int = 3,
    settle: float = 0.0,
) -> dict:
    """Seconds per call of each function: the minimum over rounds of the per-round median,
    measured in alternating blocks.

    Shared machines drift (a busy neighbour can make a GEMM 3x slower for a while, and slows
    memory-bound work more than compute-bound GEMMs); alternating the candidates and keeping each
    one's best round keeps their ratio honest even when absolute times move. settle: seconds to sleep before each block.
    Use ~0.25 when the candidates use different thread pools (numpy's OpenBLAS vs torch's
    OpenMP): a pool's threads spin for a while after their last job and steal the cores of the
    next block (measured: torch looked 3x slower right after numpy without it).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    per_round = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            if settle:
                time.sleep(settle)
                fn()  # wake this block's own threads
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            per_round[name].append(statistics.median(times))
    # min over rounds of the per-round median: a round slowed by a neighbour does not count
    return {name: min(values) for name, values in per_round.items()}


def compare_devices(
    devices: list, shape: tuple = SHAPES["cifar-h100"], dtype: str = "float32", **timing
) -> list[dict]:
    """Our step on each device ("cpu", "cuda", ...): ms/step, samples/s, GFLOP/s per device.

    Steps are timed STEPS_PER_SYNC in a row, then one sync, as the training loop queues them: a
    sync after every step would add the GPU's launch and sync latency to each step, which the
    loop (it syncs every 100) hides behind the next steps' work."""
    rows = []
    for device in devices:
        problem = make_problem(resolve(device), shape, dtype)
        seconds = time_interleaved({"step": step_fn(problem, STEPS_PER_SYNC)}, **timing)["step"]
        rows.append(summarize(str(device), shape, seconds / STEPS_PER_SYNC))
    return rows


def summarize(label: str, shape: tuple, seconds: float) -> dict:
    return {
        "label": label,
        "ms_per_step": seconds * 1e3,
        "samples_per_second": shape[0] / seconds,
        "gflops": flops_per_step(shape) / seconds / 1e9,
    }
