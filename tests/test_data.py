"""Datasets: the digits split, and CIFAR-10 read from synthetic files in the real format."""

import codecs
import gzip
import hashlib
import pickle
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from twolayer_xp.io import cifar_batches
from twolayer_xp.io import datasets as data
from twolayer_xp.io.datasets import DataError

import cifar_fixture as cifar  # writers of crafted batches; a support module, not a test module


def test_digits_split_is_fixed_and_centered():
    a, b = data.load_digits(), data.load_digits()
    assert a.sizes() == {"train": 1300, "val": 197, "test": 300}
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert a.X_train.dtype == np.float32 and a.X_train.shape[1] == 64
    np.testing.assert_allclose(a.X_train.mean(axis=0), 0, atol=1e-5)
    assert a.image_shape == (8, 8) and a.num_classes == 10
    # no row is in two splits: the split is a permutation of the 1,797 images
    raw = np.concatenate([a.X_train, a.X_val, a.X_test]) + a.mean_image
    assert np.unique(raw, axis=0).shape[0] >= 1780  # digits holds a few exact duplicates


def test_digits_are_scikit_learns_without_importing_it(tmp_path, monkeypatch):
    """Read straight from the file scikit-learn ships: the same numbers as its loader, and
    sklearn.datasets (SciPy, ~1.5 s) is not imported. A file that moved or holds anything else
    falls back to the loader."""
    code = "import sys; from twolayer_xp.io import datasets; datasets.load_digits(); print('sklearn' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    )
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels, labels = data._digits()
    np.testing.assert_array_equal(pixels, bunch.data)
    np.testing.assert_array_equal(labels, bunch.target)
    for content in (None, b"1,2,3\n"):  # missing, wrong shape
        moved = tmp_path / f"moved-{content is None}"
        if content is not None:
            moved.mkdir()
            (moved / "digits.csv.gz").write_bytes(gzip.compress(content))
        monkeypatch.setattr(data, "DIGITS_FILE", (str(moved), "digits.csv.gz"))  # an absolute path
        pixels, labels = data._digits()
        np.testing.assert_array_equal(pixels, bunch.data)


def test_cifar_split_order_and_preprocessing(tmp_path, cifar):
    cifar.write_cifar(tmp_path, rows_per_batch=60, test_rows=40)
    ds = data.load_cifar10(tmp_path, num_train=250, num_val=30, num_test=20, download=False)
    assert ds.sizes() == {"train": 250, "val": 30, "test": 20}
    assert ds.X_train.dtype == np.float32 and ds.X_train.shape == (250, 3072)
    assert ds.class_names[0] == "airplane" and ds.image_shape == (32, 32, 3)
    # CS231n order: rows flattened height-width-channel, mean of the training rows subtracted
    expected_train = cifar.image_rows(0, 250).reshape(250, 3, 32, 32).transpose(0, 2, 3, 1).reshape(250, 3072)
    np.testing.assert_allclose(ds.X_train + ds.mean_image, expected_train, atol=1e-3)
    np.testing.assert_allclose(ds.mean_image, expected_train.mean(axis=0), rtol=1e-6)
    # val = the rows right after the training rows (they cross into the 5th batch here)
    expected_val = cifar.image_rows(250, 30).reshape(30, 3, 32, 32).transpose(0, 2, 3, 1).reshape(30, 3072)
    np.testing.assert_allclose(ds.X_val + ds.mean_image, expected_val, atol=1e-3)
    np.testing.assert_array_equal(ds.y_val, np.arange(250, 280) % 10)
    np.testing.assert_array_equal(ds.y_test, (np.arange(20) * 3) % 10)
    # pixel (r=1, c=2) of image 0 in channel G is 0*7 + 50 + 3 + 2 = 55, at HWC index (1*32+2)*3+1
    assert ds.X_train[0, (1 * 32 + 2) * 3 + 1] + ds.mean_image[(1 * 32 + 2) * 3 + 1] == pytest.approx(55)


def test_cifar_float64_on_request(tmp_path, cifar):
    cifar.write_cifar(tmp_path)
    ds = data.load_cifar10(
        tmp_path / "cifar-10-batches-py", num_train=100, num_val=10, num_test=5, dtype="float64"
    )
    assert ds.X_train.dtype == np.float64


