"""twolayer-xp: the CS231n two-layer net, written once on the Python array API.

The same ``TwoLayerNet`` trains with numpy on a CPU or CuPy on an NVIDIA GPU (and on torch or
array-api-strict): ``TwoLayerNet(D, H, C, device="cuda")``.

Names are imported on first use, so ``twolayer-xp`` starts (and a Ctrl-C during start-up is
handled by the CLI) before numpy and the array libraries load, and ``import twolayer_xp``
imports nothing of the application layer.
"""

import importlib

_EXPORTS = {
    "Backend": "backend",
    "CudaUnavailableError": "backend",
    "cuda_available": "backend",
    "resolve": "backend",
    "to_numpy": "backend",
    "eval_numerical_gradient": "core.gradcheck",
    "rel_error": "core.gradcheck",
    "TwoLayerNet": "core.model",
    "Population": "core.population",
    "FitResult": "core.training",
    "TrainingDivergedError": "core.training",
    "TrainingState": "core.training",
    "grid_search": "app.grid",
    "run_sweep": "app.sweep",
    "SweepConfig": "app.sweep",
    "load_model": "app.trained",
    "TrainedModel": "app.trained",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name):
    if name == "__version__":  # read when asked: importlib.metadata costs a process 50 ms to import
        globals()[name] = _version()
        return globals()[name]
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("twolayer-xp")  # pyproject.toml's, the one place it is written
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def __dir__():
    return sorted([*globals(), *_EXPORTS])
