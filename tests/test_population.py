"""Population: K nets trained together equal K nets trained alone, member by member."""

import copy
import warnings

import numpy as np
import pytest

from twolayer_xp import Population, TwoLayerNet, to_numpy
from twolayer_xp.core.kernels import PARAMS


def grid_problem(blobs):
    X, y = blobs(n=260, d=12, c=4, seed=2)
    return X[:200], y[:200], X[200:], y[200:]


LRS = [0.01, 0.1, 0.5, 1.0, 3e4]  # the last one diverges
REGS = [0.0, 1e-3, 1e-2, 0.1, 0.0]
DECAYS = [0.95, 0.9, 1.0, 0.8, 0.95]


def train_quietly(model, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return model.train(*args, **kwargs)


def test_members_equal_nets_trained_alone(case64, make_net, blobs, assert_close, backend_of):
    """The contract: from_nets, seed, train; member k == nets[k] trained alone after the same
    seed with member k's hyperparameters (params to 1e-10, same histories), on every backend."""
    X, y, X_val, y_val = grid_problem(blobs)
    np.random.seed(0)
    nets = [make_net(case64, 12, 16, 4, std=0.3) for _ in LRS]
    pop = Population.from_nets(nets)
    options = dict(num_iters=130, batch_size=32, sync_every=25)
    np.random.seed(7)
    stats = train_quietly(
        pop, X, y, X_val, y_val, learning_rate=LRS, reg=REGS, learning_rate_decay=DECAYS, **options
    )
    assert stats["loss_history"].shape == (5, 130) and stats["val_acc_history"].shape == (5, 6)
    assert stats["diverged"].tolist() == [False, False, False, False, True]
    backend = backend_of(case64)
    for k, net in enumerate(nets):
        alone = copy.deepcopy(net)
        np.random.seed(7)
        lr, reg, decay = LRS[k], REGS[k], DECAYS[k]
        single = train_quietly(
            alone, X, y, X_val, y_val, learning_rate=lr, reg=reg, learning_rate_decay=decay, **options
        )
        member = pop.net(k)
        # the diverged member was rolled back to weights of ~1e120: compare it relatively
        tol = dict(rtol=1e-12, atol=0) if stats["diverged"][k] else dict(rtol=0, atol=1e-10)
        for name in alone.params:
            assert_close(member.params[name], alone.params[name], backend=backend, dtype="float64", **tol)
        # Both trained up to the rollback point (all 130 iterations if it did not diverge); the
        # net alone also reports its losses up to the first non-finite one, as CS231n does.
        T, E = alone.iteration, int(np.sum(np.isfinite(stats["val_acc_history"][k])))
        assert T == len(single["loss_history"]) or stats["diverged"][k]
        np.testing.assert_allclose(stats["loss_history"][k, :T], single["loss_history"][:T], rtol=1e-12)
        assert stats["val_acc_history"][k, :E].tolist() == single["val_acc_history"][:E]
        assert stats["train_acc_history"][k, :E].tolist() == single["train_acc_history"][:E]
        assert E == len(single["val_acc_history"]) or stats["diverged"][k]
        assert np.isnan(stats["loss_history"][k, T:]).all()  # a frozen member's later entries
        assert member.metadata["hyperparameters"]["learning_rate"] == lr


def test_initialization_draws_like_nets_built_in_a_row():
    np.random.seed(3)
    nets = [TwoLayerNet(5, 6, 3, std=s) for s in (0.1, 0.2, 0.3)]
    np.random.seed(3)
    pop = Population(5, 6, 3, size=3, std=[0.1, 0.2, 0.3])
    for k, net in enumerate(nets):
        for name in net.params:
            np.testing.assert_array_equal(pop.net(k).params[name], net.params[name])


def test_a_diverged_member_leaves_the_others_untouched(blobs):
    """Training the population with and without a diverging member gives the same others."""
    X, y, X_val, y_val = grid_problem(blobs)
    nets = [TwoLayerNet(12, 16, 4, std=0.3, rng=k) for k in range(3)]
    runs = []
    for members, lrs in (([0, 2], [0.1, 0.5]), ([0, 1, 2], [0.1, 3e4, 0.5])):
        pop = Population.from_nets([nets[k] for k in members], rng=1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stats = pop.train(
                X, y, X_val, y_val, learning_rate=lrs, num_iters=80, batch_size=32, sync_every=20
            )
        assert len(caught) == (len(members) == 3)
        runs.append((pop, stats))
    (a, sa), (b, sb) = runs
    assert sb["diverged"].tolist() == [False, True, False] and not sa["diverged"].any()
    for ka, kb in ((0, 0), (1, 2)):
        for name in ("W1", "b1", "W2", "b2"):
            np.testing.assert_array_equal(a.net(ka).params[name], b.net(kb).params[name])
    assert np.all(np.isfinite(to_numpy(b.params["W1"])))  # the diverged member was rolled back
    assert b.best()[0] in (0, 2)


def test_one_summary_warning_and_all_diverged(blobs):
    X, y, X_val, y_val = grid_problem(blobs)
    pop = Population(12, 16, 4, size=3, std=0.3, rng=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stats = pop.train(X, y, X_val, y_val, learning_rate=[1e5, 2e5, 3e5], num_iters=60, batch_size=32)
    assert len(caught) == 1 and "all 3 members diverged" in str(caught[0].message)
    assert caught[0].filename == __file__  # points at the caller's line
    assert stats["diverged"].all()
    with pytest.raises(ValueError, match="every member diverged"):
        pop.best()


def test_outputs_follow_inputs_and_accuracy(case, backend_of, blobs, assert_close):
    backend = backend_of(case)
    X, y, X_val, y_val = grid_problem(blobs)
    pop = Population(12, 16, 4, size=3, std=0.3, rng=0, backend=backend.name, device=backend.device)
    pop.train(X, y, X_val, y_val, learning_rate=[0.05, 0.2, 0.5], num_iters=60, batch_size=32)
    host = pop.predict(X_val)
    assert isinstance(host, np.ndarray) and host.shape == (3, 60)
    Xd = backend.asarray(X_val, dtype="float64")
    on_device = pop.predict(Xd)
    assert backend.owns(on_device) and tuple(on_device.shape) == (3, 60)
    np.testing.assert_array_equal(to_numpy(on_device), host)
    acc = pop.accuracy(X_val, y_val)
    assert isinstance(acc, np.ndarray) and acc.shape == (3,)
    np.testing.assert_allclose(acc, (host == y_val).mean(axis=1))
    k, best = pop.best()
    assert best.backend == backend and k == int(np.argmax(pop.val_accuracy))
    assert_close(
        best.params["W1"],
        to_numpy(pop.params["W1"])[:, k * 16 : (k + 1) * 16],
        backend=backend,
        dtype="float64",
    )
    assert len(pop) == 3 and pop.params["W1"].shape == (12, 48) and pop.params["W2"].shape == (3, 16, 4)


@pytest.mark.parametrize(
    "kwargs,error,words",
    [
        (dict(learning_rate=[0.1, 0.2]), ValueError, "learning_rate must be one value or 3"),
        (dict(learning_rate=[0.1, -1, 0.2]), ValueError, "learning_rate must be > 0"),
        (dict(reg=[0.0, float("nan"), 0.0]), ValueError, "reg must be finite"),
        (dict(learning_rate_decay="fast"), TypeError, "learning_rate_decay"),
        (dict(batch_size=0), ValueError, "batch_size must be a positive int"),
    ],
)
def test_bad_hyperparameters_name_the_argument(blobs, kwargs, error, words):
    X, y, X_val, y_val = grid_problem(blobs)
    pop = Population(12, 4, 4, size=3, rng=0)
    with pytest.raises(error, match=words):
        pop.train(X, y, X_val, y_val, **kwargs)


def test_from_nets_checks_its_inputs():
    with pytest.raises(TypeError, match="non-empty list of TwoLayerNet"):
        Population.from_nets([])
    with pytest.raises(ValueError, match=r"nets\[1\] differs"):
        Population.from_nets([TwoLayerNet(3, 4, 2), TwoLayerNet(3, 5, 2)])
    with pytest.raises(ValueError, match="std must be one value or 2"):
        Population(3, 4, 2, size=2, std=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="member must be an int"):
        Population(3, 4, 2, size=2).net(2)


def test_a_frozen_member_is_left_out_of_progress_and_keeps_its_rollback_state(blobs):
    X, y, X_val, y_val = grid_problem(blobs)
    pop = Population(12, 16, 4, size=2, std=0.3, rng=0)
    reports = []
    with pytest.warns(RuntimeWarning, match="1 of 2 members diverged"):
        stats = pop.train(
            X, y, X_val, y_val, learning_rate=[1e-4, 1e6], num_iters=60, batch_size=32, sync_every=10,
            progress=reports.append,
        )  # fmt: skip
    assert stats["diverged"].tolist() == [False, True]
    # the frozen member trains on as zeros (loss log 4); progress shows the live member only
    np.testing.assert_allclose(reports[-1]["losses"], stats["loss_history"][0, -10:])
    assert reports[-1]["val_acc"] == stats["val_acc_history"][0, -1]
    kept = int(np.sum(np.isfinite(stats["loss_history"][1])))
    frozen, live = pop.net(1), pop.net(0)
    assert frozen.state.iteration == kept < 60 and live.state.iteration == 60
    decays = sum(1 for it in range(kept) if it % (200 / 32) == 0)  # epochs before its rollback point
    assert frozen.state.learning_rate == pytest.approx(1e6 * 0.95**decays)


def test_a_call_that_records_no_epoch_keeps_the_last_validation_accuracy(blobs):
    X, y, X_val, y_val = grid_problem(blobs)
    pop = Population(12, 16, 4, size=2, std=0.3, rng=0)
    pop.train(X, y, X_val, y_val, learning_rate=[0.1, 0.2], num_iters=7, batch_size=32)
    before = pop.val_accuracy.copy()
    pop.train(X, y, X_val, y_val, learning_rate=[0.1, 0.2], num_iters=3, batch_size=32)  # iterations 7-9
    np.testing.assert_array_equal(pop.val_accuracy, before)
    assert pop.best()[0] in (0, 1)
    with pytest.raises(ValueError, match="'warn' for a population"):
        pop.train(X, y, X_val, y_val, num_iters=2, on_divergence="raise")


SUBSET_LRS, SUBSET_REGS, SUBSET_DECAYS = (
    [0.05, 0.1, 0.2, 0.3, 0.5, 0.8],
    [0.0, 1e-3, 1e-2, 1e-4, 0.0, 1e-3],
    [0.9, 1.0, 0.95, 0.8, 0.99, 0.9],
)


def train_on(pop, X, y, X_val, y_val, num_iters, **hyper):
    """Continue ``pop`` where it stopped: its decayed learning rates, the rest as given."""
    return train_quietly(
        pop, X, y, X_val, y_val, learning_rate=pop.state.learning_rate, num_iters=num_iters, batch_size=32,
        sync_every=25, **hyper,
    )  # fmt: skip


def test_a_subset_trains_on_exactly_as_its_members_would_have(case64, make_net, blobs, backend_of):
    """Compaction: the survivors of a population, trained on alone, end bit-identical to the
    same members of the population trained on whole (epochs and decays crossed on the way)."""
    X, y, X_val, y_val = grid_problem(blobs)
    nets = [make_net(case64, 12, 16, 4, std=0.3, rng=k) for k in range(6)]
    pop = Population.from_nets(nets, rng=5)
    hyper = dict(learning_rate_decay=SUBSET_DECAYS, reg=SUBSET_REGS)
    train_quietly(pop, X, y, X_val, y_val, learning_rate=SUBSET_LRS, num_iters=40, batch_size=32, **hyper)
    keep = [4, 0, 2]  # out of order, decays all < 1
    sub = pop.subset(keep)
    assert len(sub) == 3 and sub.state.iteration == pop.state.iteration == 40
    train_on(pop, X, y, X_val, y_val, 60, **hyper)
    sub_hyper = {name: [v[k] for k in keep] for name, v in hyper.items()}
    train_on(sub, X, y, X_val, y_val, 60, **sub_hyper)
    backend = backend_of(case64)
    for j, k in enumerate(keep):
        member, whole = sub.net(j), pop.net(k)
        for name in whole.params:
            assert backend.owns(member.params[name])
            np.testing.assert_array_equal(to_numpy(member.params[name]), to_numpy(whole.params[name]))
        assert member.state.iteration == whole.state.iteration == 100
        assert member.state.learning_rate == whole.state.learning_rate < SUBSET_LRS[k]  # decayed
        assert member.metadata["hyperparameters"] == {**whole.metadata["hyperparameters"]}
    np.testing.assert_array_equal(sub.accuracy(X_val, y_val), pop.accuracy(X_val, y_val)[keep])


def test_training_in_segments_equals_training_straight(blobs):
    """A sweep's per-member budgets: train to b1, drop who is done, continue to b2. The members
    stopped at b1 equal a run to b1, the others a run straight to b2 (one minibatch stream)."""
    X, y, X_val, y_val = grid_problem(blobs)
    hyper = dict(learning_rate_decay=SUBSET_DECAYS, reg=SUBSET_REGS)

    def fresh():
        return Population(12, 16, 4, size=6, std=0.3, rng=3)

    def straight(num_iters):
        pop = fresh()
        train_quietly(
            pop, X, y, X_val, y_val, learning_rate=SUBSET_LRS, num_iters=num_iters, batch_size=32, **hyper
        )
        return pop

    segmented = fresh()
    train_quietly(
        segmented, X, y, X_val, y_val, learning_rate=SUBSET_LRS, num_iters=37, batch_size=32, **hyper
    )
    at_37 = segmented.subset([0, 3])
    survivors = segmented.subset([1, 2, 4, 5])
    train_on(
        survivors, X, y, X_val, y_val, 90 - 37, **{n: [v[k] for k in (1, 2, 4, 5)] for n, v in hyper.items()}
    )
    for pop, members, reference in ((at_37, (0, 3), straight(37)), (survivors, (1, 2, 4, 5), straight(90))):
        for j, k in enumerate(members):
            for name in PARAMS:
                np.testing.assert_array_equal(pop.net(j).params[name], reference.net(k).params[name])
            assert pop.net(j).state.iteration == reference.net(k).state.iteration


def test_subset_checks_its_members(blobs):
    pop = Population(12, 16, 4, size=3, std=0.3, rng=0)
    for members, words in (([], "at least one"), ([1, 1], "distinct"), ([3], r"\[0, 2\]"), ([True], "int")):
        with pytest.raises(ValueError, match=words):
            pop.subset(members)
    with pytest.raises(TypeError, match="members must be a sequence of member indices, got 1"):
        pop.subset(1)
    sub = pop.subset(k for k in (2,))  # any iterable, read once
    assert sub.hyperparameters["std"].tolist() == [0.3] and sub.state.learning_rate is None
    with pytest.raises(ValueError, match="call train"):
        sub.best()
