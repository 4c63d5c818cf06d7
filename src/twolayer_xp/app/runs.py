"""One training run end to end: data -> device -> model -> checkpoints, metrics and plots.

The CLI and the notebook both call ``run``; it writes into one output folder, which it claims
first (two runs never share one): ``model.npz`` (checkpoint, rewritten atomically every
``checkpoint_every`` iterations), ``metrics.json``, ``loss.png`` and ``weights.png``.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twolayer_xp import __version__
from twolayer_xp.app import config as configs
from twolayer_xp.app.config import RunConfig
from twolayer_xp.core import model, resources
from twolayer_xp.core.model import TwoLayerNet
from twolayer_xp.core.training import HISTORY_KEYS, TrainingDivergedError
from twolayer_xp.io import checkpoint, datasets, files
from twolayer_xp.io.checkpoint import CheckpointError

OUTPUTS = ("model.npz", "metrics.json", "loss.png", "weights.png")


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says what was saved and how to continue."""


@dataclass
class RunResult:
    out_dir: Path
    metrics: dict
    net: TwoLayerNet
    dataset: datasets.Dataset = field(repr=False)

    def summary(self) -> str:
        m = self.metrics
        return (
            f"{m['config']['dataset']} on {m['device']} ({m['backend']}, {m['dtype']}): "
            f"test accuracy {m['test_accuracy']:.4f} (val {m['val_accuracy']:.4f}) after "
            f"{m['iterations']} iterations in {m['train_seconds']:.2f} s "
            f"({m['samples_per_second']:,.0f} samples/s{_threads(m.get('threads'))}); outputs in {self.out_dir}"
        )


def _threads(used: dict | None) -> str:
    """', 1 thread' (the CPU threads a run computed with), or nothing when it trained none."""
    return "" if not used else f", {used['count']} thread{'s' * (used['count'] != 1)}"


