"""Datasets on the host (numpy), split and preprocessed as CS231n does.

digits: scikit-learn's 8x8 handwritten digits, shipped inside scikit-learn (no download).
cifar10: the CS231n dataset, read from the official python-format batches, downloaded with pooch
when absent. Both come back as a ``Dataset`` of float arrays with the training mean subtracted.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import numbers
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twolayer_xp.io.cifar_batches import CIFAR10_ROW, DataError, read_batch
from twolayer_xp.io.files import atomic_write

DATASETS = ("digits", "cifar10")

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
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
    image_shape: tuple  # how one row displays: (8, 8) or (32, 32, 3)
    class_names: list

    @property
    def num_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def sizes(self) -> dict:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


def load(name: str, dtype: str = "float32", **options) -> Dataset:
    """Load dataset ``name`` ('digits' or 'cifar10'); options go to its loader."""
    if name == "digits":
        return load_digits(dtype=dtype, **options)
    if name == "cifar10":
        return load_cifar10(dtype=dtype, **options)
    raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")


# ------------------------------------------------------------------------------------------
# digits


def load_digits(dtype: str = "float32") -> Dataset:
    """1,797 8x8 digits scaled to [0, 1]: 1,300 train / 197 val / 300 test, fixed shuffle."""
    pixels, labels = _digits()
    X = (pixels / 16.0).astype(dtype)  # pixel intensities are 0..16
    y = labels.astype(np.int64)
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(y))
    test, val, train = np.split(order, [DIGITS_NUM_TEST, len(y) - DIGITS_NUM_TRAIN])
    return _centered(
        "digits",
        (X[train], y[train]),
        (X[val], y[val]),
        (X[test], y[test]),
        image_shape=(8, 8),
        class_names=[str(d) for d in range(10)],
    )


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """(pixels (1797, 64), labels (1797,)) as float64, read straight from the file scikit-learn
    ships (``sklearn/datasets/data/digits.csv.gz``: 64 pixels and the label per row) and checked;
    importing ``sklearn.datasets`` instead costs ~1.5 s (it pulls in SciPy). A scikit-learn whose
    file moved or changed form is asked through its own loader."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None:
        raise ImportError(
            'the digits dataset ships with scikit-learn, which is not installed; fix: pip install "twolayer-xp[cli]"'
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


def _centered(name, train, val, test, image_shape, class_names) -> Dataset:
    """Subtract the training rows' mean image from every split, in place."""
    mean = np.mean(train[0], axis=0, dtype=np.float64).astype(train[0].dtype)
    for X, _ in (train, val, test):
        X -= mean
    return Dataset(
        name, *train, *val, *test, mean_image=mean, image_shape=image_shape, class_names=class_names
    )


# ------------------------------------------------------------------------------------------
# CIFAR-10


def default_data_dir() -> Path:
    """Where CIFAR-10 is looked for and cached: $TWOLAYER_XP_DATA, else the user cache dir."""
    if os.environ.get("TWOLAYER_XP_DATA"):
        return Path(os.environ["TWOLAYER_XP_DATA"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "twolayer-xp"


def load_cifar10(
    data_dir: str | os.PathLike | None = None,
    num_train: int = CIFAR10_SPLIT["num_train"],
    num_val: int = CIFAR10_SPLIT["num_val"],
    num_test: int = CIFAR10_SPLIT["num_test"],
    dtype: str = "float32",
    download: bool = True,
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
    folder = find_or_fetch_cifar10(data_dir, download=download)
    names = read_batch(folder / "batches.meta", meta=True)

    pixels, labels = _training_rows(folder, num_train + num_val)
    test_data, test_labels = read_batch(folder / "test_batch")
    if len(test_labels) < num_test:
        raise ValueError(f"num_test = {num_test} but test_batch holds only {len(test_labels)} images")

    X_train = _to_hwc(pixels[:num_train], dtype)
    X_val = _to_hwc(pixels[num_train:], dtype)
    del pixels
    X_test = _to_hwc(test_data[:num_test], dtype)
    return _centered(
        "cifar10",
        (X_train, labels[:num_train]),
        (X_val, labels[num_train:]),
        (X_test, np.asarray(test_labels[:num_test], dtype=np.int64)),
        image_shape=(32, 32, 3),
        class_names=names,
    )


def _to_hwc(rows: np.ndarray, dtype: str) -> np.ndarray:
    """(N, 3072) uint8 in R,G,B planes -> (N, 3072) float in height-width-channel order."""
    n = rows.shape[0]
    out = np.empty((n, CIFAR10_ROW), dtype=dtype)
    out.reshape(n, 32, 32, 3)[...] = rows.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1)  # cast in the copy
    return out


def find_or_fetch_cifar10(data_dir=None, download: bool = True) -> Path:
    """The ``cifar-10-batches-py`` folder: found in data_dir, or unpacked from the archive there,
    or downloaded (md5-checked) into data_dir and unpacked. data_dir defaults to the user cache."""
    data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if data_dir.name == CIFAR10_FOLDER and data_dir.is_dir():
        return _checked_folder(data_dir)
    folder = data_dir / CIFAR10_FOLDER
    if folder.is_dir():
        return _checked_folder(folder)
    archive = data_dir / CIFAR10_ARCHIVE
    if not archive.is_file():
        if not download:
            raise DataError(f"CIFAR-10 not found in {data_dir} (no {CIFAR10_FOLDER}/ or {CIFAR10_ARCHIVE})")
        _download(archive)
    _check_md5(archive)
    _extract(archive, data_dir)
    return _checked_folder(folder)


def _download(archive: Path) -> None:
    try:
        import pooch
    except ImportError:
        raise ImportError('downloading CIFAR-10 needs pooch; fix: pip install "twolayer-xp[cli]"') from None
    try:
        archive.parent.mkdir(parents=True, exist_ok=True)
        pooch.retrieve(
            CIFAR10_URL,
            known_hash=f"md5:{CIFAR10_MD5}",
            fname=archive.name,
            path=archive.parent,
            progressbar=_has_tqdm(),
        )
    except Exception as exc:  # requests' ConnectionError, HTTPError, pooch's hash ValueError...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"could not download CIFAR-10 from {CIFAR10_URL} ({type(exc).__name__}: {reason}); "
            f"without network, fetch {CIFAR10_ARCHIVE} (163 MB) elsewhere and pass --data-dir to the "
            f"folder holding it or its {CIFAR10_FOLDER}/"
        ) from None


def _has_tqdm() -> bool:
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


def _check_md5(archive: Path) -> None:
    digest = hashlib.md5()
    with open(archive, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != CIFAR10_MD5:
        raise DataError(
            f"{archive} has md5 {digest.hexdigest()}, expected {CIFAR10_MD5}: the download is corrupt "
            "or incomplete; delete it and run again to re-download"
        )


def _extract(archive: Path, data_dir: Path) -> None:
    """Unpack only the expected regular files of the archive (no links, no paths outside)."""
    wanted = {f"{CIFAR10_FOLDER}/{name}" for name in CIFAR10_FILES}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                if member.name in wanted and member.isfile():
                    source = tar.extractfile(member)
                    atomic_write(data_dir / member.name, lambda out, src=source: shutil.copyfileobj(src, out))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(
            f"cannot unpack {archive} ({type(exc).__name__}: {exc}); delete it and run again"
        ) from None


def _checked_folder(folder: Path) -> Path:
    missing = [name for name in CIFAR10_FILES if not (folder / name).is_file()]
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
