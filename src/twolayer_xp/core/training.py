"""The minibatch SGD loop, CS231n semantics, written once for one net or a population of K.

Data goes to the device once; all minibatch indices of a run go in one transfer; losses and
accuracy counts stay on the device and come back every ``sync_every`` iterations (one sync),
which is also when progress is reported, verbose lines printed and divergence detected.

The loop trains any *trainee* (``TwoLayerNet`` or ``Population``) that provides: ``backend``,
``dtype``, ``state`` (a TrainingState), ``size`` (None for one net, K for a population),
``live_params()``, ``place(X, y, name)``, ``step(params, X, y, lr, reg, ctx)``,
``count_correct(params, X, y, ctx)`` and ``restore(params, source, member)``. With a population,
hyperparameters and results gain a trailing member axis, and divergence is handled per member.

On the host the loop always keeps a member axis (one net is a population of one, K = 1); what
differs between the two lives in ``_OneNet`` and ``_Members``. Its parts: ``minibatches`` (the
stream of minibatches and epoch ends), ``divergence`` (rollback points, frozen members) and
``history`` (the histories, assembled from what each sync brings back).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np  # host side: hyperparameters, losses

from twolayer_xp.core import kernels, resources, validation
from twolayer_xp.core.divergence import Divergence
from twolayer_xp.core.history import HISTORY_KEYS, History
from twolayer_xp.core.minibatches import Minibatches
from twolayer_xp.core.rng import HostRNG

__all__ = ["HISTORY_KEYS", "FitResult", "TrainingDivergedError", "TrainingState", "fit"]


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or inf. Params were rolled back to ``iteration``, the last sync point
    whose losses were finite, and ``history`` ends there too (what a checkpoint of the rolled-back
    net should hold); the message says where the loss turned non-finite."""

    def __init__(self, message: str, history: dict, iteration: int):
        super().__init__(message)
        self.history = history
        self.iteration = iteration


@dataclass
class TrainingState:
    """Where training continues from: the host random stream, iterations done, and the
    learning rate after its decays (None before the first iteration; (K,) for a population)."""

    rng: HostRNG
    iteration: int = 0
    learning_rate: Any = None


class FitResult(NamedTuple):
    history: dict  # HISTORY_KEYS -> lists (one net) or (K, T) arrays (population)
    diverged: Any  # bool (one net) or bool array (K,)
    message: str | None  # what happened, when something diverged


@dataclass
class _Plan:
    """fit's checked arguments: hyperparameters as floats for one net, (K,) host arrays for a
    population."""

    learning_rate: Any
    decay: Any
    reg: Any
    num_iters: int
    batch_size: int
    start_iteration: int
    sync_every: int
    verbose: bool
    progress: Callable[[dict], None] | None
    on_divergence: str
    extra: dict = field(default_factory=dict)


def fit(
    trainee,
    X: Any,
    y: Any,
    X_val: Any,
    y_val: Any,
    *,
    learning_rate,
    learning_rate_decay,
    reg,
    num_iters: int,
    batch_size: int,
    verbose: bool = False,
    start_iteration: int | None = None,
    progress: Callable[[dict], None] | None = None,
    on_divergence: str = "warn",
    sync_every: int = 100,
) -> FitResult:
    """Train ``trainee`` in place and return its histories and whether it diverged.

    start_iteration: iterations already done (default: ``trainee.state.iteration``), so epochs
    and learning-rate decay fall where they would have in one uninterrupted run. progress:
    called at each sync with {'iteration', 'num_iters', 'losses' (the new ones), 'val_acc'}.
    on_divergence: 'warn' (roll back, warn, return) or 'raise' (TrainingDivergedError; one net
    only). Rollback goes to the last sync point whose loss was finite.
    """
    mode = _OneNet(trainee) if trainee.size is None else _Members(trainee)
    names = ("learning_rate", "learning_rate_decay", "reg")
    hyper = mode.hyperparameters(names, (learning_rate, learning_rate_decay, reg))
    num_iters, batch_size, sync_every = (
        validation.check(n, v)
        for n, v in (("num_iters", num_iters), ("batch_size", batch_size), ("sync_every", sync_every))
    )
    start = (
        trainee.state.iteration
        if start_iteration is None
        else validation.check("start_iteration", start_iteration)
    )
    _check_options(mode, on_divergence, progress)
    # DeviceModel on the device once, for the whole run. A full NaN scan of a 600 MB training set
    # costs ~0.1 s, so it runs only if the loss turns non-finite (_Loop._sync): a NaN row
    # that is sampled always shows up in the loss.
    X, y = trainee.place(X, y, "X", check_finite=False)
    X_val, y_val = trainee.place(X_val, y_val, "X_val")
    resources.check_fit(trainee, batch_size, X_val.shape[0])  # before any minibatch is drawn
    plan = _Plan(*hyper, num_iters, batch_size, start, sync_every, verbose, progress, on_divergence)
    with trainee.backend.quiet_overflow():
        return _Loop(trainee, mode, X, y, X_val, y_val, plan).run()


