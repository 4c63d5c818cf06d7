"""Checkpoints: a net's params and training state as one ``.npz`` plus a JSON header, and back.

Loading never unpickles (``allow_pickle=False``): params are numpy arrays, everything else
(sizes, dtype, hyperparameters, RNG state, history) is JSON in a 0-d string array. A write goes
to a temporary file in the same folder that is fsynced and then renamed over the target, so a
run killed mid-write leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .files import atomic_write
from .kernels import PARAMS as PARAM_NAMES

FORMAT = "twolayer-xp-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a readable twolayer-xp checkpoint."""


def save(path: str | os.PathLike, params: dict, header: dict, arrays: dict | None = None) -> Path:
    """Write params (numpy), ``header`` (JSON-serializable) and extra ``arrays`` to ``path``."""
    path = Path(path)
    contents = {name: np.asarray(params[name]) for name in PARAM_NAMES}
    for name, value in (arrays or {}).items():
        contents[f"extra_{name}"] = np.asarray(value)
    header = {"format": FORMAT, "version": VERSION, **header}
    contents["header"] = np.asarray(json.dumps(header))
    atomic_write(path, lambda f: np.savez(f, **contents))
    return path


def load(path: str | os.PathLike) -> tuple[dict, dict, dict]:
    """(params, header, extra arrays) from a checkpoint; CheckpointError if it is not ours."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            contents = {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise CheckpointError(
            f"{path} is not a readable twolayer-xp checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    try:
        header = json.loads(str(contents.pop("header")))
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"{path} is not a twolayer-xp checkpoint (no header)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a twolayer-xp checkpoint")
    if header.get("version") != VERSION:
        raise CheckpointError(
            f"{path} is checkpoint version {header.get('version')}; this twolayer-xp reads {VERSION}"
        )
    absent = [key for key in ("dtype", "rng_state") if key not in header]
    if absent:
        raise CheckpointError(f"{path} is a damaged checkpoint: its header lacks {', '.join(absent)}")
    missing = [name for name in PARAM_NAMES if name not in contents]
    if missing:
        raise CheckpointError(f"{path} lacks params {', '.join(missing)}")
    params = {name: contents.pop(name) for name in PARAM_NAMES}
    _check_params(path, params)
    extras = {name[len("extra_") :]: value for name, value in contents.items() if name.startswith("extra_")}
    return params, header, extras


def _check_params(path: Path, params: dict[str, Any]) -> None:
    W1, b1, W2, b2 = (params[name] for name in PARAM_NAMES)
    shapes_ok = (
        W1.ndim == 2
        and W2.ndim == 2
        and b1.shape == (W1.shape[1],)
        and W2.shape[0] == W1.shape[1]
        and b2.shape == (W2.shape[1],)
    )
    if not shapes_ok:
        shapes = {name: p.shape for name, p in params.items()}
        raise CheckpointError(f"{path} has inconsistent param shapes {shapes}")
    for name, p in params.items():
        if p.dtype.kind != "f" or not np.all(np.isfinite(p)):
            raise CheckpointError(f"{path}: param {name} is not a finite float array")


# ------------------------------------------------------------------------------------------
# A net <-> a checkpoint


def save_net(path: str | os.PathLike, net, arrays: dict | None = None) -> Path:
    """Write ``net``'s params (as numpy), dtype, training state (iteration, learning rate, RNG)
    and ``net.metadata`` to ``path``, atomically; ``arrays`` adds named numpy arrays (e.g. a
    mean image). Returns the path written."""
    from .backend import to_numpy

    header = {
        "dtype": net.dtype_name,
        "iteration": net.state.iteration,
        "learning_rate": net.state.learning_rate,
        "rng_state": net.state.rng.get_state(),
        "saved_from": {"backend": net.backend.name, "device": net.device},
        "metadata": net.metadata,
    }
    params = {name: to_numpy(p) for name, p in net.live_params().items()}
    return save(path, params, header, arrays)


def load_net(path: str | os.PathLike, *, device: Any = "cpu", backend: Any = None, dtype: Any = None):
    """(net, extra arrays) from a checkpoint, on any device; dtype None keeps the saved one."""
    from .model import TwoLayerNet
    from .rng import HostRNG

    params, header, arrays = load(path)
    D, H = params["W1"].shape
    net = TwoLayerNet(
        D,
        H,
        params["W2"].shape[1],
        std=0.0,
        device=device,
        backend=backend,
        dtype=header["dtype"] if dtype is None else dtype,
        rng=0,
    )
    net.params = {name: net.backend.asarray(p, dtype=net.dtype, copy=True) for name, p in params.items()}
    try:
        net.state.rng = HostRNG.from_state(header["rng_state"])
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path} holds an unusable random state ({exc})") from None
    net.state.iteration = int(header.get("iteration", 0))
    net.state.learning_rate = header.get("learning_rate")
    net.metadata = header.get("metadata") or {}
    return net, arrays
