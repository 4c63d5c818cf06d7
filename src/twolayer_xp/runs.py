"""One training run end to end: data -> device -> model -> checkpoints, metrics and plots.

The CLI and the notebook both call ``run``; it writes into one output folder:
``model.npz`` (checkpoint, rewritten atomically every ``checkpoint_every`` iterations),
``metrics.json``, ``loss.png`` and ``weights.png``.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__, checkpoint, data, files
from .backend import gpu_name, library_versions, to_numpy
from .checkpoint import CheckpointError
from .model import TwoLayerNet
from .training import TrainingDivergedError

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
SPLITS = {"cifar10": {"num_train": 49000, "num_val": 1000, "num_test": 1000, "data_dir": None}}


@dataclass
class RunConfig:
    """Everything that defines a run. Hyperparameters left None take the dataset's DEFAULTS."""

    dataset: str = "digits"
    data_dir: str | None = None
    num_train: int | None = None  # CIFAR-10 only: split sizes, CS231n's 49000 / 1000 / 1000
    num_val: int | None = None
    num_test: int | None = None
    hidden_size: int | None = None
    std: float | None = None
    learning_rate: float | None = None
    learning_rate_decay: float | None = None
    reg: float | None = None
    num_iters: int | None = None
    batch_size: int | None = None
    device: str | None = None  # None: "cpu" for a new run, the saved one for a resumed run
    backend: str | None = None
    dtype: str = "float32"
    seed: int = 0
    checkpoint_every: int = 1000

    def resolved(self) -> RunConfig:
        if self.dataset not in DEFAULTS:
            raise ValueError(f"dataset must be one of {', '.join(DEFAULTS)}; got {self.dataset!r}")
        defaults = {**DEFAULTS[self.dataset], **SPLITS.get(self.dataset, {}), "device": "cpu"}
        unused = [
            k
            for k in ("num_train", "num_val", "num_test", "data_dir")
            if k not in defaults and getattr(self, k) is not None
        ]
        if unused:
            raise ValueError(f"{unused[0]} applies to cifar10 only, not to {self.dataset}")
        filled = {k: v if v is not None else defaults.get(k) for k, v in self.as_dict().items()}
        return RunConfig(**filled)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class RunResult:
    out_dir: Path
    metrics: dict
    net: TwoLayerNet
    dataset: data.Dataset = field(repr=False)

    def summary(self) -> str:
        m = self.metrics
        return (
            f"{m['config']['dataset']} on {m['device']} ({m['backend']}, {m['dtype']}): "
            f"test accuracy {m['test_accuracy']:.4f} (val {m['val_accuracy']:.4f}) after "
            f"{m['iterations']} iterations in {m['train_seconds']:.2f} s "
            f"({m['samples_per_second']:,.0f} samples/s); outputs in {self.out_dir}"
        )


