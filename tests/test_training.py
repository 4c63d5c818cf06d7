"""The training loop: CS231n schedule, syncs only at chosen points, divergence, resumption."""

import numpy as np
import pytest

from twolayer_xp import TrainingDivergedError, TwoLayerNet, to_numpy
from twolayer_xp.backend import Backend
from twolayer_xp.core.rng import HostRNG


def test_epoch_schedule_and_learning_rate_decay(blobs):
    """Accuracy and decay every max(N/B, 1) iterations, counted as CS231n's float modulo does."""
    X, y = blobs(n=100, d=5, c=3)
    net = TwoLayerNet(5, 8, 3, rng=0)
    stats = net.train(
        X, y, X[:30], y[:30], learning_rate=1.0, learning_rate_decay=0.5, num_iters=41, batch_size=10
    )
    # iterations_per_epoch = 10.0: records at it = 0, 10, 20, 30, 40
    assert len(stats["train_acc_history"]) == len(stats["val_acc_history"]) == 5
    assert net.state.learning_rate == 1.0 * 0.5**5
    assert all(v in {k / 10 for k in range(11)} for v in stats["train_acc_history"])
    assert all(v in {k / 30 for k in range(31)} for v in stats["val_acc_history"])


def test_host_syncs_only_at_sync_points(case, monkeypatch, make_net, blobs):
    """No per-step round-trip: 250 steps with sync_every=100 bring data back 3 times."""
    calls = {"to_numpy": 0, "indices": 0}
    real_to_numpy, real_indices = Backend.to_numpy, HostRNG.minibatch_indices

    def counting_to_numpy(self, x):
        calls["to_numpy"] += 1
        return real_to_numpy(self, x)

    def counting_indices(self, n, size):
        calls["indices"] += 1
        return real_indices(self, n, size)

    monkeypatch.setattr(Backend, "to_numpy", counting_to_numpy)
    monkeypatch.setattr(HostRNG, "minibatch_indices", counting_indices)
    X, y = blobs(n=1000, d=6, c=3)
    net = make_net(case, 6, 8, 3, rng=0)
    syncs = []
    stats = net.train(
        X,
        y,
        X[:50],
        y[:50],
        learning_rate=0.1,
        num_iters=250,
        batch_size=100,
        sync_every=100,
        progress=syncs.append,
    )
    assert [s["iteration"] for s in syncs] == [100, 200, 250]
    assert [len(s["losses"]) for s in syncs] == [100, 100, 50]
    assert calls["indices"] == 1  # every minibatch of the run in one draw and one transfer
    assert calls["to_numpy"] == 2 * 3  # losses + accuracy counts, per sync
    assert len(stats["loss_history"]) == 250 and len(stats["val_acc_history"]) == 25


def test_verbose_prints_cs231n_lines(capsys, blobs):
    X, y = blobs(n=50, d=4, c=3)
    TwoLayerNet(4, 5, 3, rng=0).train(X, y, X, y, num_iters=250, batch_size=10, verbose=True, sync_every=64)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "iteration 0 / 250",
        "iteration 100 / 250",
        "iteration 200 / 250",
    ]
    assert all(line.split("loss ")[1].replace(".", "").isdigit() for line in lines)


def diverging_run(make_net, blobs, case, on_divergence, sync_every=25):
    X, y = blobs(n=200, d=10, c=4)
    net = make_net(case, 10, 20, 4, std=1.0, rng=0)
    stats = None
    kwargs = dict(
        learning_rate=1e4, learning_rate_decay=1.0, num_iters=300, batch_size=20, sync_every=sync_every
    )
    if on_divergence == "raise":
        with pytest.raises(TrainingDivergedError) as excinfo:
            net.train(X * 100, y, X, y, on_divergence="raise", **kwargs)
        assert excinfo.value.iteration == net.iteration
        return net, excinfo.value.history, str(excinfo.value)
    with pytest.warns(RuntimeWarning, match="diverged") as record:
        stats = net.train(X * 100, y, X, y, **kwargs)
    return net, stats, str(record[0].message)


