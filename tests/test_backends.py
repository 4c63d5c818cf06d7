"""One seed, one trajectory: every backend matches numpy, and outputs follow their inputs."""

import numpy as np
import pytest

from twolayer_xp import TwoLayerNet, to_numpy
from twolayer_xp.core.rng import HostRNG


def run(make_net, blobs, case_id, dtype, seed=3):
    X, y = blobs(n=240, d=12, c=4, seed=1)
    net = make_net(case_id, 12, 16, 4, std=1e-2, dtype=dtype, rng=seed)
    stats = net.train(
        X[:200], y[:200], X[200:], y[200:], learning_rate=0.5, reg=1e-3, num_iters=60, batch_size=32
    )
    return stats, net.predict(X), {k: to_numpy(v) for k, v in net.params.items()}


def test_float64_matches_numpy(case64, make_net, blobs):
    ref_stats, ref_pred, ref_params = run(make_net, blobs, "numpy", "float64")
    stats, pred, params = run(make_net, blobs, case64, "float64")
    np.testing.assert_allclose(stats["loss_history"], ref_stats["loss_history"], rtol=0, atol=1e-10)
    assert stats["val_acc_history"] == ref_stats["val_acc_history"]
    np.testing.assert_array_equal(pred, ref_pred)
    for name in ref_params:
        np.testing.assert_allclose(params[name], ref_params[name], atol=1e-10)


def test_float32_matches_numpy(case32, make_net, blobs):
    ref_stats, ref_pred, _ = run(make_net, blobs, "numpy", "float32")
    stats, pred, params = run(make_net, blobs, case32, "float32")
    assert all(p.dtype == np.float32 for p in params.values())
    np.testing.assert_allclose(stats["loss_history"], ref_stats["loss_history"], rtol=1e-4)
    np.testing.assert_array_equal(pred, ref_pred)


def test_learns(case, blobs, make_net):
    stats, pred, _ = run(make_net, blobs, case, "float64")
    _, y = blobs(n=240, d=12, c=4, seed=1)
    assert stats["loss_history"][-1] < 0.5 * stats["loss_history"][0]
    assert np.mean(pred == y) > 0.9


def test_outputs_follow_inputs(case, toy_data, make_net, backend_of):
    X, y = toy_data
    net = make_net(case, 4, 10, 3, std=0.1, rng=0)
    backend = backend_of(case)
    # numpy in -> numpy out, so CS231n's (net.predict(X) == y).mean() works on any device
    assert isinstance(net.predict(X), np.ndarray)
    assert isinstance(net.loss(X), np.ndarray)
    assert all(isinstance(g, np.ndarray) for g in net.loss(X, y)[1].values())
    # device in -> device out, on the model's device
    Xd, yd = backend.asarray(X, dtype="float64"), backend.asarray(y)
    assert backend.owns(net.predict(Xd)) and backend.owns(net.loss(Xd))
    loss, grads = net.loss(Xd, yd)
    assert isinstance(loss, float) and all(backend.owns(g) for g in grads.values())
    np.testing.assert_array_equal(to_numpy(net.predict(Xd)), net.predict(X))


def test_params_are_live_and_updated_in_place(case, toy_data, make_net):
    X, y = toy_data
    net = make_net(case, 4, 10, 3, std=0.1, rng=0)
    W1 = net.params["W1"]
    before = to_numpy(W1).copy()
    net.train(X, y, X, y, learning_rate=0.1, num_iters=5)
    assert net.params["W1"] is W1
    assert not np.array_equal(to_numpy(W1), before)


def test_callers_arrays_are_not_mutated(case, make_net, blobs):
    X, y = blobs(n=50, d=6, c=3)
    X_before, y_before = X.copy(), y.copy()
    net = make_net(case, 6, 8, 3, rng=0)
    net.train(X, y, X, y, learning_rate=0.1, num_iters=10, batch_size=10)
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(y, y_before)


def test_assigned_numpy_params_are_adopted(case, toy_data, make_net, backend_of):
    """A notebook that writes numpy weights into params keeps working on any backend."""
    X, _ = toy_data
    ref = make_net("numpy", 4, 10, 3, std=0.1, rng=5)
    net = make_net(case, 4, 10, 3, rng=0)
    for name, value in ref.params.items():
        net.params[name] = value.copy()
    np.testing.assert_allclose(net.loss(X), ref.loss(X), atol=1e-12)
    assert all(backend_of(case).owns(p) for p in net.params.values())


