"""What a run does to raw rows before the net sees them, kept so a saved model can do it again.

``X = ((X_raw / scale) as dtype - mean) / std``: ``scale`` turns pixel counts into [0, 1]
(16 for digits, 255 for MNIST, 1 for CIFAR-10 as CS231n leaves it), ``mean`` is the training
rows' mean image, ``std`` (only for a user's own data, whose columns may differ in scale by
orders of magnitude) each column's training standard deviation. ``class_names[k]`` is what
class index k stands for. A checkpoint stores the arrays as extras and the rest in its metadata.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MEAN, STD = "mean_image", "feature_std"  # the checkpoint's extra arrays


@dataclass
class Preprocessing:
    """Raw rows (N, D) -> the net's inputs. mean, std: (D,) in the training dtype; std None = 1."""

    scale: float
    mean: np.ndarray
    std: np.ndarray | None
    class_names: list
    image_shape: tuple | None = None  # how one row displays, e.g. (28, 28)
    label_column: str | None = None  # a .csv's label column, by name (its last, if none was named)

    @property
    def num_features(self) -> int:
        return self.mean.shape[0]

    def apply(self, X_raw, dtype=None, *, copy: bool = True) -> np.ndarray:
        """The net's inputs for raw rows (N, D). The division runs in float64 and is then cast,
        as the data sets always did, so a saved model reproduces its run's inputs bit for bit.
        copy=False may reuse X_raw's memory when it already has the dtype (and scale is 1)."""
        dtype = np.dtype(dtype or self.mean.dtype)
        X = np.asarray(X_raw)
        if X.ndim != 2 or X.shape[1] != self.num_features:
            raise ValueError(f"inputs must be rows of {self.num_features} features, got shape {X.shape}")
        X = _scaled(X, self.scale, dtype, copy)
        self._check_centred(X)
        X -= self.mean
        if self.std is not None:
            X /= self.std
        return X

    def _check_centred(self, X: np.ndarray) -> None:
        """Refuse a value of X (the scaled rows (N, D), in the dtype) that the dtype holds but
        ``(X - mean) / std`` does not (a column of std 1e-6 multiplies by 1e6, a huge mean shifts
        it): a ValueError naming the user's own value and the range this model takes, where numpy
        would make it inf and the net blame 'NaN or inf' in an input that was finite. Judged in
        float64 on each column's extremes."""
        if not X.size:
            return
        std = np.ones(X.shape[1]) if self.std is None else self.std.astype(np.float64)
        high, low = _column_ends(X)
        with np.errstate(over="ignore", invalid="ignore"):  # a float64 X may overflow float64 here
            z_high, z_low = ((end - self.mean.astype(np.float64)) / std for end in (high, low))
        take_high = z_high >= -z_low
        ends = np.where(take_high, high, low)  # the extreme each column is judged by
        feature = _first_beyond(np.where(take_high, z_high, z_low), X.dtype, finite=np.isfinite(ends))
        if feature is not None:  # in the user's units: the model subtracts m, then divides by d
            value, m = float(ends[feature]) * self.scale, float(self.mean[feature]) * self.scale
            d = self.scale * float(std[feature])
            reach = float(np.finfo(X.dtype).max) * d
            raise ValueError(
                f"the input holds a value of {value:.3g} (feature {feature}, 0-based), beyond what this model "
                f"takes in {X.dtype.name} ({m - reach:.3g} to {m + reach:.3g}: it subtracts {m:.3g} and divides "
                f"by {d:g}); rescale it"
            )

    def arrays(self) -> dict:
        """The extra arrays a checkpoint stores."""
        return {MEAN: self.mean} if self.std is None else {MEAN: self.mean, STD: self.std}

    def metadata(self) -> dict:
        """The JSON a checkpoint stores."""
        return {
            "scale": self.scale,
            "class_names": list(self.class_names),
            "image_shape": list(self.image_shape) if self.image_shape else None,
            "standardized": self.std is not None,
            **({"label_column": self.label_column} if self.label_column is not None else {}),
        }

    @classmethod
    def from_checkpoint(cls, meta: dict, arrays: dict, num_features: int, num_classes: int) -> Preprocessing:
        """Rebuilt from a checkpoint's metadata and extras; ValueError naming what does not fit
        a net of ``num_features`` inputs and ``num_classes`` outputs."""
        scale, names, shape = meta.get("scale"), meta.get("class_names"), meta.get("image_shape")
        if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and 0 < scale < math.inf):
            raise ValueError(f"preprocessing scale must be a positive number, got {scale!r}")
        if not (
            isinstance(names, list) and len(names) == num_classes and all(isinstance(n, str) for n in names)
        ):
            raise ValueError(f"preprocessing class_names must be {num_classes} strings")
        if shape is not None and not (
            isinstance(shape, list)
            and all(isinstance(n, int) and n > 0 for n in shape)
            and math.prod(shape) == num_features
        ):
            raise ValueError(f"preprocessing image_shape {shape!r} does not hold {num_features} features")
        mean = _feature_array(arrays, MEAN, num_features)
        std = _feature_array(arrays, STD, num_features) if meta.get("standardized") else None
        if std is not None and not np.all(std > 0):
            raise ValueError(f"extra array {STD} must be positive")
        label = meta.get("label_column")
        if label is not None and not isinstance(label, str):
            raise ValueError(f"preprocessing label_column must be a column name, got {label!r}")
        return cls(float(scale), mean, std, names, tuple(shape) if shape else None, label)


