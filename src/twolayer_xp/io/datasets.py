"""Datasets on the host (numpy), split and preprocessed as CS231n does.

digits: scikit-learn's 8x8 handwritten digits, shipped inside scikit-learn (no download).
cifar10: the CS231n dataset, read from the official python-format batches, downloaded with pooch
when absent. mnist, fashion-mnist: the IDX files (``idx``), downloaded once and sha256-checked.
A path ending in .npz or .csv: the user's own data (``user_data``). All come back as a
``Dataset`` of float arrays preprocessed as ``preprocessing`` says (scaled, the training mean
subtracted), with the ``Preprocessing`` kept so a saved model can repeat it on new rows.
"""

from __future__ import annotations

import gzip
import importlib.util
import numbers
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twolayer_xp.errors import one_line
from twolayer_xp.io import mnist, user_data
from twolayer_xp.io.cifar_batches import CIFAR10_ROW, MAX_BATCH_FILE_BYTES, DataError, read_batch
from twolayer_xp.io.files import atomic_write, expand_path, open_regular
from twolayer_xp.io.mnist import POOCH_FIX, default_data_dir, has_tqdm
from twolayer_xp.io.preprocessing import Preprocessing, fitted

DATASETS = ("digits", "cifar10", *mnist.IDX_SETS)
DIGITS_SCALE = 16.0  # digits' pixel intensities are 0..16

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE_BYTES = 170_498_071  # what CIFAR10_MD5 was computed over
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
CIFAR10_SPLIT = {"num_train": 49000, "num_val": 1000, "num_test": 1000}  # CS231n's
CIFAR10_ROWS = {"train": 50000, "test": 10000}  # images in the five training batches / test_batch

# digits: a fixed split, independent of the model's seed, so test accuracy is comparable.
# 1,300 training rows make an epoch a whole number of batches of 100 (CS231n's schedule counts
# epochs with a float modulo, so a fractional N / batch_size would record accuracy only once).
DIGITS_SPLIT_SEED = 0
DIGITS_NUM_TEST = 300
DIGITS_NUM_TRAIN = 1300  # the remaining 197 rows are the validation set
DIGITS_FILE = ("datasets", "data", "digits.csv.gz")  # inside scikit-learn's package folder
DIGITS_ROWS = (1797, 65)  # 8 x 8 pixels (0..16) and the label (0..9) per row


@dataclass
class Dataset:
    """Train/val/test splits on the host. X_*: (N, D) float; y_*: (N,) int64 in [0, C)."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    mean_image: np.ndarray  # (D,), already subtracted from every split
    image_shape: tuple | None  # how one row displays: (8, 8) or (32, 32, 3); None: not an image
    class_names: list
    scale: float = 1.0  # raw rows were divided by this before the mean was subtracted
    feature_std: np.ndarray | None = None  # (D,): each column then divided by this (own data)
    notes: tuple = ()  # what the loader decided on its own (e.g. a split it held out)
    label_column: str | None = None  # a .csv's label column, by name

    @property
    def preprocessing(self) -> Preprocessing:
        """Raw rows -> this data set's inputs, as a saved model repeats it."""
        return Preprocessing(
            self.scale,
            self.mean_image,
            self.feature_std,
            self.class_names,
            self.image_shape,
            self.label_column,
        )

    @property
    def num_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def sizes(self) -> dict:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


def load(name: str, dtype: str = "float32", **options) -> Dataset:
    """Load dataset ``name`` (one of DATASETS, or a .npz/.csv path); options go to its loader."""
    if user_data.is_data_file(name):
        return load_file(name, dtype=dtype, **options)
    loaders = {"digits": load_digits, "cifar10": load_cifar10}
    loaders.update(dict.fromkeys(mnist.IDX_SETS, lambda **o: load_idx_set(name, **o)))
    if name not in loaders:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)} or a .npz/.csv file; got {name!r}")
    return loaders[name](dtype=dtype, **options)


