"""The minibatch SGD loop, CS231n semantics, written once for one net or a population of K.

Data goes to the device once; all minibatch indices of a run go in one transfer; losses and
accuracy counts stay on the device and come back every ``sync_every`` iterations (one sync),
which is also when progress is reported, verbose lines printed and divergence detected.

The loop trains any *trainee* (``TwoLayerNet`` or ``Population``) that provides: ``backend``,
``dtype``, ``state`` (a TrainingState), ``size`` (None for one net, K for a population),
``live_params()``, ``place(X, y, name)``, ``step(params, X, y, lr, reg, ctx)``,
``count_correct(params, X, y, ctx)`` and ``restore(params, source, member)``. With a population,
hyperparameters and results gain a trailing member axis, and divergence is handled per member.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np  # host side: histories and schedules

from twolayer_xp.core import kernels, resources, validation
from twolayer_xp.core.rng import HostRNG

# Indices drawn per transfer: a whole run up to 2**22 indices (32 MB of int64), else in blocks.
MAX_INDICES_PER_TRANSFER = 2**22
GATHER_BYTES = 4 << 20  # minibatch rows gathered per take
HISTORY_KEYS = ("loss_history", "train_acc_history", "val_acc_history")


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or inf. ``history`` covers the finite part; params were rolled back."""

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
    """fit's checked arguments: scalars for one net, (K,) host arrays for a population."""

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
    hyper = _hyperparameters(trainee.size, learning_rate, learning_rate_decay, reg)
    num_iters, batch_size, sync_every = (
        validation.check(n, v)
        for n, v in (("num_iters", num_iters), ("batch_size", batch_size), ("sync_every", sync_every))
    )
    start = (
        trainee.state.iteration
        if start_iteration is None
        else validation.check("start_iteration", start_iteration)
    )
    if on_divergence not in ("warn", "raise") or (trainee.size is not None and on_divergence == "raise"):
        allowed = (
            "'warn' or 'raise'" if trainee.size is None else "'warn' for a population (see its 'diverged')"
        )
        raise ValueError(f"on_divergence must be {allowed}, got {on_divergence!r}")
    # DeviceModel on the device once, for the whole run. A full NaN scan of a 600 MB training set
    # costs ~0.1 s, so it runs only if the loss turns non-finite (_Loop._diverged): a NaN row
    # that is sampled always shows up in the loss.
    X, y = trainee.place(X, y, "X", check_finite=False)
    X_val, y_val = trainee.place(X_val, y_val, "X_val")
    resources.check_fit(trainee, batch_size, X_val.shape[0])  # before any minibatch is drawn
    plan = _Plan(*hyper, num_iters, batch_size, start, sync_every, verbose, progress, on_divergence)
    with trainee.backend.quiet_overflow():
        return _Loop(trainee, X, y, X_val, y_val, plan).run()


def _hyperparameters(size, learning_rate, decay, reg):
    names = ("learning_rate", "learning_rate_decay", "reg")
    if size is None:
        return tuple(validation.check(n, v) for n, v in zip(names, (learning_rate, decay, reg), strict=True))
    return tuple(
        validation.per_member(n, v, size) for n, v in zip(names, (learning_rate, decay, reg), strict=True)
    )


class _Snapshot(NamedTuple):
    done: int  # iterations of this call completed
    params: dict
    learning_rate: Any
    epochs: int  # accuracy entries recorded so far


