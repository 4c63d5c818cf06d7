"""STAND-IN for issue #9's Population: K nets trained one after another, same API.

This file exists only so that ``twolayer-xp sweep`` (issue #10) can be built and tested before
the real, stacked implementation is merged; it is replaced wholesale by that one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backend import to_numpy
from .model import TwoLayerNet
from .training import TrainingDivergedError


def _per_member(name: str, value: Any, size: int) -> list[float]:
    values = np.broadcast_to(np.asarray(value, dtype=float), (size,)) if np.ndim(value) == 0 else value
    if len(values) != size:
        raise ValueError(f"{name} needs one value per member ({size}), got {len(values)}")
    return [float(v) for v in values]


class Population:
    """K independent TwoLayerNets of one shape (stand-in: a list, trained in a loop)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        size: int,
        std: Any = 1e-4,
        *,
        device: Any = "cpu",
        backend: Any = None,
        dtype: Any = "float64",
        rng: Any = None,
    ):
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError(f"size must be a positive int, got {size!r}")
        seed_rng = np.random.default_rng(rng if isinstance(rng, int) else None)
        seeds = seed_rng.integers(0, 2**31, size=size)
        self._nets = [
            TwoLayerNet(
                input_size,
                hidden_size,
                output_size,
                std=s,
                device=device,
                backend=backend,
                dtype=dtype,
                rng=int(seed),
            )
            for s, seed in zip(_per_member("std", std, size), seeds, strict=True)
        ]
        self._where = {"device": device, "backend": backend, "dtype": dtype}
        self._diverged = np.zeros(size, dtype=bool)
        self._final_val = np.full(size, -np.inf)

    def __len__(self) -> int:
        return len(self._nets)

    def train(
        self,
        X,
        y,
        X_val,
        y_val,
        learning_rate: Any = 1e-3,
        learning_rate_decay: Any = 0.95,
        reg: Any = 5e-6,
        num_iters: int = 100,
        batch_size: int = 200,
        verbose: bool = False,
    ) -> dict:
        K = len(self)
        lrs = _per_member("learning_rate", learning_rate, K)
        decays = _per_member("learning_rate_decay", learning_rate_decay, K)
        regs = _per_member("reg", reg, K)
        histories = []
        for k, net in enumerate(self._nets):
            net.metadata = {"learning_rate": lrs[k], "learning_rate_decay": decays[k], "reg": regs[k]}
            try:
                history = net.train(
                    X,
                    y,
                    X_val,
                    y_val,
                    learning_rate=lrs[k],
                    learning_rate_decay=decays[k],
                    reg=regs[k],
                    num_iters=num_iters,
                    batch_size=batch_size,
                    verbose=verbose,
                    on_divergence="raise",
                )
                self._diverged[k] = False
            except TrainingDivergedError as exc:
                history = exc.history
                self._diverged[k] = True
            histories.append(history)
            val = history["val_acc_history"]
            self._final_val[k] = val[-1] if val else -np.inf

        def stacked(key):
            longest = max(len(h[key]) for h in histories)
            out = np.full((K, longest), np.nan)
            for k, h in enumerate(histories):
                out[k, : len(h[key])] = h[key]
            return out

        return {
            "loss_history": stacked("loss_history"),
            "train_acc_history": stacked("train_acc_history"),
            "val_acc_history": stacked("val_acc_history"),
            "diverged": self._diverged.copy(),
        }

    def net(self, k: int) -> TwoLayerNet:
        source = self._nets[k]
        copy = TwoLayerNet(
            source.input_size,
            source.hidden_size,
            source.output_size,
            std=0.0,
            rng=0,
            **self._where,
        )
        copy.params = {n: source.backend.asarray(p, copy=True) for n, p in source.params.items()}
        copy.iteration, copy.learning_rate = source.iteration, source.learning_rate
        copy.metadata = dict(source.metadata)
        return copy

    def best(self) -> tuple[int, TwoLayerNet]:
        candidates = np.where(self._diverged, -np.inf, self._final_val)
        k = int(np.argmax(candidates))
        return k, self.net(k)

    def accuracy(self, X, y) -> np.ndarray:
        return np.array([net.accuracy(X, y) for net in self._nets])

    def predict(self, X):
        return np.stack([to_numpy(net.predict(X)) for net in self._nets])
