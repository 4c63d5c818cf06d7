"""The CS231n toy-model numbers, reproduced on every float64 backend."""

import numpy as np

from twolayer_xp import eval_numerical_gradient, rel_error


def toy_net(make_net, case_id):
    np.random.seed(0)
    return make_net(case_id, 4, 10, 3, std=1e-1)


def test_scores(case64, toy_data, make_net, golden):
    X, _ = toy_data
    scores = toy_net(make_net, case64).loss(X)
    assert isinstance(scores, np.ndarray) and scores.shape == (5, 3)
    assert np.sum(np.abs(scores - golden["scores"])) < 1e-7


def test_loss(case64, toy_data, make_net, golden):
    X, y = toy_data
    loss, _ = toy_net(make_net, case64).loss(X, y, reg=0.05)
    assert isinstance(loss, float)
    assert abs(loss - golden["loss"]) < 1e-12


def test_gradients_match_numerical(case64, toy_data, make_net):
    """The CS231n idiom, unchanged: f perturbs net.params[name] in place on the device."""
    X, y = toy_data
    net = toy_net(make_net, case64)
    _, grads = net.loss(X, y, reg=0.05)
    assert sorted(grads) == ["W1", "W2", "b1", "b2"]
    for name in grads:
        f = lambda W: net.loss(X, y, reg=0.05)[0]
        numeric = eval_numerical_gradient(f, net.params[name], verbose=False)
        assert rel_error(numeric, grads[name]) < 1e-8, name


def test_toy_training(case64, toy_data, make_net, golden):
    X, y = toy_data
    net = toy_net(make_net, case64)
    stats = net.train(X, y, X, y, learning_rate=1e-1, reg=5e-6, num_iters=100)
    assert abs(stats["loss_history"][0] - 1.2419938) < 1e-7
    assert abs(stats["loss_history"][-1] - golden["final_toy_loss"]) < 1e-9
    assert len(stats["loss_history"]) == 100
    # num_train 5 < batch 200: an "epoch" is one iteration, so accuracy is recorded every step
    assert len(stats["train_acc_history"]) == len(stats["val_acc_history"]) == 100
    assert all(isinstance(v, float) for v in stats["val_acc_history"])
    assert stats["val_acc_history"][-1] == 1.0


def test_numerical_gradient_restores_params(case64, toy_data, make_net):
    X, y = toy_data
    net = toy_net(make_net, case64)
    before = {k: np.array(v) for k, v in ((k, _host(v)) for k, v in net.params.items())}
    eval_numerical_gradient(lambda W: net.loss(X, y)[0], net.params["W2"], verbose=False)
    for name, value in net.params.items():
        np.testing.assert_array_equal(_host(value), before[name])


def _host(x):
    from twolayer_xp import to_numpy

    return to_numpy(x)
