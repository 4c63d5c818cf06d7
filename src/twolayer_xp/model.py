"""TwoLayerNet: a drop-in for the CS231n class, on any array-API backend.

affine (D -> H) -> ReLU -> affine (H -> C) -> softmax cross-entropy, L2 on the weights.
"""

from __future__ import annotations

from typing import Any

from . import checkpoint, kernels, training, validation
from .backend import Backend, HostRNG, as_host_array, dtype_name, is_array, resolve, to_numpy


class TwoLayerNet:
    """The CS231n two-layer fully connected net.

    input_size D, hidden_size H, output_size C; weights ~ std * N(0, 1), biases 0.
    device: "cpu", "cuda", "cuda:N" or a library device object. backend: None (cpu -> numpy,
    cuda -> CuPy), "numpy", "cupy", "torch", "array_api_strict" or a namespace module.
    dtype: "float64" (CS231n's numbers) or "float32". rng: None = numpy's legacy global state
    (``np.random.seed`` reproduces CS231n), an int seed, a Generator or a RandomState.

    ``params`` holds the live arrays on the device: W1 (D, H), b1 (H,), W2 (H, C), b2 (C,).
    Methods accept numpy arrays or arrays of the model's backend; outputs follow the input
    (numpy in -> numpy out, device array in -> device array out).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        std: float = 1e-4,
        *,
        device: Any = "cpu",
        backend: Any = None,
        dtype: Any = "float64",
        rng: Any = None,
    ):
        D = validation.positive_int("input_size", input_size)
        H = validation.positive_int("hidden_size", hidden_size)
        C = validation.positive_int("output_size", output_size)
        std = validation.real("std", std, nonnegative=True)
        self.backend: Backend = resolve(device, backend)
        self.dtype = self.backend.dtype(dtype)
        self.rng = HostRNG(rng)
        xp, dev = self.backend.xp, self.backend.device
        # CS231n order: randn(D, H) for W1, then randn(H, C) for W2, drawn in float64 on the host.
        W1 = std * self.rng.standard_normal((D, H))
        W2 = std * self.rng.standard_normal((H, C))
        self.params = {
            "W1": self.backend.asarray(W1, dtype=self.dtype),
            "b1": xp.zeros((H,), dtype=self.dtype, device=dev),
            "W2": self.backend.asarray(W2, dtype=self.dtype),
            "b2": xp.zeros((C,), dtype=self.dtype, device=dev),
        }
        # Where a resumed run continues from: iterations done and the decayed learning rate.
        self.iteration = 0
        self.learning_rate: float | None = None
        self.metadata: dict = {}  # free-form JSON kept in checkpoints (run config, history)

    # -- sizes ------------------------------------------------------------------------------

    @property
    def input_size(self) -> int:
        return self.params["W1"].shape[0]

    @property
    def hidden_size(self) -> int:
        return self.params["W1"].shape[1]

    @property
    def output_size(self) -> int:
        return self.params["W2"].shape[1]

    @property
    def device(self) -> str:
        return self.backend.device_label

    def __repr__(self) -> str:
        return (
            f"TwoLayerNet({self.input_size}, {self.hidden_size}, {self.output_size}, "
            f"backend={self.backend.name!r}, device={self.device!r}, dtype={self.dtype_name!r})"
        )

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.dtype)

    # -- CS231n API ---------------------------------------------------------------------------

    def loss(self, X: Any, y: Any = None, reg: float = 0.0):
        """Scores (N, C) when y is None; else (loss: float, grads: dict shaped like params).

        X: (N, D); y: (N,) integer labels in [0, C); reg: L2 strength (loss adds
        reg * (sum W1**2 + sum W2**2)).
        """
        Xd, on_host = self.features(X)
        if y is None:
            return self._out(kernels.scores(self._live_params(), Xd), on_host)
        reg = validation.real("reg", reg, nonnegative=True)
        yd = self.labels(y, Xd.shape[0])
        loss, grads = kernels.loss_and_grads(self._live_params(), Xd, yd, reg)
        return float(loss), {name: self._out(g, on_host) for name, g in grads.items()}

    def predict(self, X: Any):
        """Predicted labels (N,): argmax of the scores."""
        Xd, on_host = self.features(X)
        return self._out(kernels.predict(self._live_params(), Xd), on_host)

    def accuracy(self, X: Any, y: Any) -> float:
        """Fraction of rows of X whose predicted label equals y (one host sync)."""
        Xd, _ = self.features(X)
        yd = self.labels(y, Xd.shape[0])
        return int(kernels.count_correct(self._live_params(), Xd, yd)) / Xd.shape[0]

    def train(
        self,
        X: Any,
        y: Any,
        X_val: Any,
        y_val: Any,
        learning_rate: float = 1e-3,
        learning_rate_decay: float = 0.95,
        reg: float = 5e-6,
        num_iters: int = 100,
        batch_size: int = 200,
        verbose: bool = False,
        **options: Any,
    ) -> dict:
        """Minibatch SGD, CS231n semantics; returns loss/train_acc/val_acc histories as floats.

        Each iteration samples ``batch_size`` rows with replacement; every
        ``max(N / batch_size, 1)`` iterations it records the minibatch and validation accuracy
        and multiplies the learning rate by ``learning_rate_decay``. ``options`` are the extras
        of ``training.fit`` (progress, on_divergence, sync_every).
        """
        return training.fit(
            self,
            X,
            y,
            X_val,
            y_val,
            learning_rate=learning_rate,
            learning_rate_decay=learning_rate_decay,
            reg=reg,
            num_iters=num_iters,
            batch_size=batch_size,
            verbose=verbose,
            **options,
        )

    # -- checkpoints -----------------------------------------------------------------------------

    def save(self, path, arrays: dict | None = None) -> None:
        """Write params (as numpy), dtype, training position, RNG state and ``self.metadata`` to
        ``path`` (.npz), atomically; ``arrays`` adds named numpy arrays (e.g. a mean image)."""
        header = {
            "dtype": self.dtype_name,
            "iteration": self.iteration,
            "learning_rate": self.learning_rate,
            "rng_state": self.rng.get_state(),
            "saved_from": {"backend": self.backend.name, "device": self.device},
            "metadata": self.metadata,
        }
        params = {name: to_numpy(p) for name, p in self._live_params().items()}
        checkpoint.save(path, params, header, arrays)

    @classmethod
    def load(cls, path, *, device: Any = "cpu", backend: Any = None, dtype: Any = None) -> TwoLayerNet:
        """A model from a checkpoint, on any device (trained on a GPU, loaded on a CPU, or back).
        dtype: None keeps the saved one. The extra arrays are in ``net.checkpoint_arrays``."""
        params, header, arrays = checkpoint.load(path)
        D, H = params["W1"].shape
        net = cls(
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
            net.rng = HostRNG.from_state(header["rng_state"])
        except (ValueError, TypeError, KeyError) as exc:
            raise checkpoint.CheckpointError(f"{path} holds an unusable random state ({exc})") from None
        net.iteration = int(header.get("iteration", 0))
        net.learning_rate = header.get("learning_rate")
        net.metadata = header.get("metadata") or {}
        net.checkpoint_arrays = arrays
        return net

    # -- placement -----------------------------------------------------------------------------

    def features(self, X: Any, name: str = "X", check_finite: bool = True):
        """(X on the device in the model's dtype, whether X came from the host), after checks."""
        on_host = not self.backend.owns(X)
        if on_host and not is_array(X):
            X = as_host_array(name, X)
        validation.features(name, X, self.input_size, check_finite)
        return self.backend.asarray(X, dtype=self.dtype), on_host

    def labels(self, y: Any, num_rows: int, name: str = "y"):
        """y on the device (integer dtype kept), after checks against ``num_rows`` and C."""
        if not self.backend.owns(y) and not is_array(y):
            y = as_host_array(name, y)
        validation.labels(name, y, num_rows, self.output_size)
        return self.backend.asarray(y)

    def _out(self, x: Any, on_host: bool):
        return to_numpy(x) if on_host else x

    def _live_params(self) -> dict:
        # A notebook may assign a numpy array into params (e.g. loaded weights): adopt it once.
        for name, p in self.params.items():
            if not self.backend.owns(p) or p.dtype != self.dtype:
                self.params[name] = self.backend.asarray(p, dtype=self.dtype, copy=True)
        return self.params
