"""Synthetic CIFAR-10 in the real on-disk format (python 2-style pickles of dicts of bytes keys)."""

import pickle
import tarfile
from pathlib import Path

import numpy as np

LABEL_NAMES = [
    b"airplane",
    b"automobile",
    b"bird",
    b"cat",
    b"deer",
    b"dog",
    b"frog",
    b"horse",
    b"ship",
    b"truck",
]


def image_rows(start, count):
    """Rows whose pixel (r, c) of channel k is a known function of (row number, r, c, k)."""
    n = np.arange(start, start + count)[:, None, None, None]
    k = np.arange(3)[None, :, None, None]
    r = np.arange(32)[None, None, :, None]
    c = np.arange(32)[None, None, None, :]
    planes = (n * 7 + k * 50 + r * 3 + c) % 256  # (N, 3, 32, 32): R, G, B planes
    return planes.reshape(count, 3072).astype(np.uint8)


def write_batch(path, data, labels):
    batch = {
        b"batch_label": b"synthetic",
        b"labels": [int(v) for v in labels],
        b"data": data,
        b"filenames": [b"img%d.png" % i for i in range(len(labels))],
    }
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


def write_cifar(root, rows_per_batch=60, test_rows=40):
    """Write cifar-10-batches-py/ under ``root``; returns the folder."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for b in range(5):
        start = b * rows_per_batch
        write_batch(
            folder / f"data_batch_{b + 1}",
            image_rows(start, rows_per_batch),
            np.arange(start, start + rows_per_batch) % 10,
        )
    write_batch(folder / "test_batch", image_rows(10_000, test_rows), (np.arange(test_rows) * 3) % 10)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": LABEL_NAMES, b"num_vis": 3072}, f, protocol=2)
    return folder


def write_archive(root, **kwargs):
    """cifar-10-python.tar.gz holding a synthetic cifar-10-batches-py/; returns its path."""
    source = write_cifar(Path(root) / "src", **kwargs)
    archive = Path(root) / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname="cifar-10-batches-py")
    return archive


class Call:
    """Pickles as ``fn(*args)`` (REDUCE), then ``__setstate__(state)`` (BUILD) when state is given:
    how a crafted batch asks the unpickler for things a real one never does."""

    def __init__(self, fn, *args, state=None):
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self):
        return (self.fn, self.args) if self.state is None else (self.fn, self.args, self.state)


def write_crafted(path, **extra):
    """A valid 60-row batch whose dict also holds ``extra`` (bytes keys), pickled at protocol 2."""
    batch = {
        b"batch_label": b"synthetic",
        b"labels": [i % 10 for i in range(60)],
        b"data": image_rows(0, 60),
        b"filenames": [b"img%d.png" % i for i in range(60)],
    }
    batch.update({key.encode(): value for key, value in extra.items()})
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)
