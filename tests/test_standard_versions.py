"""The kernels use nothing newer than the 2023.12 array API standard (the oldest we support), and run under every later one strict knows."""

import array_api_strict as xs
import numpy as np
import pytest

from twolayer_xp import eval_numerical_gradient, rel_error
from twolayer_xp.core import kernels


@pytest.fixture(params=["2023.12", "2024.12", "2025.12"])
def api_version(request):
    with xs.ArrayAPIStrictFlags(api_version=request.param):
        yield request.param


def test_train_and_gradcheck_on_device1(api_version, toy_data, make_net):
    X, y = toy_data
    np.random.seed(0)
    net = make_net("strict-device1", 4, 10, 3, std=1e-1)
    _, grads = net.loss(X, y, reg=0.05)
    for name in grads:
        numeric = eval_numerical_gradient(
            lambda W: net.loss(X, y, reg=0.05)[0], net.params[name], verbose=False
        )
        assert rel_error(numeric, grads[name]) < 1e-8
    stats = net.train(X, y, X, y, learning_rate=1e-1, reg=5e-6, num_iters=100)
    assert abs(stats["loss_history"][-1] - 0.0171496079387) < 1e-9
    assert xs.get_array_api_strict_flags()["api_version"] == api_version


def test_stacked_kernels_on_device1(api_version):
    rng = np.random.default_rng(0)
    dev = xs.Device("device1")
    arr = lambda a: xs.asarray(a, device=dev)
    shapes = {"W1": (2, 3, 4), "b1": (2, 4), "W2": (2, 4, 3), "b2": (2, 3)}
    params = {name: arr(rng.standard_normal(shape)) for name, shape in shapes.items()}
    X, y = arr(rng.standard_normal((5, 3))), arr(np.array([0, 2, 1, 1, 0]))
    loss = kernels.sgd_step(params, X, y, arr(np.array([0.1, 0.2])), arr(np.array([0.0, 0.5])))
    assert tuple(loss.shape) == (2,)
    assert tuple(kernels.count_correct(params, X, y).shape) == (2,)


def test_nothing_needs_the_mT_attribute(monkeypatch, toy_data, make_net):
    """CuPy before 14 (what Colab ships) and numpy before 2 have no ``.mT``: the kernels used it,
    so the first step on Colab's GPU raised AttributeError, which strict, numpy 2 and torch (the
    libraries tested here) could not show. Strict arrays without it stand in for such a library."""
    from twolayer_xp import Population

    def missing(self):
        raise AttributeError("'ndarray' object has no attribute 'mT'")

    monkeypatch.setattr(type(xs.asarray(1.0)), "mT", property(missing))
    X, y = toy_data
    net = make_net("strict-device1", 4, 10, 3, std=1e-1)
    net.loss(X, y, reg=0.05)
    net.train(X, y, X, y, learning_rate=1e-1, num_iters=20, batch_size=5)
    assert net.predict(X).shape == (X.shape[0],)
    pop = Population(4, 10, 3, size=3, device=xs.Device("device1"), backend="array_api_strict", rng=0)
    pop.train(X, y, X, y, learning_rate=[0.1, 0.2, 0.3], num_iters=20, batch_size=5)
    assert pop.accuracy(X, y).shape == (3,)
