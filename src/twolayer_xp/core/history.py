"""A training run's histories, assembled on the host from the blocks each sync point brings back.

Per step a loss, per epoch two accuracy counts (the minibatch's and the validation set's), each
with a member axis of K (one net: K = 1). The result is CS231n's lists for one net, or (K, T)
arrays for a population, with NaN after a frozen member's rollback point.
"""

from __future__ import annotations

import numpy as np  # host side: histories

HISTORY_KEYS = ("loss_history", "train_acc_history", "val_acc_history")


class History:
    """Losses (T, K) and accuracy counts (2E, K: minibatch, validation, alternating) of K members
    trained on minibatches of ``batch_size`` rows and validated on ``num_val`` rows."""

    def __init__(self, size: int, batch_size: int, num_val: int):
        self.size, self.batch_size, self.num_val = size, batch_size, num_val
        self.losses: list[np.ndarray] = []  # host blocks (T_b, K), concatenated at the end
        self.counts: list[np.ndarray] = []  # host blocks (2 E_b, K)
        self.steps = 0  # losses recorded
        self.epochs = 0  # accuracy entries recorded

    def add(self, losses: np.ndarray, counts: np.ndarray | None) -> np.ndarray:
        """Append a sync point's losses (T[, K]) and counts (2E[, K]); returns the losses (T, K)."""
        losses = np.reshape(losses, (-1, self.size))
        self.losses.append(losses)
        self.steps += losses.shape[0]
        if counts is not None:
            self.counts.append(np.reshape(counts, (-1, self.size)))
            self.epochs += self.counts[-1].shape[0] // 2
        return losses

    def loss(self, index: int, member: int):
        """The loss of step ``index`` of member ``member``."""
        for block in self.losses:
            if index < block.shape[0]:
                return block[index, member]
            index -= block.shape[0]
        raise IndexError(index)

    def last_val_accuracy(self) -> np.ndarray | None:
        """The latest validation accuracies (K,), None before the first epoch."""
        block = next((b for b in reversed(self.counts) if b.shape[0]), None)
        return None if block is None else block[-1] / self.num_val

    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """losses (T, K), minibatch accuracies (E, K), validation accuracies (E, K)."""
        losses = np.concatenate(self.losses) if self.losses else np.zeros((0, self.size))
        counts = np.concatenate(self.counts) if self.counts else np.zeros((0, self.size))
        return losses, counts[0::2] / self.batch_size, counts[1::2] / self.num_val

    def lists(self, member: int = 0, steps: int | None = None, epochs: int | None = None) -> dict:
        """Member ``member``'s histories as lists of floats (CS231n's), cut to the first
        ``steps`` losses and ``epochs`` accuracies (None: all)."""
        columns = self.columns()
        cuts = (steps, epochs, epochs)
        return {
            key: c[:cut, member].tolist() for key, c, cut in zip(HISTORY_KEYS, columns, cuts, strict=True)
        }

    def arrays(self, ends: dict[int, tuple[int, int]]) -> dict:
        """(K, T) and (K, E) arrays; member k in ``ends`` -> (steps, epochs) is NaN after them."""
        losses, train_acc, val_acc = (c.T.copy() for c in self.columns())
        for k, (steps, epochs) in ends.items():
            losses[k, steps:], train_acc[k, epochs:], val_acc[k, epochs:] = np.nan, np.nan, np.nan
        return dict(zip(HISTORY_KEYS, (losses, train_acc, val_acc), strict=True))
