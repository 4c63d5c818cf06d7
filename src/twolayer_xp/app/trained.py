"""A trained model you can use: the net together with the preprocessing it was trained with.

``load_model(path)`` reads a run's (or a sweep's best) ``model.npz`` and returns a
``TrainedModel`` whose ``predict`` takes raw rows, as they come in the user's data, and does
what the run did to them before the net saw them. ``TwoLayerNet.load`` stays the plain CS231n
net, whose inputs must already be preprocessed.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twolayer_xp.app import config as configs
from twolayer_xp.core import model
from twolayer_xp.core.model import TwoLayerNet
from twolayer_xp.io import datasets, files, user_data
from twolayer_xp.io.checkpoint import CheckpointError
from twolayer_xp.io.preprocessing import Preprocessing

# Checkpoints written before the preprocessing was kept in them: the scale their data set used.
LEGACY_SCALE = {"digits": datasets.DIGITS_SCALE, "cifar10": 1.0}


@dataclass
class TrainedModel:
    """``net``: the TwoLayerNet; ``preprocessing``: raw rows -> its inputs; ``labels``: the name of
    each class index; ``config``: the run's settings (None for a bare net)."""

    net: TwoLayerNet
    preprocessing: Preprocessing
    config: dict | None = None

    @property
    def labels(self) -> list:
        return self.preprocessing.class_names

    @property
    def label_column(self) -> str | None:
        """The .csv column its labels came from, by name: the preprocessing keeps it (the last
        column when none was named); an older model's run config or sweep search names it
        only when it was given."""
        sweep = self.net.metadata.get("sweep")
        search = sweep.get("search") if isinstance(sweep, dict) else None
        for source in (self.config, search):
            if isinstance(source, dict) and isinstance(source.get("label_column"), str):
                return source["label_column"]
        return self.preprocessing.label_column

    def preprocess(self, X_raw) -> np.ndarray:
        """Raw rows (N, D) -> the net's inputs, exactly as the run computed them."""
        return self.preprocessing.apply(X_raw, self.net.dtype_name)

    def scores(self, X_raw) -> np.ndarray:
        """Class scores (N, C) of raw rows, on the host."""
        return np.asarray(self.net.backend.to_numpy(self.net.loss(self.preprocess(X_raw))))

    def predict(self, X_raw) -> np.ndarray:
        """Class indices (N,) of raw rows; ``labels[k]`` names index k."""
        return np.asarray(self.net.predict(self.preprocess(X_raw)))

    def accuracy(self, X_raw, y) -> float:
        return float(np.mean(self.predict(X_raw) == np.asarray(y)))


def load_model(path: str | os.PathLike, *, device: Any = "cpu", backend: Any = None) -> TrainedModel:
    """The net of a run's ``model.npz`` with its preprocessing and label names."""
    net, arrays = model.load_net(path, device=device, backend=backend)
    meta = net.metadata.get("preprocessing")
    config = net.metadata.get("config") if isinstance(net.metadata.get("config"), dict) else None
    if not isinstance(meta, dict):  # an older checkpoint: rebuild what its data set did
        dataset = (config or {}).get("dataset")
        if dataset not in LEGACY_SCALE or "mean_image" not in arrays:
            raise CheckpointError(
                f"{path} carries no preprocessing (not written by a twolayer-xp run); load it with "
                "TwoLayerNet.load and preprocess its inputs yourself"
            )
        meta = {"scale": LEGACY_SCALE[dataset], "class_names": [str(k) for k in range(net.output_size)]}
    try:
        pre = Preprocessing.from_checkpoint(meta, arrays, net.input_size, net.output_size)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return TrainedModel(net, pre, config)


def inputs(source: str, trained: TrainedModel, label_column: str | None = None, data_dir=None):
    """(raw rows, class indices or None, where they came from) of a predict/evaluate INPUT: a
    .csv (every row; labels if it has the label column), a .npz (X_test/y_test, else X/y, else
    X_train/y_train) or a data set name (its test split)."""
    if not user_data.is_data_file(source):
        configs.kind(source)  # ValueError naming the choices
        X, y, names = datasets.test_rows(source, data_dir=data_dir)
        return X, _indices(y, names, trained.labels, source), f"the {source} test split"
    trained_label = trained.label_column
    X, y = user_data.read_rows(source, label_column, trained.preprocessing.num_features, trained_label)
    return X, None if y is None else _indices(y, None, trained.labels, source), str(source)


def _indices(y, names, labels: list, source: str) -> np.ndarray:
    """Labels as the model's class indices: by name (strings, or numbers written as its names)."""
    y = np.asarray(y)
    if names is not None:
        y = np.asarray(names)[y]
    text = [_name(v) for v in y.tolist()]
    unknown = sorted(set(text) - set(labels))
    if unknown:
        raise ValueError(
            f"{source} has labels the model does not know: {', '.join(unknown[:5])} (it knows {', '.join(labels[:10])})"
        )
    index = {name: k for k, name in enumerate(labels)}
    return np.asarray([index[t] for t in text], dtype=np.int64)


def _name(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def write_predictions(path: Path, trained: TrainedModel, predicted: np.ndarray, y=None) -> None:
    """predictions.csv: row, predicted index, its label name (and the true label when known)."""
    text = io.StringIO()
    out = csv.writer(text, lineterminator="\n")
    out.writerow(["row", "predicted", "label"] + (["true_label"] if y is not None else []))
    for i, k in enumerate(predicted.tolist()):
        out.writerow([i, k, trained.labels[k]] + ([trained.labels[y[i]]] if y is not None else []))
    files.atomic_write(path, lambda f: f.write(text.getvalue().encode("utf-8")))
