"""Numerical gradients and relative error, as in CS231n's ``gradient_check.py``, on any backend."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np  # host side: results are numpy arrays whatever the device

from twolayer_xp.backend import to_numpy


def eval_numerical_gradient(
    f: Callable[[Any], float], x: Any, verbose: bool = True, h: float = 1e-5
) -> np.ndarray:
    """Central-difference gradient of ``f`` at ``x``, perturbing ``x`` in place (numpy result).

    x: an array of any supported backend, typically a model's live parameter, so that ``f``
    (e.g. ``lambda W: net.loss(X, y, reg)[0]``) sees each perturbation. Each entry is read as a
    Python float before it is changed: torch and strict return views from ``x[ix]``.
    """
    grad = np.zeros(tuple(x.shape), dtype=np.float64)
    for ix in itertools.product(*(range(n) for n in x.shape)):
        old = float(x[ix])
        x[ix] = old + h
        fxph = f(x)
        x[ix] = old - h
        fxmh = f(x)
        x[ix] = old
        grad[ix] = (fxph - fxmh) / (2 * h)
        if verbose:
            print(ix, grad[ix])
    return grad


def rel_error(x: Any, y: Any) -> float:
    """max |x - y| / max(1e-8, |x| + |y|), for arrays of any backend (compared on the host)."""
    x, y = to_numpy(x), to_numpy(y)
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))
