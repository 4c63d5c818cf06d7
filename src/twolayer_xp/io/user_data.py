"""A user's own data: a ``.npz`` of named splits or a ``.csv`` with a header row.

``.npz``: arrays X_train (N, D) and y_train (N,), optionally X_val/y_val and X_test/y_test;
read with ``safe_npz`` (no pickles; every header checked, and the memory it needs estimated,
before any data is read). ``.csv``: numeric feature columns and one label column (by name,
default the last), read by numpy's C parser (no pickles) after a first pass that counts the
rows, so the memory estimate comes before the allocation. Labels may be numbers or strings;
either way they become class indices 0..C-1 in sorted order, and their names are kept.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from pathlib import Path

import numpy as np

from twolayer_xp.errors import one_line
from twolayer_xp.io import memory
from twolayer_xp.io.cifar_batches import DataError
from twolayer_xp.io.files import FileRefused, check_regular, expand_path
from twolayer_xp.io.safe_npz import NpzError, read_npz

SUFFIXES = (".npz", ".csv")
SPLITS = ("train", "val", "test")
MAX_DATA_FILE_BYTES = 1 << 40  # "plausible": the memory estimate before reading judges the real need
# A split the file lacks is carved out of the training rows, with a fixed seed so every run
# (and every sweep worker) of the same file gets the same split.
HELD_OUT = {"test": 0.2, "val": 0.1}
SPLIT_SEED = 0
# A CSV's rows are parsed into float64, then cast to the run's dtype: two copies at the peak,
# plus each label as a string of up to this many bytes.
CSV_COPIES, LABEL_BYTES = 2, 64


def is_data_file(name) -> bool:
    """Does --dataset name a file (rather than a built-in data set)?"""
    return isinstance(name, (str, os.PathLike)) and str(name).lower().endswith(SUFFIXES)


def _regular(path, what: str, expected: str) -> Path:
    """``path`` expanded, after checking it is a regular file (a FIFO, device or folder would
    hang or mislead the readers); its size is judged by the memory estimate that follows."""
    path = expand_path(path, what)
    try:
        check_regular(path, MAX_DATA_FILE_BYTES)
    except FileNotFoundError:
        raise DataError(f"{what} {path}: no such file ({expected})") from None
    except FileRefused as exc:
        raise DataError(f"{what}: {exc}; data is read only from regular files") from None
    return path


def read(path, label_column: str | None = None) -> tuple[dict, list, list]:
    """({split: (X_raw (N, D), y (N,) int64)}, class_names, notes) for all three splits; notes
    say which splits were made here and how."""
    path = _regular(path, "--dataset", "a .npz or .csv of your own, or a data set name")
    if path.suffix.lower() == ".npz":
        if label_column is not None:
            raise ValueError("--label-column applies to a .csv dataset, not a .npz")
        splits = _read_npz(path)
    else:
        splits = {"train": _read_csv(path, label_column)}
    labels, names = _class_indices([y for _, y in splits.values()])
    splits = {s: (X, y) for s, (X, _), y in zip(splits, splits.values(), labels, strict=True)}
    notes = []
    for split in ("test", "val"):
        if split not in splits:
            splits["train"], splits[split], note = _held_out(splits["train"], split, path.name)
            notes.append(note)
    return {s: splits[s] for s in SPLITS}, names, notes


def _held_out(train, split: str, name: str):
    X, y = train
    take = max(1, round(HELD_OUT[split] * len(y)))
    if take >= len(y):
        raise DataError(f"{name} has {len(y)} training rows: too few to hold out a {split} split")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    held, kept = np.sort(order[:take]), np.sort(order[take:])
    note = (
        f"{name} has no {split} split: {take} of its {len(y)} training rows "
        f"({HELD_OUT[split]:.0%}, fixed seed {SPLIT_SEED}) are held out as {split}"
    )
    return (X[kept], y[kept]), (X[held], y[held]), note


def _class_indices(label_arrays: list) -> tuple[list, list]:
    """Labels of every split as indices into one sorted list of names."""
    merged = np.concatenate([np.asarray(y).reshape(-1) for y in label_arrays])
    if merged.dtype.kind == "f":
        if not np.all(np.isfinite(merged)):
            raise DataError("labels must be finite (a NaN or inf label was found)")
        if np.all(merged == np.round(merged)):
            label_arrays = [np.asarray(y).astype(np.int64) for y in label_arrays]
            merged = merged.astype(np.int64)
    values = np.unique(merged)
    if len(values) < 2:
        raise DataError(f"labels must name at least 2 classes; found {len(values)}")
    names = [str(v) for v in values.tolist()]
    return [np.searchsorted(values, np.asarray(y)).astype(np.int64) for y in label_arrays], names


# ------------------------------------------------------------------------------------------
# .npz


def _read_npz(path: Path) -> dict:
    wanted = {f"{a}_{s}" for a in "Xy" for s in SPLITS}

    def check(headers: dict) -> None:
        _check_npz_headers(path, headers)

    try:
        arrays = read_npz(path, lambda name: name in wanted, check)
    except NpzError as exc:
        raise DataError(f"{path} is not a readable data .npz ({exc})") from None
    return {s: (arrays[f"X_{s}"], arrays[f"y_{s}"]) for s in SPLITS if f"X_{s}" in arrays}


def _check_npz_headers(path: Path, headers: dict) -> None:
    """Every split complete and consistent, judged from the headers before any data is read."""
    if "X_train" not in headers or "y_train" not in headers:
        raise NpzError(f"it needs arrays X_train and y_train; it has {', '.join(sorted(headers)) or 'none'}")
    features = None
    for split in SPLITS:
        X, y = headers.get(f"X_{split}"), headers.get(f"y_{split}")
        if (X is None) != (y is None):
            raise NpzError(f"X_{split} and y_{split} come together; only one is there")
        if X is None:
            continue
        if len(X.shape) != 2 or X.dtype.kind not in "biuf" or X.shape[0] == 0 or X.shape[1] == 0:
            raise NpzError(f"X_{split} must be a non-empty 2-D numeric array, got {X.dtype} {X.shape}")
        if len(y.shape) != 1 or y.dtype.kind not in "biufU" or y.shape[0] != X.shape[0]:
            raise NpzError(
                f"y_{split} must be {X.shape[0]} labels (numbers or strings), got {y.dtype} {y.shape}"
            )
        if features not in (None, X.shape[1]):
            raise NpzError(f"X_{split} has {X.shape[1]} features; X_train has {features}")
        features = X.shape[1]
    # the arrays as read, plus the float copy a run makes of them
    need = sum(h.nbytes + (8 * math.prod(h.shape) if n.startswith("X") else 0) for n, h in headers.items())
    memory.check_fits(need, f"reading {path.name}", "use a smaller file")


# ------------------------------------------------------------------------------------------
# .csv


def label_column_of(path, label_column: str | None) -> str | None:
    """The name of a .csv's label column (``label_column``, else its last column); None for a
    .npz, whose labels are arrays of their own, or when the name is not unique in the header."""
    if Path(path).suffix.lower() != ".csv":
        return None
    with open(path, newline="", encoding="utf-8") as f:  # read (and checked) whole before: the header
        columns = _header(csv.reader(f))
    label = label_column if label_column is not None else columns[-1]
    return label if columns.count(label) == 1 else None  # a repeated name finds the first column


def read_rows(
    path, label_column: str | None, num_features: int, trained_label: str | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(raw rows (N, num_features), labels or None) to predict on: every row of a .csv (its
    label column is ``label_column``, else the column the model was trained with
    (``trained_label``) when the file has it, else the last one when there is one column more
    than the features); a .npz's X_test/y_test, else X/y, else X_train/y_train (y optional)."""
    path = _regular(path, "input", "a .npz or .csv")
    if path.suffix.lower() == ".csv":
        columns, _ = _csv_shape(path, min_columns=1)
        if label_column is None and trained_label in columns:
            label_column = trained_label
        has_label = label_column is not None or len(columns) == num_features + 1
        if len(columns) - has_label != num_features:  # before parsing: say it in these words
            label = f" and its label column {label_column}" if label_column else ""
            hint = "" if has_label else "; if one of them holds labels, name it with --label-column"
            raise DataError(
                f"{path} has {len(columns) - has_label} feature columns{label}; the model takes "
                f"{num_features}{hint}"
            )
        X, y = _read_csv(path, label_column if has_label else None, labels=has_label)
    else:
        X, y = _read_npz_rows(path)
    if X.shape[1] != num_features:
        raise DataError(f"{path} has rows of {X.shape[1]} features; the model takes {num_features}")
    return X, y


