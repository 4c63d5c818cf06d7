"""The study's side of a sweep: Optuna storage, slots, heartbeats, and the worker that trains them.

Any number of workers, on any number of machines, join one study kept in Optuna's storage (a
SQLite file, or PostgreSQL for many machines); that storage is the only coordination there is.
How the workers agree without a scheduler:

- The study has ``trials`` slots. A freshly asked trial takes the next slot only if fewer than
  ``trials`` fresh trials were numbered before it (Optuna numbers trials under a lock); a trial
  that comes too late is told FAIL at once, unrun and marked ``surplus``.
- A worker keeps a heartbeat for each trial it runs. A killed worker's trials go stale; whoever
  notices fails them, and Optuna's retry callback queues a copy with the same slot and params,
  which the next ``ask`` pops. A diverged member is told FAIL and marked ``diverged``: a result.
- Results (completed or diverged trials) therefore never exceed ``trials``; a worker stops when
  the study holds that many.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import warnings
from typing import TYPE_CHECKING

from . import sweep_outputs

if TYPE_CHECKING:
    from .sweep import SweepConfig

HEARTBEAT_SECONDS = 10
STALE_HEARTBEATS = 3  # a trial whose heartbeat is this many intervals old belongs to a dead worker


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise ImportError('twolayer-xp sweep needs optuna; fix: pip install "twolayer-xp[sweep]"') from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # ask/tell with heartbeats is what this module does on purpose (its own heartbeat thread).
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    return optuna


def open_storage(url: str, heartbeat: int = HEARTBEAT_SECONDS):
    """Optuna's RDBStorage for ``url``, with heartbeats and re-runs of dead workers' trials."""
    optuna = import_optuna()
    import sqlalchemy

    try:
        parsed = sqlalchemy.engine.make_url(url)
        parsed.get_dialect()
    except ModuleNotFoundError as exc:
        fix = '"twolayer-xp[postgres]"' if parsed.get_backend_name() == "postgresql" else exc.name
        raise ImportError(f"--storage {parsed.drivername} needs {exc.name}; fix: pip install {fix}") from None
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ValueError):
        raise ValueError(
            f"--storage {url!r} is not a database URL I can use (e.g. sqlite:///study.db, "
            "postgresql+psycopg://user@host:5432/db)"
        ) from None
    sqlite = parsed.get_backend_name() == "sqlite"
    # SQLite: pysqlite starts transactions lazily, so a read-then-write (popping a queued trial,
    # failing a stale one) could interleave between processes and run a trial twice. Every
    # transaction starts with BEGIN IMMEDIATE instead, taking the write lock first.
    engine_kwargs = {"connect_args": {"timeout": 60, "isolation_level": None}} if sqlite else {}
    for attempt in range(3):  # workers creating the tables of a new database at once may collide
        try:
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat,
                grace_period=heartbeat * STALE_HEARTBEATS,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(),
            )
            break
        except sqlalchemy.exc.SQLAlchemyError as exc:
            if attempt == 2:
                reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
                shown = parsed.render_as_string(hide_password=True)
                raise ValueError(f"cannot open storage {shown}: {reason}") from None
            time.sleep(0.5)
    if sqlite:
        sqlalchemy.event.listen(storage.engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        sqlalchemy.event.listen(storage.engine, "connect", _sqlite_pragmas)
        storage.engine.dispose()  # connections opened from now on get the pragmas
    return storage


def _sqlite_pragmas(connection, _record) -> None:
    # A worker commits about a dozen small transactions per trial: with a write-ahead log and
    # synchronous=NORMAL, SQLite fsyncs at checkpoints rather than at every commit.
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")


def open_study(optuna, storage, config: SweepConfig):
    sampler = {
        "tpe": lambda: optuna.samplers.TPESampler(constant_liar=True),  # spread out K asks at once
        "random": lambda: optuna.samplers.RandomSampler(),
        "grid": lambda: _slot_grid(config.grid_lr, config.grid_reg),
    }[config.sampler]()
    study = optuna.create_study(
        storage=storage, study_name=config.study, sampler=sampler, direction="maximize", load_if_exists=True
    )
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ValueError(f"study {config.study} minimizes its objective; choose another --study")
    stored = study.user_attrs.get(sweep_outputs.SEARCH_ATTR)
    if stored is None:
        study.set_user_attr(sweep_outputs.SEARCH_ATTR, config.search)
    elif stored != config.search:
        key = next(k for k in sorted({*stored, *config.search}) if stored.get(k) != config.search.get(k))
        raise ValueError(
            f"study {config.study} was created with {key}={stored.get(key)}, this run has "
            f"{key}={config.search.get(key)}: repeat the study's flags, or choose another --study"
        )
    return study


def slot_holders(trials) -> set[int]:
    """Numbers of the fresh trials that hold a slot: every trial not a retry of another, less
    those whose chain (the trial and its retries) was turned away as surplus."""
    turned_away = {
        t.system_attrs.get("failed_trial", t.number) for t in trials if t.user_attrs.get("surplus")
    }
    return {t.number for t in trials if "failed_trial" not in t.system_attrs} - turned_away


def _slot_grid(lrs: list, regs: list):
    """A grid 'sampler' giving slot s grid point s, so that the slots cover the grid exactly once
    (Optuna's GridSampler picks points per worker and may run one twice across workers)."""
    from optuna.samplers import BaseSampler

    class SlotGrid(BaseSampler):
        points = [{"learning_rate": lr, "reg": reg} for lr in lrs for reg in regs]

        def infer_relative_search_space(self, study, trial):
            return {}

        def sample_relative(self, study, trial, search_space):
            return {}

        def sample_independent(self, study, trial, name, distribution):
            return self.points[trial.user_attrs["worker"]["slot"]][name]

    return SlotGrid()


class _Heartbeat:
    """A thread marking this worker's running trials alive every ``interval`` seconds."""

    def __init__(self, storage, interval: float):
        self.storage, self.interval = storage, interval
        self.trial_ids: set[int] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sweep-heartbeat", daemon=True)

    def beat(self, trial_id: int) -> None:
        self.storage.record_heartbeat(trial_id)
        self.trial_ids.add(trial_id)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            for trial_id in list(self.trial_ids):
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception:  # noqa: BLE001 - a missed beat only risks a re-run, never a loss
                    pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


class Worker:
    """Claims slots, trains them as one Population, tells the results."""

    def __init__(self, optuna, study, storage, config, ds, placed, out):
        self.optuna, self.study, self.storage, self.config = optuna, study, storage, config
        self.ds, self.placed, self.out = ds, placed, out
        self.heartbeat = _Heartbeat(storage, config.heartbeat)
        self.trials_run, self.train_seconds, self.last_train_seconds, self.study_seconds = 0, 0.0, 0.0, 0.0

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
                lr = trial.suggest_float("learning_rate", *self.config.lr, log=True)
                reg = trial.suggest_float("reg", *self.config.reg, log=True)
            except self.optuna.exceptions.UpdateFinishedTrialError:
                self.heartbeat.trial_ids.discard(trial._trial_id)
                continue  # failed as stale by another worker meanwhile (clocks apart): re-queued
            claimed.append((trial, lr, reg))
        return claimed

    def train(self, claimed: list) -> None:
        from .population import Population

        c, ds = self.config, self.ds
        trials, lrs, regs = (list(column) for column in zip(*claimed, strict=True))
        start = time.perf_counter()
        pop = Population(
            ds.num_features, c.hidden_size, ds.num_classes, size=len(claimed), std=c.search["std"],
            device=c.device, backend=c.backend, dtype=c.dtype, rng=c.seed,
        )  # fmt: skip
        (X, y), (X_val, y_val) = self.placed["train"], self.placed["val"]
        with warnings.catch_warnings(), pop.backend.quiet_overflow():
            warnings.simplefilter("ignore", RuntimeWarning)  # diverged members are told FAIL instead
            stats = pop.train(
                X, y, X_val, y_val, learning_rate=lrs, learning_rate_decay=c.search["learning_rate_decay"],
                reg=regs, num_iters=c.num_iters, batch_size=c.batch_size,
            )  # fmt: skip
            acc = {split: pop.accuracy(*self.placed[split]) for split in ("train_eval", "val", "test")}
        seconds = time.perf_counter() - start
        self.train_seconds += seconds
        self.last_train_seconds = seconds
        told = []
        for k, trial in enumerate(trials):
            try:
                trial.set_user_attr("train_accuracy", float(acc["train_eval"][k]))
                trial.set_user_attr("test_accuracy", float(acc["test"][k]))
                if stats["diverged"][k]:
                    trial.set_user_attr("diverged", True)
                    self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
                else:
                    self.study.tell(trial, float(acc["val"][k]))
                    told.append(k)
            except self.optuna.exceptions.UpdateFinishedTrialError:
                pass  # declared stale by another worker meanwhile: its retry runs it again
            self.heartbeat.trial_ids.discard(trial._trial_id)
        self.trials_run += len(claimed)
        if told:
            k = max(told, key=lambda k: acc["val"][k])
            accuracy = {split: float(a[k]) for split, a in acc.items()}
            sweep_outputs.save_best(self.out, pop.net(k), trials[k], accuracy, c, self.ds)
