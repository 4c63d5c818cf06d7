"""Pruning (issue 17): a study of 128 trials over (hidden size, learning rate, reg, decay) on
digits, TPE, with each pruner vs the same study without one. Targets: best validation accuracy
within 0.5 points of the unpruned study's, <= 0.5x its training rows x nets processed and <= 0.6x
its wall time. Reported (extra_info), not asserted: TPE is not seeded, so one run is one draw."""

from __future__ import annotations

import pytest

from conftest import QUICK

optuna = pytest.importorskip("optuna", reason="the sweep extra (optuna) is not installed")

TRIALS = 6 if QUICK else 128
POPULATION = 3 if QUICK else 16
NUM_ITERS = 60 if QUICK else 1000
SEARCH = dict(hidden_size="32,64,128,256", learning_rate_decay="0.9:1.0")
PRUNERS = ("none", "median", "hyperband")


def test_pruned_vs_unpruned_study(benchmark, tmp_path):
    from twolayer_xp.app.sweep import SweepConfig, run_sweep

    results = {}

    def study(pruner):
        config = SweepConfig(trials=TRIALS, population=POPULATION, num_iters=NUM_ITERS, pruner=pruner,
                             out=str(tmp_path / pruner), **SEARCH)  # fmt: skip
        results[pruner] = run_sweep(config)

    run_sweep(
        SweepConfig(trials=1, population=1, num_iters=20, out=str(tmp_path / "warm-up"))
    )  # imports, data
    benchmark.group = f"sweep pruning: {TRIALS} trials, digits"
    benchmark.pedantic(lambda: study("none"), rounds=1, iterations=1, warmup_rounds=0)
    for pruner in PRUNERS[1:]:
        study(pruner)
    base = results["none"]
    work = {name: hidden_work(r["study"]) for name, r in results.items()}
    ratios = {
        name: {
            "best_val": r["best"].value,
            "best_minus_unpruned_points": 100 * (r["best"].value - base["best"].value),
            "samples_ratio": r["samples"] / base["samples"],
            "hidden_work_ratio": work[name] / work["none"],
            "seconds_ratio": r["seconds"] / base["seconds"],
            "seconds": r["seconds"],
            "train_seconds": r["train_seconds"],
            "study_seconds": r["study_seconds"],
            "summary": r["summary"],
        }
        for name, r in results.items()
    }
    benchmark.extra_info.update({"implementation": "sweep_pruning", "trials": TRIALS, "population": POPULATION,
                                 "num_iters": NUM_ITERS, "pruners": ratios})  # fmt: skip
    for name, r in ratios.items():
        print(
            f"\n{name}: best val {r['best_val']:.4f} ({r['best_minus_unpruned_points']:+.2f} points), "
            f"samples x{r['samples_ratio']:.2f}, x hidden x{r['hidden_work_ratio']:.2f}, wall x{r['seconds_ratio']:.2f} ({r['seconds']:.1f} s: "
            f"train {r['train_seconds']:.1f} s, study {r['study_seconds']:.1f} s)"
        )
    assert all(r["trials_run"] == TRIALS for r in results.values())


def hidden_work(study) -> float:
    """Rows x nets x hidden units the study's trials trained (proportional to their arithmetic):
    what the hidden sizes TPE happened to draw weigh, which the rows x nets ratio ignores. A
    pruned trial trained up to its last report: epoch e ends after iteration e * N / B + 1."""
    from twolayer_xp.io import datasets

    per_epoch = len(datasets.load("digits").y_train) / 100  # the default batch size
    total = 0.0
    for t in study.get_trials(deepcopy=False):
        if "hidden_size" not in t.params:
            continue  # turned away unrun
        iterations = (
            t.last_step * per_epoch + 1 if t.state.name == "PRUNED" else NUM_ITERS
        )  # diverged: at most
        total += iterations * 100 * t.params["hidden_size"]
    return total