def _check_options(mode, on_divergence: str, progress) -> None:
    """fit's options that are no numbers, checked before any step: a progress that is not
    callable would fail only at the first sync, its work lost."""
    if on_divergence not in mode.on_divergence:
        raise ValueError(f"on_divergence must be {mode.on_divergence_text}, got {on_divergence!r}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable taking a dict, or None; got {progress!r}")


class _OneNet:
    """How a TwoLayerNet takes part in the loop: a population of one for the losses and counts
    on the host (a member axis of 1), but hyperparameters that stay Python floats (CS231n's
    arithmetic, bit for bit, and no array op per epoch); a run stops at divergence, and its
    histories are lists up to and including the first non-finite loss."""

    on_divergence, on_divergence_text = ("warn", "raise"), "'warn' or 'raise'"

    def __init__(self, trainee):
        self.trainee, self.size = trainee, 1

    def hyperparameters(self, names, values) -> tuple:
        return tuple(validation.check(n, v) for n, v in zip(names, values, strict=True))

    def on_device(self, value: float, active=None) -> float:
        return value  # active: a net that trains is never frozen

    def export(self, value: float) -> float:
        """A learning rate as the state and the snapshots keep it (a float is immutable)."""
        return value

    def describe(self, losses: np.ndarray) -> str:
        return "loss %f" % losses[0]

    def result(self, history: History, frozen: dict, lr, plan: _Plan, epochs_before) -> tuple:
        """(history, diverged, message). On divergence the state goes back to the rollback point;
        the history (CS231n's) holds every loss computed, up to and including the first
        non-finite one, and the accuracies of the epochs before it. With on_divergence='raise',
        meant for callers that checkpoint and resume, it ends at the rollback point instead, so
        a checkpoint's history and iteration agree."""
        if not frozen:
            return history.lists(), False, None
        bad, kept = frozen[0]
        state, start = self.trainee.state, plan.start_iteration
        state.iteration, state.learning_rate = start + kept.done, kept.learning_rate
        if plan.on_divergence == "raise":
            lists = history.lists(steps=kept.done, epochs=kept.epochs)
        else:
            lists = history.lists(steps=bad + 1, epochs=epochs_before(bad))
        return lists, True, _message(start, bad, kept.done, history.loss(bad, 0))


class _Members:
    """How a Population takes part in the loop: (K,) hyperparameters, sent to the device as
    arrays; a diverged member is frozen while the others go on; histories are (K, T) arrays."""

    on_divergence, on_divergence_text = ("warn",), "'warn' for a population (see its 'diverged')"

    def __init__(self, trainee):
        self.trainee, self.size = trainee, trainee.size

    def hyperparameters(self, names, values) -> tuple:
        return tuple(validation.per_member(n, v, self.size) for n, v in zip(names, values, strict=True))

    def on_device(self, values: np.ndarray, active: np.ndarray | None = None):
        """values (K,) on the device, sent once per epoch (a few bytes, no sync); a frozen
        member's (active 0) as 0."""
        values = values if active is None else values * active
        return self.trainee.backend.asarray(values, dtype=self.trainee.dtype)

    def export(self, values: np.ndarray) -> np.ndarray:
        """Learning rates (K,) as the state and the snapshots keep them: a copy."""
        return values.copy()

    def describe(self, losses: np.ndarray) -> str:
        return "loss min %f, median %f" % (np.nanmin(losses), np.nanmedian(losses))

    def result(self, history: History, frozen: dict, lr, plan: _Plan, epochs_before) -> tuple:
        """(history, diverged (K,), message); a frozen member keeps its rollback point's
        learning rate and NaN after it in the histories."""
        lr, diverged = lr.copy(), np.zeros(self.size, dtype=bool)
        for k, (_, kept) in frozen.items():
            lr[k], diverged[k] = kept.learning_rate[k], True
        self.trainee.state.learning_rate = lr
        arrays = history.arrays({k: (kept.done, kept.epochs) for k, (_, kept) in frozen.items()})
        if len(frozen) == self.size:
            return arrays, diverged, f"all {self.size} members diverged; try smaller learning rates"
        message = None
        if frozen:
            message = (
                f"{len(frozen)} of {self.size} members diverged (members {sorted(frozen)}); "
                "each was rolled back to its last finite state and frozen"
            )
        return arrays, diverged, message


def _message(start: int, bad: int, kept_done: int, loss) -> str:
    """What one net's divergence at step ``bad`` of this call, rolled back to ``kept_done``, says."""
    where = start + bad
    if kept_done >= bad:  # even the starting params give a non-finite loss
        return f"loss is not finite at iteration {where}, before any update could be undone; check the inputs' scale and std"
    return (
        f"training diverged at iteration {where} (loss {loss}); params rolled back to iteration "
        f"{start + kept_done}; try a smaller learning_rate"
    )


