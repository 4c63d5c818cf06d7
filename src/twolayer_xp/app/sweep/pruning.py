"""Stopping hopeless trials early: which pruner a study uses (successive halving on the reports,
or Optuna's median or Hyperband), and the epochs at which a population reports its members' validation
accuracy to it.

A trial reports at epoch ends (``report_points``: CS231n's, after iteration ``t`` with
``t % max(N / B, 1) == 0``, where N / B is whole; passes of the training set otherwise), the step
being the epochs done: at every ``stride``-th one (median, Hyperband: at most
``MAX_REPORTS`` reports), or, for successive halving, at its rungs only (``stride`` times powers
of ``REDUCTION_FACTOR``): a report between rungs changes nothing and costs a storage write and a
read. The epochs are the same for every trial of a study (they come from the study's stored
search and the training set's size), so the pruner compares trials at the same steps.
"""

from __future__ import annotations

import copy
import itertools
import math

from twolayer_xp.app.sweep import space

PRUNERS = ("none", "median", "halving", "hyperband")
DEFAULT_PRUNER = "halving"  # measured: benchmarks/test_sweep_pruning.py, docs/sweep-search.md
MAX_REPORTS = 10  # reports of the longest trial: each is a storage write (~5 ms on SQLite)
REDUCTION_FACTOR = 3  # successive halving's and Hyperband's: a third of each rung goes on


def longest(search: dict, num_train: int) -> int:
    """Epochs of the study's longest trial: its largest epoch budget, or its largest iteration
    budget at its largest batch size (the fewest iterations per epoch)."""
    if "epochs" in search:
        return int(space.bounds(search["epochs"])[1])
    num_iters, batch_size = (int(space.bounds(search[name])[1]) for name in ("num_iters", "batch_size"))
    return max(1, space.epochs_in(num_iters, num_train, batch_size))


def stride(search: dict, num_train: int) -> int:
    """Epochs between two reports of a trial."""
    return max(1, math.ceil(longest(search, num_train) / MAX_REPORTS))


def min_resource(search: dict, num_train: int | None) -> int:
    """The epoch of a trial's first report, where a rung-based pruner's first rung is; 1 for a
    study opened without data (``num_train`` None)."""
    return 1 if num_train is None else stride(search, num_train)


def report_epochs(name: str, search: dict, num_train: int) -> set[int]:
    """Epochs at which the trials of a study with pruner ``name`` report: none without one; every
    ``stride``-th; successive halving's rungs, those no later than a REDUCTION_FACTOR-th of the
    longest trial (the next rung still inside it; a later rung would save little and stop
    trials that have nearly finished, which then cannot be the study's best)."""
    if name == "none":
        return set()
    every, last = stride(search, num_train), longest(search, num_train)
    if name != "halving":
        return set(range(every, last + 1, every))
    rungs = (every * REDUCTION_FACTOR**k for k in range(last))
    return set(itertools.takewhile(lambda epoch: epoch * REDUCTION_FACTOR <= last, rungs)) or {every}


def make(optuna, name: str, search: dict, num_train: int | None):
    """The pruner called ``name`` (one of PRUNERS) for a study of ``search``; ``num_train``
    None (a study opened without data): Hyperband sizes itself from the first finished trial."""
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0, interval_steps=1)
    if name == "halving":  # its rungs are the steps the trials report at (report_epochs)
        return Halving()
    return optuna.pruners.HyperbandPruner(
        min_resource=min_resource(search, num_train),
        max_resource="auto" if num_train is None else longest(search, num_train),
        reduction_factor=REDUCTION_FACTOR,
    )


