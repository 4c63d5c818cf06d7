"""``twolayer-xp sweep``: search learning rate x reg with Optuna, K trials trained as one Population.

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

import argparse
import math
import os
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from . import runs, sweep_outputs
from .backend import resolve

SAMPLERS = ("tpe", "random", "grid")
# Default search ranges: the dataset's default learning rate and reg (runs.DEFAULTS) times these.
SEARCH_SPAN = (1e-2, 10.0)
DEFAULT_TRIALS, DEFAULT_POPULATION = 32, 16
HEARTBEAT_SECONDS = 10
STALE_HEARTBEATS = 3  # a trial whose heartbeat is this many intervals old belongs to a dead worker
TRAIN_EVAL_ROWS = 5000  # train accuracy is measured on the first rows of the training split


@dataclass
class SweepConfig:
    """One worker's sweep. Hyperparameters left None take ``runs.DEFAULTS`` of the dataset."""

    dataset: str = "digits"
    trials: int | None = None  # None: DEFAULT_TRIALS, or the grid's size
    population: int = DEFAULT_POPULATION
    sampler: str = "tpe"
    lr: tuple | str | None = None  # (low, high) or "LOW:HIGH", searched on a log scale
    reg: tuple | str | None = None
    grid_lr: list | str | None = None  # grid sampler: the values, as a list or "a,b,c"
    grid_reg: list | str | None = None
    hidden_size: int | None = None
    num_iters: int | None = None
    batch_size: int | None = None
    storage: str | None = None  # None: sqlite:///<out>/study.db
    study: str | None = None  # None: "twolayer-xp-<dataset>"
    out: str | None = None  # None: runs/sweep-<dataset>
    device: str = "cpu"
    backend: str | None = None
    dtype: str = "float32"
    seed: int = 0
    heartbeat: int = HEARTBEAT_SECONDS
    search: dict = field(default_factory=dict, init=False)  # what a trial means, stored in the study

    def __post_init__(self):
        if self.dataset not in runs.DEFAULTS:
            raise ValueError(f"--dataset must be one of {', '.join(runs.DEFAULTS)}; got {self.dataset!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"--sampler must be one of {', '.join(SAMPLERS)}; got {self.sampler!r}")
        for name in ("population", "hidden_size", "num_iters", "batch_size", "heartbeat", "trials"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        defaults = runs.DEFAULTS[self.dataset]
        for name in ("hidden_size", "num_iters", "batch_size"):
            if getattr(self, name) is None:
                setattr(self, name, defaults[name])
        if self.sampler == "grid":
            if self.grid_lr is None or self.grid_reg is None:
                raise ValueError("--sampler grid needs --grid-lr and --grid-reg (comma-separated values)")
            self.grid_lr, self.grid_reg = _values("grid-lr", self.grid_lr), _values("grid-reg", self.grid_reg)
            size = len(self.grid_lr) * len(self.grid_reg)
            if self.trials is not None and self.trials > size:
                raise ValueError(f"--trials {self.trials} exceeds the grid's {size} points")
            self.trials = self.trials or size
            self.lr = (min(self.grid_lr), max(self.grid_lr))
            self.reg = (min(self.grid_reg), max(self.grid_reg))
        elif self.grid_lr is not None or self.grid_reg is not None:
            raise ValueError(f"--grid-lr and --grid-reg apply to --sampler grid, not {self.sampler}")
        else:
            self.lr = _range("lr", self.lr, defaults["learning_rate"])
            self.reg = _range("reg", self.reg, defaults["reg"])
        self.trials = self.trials or DEFAULT_TRIALS
        self.out = str(self.out or Path("runs") / f"sweep-{self.dataset}")
        self.storage = self.storage or f"sqlite:///{Path(self.out) / 'study.db'}"
        self.study = self.study or f"twolayer-xp-{self.dataset}"
        self.search = {
            "dataset": self.dataset,
            "sampler": self.sampler,
            "lr": list(self.lr),
            "reg": list(self.reg),
            "grid_lr": self.grid_lr,
            "grid_reg": self.grid_reg,
            **{k: getattr(self, k) for k in ("hidden_size", "num_iters", "batch_size")},
            "std": defaults["std"],
            "learning_rate_decay": defaults["learning_rate_decay"],
        }


def _range(flag: str, value, default: float) -> tuple[float, float]:
    if value is None:
        return (default * SEARCH_SPAN[0], default * SEARCH_SPAN[1])
    parts = value.split(":") if isinstance(value, str) else list(value)
    try:
        low, high = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"--{flag} must be LOW:HIGH, two numbers, got {value!r}") from None
    if not (0 < low < high < math.inf):
        raise ValueError(f"--{flag} {low:g}:{high:g} is empty or inverted: need 0 < LOW < HIGH (log scale)")
    return (low, high)


def _values(flag: str, value) -> list[float]:
    parts = [p for p in value.split(",") if p.strip()] if isinstance(value, str) else list(value)
    try:
        values = sorted({float(p) for p in parts})
    except (TypeError, ValueError):
        raise ValueError(f"--{flag} must be comma-separated numbers, got {value!r}") from None
    if not values or values[0] <= 0 or not math.isfinite(values[-1]):
        raise ValueError(f"--{flag} needs at least one positive value (log scale), got {value!r}")
    return values


# -- the command line -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every ``sweep`` flag, with its help, on ``parser`` (the CLI's ``sweep`` subparser)."""
    a = parser.add_argument
    a("--dataset", choices=sorted(runs.DEFAULTS), default="digits", help="digits (default) or cifar10")
    a(
        "--trials",
        type=int,
        metavar="N",
        help=f"the study's total of results across all workers (default {DEFAULT_TRIALS}; grid: its size)",
    )
    a(
        "--population",
        type=int,
        default=DEFAULT_POPULATION,
        metavar="K",
        help=f"trials trained together as one Population (default {DEFAULT_POPULATION})",
    )
    a(
        "--sampler",
        choices=SAMPLERS,
        default="tpe",
        help="Optuna's TPE (default), random, or grid over --grid-lr x --grid-reg",
    )
    a(
        "--lr",
        metavar="LOW:HIGH",
        help=f"learning-rate range, log scale (default: the dataset's default x {SEARCH_SPAN[0]:g}..{SEARCH_SPAN[1]:g})",
    )
    a("--reg", metavar="LOW:HIGH", help="L2 strength range, log scale (default: as for --lr)")
    a("--grid-lr", metavar="A,B,..", help="grid sampler: learning rates to try")
    a("--grid-reg", metavar="A,B,..", help="grid sampler: reg values to try (each pair exactly once)")
    a("--hidden-size", type=int, metavar="H", help="hidden units (default: the dataset's)")
    a("--num-iters", type=int, metavar="I", help="SGD iterations per trial (default: the dataset's)")
    a("--batch-size", type=int, metavar="B", help="minibatch rows (default: the dataset's)")
    a(
        "--storage",
        metavar="URL",
        help="SQLAlchemy URL of the study, e.g. postgresql+psycopg://user@host:5432/db to share it between machines (default: sqlite:///<out>/study.db)",
    )
    a(
        "--study",
        metavar="NAME",
        help="study name; the same storage and name continue a sweep (default: twolayer-xp-<dataset>)",
    )
    a("--out", metavar="DIR", help="trials.csv, sweep.png and best/ go here (default: runs/sweep-<dataset>)")
    a("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    a(
        "--backend",
        choices=["numpy", "cupy", "torch", "array_api_strict"],
        help="array library (default: numpy on cpu, cupy on cuda)",
    )
    a("--dtype", choices=["float32", "float64"], default="float32", help="float32 (default) or float64")
    a("--seed", type=int, default=0, help="seed of each population's weights and minibatches (default 0)")
    a(
        "--heartbeat",
        type=int,
        default=HEARTBEAT_SECONDS,
        metavar="S",
        help=f"seconds between a worker's liveness marks; a killed worker's trials are re-run {STALE_HEARTBEATS}x this later (default {HEARTBEAT_SECONDS})",
    )
    a("--quiet", action="store_true", help="no progress bar; print only the summary line")


def command(args: argparse.Namespace) -> int:
    """Run the sweep the flags describe; bad input raises ValueError/ImportError with one line."""
    names = SweepConfig.__dataclass_fields__.keys() - {"search"}
    config = SweepConfig(**{k: getattr(args, k) for k in names if getattr(args, k, None) is not None})
    try:
        result = run_sweep(config, progress=not args.quiet)
    except Exception as exc:
        if not type(exc).__module__.startswith("sqlalchemy"):
            raise
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
        raise OSError(f"the study's storage failed ({reason}); run the same command to continue") from None
    except KeyboardInterrupt:
        print(
            f"twolayer-xp: interrupted; study {config.study} keeps every told trial (running ones are re-run "
            "after a restart): run the same command to continue",
            file=sys.stderr,
        )
        return 130
    print(result["summary"])
    return 0


# -- the engine ----------------------------------------------------------------------------------


def run_sweep(config: SweepConfig | None = None, *, progress: bool = False, **options) -> dict:
    """Join (or start) the study and work on it until it holds ``config.trials`` results.

    Returns {'study', 'summary' (one line), 'best' (the study's best trial), 'trials_run',
    'seconds', 'load_seconds', 'train_seconds', 'study_seconds'} for this worker. ``options``: SweepConfig fields.
    """
    started = time.perf_counter()
    config = config or SweepConfig(**options)
    optuna = _import_optuna()
    out = Path(config.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"output folder {out} is not writable ({exc.strerror or exc})") from None
    storage = open_storage(config.storage, config.heartbeat)
    study = _open_study(optuna, storage, config)
    ds = runs.load_data(runs.RunConfig(dataset=config.dataset, dtype=config.dtype).resolved())
    place = resolve(config.device, config.backend)  # the data goes to the device once per worker
    placed = {
        name: (place.asarray(X, dtype=config.dtype), place.asarray(y))
        for name, (X, y) in {
            "train": (ds.X_train, ds.y_train),
            "train_eval": (ds.X_train[:TRAIN_EVAL_ROWS], ds.y_train[:TRAIN_EVAL_ROWS]),
            "val": (ds.X_val, ds.y_val),
            "test": (ds.X_test, ds.y_test),
        }.items()
    }
    loaded = time.perf_counter()
    worker = _Worker(optuna, study, storage, config, ds, placed, out)
    with sweep_outputs.TrialsBar(config, enabled=progress) as bar, worker.heartbeat:
        while True:
            tick = time.perf_counter()
            worker.fail_stale()
            trials = study.get_trials(deepcopy=False)
            done = sweep_outputs.count_results(trials)
            bar.show(done, sweep_outputs.best_value(trials))
            if done >= config.trials:
                break
            fresh = len(_slot_holders(trials))
            waiting = sum(t.state == optuna.trial.TrialState.WAITING for t in trials)
            claimed = worker.claim(min(config.population, max(0, config.trials - fresh) + waiting))
            if claimed:
                worker.train(claimed)
                sweep_outputs.write_trials_csv(study, out / "trials.csv")
                worker.study_seconds += time.perf_counter() - tick - worker.last_train_seconds
            else:  # the rest is running elsewhere: wait for it (or for it to go stale)
                time.sleep(min(config.heartbeat, 1.0))
    trials = study.get_trials(deepcopy=False)
    sweep_outputs.write_trials_csv(study, out / "trials.csv")
    sweep_outputs.save_figure(trials, config, out / "sweep.png")
    seconds = time.perf_counter() - started
    result = {
        "study": study,
        "best": sweep_outputs.best_trial(trials),
        "trials_run": worker.trials_run,
        "seconds": seconds,
        "train_seconds": worker.train_seconds,
        "load_seconds": loaded - started,
        "study_seconds": worker.study_seconds,  # storage and sampler: asks, tells, heartbeats, trials.csv
    }
    result["summary"] = sweep_outputs.summary(config, trials, result)
    return result


def _import_optuna():
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
    optuna = _import_optuna()
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
    # A write-ahead log and one fsync per checkpoint rather than per commit: a worker commits a
    # dozen small transactions per trial, and fsyncs made them most of a sweep's overhead.
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")


def _open_study(optuna, storage, config: SweepConfig):
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
        key = next(k for k in config.search if stored.get(k) != config.search[k])
        raise ValueError(
            f"study {config.study} was created with {key}={stored.get(key)}, this run has "
            f"{key}={config.search[key]}: repeat the study's flags, or choose another --study"
        )
    return study


def _slot_holders(trials) -> set[int]:
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


class _Worker:
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
        holders = _slot_holders(trials.values())
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
