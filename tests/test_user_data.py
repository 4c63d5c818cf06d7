"""MNIST-format IDX files, and a user's own .npz / .csv, written here in their real formats."""

import gzip
import hashlib
import os
import re
import stat
import struct

import numpy as np
import pytest

from twolayer_xp import TwoLayerNet
from twolayer_xp.io import datasets as data
from twolayer_xp.io import idx, mnist, user_data
from twolayer_xp.io.cifar_batches import DataError

# ------------------------------------------------------------------------------------------
# IDX and MNIST


def _write_idx_set(folder, name, train_rows=70, test_rows=30, monkeypatch=None):
    """The four gzipped IDX files of ``name`` in folder/name, their sha256 pinned in its place."""
    rng = np.random.default_rng(0)
    arrays = {
        ("train", "images"): rng.integers(0, 256, (train_rows, 28, 28), dtype=np.uint8),
        ("train", "labels"): (np.arange(train_rows) % 10).astype(np.uint8),
        ("test", "images"): rng.integers(0, 256, (test_rows, 28, 28), dtype=np.uint8),
        ("test", "labels"): ((np.arange(test_rows) * 3) % 10).astype(np.uint8),
    }
    spec = mnist.IDX_SETS[name]
    files = {}
    (folder / name).mkdir(parents=True)
    for key, array in arrays.items():
        blob = gzip.compress(idx.idx_bytes(array))
        fname = spec.files[key][0]
        (folder / name / fname).write_bytes(blob)
        files[key] = (fname, hashlib.sha256(blob).hexdigest())
    monkeypatch.setitem(mnist.IDX_SETS, name, spec._replace(files=files))
    return arrays


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_set_split_and_preprocessing(tmp_path, monkeypatch, name):
    raw = _write_idx_set(tmp_path, name, monkeypatch=monkeypatch)
    ds = data.load(name, data_dir=tmp_path, num_train=50, num_val=20, num_test=30, download=False)
    assert ds.sizes() == {"train": 50, "val": 20, "test": 30} and ds.X_train.shape == (50, 784)
    train = raw[("train", "images")].reshape(70, 784) / 255.0
    np.testing.assert_allclose(ds.X_train + ds.mean_image, train[:50], atol=1e-6)
    np.testing.assert_allclose(ds.X_val + ds.mean_image, train[50:], atol=1e-6)
    np.testing.assert_array_equal(ds.y_test, (np.arange(30) * 3) % 10)
    assert ds.scale == 255.0 and ds.image_shape == (28, 28) and ds.num_classes == 10
    assert ds.class_names == list(mnist.IDX_SETS[name].class_names)


def test_idx_checksum_mismatch_says_delete_and_retry(tmp_path, monkeypatch):
    _write_idx_set(tmp_path, "mnist", monkeypatch=monkeypatch)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b tampered")
    with pytest.raises(DataError, match="sha256 .* expected .*delete it and run again"):
        data.load("mnist", data_dir=tmp_path, num_train=50, num_val=20, num_test=30, download=False)


def test_idx_set_larger_split_than_the_data_is_refused(tmp_path, monkeypatch):
    _write_idx_set(tmp_path, "mnist", monkeypatch=monkeypatch)
    with pytest.raises(ValueError, match="60000 training .* num_train \\+ num_val = 60001"):
        data.load("mnist", data_dir=tmp_path, num_train=60_000, num_val=1, download=False)
    with pytest.raises(ValueError, match="80 train rows asked for; mnist has 70"):
        data.load("mnist", data_dir=tmp_path, num_train=60, num_val=20, num_test=30, download=False)