def default_out_dir(dataset: str, root: str | Path = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(root) / f"{dataset}-{stamp}"
    suffix = 1
    while out.exists():
        suffix += 1
        out = Path(root) / f"{dataset}-{stamp}-{suffix}"
    return out


def load_data(config: RunConfig) -> data.Dataset:
    if config.dataset == "cifar10":
        return data.load_cifar10(
            config.data_dir,
            num_train=config.num_train,
            num_val=config.num_val,
            num_test=config.num_test,
            dtype=config.dtype,
        )
    return data.load(config.dataset, dtype=config.dtype)


def run(
    config: RunConfig,
    out_dir: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    progress: Callable[[dict], None] | None = None,
    verbose: bool = False,
) -> RunResult:
    """Train per ``config`` (or continue the checkpoint ``resume``), writing into ``out_dir``.

    progress: called at every sync with the training loop's progress dict plus
    'samples_per_second'. Raises TrainingDivergedError after saving the last finite state.
    """
    started = time.perf_counter()
    if resume is not None:
        net, config, history = _resumed(config, resume)
    else:
        config, history = config.resolved(), {key: [] for key in HISTORY_KEYS}
    out_dir = _output_folder(out_dir, config, resume)

    ds = load_data(config)
    if resume is None:
        net = TwoLayerNet(
            ds.num_features,
            config.hidden_size,
            ds.num_classes,
            std=config.std,
            device=config.device,
            backend=config.backend,
            dtype=config.dtype,
            rng=config.seed,
        )
    elif (net.input_size, net.output_size) != (ds.num_features, ds.num_classes):
        raise CheckpointError(
            f"{resume} maps {net.input_size} features to {net.output_size} classes; the data has "
            f"{ds.num_features} and {ds.num_classes}"
        )
    net.metadata = {"config": config.as_dict(), "history": history}
    # The data goes to the device once; every segment and evaluation below reuses it.
    splits = {"train": (ds.X_train, ds.y_train), "val": (ds.X_val, ds.y_val), "test": (ds.X_test, ds.y_test)}
    placed = {
        name: (net.backend.asarray(X, dtype=net.dtype), net.backend.asarray(y))
        for name, (X, y) in splits.items()
    }
    (X, y), (X_val, y_val) = placed["train"], placed["val"]

    clock = {"started": started, "train_start": time.perf_counter(), "first_iteration": net.iteration}

    def report(info: dict) -> None:
        elapsed = time.perf_counter() - clock["train_start"]
        done = info["iteration"] - clock["first_iteration"]
        info["samples_per_second"] = done * config.batch_size / elapsed if elapsed > 0 else math.nan
        info["num_iters"] = config.num_iters  # the whole run's, not the current segment's
        if progress is not None:
            progress(info)

    save = lambda: net.save(out_dir / "model.npz", arrays={"mean_image": ds.mean_image})  # noqa: E731
    try:
        while net.iteration < config.num_iters:
            # Segments end at checkpoints; each draws its own minibatch indices, and the draws
            # concatenate to the same stream, so a resumed run equals an uninterrupted one.
            part = net.train(
                X,
                y,
                X_val,
                y_val,
                learning_rate=net.learning_rate if net.iteration else config.learning_rate,
                learning_rate_decay=config.learning_rate_decay,
                reg=config.reg,
                num_iters=min(config.checkpoint_every, config.num_iters - net.iteration),
                batch_size=config.batch_size,
                verbose=verbose,
                start_iteration=net.iteration,
                progress=report,
                on_divergence="raise",
            )
            _extend(history, part)
            save()
    except TrainingDivergedError as exc:
        _extend(history, exc.history)
        save()  # the params were rolled back to the last finite state
        _write_outputs(out_dir, net, ds, placed, config, history, "diverged", clock, resume)
        raise
    return _write_outputs(out_dir, net, ds, placed, config, history, "completed", clock, resume)


HISTORY_KEYS = ("loss_history", "train_acc_history", "val_acc_history")


def _resumed(config: RunConfig, resume) -> tuple[TwoLayerNet, RunConfig, dict]:
    """The checkpointed net, its saved config (with what a resume may change) and its history."""
    _, header, _ = checkpoint.load(resume)
    saved = (header.get("metadata") or {}).get("config")
    if not isinstance(saved, dict) or saved.get("dataset") not in DEFAULTS:
        raise CheckpointError(f"{resume} was not written by a twolayer-xp run (no run config inside)")
    # A resumed run keeps its settings; it may change where it runs and how long it goes on.
    known = {k: v for k, v in saved.items() if k in RunConfig.__dataclass_fields__}
    changes = {
        k: getattr(config, k) for k in ("device", "backend", "num_iters") if getattr(config, k) is not None
    }
    merged = dataclasses.replace(RunConfig(**known), **changes)
    net = TwoLayerNet.load(resume, device=merged.device, backend=merged.backend)
    merged.dtype = net.dtype_name
    if merged.num_iters <= net.iteration:
        raise ValueError(
            f"the run already has {net.iteration} of num_iters={merged.num_iters} iterations; "
            "pass a larger --num-iters to train further"
        )
    saved_history = net.metadata.get("history") or {}
    history = {key: list(saved_history.get(key, [])) for key in HISTORY_KEYS}
    return net, merged, history


def _output_folder(out_dir, config: RunConfig, resume) -> Path:
    """The run's folder, writable, and never one holding another run's files."""
    if out_dir is None:
        out_dir = Path(resume).parent if resume is not None else default_out_dir(config.dataset)
    out_dir = Path(out_dir)
    model_file = out_dir / "model.npz"
    continuing = resume is not None and model_file.exists() and model_file.samefile(resume)
    if not continuing and any((out_dir / name).exists() for name in OUTPUTS):
        raise ValueError(
            f"output folder {out_dir} already holds a run's files; choose another --out, "
            f"or continue that run with --resume {model_file}"
        )
    try:
        return files.ensure_writable_dir(out_dir)
    except OSError as exc:
        raise ValueError(f"output folder {out_dir} is not writable ({exc.strerror or exc})") from None


OUTPUTS = ("model.npz", "metrics.json", "loss.png", "weights.png")


def _extend(history: dict, part: dict) -> None:
    for key in history:
        history[key].extend(part[key])


def _write_outputs(out_dir, net, ds, placed, config, history, status, clock, resume) -> RunResult:
    """metrics.json, loss.png and weights.png for the run as it stands."""
    train_seconds = time.perf_counter() - clock["train_start"]
    iterations_now = net.iteration - clock["first_iteration"]
    accuracy = {split: net.accuracy(X, y) for split, (X, y) in placed.items()}
    metrics = {
        "status": status,
        "config": config.as_dict(),
        "dataset_sizes": ds.sizes(),
        "backend": net.backend.name,
        "device": net.device,
        "gpu": gpu_name(net.backend),
        "dtype": net.dtype_name,
        "versions": {
            "twolayer_xp": __version__,
            "python": platform.python_version(),
            **library_versions(net.backend),
        },
        "train_accuracy": accuracy["train"],
        "val_accuracy": accuracy["val"],
        "test_accuracy": accuracy["test"],
        "iterations": net.iteration,
        "train_seconds": train_seconds,
        "samples_per_second": iterations_now * config.batch_size / train_seconds
        if train_seconds > 0
        else None,
        "total_seconds": time.perf_counter() - clock["started"],
        "resumed_from": str(resume) if resume is not None else None,
        **history,
    }
    files.write_json(out_dir / "metrics.json", _finite_or_none(metrics))
    from . import plots  # matplotlib is imported only when a run has something to draw

    plots.save(plots.history_figure(history, title=f"{config.dataset}, {net.device}"), out_dir / "loss.png")
    plots.save(plots.weights_figure(to_numpy(net.params["W1"]), ds.image_shape), out_dir / "weights.png")
    return RunResult(out_dir=out_dir, metrics=metrics, net=net, dataset=ds)


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN: a diverged loss is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value