def default_out_dir(dataset: str, root: str | Path = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(root) / f"{dataset}-{stamp}"
    suffix = 1
    while out.exists():
        suffix += 1
        out = Path(root) / f"{dataset}-{stamp}-{suffix}"
    return out


def load_data(config: RunConfig) -> datasets.Dataset:
    if config.dataset == "cifar10":
        return datasets.load_cifar10(
            config.data_dir,
            num_train=config.num_train,
            num_val=config.num_val,
            num_test=config.num_test,
            dtype=config.dtype,
        )
    return datasets.load(config.dataset, dtype=config.dtype)


def run(
    config: RunConfig,
    out_dir: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    progress: Callable[[dict], None] | None = None,
    verbose: bool = False,
) -> RunResult:
    """Train per ``config`` (or continue the checkpoint ``resume`` with the settings of
    ``config`` that a resume may change), writing into ``out_dir``.

    progress: called at every sync with the training loop's progress dict plus
    'samples_per_second'. Raises TrainingDivergedError after saving the last finite state.
    """
    started = time.perf_counter()
    try:
        return _run(config, out_dir, resume, progress, verbose, started)
    except RunInterrupted:
        raise
    except KeyboardInterrupt:  # before training started: nothing of this run was saved
        if resume is None:
            raise RunInterrupted("interrupted before the first checkpoint; nothing was saved") from None
        raise RunInterrupted(f"interrupted; {resume} is unchanged: continue with --resume {resume}") from None


def _run(config: RunConfig, out_dir, resume, progress, verbose, started) -> RunResult:
    net = None
    if resume is not None:
        net, config = _resumed(config, resume)
    else:
        config = config.resolved()
    if out_dir is None:
        out_dir = Path(resume).parent if resume is not None else default_out_dir(config.dataset)
    with files.claim_folder(out_dir, _continuing(out_dir, resume), OUTPUTS) as out:
        ds = load_data(config)
        resources.check_run(config, ds.num_features, ds.num_classes, ds.sizes())
        if net is None:
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
        return _Session(config, ds, net, out, resume, started).train(progress, verbose)


def _resumed(config: RunConfig, resume) -> tuple[TwoLayerNet, RunConfig]:
    """The checkpointed net and its saved config, with the changes (the set fields of
    ``config``) a resume may make; it runs where it was saved unless told otherwise."""
    _, header, _ = checkpoint.load(resume, model.LAYOUT)
    saved = (header.get("metadata") or {}).get("config")
    if not isinstance(saved, dict) or saved.get("dataset") not in configs.DEFAULTS:
        raise CheckpointError(f"{resume} was not written by a twolayer-xp run (no run config inside)")
    merged = configs.resumed(saved, config.given())
    net, _ = model.load_net(resume, device=merged.device, backend=merged.backend)
    merged.dtype = net.dtype_name
    return net, merged


def _continuing(out_dir, resume) -> bool:
    model_file = Path(out_dir) / "model.npz"
    return resume is not None and model_file.exists() and model_file.samefile(resume)


class _Session:
    """A run in progress: its data placed on the device once, its history and its clock."""

    def __init__(self, config: RunConfig, ds: datasets.Dataset, net: TwoLayerNet, out: Path, resume, started):
        self.config, self.ds, self.net, self.out, self.resume = config, ds, net, out, resume
        self.started = started
        saved = net.metadata.get("history") or {}
        self.history = {key: list(saved.get(key, [])) for key in HISTORY_KEYS}
        net.metadata = {"config": config.as_dict(), "history": self.history}
        splits = {
            "train": (ds.X_train, ds.y_train),
            "val": (ds.X_val, ds.y_val),
            "test": (ds.X_test, ds.y_test),
        }
        self.placed = {name: net.place(X, y, f"X_{name}") for name, (X, y) in splits.items()}
        self.first_iteration = net.iteration
        # The newest checkpoint of this run and its iteration: the resumed file until this
        # session writes its own.
        self.saved_at: int | None = net.iteration if resume is not None else None
        self.saved_in: Path | None = Path(resume) if resume is not None else None
        self.train_start = time.perf_counter()

    def train(self, progress, verbose) -> RunResult:
        """Train to num_iters, checkpointing on the way, then write the outputs. Ctrl-C anywhere
        in here is a RunInterrupted saying which checkpoint holds which iteration."""
        try:
            return self._train(progress, verbose)
        except KeyboardInterrupt:
            raise RunInterrupted(self.interrupted_message()) from None

    def _train(self, progress, verbose) -> RunResult:
        net, config = self.net, self.config
        if net.iteration >= config.num_iters:
            if self.resume is not None and not all((self.out / name).exists() for name in OUTPUTS):
                # killed after its last checkpoint but before its outputs: finish them
                if not (self.out / "model.npz").exists():  # resumed into another folder
                    self.save()
                return self.write_outputs("completed")
            raise ValueError(
                f"the run already has {net.iteration} of num_iters={config.num_iters} iterations; "
                "pass a larger --num-iters to train further"
            )
        (X, y), (X_val, y_val) = self.placed["train"], self.placed["val"]
        try:
            while net.iteration < config.num_iters:
                # Segments end at checkpoints; each draws its own minibatch indices, and the
                # draws concatenate to the same stream, so a resumed run equals an uninterrupted one.
                part = net.train(
                    X,
                    y,
                    X_val,
                    y_val,
                    learning_rate=net.state.learning_rate if net.iteration else config.learning_rate,
                    learning_rate_decay=config.learning_rate_decay,
                    reg=config.reg,
                    num_iters=min(config.checkpoint_every, config.num_iters - net.iteration),
                    batch_size=config.batch_size,
                    verbose=verbose,
                    progress=lambda info: self.report(info, progress),
                    on_divergence="raise",
                    threads=config.threads,
                )
                self.extend(part)
                self.save()
        except TrainingDivergedError as exc:
            self.extend(exc.history)
            self.save()  # the params were rolled back to the last finite state
            self.write_outputs("diverged")
            raise
        return self.write_outputs("completed")

    def report(self, info: dict, progress) -> None:
        info["samples_per_second"] = self.samples_per_second(info["iteration"])
        info["num_iters"] = self.config.num_iters  # the whole run's, not the current segment's
        if progress is not None:
            progress(info)

    def samples_per_second(self, iteration: int) -> float:
        elapsed = time.perf_counter() - self.train_start
        done = iteration - self.first_iteration
        return done * self.config.batch_size / elapsed if elapsed > 0 else math.nan

    def extend(self, part: dict) -> None:
        for key in self.history:
            self.history[key].extend(part[key])

    def save(self) -> None:
        model.save_net(self.out / "model.npz", self.net, arrays={"mean_image": self.ds.mean_image})
        self.saved_at, self.saved_in = self.net.iteration, self.out / "model.npz"

    def interrupted_message(self) -> str:
        if self.saved_in is None:
            return "interrupted before the first checkpoint; nothing was saved"
        return (
            f"interrupted; {self.saved_in} holds iteration {self.saved_at}: continue with "
            f"--resume {self.saved_in}"
        )

    def write_outputs(self, status: str) -> RunResult:
        """metrics.json, loss.png and weights.png for the run as it stands."""
        net, config = self.net, self.config
        train_seconds = time.perf_counter() - self.train_start
        with net.backend.quiet_overflow():  # diverged params may overflow; the status says so
            accuracy = {split: net.accuracy(X, y) for split, (X, y) in self.placed.items()}
        metrics = {
            "status": status,
            "config": config.as_dict(),
            "dataset_sizes": self.ds.sizes(),
            "backend": net.backend.name,
            "device": net.device,
            "gpu": net.backend.gpu_name(),
            "dtype": net.dtype_name,
            "threads": _threads_used(net),
            "versions": {
                "twolayer_xp": __version__,
                "python": platform.python_version(),
                **net.backend.versions(),
            },
            "train_accuracy": accuracy["train"],
            "val_accuracy": accuracy["val"],
            "test_accuracy": accuracy["test"],
            "iterations": net.iteration,
            "train_seconds": train_seconds,
            "samples_per_second": self.samples_per_second(net.iteration) if train_seconds > 0 else None,
            "total_seconds": time.perf_counter() - self.started,
            "resumed_from": str(self.resume) if self.resume is not None else None,
            **self.history,
        }
        files.write_json(self.out / "metrics.json", _finite_or_none(metrics))
        from twolayer_xp.app import plots  # matplotlib is imported only when a run has something to draw

        history_fig = plots.history_figure(self.history, title=f"{config.dataset}, {net.device}")
        plots.save(history_fig, self.out / "loss.png")
        W1 = net.backend.to_numpy(net.params["W1"])
        plots.save(plots.weights_figure(W1, self.ds.image_shape), self.out / "weights.png")
        return RunResult(out_dir=self.out, metrics=metrics, net=net, dataset=self.ds)


def _threads_used(net: TwoLayerNet) -> dict | None:
    """{'count', 'source'} of the CPU threads the last training call used; None on a GPU."""
    used = net.threads_used
    return used._asdict() if used is not None and net.backend.host_memory else None


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN: a diverged loss is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value
