"""Inputs onto a model's device (checked once, at the entry) and outputs back as they came."""

from __future__ import annotations

from typing import Any

from . import validation
from .backend import Backend, is_array, to_numpy


def features(backend: Backend, dtype: Any, X: Any, num_features: int, name: str = "X", check_finite=True):
    """(X on the device in ``dtype``, whether X came from the host), after the checks.

    X: (N, num_features), numpy, a nested sequence, or an array of ``backend``.
    """
    on_host = not backend.owns(X)
    if on_host and not is_array(X):
        X = validation.as_host_array(name, X)
    validation.features(name, X, num_features, check_finite)
    return backend.asarray(X, dtype=dtype), on_host


def labels(backend: Backend, y: Any, num_rows: int, num_classes: int, name: str = "y"):
    """y (num_rows,) on the device, integer dtype kept, after the checks."""
    if not backend.owns(y) and not is_array(y):
        y = validation.as_host_array(name, y)
    validation.labels(name, y, num_rows, num_classes)
    return backend.asarray(y)


def output(x: Any, on_host: bool):
    """Outputs follow the input: numpy when the input came from the host, else the device array."""
    return to_numpy(x) if on_host else x
