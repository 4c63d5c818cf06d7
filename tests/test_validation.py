"""Bad input fails at once with a message naming the argument, never as a NaN later."""

import numpy as np
import pytest

from twolayer_xp import Population, TwoLayerNet


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
        ({"progress": True}, TypeError, "progress must be a callable"),
    ],
)
def test_train_hyperparameters(net, kwargs, error, words):
    with pytest.raises(error, match=words):
        net.train(X4, Y, X4, Y, **kwargs)
    assert net.state.iteration == 0  # refused before any step, not at the first sync


def test_train_validation_set_is_checked(net):
    with pytest.raises(ValueError, match="y_val"):
        net.train(X4, Y, X4, Y + 5)
    with pytest.raises(ValueError, match="X_val"):
        net.train(X4, Y, np.ones((6, 3)), Y)


# -- sizes and scales that cannot work ---------------------------------------------------------------


def test_a_net_too_big_for_memory_is_refused_at_once():
    """5 TB of weights: a one-line ValueError naming hidden_size, not a MemoryError (or, with
    memory overcommit, a swapping machine) from the allocator."""
    with pytest.raises(ValueError, match=r"hidden_size=10000000000, .* use a smaller hidden_size"):
        TwoLayerNet(64, 10**10, 10)
    with pytest.raises(
        ValueError,
        match=r"population of 4 nets .* hidden_size=10000000000, .* use a smaller hidden_size or size",
    ):
        Population(64, 10**10, 10, size=4)  # names each member's hidden size, not the 4x wide layer


@pytest.mark.parametrize(
    "std,dtype",
    [
        (1e308, "float64"),  # the weights themselves overflow
        (1e200, "float32"),
        (1e20, "float32"),  # weights fit float32, their scores (~64 * 10 * std**2) do not
    ],
)
# numpy warns about the overflowing draw before the net refuses it (the CLI builds the net under
# np.errstate; TwoLayerNet itself would need its draw under np.errstate to stay quiet)
@pytest.mark.filterwarnings("ignore:overflow encountered in multiply:RuntimeWarning")
def test_std_whose_weights_or_scores_overflow(std, dtype):
    with pytest.raises(
        ValueError, match=f"std is so large that the initial weights or scores overflow {dtype}"
    ):
        TwoLayerNet(64, 10, 10, std=std, dtype=dtype)


# -- params replaced by the user -----------------------------------------------------------------


@pytest.mark.parametrize(
    "value,error,words",
    [
        (np.ones((4, 6)), ValueError, r'params\["W1"\] must have shape \(4, 5\), got \(4, 6\)'),
        (np.full((4, 5), "a"), TypeError, r'params\["W1"\] must hold real numbers'),
        ("weights", TypeError, r'params\["W1"\] must hold real numbers'),
        (object(), TypeError, r'params\["W1"\] must'),
    ],
)
def test_replaced_params_are_checked(net, value, error, words):
    net.params["W1"] = value
    with pytest.raises(error, match=words):
        net.loss(X4, Y)


def test_a_param_of_the_wrong_shape_on_the_device_is_refused(net):
    net.params["b2"] = net.backend.xp.zeros((4,), dtype=net.dtype, device=net.backend.device)
    with pytest.raises(ValueError, match=r'params\["b2"\] must have shape \(3,\), got \(4,\)'):
        net.predict(X4)


def test_a_list_of_lists_of_the_right_shape_is_adopted(net, assert_close):
    net.params["W1"] = [[0.5] * 5 for _ in range(4)]
    net.loss(X4, Y)
    assert_close(net.params["W1"], np.full((4, 5), 0.5), backend=net.backend, dtype=net.dtype_name)


def test_a_deleted_param_is_named(net):
    del net.params["b1"]
    with pytest.raises(KeyError, match=r'params\["b1"\] is missing; expected an array of shape \(5,\)'):
        net.predict(X4)


# -- CS231n contract details -----------------------------------------------------------------------


def test_grads_come_in_cs231n_order(net):
    assert list(net.loss(X4, Y, reg=0.1)[1]) == ["W1", "b1", "W2", "b2"]


def test_divergence_returns_the_finite_part_and_warns_at_the_callers_line(case, make_net, blobs):
    X, y = blobs(n=200, d=10, c=4)
    net = make_net(case, 10, 20, 4, std=1.0, rng=0)
    kwargs = dict(learning_rate=30.0, learning_rate_decay=1.0, num_iters=300, batch_size=20, sync_every=5)
    with pytest.warns(RuntimeWarning, match="training diverged") as record:
        stats = net.train(X, y, X, y, **kwargs)
    losses = stats["loss_history"]  # CS231n's history: up to and including the first non-finite loss
    assert 0 < len(losses) < 300 and np.all(np.isfinite(losses[:-1])) and not np.isfinite(losses[-1])
    assert 0 < len(stats["val_acc_history"]) and net.iteration < len(losses)  # params rolled back
    assert [w.filename for w in record] == [__file__]


# -- host syncs ------------------------------------------------------------------------------------