def _read_npz_rows(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    for suffix in ("_test", "", "_train"):

        def check(headers: dict, suffix=suffix) -> None:
            X, y = headers.get(f"X{suffix}"), headers.get(f"y{suffix}")
            if len(X.shape) != 2 or X.dtype.kind not in "biuf":
                raise NpzError(f"X{suffix} must be a 2-D numeric array, got {X.dtype} {X.shape}")
            if y is not None and (
                len(y.shape) != 1 or y.shape[0] != X.shape[0] or y.dtype.kind not in "biufU"
            ):
                raise NpzError(f"y{suffix} must be {X.shape[0]} labels, got {y.dtype} {y.shape}")
            memory.check_fits(
                sum(h.nbytes for h in headers.values()) * 2, f"reading {path.name}", "use a smaller file"
            )

        try:
            names = {f"X{suffix}", f"y{suffix}"}
            arrays = read_npz(
                path,
                lambda name, names=names: name in names,
                lambda h, c=check, s=suffix: f"X{s}" in h and c(h),
            )
        except NpzError as exc:
            raise DataError(f"{path} is not a readable data .npz ({exc})") from None
        if f"X{suffix}" in arrays:
            return arrays[f"X{suffix}"], arrays.get(f"y{suffix}")
    raise DataError(f"{path} holds none of X_test, X, X_train")


def _read_csv(path: Path, label_column: str | None, labels: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(X (N, D) float64, labels (N,): numbers or str; None when labels=False) of a CSV with a
    header row."""
    columns, rows = _csv_shape(path, min_columns=2 if labels else 1)
    label = None
    if labels:
        label = len(columns) - 1 if label_column is None else _column(columns, label_column, path)
    features = [i for i in range(len(columns)) if i != label]
    if not features or rows == 0:
        raise DataError(
            f"{path} needs a header row, at least one data row and a feature column besides the label"
        )
    memory.check_fits(
        rows * (len(features) * 8 * CSV_COPIES + LABEL_BYTES),
        f"reading {path.name} ({rows} rows)",
        "use a smaller file",
    )
    options = {
        "delimiter": ",",
        "skiprows": 1,
        "ndmin": 1,
        "quotechar": '"',
        "comments": None,
        "encoding": "utf-8",
    }
    try:
        with warnings.catch_warnings():  # numpy notes that blank lines are skipped: _csv_shape does too
            warnings.simplefilter("ignore", UserWarning)
            X = np.loadtxt(path, dtype=np.float64, usecols=features, **{**options, "ndmin": 2})
            y = np.loadtxt(path, dtype=str, usecols=[label], **options) if labels else np.empty(rows)
    except (ValueError, UnicodeDecodeError) as exc:
        hint = "" if label_column else "; if a column holds labels, name it with --label-column"
        raise DataError(f"{path}: {one_line(exc, limit=300)} (features must be numbers{hint})") from None
    if X.shape != (rows, len(features)) or y.shape != (rows,):
        raise DataError(f"{path}: every row must have the header's {len(columns)} columns")
    if not np.all(np.isfinite(X)):
        bad = int(np.argwhere(~np.isfinite(X))[0][0])
        raise DataError(f"{path}: data row {bad + 1} holds a NaN or inf feature; features must be finite")
    if not labels:
        return X, None
    y = np.char.strip(y)
    if np.any(y == ""):  # an empty cell would become a class of its own, named ''
        bad = int(np.argwhere(y == "")[0][0])
        raise DataError(
            f"{path}: data row {bad + 1} has an empty label ({columns[label]!r}); every row needs one"
        )
    try:
        return X, y.astype(np.float64)  # numeric labels sort as numbers (2 before 10)
    except ValueError:
        return X, y


def _csv_shape(path: Path, min_columns: int = 2) -> tuple[list, int]:
    """(the header's column names, the number of non-blank data rows), reading a line at a time."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            columns = _header(reader)
            rows = 0
            for line, fields in enumerate(reader, start=2):
                if not fields:
                    continue
                if len(fields) != len(columns):
                    raise DataError(
                        f"{path} line {line} has {len(fields)} columns; the header has {len(columns)}"
                    )
                rows += 1
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path} is not a readable UTF-8 CSV ({exc})") from None
    if len(columns) < min_columns:
        raise DataError(
            f"{path} needs a header row naming at least {min_columns} columns (features and a label)"
        )
    return columns, rows


def _header(reader) -> list:
    """The column names of a CSV reader's first row."""
    return [c.strip() for c in next(reader, [])]


def _column(columns: list, name: str, path: Path) -> int:
    if name not in columns:
        shown = ", ".join(columns[:8]) + (", ..." if len(columns) > 8 else "")
        raise ValueError(f"--label-column {name!r} is not a column of {path.name} (columns: {shown})")
    return columns.index(name)
