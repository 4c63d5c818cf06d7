"""The history builder: host blocks -> CS231n's lists (one net) or (K, T) arrays (population)."""

import numpy as np
import pytest

from twolayer_xp.core.history import HISTORY_KEYS, History


def test_one_net_blocks_become_cs231n_lists():
    """Losses (T,) and alternating minibatch/validation counts (2E,) of one net; accuracies are
    counts over the batch size and the validation size; ``steps``/``epochs`` cut the lists."""
    history = History(1, batch_size=4, num_val=10)
    history.add(np.array([2.0, 1.5, 1.25]), np.array([1, 3]))
    history.add(np.array([1.0, np.inf]), None)
    history.add(np.array([0.5]), np.array([4, 10]))
    assert (history.steps, history.epochs) == (6, 2)
    whole = history.lists()
    assert whole == {
        "loss_history": [2.0, 1.5, 1.25, 1.0, np.inf, 0.5],
        "train_acc_history": [0.25, 1.0],
        "val_acc_history": [0.3, 1.0],
    }
    assert all(isinstance(v, float) for values in whole.values() for v in values)
    cut = history.lists(steps=5, epochs=1)
    assert cut["loss_history"] == [2.0, 1.5, 1.25, 1.0, np.inf] and cut["val_acc_history"] == [0.3]
    assert history.loss(4, 0) == np.inf and history.loss(5, 0) == 0.5
    with pytest.raises(IndexError):
        history.loss(6, 0)


def test_population_blocks_become_member_rows_with_nan_after_rollback():
    history = History(2, batch_size=2, num_val=4)
    history.add(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1, 2], [2, 4]]))
    history.add(np.array([[5.0, 6.0]]), np.array([[2, 0], [4, 1]]))
    arrays = history.arrays({1: (1, 1)})  # member 1 rolled back to 1 step, 1 epoch
    np.testing.assert_array_equal(arrays["loss_history"], [[1, 3, 5], [2, np.nan, np.nan]])
    np.testing.assert_array_equal(arrays["train_acc_history"], [[0.5, 1.0], [1.0, np.nan]])
    np.testing.assert_array_equal(arrays["val_acc_history"], [[0.5, 1.0], [1.0, np.nan]])
    np.testing.assert_array_equal(history.last_val_accuracy(), [1.0, 0.25])
    assert history.loss(2, 1) == 6.0


def test_an_empty_history():
    history = History(3, batch_size=2, num_val=4)
    assert history.last_val_accuracy() is None
    assert history.lists() == {key: [] for key in HISTORY_KEYS}
    assert all(a.shape == (3, 0) for a in history.arrays({}).values())


def test_the_latest_validation_accuracy_skips_blocks_without_an_epoch():
    history = History(1, batch_size=2, num_val=4)
    history.add(np.array([1.0]), np.array([2, 3]))
    history.add(np.array([1.0]), None)
    np.testing.assert_array_equal(history.last_val_accuracy(), [0.75])
