"""The checkpoint file format: named float arrays (params), extra arrays and a JSON header in one ``.npz``.

It knows no model: a model hands in its params by name and a header, and gets them back (see
``core.model`` for what a net stores). Loading never unpickles: params are numpy arrays,
everything else (sizes, dtype, hyperparameters, RNG state, history) is JSON in a 0-d string array. Loading trusts nothing in
the file: every array's size and dtype is checked before its data is read (``safe_npz``) and the
header is checked field by field against ``HEADER_SCHEMA``, so a bad file is one CheckpointError
naming the file and the field. A write goes to a temporary file in the same folder that is
fsynced and then renamed over the target, so a run killed mid-write leaves the previous
checkpoint whole.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from twolayer_xp.errors import one_line, shown
from twolayer_xp.io.files import FileRefused, atomic_write, open_regular
from twolayer_xp.io.safe_npz import NpzError, read_npz

FORMAT = "twolayer-xp-checkpoint"
VERSION = 1

# Caps on what loading may allocate. CIFAR-10 (D=3072) with H=10,000 hidden units in float64 is
# 246 MB of params; 1 GiB leaves 4x headroom yet stays loadable on a laptop.
MAX_BYTES = 1 << 30  # all arrays read from one checkpoint
MAX_FILE_BYTES = MAX_BYTES + (16 << 20)  # the arrays plus zip and .npy headers
# The header is JSON text; its history holds one loss per iteration (~20 characters each), so
# 32 Mi characters keep about 1.5 million iterations, 128 MiB as a numpy unicode array.
MAX_HEADER_CHARS = 32 << 20
MAX_EXTRA_BYTES = 64 << 20  # per extra array: a mean image is D floats (12 KB for CIFAR-10)
MAX_EXTRAS = 16
MAX_JSON_DEPTH = 64  # what this package writes is 4 deep


class CheckpointError(ValueError):
    """A file that is not a readable twolayer-xp checkpoint."""


class Layout(NamedTuple):
    """What a model stores, declared by the model (this module knows none).

    params: the names of its float arrays; shapes_problem(shapes: name -> shape) -> a phrase or
    None, judged before any data is read; fields: header field -> (what it must be, check), each
    narrower than HEADER_SCHEMA's."""

    params: tuple
    shapes_problem: Callable[[dict], str | None]
    fields: dict


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _random_state(v) -> bool:
    """The shape every stored random state has; what its state may hold is the owner's check
    (``core.rng.valid_state``, passed to ``load``/``save`` as a field check)."""
    return isinstance(v, dict) and set(v) == {"kind", "state"} and isinstance(v["kind"], str)


def _metadata(v) -> bool:
    if not isinstance(v, dict) or not isinstance(v.get("config", {}), dict):
        return False
    history = v.get("history", {})
    return isinstance(history, dict) and all(
        isinstance(values, list) and all(map(_number, values)) for values in history.values()
    )


# The header, field by field, in the spirit of scikit-learn's ``_parameter_constraints``:
# field -> (required, what it must be, check). load and save both go through this one table.
HEADER_SCHEMA = {
    "version": (True, f"the int {VERSION}", lambda v: _int(v) and v == VERSION),
    "dtype": (True, "a dtype name", lambda v: isinstance(v, str)),
    "rng_state": (
        True,
        '{"kind": str, "state": ...}',
        _random_state,
    ),
    "iteration": (False, "an int >= 0", lambda v: _int(v) and v >= 0),
    "learning_rate": (
        False,
        "null or a finite number >= 0",
        lambda v: v is None or (_number(v) and math.isfinite(v) and v >= 0),
    ),
    "saved_from": (
        False,
        '{"backend": str, "device": str}',
        lambda v: isinstance(v, dict) and all(isinstance(v.get(k), str) for k in ("backend", "device")),
    ),
    "metadata": (
        False,
        "a JSON object whose config (if any) is an object and whose history (if any) maps names to "
        "lists of numbers",
        _metadata,
    ),
}


def header_problem(header, field_checks: dict | None = None) -> str | None:
    """What is wrong with a header (a one-line phrase), or None when it passes HEADER_SCHEMA and
    the owner's narrower ``field_checks`` (``Layout.fields``)."""
    depth = _depth(header)
    if depth > MAX_JSON_DEPTH:
        return f"header is nested more than {MAX_JSON_DEPTH} levels deep"
    for field, (required, expected, check) in HEADER_SCHEMA.items():
        narrower = (field_checks or {}).get(field)
        if field not in header:
            if required:
                return f"header field {field} is missing; expected {expected}"
        elif not check(header[field]) or (narrower is not None and not narrower[1](header[field])):
            what = expected if narrower is None else narrower[0]
            return f"header field {field} must be {what}, got {shown(header[field])}"
    return None


