"""Divergence of a training run: which members' losses turned non-finite, and the sync-point
states they go back to.

A run has K members (one net: K = 1). At each sync point the loop shows the tracker the losses
since the last one; a member whose loss turned NaN or inf is rolled back to the last sync point
whose params gave finite losses, and frozen: while others train on, it trains as zeros with
learning rate 0 (finite and cheap: inf/NaN arithmetic is slow), and its rollback state returns
at the end (``restore_frozen``).
"""

from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple

import numpy as np  # host side: losses and per-member flags


class Snapshot(NamedTuple):
    done: int  # iterations of this call completed
    params: dict  # a copy of the params after ``done`` updates
    learning_rate: Any  # after the decays so far: (K,) for a population, a float for one net
    epochs: int  # accuracy entries recorded so far


class Divergence:
    """The last two sync points' states and the frozen members of K.

    params: the live params (their first state is the first snapshot); learning_rate: theirs
    (kept as given: pass a copy); restore(params, source, member): copies member ``member``'s
    values from ``source``; size: K.
    """

    def __init__(self, xp, params: dict, learning_rate: Any, restore, size: int):
        self.xp, self.restore, self.size = xp, restore, size
        # The last two sync points: one of them produced the last finite loss.
        self.snapshots = deque([Snapshot(0, self._copy(params), learning_rate, 0)], maxlen=2)
        self.frozen: dict[int, tuple[int, Snapshot]] = {}  # member -> (first bad loss index, rollback)
        self.active = np.ones(self.size)  # 1 for a member still training, 0 once frozen
        self.zeros: dict | None = None  # what frozen members train as; made on the first freeze

    @property
    def all_frozen(self) -> bool:
        return len(self.frozen) == self.size

    def record(self, done: int, params: dict, learning_rate: Any, epochs: int) -> None:
        """Keep the state after ``done`` iterations, whose losses were all finite (learning_rate
        kept as given: pass a copy)."""
        self.snapshots.append(Snapshot(done, self._copy(params), learning_rate, epochs))

    def check(self, first_new: int, losses: np.ndarray, params: dict) -> list[int]:
        """Freeze the members whose ``losses`` (T, K), steps first_new .. first_new + T - 1,
        are not all finite; returns them. If others train on, the frozen ones become zeros."""
        finite = np.isfinite(losses)
        new = [int(k) for k in np.flatnonzero(~finite.all(axis=0)) if int(k) not in self.frozen]
        for k in new:
            bad = first_new + int(np.argmin(finite[:, k]))
            self.frozen[k] = (bad, self._rollback_point(bad))
            self.active[k] = 0.0
        if not self.all_frozen:
            for k in new:
                self.restore(params, self._zeros(params), k)
        return new

    def restore_frozen(self, params: dict) -> None:
        """Put every frozen member back at its rollback point."""
        for member, (_, kept) in self.frozen.items():
            self.restore(params, kept.params, member)

    def _rollback_point(self, bad_index: int) -> Snapshot:
        """Snapshot k holds the params after k updates, the ones loss[k] was computed from: the
        first non-finite loss at ``bad_index`` condemns every snapshot with k >= bad_index."""
        return next((s for s in reversed(self.snapshots) if s.done < bad_index), self.snapshots[0])

    def _copy(self, params: dict) -> dict:
        return {name: self.xp.asarray(p, copy=True) for name, p in params.items()}

    def _zeros(self, params: dict) -> dict[str, Any]:
        if self.zeros is None:
            self.zeros = {name: self.xp.zeros_like(p) for name, p in params.items()}
        return self.zeros
