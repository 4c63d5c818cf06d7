"""Population: K two-layer nets trained together on shared minibatches, in one batched core.

One net is too small to keep a GPU busy; K nets with per-member hyperparameters (a
learning-rate x reg grid, a sweep's trials) cost K times the arithmetic for the same launches.
Member k trains exactly as ``TwoLayerNet`` k would alone on the same minibatch stream.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np  # host side: per-member hyperparameters and results

from twolayer_xp.backend import Backend, resolve
from twolayer_xp.core import device_model, kernels, resources, training, validation
from twolayer_xp.core.model import TwoLayerNet
from twolayer_xp.core.rng import HostRNG

HYPERPARAMETERS = ("learning_rate", "learning_rate_decay", "reg")


class Population(device_model.DeviceModel):
    """K nets of sizes (D, H, C) sharing each minibatch; hyperparameters may differ per member.

    ``params`` holds the live arrays in the wide layout that makes layer 1 one GEMM:
    W1 (D, K*H) (member k in columns k*H:(k+1)*H), b1 (K*H,), W2 (K, H, C), b2 (K, C).
    std, and train's learning_rate, learning_rate_decay and reg: a scalar or one value per
    member. rng as for TwoLayerNet; initialization draws as K TwoLayerNets built in a row would.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        size: int,
        std: Any = 1e-4,
        *,
        device: Any = "cpu",
        backend: Any = None,
        dtype: Any = "float64",
        rng: Any = None,
    ):
        sizes = (input_size, hidden_size, output_size, size)
        D, H, C, K = (validation.check(n, v) for n, v in zip((*kernels.SIZES, "size"), sizes, strict=True))
        stds = validation.per_member("std", std, K)
        self.backend: Backend = resolve(device, backend)
        self.dtype = self.backend.dtype(dtype)
        self.state = training.TrainingState(HostRNG(rng))
        self.hyperparameters: dict = {"std": stds}
        resources.check_net(D, H, C, self.dtype_name, self.backend.host_memory, members=K)
        shapes = kernels.param_shapes(D, H, C)
        W1s, W2s = [], []
        for k in range(K):  # member by member, W1 then W2: K TwoLayerNet constructions in a row
            W1s.append(self.state.rng.scaled_normal(shapes["W1"], stds[k]))
            W2s.append(self.state.rng.scaled_normal(shapes["W2"], stds[k]))
            validation.initial_weights({"W1": W1s[-1], "W2": W2s[-1]}, self.dtype_name, D)
        with self.backend.activate():
            self._adopt(np.concatenate(W1s, axis=1), np.zeros(K * H), np.stack(W2s), np.zeros((K, C)), K)

    @classmethod
    def from_nets(cls, nets: list, rng: Any = None) -> Population:
        """A population of copies of ``nets`` (same sizes, backend, device and dtype)."""
        nets = list(nets)
        if not nets or not all(isinstance(n, TwoLayerNet) for n in nets):
            raise TypeError("nets must be a non-empty list of TwoLayerNet")
        first = nets[0]
        for k, n in enumerate(nets):
            if (n.shapes, n.backend, n.dtype_name) != (first.shapes, first.backend, first.dtype_name):
                raise ValueError(f"nets[{k}] differs from nets[0] in sizes, backend, device or dtype")
        pop = cls.__new__(cls)
        pop.backend, pop.dtype = first.backend, first.dtype
        pop.state = training.TrainingState(HostRNG(rng))
        pop.hyperparameters = {}
        xp = pop.backend.xp
        with pop.backend.activate():
            live = [n.live_params() for n in nets]
            pop._adopt(
                xp.concat([p["W1"] for p in live], axis=1),
                xp.concat([p["b1"] for p in live], axis=0),
                xp.stack([p["W2"] for p in live]),
                xp.stack([p["b2"] for p in live]),
                len(nets),
            )
        return pop

    @device_model.on_device
    def subset(self, members) -> Population:
        """A smaller population of ``members`` (distinct indices, in that order): their params,
        iterations, decayed learning rates, hyperparameters and results, and a copy of this
        population's random stream. Training it on is, for those members, exactly what training
        this population on would be (every member sees the same minibatches), minus the others'
        arithmetic: how a sweep drops members that are done. Exactly as far as the library's
        matrix product rounds a member's columns of layer 1's wide product alike in a narrower
        population: OpenBLAS does where the hidden size is a multiple of its column blocks (16
        in float32, 8 in float64; docs/sweep-search.md). (numpy's global stream, rng=None, stays
        global, as it does for TwoLayerNet.)"""
        try:
            members = list(members)
        except TypeError:
            raise TypeError(f"members must be a sequence of member indices, got {members!r}") from None
        ks = [self._member(k) for k in members]
        if not ks or len(set(ks)) != len(ks):
            raise ValueError(f"members must be distinct member indices, at least one; got {members!r}")
        H, xp, p = self.hidden_size, self.backend.xp, self.live_params()
        picked = self.backend.asarray(np.asarray(ks, dtype=np.int64))
        columns = self.backend.asarray(
            (np.asarray(ks, dtype=np.int64)[:, None] * H + np.arange(H)).reshape(-1)
        )
        pop = type(self).__new__(type(self))
        pop.backend, pop.dtype = self.backend, self.dtype
        pop._adopt(
            xp.take(p["W1"], columns, axis=1),
            xp.take(p["b1"], columns, axis=0),
            xp.take(p["W2"], picked, axis=0),
            xp.take(p["b2"], picked, axis=0),
            len(ks),
        )
        lr = self.state.learning_rate
        pop.state = training.TrainingState(
            copy.deepcopy(self.state.rng), self.state.iteration, None if lr is None else lr[ks].copy()
        )
        pop.hyperparameters = {
            name: value[ks].copy() if isinstance(value, np.ndarray) else value
            for name, value in self.hyperparameters.items()
        }
        pop.member_iterations, pop.diverged = self.member_iterations[ks].copy(), self.diverged[ks].copy()
        pop.val_accuracy = None if self.val_accuracy is None else self.val_accuracy[ks].copy()
        return pop

    def _adopt(self, W1, b1, W2, b2, K: int) -> None:
        self.size = K
        self.member_iterations = np.zeros(K, dtype=np.int64)  # trained by this population
        self.val_accuracy, self.diverged = None, np.zeros(K, dtype=bool)
        self.params = {
            name: self.backend.asarray(value, dtype=self.dtype, copy=True)
            for name, value in zip(kernels.PARAMS, (W1, b1, W2, b2), strict=True)
        }
        D, KH = self.params["W1"].shape
        self.shapes = {
            "W1": (D, KH),
            "b1": (KH,),
            "W2": (K, KH // K, self.params["W2"].shape[2]),
            "b2": (K, self.params["W2"].shape[2]),
        }

    # -- sizes -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return (
            f"Population({self.input_size}, {self.hidden_size}, {self.output_size}, size={self.size}, "
            f"backend={self.backend.name!r}, device={self.device!r}, dtype={self.dtype_name!r})"
        )

    # -- training and evaluation ----------------------------------------------------------------

    @device_model.on_device
    def train(
        self,
        X: Any,
        y: Any,
        X_val: Any,
        y_val: Any,
        learning_rate: Any = 1e-3,
        learning_rate_decay: Any = 0.95,
        reg: Any = 5e-6,
        num_iters: int = 100,
        batch_size: int = 200,
        verbose: bool = False,
        threads: int | None = None,
        **options: Any,
    ) -> dict:
        """Minibatch SGD of every member on shared minibatches, CS231n semantics per member.

        Returns numpy arrays: "loss_history" (K, T), "train_acc_history" (K, E),
        "val_acc_history" (K, E) and "diverged" bool (K,). A member whose loss turns
        non-finite is rolled back to its last finite sync point and frozen (its later
        history entries are NaN); the others go on as if it were not there. ``options``: as
        for ``TwoLayerNet.train`` (progress, sync_every, start_iteration); threads as there.
        """
        values = dict(zip(HYPERPARAMETERS, (learning_rate, learning_rate_decay, reg), strict=True))
        with self.limit_threads(threads, batch_size):
            result = training.fit(
                self, X, y, X_val, y_val, num_iters=num_iters, batch_size=batch_size, verbose=verbose,
                **values, **options,
            )  # fmt: skip
        self.hyperparameters.update({n: validation.per_member(n, v, self.size) for n, v in values.items()})
        self.hyperparameters.update(num_iters=num_iters, batch_size=batch_size)
        if result.history["val_acc_history"].shape[1]:  # a call that crossed no epoch keeps the last
            self.val_accuracy = result.history["val_acc_history"][:, -1]
        # A member rolled back trained only up to its last finite loss.
        self.member_iterations += np.sum(np.isfinite(result.history["loss_history"]), axis=1)
        self.diverged = result.diverged
        return {**result.history, "diverged": result.diverged}

    @device_model.on_device
    def predict(self, X: Any):
        """Predicted labels (K, N); numpy in -> numpy out, device in -> device out (no sync)."""
        Xd, on_host = self.eval_features(X)
        return device_model.output(kernels.population_predict(self.live_params(), Xd), on_host)

    @device_model.on_device
    def accuracy(self, X: Any, y: Any) -> np.ndarray:
        """Fraction of rows each member classifies correctly: numpy (K,), one host sync."""
        return np.asarray(self.accuracies(X, y, kernels.population_count_correct))

    @device_model.on_device
    def net(self, k: int) -> TwoLayerNet:
        """A standalone TwoLayerNet copy of member k, on the same device; its hyperparameters
        are in ``metadata["hyperparameters"]``."""
        k = self._member(k)
        H, xp = self.hidden_size, self.backend.xp
        net = TwoLayerNet(
            self.input_size,
            H,
            self.output_size,
            std=0.0,
            device=self.backend.device,
            backend=self.backend.name,
            dtype=self.dtype_name,
            rng=0,
        )
        p = self.live_params()
        cols = slice(k * H, (k + 1) * H)
        member = {"W1": p["W1"][:, cols], "b1": p["b1"][cols], "W2": p["W2"][k, ...], "b2": p["b2"][k, ...]}
        for name in kernels.PARAMS:
            net.params[name] = xp.asarray(member[name], copy=True)
        net.state.iteration = int(self.member_iterations[k])
        lr = self.state.learning_rate
        net.state.learning_rate = None if lr is None else float(lr[k])
        net.metadata = {"hyperparameters": self._member_hyperparameters(k), "member": k}
        return net

    def best(self) -> tuple[int, TwoLayerNet]:
        """(k, net) of the member with the highest final validation accuracy among those that
        did not diverge; ValueError before training or when every member diverged."""
        if self.val_accuracy is None:
            raise ValueError("best() needs a trained population: call train() first")
        scores = np.where(self.diverged, -np.inf, np.nan_to_num(self.val_accuracy, nan=-np.inf))
        if not np.isfinite(scores).any():
            raise ValueError("every member diverged; there is no best net")
        k = int(np.argmax(scores))
        return k, self.net(k)

    # -- what the training loop needs --------------------------------------------------------------

    def step(self, params, X, y, learning_rate, reg, ctx=None):
        return kernels.population_sgd_step(params, X, y, learning_rate, reg, ctx)

    def count_correct(self, params, X, y, ctx=None):
        return kernels.population_count_correct(params, X, y, ctx)

    def restore(self, params: dict, source: dict, member=None) -> None:
        """Copy ``source``'s values into the live ``params``: all, or member ``member``'s."""
        if member is None:
            for name in kernels.PARAMS:
                params[name][...] = source[name]
            return
        H = self.hidden_size
        cols = slice(member * H, (member + 1) * H)
        params["W1"][:, cols] = source["W1"][:, cols]
        params["b1"][cols] = source["b1"][cols]
        params["W2"][member, ...] = source["W2"][member, ...]
        params["b2"][member, ...] = source["b2"][member, ...]

    def live_params(self) -> dict:
        """``params``, checked: the loop updates them in place."""
        for name, shape in self.shapes.items():
            p = self.params.get(name)
            if p is None or not self.backend.owns(p) or tuple(p.shape) != shape or p.dtype != self.dtype:
                raise ValueError(
                    f'params["{name}"] must be a {self.backend.name} array of shape {shape} and dtype {self.dtype_name}'
                )
        return self.params

    def _member(self, k: Any) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < self.size:
            raise ValueError(f"member must be an int in [0, {self.size - 1}], got {k!r}")
        return int(k)

    def _member_hyperparameters(self, k: int) -> dict:
        out = {}
        for name, value in self.hyperparameters.items():
            out[name] = float(value[k]) if isinstance(value, np.ndarray) else value
        return out
