"""One sweep worker: claims trials K at a time, trains them as one Population, tells the results.

How workers share one study is ``study``'s; what a sweep writes and prints, ``report``'s.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from types import SimpleNamespace

import numpy as np  # host side: per-trial budgets and flags

from twolayer_xp.app import config as configs
from twolayer_xp.app import runs
from twolayer_xp.app.sweep import pruning, report, space
from twolayer_xp.app.sweep.config import STALE_HEARTBEATS, SweepConfig
from twolayer_xp.app.sweep.study import (
    Heartbeat,
    import_optuna,
    open_storage,
    open_study,
    slot_holders,
    stored_id,
    workers_on_host,
)
from twolayer_xp.backend import dtype_name, resolve
from twolayer_xp.core import kernels, resources, threads, validation
from twolayer_xp.core.population import Population
from twolayer_xp.io import files

TRAIN_EVAL_ROWS = 5000  # train accuracy is measured on the first rows of the training split


def run_sweep(config: SweepConfig | None = None, *, progress: bool = False, **options) -> dict:
    """Join (or start) the study and work on it until it holds ``config.trials`` results.

    Returns {'study', 'summary' (one line), 'best' (the study's best trial), 'trials_run' (results told),
    'seconds', 'load_seconds', 'train_seconds', 'study_seconds', 'samples' (training rows x nets
    its SGD steps processed), 'warnings' (figures not drawn, no completed trial)} for this worker.
    ``options``: SweepConfig fields, instead of ``config`` (both: a TypeError).
    """
    if config is not None and options:  # a config is complete: options beside it would be dropped
        raise TypeError(
            "run_sweep() takes a SweepConfig or its fields as keyword arguments, not both: "
            f"got {', '.join(options)}"
        )
    config = config or SweepConfig(**options)
    opened = SimpleNamespace(study=False)
    try:
        return _run(config, progress, opened)
    except KeyboardInterrupt:
        if opened.study:
            raise
        # Not "the study keeps every told trial": it may not exist yet.
        raise runs.RunInterrupted(
            f"interrupted before this worker joined study {config.study}: run the same command to start it again"
        ) from None


def _run(config: SweepConfig, progress: bool, opened: SimpleNamespace) -> dict:
    """run_sweep's work; ``opened.study`` is set once the study is opened."""
    started = time.perf_counter()
    optuna = import_optuna()
    # Everything that can fail without touching --out or the storage comes first (a missing
    # device, missing data); a failure after it removes the folders this worker created empty.
    backend = resolve(config.device, config.backend)  # a missing GPU before a download
    data = configs.RunConfig(
        dataset=config.dataset, dtype=config.dtype, label_column=config.label_column, data_dir=config.data_dir
    )
    ds = runs.load_data(data.resolved())
    _check_largest(config, ds, backend)
    placed = _placed(ds, config, backend)
    with files.made_folder(config.out, "--out") as out:
        report.claim_out(out, config)  # another study's --out: refused before any storage
        storage = open_storage(config.storage, config.heartbeat)
        try:
            report.claim_out(out, config, lambda: stored_id(storage, config.study))  # before it is made
            study, config = open_study(optuna, storage, config, len(ds.y_train))
            report.claim_out(out, config, lambda: study.user_attrs[report.ID_ATTR], mark=True)
            opened.study = True
            loaded = time.perf_counter()
            return _work(optuna, study, storage, config, ds, placed, out, progress, (started, loaded))
        finally:
            # Close the connections now, not whenever they are collected: SQLite folds its
            # write-ahead log into study.db when the last one closes, so the file is whole on its
            # own (to copy or archive), and a PostgreSQL server sees the sessions end. The
            # returned study reconnects if it is used again.
            storage.engine.dispose()


def _work(optuna, study, storage, config, ds, placed, out, progress: bool, clock: tuple) -> dict:
    """Claim, train and tell populations until the study holds ``config.trials`` results."""
    started, loaded = clock
    worker = Worker(optuna, study, storage, config, ds, placed, out)
    with report.TrialsBar(config, enabled=progress) as bar, worker.heartbeat:
        while True:
            tick = time.perf_counter()
            worker.fail_stale()
            trials = study.get_trials(deepcopy=False)
            done = report.count_results(trials)
            bar.show(done, report.best_value(trials))
            if done >= config.trials:
                break
            fresh = len(slot_holders(trials))
            waiting = sum(t.state == optuna.trial.TrialState.WAITING for t in trials)
            claimed = worker.claim(min(config.population, max(0, config.trials - fresh) + waiting))
            if claimed:
                worker.train(claimed)
                report.write_trials_csv(study, out / "trials.csv")
                worker.study_seconds += time.perf_counter() - tick - worker.last_train_seconds
            else:  # the rest is running elsewhere: wait for it (or for it to go stale)
                running = sum(t.state == optuna.trial.TrialState.RUNNING for t in trials)
                bar.waiting(running, STALE_HEARTBEATS * config.heartbeat)
                time.sleep(min(config.heartbeat, 1.0))
    trials = study.get_trials(deepcopy=False)
    report.write_trials_csv(study, out / "trials.csv")
    figure_warnings = report.save_figure(trials, config, out / "sweep.png")
    seconds = time.perf_counter() - started
    result = {
        "study": study,
        "best": report.best_trial(trials),
        "trials_run": worker.trials_run,
        "seconds": seconds,
        "train_seconds": worker.train_seconds,
        "samples": worker.samples,  # training rows x nets that this worker's SGD steps processed
        "load_seconds": loaded - started,
        "study_seconds": worker.study_seconds,  # storage and sampler: asks, tells, heartbeats, trials.csv
        "warnings": figure_warnings + report.no_best(trials, config),
    }
    result["summary"] = report.summary(config, trials, result)
    return result


def _check_largest(config: SweepConfig, ds, backend) -> None:
    """Refuse the search's largest nets before --out or the storage is touched, with the checks a
    net or population makes when it is built and trained (failing in a population instead would
    leave its trials running, and their retries would fail alike): the most members a population
    can have, of the largest hidden size, must fit in memory, built, trained on the largest batch
    and evaluated on the largest split (``_splits``); the largest std must not overflow the
    dtype, its draws taken as 10 std (a normal deviate passes 10 with probability ~1e-23; a net
    of a std up to ~2.5x below the net's own limit may then be refused, one that overflows nearly
    at once anyway)."""
    dtype = dtype_name(backend.dtype(config.dtype))
    H, B = (int(space.bounds(getattr(config, name))[1]) for name in ("hidden_size", "batch_size"))
    std = float(space.bounds(config.std)[1])
    D, C, K = ds.num_features, ds.num_classes, min(config.population, config.trials)
    resources.check_net(
        D, H, C, dtype, backend.host_memory, members=K, remedy="--hidden-size or --population"
    )
    largest = SimpleNamespace(device=config.device, hidden_size=H, batch_size=B, dtype=dtype)
    rows = {"eval": max(len(y) for name, (_, y) in _splits(ds).items() if name != "train")}
    resources.check_run(largest, D, C, rows, members=K, remedy="--hidden-size, --batch-size or --population")
    validation.initial_scales([10 * std, 10 * std], H, dtype, D)


def _splits(ds) -> dict:
    """The rows a sweep trains on ("train") and evaluates (the rest): split -> (X, y), on the host."""
    return {
        "train": (ds.X_train, ds.y_train),
        "train_eval": (ds.X_train[:TRAIN_EVAL_ROWS], ds.y_train[:TRAIN_EVAL_ROWS]),
        "val": (ds.X_val, ds.y_val),
        "test": (ds.X_test, ds.y_test),
    }


def _placed(ds, config: SweepConfig, place) -> dict:
    """The splits on the sweep's device (``place``, its backend), once per worker: split -> (X, y)."""
    splits = _splits(ds)
    return {name: (place.asarray(X, dtype=config.dtype), place.asarray(y)) for name, (X, y) in splits.items()}


class Worker:
    """Claims slots, trains them as one Population, reports their epochs to the pruner, tells
    the results."""

    def __init__(self, optuna, study, storage, config, ds, placed, out):
        self.optuna, self.study, self.storage, self.config = optuna, study, storage, config
        self.ds, self.placed, self.out = ds, placed, out
        self.heartbeat = Heartbeat(storage, config.heartbeat)
        self.best = None  # (net, trial, accuracy): the best trial told since best/ was last saved
        self.saved = None  # _score of the best/ this worker saved last (or found better there)
        # trials_run: the results this worker told (a trial failed as stale meanwhile is its retry's)
        self.trials_run, self.train_seconds, self.last_train_seconds, self.study_seconds = 0, 0.0, 0.0, 0.0
        self.samples = 0
        self.report_epochs = pruning.report_epochs(config.pruner, config.search, len(ds.y_train))

    def fail_stale(self) -> None:
        """Fail dead workers' trials; the retry callback queues each one again, once."""
        self.optuna.storages.fail_stale_trials(self.study)
        # A worker killed between ask() and its first heartbeat leaves a RUNNING trial that Optuna
        # never finds stale: it has no worker mark of its own either (set after the first beat).
        limit = time.time() - self.config.heartbeat * STALE_HEARTBEATS
        for t in self.study.get_trials(deepcopy=False, states=(self.optuna.trial.TrialState.RUNNING,)):
            if (
                t.user_attrs.get("worker", {}).get("trial") != t.number
                and t.datetime_start.timestamp() < limit
            ):
                try:
                    if self.storage.set_trial_state_values(t._trial_id, self.optuna.trial.TrialState.FAIL):
                        self.storage.get_heartbeat_stale_trial_callback()(
                            self.study, self.storage.get_trial(t._trial_id)
                        )
                except self.optuna.exceptions.UpdateFinishedTrialError:
                    pass  # another worker got there first

    def claim(self, want: int) -> list:
        """Ask ``want`` trials; keep those holding a slot (retries keep their original's)."""
        asked = []
        for _ in range(want):
            trial = self.study.ask()
            self.heartbeat.beat(trial._trial_id)  # Optuna's heartbeat API takes the storage's id
            asked.append(trial)
        trials = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        holders = slot_holders(trials.values())
        claimed = []
        for trial in asked:
            # A retry keeps its original's slot; a fresh trial (or a retry of one killed before it
            # was marked) takes the rank of its chain's first trial among the slot holders.
            slot = trials[trial.number].user_attrs.get("worker", {}).get("slot")
            if slot is None:
                root = trials[trial.number].system_attrs.get("failed_trial", trial.number)
                slot = sum(n < root for n in holders)
            if slot >= self.config.trials:  # came too late: every slot is taken
                self.heartbeat.trial_ids.discard(trial._trial_id)
                trial.set_user_attr("surplus", True)
                self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
                continue
            # Marks the trial as this worker's; "trial" tells a retry's copied mark from its own.
            try:
                trial.set_user_attr(
                    "worker",
                    {"host": socket.gethostname(), "pid": os.getpid(), "slot": slot, "trial": trial.number},
                )
                settings = self.suggest(trial)
            except self.optuna.exceptions.UpdateFinishedTrialError:
                self.heartbeat.trial_ids.discard(trial._trial_id)
                continue  # failed as stale by another worker meanwhile (clocks apart): re-queued
            claimed.append((trial, settings))
        return claimed

    def workers_here(self) -> int:
        """The live sweep workers on this host, this one included (their share of its CPUs):
        counted afresh for every round."""
        running = self.study.get_trials(deepcopy=False, states=(self.optuna.trial.TrialState.RUNNING,))
        return workers_on_host(running, socket.gethostname())

    def thread_budget(self, settings: dict, members: int, backend, workers: int) -> threads.Threads:
        """CPU threads for a population of ``members`` nets of ``settings``' shape on
        ``backend``, its share of this host's CPUs being one of ``workers``."""
        c, ds = self.config, self.ds
        H, B = settings["hidden_size"], settings["batch_size"]
        flops = kernels.step_flops(B, ds.num_features, H, ds.num_classes, members)
        return threads.choose(c.threads, flops, share=workers, in_effect=backend.threads_in_effect())

    def suggest(self, trial) -> dict:
        """The trial's settings: learning rate and reg, and each searchable setting (its fixed
        value, or Optuna's suggestion)."""
        c = self.config
        return {
            "learning_rate": trial.suggest_float("learning_rate", *c.lr, log=True),
            "reg": trial.suggest_float("reg", *c.reg, log=True),
            **{name: space.sample(trial, name, getattr(c, name)) for name in c.searched()},
        }

    def train(self, claimed: list) -> None:
        """Train the claimed (trial, settings) pairs, one Population per shape, telling each
        trial its result as soon as its budget is reached; best/ gets the best one told. The
        shapes take turns between the epochs at which the trials report: every member of the
        round reports an epoch before the pruner decides on any of them (``_prune``), so each is
        judged against all the others, whichever shape trained first."""
        self.last_train_seconds, self.best = 0.0, None
        workers = self.workers_here()
        groups = [self._group(members, workers) for members in by_shape(claimed)]
        for epoch in sorted({epoch for g in groups for epoch in g.reports.values()}):
            at = [(g, point) for g in groups if (point := g.point(epoch)) is not None]
            self._prune([pending for g, point in at if (pending := self._advance(g, point))])
        for g in groups:
            self._advance(g, g.last())
        self.train_seconds += self.last_train_seconds

    def _group(self, members: list, workers: int) -> Group:
        """The trials of one shape as a fresh Population, with its report points and threads
        (its share of the CPUs being one of ``workers``)."""
        trials, settings = zip(*members, strict=True)
        budgets = np.array([self._iterations(s) for s in settings])
        pop = self._population(settings)
        B, N = settings[0]["batch_size"], len(self.ds.y_train)
        reports = pruning.report_points(N, B, int(budgets.max()), self.report_epochs)
        chosen = self.thread_budget(settings[0], len(members), pop.backend, workers)
        return Group(pop, trials, settings, budgets, reports, chosen, workers)

    def _advance(self, g: Group, stop: int) -> tuple | None:
        """Train group ``g`` on to ``stop`` iterations, in segments: up to each budget on the
        way, whose members (and any that diverged) are told their result and dropped
        (``Population.subset``), the rest going on exactly as if trained straight on. If
        ``stop`` is a report point, the members report there; returns (g, the members to drop,
        the members the pruner is to decide on), the drop left to ``_prune``."""
        if not len(g.live) or stop <= g.done:
            return None
        ends = sorted({*(int(b) for b in g.budgets[g.live] if g.done < b < stop), stop})
        with g.pop.backend.limit_threads(g.threads.limit):  # the accuracies too
            for end in ends:
                stats = self._train_on(g, end)
                finishing = (g.budgets[g.live] == end) | stats["diverged"]
                gone, asked = finishing.copy(), []
                if end in g.reports and end == stop:
                    val = self._val_accuracy(g.pop, stats, g.settings[0]["batch_size"])
                    asked, stale = self._report(
                        g.members(g.trials), val, g.reports[end], finishing, stats["diverged"]
                    )
                    gone |= stale
                if finishing.any():
                    self._finish(g, finishing, stats["diverged"])
                if asked:
                    return g, gone, asked
                self._drop(g, gone)
                if not len(g.live):
                    return None
        return None

    def _val_accuracy(self, pop, stats: dict, batch_size: int) -> np.ndarray:
        """The members' validation accuracy at the end of a segment that ends at a report point:
        the training history's last entry, on the host already, where report points are CS231n's
        epoch ends; else one evaluation (at the segment's end, where the host syncs anyway)."""
        if pruning.in_history(len(self.ds.y_train), batch_size):
            return stats["val_acc_history"][:, -1]
        start = time.perf_counter()
        val = pop.accuracy(*self.placed["val"])
        self.last_train_seconds += time.perf_counter() - start
        return val

    def _report(self, trials: list, val, epoch: int, finishing, diverged) -> tuple[list, np.ndarray]:
        """Report val[k] at step ``epoch`` to trials[k] (member k). Returns the members the
        pruner is to decide on (those not finishing here), and which members were declared
        stale by another worker meanwhile (to drop: their retries run them)."""
        stale, asked = np.zeros(len(trials), dtype=bool), []
        for k, trial in enumerate(trials):
            if diverged[k]:
                continue  # told FAIL by _finish
            try:
                trial.report(float(val[k]), step=epoch)
                if not finishing[k]:
                    asked.append(k)
            except self.optuna.exceptions.UpdateFinishedTrialError:
                stale[k] = True
        return asked, stale

    def _prune(self, pending: list) -> None:
        """Ask the pruner about the members that just reported, every shape's (``pending``: (group,
        members to drop, members asked), from ``_advance``), from one read of the study; tell
        the stopped ones PRUNED, and drop them with the others each group lost at the report."""
        ids = [g.trials[g.live[k]]._trial_id for g, _, ks in pending for k in ks]
        stops = iter(pruning.stopped(self.optuna, self.study, ids) if ids else [])
        for g, gone, ks in pending:
            for k in ks:
                if next(stops):
                    trial = g.trials[g.live[k]]
                    try:
                        self._record_threads(trial, g)
                        self.study.tell(trial, state=self.optuna.trial.TrialState.PRUNED)
                        self.trials_run += 1
                    except self.optuna.exceptions.UpdateFinishedTrialError:
                        pass
                    gone[k] = True
            self._drop(g, gone)

    def _drop(self, g: Group, gone) -> None:
        """Drop the live members of ``g`` where ``gone``: told, pruned, or declared stale by
        another worker (whose retry runs it); none of them is this worker's to beat for."""
        for k in np.flatnonzero(gone):
            self.heartbeat.trial_ids.discard(g.trials[g.live[k]]._trial_id)
        g.keep(~gone)

    def _finish(self, g: Group, finishing, diverged) -> None:
        """Evaluate the members of group ``g`` that are ``finishing`` and tell them."""
        start = time.perf_counter()
        pop = g.pop
        finished = pop if finishing.all() else pop.subset(np.flatnonzero(finishing))
        acc = {split: finished.accuracy(*self.placed[split]) for split in ("train_eval", "val", "test")}
        self.last_train_seconds += time.perf_counter() - start
        ks = g.live[np.flatnonzero(finishing)]
        told = [g.trials[k] for k in ks], [g.settings[k] for k in ks]
        try:
            self._tell(g, finished, *told, acc, diverged[finishing])
        except BaseException:  # a signal (or error) among the tells, maybe inside Optuna's tell
            self._keep_told(finished, *told, acc)  # after its commit: the storage says which
            raise
        finally:  # saved as soon as told, even if the tells stop: no told best is lost
            self._save_best()

    def _keep_told(self, pop, trials: list, settings: list, acc: dict) -> None:
        """``_keep_if_best`` for the trials of members of ``pop`` that the storage holds as
        completed, when the tells stopped early."""
        for k, trial in enumerate(trials):
            try:
                completed = (
                    self.storage.get_trial(trial._trial_id).state == self.optuna.trial.TrialState.COMPLETE
                )
            except Exception:  # noqa: BLE001 - the storage is what failed: nothing more to learn
                return
            if completed:
                self._keep_if_best(pop, k, trial, settings[k], acc)

    def _save_best(self) -> None:
        """best/ gets the best trial told since the last save, if it beats the one there."""
        if self.best is not None:
            report.save_best(self.out, *self.best, self.config, self.ds)
            self.saved, self.best = _score(*self.best[1:]), None

    def _iterations(self, settings: dict) -> int:
        """A trial's budget of SGD iterations: its num_iters, or its epochs over the training set."""
        if "epochs" in settings:
            return space.iterations(settings["epochs"], len(self.ds.y_train), settings["batch_size"])
        return settings["num_iters"]

    def _population(self, settings: list):
        """A fresh Population of one shape, member k initialized with settings[k]'s std."""
        c, ds = self.config, self.ds
        return Population(
            ds.num_features, settings[0]["hidden_size"], ds.num_classes, size=len(settings),
            std=[s["std"] for s in settings], device=c.device, backend=c.backend, dtype=c.dtype, rng=c.seed,
        )  # fmt: skip

    def _train_on(self, g: Group, end: int) -> dict:
        """Group ``g``'s live members trained on to ``end`` iterations, from where they stopped
        (their decayed learning rates once they have trained); Population.train's stats."""
        (X, y), (X_val, y_val) = self.placed["train"], self.placed["val"]
        pop, settings, B = g.pop, g.members(g.settings), g.settings[0]["batch_size"]
        lr = pop.state.learning_rate
        start = time.perf_counter()
        with warnings.catch_warnings(), pop.backend.quiet_overflow():
            warnings.simplefilter("ignore", RuntimeWarning)  # diverged members are told FAIL instead
            stats = pop.train(
                X, y, X_val, y_val,
                learning_rate=[s["learning_rate"] for s in settings] if lr is None else lr,
                learning_rate_decay=[s["learning_rate_decay"] for s in settings],
                reg=[s["reg"] for s in settings], num_iters=end - g.done, batch_size=B, threads=g.threads.limit,
            )  # fmt: skip
        self.last_train_seconds += time.perf_counter() - start
        self.samples += (end - g.done) * B * len(g.live)
        g.done = end
        return stats

    def _record_threads(self, trial, g: Group) -> None:
        """What the trial's population (group ``g``'s) computed with: every result carries it
        (completed, pruned or diverged)."""
        trial.set_user_attr("threads", {**g.threads._asdict(), "workers": g.workers})

    def _tell(self, g: Group, pop, trials: list, settings: list, acc: dict, diverged) -> None:
        """Tell trials[k] (member k of ``pop``, from group ``g``) its result; keep the best told
        one for best/."""
        for k, trial in enumerate(trials):
            try:
                trial.set_user_attr("train_accuracy", float(acc["train_eval"][k]))
                trial.set_user_attr("test_accuracy", float(acc["test"][k]))
                self._record_threads(trial, g)
                if diverged[k]:
                    trial.set_user_attr("diverged", True)
                    self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
                else:
                    self.study.tell(trial, float(acc["val"][k]))
                    self._keep_if_best(pop, k, trial, settings[k], acc)
                self.trials_run += 1
            except self.optuna.exceptions.UpdateFinishedTrialError:
                pass  # declared stale by another worker meanwhile: its retry runs it again
            self.heartbeat.trial_ids.discard(trial._trial_id)

    def _keep_if_best(self, pop, k: int, trial, settings: dict, acc: dict) -> None:
        """Member k of ``pop`` (a told trial; ``acc``: split -> the members' accuracies) becomes
        the best/ candidate if it beats the one waiting and the one saved (only then is its net
        copied out of the population)."""
        accuracy = {split: float(a[k]) for split, a in acc.items()}
        bars = [_score(*self.best[1:])] if self.best is not None else []
        if self.saved is not None:
            bars.append(self.saved)
        if any(_score(trial, accuracy) <= bar for bar in bars):
            return
        net = pop.net(k)
        net.metadata["hyperparameters"] = {**settings, "num_iters": self._iterations(settings)}
        self.best = (net, trial, accuracy)  # save_best's (net, trial, accuracy)


class Group:
    """The trials of one shape in a round, trained as one Population: the members still in it
    (``live``: indices into ``trials``, ``settings`` and ``budgets``), the iterations done, the
    iterations after which it reports ({iterations done: epoch}), and the CPU threads it
    computes with (chosen for it, with the workers on the host whose share that is)."""

    def __init__(self, pop, trials, settings, budgets, reports: dict, threads, workers: int):
        self.pop, self.trials, self.settings, self.budgets = pop, trials, settings, budgets
        self.reports, self.threads, self.workers = reports, threads, workers
        self.live, self.done = np.arange(len(trials)), 0

    def members(self, items) -> list:
        """``items`` (one per trial of the group) of the live members, in population order."""
        return [items[k] for k in self.live]

    def last(self) -> int:
        """The iterations after which its last live member is done (0 if none is left)."""
        return int(self.budgets[self.live].max()) if len(self.live) else 0

    def point(self, epoch: int) -> int | None:
        """The iterations after which the group reports ``epoch``; None if it does not."""
        return next((t for t, e in self.reports.items() if e == epoch), None)

    def keep(self, keep) -> None:
        """Keep the live members where ``keep`` (one flag per live member) holds: the population
        shrinks to them (``Population.subset``), or is let go when none is left."""
        if not keep.all():
            self.pop = self.pop.subset(np.flatnonzero(keep)) if keep.any() else None
            self.live = self.live[keep]


def _score(trial, accuracy: dict) -> tuple:
    """How best/ ranks told trials: the higher validation accuracy, then the earlier trial."""
    return accuracy["val"], -trial.number


def by_shape(claimed: list) -> list[list]:
    """The claimed (trial, settings) pairs grouped by (hidden size, batch size), the shape a
    Population shares, groups in order of first appearance."""
    groups: dict[tuple, list] = {}
    for trial, settings in claimed:
        groups.setdefault((settings["hidden_size"], settings["batch_size"]), []).append((trial, settings))
    return list(groups.values())
