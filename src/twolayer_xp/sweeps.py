"""Hyperparameter search, as in CS231n's "tune your hyperparameters" cell."""

from __future__ import annotations

import itertools
import warnings
from typing import Any

from . import training
from .backend import resolve
from .data import Dataset
from .model import TwoLayerNet


def grid_search(
    dataset: Dataset,
    learning_rates: list[float],
    regs: list[float],
    *,
    hidden_size: int,
    num_iters: int,
    batch_size: int = 200,
    learning_rate_decay: float = 0.95,
    std: float = 1e-4,
    device: Any = "cpu",
    backend: Any = None,
    dtype: str = "float32",
    seed: int = 0,
) -> list[dict]:
    """Train one net per (learning_rate, reg); returns one dict per pair with train/val
    accuracy, whether training diverged, and the trained net. The data goes to the device once."""
    if not learning_rates or not regs:
        raise ValueError("learning_rates and regs must each hold at least one value")
    place = resolve(device, backend)  # the nets below share these device arrays
    X, y = place.asarray(dataset.X_train, dtype=dtype), place.asarray(dataset.y_train)
    X_val, y_val = place.asarray(dataset.X_val, dtype=dtype), place.asarray(dataset.y_val)
    results = []
    for lr, reg in itertools.product(learning_rates, regs):
        net = TwoLayerNet(
            dataset.num_features,
            hidden_size,
            dataset.num_classes,
            std=std,
            device=device,
            backend=backend,
            dtype=dtype,
            rng=seed,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the result says it; the table shows it
            fitted = training.fit(
                net,
                X,
                y,
                X_val,
                y_val,
                learning_rate=lr,
                learning_rate_decay=learning_rate_decay,
                reg=reg,
                num_iters=num_iters,
                batch_size=batch_size,
            )
        results.append(
            {
                "learning_rate": lr,
                "reg": reg,
                "train_acc": net.accuracy(X, y),
                "val_acc": net.accuracy(X_val, y_val),
                "diverged": fitted.diverged,
                "net": net,
            }
        )
    return results


def best(results: list[dict]) -> dict:
    """The result with the highest validation accuracy."""
    return max(results, key=lambda r: r["val_acc"])


def table(results: list[dict]) -> str:
    """The results as a markdown table, best first."""
    lines = ["| learning rate | reg | train acc | val acc | note |", "|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: -r["val_acc"]):
        note = "diverged (rolled back)" if r["diverged"] else ""
        lines.append(
            f"| {r['learning_rate']:.1e} | {r['reg']:.1e} | {r['train_acc']:.3f} | {r['val_acc']:.3f} | {note} |"
        )
    return "\n".join(lines)
