"""twolayer-xp: the CS231n two-layer net, written once on the Python array API.

The same ``TwoLayerNet`` trains with numpy on a CPU or CuPy on an NVIDIA GPU (and on torch or
array-api-strict): ``TwoLayerNet(D, H, C, device="cuda")``.
"""

from .backend import Backend, CudaUnavailableError, cuda_available, resolve, to_numpy
from .gradcheck import eval_numerical_gradient, rel_error
from .model import TwoLayerNet
from .population import Population
from .training import TrainingDivergedError

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "CudaUnavailableError",
    "Population",
    "TrainingDivergedError",
    "TwoLayerNet",
    "cuda_available",
    "eval_numerical_gradient",
    "rel_error",
    "resolve",
    "to_numpy",
    "__version__",
]