class _Loop:
    def __init__(self, trainee, X, y, X_val, y_val, plan: _Plan):
        self.t, self.plan = trainee, plan
        self.X, self.y, self.X_val, self.y_val = X, y, X_val, y_val
        self.xp = trainee.backend.xp
        self.ctx = kernels.context(y, trainee.output_size, self.xp)  # resolved once per loop
        self.params = trainee.live_params()
        self.num_train, self.num_val = X.shape[0], X_val.shape[0]
        self.lr = plan.learning_rate if trainee.size is None else plan.learning_rate.copy()
        # Frozen (diverged) members train on as zeros with learning rate 0, so their arithmetic
        # stays finite and cheap (inf/NaN math is slow); their rollback state returns at the end.
        self.active = None if trainee.size is None else np.ones(trainee.size)
        self.lr_device = self._lr_on_device()
        self.reg = (
            plan.reg if trainee.size is None else trainee.backend.asarray(plan.reg, dtype=trainee.dtype)
        )
        self.losses, self.counts = [], []  # host blocks, concatenated at the end
        # The last two sync points' params: one of them produced the last finite loss.
        self.snapshots = deque([_Snapshot(0, self._copy(), self._lr_now(), 0)], maxlen=2)
        self.frozen = {}  # population member -> (first bad loss index, _Snapshot it was rolled back to)

    def run(self) -> FitResult:
        p, xp, B = self.plan, self.xp, self.plan.batch_size
        iterations_per_epoch = max(self.num_train / B, 1)  # float, as in CS231n
        block = max(1, min(p.num_iters, MAX_INDICES_PER_TRANSFER // B))
        # Rows are gathered a few MiB at a time (one take, then a view per step): a gather per
        # step costs more than the step itself at small shapes.
        row_bytes = self.X.shape[1] * xp.finfo(self.X.dtype).bits // 8
        chunk = max(1, min(block, GATHER_BYTES // (row_bytes * B)))
        step, count, params, ctx = self.t.step, self.t.count_correct, self.params, self.ctx
        pending_losses, pending_counts = [], []
        for i in range(p.num_iters):
            j = i % block
            if j == 0:  # a block's minibatch indices, drawn on the host, sent in one transfer
                n = min(block, p.num_iters - i)
                indices = self.t.backend.asarray(self.t.state.rng.minibatch_indices(self.num_train, n * B))
            if j % chunk == 0:
                rows = indices[j * B : min(j + chunk, n) * B]
                X_chunk, y_chunk = xp.take(self.X, rows, axis=0), xp.take(self.y, rows, axis=0)
            o = (j % chunk) * B
            X_batch, y_batch = X_chunk[o : o + B, ...], y_chunk[o : o + B]
            pending_losses.append(step(params, X_batch, y_batch, self.lr_device, self.reg, ctx))
            if (p.start_iteration + i) % iterations_per_epoch == 0:
                # CS231n: accuracy of the current minibatch after its update, and on the val set.
                pending_counts.append(count(params, X_batch, y_batch, ctx))
                pending_counts.append(count(params, self.X_val, self.y_val, ctx))
                self.lr = self.lr * p.decay
                self.lr_device = self._lr_on_device()
            done = i + 1
            if done % p.sync_every == 0 or done == p.num_iters:
                result = self._sync(done, pending_losses, pending_counts)
                pending_losses, pending_counts = [], []
                if result is not None:
                    return result
        return self._finish(None)

    # -- sync points -------------------------------------------------------------------------

    def _sync(self, done, pending_losses, pending_counts):
        backend, xp, p = self.t.backend, self.xp, self.plan
        first_new = sum(block.shape[0] for block in self.losses)
        losses = backend.to_numpy(xp.stack(pending_losses))
        self.losses.append(losses)
        if pending_counts:
            self.counts.append(backend.to_numpy(xp.stack(pending_counts)))
        finite = np.isfinite(losses)
        if p.verbose:  # a population's frozen members (zeros, lr 0) are left out
            _print_verbose(p.start_iteration + first_new, self._live(losses), p.start_iteration + p.num_iters)
        if not finite.all():
            result = self._diverged(first_new, finite)
            if result is not None:
                return result
        self.snapshots.append(_Snapshot(done, self._copy(), self._lr_now(), self._epochs()))
        self.t.state.iteration, self.t.state.learning_rate = p.start_iteration + done, self._lr_now()
        if p.progress is not None:
            counts = np.concatenate(self.counts) if self.counts else None
            val = None if counts is None else _best_over_members(self._live(counts[1::2][-1])) / self.num_val
            p.progress(
                {
                    "iteration": self.t.state.iteration,
                    "num_iters": p.start_iteration + p.num_iters,
                    "losses": _best_per_step(self._live(losses)).tolist(),
                    "val_acc": val,
                }
            )
        return None

    def _diverged(self, first_new: int, finite: np.ndarray):
        """Roll back what diverged; a net stops here, a population goes on without the member."""
        if self.t.size is None:
            bad = first_new + int(np.argmin(finite))
            self.kept = self._rollback(bad, None)
            validation.finite("X", self.X)  # bad input, not divergence: say so
            return self._finish(self._message(bad, self.kept, "params"))
        for k in np.flatnonzero(~finite.all(axis=0)):
            if k not in self.frozen:
                bad = first_new + int(np.argmin(finite[:, k]))
                self.frozen[int(k)] = (bad, self._rollback(bad, int(k)))
                self.active[k] = 0.0
                self.t.restore(self.params, self._zeros(), int(k))  # its state is in self.frozen
        self.lr_device = self._lr_on_device()
        if len(self.frozen) == self.t.size:
            validation.finite("X", self.X)
            return self._finish(f"all {self.t.size} members diverged; try smaller learning rates")
        return None

    def _rollback(self, bad_index: int, member):
        """Snapshot k holds the params after k updates, the ones loss[k] was computed from: the
        first non-finite loss at ``bad_index`` condemns every snapshot with k >= bad_index."""
        kept = next((s for s in reversed(self.snapshots) if s.done < bad_index), self.snapshots[0])
        self.t.restore(self.params, kept.params, member)
        return kept

    def _restore_frozen(self):
        for member, (_, kept) in self.frozen.items():  # frozen members end at their rollback point
            self.t.restore(self.params, kept.params, member)

    def _live(self, values: np.ndarray) -> np.ndarray:
        """``values`` (..., K) of the members still training (all of one net's)."""
        return values if self.t.size is None else values[..., self.active > 0]

    def _zeros(self) -> dict:
        if not hasattr(self, "zeros"):
            self.zeros = {name: self.xp.zeros_like(p) for name, p in self.params.items()}
        return self.zeros

    def _finish(self, message: str | None) -> FitResult:
        p = self.plan
        losses = np.concatenate(self.losses) if self.losses else np.zeros((0,))
        counts = np.concatenate(self.counts) if self.counts else np.zeros((0,) + losses.shape[1:])
        train_acc, val_acc = counts[0::2] / p.batch_size, counts[1::2] / self.num_val
        if self.t.size is None:
            diverged = message is not None
            if diverged:
                kept = self.kept
                losses, train_acc, val_acc = (
                    losses[: kept.done],
                    train_acc[: kept.epochs],
                    val_acc[: kept.epochs],
                )
                self.t.state.iteration, self.t.state.learning_rate = (
                    p.start_iteration + kept.done,
                    kept.learning_rate,
                )
            history = dict(
                zip(HISTORY_KEYS, (losses.tolist(), train_acc.tolist(), val_acc.tolist()), strict=True)
            )
        else:
            self._restore_frozen()
            if self.frozen and self.t.state.learning_rate is None:  # diverged before any sync point
                self.t.state.learning_rate = self._lr_now()
            for k, (_, kept) in self.frozen.items():  # their learning rate is the rollback point's
                self.t.state.learning_rate[k] = kept.learning_rate[k]
            diverged = np.zeros(self.t.size, dtype=bool)
            losses, train_acc, val_acc = losses.T.copy(), train_acc.T.copy(), val_acc.T.copy()
            for k, (_, kept) in self.frozen.items():
                diverged[k] = True
                losses[k, kept.done :], train_acc[k, kept.epochs :], val_acc[k, kept.epochs :] = (
                    np.nan,
                    np.nan,
                    np.nan,
                )
            if self.frozen and message is None:
                message = f"{len(self.frozen)} of {self.t.size} members diverged (members {sorted(self.frozen)}); each was rolled back to its last finite state and frozen"
            history = dict(zip(HISTORY_KEYS, (losses, train_acc, val_acc), strict=True))
        if message is not None:
            if p.on_divergence == "raise":
                raise TrainingDivergedError(message, history, self.t.state.iteration)
            warnings.warn(message, RuntimeWarning, stacklevel=_caller_stacklevel())
        return FitResult(history, diverged, message)

    def _message(self, bad: int, kept: _Snapshot, what: str) -> str:
        where = self.plan.start_iteration + bad
        if kept.done >= bad:  # even the starting params give a non-finite loss
            return f"loss is not finite at iteration {where}, before any update could be undone; check the inputs' scale and std"
        loss = self.losses[-1].reshape(-1)[bad - sum(b.shape[0] for b in self.losses[:-1])]
        return (
            f"training diverged at iteration {where} (loss {loss}); {what} rolled back to iteration "
            f"{self.plan.start_iteration + kept.done}; try a smaller learning_rate"
        )

    # -- helpers -------------------------------------------------------------------------------

    def _copy(self) -> dict:
        return {name: self.xp.asarray(p, copy=True) for name, p in self.params.items()}

    def _lr_now(self):
        return self.lr if self.t.size is None else self.lr.copy()

    def _lr_on_device(self):
        # One net: a Python float (bit-identical to CS231n's arithmetic). A population: (K,) on
        # the device, sent once per epoch (a few bytes, no sync).
        if self.t.size is None:
            return self.lr
        return self.t.backend.asarray(self.lr * self.active, dtype=self.t.dtype)

    def _epochs(self) -> int:
        return sum(block.shape[0] for block in self.counts) // 2


def _best_per_step(losses: np.ndarray) -> np.ndarray:
    """One loss per step for progress reports: the net's, or the population's best finite one."""
    if losses.ndim == 1:
        return losses
    finite = np.where(np.isfinite(losses), losses, np.inf)
    return np.min(finite, axis=1)


def _best_over_members(counts) -> float:
    return float(np.max(counts)) if np.ndim(counts) else float(counts)


def _print_verbose(first_it: int, losses: np.ndarray, num_iters: int) -> None:
    for k, loss in enumerate(losses):
        if (first_it + k) % 100 == 0:
            if np.ndim(loss) == 0:
                print("iteration %d / %d: loss %f" % (first_it + k, num_iters, loss))
            else:
                print(
                    "iteration %d / %d: loss min %f, median %f"
                    % (first_it + k, num_iters, np.nanmin(loss), np.nanmedian(loss))
                )
        if not np.all(np.isfinite(loss)) and np.ndim(loss) == 0:
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