def test_seed_kinds_agree():
    """An int seed is a default_rng; a Generator or RandomState is used as given."""
    a = TwoLayerNet(3, 4, 2, rng=7).params["W1"]
    b = TwoLayerNet(3, 4, 2, rng=np.random.default_rng(7)).params["W1"]
    np.testing.assert_array_equal(a, b)
    c = TwoLayerNet(3, 4, 2, rng=np.random.RandomState(7)).params["W1"]
    np.random.seed(7)
    d = TwoLayerNet(3, 4, 2).params["W1"]
    np.testing.assert_array_equal(c, d)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("make", [lambda: None, lambda: 11, lambda: np.random.RandomState(11)])
def test_indices_drawn_at_once_equal_per_step_draws(make):
    """What lets a run fetch every minibatch in one transfer yet match CS231n's per-step choice."""
    np.random.seed(11)
    whole = HostRNG(make()).minibatch_indices(49000, 200 * 7)
    np.random.seed(11)
    rng = HostRNG(make())
    per_step = np.concatenate([rng.minibatch_indices(49000, 200) for _ in range(7)])
    np.testing.assert_array_equal(whole, per_step)


@pytest.mark.parametrize("make", [lambda: 4, lambda: None])
def test_rng_state_round_trip(make):
    import json

    rng = HostRNG(make())
    rng.minibatch_indices(10, 5)
    state = json.loads(json.dumps(rng.get_state()))
    expected = rng.minibatch_indices(100, 20)
    rng.minibatch_indices(100, 3)
    rng.set_state(state)
    np.testing.assert_array_equal(rng.minibatch_indices(100, 20), expected)


def test_every_public_method_computes_with_the_models_device_current(outside_activate, toy_data, tmp_path):
    """CuPy computes on its current GPU, and array-api-compat's CuPy creation functions ignore
    ``device=``: a model on cuda:1 made its biases on GPU 0 and computed across GPUs. A model now
    makes its device current (``Backend.activate``) in every public method. array-api-strict
    stands in (``outside_activate``)."""
    import array_api_strict as xs

    from twolayer_xp import Population

    X, y = toy_data
    device = xs.Device("device1")
    net = TwoLayerNet(4, 10, 3, std=1e-1, device=device, backend="array_api_strict", rng=0)
    net.loss(X), net.loss(X, y, reg=0.1), net.predict(X), net.accuracy(X, y), net.place(X, y)
    net.train(X, y, X, y, learning_rate=0.1, num_iters=10, batch_size=5)
    TwoLayerNet.load(net.save(tmp_path / "net.npz"), device=device, backend="array_api_strict").predict(X)
    pop = Population(4, 10, 3, size=3, device=device, backend="array_api_strict", rng=0)
    pop.train(X, y, X, y, learning_rate=[0.1, 0.2, 0.3], num_iters=10, batch_size=5)
    pop.predict(X), pop.accuracy(X, y), pop.best(), pop.subset([2, 0]).net(1).predict(X)
    Population.from_nets([net, net]).accuracy(X, y)
    assert outside_activate == []
    xs.zeros(1)  # and the guard itself sees a call outside
    assert outside_activate == [("zeros", "test_every_public_method_computes_with_the_models_device_current")]


def test_inputs_on_another_device_of_the_models_library_are_checked_on_its_device(monkeypatch, toy_data):
    """CuPy launches a check of y (its min, max) on the model's current GPU: a y on another GPU
    was read across GPUs, or failed where they cannot reach each other. An input of the model's
    library on another device is now moved first, then checked where the model computes."""
    import array_api_strict as xs
    from array_api_compat import device as device_of

    from twolayer_xp.core import validation

    seen = []
    for name in ("labels", "features"):
        check = getattr(validation, name)
        monkeypatch.setattr(
            validation,
            name,
            lambda n, x, *a, check=check, **k: (seen.append(device_of(x)), check(n, x, *a, **k))[1],
        )
    model_device, other = xs.Device("device1"), xs.Device("device2")
    X, y = toy_data
    net = TwoLayerNet(4, 10, 3, std=1e-1, device=model_device, backend="array_api_strict", rng=0)
    net.loss(xs.asarray(X, device=other), xs.asarray(y, device=other), reg=0.1)
    net.accuracy(xs.asarray(X, device=other), xs.asarray(y, device=other))
    assert seen and set(seen) == {model_device}


def test_the_benchmarks_step_computes_with_its_device_current(outside_activate):
    """bench.timing built the step's class column outside activate(): on cuda:1 it was made on
    GPU 0, and each step compared it with labels on GPU 1."""
    import array_api_strict as xs

    from twolayer_xp.backend import resolve
    from twolayer_xp.bench import timing

    problem = timing.make_problem(
        resolve(xs.Device("device1"), "array_api_strict"), timing.SHAPES["small"], "float64"
    )
    outside_activate.clear()  # the problem's arrays, placed with device= as the benchmark does
    timing.step_fn(problem, steps=2)()
    assert outside_activate == []
