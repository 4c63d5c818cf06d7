"""K nets trained as one Population vs the same K nets trained one after another (the CS231n
tuning cell), same total work, timed alternately in one test: samples x nets per second. On
the CPU, and on the GPU when CuPy finds one: one net is too small to keep a GPU busy, which is
what a population is for. (Each train call returns its history as numpy: the device is synced
before the clock stops.)"""

from __future__ import annotations

import resource
import warnings

import numpy as np
import pytest

from twolayer_xp import Population, TwoLayerNet, cuda_available
from twolayer_xp.bench.timing import time_interleaved

from conftest import QUICK

SHAPES = {"digits": (100, 64, 128, 10), "cifar": (200, 3072, 100, 10)}
CASES = [
    ("digits", 1),
    ("digits", 4),
    ("digits", 16),
    ("digits", 64),
    ("cifar", 1),
    ("cifar", 4),
    ("cifar", 16),
]
TARGETS = {("digits", 64): 2.0, ("cifar", 16): 1.15}  # issue 9: population speed-up wanted (CPU)
DEVICES = ["cpu", *(["cuda"] if cuda_available() else [])]
if QUICK:
    CASES = [("digits", 4)]
ITERS = 5 if QUICK else 40


def problem(shape_key: str):
    N, D, H, C = SHAPES[shape_key]
    rng = np.random.default_rng(0)
    rows = 2000 if shape_key == "digits" else 5000
    X = rng.standard_normal((rows, D)).astype(np.float32)
    return X, rng.integers(0, C, size=rows), N, H, C


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape_key,K", CASES, ids=[f"{s}-K{k}" for s, k in CASES])
def test_population_vs_sequential(benchmark, shape_key, K, device):
    X, y, N, H, C = problem(shape_key)
    lrs = np.geomspace(1e-3, 1e-1, K)
    kwargs = dict(num_iters=ITERS, batch_size=N, sync_every=ITERS)

    def population():
        pop = Population(X.shape[1], H, C, size=K, std=1e-3, device=device, dtype="float32", rng=0)
        pop.train(X, y, X[:200], y[:200], learning_rate=lrs, reg=1e-4, **kwargs)

    def sequential():
        for k in range(K):
            net = TwoLayerNet(X.shape[1], H, C, std=1e-3, device=device, dtype="float32", rng=k)
            net.train(X, y, X[:200], y[:200], learning_rate=float(lrs[k]), reg=1e-4, **kwargs)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        benchmark.group = f"population {shape_key} K={K} {device}"
        benchmark.extra_info.update(
            {"implementation": "population", "shape": list(SHAPES[shape_key]), "K": K, "device": device}
        )
        benchmark.pedantic(population, rounds=2 if QUICK else 5, iterations=1, warmup_rounds=1)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        population()
        benchmark.extra_info["page_faults_per_step"] = (
            resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        ) / ITERS
        times = time_interleaved(
            {"population": population, "sequential": sequential},
            rounds=2 if QUICK else 4,
            repeats=1 if QUICK else 3,
            warmup=1,
        )
    speedup = times["sequential"] / times["population"]
    benchmark.extra_info.update(
        {
            "speedup": speedup,
            "target": TARGETS.get((shape_key, K)) if device == "cpu" else None,
            "sample_nets_per_second": N * K * ITERS / times["population"],
            "sequential_sample_nets_per_second": N * K * ITERS / times["sequential"],
        }
    )
    assert speedup > 0  # a ratio; targets are reported, not asserted (machines drift)
