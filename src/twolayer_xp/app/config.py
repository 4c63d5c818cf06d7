"""Run configuration: every setting of a run, its default per dataset, and what a resume may change.

One table (``SETTINGS``) says, for each field of ``RunConfig``, its command-line flag and help,
its choices, and whether a resumed run may change it; the CLI builds its parser from it and
``runs`` applies the resume policy from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

from twolayer_xp.app.flags import flag
from twolayer_xp.backend import BACKENDS, DTYPES
from twolayer_xp.core import validation
from twolayer_xp.core.validation import COUNT, POSITIVE_INT
from twolayer_xp.io import datasets

# Per-dataset defaults for every hyperparameter left unset. digits: test accuracy 0.98-0.99
# for seeds 0-4, in about 0.3 s of training on a 2-core CPU (13 iterations an epoch, so the
# rate decays 0.99 ** 154 ~ 0.21x). cifar10: in CS231n's tuned range (reported ~0.47-0.50
# validation accuracy for settings like these; not measured here, the data needs a download).
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
}
SPLITS = {"cifar10": {**datasets.CIFAR10_SPLIT, "data_dir": None}}  # settings only CIFAR-10 has
COMMON = {"seed": 0, "device": "cpu", "dtype": "float32", "checkpoint_every": 1000}  # every dataset's


# A run's scalar settings: the model's (core.validation) and the run's own.
CONSTRAINTS = {
    **validation.CONSTRAINTS,
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

    dataset: str | None = None  # None: "digits"
    data_dir: str | None = None
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
    checkpoint_every: int | None = None

    def resolved(self) -> RunConfig:
        """Defaults filled in and every value checked against validation's table."""
        dataset = self.dataset or datasets.DATASETS[0]
        if dataset not in DEFAULTS:
            raise ValueError(f"dataset must be one of {', '.join(DEFAULTS)}; got {dataset!r}")
        defaults = {**DEFAULTS[dataset], **SPLITS.get(dataset, {}), **COMMON, "dataset": dataset}
        unused = [k for k in SPLITS["cifar10"] if k not in defaults and getattr(self, k) is not None]
        if unused:
            raise ValueError(f"{unused[0]} applies to cifar10 only, not to {dataset}")
        filled = {k: v if v is not None else defaults.get(k) for k, v in self.as_dict().items()}
        for name, value in filled.items():
            if name in CONSTRAINTS and value is not None:
                filled[name] = validation.check(name, value, CONSTRAINTS)
        return RunConfig(**filled)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def given(self) -> dict:
        """The fields that are set (not None)."""
        return {k: v for k, v in self.as_dict().items() if v is not None}

    @classmethod
    def from_saved(cls, saved: dict) -> RunConfig:
        """A config from a checkpoint's JSON (fields this version does not know are dropped)."""
        return cls(**{k: v for k, v in saved.items() if k in FIELDS})


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
        f"digits: scikit-learn's 8x8 digits, no download; cifar10: CS231n's dataset (default {datasets.DATASETS[0]})",
        choices=datasets.DATASETS,
    ),
    "data_dir": Setting(
        "data",
        "folder holding cifar-10-batches-py/ or the archive; downloaded there when absent (default: $TWOLAYER_XP_DATA or ~/.cache/twolayer-xp)",
        metavar="DIR",
    ),
    "num_train": Setting(
        "data", f"CIFAR-10 training rows (default {datasets.CIFAR10_SPLIT['num_train']})", metavar="N"
    ),
    "num_val": Setting(
        "data",
        f"CIFAR-10 validation rows, taken after the training rows (default {datasets.CIFAR10_SPLIT['num_val']})",
        metavar="N",
    ),
    "num_test": Setting(
        "data",
        f"CIFAR-10 test rows, the first of test_batch (default {datasets.CIFAR10_SPLIT['num_test']})",
        metavar="N",
    ),
    "hidden_size": Setting("model", "hidden units", metavar="H"),
    "std": Setting("model", "initial weights ~ std * N(0, 1)"),
    "learning_rate": Setting("model", "SGD step size", metavar="LR", aliases=("--lr",)),
    "learning_rate_decay": Setting(
        "model", "multiply the learning rate by F every epoch", metavar="F", aliases=("--lr-decay",)
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
    "checkpoint_every": Setting(
        "output",
        f"rewrite model.npz every N iterations (default {COMMON['checkpoint_every']})",
        resume=True,
        metavar="N",
    ),
}
assert set(SETTINGS) == set(FIELDS), "every RunConfig field has exactly one Setting"
RESUME_MAY_CHANGE = tuple(name for name, s in SETTINGS.items() if s.resume)


def resumed(saved: dict, given: dict[str, Any]) -> RunConfig:
    """The config of a resumed run: the saved one, with the ``given`` settings that
    RESUME_MAY_CHANGE applied; ValueError naming the first setting a resume may not change."""
    fixed = [name for name in given if name not in RESUME_MAY_CHANGE]
    if fixed:
        allowed = ", ".join(flag(n) for n in RESUME_MAY_CHANGE)
        raise ValueError(
            f"{flag(fixed[0])} cannot change when resuming: a resumed run keeps its saved settings "
            f"(only {allowed} and the output flags may change)"
        )
    config = dataclasses.replace(RunConfig.from_saved(saved), **given)
    for name in RESUME_MAY_CHANGE:
        value = getattr(config, name)
        if name in CONSTRAINTS and value is not None:
            validation.check(name, value, CONSTRAINTS)
    return config
