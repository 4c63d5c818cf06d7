"""The whole train() loop on CIFAR-shaped data: how much it adds over its steps."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from twolayer_xp import TwoLayerNet
from twolayer_xp.backend import resolve
from twolayer_xp.bench.timing import make_problem, step_fn, time_interleaved

from conftest import BACKENDS, QUICK

NUM_TRAIN, NUM_VAL = (2000, 200) if QUICK else (49_000, 1_000)
ITERS = 20 if QUICK else 500


@pytest.fixture(scope="module")
def cifar_shaped():
    """Random data of CIFAR-10's training shape, float32, on the host (600 MB at full size)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((NUM_TRAIN + NUM_VAL, 3072), dtype=np.float32)
    y = rng.integers(0, 10, size=NUM_TRAIN + NUM_VAL)
    return X, y


@pytest.mark.parametrize("hidden", [100, 500])
def test_train_loop(benchmark, cifar_shaped, backend_label, hidden):
    X, y = cifar_shaped
    backend = resolve(*BACKENDS[backend_label])
    Xd, yd = backend.asarray(X, dtype="float32"), backend.asarray(y)  # placed once, as a run does
    X_train, y_train, X_val, y_val = Xd[:NUM_TRAIN, ...], yd[:NUM_TRAIN], Xd[NUM_TRAIN:, ...], yd[NUM_TRAIN:]
    net = TwoLayerNet(
        3072, hidden, 10, device=BACKENDS[backend_label][0], backend=backend.name, dtype="float32", rng=0
    )

    histories = []

    def loop():
        histories.append(
            net.train(X_train, y_train, X_val, y_val, learning_rate=1e-4, reg=1e-3, num_iters=ITERS)
        )
        backend.synchronize()

    # The same run's parts, timed alternately: a step on a sampled minibatch, and the gather.
    # The gather cycles through 64 different index sets, as the loop does, so that it reads
    # rows from memory rather than from a cache warmed by the previous call.
    problem = make_problem(backend, (200, 3072, hidden, 10), "float32")
    index_sets = [backend.asarray(r) for r in np.random.default_rng(1).integers(0, NUM_TRAIN, size=(64, 200))]
    next_indices = itertools.cycle(index_sets).__next__

    def gather():
        idx = next_indices()
        backend.xp.take(X_train, idx, axis=0)
        backend.xp.take(y_train, idx, axis=0)
        backend.synchronize()

    parts = time_interleaved(
        {"step": step_fn(problem), "gather": gather}, rounds=3, repeats=5 if QUICK else 20
    )
    benchmark.group = f"train() loop, {NUM_TRAIN} x 3072, H={hidden}, float32"
    benchmark.extra_info.update(
        {
            "implementation": "train_loop",
            "backend": backend_label,
            "hidden": hidden,
            "iterations": ITERS,
            "step_ms": parts["step"] * 1e3,
            "gather_ms": parts["gather"] * 1e3,
        }
    )
    benchmark.pedantic(loop, rounds=1 if QUICK else 3, iterations=1, warmup_rounds=0)
    benchmark.extra_info["threads"] = net.threads_used._asdict()  # what train() chose (core.threads)
    if benchmark.stats is not None:
        per_iter = benchmark.stats.stats.median / ITERS
        benchmark.extra_info["ms_per_iteration"] = per_iter * 1e3
        benchmark.extra_info["x_steps"] = per_iter / parts["step"]
        benchmark.extra_info["x_steps_plus_gather"] = per_iter / (parts["step"] + parts["gather"])
    assert all(len(h["loss_history"]) == ITERS and np.isfinite(h["loss_history"]).all() for h in histories)
