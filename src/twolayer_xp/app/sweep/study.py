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

import copy
import functools
import json
import math
import os
import threading
import time
import uuid
import warnings

from twolayer_xp.app.sweep import pruning, report, space
from twolayer_xp.app.sweep.config import HEARTBEAT_SECONDS, STALE_HEARTBEATS, SweepConfig
from twolayer_xp.errors import one_line
from twolayer_xp.io import files


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise ImportError(
            'twolayer-xp sweep needs optuna; fix: pip install -e ".[sweep]" (from the clone)'
        ) from None
    # The sweep says in one line what failed; Optuna's own warnings about the same storage error
    # (e.g. 'Caught an error from sqlalchemy ... Falling back', when the server is lost while
    # trials are read) would add several more lines to it.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # ask/tell with heartbeats is what this module does on purpose (its own heartbeat thread).
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    return optuna


# Tables Optuna's RDBStorage keeps (optuna.storages._rdb.models, plus alembic's version table). A
# database holding any other table belongs to another application: a sweep adds nothing to it.
OPTUNA_TABLES = frozenset(
    {
        "studies", "study_directions", "study_system_attributes", "study_user_attributes",
        "trial_heartbeats", "trial_intermediate_values", "trial_params", "trial_system_attributes",
        "trial_user_attributes", "trial_values", "trials", "version_info", "alembic_version",
    }
)  # fmt: skip
# PostgreSQL: a server that accepts a connection and never answers, or vanishes mid-sweep, fails
# the worker within about a minute instead of hanging it (libpq parameters; a URL's own win).
POSTGRES_TIMEOUTS = {
    "connect_timeout": 10,  # seconds to establish a connection
    "keepalives": 1,  # a dead peer is noticed after 10 + 3 * 5 s of silence
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,  # ms that sent data may stay unacknowledged
    "options": "-c statement_timeout=60000 -c lock_timeout=60000",  # ms, server side
}
SQLITE_LOCK_SECONDS = 60  # how long a worker waits for another's write lock (URL: ?timeout=S)


class StorageFailure(OSError):
    """The study's storage failed (unreachable, locked, full, read-only, lost mid-sweep); one
    line naming the storage, what failed and what is kept."""


def storage_name(url: str) -> str:
    """``url`` as it may be shown: its password hidden."""
    import sqlalchemy

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception:  # noqa: BLE001 - not a URL: shown as given
        return url
    return url if parsed.password is None else parsed.render_as_string(hide_password=True)


def is_storage_error(exc: BaseException) -> bool:
    """An error of the database layer (Optuna's storage wrapper, SQLAlchemy, the DB driver)."""
    return any(
        type(e).__module__.split(".")[0] in ("sqlalchemy", "sqlite3", "psycopg", "psycopg2")
        or type(e).__name__ == "StorageInternalError"
        for e in _chain(exc)
    )


def failure_reason(exc: BaseException) -> str:
    """The database's own words for ``exc`` (the innermost driver error), on one line."""
    innermost = exc
    for e in _chain(exc):
        innermost = getattr(e, "orig", None) or e
    return one_line(innermost, limit=300)


def _chain(exc: BaseException):
    seen = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or getattr(exc, "orig", None)
    return seen


