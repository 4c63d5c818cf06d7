"""Run configuration: every setting of a run, its default per dataset, and what a resume may change.

One table (``SETTINGS``) says, for each field of ``RunConfig``, its command-line flag and help,
its choices, and whether a resumed run may change it; the CLI builds its parser from it and
``runs`` applies the resume policy from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from twolayer_xp.app.flags import flag
from twolayer_xp.backend import BACKENDS, DTYPES
from twolayer_xp.core import threads, validation
from twolayer_xp.core.validation import COUNT, POSITIVE_INT
from twolayer_xp.errors import shown
from twolayer_xp.io import datasets, mnist, user_data
from twolayer_xp.io.files import expand_path

# Per-dataset defaults for every hyperparameter left unset. digits: test accuracy 0.98-0.99
# for seeds 0-4, in about 0.3 s of training on a 2-core CPU (13 iterations an epoch, so the
# rate decays 0.99 ** 154 ~ 0.21x). cifar10: in CS231n's tuned range (reported ~0.47-0.50
# validation accuracy for settings like these; not measured here, the data needs a download).
# mnist, fashion-mnist: NOT MEASURED (no download where they were chosen): CS231n-style values
# for 784 inputs in [0, 1] minus the mean, 295 iterations an epoch (59,000 / 200, whole).
# own data (FILE: a .npz or .csv): digits' values for inputs standardized per column, with a
# smaller learning rate since standardized columns are ~3x digits' spread; measured on digits
# written as a CSV: test accuracy ~0.97 (see tests/test_user_data.py).
FILE = "file"
DEFAULTS = {
    "digits": {
        "hidden_size": 128,
        "std": 1e-2,
        "learning_rate": 1.0,
        "learning_rate_decay": 0.99,
        "reg": 5e-4,
        "num_iters": 2000,
        "batch_size": 100,
    },
    "cifar10": {
        "hidden_size": 100,
        "std": 1e-4,
        "learning_rate": 1e-3,
        "learning_rate_decay": 0.95,
        "reg": 0.25,
        "num_iters": 3000,
        "batch_size": 200,
    },
    **dict.fromkeys(
        mnist.IDX_SETS,
        {
            "hidden_size": 200,
            "std": 1e-2,
            "learning_rate": 0.5,
            "learning_rate_decay": 0.95,
            "reg": 1e-4,
            "num_iters": 6000,
            "batch_size": 200,
        },
    ),
    FILE: {
        "hidden_size": 128,
        "std": 1e-2,
        "learning_rate": 0.1,
        "learning_rate_decay": 0.99,
        "reg": 5e-4,
        "num_iters": 2000,
        "batch_size": 100,
    },
}
# Settings only some data sets have: the downloaded ones' split and folder, a CSV's label column.
DOWNLOADED = {"num_train": None, "num_val": None, "num_test": None, "data_dir": None}
SPLITS = {
    "cifar10": {**DOWNLOADED, **datasets.CIFAR10_SPLIT},
    **{name: {**DOWNLOADED, **mnist.SPLIT} for name in mnist.IDX_SETS},
    FILE: {"label_column": None},
}
# --data-dir, for train and sweep alike (the default is io.mnist.default_data_dir's).
DATA_DIR_HELP = (
    "cifar10, mnist, fashion-mnist: folder holding (or receiving) the downloaded files (default: "
    "$TWOLAYER_XP_DATA, else $XDG_CACHE_HOME/twolayer-xp, else ~/.cache/twolayer-xp)"
)
DATA_OPTIONS = ("data_dir", "num_train", "num_val", "num_test", "label_column")


def kind(dataset: str) -> str:
    """The DEFAULTS key of ``dataset``: its name, or FILE for a .npz/.csv path."""
    if dataset in DEFAULTS and dataset != FILE:
        return dataset
    if user_data.is_data_file(dataset):
        return FILE
    raise ValueError(
        f"dataset must be one of {', '.join(datasets.DATASETS)} or a .npz/.csv file; got {dataset!r}"
    )


def label(dataset: str) -> str:
    """A name for folders and studies: the data set's, or the file's stem."""
    return Path(dataset).stem if kind(dataset) == FILE else dataset


COMMON = {"seed": 0, "device": "cpu", "dtype": "float32", "checkpoint_every": 1000}  # every dataset's


# A run's scalar settings: the model's (core.validation) and the run's own.
CONSTRAINTS = {
    **validation.CONSTRAINTS,
    **threads.CONSTRAINTS,
    "num_train": POSITIVE_INT,
    "num_val": POSITIVE_INT,
    "num_test": POSITIVE_INT,
    "checkpoint_every": POSITIVE_INT,
    "seed": COUNT,
}


@dataclass
class RunConfig:
    """Everything that defines a run. A field left None takes the dataset's DEFAULTS (or
    COMMON's), so the fields that are set are exactly the ones a user gave."""

    dataset: str | None = None  # None: "digits"; a .npz/.csv path: the user's own data
    data_dir: str | None = None
    label_column: str | None = None
    num_train: int | None = None
    num_val: int | None = None
    num_test: int | None = None
    hidden_size: int | None = None
    std: float | None = None
    learning_rate: float | None = None
    learning_rate_decay: float | None = None
    reg: float | None = None
    num_iters: int | None = None
    batch_size: int | None = None
    seed: int | None = None
    device: str | None = None  # None: "cpu" for a new run, the saved one for a resumed run
    backend: str | None = None
    dtype: str | None = None
    threads: int | None = None  # None: the environment's, else automatic (core.threads)
    checkpoint_every: int | None = None

    def resolved(self) -> RunConfig:
        """Defaults filled in and every value checked against validation's table."""
        dataset = str(self.dataset or datasets.DATASETS[0])
        key = kind(dataset)
        if key == FILE:  # stored in checkpoints: a resume from another folder must find it
            dataset = str(expand_path(dataset, "dataset (--dataset)").absolute())
        defaults = {**DEFAULTS[key], **SPLITS.get(key, {}), **COMMON, "dataset": dataset}
        unused = [k for k in DATA_OPTIONS if k not in defaults and getattr(self, k) is not None]
        if unused:
            having = [n if n != FILE else "a .csv/.npz" for n, d in SPLITS.items() if unused[0] in d]
            raise ValueError(f"{flag(unused[0])} applies to {', '.join(having)} only, not to {dataset}")
        filled = {k: v if v is not None else defaults.get(k) for k, v in self.as_dict().items()}
        filled["dataset"] = dataset
        for name, value in filled.items():
            if value is not None:
                filled[name] = check_setting(name, value)
        return RunConfig(**filled)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def given(self) -> dict:
        """The fields that are set (not None)."""
        return {k: v for k, v in self.as_dict().items() if v is not None}

    @classmethod
    def from_saved(cls, saved: dict, source, facts: dict | None = None) -> RunConfig:
        """The resolved config a checkpoint ``source`` stores (its JSON ``saved``), trusted no more
        than the file: every field the dataset needs present, each checked by ``check_setting``
        (the CLI's checks), and each of ``facts`` (what the checkpoint's arrays say, e.g. its
        hidden_size) agreeing with it. Else a ValueError naming ``source`` and the field. Fields
        this version does not know are dropped."""

        def refuse(name: str, problem: str):
            return ValueError(f"{source}: its stored run config field {name} {problem}")

        dataset = saved.get("dataset")
        try:
            key = kind(dataset) if isinstance(dataset, str) else None
        except ValueError:
            key = None
        if key is None:
            known = f"one of {', '.join(datasets.DATASETS)} or a .npz/.csv file"
            raise refuse("dataset", f"must be {known}, got {shown(dataset)}")
        needed = {**DEFAULTS[key], **SPLITS.get(key, {}), **COMMON}
        config = {}
        for name in FIELDS:
            value = saved.get(name)
            if value is None:
                if needed.get(name) is not None:
                    raise refuse(name, "is missing")
            elif name not in needed and name not in ("dataset", "backend", "threads"):
                raise refuse(name, f"does not apply to {dataset}")
            else:
                try:
                    config[name] = check_setting(name, value)
                except (TypeError, ValueError) as exc:
                    raise refuse(name, f"is invalid: {exc}") from None
        for name, value in (facts or {}).items():
            if config.get(name) != value:
                raise refuse(name, f"is {config.get(name)!r} but the checkpoint's arrays have {value!r}")
        return cls(**config)


FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))


class Setting(NamedTuple):
    group: str  # the --help section
    help: str
    resume: bool = False  # may a resumed run change it?
    choices: tuple | None = None
    metavar: str | None = None
    aliases: tuple = ()


SETTINGS = {
    "dataset": Setting(
        "data",
        "digits: scikit-learn's 8x8 digits, no download; cifar10: CS231n's dataset; mnist, "
        "fashion-mnist: downloaded once; FILE.npz (X_train, y_train, optional X_val/y_val/X_test/"
        "y_test) or FILE.csv (a header row, numeric features, a label column): your own data "
        f"(default {datasets.DATASETS[0]})",
        metavar="NAME|FILE",
    ),
    "data_dir": Setting(
        "data",
        f"{DATA_DIR_HELP}; a resumed run only reads the folder its checkpoint names",
        resume=True,
        metavar="DIR",
    ),
    "label_column": Setting(
        "data", "FILE.csv: the label column's name (default: the last column)", metavar="NAME"
    ),
    "num_train": Setting(
        "data",
        f"training rows (default cifar10 {datasets.CIFAR10_SPLIT['num_train']}, mnist {mnist.SPLIT['num_train']})",
        metavar="N",
    ),
    "num_val": Setting(
        "data",
        f"validation rows, taken after the training rows (default cifar10 {datasets.CIFAR10_SPLIT['num_val']}, mnist {mnist.SPLIT['num_val']})",
        metavar="N",
    ),
    "num_test": Setting(
        "data",
        f"test rows, the first of the test set (default cifar10 {datasets.CIFAR10_SPLIT['num_test']}, mnist {mnist.SPLIT['num_test']})",
        metavar="N",
    ),
    "hidden_size": Setting("model", "hidden units", metavar="H"),
    "std": Setting("model", "initial weights ~ std * N(0, 1)"),
    "learning_rate": Setting("model", "SGD step size", metavar="LR", aliases=("--lr",)),
    "learning_rate_decay": Setting(
        "model",
        "multiply the learning rate by F every epoch, where an epoch is CS231n's float "
        "num_train / batch_size iterations: a decay falls on iteration i only when i %% that == 0, "
        "so a fractional epoch decays far less often (the summary says how many decays happened)",
        metavar="F",
        aliases=("--lr-decay",),
    ),
    "reg": Setting("model", "L2 strength: loss += reg * (sum W1^2 + sum W2^2)"),
    "num_iters": Setting(
        "model", "SGD iterations per net (a resumed run: the total)", resume=True, metavar="N"
    ),
    "batch_size": Setting("model", "minibatch rows, sampled with replacement", metavar="B"),
    "seed": Setting(
        "model",
        f"seed of weights and minibatches: one seed, one trajectory on any device (default {COMMON['seed']})",
    ),
    "device": Setting("device", f"cpu, cuda or cuda:N (default {COMMON['device']})", resume=True),
    "backend": Setting(
        "device", "array library (default: numpy on cpu, cupy on cuda)", resume=True, choices=BACKENDS
    ),
    "dtype": Setting("device", f"float precision (default {COMMON['dtype']})", choices=DTYPES),
    "threads": Setting(
        "device",
        "CPU threads to compute with (default: OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / "
        "MKL_NUM_THREADS if set, else as many as the step can use within this process's share "
        "of the free CPUs; docs/threads.md)",
        resume=True,
        metavar="N",
    ),
    "checkpoint_every": Setting(
        "output",
        f"rewrite model.npz every N iterations (default {COMMON['checkpoint_every']})",
        resume=True,
        metavar="N",
    ),
}
assert set(SETTINGS) == set(FIELDS), "every RunConfig field has exactly one Setting"
RESUME_MAY_CHANGE = tuple(name for name, s in SETTINGS.items() if s.resume)


