"""MNIST and Fashion-MNIST: where their IDX files come from, their pinned sha256, and reading
a split of them (downloaded once into the data folder with pooch, checked on every read).

The canonical hosts come first; the mirrors after them serve byte-identical files (the
checksums are the same), tried in order when a host is down (yann.lecun.com often refuses).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from twolayer_xp.io.cifar_batches import DataError
from twolayer_xp.io.files import FileRefused, check_regular, expand_path, open_regular
from twolayer_xp.io.idx import MAX_IDX_FILE_BYTES, read_idx

POOCH_FIX = 'pip install -e ".[cli]"'  # pooch comes with the cli extra
SCALE = 255.0  # pixels are 0..255
IMAGE_SHAPE = (28, 28)
SPLIT = {"num_train": 59_000, "num_val": 1_000, "num_test": 10_000}  # CS231n-style: val after train


class IdxSet(NamedTuple):
    hosts: tuple  # base URLs, tried in order
    files: dict  # (split, "images" | "labels") -> (file name, sha256 of the .gz)
    class_names: tuple
    rows: dict = {"train": 60_000, "test": 10_000}


IDX_SETS = {
    "mnist": IdxSet(
        hosts=(
            "https://yann.lecun.com/exdb/mnist/",
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        files={
            ("train", "images"): ("train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
            ("train", "labels"): ("train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
            ("test", "images"): ("t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
            ("test", "labels"): ("t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        },
        class_names=tuple(str(d) for d in range(10)),
    ),
    "fashion-mnist": IdxSet(
        hosts=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
        ),
        files={
            ("train", "images"): ("train-images-idx3-ubyte.gz", "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
            ("train", "labels"): ("train-labels-idx1-ubyte.gz", "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
            ("test", "images"): ("t10k-images-idx3-ubyte.gz", "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
            ("test", "labels"): ("t10k-labels-idx1-ubyte.gz", "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
        },
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
}  # fmt: skip


def default_data_dir() -> Path:
    """Where downloaded data sets are looked for and cached: $TWOLAYER_XP_DATA, else the user cache dir."""
    if os.environ.get("TWOLAYER_XP_DATA"):
        return expand_path(os.environ["TWOLAYER_XP_DATA"], "TWOLAYER_XP_DATA")
    if os.environ.get("XDG_CACHE_HOME"):
        return expand_path(os.environ["XDG_CACHE_HOME"], "XDG_CACHE_HOME") / "twolayer-xp"
    try:
        return expand_path("~/.cache", "the default data folder") / "twolayer-xp"
    except ValueError:
        raise ValueError(
            "HOME is unset and this user has no home, so there is no default data folder; "
            "set TWOLAYER_XP_DATA or pass --data-dir"
        ) from None


def default_split(num_train=None, num_val=None, num_test=None) -> dict:
    given = {"num_train": num_train, "num_val": num_val, "num_test": num_test}
    return {k: v if v is not None else SPLIT[k] for k, v in given.items()}


def read_split(name: str, split: str, data_dir=None, rows: int | None = None, download: bool = True):
    """(raw pixels (N, 784) uint8, labels (N,) int64): the first ``rows`` of ``split``."""
    spec = IDX_SETS[name]
    folder = (
        expand_path(data_dir, "data_dir (--data-dir)") if data_dir is not None else default_data_dir()
    ) / name
    files = {kind: fetch(spec, (split, kind), folder, download) for kind in ("images", "labels")}
    images = read_idx(files["images"], IMAGE_SHAPE, spec.rows[split])
    labels = read_idx(files["labels"], (), spec.rows[split])
    if len(labels) != len(images) or np.any(labels > len(spec.class_names) - 1):
        raise DataError(f"{files['labels']}: {len(labels)} labels in 0..9 expected for {len(images)} images")
    rows = len(labels) if rows is None else rows
    if rows > len(labels):
        raise ValueError(f"{rows} {split} rows asked for; {name} has {len(labels)}")
    return images[:rows].reshape(rows, -1), labels[:rows].astype(np.int64)


def fetch(spec: IdxSet, key: tuple, folder: Path, download: bool) -> Path:
    """The checked local copy of one file, downloaded from the first host that serves it."""
    fname, sha256 = spec.files[key]
    path = folder / fname
    if present(path, MAX_IDX_FILE_BYTES):  # whatever sits there is checked, never downloaded over
        check_digest(path, "sha256", sha256, MAX_IDX_FILE_BYTES)
        return path
    if not download:
        raise DataError(f"{path} not found (download is off)")
    try:
        import pooch
    except ImportError:
        raise ImportError(f"downloading {fname} needs pooch; fix: {POOCH_FIX}") from None
    failures = []
    for host in spec.hosts:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            pooch.retrieve(
                host + fname, known_hash=f"sha256:{sha256}", fname=fname, path=folder, progressbar=has_tqdm()
            )
            return path
        except Exception as exc:  # requests' ConnectionError, HTTPError, pooch's hash ValueError...
            failures.append(f"{host}: {type(exc).__name__}")
    raise DataError(
        f"could not download {fname} ({'; '.join(failures)}); without network, fetch it elsewhere "
        f"and put it in {folder}, or pass --data-dir to a folder holding {folder.name}/{fname}"
    )


def check_digest(path: Path, algorithm: str, expected: str, max_bytes: int) -> None:
    """DataError unless the regular file ``path`` (at most ``max_bytes``) has this hex digest."""
    digest = hashlib.new(algorithm)
    with open_regular(path, max_bytes) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise DataError(
            f"{path} has {algorithm} {digest.hexdigest()}, expected {expected}: the download is corrupt "
            "or incomplete; delete it and run again to re-download"
        )


def present(path: Path, max_bytes: int) -> bool:
    """True if ``path`` is a regular file of at most ``max_bytes``, False if it is missing; a
    DataError if it is something else (a FIFO, a device, a folder, a link to one of them): data
    is read only from regular files, and nothing else is downloaded over."""
    try:
        check_regular(path, max_bytes)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise DataError(
                f"{path} is a link to a missing file; remove it or point it at the file"
            ) from None
        return False
    except FileRefused as exc:
        raise DataError(f"{exc}; data sets are read only from regular files") from None
    return True


def has_tqdm() -> bool:
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True
