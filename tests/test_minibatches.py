"""The minibatch stream: CS231n's draws in CS231n's order, whatever the block and chunk sizes."""

import numpy as np
import pytest

from twolayer_xp import to_numpy
from twolayer_xp.core import minibatches
from twolayer_xp.core.minibatches import Minibatches
from twolayer_xp.core.rng import HostRNG


def stream(backend, X, y, seed, num_iters, batch_size, start=0):
    Xd, yd = backend.asarray(X), backend.asarray(y)
    return Minibatches(backend, Xd, yd, HostRNG(seed), num_iters, batch_size, start)


@pytest.mark.parametrize("max_indices, gather_bytes", [(None, None), (8 * 3, None), (8 * 5, 8 * 8 * 2)])
def test_batches_are_cs231n_choices_in_order(case, backend_of, monkeypatch, max_indices, gather_bytes):
    """Step i's rows are CS231n's i-th np.random.choice(N, B), for blocks of any size (here 3 or
    5 steps per draw, 2 steps per gather) and on every backend."""
    if max_indices is not None:
        monkeypatch.setattr(minibatches, "MAX_INDICES_PER_TRANSFER", max_indices)
    if gather_bytes is not None:
        monkeypatch.setattr(minibatches, "GATHER_BYTES", gather_bytes)
    X = np.arange(50 * 8, dtype=np.float64).reshape(50, 8)
    y = np.arange(50)
    batches = stream(backend_of(case), X, y, np.random.RandomState(3), num_iters=11, batch_size=8)
    reference = np.random.RandomState(3)
    steps = list(batches)
    assert [i for i, *_ in steps] == list(range(11))
    for _, X_batch, y_batch, _ in steps:
        rows = reference.choice(50, 8)
        np.testing.assert_array_equal(to_numpy(X_batch), X[rows])
        np.testing.assert_array_equal(to_numpy(y_batch), y[rows])


def test_a_split_stream_draws_what_one_stream_draws(backend_of):
    """37 steps, then 63 from iteration 37 on the same generator, equal 100 steps in one go."""
    X, y = np.random.default_rng(0).standard_normal((40, 3)), np.arange(40)
    backend = backend_of("numpy")
    whole = [(i, b[1], b[3]) for i, b in enumerate(stream(backend, X, y, 9, 100, 7))]
    rng = HostRNG(9)
    first = Minibatches(backend, X, y, rng, 37, 7, 0)
    second = Minibatches(backend, X, y, rng, 63, 7, 37)
    split = [(i, b[1], b[3]) for i, b in enumerate([*first, *second])]
    assert len(split) == len(whole) == 100
    for (_, a, epoch_a), (_, b, epoch_b) in zip(whole, split, strict=True):
        np.testing.assert_array_equal(a, b)
        assert epoch_a == epoch_b


def test_a_stream_stopped_early_draws_no_further_block(monkeypatch, backend_of):
    monkeypatch.setattr(minibatches, "MAX_INDICES_PER_TRANSFER", 4 * 5)  # 5 steps per draw
    X, y = np.zeros((30, 2)), np.zeros(30, dtype=np.int64)
    rng = np.random.RandomState(1)
    for i, *_ in stream(backend_of("numpy"), X, y, rng, num_iters=100, batch_size=4):
        if i == 6:  # in the second block
            break
    reference = np.random.RandomState(1)
    reference.choice(30, 4 * 5 * 2)
    assert rng.randint(1 << 30) == reference.randint(1 << 30)


@pytest.mark.parametrize(
    "N, B, start, expected",
    [
        (100, 10, 0, [0, 10, 20]),  # every N / B iterations
        (100, 10, 7, [3, 13, 23]),  # counted from the run's first iteration, not this call's
        (5, 200, 0, list(range(25))),  # N < B: max(N / B, 1) = 1, an epoch per iteration
        (100, 30, 0, [0]),  # CS231n's float modulo: 100 / 30 is never hit again exactly
    ],
)
def test_epoch_ends_follow_cs231n_float_modulo(backend_of, N, B, start, expected):
    X, y = np.zeros((N, 2)), np.zeros(N, dtype=np.int64)
    batches = stream(backend_of("numpy"), X, y, 0, 25, B, start)
    assert [i for i, _, _, epoch_end in batches if epoch_end] == expected
    assert [batches.is_epoch_end(i) for i in range(25)] == [i in expected for i in range(25)]
    assert batches.epochs_before(expected[-1]) == len(expected) - 1
    assert batches.epochs_before(25) == len(expected)
