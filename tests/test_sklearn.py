"""TwoLayerClassifier: scikit-learn's estimator contract, its tools, and array-API dispatch."""

from __future__ import annotations

import importlib.util
import pickle

import array_api_strict as xs
import numpy as np
import pytest

pytest.importorskip("sklearn", reason="scikit-learn is not installed (the 'sklearn' extra)")

import sklearn  # noqa: E402
from array_api_compat import array_namespace, device  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from twolayer_xp import TwoLayerNet, to_numpy
from twolayer_xp.sklearn import TwoLayerClassifier  # noqa: E402

HAS_TORCH = importlib.util.find_spec("torch") is not None
FAST = dict(num_iters=100, random_state=0)  # enough for the checks' small, easy problems


@pytest.fixture(autouse=True)
def scipy_array_api(monkeypatch):
    """scikit-learn refuses array-API dispatch (and skips its array-API checks) unless
    SCIPY_ARRAY_API=1; set it for this module's tests only."""
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")


@pytest.fixture(scope="module")
def blobs():
    """Three well-separated classes with string labels, standardized features: X (240, 5)."""
    rng = np.random.default_rng(0)
    centers = 4 * rng.standard_normal((3, 5))
    k = rng.integers(0, 3, size=240)
    X = centers[k] + rng.standard_normal((240, 5))
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    return X, np.array(["ant", "bee", "cat"])[k]


@parametrize_with_checks([TwoLayerClassifier(**FAST)])
def test_check_estimator(estimator, check):
    check(estimator)


def test_defaults_reach_097_on_standardized_digits():
    X, y = load_digits(return_X_y=True)
    model = make_pipeline(StandardScaler(), TwoLayerClassifier(random_state=0))
    scores = cross_val_score(model, X, y, cv=StratifiedKFold(5, shuffle=True, random_state=0))
    assert scores.mean() >= 0.97, scores


def test_string_labels_and_method_shapes(blobs):
    X, y = blobs
    clf = TwoLayerClassifier(**FAST).fit(X, y)
    assert list(clf.classes_) == ["ant", "bee", "cat"]
    assert clf.n_features_in_ == 5 and clf.n_iter_ == 100 and len(clf.loss_curve_) == 100
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    assert isinstance(clf.net_, TwoLayerNet) and clf.net_.params["W1"].shape == (5, 100)
    assert set(clf.predict(X)) <= {"ant", "bee", "cat"} and clf.score(X, y) > 0.95
    proba = clf.predict_proba(X)
    assert proba.shape == (240, 3) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), proba, rtol=1e-4, atol=1e-7)
    assert clf.decision_function(X).shape == (240, 3)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X))


def test_binary_decision_function_is_the_score_difference(blobs):
    X, y = blobs
    keep = y != "cat"
    clf = TwoLayerClassifier(**FAST).fit(X[keep], y[keep])
    d = clf.decision_function(X[keep])
    assert d.shape == (int(keep.sum()),)
    np.testing.assert_array_equal(np.where(d > 0, "bee", "ant"), clf.predict(X[keep]))
    assert clf.predict_proba(X[keep]).shape == (int(keep.sum()), 2)


def test_bad_input_follows_sklearn_conventions(blobs):
    X, y = blobs
    with pytest.raises(NotFittedError):
        TwoLayerClassifier().predict(X)
    clf = TwoLayerClassifier(**FAST).fit(X, y)
    with pytest.raises(ValueError, match="X has 4 features, but TwoLayerClassifier is expecting 5"):
        clf.predict(X[:, :4])
    with pytest.raises(ValueError, match="Input X contains NaN"):
        TwoLayerClassifier().fit(np.where(X > 2, np.nan, X), y)
    with pytest.raises(ValueError, match="Unknown label type"):
        TwoLayerClassifier().fit(X, np.linspace(0, 1, len(y)))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        TwoLayerClassifier().fit(X, y[:-1])