def _feature_array(arrays: dict, name: str, num_features: int) -> np.ndarray:
    value = arrays.get(name)
    if value is None:
        raise ValueError(f"extra array {name} is missing")
    if value.shape != (num_features,) or value.dtype.kind != "f" or not np.all(np.isfinite(value)):
        raise ValueError(
            f"extra array {name} must be {num_features} finite floats, got {value.dtype} {value.shape}"
        )
    return value


def fitted(
    X_train_raw, scale: float, standardize: bool, class_names, image_shape, dtype, label_column=None
) -> tuple:
    """(Preprocessing fitted on the training rows, those rows preprocessed). The mean is taken in
    float64 and cast, as CS231n's notebooks do; a constant column keeps std 1 (nothing to scale).
    label_column: a .csv's label column name, kept for predicting on other files."""
    X = np.asarray(X_train_raw)
    X = _scaled(X, scale, dtype, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):  # a sum past float64: said below
        mean = np.mean(X, axis=0, dtype=np.float64)
    _refuse_overflow("mean", mean)
    prep = Preprocessing(
        float(scale), mean.astype(X.dtype), None, list(class_names), image_shape, label_column
    )
    prep._check_centred(X)  # a training value that centring would take past the dtype
    X -= prep.mean
    if standardize:
        with np.errstate(over="ignore", invalid="ignore"):
            std64 = np.std(X, axis=0, dtype=np.float64)  # of centred values: no row is past sqrt(N) of it
        _refuse_overflow("standard deviation", std64)
        prep.std = np.where(std64 > 0, std64, 1.0).astype(X.dtype)
        X /= prep.std
    return prep, X


def _refuse_overflow(what: str, per_feature: np.ndarray) -> None:
    """A ValueError naming the first training feature whose ``what`` overflowed float64."""
    bad = np.flatnonzero(~np.isfinite(per_feature))
    if bad.size:
        raise ValueError(
            f"training feature {bad[0]} (0-based) holds values too large to standardize: its {what} "
            "overflows float64; rescale it"
        )


def _scaled(X_raw: np.ndarray, scale: float, dtype, copy: bool) -> np.ndarray:
    """X_raw / scale as ``dtype``, never X_raw itself when ``copy``; a ValueError naming the feature
    and the input's own value if one is beyond the dtype's range, where the cast would make it
    inf (and the net's scores NaN) with only numpy's warning."""
    dtype = np.dtype(dtype)
    X = X_raw / scale if scale != 1 else X_raw
    beyond = beyond_range(X, dtype)
    if beyond is not None:
        feature, value = beyond
        raise ValueError(beyond_range_message("the input", feature, value * scale, dtype, scale))
    return X.astype(dtype, copy=copy and scale == 1)  # a scaled X is a new array already


def beyond_range_message(name: str, feature: int, value: float, dtype, scale: float = 1.0) -> str:
    """What a refusal of a value of ``name`` beyond ``dtype``'s range says: the user's ``value``
    and the range it has before the model divides by ``scale``, not the scaled ones the cast sees
    (digits divides by 16)."""
    dtype = np.dtype(dtype)
    where = "" if scale == 1 else f" for inputs this model divides by {scale:g}"
    return (
        f"{name} holds a value of {value:.3g} (feature {feature}, 0-based), beyond {dtype.name}'s "
        f"range (+-{float(np.finfo(dtype).max) * scale:.3g}{where}); rescale it"
    )


def beyond_range(X: np.ndarray, dtype) -> tuple[int, float] | None:
    """(feature, value): a finite value of X (N, D) beyond the float ``dtype``'s range, which a
    cast would make inf, in the first column that holds one; None if there is none. NaN and inf
    are the finite checks' to name, in their own words. Two passes over X when it is a wider
    float than ``dtype``, none otherwise."""
    dtype = np.dtype(dtype)
    # Only a wider float can hold what the dtype cannot (every int up to 64 bits fits float32).
    if not (X.size and np.issubdtype(X.dtype, np.floating) and np.finfo(X.dtype).max > np.finfo(dtype).max):
        return None
    high, low = _column_ends(X)
    extreme = np.where(high >= -low, high, low)
    feature = _first_beyond(extreme, dtype)
    return None if feature is None else (feature, float(extreme[feature]))


def _column_ends(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column's (max, min) of X (N, D): two passes, no |X| temporary; NaN where one is."""
    with np.errstate(invalid="ignore"):  # NaN compares false here
        return np.max(X, axis=0), np.min(X, axis=0)


def _first_beyond(extreme: np.ndarray, dtype, finite: np.ndarray | None = None) -> int | None:
    """The first feature whose ``extreme`` (D,) value is beyond the float ``dtype``'s range
    (an inf included) where ``finite`` (D,) holds (the user's value was finite; default: where
    ``extreme`` is), or None."""
    finite = np.isfinite(extreme) if finite is None else finite
    # A value within half a step above the largest float rounds down to it.
    largest = float(np.finfo(dtype).max)
    beyond = np.flatnonzero(finite & (np.abs(extreme) > largest * (1 + float(np.finfo(dtype).eps) / 4)))
    return int(beyond[0]) if beyond.size else None
