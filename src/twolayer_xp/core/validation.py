"""Argument checks: the model's constraints, declared once as a table, and the checks of arrays.

A run's and a sweep's own settings declare theirs beside their configs (``app.config``,
``app.sweep.config``) in the same form; the Python API and the CLI check against the same tables.

Bad input must fail here, loudly and naming the argument, rather than become a NaN several
layers down. Checks of array contents run on whichever device the array lives on and cost one
host sync, so callers run them once per call (once per ``train``), never per step.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, NamedTuple

import array_api_compat as aac
import numpy as np  # host side: per-member hyperparameters are small host arrays
from array_api_compat import array_namespace

from twolayer_xp.backend import is_array
from twolayer_xp.io import preprocessing


class Constraint(NamedTuple):
    kind: type  # int or float
    low: float  # lower bound
    strict: bool  # low itself excluded
    high: float = math.inf  # upper bound, included


POSITIVE_INT = Constraint(int, 0, True)
COUNT = Constraint(int, 0, False)
POSITIVE = Constraint(float, 0.0, True)
NONNEGATIVE = Constraint(float, 0.0, False)

# Every scalar argument of the model, the population and the training loop, by name. Population
# arguments may also be one value per member (see ``per_member``).
CONSTRAINTS = {
    "input_size": POSITIVE_INT,
    "hidden_size": POSITIVE_INT,
    "output_size": POSITIVE_INT,
    "size": POSITIVE_INT,
    "num_iters": POSITIVE_INT,
    "batch_size": POSITIVE_INT,
    "sync_every": POSITIVE_INT,
    "start_iteration": COUNT,
    "std": NONNEGATIVE,
    "reg": NONNEGATIVE,
    "learning_rate": POSITIVE,
    "learning_rate_decay": POSITIVE,
}


def check(name: str, value: Any, table: dict = CONSTRAINTS) -> Any:
    """``value`` as a plain int/float after the checks ``table[name]`` declares."""
    rule = table[name]
    if rule.kind is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
        value = int(value)
    else:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
    if value < rule.low or (rule.strict and value == rule.low):
        bound = {POSITIVE_INT: "a positive int", COUNT: "an int >= 0"}.get(rule._replace(high=math.inf)) or (
            f"{'>' if rule.strict else '>='} {rule.low:g}"
        )
        raise ValueError(f"{name} must be {bound}, got {value}")
    if value > rule.high:
        raise ValueError(f"{name} must be at most {rule.high:g}, got {value}")
    return value


def per_member(name: str, value: Any, size: int) -> np.ndarray:
    """A scalar or ``size`` values, each checked as ``name``: float64 host array (size,)."""
    if isinstance(value, (numbers.Real, np.generic, str, bytes)) or (
        hasattr(value, "ndim") and value.ndim == 0
    ):
        values = [value] * size
    else:
        try:
            values = (
                list(np.asarray(value, dtype=object).reshape(-1)) if hasattr(value, "shape") else list(value)
            )
        except TypeError:
            raise TypeError(
                f"{name} must be a number or a sequence of {size}, got {type(value).__name__}"
            ) from None
        if len(values) != size:
            raise ValueError(f"{name} must be one value or {size} (one per member), got {len(values)}")
    return np.array(
        [check(name, v.item() if isinstance(v, np.generic) else v) for v in values], dtype=np.float64
    )


# ------------------------------------------------------------------------------------------
# Arrays


def initial_weights(weights: dict, dtype: str, num_features: int) -> None:
    """Refuse a ``std`` whose weights, or the scores they give on inputs of order 1, overflow
    ``dtype``: such a net starts at inf/NaN, and training would only report it later."""
    scales = [float(np.max(np.abs(w), initial=0.0)) for w in weights.values()]
    initial_scales(scales, len(weights["W2"]), dtype, num_features)


def initial_scales(scales: list, hidden_size: int, dtype: str, num_features: int) -> None:
    """``initial_weights``' check from the largest |W1| and |W2| (``scales``) alone."""
    top = float(np.finfo(dtype).max)
    bound = num_features * scales[0] * hidden_size * scales[1]  # |scores| for |x| <= 1
    if not all(s < top for s in scales) or not bound < top:
        raise ValueError(
            f"std is so large that the initial weights or scores overflow {dtype}; use a smaller std"
        )


def param(name: str, value, shape: tuple):
    """A parameter array a user assigned: real numbers of ``shape``, else an error naming it."""
    label = f'params["{name}"]'
    array = value if is_array(value) else as_host_array(label, value)
    xp = _namespace(label, array)
    if not xp.isdtype(array.dtype, ("real floating", "integral")):
        raise TypeError(f"{label} must hold real numbers, got dtype {array.dtype}")
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"{label} must have shape {tuple(shape)}, got {tuple(array.shape)}")
    return array


def as_host_array(name: str, x: Any) -> np.ndarray:
    """A user's list or nested sequence as a numpy array; TypeError naming ``name`` otherwise."""
    try:
        return np.asarray(x)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}") from None


def not_on_host(name: str, x: Any, library: str, model: str) -> None:
    """Refuse an array of ``library`` that lives on a device, given to a ``model`` (a backend
    name) that reads host memory only: TypeError naming ``name``, its device and the fix."""
    raise TypeError(
        f"{name} is an array of {library} on device {aac.device(x)}, but a {model} model reads "
        f"host memory only; move {name} to the CPU (its library's CPU device) or pass a numpy array"
    )


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


def within_range(name: str, X: Any, dtype: str) -> None:
    """A host X (N, D) about to be cast to a narrower float ``dtype`` must hold no finite value
    that the cast would make inf (and the scores NaN, with only numpy's warnings): ValueError
    naming ``name`` and the value. A device array's cast is left to its library, since looking
    at its values would cost a sync."""
    if not isinstance(X, np.ndarray):
        return
    beyond = preprocessing.beyond_range(X, dtype)
    if beyond is not None:
        raise ValueError(
            preprocessing.beyond_range_message(name, *beyond, dtype) + ", or use dtype='float64'"
        )


def finite(name: str, X: Any) -> None:
    """ValueError naming ``name`` and the count of NaN/inf values, if it holds any."""
    xp = _namespace(name, X)
    if xp.isdtype(X.dtype, "real floating") and not _all_finite(xp, X):
        bad = int(xp.sum(xp.astype(xp.logical_not(xp.isfinite(X)), X.dtype)))
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")


def labels(name: str, y: Any, num_rows: int, num_classes: int) -> None:
    """y must be a 1-D integer array of ``num_rows`` labels in [0, num_classes)."""
    xp = label_array(name, y, num_rows)
    label_range(name, int(xp.min(y)), int(xp.max(y)), num_classes)


def label_array(name: str, y: Any, num_rows: int):
    """The checks of ``labels`` that need no look at the values (so no host sync): shape and
    integer dtype. Returns y's namespace."""
    xp = _namespace(name, y)
    if y.ndim != 1 or y.shape[0] != num_rows:
        raise ValueError(f"{name} must have shape ({num_rows},) to match its features, got {tuple(y.shape)}")
    if not xp.isdtype(y.dtype, "integral"):
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    return xp


def label_range(name: str, low: int, high: int, num_classes: int) -> None:
    """The value check of ``labels``, given the labels' min and max (computed where y lives)."""
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