def _idx_file(tmp_path, blob, gz=False):
    path = tmp_path / ("f.gz" if gz else "f")
    path.write_bytes(gzip.compress(blob) if gz else blob)
    return path


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    "blob,words",
    [
        (b"\x00\x00\x08", "not an IDX file"),
        (b"\x01\x00\x08\x03" + struct.pack(">3I", 1, 28, 28), "not an IDX file"),
        (b"\x00\x00\x0d\x03" + struct.pack(">3I", 1, 28, 28), "IDX type 0x0d"),
        (b"\x00\x00\x08\x02" + struct.pack(">2I", 1, 784), "2 dimensions; expected 3"),
        (b"\x00\x00\x08\x03" + struct.pack(">2I", 1, 28), "ends inside its header"),
        (b"\x00\x00\x08\x03" + struct.pack(">3I", 1, 28, 27), "announces shape \\(1, 28, 27\\)"),
        # a header announcing 4 billion rows is refused before any allocation
        (b"\x00\x00\x08\x03" + struct.pack(">3I", 2**32 - 1, 28, 28), "0 < N <= 100"),
        (b"\x00\x00\x08\x03" + struct.pack(">3I", 2, 28, 28) + bytes(784), "truncated: 784 of the 1568"),
        (b"\x00\x00\x08\x03" + struct.pack(">3I", 1, 28, 28) + bytes(785), "more data than the 784 bytes"),
    ],
)
def test_idx_reader_refuses_bad_files(tmp_path, blob, words, gz):
    with pytest.raises(DataError, match=words):
        idx.read_idx(_idx_file(tmp_path, blob, gz), (28, 28), max_rows=100)


def test_idx_reader_refuses_a_broken_gzip(tmp_path):
    path = tmp_path / "f.gz"
    path.write_bytes(gzip.compress(idx.idx_bytes(np.zeros((3, 28, 28), np.uint8)))[:-12])
    with pytest.raises(DataError, match="f.gz"):
        idx.read_idx(path, (28, 28), max_rows=100)


def test_idx_round_trip(tmp_path):
    array = np.arange(2 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(2, 28, 28)
    np.testing.assert_array_equal(
        idx.read_idx(_idx_file(tmp_path, idx.idx_bytes(array), gz=True), (28, 28), 2), array
    )


# ------------------------------------------------------------------------------------------
# a user's own .npz


def test_npz_with_all_splits_and_string_labels(tmp_path):
    rng = np.random.default_rng(0)
    names = np.array(["cat", "dog", "emu"])
    arrays = {}
    for split, n in (("train", 60), ("val", 10), ("test", 12)):
        arrays[f"X_{split}"] = rng.normal(5.0, 3.0, (n, 4))
        arrays[f"y_{split}"] = names[np.arange(n) % 3]
    np.savez(tmp_path / "mine.npz", **arrays)
    ds = data.load(str(tmp_path / "mine.npz"))
    assert ds.sizes() == {"train": 60, "val": 10, "test": 12} and ds.notes == ()
    assert ds.class_names == ["cat", "dog", "emu"]
    np.testing.assert_array_equal(ds.y_val, np.arange(10) % 3)
    # standardized with the training rows' statistics
    np.testing.assert_allclose(ds.X_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.X_train.std(axis=0), 1, atol=1e-4)
    expected = (arrays["X_test"].astype(np.float32) - ds.mean_image) / ds.feature_std
    np.testing.assert_allclose(ds.X_test, expected, rtol=1e-6)


def test_npz_missing_splits_are_held_out_and_said_so(tmp_path):
    X = np.arange(200 * 3, dtype=np.float64).reshape(200, 3)
    np.savez(tmp_path / "d.npz", X_train=X, y_train=np.arange(200) % 2 + 7)
    ds = data.load(str(tmp_path / "d.npz"))
    assert ds.sizes() == {"train": 144, "val": 16, "test": 40}
    assert ds.class_names == ["7", "8"]
    assert any("no test split: 40 of its 200" in n for n in ds.notes)
    assert any("no val split: 16 of its 160" in n for n in ds.notes)
    # the same file splits the same way every time
    np.testing.assert_array_equal(ds.y_test, data.load(str(tmp_path / "d.npz")).y_test)


@pytest.mark.parametrize(
    "arrays,words",
    [
        ({"X": np.zeros((3, 2))}, "needs arrays X_train and y_train"),
        ({"X_train": np.zeros((3, 2)), "y_train": np.zeros(4)}, "y_train must be 3 labels"),
        ({"X_train": np.zeros(3), "y_train": np.zeros(3)}, "X_train must be a non-empty 2-D numeric array"),
        (
            {"X_train": np.zeros((3, 2)), "y_train": np.zeros(3), "X_val": np.zeros((2, 2))},
            "X_val and y_val come together",
        ),
        (
            {
                "X_train": np.zeros((3, 2)),
                "y_train": np.zeros(3),
                "X_test": np.zeros((2, 5)),
                "y_test": np.zeros(2),
            },
            "X_test has 5 features; X_train has 2",
        ),
        ({"X_train": np.zeros((3, 2)), "y_train": np.array([None] * 3)}, "holds Python objects"),
    ],
)
def test_npz_refused_before_reading(tmp_path, arrays, words):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=words):
        data.load(str(tmp_path / "bad.npz"))


