"""Bad input fails at once with a message naming the argument, never as a NaN later."""

import numpy as np
import pytest

from twolayer_xp import TwoLayerNet


@pytest.mark.parametrize(
    "args,kwargs,error,words",
    [
        ((0, 5, 3), {}, ValueError, "input_size"),
        ((4, -1, 3), {}, ValueError, "hidden_size"),
        ((4, 0, 3), {}, ValueError, "hidden_size"),
        ((4, 5, 3.0), {}, TypeError, "output_size"),
        ((4, "5", 3), {}, TypeError, "hidden_size"),
        ((4, 5, 3), {"std": -1.0}, ValueError, "std"),
        ((4, 5, 3), {"std": float("nan")}, ValueError, "std"),
        ((4, 5, 3), {"dtype": "float16"}, ValueError, "dtype"),
        ((4, 5, 3), {"device": "tpu"}, ValueError, "device"),
        ((4, 5, 3), {"backend": "jax"}, ValueError, "backend"),
        ((4, 5, 3), {"rng": "seed"}, TypeError, "rng"),
        ((4, 5, 3), {"rng": -3}, ValueError, "rng"),
    ],
)
def test_constructor(args, kwargs, error, words):
    with pytest.raises(error, match=words):
        TwoLayerNet(*args, **kwargs)


def test_float64_on_a_float32_only_device():
    import array_api_strict as xs

    with pytest.raises(ValueError, match="float64.*not supported"):
        TwoLayerNet(4, 5, 3, backend="array_api_strict", device=xs.Device("no_float64"))


@pytest.fixture
def net(case, make_net):
    return make_net(case, 4, 5, 3, rng=0)


X4 = np.ones((6, 4))
Y = np.array([0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize(
    "X,y,error,words",
    [
        (np.ones((6, 5)), Y, ValueError, r"X must have shape \(N, 4\)"),
        (np.ones(4), None, ValueError, "X must have shape"),
        (np.ones((0, 4)), None, ValueError, "X has no rows"),
        (np.full((6, 4), np.nan), None, ValueError, "X contains 24 non-finite"),
        (np.array([[1.0, np.inf, 0, 0]] * 6), None, ValueError, "non-finite"),
        (np.ones((6, 4), dtype=bool), None, TypeError, "X must hold real numbers"),
        ("abc", None, TypeError, "X must"),
        (X4, np.array([0, 1, 2, 3, 0, 1]), ValueError, r"y must hold labels in \[0, 2\]"),
        (X4, np.array([0, 1, 2, -1, 0, 1]), ValueError, "y must hold labels"),
        (X4, Y.astype(float), TypeError, "y must hold integer"),
        (X4, Y[:5], ValueError, r"y must have shape \(6,\)"),
    ],
)
def test_loss_inputs(net, X, y, error, words):
    with pytest.raises(error, match=words):
        net.loss(X, y)


def test_lists_are_accepted_like_arrays(net):
    assert net.predict(X4.tolist()).shape == (6,)


def test_reg_must_be_nonnegative(net):
    with pytest.raises(ValueError, match="reg must be >= 0"):
        net.loss(X4, Y, reg=-0.1)


@pytest.mark.parametrize(
    "kwargs,error,words",
    [
        ({"learning_rate": 0.0}, ValueError, "learning_rate must be > 0"),
        ({"learning_rate": -1e-3}, ValueError, "learning_rate"),
        ({"learning_rate": float("inf")}, ValueError, "learning_rate must be finite"),
        ({"learning_rate_decay": 0.0}, ValueError, "learning_rate_decay"),
        ({"reg": -1.0}, ValueError, "reg"),
        ({"num_iters": 0}, ValueError, "num_iters"),
        ({"num_iters": 10.5}, TypeError, "num_iters"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"batch_size": -5}, ValueError, "batch_size"),
        ({"on_divergence": "ignore"}, ValueError, "on_divergence"),
        ({"sync_every": 0}, ValueError, "sync_every"),
    ],
)
def test_train_hyperparameters(net, kwargs, error, words):
    with pytest.raises(error, match=words):
        net.train(X4, Y, X4, Y, **kwargs)


def test_train_validation_set_is_checked(net):
    with pytest.raises(ValueError, match="y_val"):
        net.train(X4, Y, X4, Y + 5)
    with pytest.raises(ValueError, match="X_val"):
        net.train(X4, Y, np.ones((6, 3)), Y)