@pytest.fixture
def syncs(monkeypatch):
    """Names of the host syncs made: Backend.to_numpy, and (array-api-strict) an array turned
    into a Python scalar by int(), float(), bool() or index()."""
    import array_api_strict as xs

    from twolayer_xp.backend import Backend

    made = []
    real_to_numpy = Backend.to_numpy

    def to_numpy(self, x):
        made.append("to_numpy")
        return real_to_numpy(self, x)

    monkeypatch.setattr(Backend, "to_numpy", to_numpy)
    array_type = type(xs.asarray(0))
    for name in ("__int__", "__float__", "__bool__", "__index__"):
        real = getattr(array_type, name)

        def scalar(self, *args, _name=name, _real=real):
            made.append(_name)
            return _real(self, *args)

        monkeypatch.setattr(array_type, name, scalar)
    return made


@pytest.mark.parametrize("case_id", ["numpy", "strict-device1"])
def test_accuracy_of_device_arrays_is_one_sync_and_predict_none(case_id, make_net, blobs, syncs):
    X, y = blobs(n=60, d=4, c=3)
    net = make_net(case_id, 4, 5, 3, std=0.5, rng=0)
    expected = float(np.mean(net.predict(X) == y))
    Xd, yd = net.backend.asarray(X, dtype=net.dtype), net.backend.asarray(y)
    syncs.clear()
    net.predict(Xd)
    assert syncs == []
    assert net.accuracy(Xd, yd) == expected
    assert syncs == ["to_numpy"]
    syncs.clear()
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 2\], found values in \[0, 3\]"):
        net.accuracy(Xd, net.backend.asarray(np.where(y == 2, 3, y)))
    assert syncs == ["to_numpy"]  # the label range came back with the count


@pytest.mark.parametrize("case_id", ["numpy", "strict-device1"])
def test_population_accuracy_of_device_arrays_is_one_sync_and_predict_none(case_id, backend_of, blobs, syncs):
    X, y = blobs(n=60, d=4, c=3)
    where = backend_of(case_id)
    pop = Population(4, 5, 3, size=3, std=0.5, rng=0, backend=where.name, device=where.device)
    expected = np.mean(pop.predict(X) == y, axis=1)
    Xd, yd = where.asarray(X, dtype="float64"), where.asarray(y)
    syncs.clear()
    pop.predict(Xd)
    assert syncs == []
    np.testing.assert_array_equal(pop.accuracy(Xd, yd), expected)
    assert syncs == ["to_numpy"]
    syncs.clear()
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 2\], found values in \[0, 3\]"):
        pop.accuracy(Xd, where.asarray(np.where(y == 2, 3, y)))
    assert syncs == ["to_numpy"]


@pytest.mark.parametrize("case_id", ["numpy", "strict-device1"])
def test_accuracy_checks_host_inputs_on_the_host(case_id, make_net, blobs, syncs):
    X, y = blobs(n=60, d=4, c=3)
    net = make_net(case_id, 4, 5, 3, rng=0)
    syncs.clear()
    net.accuracy(X, y)
    assert syncs == ["to_numpy"]
    # a host X is scanned for NaN (on the host, no device sync): a NaN row would silently
    # predict some class (numpy's arrays are the host's own, so numpy's too)
    X_nan = np.where(np.arange(60)[:, None] == 3, np.nan, X)
    for evaluate in (lambda: net.accuracy(X_nan, y), lambda: net.predict(X_nan)):
        with pytest.raises(ValueError, match="X contains 4 non-finite"):
            evaluate()
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 2\], found values in \[-1, 2\]"):
        net.accuracy(X[:5], np.array([0, 1, 2, -1, 0]))


def test_a_torch_cpu_tensor_is_scanned_for_nan_like_numpy():
    """Looking at a CPU tensor's values costs no device sync, so it is scanned as numpy's arrays
    are (a NaN row predicted class 0); only a GPU's (or strict's stand-in's) arrays are not."""
    torch = pytest.importorskip("torch")
    net = TwoLayerNet(4, 5, 3, backend="torch", rng=0)
    X = torch.zeros((3, 4), dtype=torch.float32)
    X[1, 2] = float("nan")
    with pytest.raises(ValueError, match="X contains 1 non-finite"):
        net.predict(X)


def test_a_torch_model_takes_bfloat16_cpu_tensors():
    """numpy has no bfloat16, so the range check's look at such a CPU tensor raised torch's 'Got
    unsupported ScalarType BFloat16'; float32 holds its range, so there is nothing to look for."""
    torch = pytest.importorskip("torch")
    net = TwoLayerNet(4, 5, 3, backend="torch", dtype="float32", rng=0)
    X = torch.ones((3, 4), dtype=torch.float32)
    assert torch.equal(net.predict(X.to(torch.bfloat16)), net.predict(X))


