"""One training run end to end: data -> device -> model -> checkpoints, metrics and plots.

The CLI and the notebook both call ``run``; it writes into one output folder, which it claims
first (two runs never share one): ``model.npz`` (checkpoint, rewritten atomically every
``checkpoint_every`` iterations, carrying the preprocessing a saved model repeats on new rows),
``metrics.json`` (results, the run's story and its provenance; histories thinned to at most
``MAX_HISTORY_POINTS``), ``history.npz`` (the full histories), ``loss.png`` and ``weights.png``.
An interrupted or diverged run still writes metrics.json and loss.png, saying so in "status".
"""

from __future__ import annotations

import contextlib
import math
import platform
import shlex
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twolayer_xp import __version__
from twolayer_xp.app import config as configs
from twolayer_xp.app import drawing, provenance
from twolayer_xp.app.config import RunConfig
from twolayer_xp.app.flags import flag
from twolayer_xp.backend import CudaUnavailableError, resolve
from twolayer_xp.core import model, resources
from twolayer_xp.core.model import TwoLayerNet
from twolayer_xp.core.training import HISTORY_KEYS, TrainingDivergedError
from twolayer_xp.io import checkpoint, datasets, files, preprocessing
from twolayer_xp.io.checkpoint import CheckpointError

OUTPUTS = ("model.npz", "metrics.json", "history.npz", "loss.png", "weights.png")
MAX_HISTORY_POINTS = 2000  # per history in metrics.json; history.npz keeps every point


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says what was saved and how to continue."""


@dataclass
class RunResult:
    out_dir: Path
    metrics: dict
    net: TwoLayerNet
    dataset: datasets.Dataset = field(repr=False)
    warnings: list[str] = field(default_factory=list)  # figures that could not be drawn, one line each

    def summary(self) -> str:
        m = self.metrics
        resumed = m.get("resumed_from_iteration")
        decays = m["learning_rate_decays"]
        return (
            f"{m['config']['dataset']} on {m['device']} ({m['backend']}, {m['dtype']}): "
            f"test accuracy {m['test_accuracy']:.4f} (val {m['val_accuracy']:.4f}) after "
            f"{m['iterations']} iterations"
            + (f" (resumed from iteration {resumed})" if resumed is not None else "")
            + f" in {m['train_seconds']:.2f} s ({m['samples_per_second']:,.0f} samples/s{_threads(m.get('threads'))}); "
            f"learning rate decayed {_times(decays['count'])} ({decays['why']}); outputs in {self.out_dir}"
        )


def _threads(used: dict | None) -> str:
    """', 1 thread' (the CPU threads a run computed with), or nothing when it trained none."""
    return "" if not used else f", {used['count']} thread{'s' * (used['count'] != 1)}"


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def decays(start: int, end: int, num_train: int, batch_size: int) -> dict:
    """How many times CS231n's rule decays the learning rate in iterations [start, end): on
    iteration i when ``i % max(num_train / batch_size, 1) == 0`` (a float modulo, as
    ``core.training`` runs it), so a fractional epoch length decays only where the multiples of
    it happen to be whole numbers."""
    per_epoch = max(num_train / batch_size, 1)
    count = int(np.count_nonzero(np.arange(start, end) % per_epoch == 0))
    whole = per_epoch == int(per_epoch)
    why = (
        f"once every num_train / batch_size = {per_epoch:g} iterations"
        if whole
        else f"num_train / batch_size = {num_train}/{batch_size} = {per_epoch:.4g} is not whole, so "
        f"only iterations that are whole multiples of it decay"
    )
    return {"count": count, "iterations_per_epoch": per_epoch, "why": why}


def fractional_epoch_warning(num_train: int, batch_size: int, num_iters: int) -> str | None:
    """A warning when num_train / batch_size is not whole, saying what CS231n's rule then does."""
    per_epoch = num_train / batch_size
    if per_epoch <= 1 or per_epoch == int(per_epoch):
        return None
    happen = decays(0, num_iters, num_train, batch_size)["count"]
    return (
        f"num_train / batch_size = {num_train}/{batch_size} = {per_epoch:.4g} is not a whole number: "
        f"CS231n's rule decays the learning rate and records accuracy only on iterations i with "
        f"i % {per_epoch:.4g} == 0, {_times(happen)} in {num_iters} iterations instead of "
        f"about {math.ceil(num_iters / per_epoch)}; choose a batch size that divides {num_train} "
        "for one decay an epoch"
    )