def test_rows(name: str, **options) -> tuple[np.ndarray, np.ndarray, list]:
    """(raw test rows, their labels, class names) of dataset ``name``, before any preprocessing:
    what ``twolayer-xp predict MODEL NAME`` feeds a saved model."""
    if user_data.is_data_file(name):
        splits, names, _ = user_data.read(name, options.get("label_column"))
        return (*splits["test"], names)
    if name == "digits":
        X, y, _ = _digits_rows()
        test = _digits_split(len(y))[0]
        return X[test], y[test], [str(d) for d in range(10)]
    if name in mnist.IDX_SETS:
        rows = mnist.read_split(name, "test", options.get("data_dir"), options.get("num_test"))
        return (*rows, list(mnist.IDX_SETS[name].class_names))
    if name == "cifar10":
        folder = find_or_fetch_cifar10(options.get("data_dir"))
        data, labels = read_batch(folder / "test_batch")
        n = options.get("num_test") or CIFAR10_SPLIT["num_test"]
        return _to_hwc(data[:n], "float32"), labels[:n], read_batch(folder / "batches.meta", meta=True)
    raise ValueError(f"dataset must be one of {', '.join(DATASETS)} or a .npz/.csv file; got {name!r}")


def load_file(path, dtype: str = "float32", label_column: str | None = None) -> Dataset:
    """A user's .npz or .csv (see ``user_data``): each column standardized with the training
    rows' mean and standard deviation, since its columns may have any scale."""
    splits, names, notes = user_data.read(path, label_column)
    label = user_data.label_column_of(path, label_column)
    pre, X_train = fitted(splits["train"][0], 1.0, True, names, None, dtype, label)
    return _dataset(str(path), pre, (X_train, splits["train"][1]), splits["val"], splits["test"], notes)


def load_idx_set(
    name: str,
    data_dir=None,
    num_train: int | None = None,
    num_val: int | None = None,
    num_test: int | None = None,
    dtype: str = "float32",
    download: bool = True,
    read_only: bool = False,
) -> Dataset:
    """MNIST or Fashion-MNIST: train = the first num_train of the 60,000 training images, val =
    the next num_val, test = the first num_test of the 10,000 test images; pixels / 255, the
    training mean image subtracted. read_only: data_dir is only read, nothing downloaded into it."""
    download = download and not read_only
    spec = mnist.IDX_SETS[name]
    split = {k: _row_count(k, v) for k, v in mnist.default_split(num_train, num_val, num_test).items()}
    if split["num_train"] + split["num_val"] > spec.rows["train"] or split["num_test"] > spec.rows["test"]:
        raise ValueError(
            f"{name} has {spec.rows['train']} training and {spec.rows['test']} test images; num_train + "
            f"num_val = {split['num_train'] + split['num_val']} and num_test = {split['num_test']} were asked for"
        )
    X, y = mnist.read_split(name, "train", data_dir, split["num_train"] + split["num_val"], download)
    X_test, y_test = mnist.read_split(name, "test", data_dir, split["num_test"], download)
    n = split["num_train"]
    pre, X_train = fitted(X[:n], mnist.SCALE, False, spec.class_names, mnist.IMAGE_SHAPE, dtype)
    return _dataset(name, pre, (X_train, y[:n]), (X[n:], y[n:]), (X_test, y_test))