def test_npz_whose_header_asks_for_too_much_memory(tmp_path, monkeypatch):
    np.savez(tmp_path / "big.npz", X_train=np.zeros((50, 4)), y_train=np.zeros(50))
    monkeypatch.setattr(user_data.memory, "available_bytes", lambda: 1000)
    with pytest.raises(ValueError, match="reading big.npz needs about .* but 1000.0 B is available"):
        data.load(str(tmp_path / "big.npz"))


# ------------------------------------------------------------------------------------------
# a user's own .csv


def _write_csv(path, header, rows):
    path.write_text("\n".join([",".join(header), *(",".join(map(str, r)) for r in rows)]) + "\n")
    return path


def test_csv_label_last_by_default_and_numeric_labels_sort_as_numbers(tmp_path):
    rows = [(i, i * 0.5, [2, 10][i % 2]) for i in range(50)]
    ds = data.load(str(_write_csv(tmp_path / "t.csv", ["a", "b", "y"], rows)))
    assert ds.class_names == ["2", "10"] and ds.num_features == 2
    assert ds.sizes() == {"train": 36, "val": 4, "test": 10}


def test_csv_named_label_column_in_the_middle_with_quotes_and_blank_lines(tmp_path):
    text = 'x1,"kind",x2\n1.0,"red",2\n\n3,"blue",4.5\n5,red,6\n7,blue,8\n9,red,10\n11,blue,12\n13,red,14\n15,blue,16\n17,red,18\n19,blue,20\n'
    (tmp_path / "q.csv").write_text(text)
    splits, names, notes = user_data.read(tmp_path / "q.csv", "kind")
    assert names == ["blue", "red"] and len(notes) == 2
    X = np.concatenate([splits[s][0] for s in ("train", "val", "test")])
    assert sorted(X[:, 0].tolist()) == [1, 3, 5, 7, 9, 11, 13, 15, 17, 19] and X.shape == (10, 2)


@pytest.mark.parametrize(
    "text,label,words",
    [
        ("a,b,y\n1,2,x\n3,oops,y\n", None, "features must be numbers"),
        ("a,b,y\n1,2,x\n3,4\n", None, "line 3 has 2 columns; the header has 3"),
        ("a,b,y\n1,2,x\n", "z", "--label-column 'z' is not a column of bad.csv \\(columns: a, b, y\\)"),
        ("y\n1\n", None, "at least 2 columns"),
        ("a,y\n", None, "at least one data row"),
        ("a,b,y\n1,nan,x\n2,3,y\n", None, "data row 1 holds a NaN or inf feature"),
        ("a,y\n1,x\n2,x\n3,x\n", None, "at least 2 classes"),
        ("a,b,y\n1,2,x\n3,4, \n5,6,y\n", None, "data row 2 has an empty label \\('y'\\)"),  # not a class ''
    ],
)
def test_csv_refused_in_one_line(tmp_path, text, label, words):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(ValueError, match=words):
        user_data.read(tmp_path / "bad.csv", label)


def test_csv_memory_estimate_comes_before_parsing(tmp_path, monkeypatch):
    path = _write_csv(tmp_path / "m.csv", ["a", "y"], [(i, i % 2) for i in range(100)])
    monkeypatch.setattr(user_data.memory, "available_bytes", lambda: 100)
    monkeypatch.setattr(np, "loadtxt", lambda *a, **k: pytest.fail("parsed before the estimate"))
    with pytest.raises(ValueError, match=r"reading m.csv \(100 rows\) needs about"):
        user_data.read(path)


def test_label_column_only_for_a_csv(tmp_path):
    np.savez(tmp_path / "d.npz", X_train=np.zeros((30, 2)), y_train=np.arange(30) % 2)
    with pytest.raises(ValueError, match="--label-column applies to a .csv"):
        user_data.read(tmp_path / "d.npz", "y")


