"""A sweep of 64 configurations on digits vs the same 64 trained one net at a time (CS231n's cell).

Targets (issue #10): the sweep at least 2x faster on the CPU, and its own overhead (storage and
sampler: asks, tells, heartbeats, trials.csv) under 10% of its time. Both go to extra_info:
``x_loop`` (loop seconds / sweep seconds) and ``overhead_fraction``. Run alone for a report:
``python -m pytest benchmarks/test_sweep_speed.py -s --benchmark-disable``.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from twolayer_xp import TwoLayerNet
from twolayer_xp.app import config
from twolayer_xp.io import datasets as data

from conftest import QUICK

optuna = pytest.importorskip("optuna", reason="the sweep extra (optuna) is not installed")

GRID_SIDE = 2 if QUICK else 8  # GRID_SIDE**2 configurations: 64
POPULATION = 4 if QUICK else int(os.environ.get("TWOLAYER_XP_BENCH_POPULATION", "64"))
NUM_ITERS = 50 if QUICK else config.DEFAULTS["digits"]["num_iters"]


def configurations():
    """lr x reg, log-spaced across the sweep's default ranges for digits."""
    from twolayer_xp.app.sweep.command import SweepConfig

    default = SweepConfig(dataset="digits")
    lrs = np.geomspace(*default.lr, GRID_SIDE).tolist()
    regs = np.geomspace(*default.reg, GRID_SIDE).tolist()
    return lrs, regs


def one_at_a_time(ds, lrs, regs) -> list[float]:
    """CS231n's 'tune your hyperparameters' cell: a fresh net per pair, trained, scored on val."""
    d = config.DEFAULTS["digits"]
    accuracies = []
    for lr in lrs:
        for reg in regs:
            net = TwoLayerNet(
                ds.num_features, d["hidden_size"], ds.num_classes, std=d["std"], dtype="float32", rng=0
            )
            net.train(
                ds.X_train, ds.y_train, ds.X_val, ds.y_val, learning_rate=lr,
                learning_rate_decay=d["learning_rate_decay"], reg=reg, num_iters=NUM_ITERS,
                batch_size=d["batch_size"],
            )  # fmt: skip
            accuracies.append(net.accuracy(ds.X_val, ds.y_val))
    return accuracies


def test_sweep_vs_one_net_at_a_time(benchmark, tmp_path):
    from twolayer_xp.app.sweep.command import SweepConfig, run_sweep

    ds = data.load("digits", dtype="float32")
    lrs, regs = configurations()
    grid = ",".join(map(repr, lrs)), ",".join(map(repr, regs))
    runs_ = []

    def sweep():
        out = tmp_path / f"sweep-{len(runs_)}"
        # pruner none: the loop trains every configuration to the end, so the sweep does too
        config = SweepConfig(sampler="grid", grid_lr=grid[0], grid_reg=grid[1], population=POPULATION,
                             num_iters=NUM_ITERS, pruner="none", out=str(out))  # fmt: skip
        runs_.append(run_sweep(config))

    start = time.perf_counter()
    loop_accuracies = one_at_a_time(ds, lrs, regs)
    loop_seconds = time.perf_counter() - start
    benchmark.group = f"sweep of {GRID_SIDE**2} configurations, digits, {NUM_ITERS} iterations"
    benchmark.pedantic(sweep, rounds=1, iterations=1, warmup_rounds=0)
    result = runs_[-1]
    sweep_seconds = result["seconds"] - result["load_seconds"]  # the loop's data was loaded untimed
    benchmark.extra_info.update(
        {
            "implementation": "sweep",
            "configurations": GRID_SIDE**2,
            "population": POPULATION,
            "num_iters": NUM_ITERS,
            "loop_seconds": loop_seconds,
            "sweep_seconds": sweep_seconds,
            "sweep_train_seconds": result["train_seconds"],
            "sweep_study_seconds": result["study_seconds"],
            "x_loop": loop_seconds / sweep_seconds,
            "overhead_fraction": result["study_seconds"] / sweep_seconds,
        }
    )
    print(
        f"\n{GRID_SIDE**2} configurations x {NUM_ITERS} iterations: one at a time {loop_seconds:.2f} s, "
        f"sweep {sweep_seconds:.2f} s (training {result['train_seconds']:.2f} s, storage+sampler "
        f"{result['study_seconds']:.2f} s = {result['study_seconds'] / sweep_seconds:.1%}); "
        f"x_loop {loop_seconds / sweep_seconds:.2f} (target >= 2), overhead target < 10%"
    )
    assert result["trials_run"] == GRID_SIDE**2 and len(loop_accuracies) == GRID_SIDE**2
    # Both ways train the same configurations to comparable nets (weights differ by seed).
    assert abs(max(loop_accuracies) - result["best"].value) < 0.05