def check_setting(name: str, value: Any) -> Any:
    """``value`` of the setting ``name`` checked as the CLI checks its flag: by CONSTRAINTS (a
    number), by SETTINGS' choices, or as a string (a path, a device); TypeError/ValueError
    naming it otherwise."""
    if name in CONSTRAINTS:
        return validation.check(name, value, CONSTRAINTS)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__} {shown(value)}")
    choices = SETTINGS[name].choices
    if choices is not None and value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {shown(value)}")
    if not value or "\0" in value:
        raise ValueError(f"{name} must be a non-empty string without NUL characters, got {shown(value)}")
    return value


def resumed(saved: dict, given: dict[str, Any], source, facts: dict | None = None) -> RunConfig:
    """The config of a resumed run: the saved one (checked by ``RunConfig.from_saved``, naming
    ``source``), with the ``given`` settings that RESUME_MAY_CHANGE applied; ValueError naming
    the first setting a resume may not change."""
    fixed = [name for name in given if name not in RESUME_MAY_CHANGE]
    if fixed:
        allowed = ", ".join(flag(n) for n in RESUME_MAY_CHANGE)
        raise ValueError(
            f"{flag(fixed[0])} cannot change when resuming: a resumed run keeps its saved settings "
            f"(only {allowed} and the output flags may change)"
        )
    config = RunConfig.from_saved(saved, source, facts)
    applies = {**DEFAULTS[kind(config.dataset)], **SPLITS.get(kind(config.dataset), {}), **COMMON}
    unused = [k for k in given if k in DATA_OPTIONS and k not in applies]
    if unused:
        raise ValueError(f"{flag(unused[0])} does not apply to {config.dataset}, the data this run resumes")
    return dataclasses.replace(config, **{k: check_setting(k, v) for k, v in given.items()})
