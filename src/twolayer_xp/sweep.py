"""``twolayer-xp sweep``: its flags, its config, and the loop each worker runs until the study is done.

Trials are asked K at a time and trained as one Population; how workers share one study is in
``sweep_study``, what a sweep writes and prints in ``sweep_outputs``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import config as configs
from . import runs, sweep_outputs, validation
from .backend import resolve
from .sweep_study import (
    HEARTBEAT_SECONDS,
    STALE_HEARTBEATS,
    Worker,
    import_optuna,
    open_storage,
    open_study,
    slot_holders,
)

SAMPLERS = ("tpe", "random", "grid")
# Default search ranges: the dataset's default learning rate and reg (configs.DEFAULTS) times these.
SEARCH_SPAN = (1e-2, 10.0)
DEFAULT_TRIALS, DEFAULT_POPULATION = 32, 16
TRAIN_EVAL_ROWS = 5000  # train accuracy is measured on the first rows of the training split
# Flags that mean for a sweep what they mean for a run: declared once, in config.SETTINGS.
SHARED_SETTINGS = ("dataset", "hidden_size", "num_iters", "batch_size", "device", "backend", "dtype", "seed")


@dataclass
class SweepConfig:
    """One worker's sweep. Hyperparameters left None take ``configs.DEFAULTS`` of the dataset."""

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
        if self.dataset not in configs.DEFAULTS:
            raise ValueError(f"--dataset must be one of {', '.join(configs.DEFAULTS)}; got {self.dataset!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"--sampler must be one of {', '.join(SAMPLERS)}; got {self.sampler!r}")
        for name in ("population", "hidden_size", "num_iters", "batch_size", "heartbeat", "trials", "seed"):
            if getattr(self, name) is not None:
                validation.check(name, getattr(self, name))  # the table the API and train use
        defaults = configs.DEFAULTS[self.dataset]
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
    from .cli import add_settings, checked

    shared = {name: configs.SETTINGS[name] for name in SHARED_SETTINGS}
    add_settings({group: parser for group in {s.group for s in shared.values()}}, shared)
    a(
        "--trials",
        type=checked("trials"),
        metavar="N",
        help=f"the study's total of results across all workers (default {DEFAULT_TRIALS}; grid: its size)",
    )
    a(
        "--population",
        type=checked("population"),
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
    a(
        "--heartbeat",
        type=checked("heartbeat"),
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
    optuna = import_optuna()
    out = Path(config.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"output folder {out} is not writable ({exc.strerror or exc})") from None
    storage = open_storage(config.storage, config.heartbeat)
    study = open_study(optuna, storage, config)
    ds = runs.load_data(configs.RunConfig(dataset=config.dataset, dtype=config.dtype).resolved())
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
    worker = Worker(optuna, study, storage, config, ds, placed, out)
    with sweep_outputs.TrialsBar(config, enabled=progress) as bar, worker.heartbeat:
        while True:
            tick = time.perf_counter()
            worker.fail_stale()
            trials = study.get_trials(deepcopy=False)
            done = sweep_outputs.count_results(trials)
            bar.show(done, sweep_outputs.best_value(trials))
            if done >= config.trials:
                break
            fresh = len(slot_holders(trials))
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