def test_cifar_peak_memory_under_twice_the_training_set(tmp_path, cifar):
    cifar.write_cifar(tmp_path, rows_per_batch=1000, test_rows=200)
    tracemalloc.start()
    ds = data.load_cifar10(tmp_path, num_train=4900, num_val=100, num_test=100, download=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2 * ds.X_train.nbytes, (peak, ds.X_train.nbytes)


def test_split_larger_than_the_data(tmp_path, cifar):
    cifar.write_cifar(tmp_path)
    with pytest.raises(ValueError, match="num_train \\+ num_val = 400"):
        data.load_cifar10(tmp_path, num_train=350, num_val=50, download=False)
    with pytest.raises(ValueError, match="num_test"):
        data.load_cifar10(tmp_path, num_train=100, num_val=10, num_test=41, download=False)
    with pytest.raises(ValueError, match="num_val must be a positive int"):
        data.load_cifar10(tmp_path, num_val=0, download=False)


def test_archive_is_checked_and_unpacked(tmp_path, monkeypatch, cifar):
    archive = cifar.write_archive(tmp_path / "dl")
    monkeypatch.setattr(data, "CIFAR10_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    ds = data.load_cifar10(tmp_path / "dl", num_train=100, num_val=10, num_test=5, download=False)
    assert ds.sizes()["train"] == 100
    assert (tmp_path / "dl" / "cifar-10-batches-py" / "data_batch_5").is_file()


def test_wrong_md5_is_refused(tmp_path, cifar):
    cifar.write_archive(tmp_path / "dl")  # a valid archive, but not the official bytes
    with pytest.raises(DataError, match="md5 .* expected c58f30108f718f92721af3b95e74349a"):
        data.load_cifar10(tmp_path / "dl", download=False)


def test_no_network_explains_what_to_do(tmp_path, monkeypatch):
    import pooch

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'www.cs.toronto.edu'\nmore lines")

    monkeypatch.setattr(pooch, "retrieve", offline)
    with pytest.raises(DataError) as excinfo:
        data.load_cifar10(tmp_path / "empty")
    message = str(excinfo.value)
    assert "could not download CIFAR-10" in message and "--data-dir" in message and "\n" not in message


def test_absent_without_download(tmp_path, cifar):
    with pytest.raises(DataError, match="CIFAR-10 not found"):
        data.load_cifar10(tmp_path, download=False)


@pytest.mark.parametrize(
    "damage,words",
    [
        (
            lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
            "not a readable CIFAR-10 batch",
        ),
        (lambda p: p.write_bytes(b"not a pickle at all"), "not a readable CIFAR-10 batch"),
        (lambda p: p.write_bytes(pickle.dumps([1, 2, 3], protocol=2)), "holds a list"),
        (
            lambda p: p.write_bytes(pickle.dumps({b"labels": [1]}, protocol=2)),
            "b'data' must be a uint8 array",
        ),
        (
            lambda p, cifar: cifar.write_batch(p, cifar.image_rows(0, 60), [11] * 60),
            "labels must be ints in \\[0, 9\\]",
        ),
        (
            lambda p, cifar: cifar.write_batch(p, cifar.image_rows(0, 60), [1] * 59),
            "b'labels' must be a list of 60",
        ),
        (lambda p: p.unlink(), "is missing"),
    ],
)
def test_damaged_batches(tmp_path, damage, words, cifar):
    folder = cifar.write_cifar(tmp_path)
    if damage.__code__.co_argcount == 2:
        damage(folder / "data_batch_1", cifar)
    else:
        damage(folder / "data_batch_1")
    with pytest.raises(DataError, match=words):
        data.load_cifar10(tmp_path, num_train=100, num_val=10, num_test=5, download=False)


class Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_pickles_with_foreign_code_are_refused(tmp_path, cifar):
    folder = cifar.write_cifar(tmp_path)
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Exploit()}, protocol=2))
    with pytest.raises(DataError, match="refusing to load posix.system|refusing to load os.system"):
        data.load_cifar10(tmp_path, num_train=100, num_val=10, num_test=5, download=False)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="dataset must be one of digits, cifar10, mnist, fashion-mnist or a"):
        data.load("imagenet")


# ------------------------------------------------------------------------------------------
# Hardening (issue #11): a crafted batch is one DataError, whatever it asks for.

RECONSTRUCT = np.ndarray.__reduce__(np.empty(0))[0]  # numpy's _reconstruct, pickled by name


def chain(payload, *codecs_):
    for codec in codecs_:
        payload = cifar.Call(codecs.encode, payload, codec)
    return payload


def array_state(shape, dtype, raw):
    return cifar.Call(RECONSTRUCT, np.ndarray, (0,), b"b", state=(1, shape, dtype, False, raw))


