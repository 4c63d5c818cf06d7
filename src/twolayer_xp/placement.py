"""Inputs onto a model's device (checked once, at the entry) and outputs back as they came."""

from __future__ import annotations

from typing import Any

from . import validation
from .backend import Backend, dtype_name, is_array, to_numpy


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


class Placed:
    """What a model with params on a device shares (TwoLayerNet, Population): sizes read off its
    param shapes, device and dtype names, and placing (X, y) once after checks.

    A subclass sets ``backend``, ``dtype`` and ``shapes`` (name -> shape, with W1 (D, ...),
    W2 (..., H, C) and b2 (..., C))."""

    backend: Backend
    dtype: Any
    shapes: dict

    @property
    def input_size(self) -> int:
        return self.shapes["W1"][0]

    @property
    def hidden_size(self) -> int:
        return self.shapes["W2"][-2]

    @property
    def output_size(self) -> int:
        return self.shapes["b2"][-1]

    @property
    def device(self) -> str:
        return self.backend.device_label

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.dtype)

    def place(self, X: Any, y: Any, name: str = "X", check_finite: bool = True):
        """(X, y) on the device after checks; ``name`` names X in errors (y is named after it)."""
        Xd, _ = features(self.backend, self.dtype, X, self.input_size, name, check_finite)
        return Xd, labels(self.backend, y, Xd.shape[0], self.output_size, "y" + name[1:])