@pytest.mark.parametrize(
    "sync_every", [25, 5]
)  # diverges at iteration 24: before the first sync, after a few
@pytest.mark.parametrize("on_divergence", ["warn", "raise"])
def test_divergence_stops_and_rolls_back_to_finite_params(case, on_divergence, sync_every, blobs, make_net):
    """The params (and the iteration) go back to the last finite sync point. 'warn' returns
    CS231n's history: up to and including the first non-finite loss, the accuracies of the epochs
    before it; 'raise' (for runs that checkpoint) carries the history of the rolled-back state."""
    net, stats, message = diverging_run(make_net, blobs, case, on_divergence, sync_every)
    assert "try a smaller learning_rate" in message
    bad = 24  # this problem's loss overflows at iteration 24
    assert f"diverged at iteration {bad} " in message
    assert net.iteration == (bad - 1) // sync_every * sync_every  # the last sync point before it
    losses = stats["loss_history"]
    if on_divergence == "raise":
        assert len(losses) == net.iteration and np.all(np.isfinite(losses))
        assert len(stats["val_acc_history"]) == -(-net.iteration // 10)  # epochs of 10 iterations
    else:
        assert len(losses) == bad + 1 and not np.isfinite(losses[-1]) and np.all(np.isfinite(losses[:-1]))
        assert len(stats["train_acc_history"]) == len(stats["val_acc_history"]) == -(-bad // 10)
    for value in net.params.values():
        assert np.all(np.isfinite(to_numpy(value)))
    X, _ = blobs(n=200, d=10, c=4)
    assert np.all(np.isfinite(net.loss(X)))


def test_divergence_before_the_first_sync_point_returns_the_nan_history():
    """A CS231n tuning loop reads stats['loss_history'][-1]: the history is never empty once a
    step ran (it was, when the loss turned inf before the first sync point)."""
    rs = np.random.RandomState(5)
    X, y = rs.randn(300, 3072) * 60, rs.randint(0, 10, 300)
    np.random.seed(1)
    net = TwoLayerNet(3072, 50, 10)
    start = {name: np.array(p) for name, p in net.params.items()}
    with pytest.warns(RuntimeWarning, match="diverged at iteration 75 .* rolled back to iteration 0"):
        stats = net.train(X, y, X[:50], y[:50], learning_rate=5.0, reg=0.5, num_iters=200)
    assert len(stats["loss_history"]) == 76 and stats["loss_history"][-1] == np.inf
    assert len(stats["val_acc_history"]) == 25  # epochs of 1.5 iterations: 0, 3, ..., 72
    assert net.iteration == 0 and net.state.learning_rate == 5.0
    for name, p in net.params.items():
        np.testing.assert_array_equal(p, start[name])


def test_resumed_run_equals_uninterrupted_run(blobs):
    """Two halves, the second starting where the first stopped, give the same params."""
    X, y = blobs(n=300, d=8, c=3, seed=4)
    common = dict(reg=1e-3, batch_size=40, learning_rate_decay=0.9)
    whole = TwoLayerNet(8, 12, 3, std=0.1, rng=21)
    whole_stats = whole.train(X, y, X[:60], y[:60], learning_rate=0.2, num_iters=100, **common)

    split = TwoLayerNet(8, 12, 3, std=0.1, rng=21)
    first = split.train(X, y, X[:60], y[:60], learning_rate=0.2, num_iters=37, **common)
    second = split.train(
        X,
        y,
        X[:60],
        y[:60],
        learning_rate=split.state.learning_rate,
        num_iters=63,
        start_iteration=split.iteration,
        **common,
    )
    for name in whole.params:
        np.testing.assert_array_equal(split.params[name], whole.params[name])
    assert first["loss_history"] + second["loss_history"] == whole_stats["loss_history"]
    assert first["val_acc_history"] + second["val_acc_history"] == whole_stats["val_acc_history"]
    assert (
        split.state.learning_rate == whole.state.learning_rate and split.iteration == whole.iteration == 100
    )


def test_indices_come_in_blocks_when_a_run_is_huge(monkeypatch, blobs):
    """Past MAX_INDICES_PER_TRANSFER the indices come in blocks; the trajectory is unchanged."""
    from twolayer_xp.core import minibatches

    X, y = blobs(n=120, d=5, c=3)
    ref = TwoLayerNet(5, 6, 3, rng=3)
    ref_stats = ref.train(X, y, X, y, num_iters=30, batch_size=16)
    monkeypatch.setattr(minibatches, "MAX_INDICES_PER_TRANSFER", 16 * 7)
    net = TwoLayerNet(5, 6, 3, rng=3)
    stats = net.train(X, y, X, y, num_iters=30, batch_size=16)
    assert stats == ref_stats
    np.testing.assert_array_equal(net.params["W1"], ref.params["W1"])


def test_nan_in_training_features_is_reported_as_bad_input(case, make_net, blobs):
    """The training set is not scanned up front (0.1 s for CIFAR-10); a NaN row that is sampled
    turns the loss non-finite, and the loop then names the input instead of blaming the rate."""
    X, y = blobs(n=100, d=5, c=3)
    X[17, 2] = np.nan
    net = make_net(case, 5, 6, 3, rng=0)
    with pytest.raises(ValueError, match="X contains 1 non-finite value"):
        net.train(X, y, X[50:70], y[50:70], num_iters=200, batch_size=50, sync_every=50)
    assert all(np.all(np.isfinite(to_numpy(p))) for p in net.params.values())


def test_nan_in_validation_features_fails_before_training(case, make_net, blobs):
    X, y = blobs(n=100, d=5, c=3)
    X_val = X[:20].copy()
    X_val[0, 0] = np.inf
    net = make_net(case, 5, 6, 3, rng=0)
    with pytest.raises(ValueError, match="X_val contains 1 non-finite"):
        net.train(X, y, X_val, y[:20], num_iters=5)
    assert net.iteration == 0
