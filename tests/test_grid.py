"""The notebook's hyperparameter search."""

import numpy as np
import pytest

from twolayer_xp.app import grid
from twolayer_xp.io.datasets import Dataset


def small_dataset(blobs):
    X, y = blobs(n=300, d=8, c=3, seed=3)
    X = X.astype(np.float32)
    return Dataset(
        "blobs",
        X[:200],
        y[:200],
        X[200:250],
        y[200:250],
        X[250:],
        y[250:],
        mean_image=np.zeros(8, np.float32),
        image_shape=(2, 4),
        class_names=["a", "b", "c"],
    )


def test_grid_search_ranks_and_flags_divergence(blobs):
    results = grid.grid_search(
        small_dataset(blobs),
        [1e-3, 0.3, 1e9],
        [0.0, 1e-2],
        hidden_size=16,
        num_iters=150,
        batch_size=32,
        std=0.1,
    )
    assert len(results) == 6
    by_lr = {lr: [r for r in results if r["learning_rate"] == lr] for lr in (1e-3, 0.3, 1e9)}
    assert all(r["diverged"] for r in by_lr[1e9]) and not any(r["diverged"] for r in by_lr[0.3])
    best = grid.best(results)
    assert best["learning_rate"] == 0.3 and best["val_acc"] > 0.9
    assert best["val_acc"] == max(r["val_acc"] for r in results)
    table = grid.table(results)
    assert table.splitlines()[2].startswith("| 3.0e-01") and "diverged" in table
    assert all(np.isfinite(r["train_acc"]) for r in results)


def test_grid_search_needs_values(blobs):
    with pytest.raises(ValueError, match="at least one value"):
        grid.grid_search(small_dataset(blobs), [], [0.0], hidden_size=4, num_iters=1)