class _Loop:
    """One call of fit: the minibatch stream, the device-side steps and the sync points."""

    def __init__(self, trainee, mode, X, y, X_val, y_val, plan: _Plan):
        self.trainee, self.mode, self.plan = trainee, mode, plan
        self.X, self.X_val, self.y_val = X, X_val, y_val
        self.ctx = kernels.context(y, trainee.output_size, trainee.backend.xp)  # resolved once per loop
        self.params = trainee.live_params()
        self.lr = mode.export(plan.learning_rate)  # decayed per epoch; (K,) for a population
        self.reg = mode.on_device(plan.reg)
        self.batches = Minibatches(
            trainee.backend, X, y, trainee.state.rng, plan.num_iters, plan.batch_size, plan.start_iteration
        )
        self.history = History(mode.size, plan.batch_size, X_val.shape[0])
        self.divergence = Divergence(
            trainee.backend.xp, self.params, mode.export(self.lr), trainee.restore, mode.size
        )
        self.lr_device = mode.on_device(self.lr)

    def run(self) -> FitResult:
        p, step, count = self.plan, self.trainee.step, self.trainee.count_correct
        params, ctx, X_val, y_val = self.params, self.ctx, self.X_val, self.y_val
        losses, counts = [], []  # on the device until the next sync point
        for i, X_batch, y_batch, epoch_end in self.batches:
            losses.append(step(params, X_batch, y_batch, self.lr_device, self.reg, ctx))
            if epoch_end:
                # CS231n: accuracy of the current minibatch after its update, and on the val set.
                counts.append(count(params, X_batch, y_batch, ctx))
                counts.append(count(params, X_val, y_val, ctx))
                self.lr = self.lr * p.decay
                self.lr_device = self.mode.on_device(self.lr, self.divergence.active)
            done = i + 1
            if done % p.sync_every == 0 or done == p.num_iters:
                if not self._sync(done, losses, counts):
                    break
                losses, counts = [], []
        return self._finish()

    def _sync(self, done: int, pending_losses: list, pending_counts: list) -> bool:
        """Bring the losses and counts back, handle divergence, report; False: stop here."""
        backend, xp, p = self.trainee.backend, self.trainee.backend.xp, self.plan
        first_new, training = self.history.steps, self.divergence.active > 0
        counts = backend.to_numpy(xp.stack(pending_counts)) if pending_counts else None
        losses = self.history.add(backend.to_numpy(xp.stack(pending_losses)), counts)
        if p.verbose:  # a population's frozen members (zeros, lr 0) are left out
            _print_verbose(
                p.start_iteration + first_new, losses[:, training], p.start_iteration + p.num_iters, self.mode
            )
        if not np.isfinite(losses).all():
            self.divergence.check(first_new, losses, self.params)
            self.lr_device = self.mode.on_device(self.lr, self.divergence.active)
            if self.divergence.all_frozen:
                self.divergence.restore_frozen(self.params)
                validation.finite("X", self.X)  # bad input, not divergence: say so
                return False
        self.divergence.record(done, self.params, self.mode.export(self.lr), self.history.epochs)
        state = self.trainee.state
        state.iteration, state.learning_rate = p.start_iteration + done, self.mode.export(self.lr)
        if p.progress is not None:
            self._report(losses)
        return True

    def _report(self, losses: np.ndarray) -> None:
        """progress(...) with the new losses (T, K) of the members still training."""
        live, val = self.divergence.active > 0, self.history.last_val_accuracy()
        self.plan.progress(
            {
                "iteration": self.trainee.state.iteration,
                "num_iters": self.plan.start_iteration + self.plan.num_iters,
                "losses": _best_per_step(losses[:, live]).tolist(),
                "val_acc": None if val is None else float(np.max(val[live])),
            }
        )

    def _finish(self) -> FitResult:
        self.divergence.restore_frozen(self.params)  # frozen members end at their rollback point
        history, diverged, message = self.mode.result(
            self.history,
            self.divergence.frozen,
            self.lr,
            self.plan,
            self.batches.epochs_before,
        )
        if message is not None:
            if self.plan.on_divergence == "raise":
                raise TrainingDivergedError(message, history, self.trainee.state.iteration)
            warnings.warn(message, RuntimeWarning, stacklevel=_caller_stacklevel())
        return FitResult(history, diverged, message)


def _best_per_step(losses: np.ndarray) -> np.ndarray:
    """One loss per step (T,) for progress reports from (T, K): the population's best finite one
    (one net's own)."""
    finite = np.where(np.isfinite(losses), losses, np.inf)
    return np.min(finite, axis=1)


def _print_verbose(first_it: int, losses: np.ndarray, num_iters: int, mode) -> None:
    """CS231n's line every 100 iterations, from losses (T, K live members), until none is finite."""
    for k, row in enumerate(losses):
        if (first_it + k) % 100 == 0:
            print("iteration %d / %d: %s" % (first_it + k, num_iters, mode.describe(row)))
        if not np.isfinite(row).any():
            break


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _caller_stacklevel() -> int:
    """The stacklevel that points a warning at the first frame outside this package."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)).startswith(
        _PACKAGE_DIR
    ):
        frame, level = frame.f_back, level + 1
    return level