def open_storage(url: str, heartbeat: int = HEARTBEAT_SECONDS):
    """Optuna's RDBStorage for ``url``, with heartbeats and re-runs of dead workers' trials.

    Whatever keeps it from opening (an in-memory or foreign database, a bad URL option, a server
    that never answers, a read-only or full disk) is one ValueError naming the storage."""
    optuna = import_optuna()
    import sqlalchemy

    parsed = _parsed(url)
    shown = storage_name(url)
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite and (
        parsed.database in (None, "", ":memory:")
        or parsed.query.get("mode") == "memory"
        or (parsed.database or "").startswith("file::memory:")
    ):
        raise ValueError(
            f"--storage {shown} is an in-memory database: each connection gets its own, empty one and "
            "nothing outlives the worker; use a file, e.g. sqlite:///study.db"
        )
    try:
        engine_kwargs = {"connect_args": _connect_args(parsed)}
        foreign = _foreign_tables(sqlalchemy, url, engine_kwargs)
        if foreign:
            raise ValueError(
                f"holds tables of another application ({', '.join(foreign[:5])}"
                f"{', ...' if len(foreign) > 5 else ''}); a sweep needs a database of its own"
            )
        storage = _rdb_storage(optuna, sqlalchemy, url, engine_kwargs, heartbeat)
    except Exception as exc:  # noqa: BLE001 - whatever the database or driver raised: one line
        reason = str(exc) if isinstance(exc, ValueError) and not is_storage_error(exc) else None
        raise ValueError(f"cannot open storage {shown}: {reason or failure_reason(exc)}") from None
    if sqlite:
        sqlalchemy.event.listen(storage.engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        wait = engine_kwargs["connect_args"]["timeout"]
        sqlalchemy.event.listen(storage.engine, "connect", functools.partial(_sqlite_pragmas, wait=wait))
        storage.engine.dispose()  # connections opened from now on get the pragmas
    return storage


def _parsed(url: str):
    """The SQLAlchemy URL of ``url`` with its driver importable; ImportError/ValueError otherwise."""
    import sqlalchemy

    try:
        parsed = sqlalchemy.engine.make_url(url)
        parsed.get_dialect()
    except ModuleNotFoundError as exc:
        if exc.name == "psycopg2":  # plain postgresql:// is psycopg2's under SQLAlchemy 2.0
            fix = 'write the URL as postgresql+psycopg://... (psycopg 3: pip install -e ".[postgres]" from the clone)'
        elif parsed.get_backend_name() == "postgresql":
            fix = 'pip install -e ".[postgres]" (from the clone)'
        else:
            fix = f"pip install {exc.name}"
        raise ImportError(f"--storage {parsed.drivername} needs {exc.name}; fix: {fix}") from None
    except sqlalchemy.exc.NoSuchModuleError:
        if parsed.drivername == "postgresql+psycopg" and int(sqlalchemy.__version__.split(".")[0]) < 2:
            raise ImportError(  # psycopg 3's dialect came with SQLAlchemy 2.0
                f"--storage {parsed.drivername} needs SQLAlchemy 2.0 or later, found "
                f'{sqlalchemy.__version__}; fix: pip install -U "sqlalchemy>=2.0"'
            ) from None
        raise _not_a_url(url) from None
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise _not_a_url(url) from None
    return parsed


def _not_a_url(url: str) -> ValueError:
    return ValueError(
        f"--storage {storage_name(url)!r} is not a database URL I can use (e.g. sqlite:///study.db, "
        "postgresql+psycopg://user@host:5432/db)"
    )


def _connect_args(parsed) -> dict:
    """Driver options: SQLite's lock wait and transaction mode, PostgreSQL's timeouts; an option
    the URL sets itself is left to the URL."""
    if parsed.get_backend_name() == "sqlite":
        # pysqlite starts transactions lazily, so a read-then-write (popping a queued trial,
        # failing a stale one) could interleave between processes and run a trial twice. With
        # isolation_level None every transaction starts with BEGIN IMMEDIATE instead (see
        # open_storage), taking the write lock first.
        timeout = parsed.query.get("timeout")
        if timeout is not None:
            try:
                timeout = float(timeout)
            except (TypeError, ValueError):  # TypeError: given twice, a list
                timeout = math.nan
            if not 0 <= timeout < math.inf:  # inf: wait forever for a lock another worker holds
                raise ValueError(
                    f"its ?timeout={parsed.query['timeout']} is not a finite number of seconds >= 0"
                )
        return {"timeout": SQLITE_LOCK_SECONDS if timeout is None else timeout, "isolation_level": None}
    if parsed.get_backend_name() == "postgresql":
        return {k: v for k, v in POSTGRES_TIMEOUTS.items() if k not in parsed.query}
    return {}


def _foreign_tables(sqlalchemy, url: str, engine_kwargs: dict) -> list[str]:
    """Tables of ``url``'s database that are not Optuna's, looked at before anything is written."""
    engine = sqlalchemy.create_engine(url, **engine_kwargs)
    try:
        return sorted(set(sqlalchemy.inspect(engine).get_table_names()) - OPTUNA_TABLES)
    finally:
        engine.dispose()


def _rdb_storage(optuna, sqlalchemy, url: str, engine_kwargs: dict, heartbeat: int):
    for attempt in range(3):  # workers creating the tables of a new database at once may collide
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat,
                grace_period=heartbeat * STALE_HEARTBEATS,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(),
            )
        except sqlalchemy.exc.SQLAlchemyError as exc:
            # Another worker created a table first (a duplicate key in PostgreSQL's catalogue, or
            # "already exists"): look again. Anything else (a timeout, a refusal) is final.
            collided = isinstance(exc, sqlalchemy.exc.IntegrityError) or "already exists" in str(exc)
            if attempt == 2 or not collided:
                raise
            time.sleep(0.5)


def _sqlite_pragmas(connection, _record, wait: float = SQLITE_LOCK_SECONDS) -> None:
    # A worker commits about a dozen small transactions per trial: with a write-ahead log and
    # synchronous=NORMAL, SQLite fsyncs at checkpoints rather than at every commit. ``wait``: the
    # seconds this worker waits for a lock (the URL's ?timeout=).
    deadline = time.monotonic() + wait
    while True:
        try:
            if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                connection.execute("PRAGMA journal_mode=WAL")
            break
        except Exception as exc:  # noqa: BLE001 - the driver's OperationalError
            # Workers switching a new file to WAL at the same moment: SQLite answers "locked" at
            # once, without its lock wait, to the ones whose wait could deadlock. Try again.
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    connection.execute("PRAGMA synchronous=NORMAL")


