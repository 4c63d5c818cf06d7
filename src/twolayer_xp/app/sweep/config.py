"""A sweep's settings: what one worker searches, how, and where its study and outputs live.

``SweepConfig`` checks every field once (the API's ``run_sweep`` and the CLI's flags alike) and
records ``search``, what a trial means, which the study stores so later workers must agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from twolayer_xp.app import config as configs
from twolayer_xp.app.flags import flag
from twolayer_xp.app.sweep import pruning, space
from twolayer_xp.core import validation
from twolayer_xp.core.validation import POSITIVE_INT, Constraint
from twolayer_xp.io import files

SAMPLERS = ("tpe", "random", "grid")
HEARTBEAT_SECONDS = 10
STALE_HEARTBEATS = 3  # a trial whose heartbeat is this many intervals old belongs to a dead worker
# Default search ranges: the dataset's default learning rate and reg (configs.DEFAULTS) times these.
SEARCH_SPAN = (1e-2, 10.0)
DEFAULT_TRIALS, DEFAULT_POPULATION = 32, 16
# Flags that mean for a sweep what they mean for a run: declared once, in config.SETTINGS.
SHARED_SETTINGS = (
    "dataset", "data_dir", "label_column", "hidden_size", "std", "learning_rate_decay", "num_iters", "batch_size",
    "device", "backend", "dtype", "threads", "seed",
)  # fmt: skip
# The sweep's own scalar fields, checked against CONSTRAINTS (the searched ones: by ``space.parse``).
SCALARS = ("population", "heartbeat", "trials", "seed", "threads")
# A run's settings a sweep may search (space.SCALES less the sweep's own "epochs").
SEARCHED = tuple(name for name in space.SCALES if name in configs.SETTINGS)
# A sweep's scalar settings: a run's, and the sweep's own.
MAX_HEARTBEAT = 24 * 3600  # a day; far beyond what threads can wait, a heartbeat overflows
MAX_STUDY_NAME = 512  # characters Optuna's storage keeps for a study name (VARCHAR(512))
CONSTRAINTS = {
    **configs.CONSTRAINTS,
    "epochs": POSITIVE_INT,
    "trials": POSITIVE_INT,
    "population": POSITIVE_INT,
    "heartbeat": Constraint(int, 0, True, MAX_HEARTBEAT),
}


@dataclass
class SweepConfig:
    """One worker's sweep. Hyperparameters left None take ``configs.DEFAULTS`` of the dataset.

    hidden_size, batch_size, learning_rate_decay, std, and num_iters or epochs: a fixed value,
    or a search (``space``: "A,B,C" or a list of choices, "LOW:HIGH" or a tuple for a range).
    After checking they hold ``space.parse``'s stored form."""

    dataset: str = "digits"  # or a .npz/.csv path: the user's own data
    data_dir: str | None = None  # a downloaded data set's folder (this worker's; not in the search)
    label_column: str | None = None  # a .csv's label column (default: the last)
    trials: int | None = None  # None: DEFAULT_TRIALS, or the grid's size
    population: int = DEFAULT_POPULATION
    sampler: str = "tpe"
    pruner: str | None = None  # one of pruning.PRUNERS; None: the study's, or DEFAULT_PRUNER for a new one
    lr: tuple | str | None = None  # (low, high) or "LOW:HIGH", searched on a log scale
    reg: tuple | str | None = None
    grid_lr: list | str | None = None  # grid sampler: the values, as a list or "a,b,c"
    grid_reg: list | str | None = None
    hidden_size: int | str | tuple | list | dict | None = None
    num_iters: int | str | tuple | list | dict | None = None
    batch_size: int | str | tuple | list | dict | None = None
    learning_rate_decay: float | str | tuple | list | dict | None = None
    std: float | str | tuple | list | dict | None = None
    epochs: int | str | tuple | list | dict | None = None  # instead of num_iters: passes over the data
    storage: str | None = None  # None: sqlite:///<out>/study.db
    study: str | None = None  # None: "twolayer-xp-<dataset>"
    out: str | None = None  # None: runs/sweep-<dataset>
    device: str = configs.COMMON["device"]
    backend: str | None = None
    dtype: str = configs.COMMON["dtype"]
    seed: int = configs.COMMON["seed"]
    threads: int | None = None  # None: the environment's, else this host's CPUs / its live workers
    heartbeat: int = HEARTBEAT_SECONDS
    search: dict = field(default_factory=dict, init=False)  # what a trial means, stored in the study

    def __post_init__(self):
        self.dataset = str(self.dataset)
        kind = configs.kind(self.dataset)  # ValueError naming the choices
        if self.label_column is not None and kind != configs.FILE:
            raise ValueError(f"--label-column applies to a .csv dataset, not to {self.dataset}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"--sampler must be one of {', '.join(SAMPLERS)}; got {self.sampler!r}")
        if self.pruner is not None and self.pruner not in pruning.PRUNERS:
            raise ValueError(f"--pruner must be one of {', '.join(pruning.PRUNERS)}; got {self.pruner!r}")
        for name in SCALARS:
            if getattr(self, name) is not None:
                validation.check(name, getattr(self, name), CONSTRAINTS)  # the table the CLI uses too
        defaults = configs.DEFAULTS[kind]
        if self.epochs is not None and self.num_iters is not None:
            raise ValueError("--epochs and --num-iters both set a trial's length: give one of them")
        for name in self.searched():
            value = getattr(self, name)
            setattr(self, name, space.parse(name, defaults[name] if value is None else value, CONSTRAINTS))
        self._lr_and_reg(defaults)
        self.trials = self.trials or DEFAULT_TRIALS
        default_out = Path("runs") / f"sweep-{configs.label(self.dataset)}"
        self.out = str(files.expand_path(self.out, "--out") if self.out is not None else default_out)
        # The default storage is the study.db inside --out (so another study needs another --out).
        self.storage_in_out = self.storage is None
        self.storage = self.storage or f"sqlite:///{Path(self.out) / 'study.db'}"
        if self.study == "":
            raise ValueError("--study is empty: give a name, or leave it out for the default")
        self.study = self.study or f"twolayer-xp-{configs.label(self.dataset)}"
        if len(self.study) > MAX_STUDY_NAME:
            raise ValueError(
                f"--study is {len(self.study)} characters long; a study name has at most {MAX_STUDY_NAME}"
            )
        self.search = self._search()

    def _lr_and_reg(self, defaults: dict) -> None:
        """The learning-rate and reg search: the grid sampler's values, else log ranges (the
        dataset's defaults x SEARCH_SPAN unless given)."""
        if self.sampler == "grid":
            searched = [name for name in self.searched() if not space.is_fixed(getattr(self, name))]
            if searched:
                raise ValueError(
                    f"--sampler grid searches --grid-lr x --grid-reg only; give {flag(searched[0])} one value"
                )
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

    def _search(self) -> dict:
        """What a trial of this sweep means, as its study stores it."""
        return {
            "dataset": self.dataset,
            "sampler": self.sampler,
            "pruner": self.pruner,
            **({"label_column": self.label_column} if self.label_column is not None else {}),
            "lr": list(self.lr),
            "reg": list(self.reg),
            "grid_lr": self.grid_lr,
            "grid_reg": self.grid_reg,
            **{name: getattr(self, name) for name in self.searched()},
        }

    def searched(self) -> tuple[str, ...]:
        """The searchable settings this sweep has: SEARCHED, with epochs instead of num_iters
        when it counts epochs."""
        if self.epochs is None:
            return SEARCHED
        return tuple("epochs" if name == "num_iters" else name for name in SEARCHED)


def _range(flag: str, value, default: float) -> tuple[float, float]:
    """A log-scale range from "LOW:HIGH" or (low, high); None: ``default`` x SEARCH_SPAN, as the
    decimals a user would type (1e-4 x 0.01 is 1.0000000000000002e-06 in floats, stored 1e-06)."""
    if value is None:
        return tuple(space.decimal(default * factor) for factor in SEARCH_SPAN)
    if not _sequence(value):
        raise TypeError(
            f'--{flag} takes a range, "LOW:HIGH" or a (low, high) tuple, not {type(value).__name__} {value!r}'
        )
    try:
        low, high = (float(p) for p in (value.split(":") if isinstance(value, str) else value))
    except (TypeError, ValueError):
        raise ValueError(f"--{flag} must be LOW:HIGH, two numbers, got {value!r}") from None
    if not (0 < low < high < math.inf):
        raise ValueError(f"--{flag} {low:g}:{high:g} is empty or inverted: need 0 < LOW < HIGH (log scale)")
    return (low, high)


def _sequence(value) -> bool:
    """Text, or numbers in an order (a list, a tuple, a 1-d array such as numpy's ``logspace``);
    not a number (a 0-d array either), a set (no order: a range's ends would come in either),
    a mapping or bytes."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return False
    return isinstance(value, (str, Sequence)) or getattr(value, "ndim", 0) >= 1


def _values(flag: str, value) -> list[float]:
    """The grid's values from "a,b,c" or a list of numbers: sorted, distinct, positive."""
    if not _sequence(value):
        raise TypeError(
            f'--{flag} takes values, "a,b,c" or a list of numbers, not {type(value).__name__} {value!r}'
        )
    parts = [p for p in value.split(",") if p.strip()] if isinstance(value, str) else value
    try:
        values = sorted({float(p) for p in parts})
    except (TypeError, ValueError):
        raise ValueError(f"--{flag} must be comma-separated numbers, got {value!r}") from None
    if not values or values[0] <= 0 or not math.isfinite(values[-1]):
        raise ValueError(f"--{flag} needs at least one positive value (log scale), got {value!r}")
    return values
