"""The minibatch stream of a training run: CS231n's sampling, fetched the way a device likes it.

Indices are drawn on the host (the run's ``HostRNG``) a large block at a time and sent in one
transfer; rows are gathered a few MiB at a time (one take, then a view per step), because a
gather per step costs more than the step itself at small shapes. The draws concatenate to the
same stream whatever the block size, so a resumed run equals an uninterrupted one, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# Indices drawn per transfer: a whole run up to 2**22 indices (32 MB of int64), else in blocks.
MAX_INDICES_PER_TRANSFER = 2**22
GATHER_BYTES = 4 << 20  # minibatch rows gathered per take


class Minibatches:
    """``num_iters`` minibatches of ``batch_size`` rows of (X (N, D), y (N,)), sampled with
    replacement, for iterations ``start_iteration``, ``start_iteration + 1``, ... of a run.

    Iterating yields (i, X_batch (B, D), y_batch (B,), epoch_end) for i in range(num_iters);
    epoch_end says whether CS231n records accuracy and decays the learning rate after step i:
    ``(start_iteration + i) % max(N / B, 1) == 0``, a float modulo as in CS231n.
    """

    def __init__(self, backend, X, y, rng, num_iters: int, batch_size: int, start_iteration: int = 0):
        self.backend, self.X, self.y, self.rng = backend, X, y, rng
        self.num_iters, self.batch_size, self.start_iteration = num_iters, batch_size, start_iteration
        self.iterations_per_epoch = max(X.shape[0] / batch_size, 1)  # float, as in CS231n
        self.block = max(1, min(num_iters, MAX_INDICES_PER_TRANSFER // batch_size))  # steps per draw
        row_bytes = X.shape[1] * backend.xp.finfo(X.dtype).bits // 8
        self.chunk = max(1, min(self.block, GATHER_BYTES // (row_bytes * batch_size)))  # steps per take

    def is_epoch_end(self, i: int) -> bool:
        return (self.start_iteration + i) % self.iterations_per_epoch == 0

    def epochs_before(self, i: int) -> int:
        """How many epoch ends fall on steps 0 .. i-1."""
        return sum(1 for j in range(i) if self.is_epoch_end(j))

    def __iter__(self) -> Iterator[tuple[int, Any, Any, bool]]:
        B, take = self.batch_size, self.backend.xp.take
        ipe, start = self.iterations_per_epoch, self.start_iteration
        for first in range(0, self.num_iters, self.block):
            # Drawn only when the block is reached: a run that stops early draws no more.
            n = min(self.block, self.num_iters - first)
            indices = self.backend.asarray(self.rng.minibatch_indices(self.X.shape[0], n * B))
            for j in range(0, n, self.chunk):
                rows = indices[j * B : min(j + self.chunk, n) * B]
                X_chunk, y_chunk = take(self.X, rows, axis=0), take(self.y, rows, axis=0)
                for o in range(0, min(self.chunk, n - j) * B, B):
                    i = first + j + o // B
                    yield i, X_chunk[o : o + B, ...], y_chunk[o : o + B], (start + i) % ipe == 0