def _depth(value) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack and deepest <= MAX_JSON_DEPTH:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def save(
    path: str | os.PathLike,
    params: dict,
    header: dict,
    arrays: dict | None,
    layout: Layout,
) -> Path:
    """Write params (``layout.params`` -> numpy float array), ``header`` (JSON-serializable) and
    extra ``arrays``; return the path.

    Like ``np.savez``, ``.npz`` is appended to a path that does not end with it. Anything ``load``
    would refuse (an object or string extra array, a header outside HEADER_SCHEMA, arrays over
    the caps) is a ValueError naming it, and nothing is written.
    """
    path = Path(path)
    if not path.name.endswith(".npz"):
        path = path.with_name(path.name + ".npz")
    contents = {name: np.asarray(params[name]) for name in layout.params}
    for name, value in (arrays or {}).items():
        contents[f"extra_{name}"] = np.asarray(value)
    text = json.dumps({"format": FORMAT, "version": VERSION, **header})
    contents["header"] = np.asarray(text)
    problem = _arrays_problem({name: (a.shape, a.dtype) for name, a in contents.items()}, layout)
    problem = problem or _values_problem(contents, layout) or header_problem(json.loads(text), layout.fields)
    if problem:
        raise ValueError(f"cannot save checkpoint {path}: {problem}")
    atomic_write(path, lambda f: np.savez(f, **contents))
    return path


def load(path: str | os.PathLike, layout: Layout) -> tuple[dict, dict, dict]:
    """(params, header, extra arrays) from a checkpoint of ``layout``; CheckpointError if it is
    not one: every param present and finite, every header field as declared."""
    path = Path(path)
    try:
        file = open_regular(path, MAX_FILE_BYTES)
    except FileNotFoundError:
        npz = path.with_name(path.name + ".npz")
        hint = f" (did you mean {npz}?)" if npz.is_file() else ""
        raise CheckpointError(f"checkpoint {path} does not exist{hint}") from None
    except FileRefused as exc:
        raise CheckpointError(f"checkpoint {exc}; a checkpoint is a .npz file") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path} ({exc.strerror or exc})") from None
    try:
        with file:
            contents = read_npz(
                file,
                lambda name: name in layout.params or name == "header" or name.startswith("extra_"),
                lambda headers: _check_arrays(headers, layout),
            )
    except NpzError as exc:
        raise CheckpointError(f"{path} is not a readable twolayer-xp checkpoint ({one_line(exc)})") from None
    if "header" not in contents:
        raise CheckpointError(f"{path} is not a twolayer-xp checkpoint (no header)")
    try:
        header = json.loads(str(contents.pop("header")[()]))
    except RecursionError:
        raise CheckpointError(f"{path}: header JSON is nested too deeply to read") from None
    except ValueError as exc:
        raise CheckpointError(f"{path}: header is not JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a twolayer-xp checkpoint (its header has no format {FORMAT!r})")
    problem = header_problem(header, layout.fields)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    missing = [name for name in layout.params if name not in contents]
    if missing:
        raise CheckpointError(f"{path} lacks params {', '.join(missing)}")
    problem = _values_problem(contents, layout)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    params = {name: contents.pop(name) for name in layout.params}
    extras = {name[len("extra_") :]: value for name, value in contents.items() if name.startswith("extra_")}
    return params, header, extras


def _values_problem(contents: dict, layout: Layout) -> str | None:
    """What is wrong with the params' values (NaN or inf), or None; save and load alike."""
    for name in layout.params:
        if not np.all(np.isfinite(contents[name])):
            return f"param {name} is not a finite float array (it holds NaN or inf)"
    return None


def _check_arrays(headers: dict, layout: Layout) -> None:
    problem = _arrays_problem({name: (h.shape, h.dtype) for name, h in headers.items()}, layout)
    if problem:
        raise NpzError(problem)


def _arrays_problem(arrays: dict[str, tuple[tuple, np.dtype]], layout: Layout) -> str | None:
    """What is wrong with the arrays' (shape, dtype)s, judged before any data is read, or None."""
    total, extras = 0, 0
    for name, (shape, dtype) in arrays.items():
        nbytes = math.prod(shape) * dtype.itemsize
        total += nbytes
        if name == "header" and (dtype.kind != "U" or shape != ()):
            return f"array header must be a 0-d unicode string, got shape {shape} dtype {dtype}"
        if name == "header" and dtype.itemsize // 4 > MAX_HEADER_CHARS:
            return f"header is {dtype.itemsize // 4} characters long; at most {MAX_HEADER_CHARS}"
        if name in layout.params and (dtype.kind != "f" or dtype.itemsize not in (4, 8)):
            return f"param {name} has dtype {dtype}; expected float32 or float64"
        if name.startswith("extra_"):
            extras += 1
            if dtype.kind not in "biufc":
                return f"extra array {name[6:]!r} has dtype {dtype}; expected a numeric dtype"
            if nbytes > MAX_EXTRA_BYTES:
                return f"extra array {name[6:]!r} is {nbytes} bytes; at most {MAX_EXTRA_BYTES}"
    if extras > MAX_EXTRAS:
        return f"it holds {extras} extra arrays; at most {MAX_EXTRAS}"
    if total > MAX_BYTES:
        return f"its arrays hold {total} bytes; at most {MAX_BYTES}"
    if all(name in arrays for name in layout.params):
        return layout.shapes_problem({name: arrays[name][0] for name in layout.params})
    return None