def with_pruner(storage, config: SweepConfig) -> SweepConfig:
    """``config`` with its pruner chosen: the one asked for, else the one its study was created
    with (so a study started under another default continues as it began: a study stored before
    pruning existed pruned nothing), else DEFAULT_PRUNER for a new study."""
    if config.pruner is not None:
        return config
    try:
        search = _stored_search(storage.get_study_user_attrs(storage.get_study_id_from_name(config.study)))
    except KeyError:  # no such study yet
        search = None
    pruner = search["pruner"] if isinstance(search, dict) else None
    resolved = copy.copy(config)
    resolved.pruner = pruner if pruner in pruning.PRUNERS else pruning.DEFAULT_PRUNER
    resolved.search = {**config.search, "pruner": resolved.pruner}
    return resolved


def open_study(optuna, storage, config: SweepConfig, num_train: int | None = None) -> tuple:
    """(the study ``config`` names, created or joined, with its sampler and pruner; ``config``
    with the pruner it runs: --pruner's, else the stored search's). ``num_train``: training
    rows, which size the pruner's epochs (``pruning.make``). ValueError if this sweep cannot
    join the study.

    Workers starting together agree on the study's search: each offers its own with an insert
    the database lets only the first one make (``_offer``), and all are then judged
    against the one stored. (Checking for a stored search and storing one after, two workers
    with different flags could both find nothing and both be let in.)"""
    study_id = _created(optuna, storage, config.study)
    if report.SEARCH_ATTR not in storage.get_study_user_attrs(study_id) and _bare(optuna, storage, study_id):
        _offer(storage, study_id, report.SEARCH_ATTR, with_pruner(storage, config).search)
    config = with_pruner(storage, config)  # the stored search's pruner, unless --pruner is given
    sampler = {
        "tpe": lambda: optuna.samplers.TPESampler(constant_liar=True),  # spread out K asks at once
        "random": lambda: optuna.samplers.RandomSampler(),
        "grid": lambda: _slot_grid(config.grid_lr, config.grid_reg),
    }[config.sampler]()
    study = optuna.load_study(
        storage=storage,
        study_name=config.study,
        sampler=sampler,
        pruner=pruning.make(optuna, config.pruner, config.search, num_train),
    )
    problem = _incompatibility(optuna, study, config)
    if problem:
        raise ValueError(f"study {config.study} in {storage_name(config.storage)} {problem}")
    if report.ID_ATTR not in study.user_attrs:  # a new study, or one from before ids
        _offer(storage, study_id, report.ID_ATTR, uuid.uuid4().hex)
    return study, config


def stored_id(storage, name: str) -> str | None:
    """Study ``name``'s id (``report.ID_ATTR``) as ``storage`` holds it, read without creating
    the study: ``report.NO_STUDY`` when there is none, None when it has no id (made before ids,
    or its creator has not stored one yet: ``open_study`` settles it)."""
    try:
        return storage.get_study_user_attrs(storage.get_study_id_from_name(name)).get(report.ID_ATTR)
    except KeyError:
        return report.NO_STUDY


def _created(optuna, storage, name: str) -> int:
    """The id of study ``name``, created if there is none. Looked up first: a create that
    fails on the unique name is logged by a PostgreSQL server as an ERROR, which every joining
    worker made (only workers starting a new study together still race to create it)."""
    try:
        return storage.get_study_id_from_name(name)
    except KeyError:
        pass
    try:
        storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], name)
    except optuna.exceptions.DuplicatedStudyError:
        pass  # created by another worker meanwhile: joined, if it is this sweep's
    return storage.get_study_id_from_name(name)


def _bare(optuna, storage, study_id: int) -> bool:
    """Whether a study without a search may take one: it maximizes one objective and holds no
    trials (a study that is not a sweep's gets nothing written to it; ``_incompatibility``
    refuses it by name)."""
    directions = storage.get_study_directions(study_id)
    return directions == [optuna.study.StudyDirection.MAXIMIZE] and not storage.get_all_trials(
        study_id, deepcopy=False
    )


def _offer(storage, study_id: int, key: str, value) -> None:
    """Store ``value`` as the study's user attribute ``key`` unless one is stored already: an
    insert into Optuna's study_user_attributes table (what ``set_study_user_attr`` writes,
    json-encoded), whose unique (study_id, key) index makes exactly one of any number of
    concurrent offers succeed, on SQLite and PostgreSQL alike. ``set_study_user_attr`` would
    overwrite an earlier offer."""
    import sqlalchemy

    table = sqlalchemy.Table("study_user_attributes", sqlalchemy.MetaData(), autoload_with=storage.engine)
    try:
        with storage.engine.begin() as connection:
            connection.execute(
                table.insert().values(study_id=study_id, key=key, value_json=json.dumps(value))
            )
    except sqlalchemy.exc.IntegrityError:
        pass  # another worker's (or an earlier run's) is stored: the one every worker reads