def test_partial_fit_continues_and_checks_classes(blobs):
    X, y = blobs
    clf = TwoLayerClassifier(batch_size=60, random_state=0)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[:120], y[:120], classes=["ant", "bee", "cat"])
    assert clf.n_iter_ == 2 and list(clf.classes_) == ["ant", "bee", "cat"]
    for _ in range(20):
        clf.partial_fit(X, y)
    assert clf.n_iter_ == 2 + 20 * 4 and len(clf.loss_curve_) == clf.n_iter_
    assert clf.score(X, y) > 0.95
    with pytest.raises(ValueError, match="not in classes_"):
        clf.partial_fit(X[:3], np.array(["ant", "dog", "cat"]))
    with pytest.raises(ValueError, match="is not the same as on last call"):
        clf.partial_fit(X, y, classes=["ant", "bee"])
    with pytest.raises(ValueError, match=r"classes must hold at least one label, got \[\]"):
        TwoLayerClassifier().partial_fit(X, y, classes=[])


def test_pickle_round_trip_keeps_predictions_and_training(blobs):
    X, y = blobs
    clf = TwoLayerClassifier(**FAST).fit(X, y)
    copy = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(copy.predict_proba(X), clf.predict_proba(X))
    assert isinstance(clf.net_, TwoLayerNet)  # pickling left the original intact
    # The random stream travels too: both continue with the same minibatches.
    np.testing.assert_array_equal(
        copy.partial_fit(X, y).predict_proba(X), clf.partial_fit(X, y).predict_proba(X)
    )


def test_pipeline_grid_search_and_joblib_workers(blobs):
    X, y = blobs
    pipe = make_pipeline(StandardScaler(), TwoLayerClassifier(**FAST))
    grid = GridSearchCV(pipe, {"twolayerclassifier__hidden_size": [4, 16]}, cv=3, n_jobs=2)
    grid.fit(X, y)
    assert grid.best_params_["twolayerclassifier__hidden_size"] in (4, 16)
    assert grid.best_estimator_[-1].net_.hidden_size == grid.best_params_["twolayerclassifier__hidden_size"]
    assert grid.score(X, y) > 0.95


def test_backend_parameter_without_dispatch_is_numpy_in_numpy_out(blobs):
    pytest.importorskip("torch", reason="torch is not installed")
    X, y = blobs
    clf = TwoLayerClassifier(backend="torch", **FAST).fit(X, y)
    assert clf.net_.backend.name == "torch" and type(clf.net_.params["W1"]).__module__ == "torch"
    assert isinstance(clf.predict_proba(X), np.ndarray) and isinstance(clf.predict(X), np.ndarray)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(clf)).predict(X), clf.predict(X))


def _dispatch_cases():
    cases = [pytest.param("array_api_strict", xs.Device("device1"), id="strict-device1")]
    cases.append(
        pytest.param(
            "torch",
            "cpu",
            id="torch",
            marks=pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed"),
        )
    )
    return cases


@pytest.mark.parametrize("library, where", _dispatch_cases())
def test_array_api_dispatch_computes_and_answers_on_the_inputs_device(blobs, library, where):
    X_np, y_names = blobs
    y_np = np.searchsorted(["ant", "bee", "cat"], y_names)
    lib = importlib.import_module(library)
    X = lib.asarray(X_np, dtype=lib.float32, device=where)
    y = lib.asarray(y_np, device=where)
    with sklearn.config_context(array_api_dispatch=True):
        clf = TwoLayerClassifier(**FAST).fit(X, y)
        outputs = {
            "predict": clf.predict(X),
            "predict_proba": clf.predict_proba(X),
            "decision_function": clf.decision_function(X),
            "predict_log_proba": clf.predict_log_proba(X),
        }
        score = clf.score(X, y)
    xp = array_namespace(X)
    assert clf.net_.backend.name == library
    for name, p in clf.net_.params.items():
        assert array_namespace(p) is xp and device(p) == device(X), name
    assert array_namespace(clf.classes_) is xp and device(clf.classes_) == device(X)
    for name, out in outputs.items():
        assert array_namespace(out) is xp and device(out) == device(X), name
    assert outputs["predict"].dtype == y.dtype
    assert outputs["predict_proba"].dtype == xp.float32 and outputs["predict_proba"].shape == (240, 3)
    assert score > 0.95
    # The same seed gives the same net as on numpy (one host random stream for every backend).
    reference = TwoLayerClassifier(**FAST).fit(X_np, y_np)
    np.testing.assert_allclose(to_numpy(outputs["predict_proba"]), reference.predict_proba(X_np), atol=1e-3)


