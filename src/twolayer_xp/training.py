"""The minibatch SGD loop, CS231n semantics, with no host round-trip per step.

Data goes to the device once; all minibatch indices of a run go in one transfer; losses and
accuracy counts stay on the device and come back every ``sync_every`` iterations (one sync),
which is also when progress is reported, verbose lines printed and divergence detected.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from . import kernels, validation

# Indices drawn per transfer: a whole run up to 2**22 indices (32 MB of int64), else in blocks.
MAX_INDICES_PER_TRANSFER = 2**22


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or inf. ``history`` covers the finite part; params were rolled back."""

    def __init__(self, message: str, history: dict, iteration: int):
        super().__init__(message)
        self.history = history
        self.iteration = iteration


def fit(
    net,
    X: Any,
    y: Any,
    X_val: Any,
    y_val: Any,
    *,
    learning_rate: float,
    learning_rate_decay: float,
    reg: float,
    num_iters: int,
    batch_size: int,
    verbose: bool = False,
    start_iteration: int = 0,
    progress: Callable[[dict], None] | None = None,
    on_divergence: str = "warn",
    sync_every: int = 100,
) -> dict:
    """Train ``net`` in place; returns {'loss_history', 'train_acc_history', 'val_acc_history'}.

    start_iteration: iterations already done (a resumed run), so epochs and learning-rate decay
    fall where they would have in one uninterrupted run. progress: called at each sync with
    {'iteration', 'num_iters', 'losses' (the new ones), 'val_acc' (latest or None)}.
    on_divergence: 'warn' (stop, roll back, warn and return) or 'raise' (TrainingDivergedError).
    On divergence the params roll back to the last sync point whose loss was finite.
    """
    learning_rate = validation.real("learning_rate", learning_rate, positive=True)
    learning_rate_decay = validation.real("learning_rate_decay", learning_rate_decay, positive=True)
    reg = validation.real("reg", reg, nonnegative=True)
    num_iters = validation.positive_int("num_iters", num_iters)
    batch_size = validation.positive_int("batch_size", batch_size)
    sync_every = validation.positive_int("sync_every", sync_every)
    if isinstance(start_iteration, bool) or not isinstance(start_iteration, int) or start_iteration < 0:
        raise ValueError(f"start_iteration must be an int >= 0, got {start_iteration!r}")
    if on_divergence not in ("warn", "raise"):
        raise ValueError(f"on_divergence must be 'warn' or 'raise', got {on_divergence!r}")

    # Placed on the device once, for the whole run. A full NaN scan of a 600 MB training set
    # costs ~0.1 s, so it runs only if the loss turns non-finite (see _diverged): a NaN row
    # that is sampled always shows up in the loss.
    X, _ = net.features(X, "X", check_finite=False)
    y = net.labels(y, X.shape[0], "y")
    X_val, _ = net.features(X_val, "X_val")
    y_val = net.labels(y_val, X_val.shape[0], "y_val")
    plan = _Plan(
        learning_rate,
        learning_rate_decay,
        reg,
        num_iters,
        batch_size,
        start_iteration,
        sync_every,
        verbose,
        progress,
        on_divergence,
    )
    with net.backend.quiet_overflow():
        return _loop(net, X, y, X_val, y_val, plan)


class _Plan(NamedTuple):
    """fit's checked arguments."""

    learning_rate: float
    decay: float
    reg: float
    num_iters: int
    batch_size: int
    start_iteration: int
    sync_every: int
    verbose: bool
    progress: Callable[[dict], None] | None
    on_divergence: str


