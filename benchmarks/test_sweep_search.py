"""The wider search (issue 17): a study over (hidden size, learning rate, reg, decay) vs the
same number of trials over learning rate x reg only, digits, TPE, the default pruner. Target:
the wider study's best validation accuracy >= the narrow one's. Reported (extra_info
``wider_minus_narrow``), not asserted: each comparison is repeated for SEEDS, TPE seeded with
the seed, and the median difference over the seeds is the verdict (one run is one draw)."""

from __future__ import annotations

import statistics

import pytest

from conftest import QUICK, WIDER_SEARCH, seeded_tpe

optuna = pytest.importorskip("optuna", reason="the sweep extra (optuna) is not installed")

TRIALS = 4 if QUICK else 128
POPULATION = 4 if QUICK else 32
NUM_ITERS = 50 if QUICK else 1000
SEEDS = (0,) if QUICK else (0, 1, 2)


def test_wider_search_vs_lr_reg_only(benchmark, tmp_path, monkeypatch):
    from twolayer_xp.app.sweep import SweepConfig, run_sweep

    results = {}  # (name, seed) -> run_sweep's result

    def study(name, seed, **search):
        seeded_tpe(monkeypatch, optuna, seed)
        config = SweepConfig(trials=TRIALS, population=POPULATION, num_iters=NUM_ITERS,
                             out=str(tmp_path / f"{name}-{seed}"), **search)  # fmt: skip
        results[name, seed] = run_sweep(config)

    benchmark.group = f"sweep search space: {TRIALS} trials, digits"
    benchmark.pedantic(
        lambda: study("wider", SEEDS[0], **WIDER_SEARCH), rounds=1, iterations=1, warmup_rounds=0
    )
    study("narrow", SEEDS[0])
    for seed in SEEDS[1:]:
        study("wider", seed, **WIDER_SEARCH)
        study("narrow", seed)
    best = {f"{name} seed {seed}": r["best"].value for (name, seed), r in results.items()}
    gains = [results["wider", s]["best"].value - results["narrow", s]["best"].value for s in SEEDS]
    benchmark.extra_info.update(
        {
            "implementation": "sweep_search",
            "trials": TRIALS,
            "population": POPULATION,
            "num_iters": NUM_ITERS,
            "seeds": SEEDS,
            "best_val": best,
            "best_params": {f"{n} seed {s}": r["best"].params for (n, s), r in results.items()},
            "seconds": {f"{n} seed {s}": r["seconds"] for (n, s), r in results.items()},
            "wider_minus_narrow": statistics.median(gains),
            "wider_minus_narrow_per_seed": gains,
        }
    )
    for seed in SEEDS:
        narrow, wider = results["narrow", seed], results["wider", seed]
        print(
            f"\nseed {seed}, {TRIALS} trials: best val lr x reg only {narrow['best'].value:.4f} "
            f"({narrow['seconds']:.1f} s), + hidden size and decay {wider['best'].value:.4f} "
            f"({wider['seconds']:.1f} s)"
        )
    print(
        f"\nwider - narrow, median over seeds {SEEDS}: {100 * statistics.median(gains):+.2f} points; target >= 0"
    )
    assert all(r["trials_run"] == TRIALS for r in results.values())