def test_accuracy_moves_labels_from_another_device_as_loss_does(blobs):
    """y of the model's library on another device: moved (and checked where it is), as loss
    and train move it, rather than array-api-strict's 'Arrays from two different devices'."""
    import array_api_strict as xs

    X, y = blobs(n=60, d=4, c=3)
    here = xs.Device("device1")
    net = TwoLayerNet(4, 5, 3, std=0.5, rng=0, backend="array_api_strict", device=here)
    pop = Population(4, 5, 3, size=2, std=0.5, rng=0, backend="array_api_strict", device=here)
    Xd, y_elsewhere = xs.asarray(X, device=here), xs.asarray(y)  # y on the default device
    assert net.accuracy(Xd, y_elsewhere) == net.accuracy(X, y)
    np.testing.assert_array_equal(pop.accuracy(Xd, y_elsewhere), pop.accuracy(X, y))
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 2\], found values in \[0, 3\]"):
        net.accuracy(Xd, xs.asarray(np.where(y == 2, 3, y)))


def test_host_values_beyond_a_float32_models_range_are_named_not_made_inf(case, make_net):
    """1e39 is finite in float64 and inf in float32: predict gave class 0, train blamed 'NaN or
    inf' in X. Refused at the cast, naming the argument and the value."""
    net = make_net(case, 2, 4, 3, std=0.1, dtype="float32", rng=0)
    big, ok, y = np.array([[0.0, 1.0], [1e39, 0.0]]), np.eye(2), np.array([0, 1])
    words = r"X holds a value of 1e\+39 \(feature 0, 0-based\), beyond float32's range \(\+-3.4e\+38\)"
    for call in (net.predict, net.loss, lambda X: net.accuracy(X, y), lambda X: net.train(X, y, ok, y)):
        with pytest.raises(ValueError, match=words):
            call(big)
    with pytest.raises(ValueError, match="X_val holds a value of -1e"):
        net.train(ok, y, -big, y)
    pop = Population(
        2, 4, 3, size=2, std=0.1, dtype="float32", rng=0, backend=net.backend.name, device=net.backend.device
    )
    with pytest.raises(ValueError, match=words):
        pop.predict(big)
    assert net.state.iteration == 0
    if net.backend.name == "torch":  # a float64 CPU tensor is looked at too (no sync): it was cast
        import torch  # to inf, and predict gave class 0

        with pytest.raises(ValueError, match=words):
            net.predict(torch.asarray(big, device=net.backend.device))
    # the largest float32 itself, and anything that rounds to it, is taken
    assert net.predict(np.array([[float(np.finfo(np.float32).max), 0.0]])).shape == (1,)


@pytest.mark.parametrize("library", ["array_api_strict", "torch"])
def test_another_librarys_host_arrays_are_checked_against_the_models_range(case, make_net, library):
    """A float64 torch CPU tensor, or an array-api-strict array on its CPU device, lives in host
    memory whatever the model's library, so it is looked at as a numpy X is (no device sync):
    a numpy net cast it to inf and predicted class 0, loss gave NaN scores, train blamed 'NaN or
    inf' in X."""
    lib = pytest.importorskip(library)
    net = make_net(case, 2, 4, 3, std=0.1, dtype="float32", rng=0)
    ok, y = np.eye(2), np.array([0, 1])
    big = lib.asarray(np.array([[0.0, 1.0], [1e39, 0.0]]))  # on the library's default device: its CPU
    words = r"X holds a value of 1e\+39 \(feature 0, 0-based\), beyond float32's range \(\+-3.4e\+38\)"
    for call in (net.predict, net.loss, lambda X: net.accuracy(X, y), lambda X: net.train(X, y, ok, y)):
        with pytest.raises(ValueError, match=words):
            call(big)
    assert net.state.iteration == 0


def test_a_numpy_model_names_an_array_left_on_a_device_and_the_fix(make_net, has_torch):
    """numpy reads host memory only: an array-api-strict array on "device1" (standing in for a
    GPU's) raised strict's own RuntimeError, naming no argument. A torch model takes it (torch
    moves it by DLPack), as a strict model on device1 takes a numpy array: same predictions."""
    import array_api_strict as xs

    here = xs.Device("device1")
    X, y = np.eye(2), np.array([0, 1])
    Xd, yd = xs.asarray(X, device=here), xs.asarray(y, device=here)
    net = make_net("numpy", 2, 4, 3, std=0.1, rng=0)
    calls = {
        "X": lambda: net.predict(Xd),
        "y": lambda: net.accuracy(X, yd),
        "X_val": lambda: net.train(X, y, Xd, y),
        "y_val": lambda: net.train(X, y, X, yd),
    }
    for name, call in calls.items():
        with pytest.raises(
            TypeError,
            match=rf"^{name} is an array of array_api_strict on device .*device1.*, but a numpy model reads "
            rf"host memory only; move {name} to the CPU \(its library's CPU device\) or pass a numpy array$",
        ):
            call()
    assert net.state.iteration == 0
    expected = net.predict(X)
    np.testing.assert_array_equal(make_net("strict-device1", 2, 4, 3, std=0.1, rng=0).predict(X), expected)
    if has_torch:
        np.testing.assert_array_equal(make_net("torch", 2, 4, 3, std=0.1, rng=0).predict(Xd), expected)