def _dataset(name, pre: Preprocessing, train, val, test, notes=()) -> Dataset:
    """A Dataset of the preprocessed training rows and the raw val/test rows put through ``pre``."""
    val, test = ((pre.apply(X, train[0].dtype, copy=False), y) for X, y in (val, test))
    return Dataset(
        name, *train, *val, *test, mean_image=pre.mean, image_shape=pre.image_shape,
        class_names=pre.class_names, scale=pre.scale, feature_std=pre.std, notes=tuple(notes),
        label_column=pre.label_column,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------
# digits


def load_digits(dtype: str = "float32") -> Dataset:
    """1,797 8x8 digits scaled to [0, 1]: 1,300 train / 197 val / 300 test, fixed shuffle."""
    X, y, names = _digits_rows()
    test, val, train = _digits_split(len(y))
    pre, X_train = fitted(X[train], DIGITS_SCALE, False, names, (8, 8), dtype)
    return _dataset("digits", pre, (X_train, y[train]), (X[val], y[val]), (X[test], y[test]))


def _digits_rows() -> tuple[np.ndarray, np.ndarray, list]:
    """scikit-learn's 1,797 digits: raw pixels (N, 64) in 0..16, labels, names."""
    pixels, labels = _digits()
    return pixels, labels.astype(np.int64), [str(d) for d in range(10)]


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """(pixels (1797, 64), labels (1797,)) as float64, read straight from the file scikit-learn
    ships (``sklearn/datasets/data/digits.csv.gz``: 64 pixels and the label per row) and checked;
    importing ``sklearn.datasets`` instead costs ~1.5 s (it pulls in SciPy). A scikit-learn whose
    file moved or changed form is asked through its own loader."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None:
        raise ImportError(
            'the digits dataset ships with scikit-learn, which is not installed; fix: pip install -e ".[cli]"'
        )
    for folder in spec.submodule_search_locations or ():
        try:
            with gzip.open(Path(folder, *DIGITS_FILE)) as f:
                rows = np.loadtxt(f, delimiter=",", dtype=np.float64)
        except (OSError, ValueError):
            continue
        if (
            rows.shape == DIGITS_ROWS
            and np.array_equal(rows, np.clip(np.rint(rows), 0, 16))
            and rows[:, -1].max() <= 9
        ):
            return rows[:, :-1], rows[:, -1]
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    return bunch.data, bunch.target


def _digits_split(n: int) -> list:
    """Row indices (test, val, train) of the fixed split."""
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(n)
    return np.split(order, [DIGITS_NUM_TEST, n - DIGITS_NUM_TRAIN])


# ------------------------------------------------------------------------------------------
# CIFAR-10


def load_cifar10(
    data_dir: str | os.PathLike | None = None,
    num_train: int = CIFAR10_SPLIT["num_train"],
    num_val: int = CIFAR10_SPLIT["num_val"],
    num_test: int = CIFAR10_SPLIT["num_test"],
    dtype: str = "float32",
    download: bool = True,
    read_only: bool = False,
) -> Dataset:
    """The CS231n split: train = rows [0, num_train), val = the next num_val rows of the 50,000
    training images, test = the first num_test of test_batch. Rows in height-width-channel
    order (so W1 reshapes to (32, 32, 3, H)), the training mean image subtracted.

    Memory: batches are read one at a time into one uint8 array, then cast straight into the
    float output, so the peak stays under about 2x the float32 training set.
    """
    num_train, num_val, num_test = (
        _row_count(n, v) for n, v in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test))
    )
    if num_train + num_val > CIFAR10_ROWS["train"] or num_test > CIFAR10_ROWS["test"]:  # before allocating
        raise ValueError(
            f"CIFAR-10 has {CIFAR10_ROWS['train']} training and {CIFAR10_ROWS['test']} test images; "
            f"num_train + num_val = {num_train + num_val} and num_test = {num_test} were asked for"
        )
    folder = find_or_fetch_cifar10(data_dir, download=download, read_only=read_only)
    names = read_batch(folder / "batches.meta", meta=True)

    pixels, labels = _training_rows(folder, num_train + num_val)
    test_data, test_labels = read_batch(folder / "test_batch")
    if len(test_labels) < num_test:
        raise ValueError(f"num_test = {num_test} but test_batch holds only {len(test_labels)} images")

    X_train = _to_hwc(pixels[:num_train], dtype)
    X_val = _to_hwc(pixels[num_train:], dtype)
    del pixels
    X_test = _to_hwc(test_data[:num_test], dtype)
    pre, X_train = fitted(X_train, 1.0, False, names, (32, 32, 3), dtype)  # in place: already dtype
    test = (X_test, np.asarray(test_labels[:num_test], dtype=np.int64))
    return _dataset("cifar10", pre, (X_train, labels[:num_train]), (X_val, labels[num_train:]), test)


def _to_hwc(rows: np.ndarray, dtype: str) -> np.ndarray:
    """(N, 3072) uint8 in R,G,B planes -> (N, 3072) float in height-width-channel order."""
    n = rows.shape[0]
    out = np.empty((n, CIFAR10_ROW), dtype=dtype)
    out.reshape(n, 32, 32, 3)[...] = rows.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1)  # cast in the copy
    return out


def find_or_fetch_cifar10(data_dir=None, download: bool = True, read_only: bool = False) -> Path:
    """The ``cifar-10-batches-py`` folder: found in data_dir, or unpacked from the archive there,
    or downloaded (md5-checked) into data_dir and unpacked. data_dir defaults to the user cache.
    read_only: data_dir is only read (an unpacked folder), never created or written."""
    data_dir = expand_path(data_dir, "data_dir (--data-dir)") if data_dir is not None else default_data_dir()
    if data_dir.name == CIFAR10_FOLDER and data_dir.is_dir():
        return _checked_folder(data_dir)
    folder = data_dir / CIFAR10_FOLDER
    if folder.is_dir():
        return _checked_folder(folder)
    archive = data_dir / CIFAR10_ARCHIVE
    if read_only:  # nothing is downloaded or unpacked into data_dir
        raise DataError(
            f"CIFAR-10 not found in {data_dir} (no {CIFAR10_FOLDER}/), which is only read here: "
            "unpack the data there, or pass --data-dir"
        )
    if os.path.lexists(archive):  # whatever sits there is checked, never replaced by a download
        mnist.present(archive, CIFAR10_ARCHIVE_BYTES)
    else:
        if not download:
            raise DataError(f"CIFAR-10 not found in {data_dir} (no {CIFAR10_FOLDER}/ or {CIFAR10_ARCHIVE})")
        _download(archive)
    mnist.check_digest(archive, "md5", CIFAR10_MD5, CIFAR10_ARCHIVE_BYTES)
    _extract(archive, data_dir)
    return _checked_folder(folder)


def _download(archive: Path) -> None:
    try:
        import pooch
    except ImportError:
        raise ImportError(f"downloading CIFAR-10 needs pooch; fix: {POOCH_FIX}") from None
    try:
        archive.parent.mkdir(parents=True, exist_ok=True)
        pooch.retrieve(
            CIFAR10_URL,
            known_hash=f"md5:{CIFAR10_MD5}",
            fname=archive.name,
            path=archive.parent,
            progressbar=has_tqdm(),
        )
    except Exception as exc:  # requests' ConnectionError, HTTPError, pooch's hash ValueError...
        raise DataError(
            f"could not download CIFAR-10 from {CIFAR10_URL} ({one_line(exc, named=True, limit=300)}); "
            f"without network, fetch {CIFAR10_ARCHIVE} (163 MB) elsewhere and pass --data-dir to the "
            f"folder holding it or its {CIFAR10_FOLDER}/"
        ) from None


def _extract(archive: Path, data_dir: Path) -> None:
    """Unpack only the expected regular files of the archive (no links, no paths outside)."""
    wanted = {f"{CIFAR10_FOLDER}/{name}" for name in CIFAR10_FILES}
    try:
        with open_regular(archive, CIFAR10_ARCHIVE_BYTES) as f, tarfile.open(fileobj=f, mode="r:gz") as tar:
            for member in tar.getmembers():
                if member.name in wanted and member.isfile():
                    source = tar.extractfile(member)
                    atomic_write(data_dir / member.name, lambda out, src=source: shutil.copyfileobj(src, out))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(
            f"cannot unpack {archive} ({type(exc).__name__}: {exc}); delete it and run again"
        ) from None


def _checked_folder(folder: Path) -> Path:
    missing = [name for name in CIFAR10_FILES if not mnist.present(folder / name, MAX_BATCH_FILE_BYTES)]
    if missing:
        raise DataError(
            f"{folder} is missing {', '.join(missing)}; delete the folder and run again to re-download"
        )
    return folder


def _training_rows(folder: Path, train_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``train_rows`` images (uint8 rows) and labels of the five training batches,
    read one batch at a time into one preallocated array."""
    pixels = np.empty((train_rows, CIFAR10_ROW), dtype=np.uint8)
    labels = np.empty(train_rows, dtype=np.int64)
    filled = 0
    for batch_name in CIFAR10_FILES[:5]:
        if filled == train_rows:
            break
        data, batch_labels = read_batch(folder / batch_name)
        take = min(len(batch_labels), train_rows - filled)
        pixels[filled : filled + take] = data[:take]
        labels[filled : filled + take] = batch_labels[:take]
        filled += take
        del data
    if filled < train_rows:
        raise ValueError(
            f"num_train + num_val = {train_rows} but the training batches hold only {filled} images"
        )
    return pixels, labels


def _row_count(name: str, value) -> int:
    """A split's size: a positive int (checked here, below the layer of core's argument table,
    with the same words)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)
