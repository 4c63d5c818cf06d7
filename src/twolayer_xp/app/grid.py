"""Grid search, as in CS231n's "tune your hyperparameters" cell: the grid trained as one Population."""

from __future__ import annotations

import itertools
import warnings
from typing import Any

from twolayer_xp.core.population import Population
from twolayer_xp.io.datasets import Dataset


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
    """Train one net per (learning_rate, reg), all of them together as one Population; returns
    one dict per pair with train/val accuracy, whether training diverged, and the trained net."""
    if not learning_rates or not regs:
        raise ValueError("learning_rates and regs must each hold at least one value")
    grid = list(itertools.product(learning_rates, regs))
    pop = Population(
        dataset.num_features, hidden_size, dataset.num_classes, size=len(grid), std=std,
        device=device, backend=backend, dtype=dtype, rng=seed,
    )  # fmt: skip
    # The data goes to the device once; the whole grid trains as one population.
    X, y = pop.place(dataset.X_train, dataset.y_train, "X_train")
    X_val, y_val = pop.place(dataset.X_val, dataset.y_val, "X_val")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "diverged" is in each result
        stats = pop.train(
            X, y, X_val, y_val, learning_rate=[lr for lr, _ in grid], reg=[reg for _, reg in grid],
            learning_rate_decay=learning_rate_decay, num_iters=num_iters, batch_size=batch_size,
        )  # fmt: skip
    train_acc, val_acc = pop.accuracy(X, y), pop.accuracy(X_val, y_val)
    return [
        {
            "learning_rate": lr,
            "reg": reg,
            "train_acc": float(train_acc[k]),
            "val_acc": float(val_acc[k]),
            "diverged": bool(stats["diverged"][k]),
            "net": pop.net(k),
        }
        for k, (lr, reg) in enumerate(grid)
    ]


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