# ------------------------------------------------------------------------------------------
# Every data file is a regular file: a FIFO never hangs a reader, a device is never read


def test_a_fifo_where_an_idx_file_should_be_is_refused_not_downloaded_over(tmp_path, monkeypatch):
    _write_idx_set(tmp_path, "mnist", monkeypatch=monkeypatch)
    fifo = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    fifo.unlink()
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="FIFO.*read only from regular files"):
        data.load("mnist", data_dir=tmp_path, num_train=50, num_val=20, num_test=30)
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # still the user's FIFO


def test_the_idx_reader_refuses_a_device(tmp_path):
    link = tmp_path / "images.gz"
    link.symlink_to("/dev/zero")
    with pytest.raises(DataError, match="read only from regular files"):
        idx.read_idx(link, (28, 28), 10)


@pytest.mark.parametrize("name", ["data.csv", "data.npz"])
def test_own_data_that_is_a_fifo_or_a_device_is_one_line(tmp_path, capsys, train, one_error_line, name):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    assert train("--dataset", fifo, "--out", tmp_path / "run", "--quiet") == 2
    assert "FIFO" in one_error_line(capsys)
    device = tmp_path / ("zero-" + name)
    device.symlink_to("/dev/zero")
    with pytest.raises(DataError, match="not a regular file"):
        user_data.read(device)
    assert not (tmp_path / "run").exists()


def test_rows_to_predict_on_from_a_fifo_are_refused(tmp_path):
    fifo = tmp_path / "new.csv"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="FIFO"):
        user_data.read_rows(fifo, None, 4)


