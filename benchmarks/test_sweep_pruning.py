"""Pruning (issue 17): a study of 128 trials over (hidden size, learning rate, reg, decay) on
digits, TPE, with each pruner vs the same study without one. Targets: best validation accuracy
within 0.5 points of the unpruned study's, <= 0.5x its training rows x nets processed and <= 0.6x
its wall time. Reported (extra_info), not asserted.

Each comparison is repeated for SEEDS, TPE seeded with the seed (``seeded_tpe``), and the median
ratio over the seeds is the verdict: one unseeded run is one draw of TPE, whose hidden-size draws
alone move the training time as much as pruning does. The default pruner's wall time is the
mean of two runs, alternating with the unpruned study's (none, default, the other pruners,
default, none; the others run once): on a
shared machine the same study's time moves by 20% from one run to the next. A seeded
one-worker study repeats exactly (checked: the repeat processed the same rows), so the repeat
changes only the timing. ``OPTUNA_HALVING`` is Optuna's own SuccessiveHalvingPruner at the
same rungs, for comparison with ``halving``'s rule (the rung's values read from the reports, a
population's members judged together)."""

from __future__ import annotations

import statistics

import pytest

from conftest import QUICK, WIDER_SEARCH, seeded_tpe, sweep_seeds

optuna = pytest.importorskip("optuna", reason="the sweep extra (optuna) is not installed")

TRIALS = 6 if QUICK else 128
POPULATION = 3 if QUICK else 16
NUM_ITERS = 60 if QUICK else 1000
SEEDS = sweep_seeds()
OPTUNA_HALVING = "halving (Optuna's)"


def test_pruned_vs_unpruned_study(benchmark, tmp_path, monkeypatch):
    from twolayer_xp.app.sweep import SweepConfig, pruning, run_sweep

    runs = {}  # (pruner, seed) -> [run_sweep's result per run]

    def study(pruner, seed):
        seeded_tpe(monkeypatch, optuna, seed)
        with monkeypatch.context() as patch:
            if pruner == OPTUNA_HALVING:
                patch.setattr(pruning, "make", optuna_halving(pruning))
            config = SweepConfig(trials=TRIALS, population=POPULATION, num_iters=NUM_ITERS,
                                 pruner="halving" if pruner == OPTUNA_HALVING else pruner,
                                 out=str(tmp_path / f"{pruner}-{seed}-{len(runs.get((pruner, seed), []))}"),
                                 **WIDER_SEARCH)  # fmt: skip
            runs.setdefault((pruner, seed), []).append(run_sweep(config))

    run_sweep(
        SweepConfig(trials=1, population=1, num_iters=20, out=str(tmp_path / "warm-up"))
    )  # imports, data
    benchmark.group = f"sweep pruning: {TRIALS} trials, digits"
    benchmark.pedantic(lambda: study("none", SEEDS[0]), rounds=1, iterations=1, warmup_rounds=0)
    default, others = (
        pruning.DEFAULT_PRUNER,
        [p for p in pruning.PRUNERS if p not in ("none", pruning.DEFAULT_PRUNER)],
    )
    for seed in SEEDS:
        for pruner in [
            *(["none"] if seed != SEEDS[0] else []),
            default,
            *others,
            OPTUNA_HALVING,
            default,
            "none",
        ]:
            study(pruner, seed)
    pruners = [*pruning.PRUNERS, OPTUNA_HALVING]
    measured = {key: measures(r, runs["none", key[1]]) for key, r in runs.items()}
    verdicts = {
        pruner: {
            name: statistics.median(measured[pruner, seed][name] for seed in SEEDS)
            for name in ("best_minus_unpruned_points", "samples_ratio", "hidden_work_ratio", "seconds_ratio")
        }
        for pruner in pruners
    }
    benchmark.extra_info.update({"implementation": "sweep_pruning", "trials": TRIALS, "population": POPULATION,
                                 "num_iters": NUM_ITERS, "seeds": SEEDS, "median_over_seeds": verdicts,
                                 "runs": {f"{p} seed {s}": r for (p, s), r in measured.items()}})  # fmt: skip
    for (pruner, seed), r in sorted(measured.items()):
        print(
            f"\n{pruner} seed {seed}: best val {r['best_val']:.4f} ({r['best_minus_unpruned_points']:+.2f} points), "
            f"rows x nets x{r['samples_ratio']:.2f}, x hidden x{r['hidden_work_ratio']:.2f}, "
            f"wall x{r['seconds_ratio']:.2f} ({' + '.join(f'{s:.1f}' for s in r['seconds'])} s: "
            f"train {r['train_seconds']:.1f} s, study {r['study_seconds']:.1f} s), {r['pruned']} pruned"
        )
    for pruner, v in verdicts.items():
        print(
            f"\n{pruner}, median over seeds {SEEDS}: best {v['best_minus_unpruned_points']:+.2f} points, rows x nets "
            f"x{v['samples_ratio']:.2f}, x hidden x{v['hidden_work_ratio']:.2f}, wall x{v['seconds_ratio']:.2f}"
        )
    assert all(r["trials_run"] == TRIALS for repeats in runs.values() for r in repeats)
    for repeats in (r for r in runs.values() if len(r) > 1):  # none's and the default's, run twice:
        # a seeded one-worker study repeats exactly, only the timing differs
        assert len({r["samples"] for r in repeats}) == 1 and len({r["best"].number for r in repeats}) == 1


def optuna_halving(pruning):
    """``pruning.make`` with Optuna's SuccessiveHalvingPruner for ``halving``, at the same rungs."""
    make = pruning.make

    def made(optuna, name, search, num_train):
        if name != "halving":
            return make(optuna, name, search, num_train)
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=pruning.min_resource(search, num_train), reduction_factor=pruning.REDUCTION_FACTOR
        )

    return made


def measures(repeats: list, bases: list) -> dict:
    """A study's runs ``repeats`` against the unpruned study's runs ``bases`` of the same seed:
    wall times as the mean of each one's runs."""
    r, base = repeats[0], bases[0]
    trials = r["study"].get_trials(deepcopy=False)
    seconds = [x["seconds"] for x in repeats]
    return {
        "best_val": r["best"].value,
        "best_minus_unpruned_points": 100 * (r["best"].value - base["best"].value),
        "samples_ratio": r["samples"] / base["samples"],
        "hidden_work_ratio": hidden_work(r["study"]) / hidden_work(base["study"]),
        "seconds_ratio": statistics.mean(seconds) / statistics.mean(x["seconds"] for x in bases),
        "seconds": seconds,
        "train_seconds": r["train_seconds"],
        "study_seconds": r["study_seconds"],
        "pruned": sum(t.state.name == "PRUNED" for t in trials),
        "summary": r["summary"],
    }


def hidden_work(study) -> float:
    """Rows x nets x hidden units the study's trials trained (proportional to their arithmetic):
    what the hidden sizes TPE happened to draw weigh, which the rows x nets ratio ignores. A
    pruned trial trained up to its last report, epoch e (pruning.report_points)."""
    from twolayer_xp.app.sweep import space
    from twolayer_xp.io import datasets

    N = len(datasets.load("digits").y_train)
    total = 0.0
    for t in study.get_trials(deepcopy=False):
        if "hidden_size" not in t.params:
            continue  # turned away unrun
        iterations = (
            space.iterations(t.last_step, N, 100) + 1 if t.state.name == "PRUNED" else NUM_ITERS
        )  # diverged: at most
        total += iterations * 100 * t.params["hidden_size"]
    return total