def _loop(net, X, y, X_val, y_val, plan: _Plan) -> dict:
    lr, reg, num_iters, batch_size = plan.learning_rate, plan.reg, plan.num_iters, plan.batch_size
    start_iteration, sync_every = plan.start_iteration, plan.sync_every
    backend, xp = net.backend, net.backend.xp
    num_train, num_val = X.shape[0], X_val.shape[0]
    iterations_per_epoch = max(num_train / batch_size, 1)  # float, as in CS231n
    params = net._live_params()
    history = {"loss_history": [], "train_acc_history": [], "val_acc_history": []}
    # The last two sync points' params: one of them produced the last finite loss.
    snapshots = deque([_Snapshot(0, _copy(xp, params), lr, 0)], maxlen=2)
    pending_losses, pending_counts = [], []
    block = max(1, min(num_iters, MAX_INDICES_PER_TRANSFER // batch_size))

    for i in range(num_iters):
        if i % block == 0:  # a block's minibatch indices, drawn on the host, sent in one transfer
            n = min(block, num_iters - i)
            indices = backend.asarray(net.rng.minibatch_indices(num_train, n * batch_size))
        offset = (i % block) * batch_size
        batch = indices[offset : offset + batch_size]
        X_batch = xp.take(X, batch, axis=0)
        y_batch = xp.take(y, batch, axis=0)
        pending_losses.append(kernels.sgd_step(params, X_batch, y_batch, lr, reg))

        it = start_iteration + i
        if it % iterations_per_epoch == 0:
            # CS231n: accuracy of the current minibatch after its update, and on the val set.
            pending_counts.append(kernels.count_correct(params, X_batch, y_batch))
            pending_counts.append(kernels.count_correct(params, X_val, y_val))
            lr *= plan.decay

        done = i + 1
        if done % sync_every == 0 or done == num_iters:
            first_new = len(history["loss_history"])
            losses = backend.to_numpy(xp.stack(pending_losses)).tolist()
            counts = backend.to_numpy(xp.stack(pending_counts)).tolist() if pending_counts else []
            pending_losses, pending_counts = [], []
            history["loss_history"].extend(losses)
            history["train_acc_history"].extend(c / batch_size for c in counts[0::2])
            history["val_acc_history"].extend(c / num_val for c in counts[1::2])
            bad = next((k for k, v in enumerate(losses) if not math.isfinite(v)), None)
            if plan.verbose:
                _print_verbose(start_iteration + first_new, losses, bad, start_iteration + num_iters)
            if bad is not None:
                return _diverged(
                    net, X, history, snapshots, first_new + bad, start_iteration, plan.on_divergence
                )
            snapshots.append(_Snapshot(done, _copy(xp, params), lr, len(history["val_acc_history"])))
            net.iteration, net.learning_rate = start_iteration + done, lr
            if plan.progress is not None:
                val = history["val_acc_history"][-1] if history["val_acc_history"] else None
                total = start_iteration + num_iters
                plan.progress(
                    {"iteration": net.iteration, "num_iters": total, "losses": losses, "val_acc": val}
                )
    return history


def _copy(xp, params: dict) -> dict:
    return {name: xp.asarray(p, copy=True) for name, p in params.items()}


def _print_verbose(first_it: int, losses: list, bad: int | None, num_iters: int) -> None:
    for k, loss in enumerate(losses[: None if bad is None else bad + 1]):
        if (first_it + k) % 100 == 0:
            print("iteration %d / %d: loss %f" % (first_it + k, num_iters, loss))


def _diverged(net, X, history, snapshots, bad_index, start_iteration, on_divergence):
    """Roll params back to the newest snapshot whose loss was finite, then warn or raise.

    Snapshot k holds the params after k updates, which are the params loss[k] was computed
    from; the first non-finite loss at ``bad_index`` condemns every snapshot with k >= bad_index.
    """
    while len(snapshots) > 1 and snapshots[-1].done >= bad_index:
        snapshots.pop()
    kept = snapshots[-1]
    for name, p in kept.params.items():
        net.params[name] = p
    net.iteration, net.learning_rate = start_iteration + kept.done, kept.learning_rate
    validation.finite("X", X)  # bad input, not divergence: say so
    truncated = {
        "loss_history": history["loss_history"][: kept.done],
        "train_acc_history": history["train_acc_history"][: kept.epochs],
        "val_acc_history": history["val_acc_history"][: kept.epochs],
    }
    where = start_iteration + bad_index
    message = (
        f"training diverged at iteration {where} (loss {history['loss_history'][bad_index]}); "
        f"params rolled back to iteration {net.iteration}; try a smaller learning_rate"
    )
    if kept.done >= bad_index:  # even the starting params give a non-finite loss
        message = f"loss is not finite at iteration {where}, before any update could be undone; check the inputs' scale and std"
    if on_divergence == "raise":
        raise TrainingDivergedError(message, truncated, where)
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    return truncated


class _Snapshot(NamedTuple):
    done: int  # iterations of this call completed
    params: dict
    learning_rate: float
    epochs: int  # accuracy entries recorded so far