def test_a_sweep_reads_a_downloaded_set_from_its_data_dir(tmp_path, monkeypatch):
    """sweep --data-dir: the folder a cluster's workers find the files in without a download
    (the download fails here: there is no network, and TWOLAYER_XP_DATA points nowhere)."""
    pytest.importorskip("optuna")
    from twolayer_xp.app import cli
    from twolayer_xp.app import config as configs

    _write_idx_set(tmp_path / "data", "mnist", monkeypatch=monkeypatch)
    monkeypatch.setitem(
        configs.SPLITS, "mnist", {**configs.SPLITS["mnist"], "num_train": 50, "num_val": 20, "num_test": 30}
    )
    monkeypatch.setenv("TWOLAYER_XP_DATA", str(tmp_path / "nowhere"))
    args = ["--dataset", "mnist", "--trials", "2", "--population", "2", "--num-iters", "5", "--quiet"]
    assert (
        cli.main(["sweep", *args, "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "sw")]) == 0
    )
    assert (tmp_path / "sw" / "best" / "model.npz").exists() and not (tmp_path / "nowhere").exists()


def test_values_beyond_the_dtypes_range_are_refused_not_made_inf(tmp_path):
    """A finite 1e300 in float32 becomes inf, and the net's scores NaN: it was refused as 'X_train
    contains non-finite values' after three numpy warnings (training), or predicted class 0
    (predict). Now it is named where the cast would happen, with no warning, in training and in
    a saved model's preprocessing alike; float64 holds it."""
    import warnings

    (tmp_path / "huge.csv").write_text("a,b,y\n1,2,0\n3,-1e300,1\n5,6,1\n7,8,0\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(
            ValueError, match="holds a value of -1e\\+300 \\(feature 1, 0-based\\), beyond float32"
        ):
            data.load(str(tmp_path / "huge.csv"))
        from twolayer_xp.io import preprocessing

        prep, X = preprocessing.fitted(np.ones((4, 2)), 1.0, True, ["a", "b"], None, np.float32)
        with pytest.raises(ValueError, match="holds a value of 1e\\+39 \\(feature 0, 0-based\\)"):
            prep.apply(np.array([[1e39, 0.0]]))
        assert prep.apply(np.array([[3.4028235e38, 0.0]])).dtype == np.float32  # rounds to the largest
        # A model that scales its inputs (digits divides by 16) names the user's value and range
        # (it named the scaled ones: 6.25e+38, +-3.4e+38).
        scaled = preprocessing.fitted(np.ones((4, 2)), 16.0, False, ["a", "b"], None, np.float32)[0]
        with pytest.raises(
            ValueError,
            match=r"value of 1e\+40 \(feature 1, 0-based\), beyond float32's range \(\+-5.44e\+39 for inputs this model divides by 16\)",
        ):
            scaled.apply(np.array([[0.0, 1e40]]))
        assert scaled.apply(np.array([[16 * 3.4028235e38, 0.0]])).dtype == np.float32
        with pytest.raises(ValueError, match="X contains 1 non-finite"):  # inf: the finite checks' words
            TwoLayerNet(2, 3, 2).predict(prep.apply(np.array([[np.inf, 0.0]])))
        assert (
            preprocessing.fitted(np.array([[1e300], [1.0]]), 1.0, False, [], None, np.float64)[1].dtype
            == np.float64
        )


def test_values_beyond_the_range_after_standardization_are_named_not_blamed_as_nan(tmp_path):
    """A column of std 1e-6 is multiplied by 1e6: 1e35 fits float32 but its standardized value
    does not. The validation split (training) and a saved model's raw rows (predict) became inf
    after a numpy warning, and the net blamed 'NaN or inf' in an input that was finite; now the
    user's own value is named, with the range this model's scaling leaves."""
    import warnings

    from twolayer_xp.io import preprocessing

    rng = np.random.default_rng(0)
    X = np.c_[1e-6 * rng.standard_normal(40), rng.standard_normal(40)]
    y = np.arange(40) % 2
    X_val = X[:10].copy()
    X_val[3, 0] = 1e35
    splits = {"X_train": X, "y_train": y, "X_val": X_val, "y_val": y[:10], "X_test": X[:4], "y_test": y[:4]}
    np.savez(tmp_path / "tiny.npz", **splits)
    prep = preprocessing.fitted(X, 1.0, True, ["a", "b"], None, np.float32)[0]
    std = float(prep.std[0])  # as data.load fits it: the same training rows
    assert 5e-7 < std < 2e-6
    reach, m = float(np.finfo(np.float32).max) * std, float(prep.mean[0])
    words = (
        r"the input holds a value of {} \(feature 0, 0-based\), beyond what this model takes in float32 \("
        + re.escape(f"{m - reach:.3g} to {m + reach:.3g}: it subtracts {m:.3g} and divides by {std:g}")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=words.format(r"1e\+35")):
            data.load(str(tmp_path / "tiny.npz"))
        with pytest.raises(ValueError, match=words.format(r"-1e\+35")):
            prep.apply(np.array([[0.0, 1.0], [-1e35, 0.0]]))
        with pytest.raises(ValueError, match=r"X contains 1 non-finite"):  # inf: the finite checks' words
            TwoLayerNet(2, 3, 2).predict(prep.apply(np.array([[np.inf, 0.0]])))
        assert np.isfinite(prep.apply(np.array([[1e31, 1e38]]))).all()  # 1e31 / 1e-6 fits
        # a float64 model: its standardized value overflows float64 itself, which the check missed
        prep64 = preprocessing.fitted(X, 1.0, True, ["a", "b"], None, np.float64)[0]
        with pytest.raises(
            ValueError, match=r"the input holds a value of 1e\+305 \(feature 0, .* in float64"
        ):
            prep64.apply(np.array([[1e305, 0.0]]))
        # a huge mean shifts the range: 1e308 fits float64, 1e308 - (-1e308) does not
        shifted = preprocessing.Preprocessing(1.0, np.array([-1e308, 0.0]), None, ["a", "b"])
        with pytest.raises(
            ValueError,
            match=r"1e\+308 \(feature 0, .* in float64 \(-inf to 7.98e\+307: it subtracts -1e\+308",
        ):
            shifted.apply(np.array([[1e308, 0.0]]))
        # training values whose mean or centring overflows: named, not numpy's warnings and a false blame
        with pytest.raises(ValueError, match="training feature 0 .* its mean overflows float64"):
            preprocessing.fitted(
                np.array([[1.7e308, 0.0], [1.7e308, 1.0]]), 1.0, True, ["a", "b"], None, np.float64
            )
        wide = np.array([[3e38, 0.0], [-3e38, 1.0], [-3e38, 2.0]])
        with pytest.raises(ValueError, match=r"the input holds a value of 3e\+38 \(feature 0, .* in float32"):
            preprocessing.fitted(wide, 1.0, True, ["a", "b"], None, np.float32)