CRAFTED = {
    # _codecs.encode chained with doubling codecs: 1.5 KB asked for 32 GB this way
    "codec-chain": ({"filenames": chain("ab" * 750, "latin1", "hex", "hex", "hex")}, "only str as 'latin1'"),
    "unknown-codec": ({"filenames": chain("ab", "no-such-codec")}, "only str as 'latin1'"),
    "utf16-doubles": ({"filenames": chain("ab" * 750, "utf-16")}, "only str as 'latin1'"),
    # one memoized string encoded again and again: 40 MB from a 1 MB file
    "memo-reuse": (
        {"filenames": [chain("x" * (1 << 20), "latin1") for _ in range(40)]},
        "more than 33280000 text",
    ),
    # numpy.ndarray called directly: an allocation of whatever shape (object arrays are zero-filled)
    "ndarray-call": ({"junk": cifar.Call(np.ndarray, (10**15,), "u1")}, "not callable"),
    "object-dtype": ({"junk": cifar.Call(np.dtype, "O", False, True)}, "numpy.dtype\\('O'\\)"),
    "float-array": ({"junk": array_state((2,), np.dtype("f8"), bytes(16))}, "only uint8"),
    "shape-too-big": ({"junk": array_state((10**12, 10**12), np.dtype("u1"), b"ab")}, "does not match"),
    "not-a-shape": ({"junk": array_state("abc", np.dtype("u1"), b"abc")}, "not a tuple of sizes"),
    "reconstruct-other": (
        {"junk": cifar.Call(RECONSTRUCT, cifar.Call(codecs.encode, "a", "latin1"), (0,), b"b")},
        "only numpy",
    ),
    "bad-latin1": ({"filenames": chain("\u20ac", "latin1")}, "UnicodeEncodeError"),
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_crafted_batches_are_one_line_data_errors(tmp_path, name, cifar):
    extra, words = CRAFTED[name]
    folder = cifar.write_cifar(tmp_path)
    cifar.write_crafted(folder / "data_batch_1", **extra)
    tracemalloc.start()
    with pytest.raises(DataError, match=words) as excinfo:
        data.load_cifar10(tmp_path, num_train=100, num_val=10, num_test=5, download=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert "\n" not in str(excinfo.value) and "data_batch_1" in str(excinfo.value)
    assert peak < 100e6, peak


def test_arrays_beyond_one_batch_of_pixels_are_refused(tmp_path, monkeypatch, cifar):
    """Each array's bytes count against one batch's pixels (memoized raw data reused for many
    arrays would otherwise copy it each time); the cap is lowered here to keep the file small."""
    monkeypatch.setattr(cifar_batches, "MAX_BATCH_ARRAY_BYTES", 100 * 3072)
    raw = bytes(60 * 3072)
    copies = [array_state((60, 3072), np.dtype("u1"), raw) for _ in range(2)]
    folder = cifar.write_cifar(tmp_path)
    cifar.write_crafted(folder / "data_batch_1", copies=copies)
    with pytest.raises(DataError, match="more than 307200 array bytes"):
        data.load_cifar10(tmp_path, num_train=100, num_val=10, num_test=5, download=False)


@pytest.mark.parametrize(
    "batch,words",
    [
        ({b"data": cifar.image_rows(0, 3), b"labels": [[1], [2, 3], 4]}, "labels must be ints"),
        ({b"data": cifar.image_rows(0, 2), b"labels": [True, 1]}, "labels must be ints"),
        ({b"data": cifar.image_rows(0, 2), b"labels": [10**30, 1]}, "labels must be ints"),
        ({b"data": cifar.image_rows(0, 2), b"labels": {1: 2}}, "b'labels' must be a list"),
    ],
)
def test_labels_of_the_wrong_type(tmp_path, batch, words, cifar):
    folder = cifar.write_cifar(tmp_path)
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=words):
        data.load_cifar10(tmp_path, num_train=100, num_val=10, num_test=5, download=False)


def test_label_names_that_are_not_text(tmp_path, cifar):
    folder = cifar.write_cifar(tmp_path)
    names = [b"\xff\xfe"] + cifar.LABEL_NAMES[1:]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    with pytest.raises(DataError, match="10 ASCII label names"):
        data.load_cifar10(tmp_path, num_train=100, num_val=10, num_test=5, download=False)


def test_a_batch_file_larger_than_any_real_one(tmp_path, monkeypatch, cifar):
    monkeypatch.setattr(cifar_batches, "MAX_BATCH_FILE_BYTES", 1000)
    cifar.write_cifar(tmp_path)
    with pytest.raises(DataError, match="data_batch_1 is \\d+ bytes; a CIFAR-10 batch is at most 1000"):
        data.load_cifar10(tmp_path, num_train=100, num_val=10, num_test=5, download=False)
