"""Untrusted inputs that steer the program (issue 19, classes 5, 6 and 9): a checkpoint's stored
run config is checked like its params, paths it names are only read, tiny files or huge
arguments are refused before they allocate, and the API refuses what it could not read back."""

import json

import numpy as np
import pytest

from twolayer_xp.app import config

RUN_ARGS = ("--num-iters", 20, "--checkpoint-every", 10, "--hidden-size", 8, "--quiet")


@pytest.fixture(scope="module")
def checkpoint_of_a_run(tmp_path_factory):
    """The bytes of a finished 20-iteration digits run's model.npz (hidden_size 8)."""
    from twolayer_xp.app import cli

    out = tmp_path_factory.mktemp("run")
    assert cli.main(["train", "--out", str(out), *map(str, RUN_ARGS)]) == 0
    return (out / "model.npz").read_bytes()


def with_config(path, source: bytes, **changes):
    """Write ``source`` to ``path`` with its stored run config changed (a value of ... deletes)."""
    path.write_bytes(source)
    with np.load(path) as f:
        contents = {name: f[name] for name in f.files}
    header = json.loads(str(contents["header"][()]))
    stored = header["metadata"]["config"]
    for name, value in changes.items():
        if value is ...:
            del stored[name]
        else:
            stored[name] = value
    contents["header"] = np.asarray(json.dumps(header))
    np.savez(path, **contents)
    return path


@pytest.mark.parametrize(
    "changes,words",
    [
        ({"batch_size": "100"}, "field batch_size is invalid: batch_size must be an int, got str '100'"),
        ({"dataset": "cifar10", "data_dir": 5}, "field data_dir is invalid: data_dir must be a string"),
        ({"learning_rate": ...}, "field learning_rate is missing"),
        ({"learning_rate": None}, "field learning_rate is missing"),
        ({"reg": -1.0}, "field reg is invalid: reg must be >= 0"),
        ({"num_iters": 1e9}, "field num_iters is invalid: num_iters must be an int"),
        ({"hidden_size": 10**12}, "field hidden_size is 1000000000000 but the checkpoint's arrays have 8"),
        ({"dtype": "float64"}, "field dtype is 'float64' but the checkpoint's arrays have 'float32'"),
        ({"dtype": "float16"}, "field dtype is invalid: dtype must be one of"),
        ({"backend": "os.system"}, "field backend is invalid: backend must be one of"),
        ({"device": ["cpu"]}, "field device is invalid: device must be a string"),
        (
            {"dataset": "imagenet"},
            "field dataset must be one of digits, cifar10, mnist, fashion-mnist or a .npz/.csv file, got 'imagenet'",
        ),
        ({"num_train": 100}, "field num_train does not apply to digits"),
        ({"seed": True}, "field seed is invalid: seed must be an int"),
    ],
)
def test_a_stored_run_config_is_checked_field_by_field(
    tmp_path, capsys, checkpoint_of_a_run, train, one_error_line, changes, words
):
    path = with_config(tmp_path / "model.npz", checkpoint_of_a_run, **changes)
    before = sorted(tmp_path.iterdir())
    assert train("--resume", path, "--num-iters", 30, "--quiet") == 2
    line = one_error_line(capsys)
    assert f"{path}: its stored run config {words}" in line, line
    assert sorted(tmp_path.iterdir()) == before  # nothing written beside it


@pytest.mark.parametrize(
    "changes,words",
    [
        ({"backend": "cupy"}, "backend 'cupy' runs on an NVIDIA GPU"),
        ({"device": "cuda:99"}, "cuda"),
        (
            {**config.SPLITS["cifar10"], "dataset": "cifar10", "data_dir": "{tmp}", "num_train": 10**12},
            "CIFAR-10 has 50000 training and 10000 test images",
        ),
    ],
)
def test_what_valid_stored_settings_cannot_do_here_names_the_checkpoint(
    tmp_path, capsys, checkpoint_of_a_run, train, one_error_line, changes, words
):
    changes = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in changes.items()}
    path = with_config(tmp_path / "model.npz", checkpoint_of_a_run, **changes)
    assert train("--resume", path, "--num-iters", 30, "--quiet", "--out", tmp_path / "out") == 2
    line = one_error_line(capsys)
    assert line.startswith(f"twolayer-xp: error: {path}: ") and words.lower() in line.lower(), line


