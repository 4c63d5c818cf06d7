"""Argument checks that name the argument and say what was expected.

Bad input must fail here, loudly, rather than become a NaN several layers down. Checks of array
contents run on whichever device the array lives on and cost one host sync, so callers run
them once per call (once per ``train``), never per step.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

from array_api_compat import array_namespace


def positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)


def real(name: str, value: Any, *, positive: bool = False, nonnegative: bool = False) -> float:
    """A finite Python float; ``positive``/``nonnegative`` add the bound to the check."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if nonnegative and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def features(name: str, X: Any, num_features: int, check_finite: bool = True) -> None:
    """X must be a 2-D float/int array with ``num_features`` columns (and finite, if asked)."""
    xp = _namespace(name, X)
    if not _is_real(xp, X.dtype):
        raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
    if X.ndim != 2 or X.shape[1] != num_features:
        raise ValueError(f"{name} must have shape (N, {num_features}), got {tuple(X.shape)}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} has no rows")
    if check_finite:
        finite(name, X)


def finite(name: str, X: Any) -> None:
    """ValueError naming ``name`` and the count of NaN/inf values, if it holds any."""
    xp = _namespace(name, X)
    if xp.isdtype(X.dtype, "real floating") and not _all_finite(xp, X):
        bad = int(xp.sum(xp.astype(xp.logical_not(xp.isfinite(X)), X.dtype)))
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")


def labels(name: str, y: Any, num_rows: int, num_classes: int) -> None:
    """y must be a 1-D integer array of ``num_rows`` labels in [0, num_classes)."""
    xp = _namespace(name, y)
    if y.ndim != 1 or y.shape[0] != num_rows:
        raise ValueError(f"{name} must have shape ({num_rows},) to match its features, got {tuple(y.shape)}")
    if not xp.isdtype(y.dtype, "integral"):
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    low, high = int(xp.min(y)), int(xp.max(y))
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"{name} must hold labels in [0, {num_classes - 1}], found values in [{low}, {high}]"
        )


def _all_finite(xp, X) -> bool:
    """One reduction instead of a bool temporary as large as X: any NaN or inf makes the sum
    non-finite; only when the sum overflows does the exact (allocating) check run."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's overflow note: handled below
        if bool(xp.isfinite(xp.sum(X))):
            return True
    return bool(xp.all(xp.isfinite(X)))


def _is_real(xp, dtype) -> bool:
    try:
        return xp.isdtype(dtype, ("real floating", "integral"))
    except (TypeError, ValueError):  # strings, objects: not a dtype the standard knows
        return False


def _namespace(name: str, x: Any):
    try:
        return array_namespace(x)
    except TypeError:
        raise TypeError(f"{name} must be an array, got {type(x).__name__}") from None
