"""Inputs onto a model's device (checked once, at the entry) and outputs back as they came."""

from __future__ import annotations

import contextlib
import functools
from typing import Any

from twolayer_xp.backend import Backend, dtype_name, host_view, library_of, to_numpy
from twolayer_xp.core import kernels, threads, validation


def features(backend: Backend, dtype: Any, X: Any, num_features: int, name: str = "X", check_finite=True):
    """(X on the device in ``dtype``, whether X came from the host), after the checks (an X in
    host memory, whatever its library, must hold values that fit ``dtype``: placement happens
    once per call, never per step).

    X: (N, num_features), numpy, a nested sequence, or an array of any supported library.
    """
    on_host = not backend.owns(X)
    X = _readable(backend, X, name) if on_host else X
    host = host_view(X)  # None on a device: looking there would cost a sync
    X = X if on_host else _here(backend, X)
    validation.features(name, X, num_features, check_finite)
    if host is not None:
        validation.within_range(name, host, dtype_name(dtype))
    return backend.asarray(X, dtype=dtype), on_host


def labels(backend: Backend, y: Any, num_rows: int, num_classes: int, name: str = "y"):
    """y (num_rows,) on the device, integer dtype kept, after the checks."""
    y = _here(backend, y) if backend.owns(y) else _readable(backend, y, name)
    validation.labels(name, y, num_rows, num_classes)
    return backend.asarray(y)


def _here(backend: Backend, x: Any):
    """An array of ``backend``'s library on the model's device: one on another device is moved
    first, so that its checks run where the model computes (CuPy would launch them on the
    model's GPU against the other GPU's memory, and fails where the two cannot reach each other)."""
    return x if backend.holds(x) else backend.asarray(x)


def _readable(backend: Backend, x: Any, name: str):
    """An input from outside ``backend``'s library as something it reads: a sequence as numpy;
    another library's array as it is, unless it lives on a device and ``backend`` reads host
    memory only (numpy would raise that library's own error, naming no argument)."""
    library = library_of(x)
    if library is None:
        return validation.as_host_array(name, x)
    if backend.host_inputs_only and not library.in_host_memory(x):
        validation.not_on_host(name, x, library.name, backend.name)
    return x


def on_device(method):
    """``method`` of a model, run with the model's device current (``Backend.activate``): every
    public method that computes or makes arrays is one."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self.backend.activate():
            return method(self, *args, **kwargs)

    return run


def output(x: Any, on_host: bool):
    """Outputs follow the input: numpy when the input came from the host, else the device array."""
    return to_numpy(x) if on_host else x


class DeviceModel:
    """What a model with params on a device shares (TwoLayerNet, Population): sizes read off its
    param shapes, device and dtype names, and placing (X, y) once after checks.

    A subclass sets ``backend``, ``dtype`` and ``shapes`` (name -> shape, with W1 (D, ...),
    W2 (..., H, C) and b2 (..., C))."""

    backend: Backend
    dtype: Any
    shapes: dict
    threads_used: threads.Threads | None = None  # what the last train() computed with

    def limit_threads(self, requested: int | None, batch_size: int):
        """The context a ``train`` call runs in: CPU threads as ``threads.choose`` decides for
        this model's step on ``batch_size`` rows (``requested``: the caller's count or None),
        recorded in ``threads_used``."""
        members = getattr(self, "size", None) or 1
        D, H, C = self.input_size, self.hidden_size, self.output_size
        flops = kernels.step_flops(validation.check("batch_size", batch_size), D, H, C, members)
        in_effect = self.backend.threads_in_effect() if requested is None else None
        self.threads_used = threads.choose(requested, flops, in_effect=in_effect)
        return self._recorded(self.backend.limit_threads(self.threads_used.limit))

    @contextlib.contextmanager
    def _recorded(self, limit):
        """``limit`` entered, and ``threads_used`` set to the count the pool then really has
        for this thread (training from a second Python thread, OpenBLAS may keep another
        thread's count, and OpenMP's is per thread: the record says what was used)."""
        with limit:
            now = self.backend.threads_now()
            if now is not None and now != self.threads_used.count:
                self.threads_used = self.threads_used._replace(count=now)
            yield

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

    @on_device
    def eval_features(self, X: Any):
        """(X on the device, whether it came from the host) for evaluation, scanned for NaN and
        inf (a ValueError naming X: a NaN row would silently predict some class), except an X
        already on a device (a GPU's, or array-api-strict's standing in for one), where the scan
        would cost a host sync per call."""
        scan = self.backend.host_arrays or not self.backend.owns(X)
        return features(self.backend, self.dtype, X, self.input_size, check_finite=scan)

    @on_device
    def accuracies(self, X: Any, y: Any, count) -> list[float]:
        """Fraction of rows of X predicted as y, per member (one entry for a net), in ONE host
        sync: the range of a y on the model's device comes back in the same transfer (a y
        elsewhere, the host or another device, is moved and checked as ``place`` does it). count: the kernel of correct predictions, () for a net or (K,) for a population."""
        Xd, _ = self.eval_features(X)
        n = Xd.shape[0]
        if not self.backend.holds(y):
            yd = labels(self.backend, y, n, self.output_size)
            return [
                c / n for c in self.backend.to_numpy(count(self.live_params(), Xd, yd)).reshape(-1).tolist()
            ]
        xp = validation.label_array("y", y, n)
        hits = xp.reshape(xp.astype(count(self.live_params(), Xd, y), xp.int64), (-1,))
        ends = xp.astype(xp.stack([xp.min(y), xp.max(y)]), xp.int64)
        *hits, low, high = self.backend.to_numpy(xp.concat([hits, ends])).tolist()
        validation.label_range("y", low, high, self.output_size)
        return [c / n for c in hits]

    @on_device
    def place(self, X: Any, y: Any, name: str = "X", check_finite: bool = True):
        """(X, y) on the device after checks; ``name`` names X in errors (y is named after it)."""
        Xd, _ = features(self.backend, self.dtype, X, self.input_size, name, check_finite)
        return Xd, labels(self.backend, y, Xd.shape[0], self.output_size, "y" + name[1:])
