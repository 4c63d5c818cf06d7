"""The kernels on their own: stacks of nets, numerical stability, gradients on random shapes."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from twolayer_xp import to_numpy
from twolayer_xp.core import kernels


def host_params(rng, D, H, C, K=None, scale=1.0):
    lead = () if K is None else (K,)
    return {
        "W1": scale * rng.standard_normal(lead + (D, H)),
        "b1": scale * rng.standard_normal(lead + (H,)),
        "W2": scale * rng.standard_normal(lead + (H, C)),
        "b2": scale * rng.standard_normal(lead + (C,)),
    }


def on(backend, host, dtype="float64"):
    return {k: backend.asarray(v, dtype=dtype, copy=True) for k, v in host.items()}


def test_stack_of_k_nets_equals_k_single_nets(case64, backend_of):
    backend = backend_of(case64)
    rng = np.random.default_rng(0)
    K, N, D, H, C = 3, 7, 5, 6, 4
    stacked = host_params(rng, D, H, C, K=K)
    X, y = rng.standard_normal((N, D)), rng.integers(0, C, size=N)
    reg = np.array([0.0, 0.1, 0.3])
    Xd, yd = backend.asarray(X, dtype="float64"), backend.asarray(y)

    loss, grads = kernels.loss_and_grads(on(backend, stacked), Xd, yd, backend.asarray(reg, dtype="float64"))
    assert tuple(loss.shape) == (K,)
    for k in range(K):
        single = on(backend, {n: v[k] for n, v in stacked.items()})
        loss_k, grads_k = kernels.loss_and_grads(single, Xd, yd, float(reg[k]))
        assert abs(float(loss_k) - to_numpy(loss)[k]) < 1e-12
        for name in grads_k:
            np.testing.assert_allclose(to_numpy(grads[name])[k], to_numpy(grads_k[name]), rtol=0, atol=1e-12)


def test_stacked_sgd_step_with_per_net_learning_rates(case64, backend_of):
    backend = backend_of(case64)
    rng = np.random.default_rng(1)
    K, N, D, H, C = 4, 9, 3, 5, 3
    host = host_params(rng, D, H, C, K=K)
    X, y = rng.standard_normal((N, D)), rng.integers(0, C, size=N)
    lr, reg = np.array([0.1, 0.01, 0.5, 1.0]), np.array([0.0, 0.2, 0.05, 1e-3])
    Xd, yd = backend.asarray(X, dtype="float64"), backend.asarray(y)
    stacked = on(backend, host)
    as_dev = lambda a: backend.asarray(a, dtype="float64")
    loss = kernels.sgd_step(stacked, Xd, yd, as_dev(lr), as_dev(reg))
    for k in range(K):
        single = on(backend, {n: v[k] for n, v in host.items()})
        loss_k = kernels.sgd_step(single, Xd, yd, float(lr[k]), float(reg[k]))
        assert abs(float(loss_k) - to_numpy(loss)[k]) < 1e-12
        for name in single:
            np.testing.assert_allclose(to_numpy(stacked[name])[k], to_numpy(single[name]), atol=1e-12)


def test_fused_step_equals_loss_grads_then_update(case64, backend_of):
    backend = backend_of(case64)
    rng = np.random.default_rng(2)
    host = host_params(rng, 6, 8, 5)
    X, y = rng.standard_normal((10, 6)), rng.integers(0, 5, size=10)
    Xd, yd = backend.asarray(X, dtype="float64"), backend.asarray(y)
    a, b = on(backend, host), on(backend, host)
    loss_a = kernels.sgd_step(a, Xd, yd, 0.3, 0.07)
    loss_b, grads = kernels.loss_and_grads(b, Xd, yd, 0.07)
    for name in b:
        b[name] -= 0.3 * grads[name]
    assert abs(float(loss_a) - float(loss_b)) < 1e-13
    for name in a:
        np.testing.assert_allclose(to_numpy(a[name]), to_numpy(b[name]), atol=1e-13)


def test_stable_for_huge_scores_float32(case32, backend_of):
    """Scores around 1e4 overflow a naive exp in float32; the shifted form stays finite."""
    backend = backend_of(case32)
    rng = np.random.default_rng(3)
    host = host_params(rng, 4, 6, 3)
    host["W2"] *= 1e4 / 3
    X, y = rng.standard_normal((8, 4)), rng.integers(0, 3, size=8)
    params = on(backend, host, "float32")
    Xd, yd = backend.asarray(X, dtype="float32"), backend.asarray(y)
    scores = to_numpy(kernels.scores(params, Xd))
    assert np.max(np.abs(scores)) > 1e3
    loss, grads = kernels.loss_and_grads(params, Xd, yd, 0.0)
    assert np.isfinite(float(loss)) and float(loss) > 0
    assert all(np.all(np.isfinite(to_numpy(g))) for g in grads.values())


def test_loss_value_by_hand(backend_of):
    """Cross-entropy and L2 computed independently, in plain numpy, on a tiny net."""
    backend = backend_of("numpy")
    rng = np.random.default_rng(4)
    host = host_params(rng, 3, 4, 2)
    X, y = rng.standard_normal((5, 3)), np.array([0, 1, 1, 0, 1])
    h = np.maximum(X @ host["W1"] + host["b1"], 0)
    s = h @ host["W2"] + host["b2"]
    p = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
    expected = -np.log(p[np.arange(5), y]).mean() + 0.2 * ((host["W1"] ** 2).sum() + (host["W2"] ** 2).sum())
    loss, _ = kernels.loss_and_grads(on(backend, host), X, y, 0.2)
    assert abs(float(loss) - expected) < 1e-12


def numerical_grad(f, x, h=1e-6):
    grad = np.zeros_like(x)
    for ix in np.ndindex(*x.shape):
        old = x[ix]
        x[ix] = old + h
        plus = f()
        x[ix] = old - h
        minus = f()
        x[ix] = old
        grad[ix] = (plus - minus) / (2 * h)
    return grad


@settings(max_examples=40, deadline=None)
@given(
    N=st.integers(1, 6),
    D=st.integers(1, 5),
    H=st.integers(1, 6),
    C=st.integers(2, 5),
    reg=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_gradients_on_random_shapes(N, D, H, C, reg, seed):
    rng = np.random.default_rng(seed)
    params = host_params(rng, D, H, C)
    X, y = rng.standard_normal((N, D)), rng.integers(0, C, size=N)
    pre_relu = X @ params["W1"] + params["b1"]
    assume(np.min(np.abs(pre_relu)) > 1e-3)  # a kink within h makes finite differences lie
    _, grads = kernels.loss_and_grads(params, X, y, reg)
    for name in params:
        f = lambda: float(kernels.loss_and_grads(params, X, y, reg)[0])
        np.testing.assert_allclose(
            grads[name], numerical_grad(f, params[name]), rtol=1e-5, atol=1e-7, err_msg=name
        )


def test_kernels_reject_nothing_silently_on_mixed_devices(backend_of):
    """An array left on the default device next to device1 arrays raises, not computes."""
    import array_api_strict as xs

    dev1, cpu = backend_of("strict-device1"), backend_of("strict")
    host = host_params(np.random.default_rng(5), 3, 4, 2)
    params = on(dev1, host)
    X = cpu.asarray(np.ones((2, 3)), dtype="float64")
    with pytest.raises(ValueError, match="different devices"):
        kernels.scores(params, X)
    assert isinstance(dev1.device, xs.Device)