def test_a_data_dir_named_by_a_checkpoint_is_never_created(
    tmp_path, capsys, monkeypatch, checkpoint_of_a_run, train, one_error_line
):
    import pooch

    downloads = []
    monkeypatch.setattr(pooch, "retrieve", lambda *a, **k: downloads.append(a) or 1 / 0)
    target = tmp_path / "planted" / "data"
    cifar = {**config.SPLITS["cifar10"], "dataset": "cifar10", "data_dir": str(target)}
    path = with_config(tmp_path / "model.npz", checkpoint_of_a_run, **cifar)
    assert train("--resume", path, "--num-iters", 30, "--quiet") == 2
    assert "only read here" in one_error_line(capsys)
    assert not (tmp_path / "planted").exists() and downloads == []


def test_a_resumed_cifar10_run_reads_its_data_dir_or_the_one_given(tmp_path, capsys, cifar, train):
    cifar.write_cifar(tmp_path / "data", rows_per_batch=60, test_rows=40)
    sizes = ("--num-train", 250, "--num-val", 30, "--num-test", 20, "--batch-size", 25)
    first = ("--dataset", "cifar10", "--data-dir", tmp_path / "data", *sizes, "--out", tmp_path / "run")
    assert train(*first, "--num-iters", 10, "--quiet") == 0
    assert train("--resume", tmp_path / "run" / "model.npz", "--num-iters", 20, "--quiet") == 0
    (tmp_path / "data").rename(tmp_path / "moved")
    resume = ("--resume", tmp_path / "run" / "model.npz", "--data-dir", tmp_path / "moved")
    assert train(*resume, "--num-iters", 30, "--quiet") == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["iterations"] == 30
    capsys.readouterr()


# ------------------------------------------------------------------------------------------
# Class 6: memory from tiny files. Opcodes that make pickle's C unpickler allocate: a memo index
# (the memo grows to hold it) and DUP (the stack grows by one slot each).

OPCODE_BOMBS = {
    "long-binput": ("data_batch_1", b"\x80\x02}r" + (1 << 25).to_bytes(4, "little") + b"."),
    "protocol-0-put": ("batches.meta", b"(dp%d\n." % (1 << 25)),
    "dup": ("data_batch_1", b"\x80\x02}" + b"2" * 1_500_000 + b"."),
    "empty-lists": ("data_batch_1", b"\x80\x02" + b"]" * 300_000 + b"."),  # a stack of distinct objects
    # a length field of 2**31 in a 13-byte file: read() would allocate it before finding 2 bytes
    "bytes8-length": ("data_batch_2", b"\x80\x04\x8e" + (1 << 31).to_bytes(8, "little") + b"ab"),
}


