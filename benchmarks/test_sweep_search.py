"""The wider search (issue 17): a study over (hidden size, learning rate, reg, decay) vs the
same number of trials over learning rate x reg only, digits, TPE, with the default pruner and
with none (the search spaces alone). Target: the wider study's best validation accuracy >= the
narrow one's. Reported (extra_info ``wider_minus_narrow``), not asserted: each comparison is
repeated for SEEDS, TPE seeded with the seed, and the median difference over the seeds is the
verdict (one run is one draw)."""

from __future__ import annotations

import statistics

import pytest

from conftest import QUICK, WIDER_SEARCH, seeded_tpe, sweep_seeds

optuna = pytest.importorskip("optuna", reason="the sweep extra (optuna) is not installed")

TRIALS = 4 if QUICK else 128
POPULATION = 4 if QUICK else 32
NUM_ITERS = 50 if QUICK else 1000
SEEDS = sweep_seeds()


def test_wider_search_vs_lr_reg_only(benchmark, tmp_path, monkeypatch):
    from twolayer_xp.app.sweep import SweepConfig, pruning, run_sweep

    pruners = (pruning.DEFAULT_PRUNER, "none")
    results = {}  # (name, pruner, seed) -> run_sweep's result

    def study(name, pruner, seed, **search):
        seeded_tpe(monkeypatch, optuna, seed)
        config = SweepConfig(trials=TRIALS, population=POPULATION, num_iters=NUM_ITERS, pruner=pruner,
                             out=str(tmp_path / f"{name}-{pruner}-{seed}"), **search)  # fmt: skip
        results[name, pruner, seed] = run_sweep(config)

    benchmark.group = f"sweep search space: {TRIALS} trials, digits"
    benchmark.pedantic(
        lambda: study("wider", pruners[0], SEEDS[0], **WIDER_SEARCH), rounds=1, iterations=1, warmup_rounds=0
    )
    for pruner in pruners:
        for seed in SEEDS:
            if ("wider", pruner, seed) not in results:
                study("wider", pruner, seed, **WIDER_SEARCH)
            study("narrow", pruner, seed)
    gains = {
        p: [results["wider", p, s]["best"].value - results["narrow", p, s]["best"].value for s in SEEDS]
        for p in pruners
    }
    benchmark.extra_info.update(
        {
            "implementation": "sweep_search",
            "trials": TRIALS,
            "population": POPULATION,
            "num_iters": NUM_ITERS,
            "seeds": SEEDS,
            "best_val": {f"{n} {p} seed {s}": r["best"].value for (n, p, s), r in results.items()},
            "best_params": {f"{n} {p} seed {s}": r["best"].params for (n, p, s), r in results.items()},
            "seconds": {f"{n} {p} seed {s}": r["seconds"] for (n, p, s), r in results.items()},
            "wider_minus_narrow": {p: statistics.median(g) for p, g in gains.items()},
            "wider_minus_narrow_per_seed": gains,
        }
    )
    for pruner in pruners:
        for seed in SEEDS:
            narrow, wider = results["narrow", pruner, seed], results["wider", pruner, seed]
            print(
                f"\n--pruner {pruner}, seed {seed}, {TRIALS} trials: best val lr x reg only "
                f"{narrow['best'].value:.4f} ({narrow['seconds']:.1f} s), + hidden size and decay "
                f"{wider['best'].value:.4f} ({wider['seconds']:.1f} s)"
            )
        print(
            f"\n--pruner {pruner}: wider - narrow, median over seeds {SEEDS}: "
            f"{100 * statistics.median(gains[pruner]):+.2f} points; target >= 0"
        )
    assert all(r["trials_run"] == TRIALS for r in results.values())