def _stored_search(user_attrs: dict):
    """The search a study was created with (``report.SEARCH_ATTR``), as stored; a study made
    before pruning existed pruned nothing, so its search reads as pruner none. None: no search."""
    stored = user_attrs.get(report.SEARCH_ATTR)
    return {"pruner": "none", **stored} if isinstance(stored, dict) else stored


def _incompatibility(optuna, study, config: SweepConfig) -> str | None:
    """Why this sweep cannot join ``study`` (a phrase ending in what to do), or None: it must
    maximize one objective and either be empty or hold this sweep's ``search``."""
    other = "; choose another --study"
    directions = study.directions
    if len(directions) != 1:
        return f"has {len(directions)} objectives; a sweep maximizes one (validation accuracy){other}"
    if directions[0] != optuna.study.StudyDirection.MAXIMIZE:
        return f"minimizes its objective; a sweep maximizes validation accuracy{other}"
    if report.SEARCH_ATTR not in study.user_attrs:  # (a stored null is not a sweep's: refused below)
        trials = len(study.get_trials(deepcopy=False))
        return f"holds {trials} trials not made by twolayer-xp sweep{other}" if trials else None
    stored = _stored_search(study.user_attrs)
    if not isinstance(stored, dict):
        return f"has a {report.SEARCH_ATTR} attribute that is a {type(stored).__name__}, not a sweep's{other}"
    differing = [
        k for k in sorted({*stored, *config.search}) if not _same(stored.get(k), config.search.get(k))
    ]
    if differing:  # a key one record lacks reads as None (e.g. no label column)
        then, now = (_entry(s, differing[0]) for s in (stored, config.search))
        # Another study means another --out as well: an --out keeps one study's results
        # (report.claim_out), and the default storage is the study.db inside it.
        elsewhere = "--out" if config.storage_in_out else "--study, with an --out of its own"
        return (
            f"was created with {then}, this run has {now}: "
            f"repeat the study's flags, or choose another {elsewhere}"
        )
    return None


# Stored and given numbers this close are one value: a default range stored by an older version
# unrounded (1.0000000000000002e-06) is the one typed or computed now (1e-06).
SAME_NUMBER_REL = 1e-9
LENGTHS = ("epochs", "num_iters")  # a search counts a trial's length in one of them, the other absent


def _same(stored, given) -> bool:
    """Whether a stored search entry and this run's are the same, floats to SAME_NUMBER_REL,
    except choices: Optuna refuses a categorical whose values differ in any digit."""
    if isinstance(stored, dict) and isinstance(given, dict) and "choices" in stored:
        return stored == given
    if isinstance(stored, float) or isinstance(given, float):
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (stored, given))
        return numbers and math.isclose(stored, given, rel_tol=SAME_NUMBER_REL)
    if isinstance(stored, list) and isinstance(given, list):
        return len(stored) == len(given) and all(map(_same, stored, given))
    if isinstance(stored, dict) and isinstance(given, dict):
        return stored.keys() == given.keys() and all(_same(stored[k], given[k]) for k in stored)
    return stored == given


def _entry(search: dict, key: str) -> str:
    """``key=value`` of ``search`` as a refusal shows it; a trial length the search lacks is
    shown as the one it counts (num_iters=20, not epochs=None)."""
    if search.get(key) is None and key in LENGTHS:
        other = LENGTHS[1 - LENGTHS.index(key)]
        key = other if search.get(other) is not None else key
    return f"{key}={space.shown_setting(key, search.get(key))}"


def slot_holders(trials) -> set[int]:
    """Numbers of the fresh trials that hold a slot: every trial not a retry of another, less
    those whose chain (the trial and its retries) was turned away as surplus."""
    turned_away = {
        t.system_attrs.get("failed_trial", t.number) for t in trials if t.user_attrs.get("surplus")
    }
    return {t.number for t in trials if "failed_trial" not in t.system_attrs} - turned_away


def workers_on_host(trials, host: str) -> int:
    """Live processes of ``host`` (this one) holding RUNNING trials, read off their "worker"
    marks, this process included: the sweep workers sharing this machine's CPUs right now."""
    pids = {os.getpid()}
    for t in trials:
        mark = t.user_attrs.get("worker", {})
        if t.state.name == "RUNNING" and mark.get("host") == host and files.alive(mark.get("pid")):
            pids.add(mark["pid"])
    return len(pids)


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