def test_dispatch_with_numpy_input_stays_numpy(blobs):
    X, y = blobs
    with sklearn.config_context(array_api_dispatch=True):
        clf = TwoLayerClassifier(**FAST).fit(X, y)
        proba = clf.predict_proba(X)
    assert isinstance(proba, np.ndarray) and list(clf.classes_) == ["ant", "bee", "cat"]


def test_bool_features_are_taken_as_zeros_and_ones():
    """pandas' get_dummies gives bool columns, which scikit-learn's estimators take."""
    rng = np.random.default_rng(0)
    X = rng.random((60, 4)) > 0.5
    y = (X[:, 0] ^ X[:, 1]).astype(np.int64)
    as_numbers = TwoLayerClassifier(**FAST).fit(X.astype(np.float32), y)
    clf = TwoLayerClassifier(**FAST).fit(X, y)
    for method in ("predict", "predict_proba", "decision_function", "predict_log_proba"):
        np.testing.assert_array_equal(getattr(clf, method)(X), getattr(as_numbers, method)(X), method)
    assert clf.score(X, y) == as_numbers.score(X, y)
    clf.partial_fit(X, y)
    assert clf.n_iter_ == 101
    Xs = xs.asarray(X, device=xs.Device("no_float64"))  # float32 only: the cast must not need float64
    with sklearn.config_context(array_api_dispatch=True):
        proba = TwoLayerClassifier(**FAST).fit(Xs, xs.asarray(y, device=Xs.device)).predict_proba(Xs)
    assert device(proba) == Xs.device
    np.testing.assert_allclose(to_numpy(proba), as_numbers.predict_proba(X), atol=1e-5)


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    "params, words",
    [
        (dict(batch_size=0), "batch_size must be a positive int"),
        (dict(learning_rate=-1.0), "learning_rate must be > 0"),
        (dict(dtype="float16"), "dtype must be"),  # found only when the new net is built
        (dict(), None),  # Ctrl-C in training
    ],
)
def test_a_failed_refit_leaves_the_fitted_estimator_as_it_was(blobs, monkeypatch, params, words):
    X, y = blobs
    clf = TwoLayerClassifier(**FAST).fit(X, y).set_params(**params)
    before, proba = dict(vars(clf)), clf.predict_proba(X)
    other = np.where(y == "cat", "dog", y)  # a refit would make classes_ ant, bee, dog
    if words is None:
        monkeypatch.setattr(TwoLayerNet, "train", _interrupt)
        with pytest.raises(KeyboardInterrupt):
            clf.fit(X, other)
    else:
        with pytest.raises((ValueError, TypeError), match=words):
            clf.fit(X, other)
    assert vars(clf).keys() == before.keys()
    assert all(vars(clf)[k] is v for k, v in before.items())
    np.testing.assert_array_equal(clf.predict_proba(X), proba)


def test_bad_hyperparameters_fail_before_the_random_state_is_drawn_from(blobs):
    X, y = blobs
    stream = np.random.RandomState(0)
    state = stream.get_state()[1].copy()
    with pytest.raises(ValueError, match="num_iters"):
        TwoLayerClassifier(num_iters=0, random_state=stream).fit(X, y)
    clf = TwoLayerClassifier(batch_size=0, random_state=stream)
    with pytest.raises(ValueError, match="batch_size"):
        clf.partial_fit(X, y, classes=["ant", "bee", "cat"])
    np.testing.assert_array_equal(stream.get_state()[1], state)
    with pytest.raises(NotFittedError):  # a failed first partial_fit leaves it unfitted
        clf.predict(X)


