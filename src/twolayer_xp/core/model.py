"""TwoLayerNet: a drop-in for the CS231n class, on any array-API backend.

affine (D -> H) -> ReLU -> affine (H -> C) -> softmax cross-entropy, L2 on the weights.
The model holds its params and the CS231n API; the loop is ``training``'s job, the file format
``io.checkpoint``'s (this module says what a net stores in it: ``LAYOUT``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twolayer_xp.backend import DTYPES, Backend, resolve, to_numpy
from twolayer_xp.core import device_model, kernels, resources, rng, training, validation
from twolayer_xp.core.rng import HostRNG
from twolayer_xp.io import checkpoint


class TwoLayerNet(device_model.DeviceModel):
    """The CS231n two-layer fully connected net.

    input_size D, hidden_size H, output_size C; weights ~ std * N(0, 1), biases 0.
    device: "cpu", "cuda", "cuda:N" or a library device object. backend: None (cpu -> numpy,
    cuda -> CuPy), "numpy", "cupy", "torch", "array_api_strict" or a namespace module.
    dtype: "float64" (CS231n's numbers) or "float32". rng: None = numpy's legacy global state
    (``np.random.seed`` reproduces CS231n), an int seed, a Generator or a RandomState.

    ``params`` holds the live arrays on the device: W1 (D, H), b1 (H,), W2 (H, C), b2 (C,).
    ``state`` is where training continues from (iteration, decayed learning rate, rng).
    ``metadata`` is free-form JSON kept in checkpoints. Methods accept numpy arrays or arrays
    of the model's backend; outputs follow the input (numpy in -> numpy out, device in -> device out).
    """

    size = None  # one net; a Population has K members

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
        D, H, C = (
            validation.check(n, v)
            for n, v in zip(kernels.SIZES, (input_size, hidden_size, output_size), strict=True)
        )
        std = validation.check("std", std)
        self.backend: Backend = resolve(device, backend)
        self.dtype = self.backend.dtype(dtype)
        resources.check_net(D, H, C, self.dtype_name, self.backend.host_memory)
        self.shapes = kernels.param_shapes(D, H, C)
        self.state = training.TrainingState(HostRNG(rng))
        self.metadata: dict = {}
        xp, dev = self.backend.xp, self.backend.device
        # CS231n order: randn(D, H) for W1, then randn(H, C) for W2, drawn in float64 on the host.
        weights = {name: self.state.rng.scaled_normal(self.shapes[name], std) for name in kernels.WEIGHTS}
        validation.initial_weights(weights, self.dtype_name, D)
        with self.backend.activate():
            self.params = {
                name: self.backend.asarray(weights[name], dtype=self.dtype)
                if name in weights
                else xp.zeros(shape, dtype=self.dtype, device=dev)
                for name, shape in self.shapes.items()
            }

    @property
    def iteration(self) -> int:
        """Iterations trained so far (``state.iteration``)."""
        return self.state.iteration

    def __repr__(self) -> str:
        return (
            f"TwoLayerNet({self.input_size}, {self.hidden_size}, {self.output_size}, "
            f"backend={self.backend.name!r}, device={self.device!r}, dtype={self.dtype_name!r})"
        )

    # -- CS231n API ---------------------------------------------------------------------------

    @device_model.on_device
    def loss(self, X: Any, y: Any = None, reg: float = 0.0):
        """Scores (N, C) when y is None; else (loss: float, grads: dict W1, b1, W2, b2).

        X: (N, D); y: (N,) integer labels in [0, C); reg: L2 strength (loss adds
        reg * (sum W1**2 + sum W2**2)). ``float(loss)`` is one host sync: the CS231n contract.
        """
        Xd, on_host = device_model.features(self.backend, self.dtype, X, self.input_size)
        if y is None:
            return device_model.output(kernels.scores(self.live_params(), Xd), on_host)
        reg = validation.check("reg", reg)
        yd = device_model.labels(self.backend, y, Xd.shape[0], self.output_size)
        loss, grads = kernels.loss_and_grads(self.live_params(), Xd, yd, reg)
        return float(loss), {name: device_model.output(grads[name], on_host) for name in kernels.PARAMS}

    @device_model.on_device
    def predict(self, X: Any):
        """Predicted labels (N,): argmax of the scores. No host sync for a device X."""
        Xd, on_host = self.eval_features(X)
        return device_model.output(kernels.predict(self.live_params(), Xd), on_host)

    @device_model.on_device
    def accuracy(self, X: Any, y: Any) -> float:
        """Fraction of rows of X whose predicted label equals y; one host sync (see
        ``DeviceModel.accuracies``)."""
        return self.accuracies(X, y, kernels.count_correct)[0]

    @device_model.on_device
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
        threads: int | None = None,
        **options: Any,
    ) -> dict:
        """Minibatch SGD, CS231n semantics; returns loss/train_acc/val_acc histories as floats.

        Each iteration samples ``batch_size`` rows with replacement; every
        ``max(N / batch_size, 1)`` iterations it records the minibatch and validation accuracy
        and multiplies the learning rate by ``learning_rate_decay``. ``options`` are the extras
        of ``training.fit`` (start_iteration, progress, on_divergence, sync_every). On
        divergence the histories hold the finite part and ``on_divergence`` says what happens.
        A second call continues the count from ``state.iteration`` (its epochs fall where one
        longer call's would; CS231n's loop restarts at 0, as ``start_iteration=0`` does).
        threads: CPU threads to compute with; None: the environment's, else as many as the
        step can use (``core.threads``). What was used: ``threads_used``.
        """
        with self.limit_threads(threads, batch_size):
            return training.fit(
                self, X, y, X_val, y_val, learning_rate=learning_rate,
                learning_rate_decay=learning_rate_decay, reg=reg, num_iters=num_iters,
                batch_size=batch_size, verbose=verbose, **options,
            ).history  # fmt: skip

    # -- checkpoints: thin wrappers for the notebook habit -----------------------------------------

    def save(self, path, arrays: dict | None = None):
        """Write this net to ``path`` (an .npz; see ``save_net``); returns the path."""
        return save_net(path, self, arrays)

    @classmethod
    def load(cls, path, *, device: Any = "cpu", backend: Any = None, dtype: Any = None) -> TwoLayerNet:
        """A net from a checkpoint, on any device (trained on a GPU, loaded on a CPU, or back).
        dtype: None keeps the saved one. Extra arrays: ``load_net``."""
        return load_net(path, device=device, backend=backend, dtype=dtype)[0]

    # -- what the training loop and the checkpoint need -------------------------------------------

    def step(self, params, X, y, learning_rate, reg, ctx=None):
        return kernels.sgd_step(params, X, y, learning_rate, reg, ctx)

    def count_correct(self, params, X, y, ctx=None):
        return kernels.count_correct(params, X, y, ctx)

    def restore(self, params: dict, source: dict, member=None) -> None:
        """Copy ``source``'s values into the live ``params`` (their identity kept)."""
        for name in kernels.PARAMS:
            params[name][...] = source[name]

    def live_params(self) -> dict:
        """``params`` checked and on the device. A notebook may assign numpy arrays into params
        (e.g. loaded weights): they are adopted once, cast to the model's dtype."""
        for name, shape in self.shapes.items():
            if name not in self.params:
                raise KeyError(f'params["{name}"] is missing; expected an array of shape {shape}')
            p = self.params[name]
            if not (self.backend.owns(p) and p.dtype == self.dtype):
                p = self.params[name] = self.backend.asarray(
                    validation.param(name, p, shape), dtype=self.dtype, copy=True
                )
            if tuple(p.shape) != shape:
                raise ValueError(f'params["{name}"] must have shape {shape}, got {tuple(p.shape)}')
        return self.params


# ------------------------------------------------------------------------------------------
# A net <-> a checkpoint file


def _shapes_problem(shapes: dict) -> str | None:
    W1, b1, W2, b2 = (shapes[name] for name in kernels.PARAMS)
    if (
        len(W1) == 2
        and len(W2) == 2
        and min(W1 + W2) > 0
        and b1 == W1[1:]
        and W2[0] == W1[1]
        and b2 == W2[1:]
    ):
        return None
    listed = ", ".join(f"{name} {shapes[name]}" for name in kernels.PARAMS)
    return f"param shapes {listed} are inconsistent; expected W1 (D, H), b1 (H,), W2 (H, C), b2 (C,)"


def _history(metadata: dict) -> bool:
    return set(metadata.get("history", {})) <= set(training.HISTORY_KEYS)


# What a net stores: its four params, and a header whose random state and history it can restore.
LAYOUT = checkpoint.Layout(
    params=kernels.PARAMS,
    shapes_problem=_shapes_problem,
    fields={
        "dtype": (" or ".join(map(repr, DTYPES)), lambda v: v in DTYPES),
        "rng_state": (rng.STATE_FORMAT, rng.valid_state),
        "metadata": (
            "a JSON object whose config (if any) is an object and whose history (if any) maps "
            f"{', '.join(training.HISTORY_KEYS)} to lists of numbers",
            _history,
        ),
    },
)


def save_net(path: str | os.PathLike, net: TwoLayerNet, arrays: dict | None = None) -> Path:
    """Write ``net``'s params (as numpy), dtype, training state (iteration, learning rate, RNG)
    and ``net.metadata`` to ``path``, atomically; ``arrays`` adds named numpy arrays (e.g. a
    mean image). Returns the path written."""
    header = {
        "dtype": net.dtype_name,
        "iteration": net.state.iteration,
        "learning_rate": net.state.learning_rate,
        "rng_state": net.state.rng.get_state(),
        "saved_from": {"backend": net.backend.name, "device": net.device},
        "metadata": net.metadata,
    }
    params = {name: to_numpy(p) for name, p in net.live_params().items()}
    return checkpoint.save(path, params, header, arrays, LAYOUT)


def load_net(path: str | os.PathLike, *, device: Any = "cpu", backend: Any = None, dtype: Any = None):
    """(net, extra arrays) from a checkpoint, on any device; dtype None keeps the saved one."""
    params, header, arrays = checkpoint.load(path, LAYOUT)
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
    with net.backend.activate():
        net.params = {name: net.backend.asarray(p, dtype=net.dtype, copy=True) for name, p in params.items()}
    net.state.rng = HostRNG.from_state(header["rng_state"])  # valid: LAYOUT checked it
    net.state.iteration = int(header.get("iteration", 0))
    net.state.learning_rate = header.get("learning_rate")
    net.metadata = header.get("metadata") or {}
    return net, arrays