def default_out_dir(dataset: str, root: str | Path = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(root) / f"{dataset}-{stamp}"
    suffix = 1
    while out.exists():
        suffix += 1
        out = Path(root) / f"{dataset}-{stamp}-{suffix}"
    return out


def load_data(config: RunConfig, read_only: bool = False) -> datasets.Dataset:
    """The data of a resolved config, with the options its kind of data set takes. read_only:
    ``config.data_dir`` is only read (it came from a checkpoint, which may name any path), never
    created, downloaded or unpacked into."""
    options = {name: getattr(config, name) for name in configs.SPLITS.get(configs.kind(config.dataset), {})}
    if read_only and "data_dir" in options:
        options["read_only"] = True
    return datasets.load(config.dataset, dtype=config.dtype, **options)


def run(
    config: RunConfig,
    out_dir: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    progress: Callable[[dict], None] | None = None,
    verbose: bool = False,
    notify: Callable[[str], None] | None = None,
) -> RunResult:
    """Train per ``config`` (or continue the checkpoint ``resume`` with the settings of
    ``config`` that a resume may change), writing into ``out_dir``.

    progress: called at every sync with the training loop's progress dict plus
    'samples_per_second'. notify: called once with each thing the run decided on its own (a
    split it held out, a fractional epoch); default: a UserWarning. Raises
    TrainingDivergedError after saving the last finite state.
    """
    started = time.perf_counter()
    notify = notify or (lambda text: warnings.warn(text, stacklevel=3))
    try:
        return _run(config, out_dir, resume, progress, verbose, started, notify)
    except RunInterrupted:
        raise
    except KeyboardInterrupt:  # before training started: nothing of this run was saved
        if resume is None:
            raise RunInterrupted("interrupted before the first checkpoint; nothing was saved") from None
        raise RunInterrupted(f"interrupted; {resume} is unchanged: continue with --resume {resume}") from None


def _run(config: RunConfig, out_dir, resume, progress, verbose, started, notify) -> RunResult:
    net = None
    # A data_dir stored in a checkpoint is read, never written; one the user gave may be.
    read_only = resume is not None and config.data_dir is None
    if resume is not None:
        with _naming(resume):
            net, config, saved = _resumed(config, resume)
    else:
        config = config.resolved()
        resolve(config.device, config.backend)  # a missing GPU is said before a download
    if out_dir is None:
        out_dir = (
            Path(resume).parent if resume is not None else default_out_dir(configs.label(config.dataset))
        )
    with files.claim_folder(out_dir, _continuing(out_dir, resume), OUTPUTS) as out:
        with _naming(resume):
            ds = load_data(config, read_only)
            if net is not None:
                _same_data(resume, net, saved, ds)
        resources.check_run(config, ds.num_features, ds.num_classes, ds.sizes())
        for note in (
            *ds.notes,
            fractional_epoch_warning(len(ds.y_train), config.batch_size, config.num_iters),
        ):
            if note:
                notify(note)
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


def _same_data(resume, net: TwoLayerNet, arrays: dict, ds: datasets.Dataset) -> None:
    """CheckpointError unless ``ds`` is the data the checkpoint trained on, as far as its saved
    preprocessing tells: the class names and the training rows' mean (and std) computed from
    the data now must be those it saved (a changed file, or another copy under --data-dir,
    would otherwise be resumed on silently, its weights fitted to other inputs). ``arrays``: the
    checkpoint's extras. A checkpoint saved without its preprocessing has nothing to compare."""
    meta = net.metadata.get("preprocessing")
    if not isinstance(meta, dict):
        return
    now = ds.preprocessing.arrays()
    saved = {name: arrays[name] for name in (preprocessing.MEAN, preprocessing.STD) if name in arrays}
    if meta.get("class_names") != list(ds.class_names):
        differs = "its class names"
    elif saved.keys() != now.keys() or not all(np.array_equal(saved[n], now[n]) for n in now):
        differs = "its training rows' mean or spread"
    else:
        return
    raise CheckpointError(
        f"{resume} was trained on other data than {ds.name} holds now ({differs} differ): the "
        "file changed, or --data-dir names another copy; resume needs the data it trained on, or train afresh"
    )


def _resumed(config: RunConfig, resume) -> tuple[TwoLayerNet, RunConfig, dict]:
    """The checkpointed net, its saved config with the changes (the set fields of ``config``) a
    resume may make (it runs where it was saved unless told otherwise), and its extra arrays."""
    params, header, extras = checkpoint.load(resume, model.LAYOUT)
    metadata = header.get("metadata") or {}
    saved = metadata.get("config")
    if not isinstance(saved, dict) or not saved:
        raise CheckpointError(f"{resume} {_not_a_run(metadata)}")
    facts = {"hidden_size": params["W1"].shape[1], "dtype": header["dtype"]}  # what the arrays say
    try:
        merged = configs.resumed(saved, config.given(), resume, facts)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    net, _ = model.load_net(resume, device=merged.device, backend=merged.backend)
    return net, merged, extras


def _not_a_run(metadata: dict) -> str:
    """Why a checkpoint without a run config cannot be resumed, and what to do instead: a
    sweep's best model holds its trial's settings, which a new train run can take."""
    sweep, settings = metadata.get("sweep"), metadata.get("hyperparameters")
    if not isinstance(sweep, dict) or not isinstance(settings, dict):
        return "was not written by a twolayer-xp run (no run config inside)"
    search = sweep.get("search") if isinstance(sweep.get("search"), dict) else {}
    data = {k: search.get(k) for k in ("dataset", "label_column")}
    given = {**data, "dtype": sweep.get("dtype"), **settings, "epochs": None}  # num_iters is its budget
    trained = shlex.join(
        part for k, v in given.items() if isinstance(v, (int, float, str)) for part in (flag(k), str(v))
    )
    return (
        f"is a sweep's best model (trial #{sweep.get('trial')} of study {sweep.get('study')!r}), which "
        f"--resume cannot continue; train its settings afresh: twolayer-xp train {trained}"
    )


@contextlib.contextmanager
def _naming(resume):
    """A refusal of what a resumed checkpoint's settings ask for (its device, its data) names the
    checkpoint first, as the checks of its contents do; the error keeps its type."""
    try:
        yield
    except (ValueError, TypeError, CudaUnavailableError) as exc:
        text = str(exc)
        if resume is None or text.startswith(str(resume)):
            raise
        try:
            renamed = type(exc)(f"{resume}: {text}")
        except Exception:  # noqa: BLE001 - an error type that takes other arguments: as it was
            raise exc from None
        raise renamed from None


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
        self.preprocessing = ds.preprocessing
        net.metadata = {
            "config": config.as_dict(),
            "history": self.history,
            "preprocessing": self.preprocessing.metadata(),
        }
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
            if self.saved_in is not None:  # a checkpoint exists: say what it holds, and draw it
                try:
                    self.write_outputs("interrupted", evaluate=False)
                except (KeyboardInterrupt, Exception):  # best effort: the interruption is the news
                    pass
            raise RunInterrupted(self.interrupted_message()) from None

    def _train(self, progress, verbose) -> RunResult:
        net, config = self.net, self.config
        if net.iteration >= config.num_iters:
            finished = net.iteration == config.num_iters  # not an interrupted run asked for less
            if (
                self.resume is not None
                and finished
                and not all((self.out / name).exists() for name in OUTPUTS)
            ):
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
        with files.uninterrupted():  # a Ctrl-C waits, so what we say the checkpoint holds is what it holds
            model.save_net(self.out / "model.npz", self.net, arrays=self.preprocessing.arrays())
            self.saved_at, self.saved_in = self.net.iteration, self.out / "model.npz"

    def interrupted_message(self) -> str:
        if self.saved_in is None:
            return "interrupted before the first checkpoint; nothing was saved"
        return (
            f"interrupted; {self.saved_in} holds iteration {self.saved_at}: continue with "
            f"--resume {self.saved_in}"
        )

    def write_outputs(self, status: str, evaluate: bool = True) -> RunResult:
        """metrics.json, history.npz, loss.png and weights.png for the run as it stands. An
        interrupted run (evaluate=False) reports the iterations its checkpoint holds and no
        accuracies: its live params are somewhere past that checkpoint."""
        net = self.net
        accuracy = dict.fromkeys(("train", "val", "test"))
        if evaluate:
            with net.backend.quiet_overflow():  # diverged params may overflow; the status says so
                accuracy = {split: net.accuracy(X, y) for split, (X, y) in self.placed.items()}
        metrics = self.metrics(status, accuracy, net.iteration if evaluate else self.saved_at)
        files.write_json(self.out / "metrics.json", _finite_or_none(metrics))
        files.atomic_write(
            self.out / "history.npz",
            lambda f: np.savez(f, **{k: np.asarray(v, dtype=np.float64) for k, v in self.history.items()}),
        )
        title = f"{configs.label(self.config.dataset)}, {net.device}, {status}"
        resumed_at = metrics["resumed_from_iteration"]
        figures = {
            self.out / "loss.png": ("history_figure", (self.history, title), {"resumed_at": resumed_at})
        }
        if evaluate:
            W1 = net.backend.to_numpy(net.params["W1"])
            shape = self.ds.image_shape or (1, W1.shape[0])  # own data: each unit's weights as a row
            figures[self.out / "weights.png"] = ("weights_figure", (W1, shape), {})
        problems = drawing.save_figures(figures)
        return RunResult(out_dir=self.out, metrics=metrics, net=net, dataset=self.ds, warnings=problems)

    def metrics(self, status: str, accuracy: dict, iterations: int) -> dict:
        """What metrics.json says: results, what the run did, and how to reproduce it."""
        net, config = self.net, self.config
        train_seconds = time.perf_counter() - self.train_start
        return {
            "status": status,
            "config": config.as_dict(),
            "dataset_sizes": self.ds.sizes(),
            "dataset_notes": list(self.ds.notes),
            "class_names": list(self.ds.class_names),
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
            "provenance": provenance.collect(net.backend),
            "train_accuracy": accuracy["train"],
            "val_accuracy": accuracy["val"],
            "test_accuracy": accuracy["test"],
            "iterations": iterations,
            "learning_rate_decays": decays(0, iterations, len(self.ds.y_train), config.batch_size),
            "train_seconds": train_seconds,
            "samples_per_second": self.samples_per_second(net.iteration) if train_seconds > 0 else None,
            "total_seconds": time.perf_counter() - self.started,
            "resumed_from": str(self.resume) if self.resume is not None else None,
            "resumed_from_iteration": self.first_iteration if self.resume is not None else None,
            **_thinned(self.history),
        }


def _thinned(history: dict) -> dict:
    """Histories of at most MAX_HISTORY_POINTS: every k-th point (k recorded), so metrics.json
    stays small at any length; history.npz holds them all."""
    out = {}
    for key, values in history.items():
        every = max(1, math.ceil(len(values) / MAX_HISTORY_POINTS))
        out[key] = values[::every]
        if every > 1:
            out[f"{key}_every"] = every
    return out


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