@pytest.mark.parametrize("library, where", _dispatch_cases())
def test_partial_fit_with_another_library_or_device_says_so(blobs, library, where):
    X_np, y_names = blobs
    y_np = np.searchsorted(["ant", "bee", "cat"], y_names)
    lib = importlib.import_module(library)
    X, y = lib.asarray(X_np, dtype=lib.float32, device=where), lib.asarray(y_np, device=where)
    others = [(X_np, y_np), (xs.asarray(X_np, dtype=xs.float32), xs.asarray(y_np))]  # default device
    with sklearn.config_context(array_api_dispatch=True):
        clf = TwoLayerClassifier(batch_size=60, random_state=0).partial_fit(
            X, y, classes=lib.asarray([0, 1, 2])
        )
        for X_other, y_other in others:
            with pytest.raises(ValueError, match="must use the same namespace and the same device"):
                clf.partial_fit(X_other, y_other)
        assert clf.partial_fit(X, y).n_iter_ == 8


def test_features_beyond_float32_are_named_not_made_inf(blobs):
    X, y = blobs
    clf = TwoLayerClassifier(**FAST).fit(X, y)
    for call in (clf.predict_proba, lambda X: TwoLayerClassifier(**FAST).fit(X, y)):
        with pytest.raises(ValueError, match="X holds a value of .*e\\+39 .*beyond float32's range"):
            call(X * 1e39)


@pytest.mark.parametrize("library, where", _dispatch_cases())
def test_dispatch_takes_bool_labels_and_names_string_labels(blobs, library, where):
    X_np, y_names = blobs
    lib = importlib.import_module(library)
    X = lib.asarray(X_np, dtype=lib.float32, device=where)
    is_bee = lib.asarray(y_names == "bee", device=where)
    with sklearn.config_context(array_api_dispatch=True):
        clf = TwoLayerClassifier(**FAST).fit(X, is_bee)
        assert clf.predict(X).dtype == lib.bool and clf.score(X, is_bee) > 0.95
        clf.partial_fit(X, is_bee)
        online = TwoLayerClassifier(batch_size=60, random_state=0)
        online.partial_fit(X, is_bee, classes=lib.asarray([False, True], device=where))
        assert online.n_iter_ == 4
        with pytest.raises(TypeError, match=r"y holds <U3 labels, .*LabelEncoder"):
            TwoLayerClassifier(**FAST).fit(X, y_names)
        with pytest.raises(TypeError, match=r"classes holds <U3 labels, .*array_api_dispatch off"):
            TwoLayerClassifier(**FAST).partial_fit(X, is_bee, classes=["ant", "bee", "cat"])


def test_dispatch_computes_with_the_inputs_device_current(blobs, outside_activate):
    """CuPy computes on its current GPU and array-api-compat's CuPy ignores device=: given arrays
    on cuda:1, the estimator's label and score arithmetic (and scikit-learn's checks) ran on GPU
    0. Each public method now makes X's device current. array-api-strict stands in
    (``outside_activate``)."""
    X_np, y_names = blobs
    dev = xs.Device("device1")
    X = xs.asarray(X_np, dtype=xs.float32, device=dev)
    y = xs.asarray(np.searchsorted(["ant", "bee", "cat"], y_names), device=dev)
    outside_activate.clear()  # the inputs, made here
    with sklearn.config_context(array_api_dispatch=True):
        clf = TwoLayerClassifier(**FAST).fit(X, y)
        clf.partial_fit(X, y)
        clf.predict(X), clf.predict_proba(X), clf.predict_log_proba(X), clf.decision_function(X)
        clf.score(X, y)
    assert outside_activate == []