class Halving:
    """Successive halving decided on the trials' reports (Optuna's pruner interface,
    ``prune(study, trial)``; optuna is not imported here, so no BasePruner subclass: Optuna
    checks no pruner's class but Hyperband's): a trial reporting accuracy ``a`` at step ``s`` goes
    on if ``a`` is among the best 1/REDUCTION_FACTOR of the accuracies every trial of the study
    reported at ``s`` (ties go on; the best one goes on however few reported), members that
    reached their budget at ``s`` included. A halving study reports at its rungs only
    (``report_epochs``), so every report is a rung.

    What Optuna's SuccessiveHalvingPruner does, with three differences. The values a rung compares
    are the reports themselves: no copy of each is written as a rung record (a storage write per
    report). And a round's members, every shape's, which all report before any is decided
    (``stopped``, called by the sweep's worker once per report epoch), are judged against each
    other as a whole, so the decision does not depend on the order they are asked in; Optuna's
    pruner, asked member by member, compares a member only with the members asked before it, so
    it lets the first member of a new study through unconditionally and each of the next ones if
    it beats those before it (measured: benchmarks/test_sweep_pruning.py,
    docs/sweep-search.md). And a killed worker's trial and the retry that runs it again count
    once at a rung (Optuna's copies the rung records to the retry, which then skips the rungs
    its first run passed)."""

    def prune(self, study, trial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        value = trial.intermediate_values[step]
        if math.isnan(value):
            return True
        trials = study.get_trials(deepcopy=False)
        # A killed worker's trial is run again from the start by a retry (Optuna's retry_history
        # lists the runs before it): a run whose retry reached this rung counts once, as the retry.
        skipped = {trial.number} | {
            n
            for t in trials
            if step in t.intermediate_values
            for n in t.system_attrs.get("retry_history", ())
        }
        others = (t.intermediate_values.get(step) for t in trials if t.number not in skipped)
        reached = sorted([value, *(v for v in others if v is not None and not math.isnan(v))], reverse=True)
        return value < reached[max(len(reached) // REDUCTION_FACTOR, 1) - 1]

    def __repr__(self) -> str:
        return f"Halving(reduction_factor={REDUCTION_FACTOR})"


def report_points(num_train: int, batch_size: int, budget: int, epochs: set[int]) -> dict[int, int]:
    """{iterations done: epoch} at which a population of ``batch_size`` trained up to ``budget``
    iterations reports: the ends of the epochs in ``epochs`` before its budget's end. Epoch e
    ends at step t = ceil(e max(N / B, 1)) (0-based, ``space.iterations``), and is reported after
    it, at t + 1 iterations: CS231n's epoch end (t % max(N / B, 1) == 0) when N / B is whole.
    Where it is not, CS231n's float rule marks one only every q passes, N / B being p / q in
    lowest terms (16 for 1300 / 64), or never after step 0 (1299 / 100, not exact in binary),
    so an epoch is counted as ``--epochs`` counts it, a pass rounded up to whole iterations."""
    points = {}
    for epoch in sorted(epochs):
        step = space.iterations(epoch, num_train, batch_size)
        if step < budget:
            points[step + 1] = epoch
    return points


def in_history(num_train: int, batch_size: int) -> bool:
    """Whether every report point is one of CS231n's epoch ends, after which the training history
    holds the members' validation accuracy: when N / B is whole, or B >= N (an epoch a step)."""
    return batch_size >= num_train or num_train % batch_size == 0


def stopped(optuna, study, trial_ids: list) -> list[bool]:
    """Whether the study's pruner stops each trial of ``trial_ids`` (storage ids; they have
    all just reported), as ``Trial.should_prune`` answers, asked of one read of the study, taken
    after the reports: a pruner reads every trial of the study for every question, so asking K
    members would read it K times."""
    snapshot = _Snapshot(study._storage, study._study_id)
    view = optuna.study.Study(study_name=study.study_name, storage=snapshot, sampler=study.sampler,
                              pruner=study.pruner)  # fmt: skip
    return [_stops(optuna, view, snapshot.get_trial(i)) for i in trial_ids]


def _stops(optuna, view, trial) -> bool:
    """The pruner's answer for ``trial``; True for a trial another worker failed as stale since
    it reported (Hyperband's rung mark cannot be written to it): it is dropped, and its retry
    runs it."""
    try:
        return bool(view.pruner.prune(view, trial))
    except optuna.exceptions.UpdateFinishedTrialError:
        return True


class _Snapshot:
    """A study's storage whose trials are read once: reads of trials come from that read;
    everything else, and writes (Hyperband's rung marks), go to the storage, the rung marks into
    the snapshot too, so that a later question of the same round sees them as it would live."""

    def __init__(self, storage, study_id: int):
        self._storage = storage
        self._by_id = {t._trial_id: t for t in storage.get_all_trials(study_id, deepcopy=False)}
        self._trials = list(self._by_id.values())

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states=None) -> list:
        return [t for t in self._trials if states is None or t.state in states]

    def get_trial(self, trial_id: int):
        return self._by_id[trial_id]

    def set_trial_system_attr(self, trial_id: int, key: str, value) -> None:
        self._storage.set_trial_system_attr(trial_id, key, value)
        trial = copy.deepcopy(self._by_id[trial_id])  # the storage's cached trial is not ours to change
        trial.system_attrs[key] = value
        self._by_id[trial_id] = trial
        self._trials = list(self._by_id.values())

    def __getattr__(self, name: str):
        return getattr(self._storage, name)
