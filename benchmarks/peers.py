"""What a user would pick instead: the same step in PyTorch eager mode with autograd."""

from __future__ import annotations

import numpy as np


def torch_eager_step(shape, dtype="float32", device="cpu", seed=0, learning_rate=1e-4, reg=1e-3):
    """A synchronized PyTorch step: F.cross_entropy + the same L2 term, backward, in-place SGD
    under no_grad. Same host data as ``benchmarking.make_problem``."""
    import torch
    import torch.nn.functional as F

    N, D, H, C = shape
    rng = np.random.default_rng(seed)
    tdtype = getattr(torch, dtype)
    put = lambda a: torch.tensor(a, dtype=tdtype, device=device)  # noqa: E731
    W1 = put(1e-2 * rng.standard_normal((D, H))).requires_grad_()
    b1 = put(np.zeros(H)).requires_grad_()
    W2 = put(1e-2 * rng.standard_normal((H, C))).requires_grad_()
    b2 = put(np.zeros(C)).requires_grad_()
    X = put(rng.standard_normal((N, D)))
    y = torch.tensor(rng.integers(0, C, size=N), device=device)
    params = (W1, b1, W2, b2)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)

    def step():
        scores = torch.relu(X @ W1 + b1) @ W2 + b2
        loss = F.cross_entropy(scores, y) + reg * ((W1 * W1).sum() + (W2 * W2).sum())
        loss.backward()
        with torch.no_grad():
            for p in params:
                p -= learning_rate * p.grad
                p.grad = None
        sync()

    return step


def jax_jit_step(shape, dtype="float32", seed=0, learning_rate=1e-4, reg=1e-3):
    """The whole step (forward, CE + L2, grad, SGD) as one ``jax.jit`` function on the CPU,
    params threaded through (functional update), blocked until ready. Same host data."""
    import jax
    import jax.numpy as jnp

    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    N, D, H, C = shape
    rng = np.random.default_rng(seed)
    put = lambda a: jnp.asarray(a, dtype=dtype)  # noqa: E731
    params = [
        put(1e-2 * rng.standard_normal((D, H))),
        put(np.zeros(H)),
        put(1e-2 * rng.standard_normal((H, C))),
        put(np.zeros(C)),
    ]
    X, y = put(rng.standard_normal((N, D))), jnp.asarray(rng.integers(0, C, size=N))

    def loss(p):
        W1, b1, W2, b2 = p
        scores = jnp.maximum(X @ W1 + b1, 0) @ W2 + b2
        logp = jax.nn.log_softmax(scores)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1)) + reg * (
            jnp.sum(W1 * W1) + jnp.sum(W2 * W2)
        )

    @jax.jit
    def update(p):
        return [w - learning_rate * g for w, g in zip(p, jax.grad(loss)(p), strict=True)]

    state = {"p": params}

    def step():
        state["p"] = update(state["p"])
        jax.block_until_ready(state["p"])

    return step
