"""The divergence tracker: rollback points, per-member freezing, restoration at the end."""

import array_api_compat.numpy
import numpy as np

from twolayer_xp.core.divergence import Divergence

K = 3


def restore(params, source, member):
    """A population's restore, in miniature: member k is column k of W."""
    params["W"][:, member] = source["W"][:, member]


def tracker(params):
    return Divergence(array_api_compat.numpy, params, np.array([0.1, 0.2, 0.3]), restore, K)


def test_rollback_goes_to_the_last_sync_point_before_the_first_bad_loss():
    """Snapshot k holds the params after k updates, those loss[k] came from: a first
    non-finite loss at step b keeps the newest snapshot with k < b."""
    params = {"W": np.zeros((2, K))}
    div = tracker(params)
    for done in (10, 20):
        params["W"][...] = done
        div.record(done, params, np.array([done, done, done]) * 1.0, epochs=done // 10)
    losses = np.ones((10, K))  # steps 20 .. 29
    losses[5, 0], losses[0, 1] = np.inf, np.nan  # member 0 bad at step 25, member 1 at step 20
    assert div.check(20, losses, params) == [0, 1]
    (bad0, kept0), (bad1, kept1) = div.frozen[0], div.frozen[1]
    assert (bad0, kept0.done, kept0.epochs, kept0.learning_rate[0]) == (25, 20, 2, 20.0)
    assert (bad1, kept1.done, kept1.epochs, kept1.learning_rate[1]) == (20, 10, 1, 10.0)
    assert div.active.tolist() == [0.0, 0.0, 1.0] and not div.all_frozen


def test_frozen_members_train_as_zeros_and_come_back_at_the_end():
    params = {"W": np.full((2, K), 5.0)}
    div = tracker(params)  # the starting state: all 5
    params["W"][...] = 7.0
    losses = np.ones((4, K))
    losses[2, 1] = np.nan
    div.check(0, losses, params)
    np.testing.assert_array_equal(params["W"], [[7, 0, 7], [7, 0, 7]])  # the others untouched
    losses[:, 1] = 2.3  # zeros with lr 0 give finite losses from now on: still frozen, once
    losses[3, 1] = np.nan
    assert div.check(4, losses, params) == [] and div.frozen[1][0] == 2
    div.restore_frozen(params)
    np.testing.assert_array_equal(params["W"], [[7, 5, 7], [7, 5, 7]])


def test_when_every_member_diverged_nothing_is_zeroed():
    """The run stops: no member trains on, so the params wait for restore_frozen as they are."""
    params = {"W": np.full((2, K), 5.0)}
    div = tracker(params)
    params["W"][...] = 7.0
    assert div.check(0, np.full((3, K), np.nan), params) == [0, 1, 2]
    assert div.all_frozen and div.zeros is None
    np.testing.assert_array_equal(params["W"], 7.0)
    div.restore_frozen(params)
    np.testing.assert_array_equal(params["W"], 5.0)


def test_snapshots_are_copies():
    params = {"W": np.zeros((2, K))}
    div = tracker(params)
    params["W"] += 1.0
    div.check(0, np.full((1, K), np.nan), params)
    div.restore_frozen(params)
    np.testing.assert_array_equal(params["W"], 0.0)
