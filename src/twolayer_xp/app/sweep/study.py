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

import threading
import time
import warnings

from twolayer_xp.app.sweep import report, space
from twolayer_xp.app.sweep.config import HEARTBEAT_SECONDS, STALE_HEARTBEATS, SweepConfig
from twolayer_xp.errors import one_line


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
                reason = one_line(getattr(exc, "orig", None) or exc, limit=300)
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
    stored = study.user_attrs.get(report.SEARCH_ATTR)
    if stored is None:
        study.set_user_attr(report.SEARCH_ATTR, config.search)
    elif stored != config.search:
        key = next(k for k in sorted({*stored, *config.search}) if stored.get(k) != config.search.get(k))
        then, now = (space.shown_setting(key, s.get(key)) for s in (stored, config.search))
        raise ValueError(
            f"study {config.study} was created with {key}={then}, this run has "
            f"{key}={now}: repeat the study's flags, or choose another --study"
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


class Heartbeat:
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