@pytest.mark.parametrize("name", list(OPCODE_BOMBS))
def test_a_tiny_batch_cannot_make_the_unpickler_allocate(tmp_path, monkeypatch, cifar, name):
    """Each would take >= 12 MB before the scan (2**25 memo slots: 256 MB, the length: 2 GB); the opcode cap is
    lowered to 200,000 (twice a real batch's) to keep the DUP file and its scan small."""
    import tracemalloc

    from twolayer_xp.io import cifar_batches, datasets
    from twolayer_xp.io.cifar_batches import DataError

    monkeypatch.setattr(cifar_batches, "MAX_BATCH_OPCODES", 200_000)
    member, content = OPCODE_BOMBS[name]
    folder = cifar.write_cifar(tmp_path)
    (folder / member).write_bytes(content)
    tracemalloc.start()
    with pytest.raises(
        DataError,
        match=f"{member} is not a readable CIFAR-10 batch .*(memo index|opcodes|stack grows|expected 2147483648 bytes)",
    ):
        datasets.load_cifar10(tmp_path, num_train=100, num_val=10, num_test=5, download=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4e6, peak


# Class 6: huge arguments. The API estimates memory before training, as the CLI does.


def trainers():
    from twolayer_xp import Population, TwoLayerNet
    from twolayer_xp.sklearn import TwoLayerClassifier

    def fit(net):
        return lambda X, y, batch_size: net.train(
            X, y, X, y, learning_rate=1e-3, reg=0.0, num_iters=2, batch_size=batch_size
        )

    return {
        "net": lambda: fit(TwoLayerNet(5, 4, 3, rng=0)),
        "population": lambda: fit(Population(5, 4, 3, size=2, rng=0)),
        "classifier": lambda: (
            lambda X, y, batch_size: TwoLayerClassifier(
                hidden_size=4, num_iters=2, batch_size=batch_size, random_state=0
            ).fit(X, y)
        ),
    }


@pytest.mark.parametrize("trainer", ["net", "population", "classifier"])
@pytest.mark.parametrize("batch_size", [10**9, np.uint64(2**63)], ids=["1e9", "uint64-2**63"])
def test_a_huge_batch_size_is_refused_before_allocating(trainer, batch_size):
    import tracemalloc

    X, y = np.random.default_rng(0).standard_normal((40, 5)), np.arange(40) % 3
    fit = trainers()[trainer]()
    tracemalloc.start()
    with pytest.raises(ValueError, match=f"batch_size={int(batch_size)} needs about .* smaller batch_size"):
        fit(X, y, batch_size)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20e6, peak


def test_the_estimate_counts_against_the_memory_available(monkeypatch):
    """2 million rows a step (about 0.5 GB here) against 50 MB available: refused, though it would fit."""
    from twolayer_xp.core import resources

    monkeypatch.setattr(resources, "available_bytes", lambda: 50 << 20)
    X, y = np.random.default_rng(0).standard_normal((40, 5)), np.arange(40) % 3
    with pytest.raises(ValueError, match="batch_size=2000000 needs about .* but 50.0 MiB is available"):
        trainers()["net"]()(X, y, 2_000_000)


# ------------------------------------------------------------------------------------------
# Class 9: the API and the estimator.


def test_save_refuses_params_that_load_would_refuse(tmp_path):
    from twolayer_xp import TwoLayerNet

    net = TwoLayerNet(5, 4, 3, rng=0)
    net.params["W2"][1, 2] = np.nan
    with pytest.raises(ValueError, match="cannot save checkpoint .*model.npz: param W2 is not a finite"):
        net.save(tmp_path / "model.npz")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bit_generator", ["PCG64", "Philox", "MT19937", "SFC64", "PCG64DXSM"])
def test_any_generator_trains_saves_and_resumes_bit_identically(tmp_path, bit_generator):
    from twolayer_xp import TwoLayerNet

    X, y = np.random.default_rng(0).standard_normal((60, 5)), np.arange(60) % 3
    kwargs = dict(learning_rate=0.1, reg=1e-3, batch_size=16, learning_rate_decay=0.9)

    def net():
        return TwoLayerNet(5, 4, 3, rng=np.random.Generator(getattr(np.random, bit_generator)(7)))

    whole = net()
    whole.train(X, y, X, y, num_iters=40, **kwargs)
    first = net()
    first.train(X, y, X, y, num_iters=25, **kwargs)
    first.save(tmp_path / "model.npz")
    resumed = TwoLayerNet.load(tmp_path / "model.npz")
    resumed.train(X, y, X, y, num_iters=15, **{**kwargs, "learning_rate": resumed.state.learning_rate})
    for name, p in whole.params.items():
        np.testing.assert_array_equal(resumed.params[name], p)
    assert resumed.state.rng.get_state() == whole.state.rng.get_state()


class _NA:
    """Behaves like pandas' NA where it matters: equal to nothing, not even as a bool."""

    def __eq__(self, other):
        return self

    def __bool__(self):
        raise TypeError("boolean value of NA is ambiguous")

    __hash__ = object.__hash__


def pandas_series(values, dtype=None):
    pd = pytest.importorskip("pandas")
    return pd.Series([pd.NA if v is _NA else v for v in values], dtype=dtype)


LABELS = {
    "None-in-strings": (lambda: np.array(["a", "b", None, "a", "b", "a"], dtype=object), ValueError),
    "NaN-in-strings": (lambda: np.array(["a", "b", float("nan"), "a", "b", "a"], dtype=object), ValueError),
    "NA-like-in-objects": (lambda: np.array(["a", "b", _NA(), "a", "b", "a"], dtype=object), ValueError),
    "mixed-kinds": (lambda: np.array([1, "a", 2, 1, "a", 2], dtype=object), TypeError),
    "pandas-NA-object": (lambda: pandas_series(["a", "b", _NA, "a", "b", "a"], object), ValueError),
    "pandas-NA-string": (lambda: pandas_series(["a", "b", _NA, "a", "b", "a"], "string"), ValueError),
}


@pytest.mark.parametrize("case", list(LABELS))
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_missing_or_unordered_labels_name_y(case, method):
    from twolayer_xp.sklearn import TwoLayerClassifier

    make, error = LABELS[case]
    y = make()
    X = np.random.default_rng(0).standard_normal((6, 3))
    classifier = TwoLayerClassifier(hidden_size=3, num_iters=2)
    extra = {"classes": np.array(["a", "b"], dtype=object)} if method == "partial_fit" else {}
    with pytest.raises(error, match=r"^y (holds 1 missing label\(s\)|mixes labels)"):
        getattr(classifier, method)(X, y, **extra)
