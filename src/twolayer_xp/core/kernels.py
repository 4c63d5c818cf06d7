"""The two-layer net's math, written once on the Python array API.

Pure functions of arrays: the namespace comes from the inputs (``array_namespace``), or from a
``Context`` a training loop resolves once; every new array is made on the inputs' device, and
only standard functions and indexing (``[..., None]``) are used, so the same lines run on
numpy, CuPy, torch and array-api-strict. (Transposes are ``xp.matrix_transpose``, not the
``.mT`` attribute: CuPy before 14, which Colab ships, and numpy before 2 have no ``.mT``.)

Shapes. One net: X (N, D), y (N,) integer labels, W1 (D, H), b1 (H,), W2 (H, C), b2 (C,).
A stack of K nets adds a leading axis to every parameter (W1 (K, D, H), b1 (K, H), ...) and
to the per-net results (scores (K, N, C), loss (K,)); X and y stay shared, and ``reg`` and
``learning_rate`` may be scalars or (K,) arrays. A population uses the wide layout below.

Loss = mean softmax cross-entropy + reg * (sum W1**2 + sum W2**2): no 1/2, so the weight
gradients carry + 2*reg*W; biases are not regularized (the CS231n convention).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from array_api_compat import array_namespace, device

WEIGHTS = ("W1", "W2")
PARAMS = ("W1", "b1", "W2", "b2")  # CS231n's order, also the order of grads and checkpoints
SIZES = ("input_size", "hidden_size", "output_size")


def param_shapes(D: int, H: int, C: int) -> dict:
    """The shape of each parameter of one net: W1 (D, H), b1 (H,), W2 (H, C), b2 (C,)."""
    return {"W1": (D, H), "b1": (H,), "W2": (H, C), "b2": (C,)}


class Context(NamedTuple):
    """What every step of a loop shares: the namespace, and the class indices (C, 1) that
    one-hot masks compare labels with (made once, on the labels' device)."""

    xp: Any
    classes: Any


def step_flops(N: int, D: int, H: int, C: int, members: int = 1) -> int:
    """Multiply-adds x 2 of a step's five matmuls on a minibatch of N rows, for ``members`` nets:
    forward (X W1, h W2), backward (h^T dS, dS W2^T, X^T dH). Elementwise work is left out: it
    is memory-bound, not FLOP-bound."""
    return 2 * members * (2 * N * D * H + 3 * N * H * C)


def context(y, num_classes: int, xp=None) -> Context:
    """A Context for labels like ``y`` (N,) and ``num_classes`` classes."""
    xp = array_namespace(y) if xp is None else xp
    return Context(xp, xp.arange(num_classes, dtype=y.dtype, device=device(y))[:, None])


# ------------------------------------------------------------------------------------------
# Building blocks
#
# Scores are kept class-major, (..., C, N): the softmax then reduces over C rows of N contiguous
# values, which libraries vectorize, instead of N rows of C = 10 values (numpy's max over a
# length-10 last axis costs ~40 us for N = 1000, the class-major one ~3 us).


def _hidden(xp, params, X):
    """h = ReLU(X W1 + b1) (..., N, H), and the ReLU mask that backward reuses."""
    h = X @ params["W1"]
    h += params["b1"][..., None, :]
    relu_mask = xp.astype(h > 0, h.dtype)
    h *= relu_mask
    return h, relu_mask


def _class_major_scores(xp, params, h):
    """scores transposed, (..., C, N) = W2^T h^T + b2."""
    scores_t = xp.matrix_transpose(params["W2"]) @ xp.matrix_transpose(h)
    scores_t += params["b2"][..., None]
    return scores_t


def _softmax_cross_entropy(ctx: Context, scores_t, y, scale=1.0):
    """Mean cross-entropy (...,) and ``scale`` * d loss / d scores, class-major (..., C, N).

    Stable: scores are shifted by their max over classes, so exp never overflows, and log
    probabilities are taken as shifted - log(sum exp(shifted)), never log of a rounded-to-0 ratio.
    """
    xp, n = ctx.xp, scores_t.shape[-1]
    shifted = scores_t - xp.max(scores_t, axis=-2, keepdims=True)
    probs = xp.exp(shifted)
    sum_exp = xp.sum(probs, axis=-2, keepdims=True)
    onehot_t = xp.astype(ctx.classes == y, scores_t.dtype)  # (C, N); a cast mask, not indexing
    correct = xp.sum(shifted * onehot_t, axis=(-2, -1))
    data_loss = (xp.sum(xp.log(sum_exp), axis=(-2, -1)) - correct) / n
    probs /= sum_exp
    probs -= onehot_t
    probs *= scale / n
    return data_loss, probs


def _sum_squares(xp, W):
    """sum of W**2 over the last two axes: (...,). vecdot avoids a (D, H) temporary."""
    flat = xp.reshape(W, W.shape[:-2] + (W.shape[-2] * W.shape[-1],))
    return xp.vecdot(flat, flat, axis=-1)


def _per_net(xp, value, trailing):
    """A scalar stays a scalar; a (K,) array gains ``trailing`` unit axes to broadcast per net."""
    if isinstance(value, (int, float)) or value.ndim == 0:
        return value
    return xp.reshape(value, value.shape + (1,) * trailing)


def _l2_penalty(xp, params, reg):
    return reg * (_sum_squares(xp, params["W1"]) + _sum_squares(xp, params["W2"]))


def _backward_head(xp, params, h, dscores_t):
    """Gradients of W2 and b2, and d loss / d h (..., N, H), from class-major d scores."""
    dscores = xp.matrix_transpose(dscores_t)  # (..., N, C) view
    grads = {"W2": xp.matrix_transpose(h) @ dscores, "b2": xp.sum(dscores_t, axis=-1)}
    return grads, dscores @ xp.matrix_transpose(params["W2"])


def _backward_hidden(xp, X, relu_mask, dh, grads):
    """Adds the gradients of W1 and b1 to ``grads``, given d loss / d h."""
    dh *= relu_mask
    grads["W1"] = xp.matrix_transpose(X) @ dh
    grads["b1"] = xp.sum(dh, axis=-2)
    return grads


def _ctx(ctx, X, y, params, num_classes):
    if ctx is not None:
        return ctx
    xp = array_namespace(X, params["W1"]) if y is None else array_namespace(X, y, params["W1"])
    return Context(xp, None) if y is None else context(y, num_classes, xp)


# ------------------------------------------------------------------------------------------
# Public kernels (``ctx``: pass a loop's Context to skip resolving the namespace per call)


def scores(params, X, ctx: Context | None = None):
    """Class scores (..., N, C) for X (N, D)."""
    ctx = _ctx(ctx, X, None, params, 0)
    return ctx.xp.matrix_transpose(_class_major_scores(ctx.xp, params, _hidden(ctx.xp, params, X)[0]))


def predict(params, X, ctx: Context | None = None):
    """Predicted labels (..., N): argmax of the scores."""
    ctx = _ctx(ctx, X, None, params, 0)
    return ctx.xp.argmax(_class_major_scores(ctx.xp, params, _hidden(ctx.xp, params, X)[0]), axis=-2)


def count_correct(params, X, y, ctx: Context | None = None):
    """Number of rows whose prediction equals y: integer array (...,). Stays on the device."""
    ctx = _ctx(ctx, X, y, params, params["b2"].shape[-1])
    hits = ctx.xp.astype(predict(params, X, ctx) == y, y.dtype)  # count_nonzero needs 2024.12
    return ctx.xp.sum(hits, axis=-1)


def loss_and_grads(params, X, y, reg=0.0, ctx: Context | None = None):
    """Loss (...,) and the full gradients (data term + 2*reg*W) of every parameter."""
    ctx = _ctx(ctx, X, y, params, params["b2"].shape[-1])
    xp = ctx.xp
    h, relu_mask = _hidden(xp, params, X)
    data_loss, dscores_t = _softmax_cross_entropy(ctx, _class_major_scores(xp, params, h), y)
    grads, dh = _backward_head(xp, params, h, dscores_t)
    grads = _backward_hidden(xp, X, relu_mask, dh, grads)
    reg2 = 2 * _per_net(xp, reg, 2)
    for name in WEIGHTS:
        grads[name] += reg2 * params[name]
    return data_loss + _l2_penalty(xp, params, reg), {name: grads[name] for name in PARAMS}


def sgd_step(params, X, y, learning_rate, reg=0.0, ctx: Context | None = None):
    """One SGD step on the minibatch (X, y), in place on ``params``; returns the loss (...,).

    The loss is the one at the parameters before the update, as ``loss_and_grads`` reports it.
    Same update as ``loss_and_grads`` followed by p -= lr * grads[p], arranged for fewer passes
    over W1 (the big array): the L2 term becomes a decay, W <- (1 - 2*lr*reg) * W - lr*dW_data,
    applied to W1 right after X @ W1 while W1 is still in cache (nothing later in the step reads
    W1); and the learning rate scales d scores, an (N, C) array, before the matmuls that give dW.
    """
    ctx = _ctx(ctx, X, y, params, params["b2"].shape[-1])
    xp = ctx.xp
    lr = _per_net(xp, learning_rate, 2)
    decay = 1 - 2 * lr * _per_net(xp, reg, 2)
    h, relu_mask = _hidden(xp, params, X)
    l2 = _l2_penalty(xp, params, reg)
    if not _is_one(decay):
        params["W1"] *= decay
    data_loss, dscores_t = _softmax_cross_entropy(ctx, _class_major_scores(xp, params, h), y, scale=lr)
    steps, dh = _backward_head(xp, params, h, dscores_t)  # dh needs W2 before its update
    if not _is_one(decay):
        params["W2"] *= decay
    steps = _backward_hidden(xp, X, relu_mask, dh, steps)
    for name in PARAMS:
        params[name] -= steps[name]
    return data_loss + l2


def _is_one(value):
    return isinstance(value, (int, float)) and value == 1


# ------------------------------------------------------------------------------------------
# A population of K nets sharing each minibatch, in the "wide" layout: W1 (D, K*H) and
# b1 (K*H,) hold member k in columns k*H:(k+1)*H, so layer 1 of all K nets is ONE GEMM,
# X (N, D) @ W1 (D, K*H), and so is its gradient X^T @ dH; W2 (K, H, C) and b2 (K, C) make
# layer 2 a batched matmul. Hyperparameters lr and reg are (K,) arrays on the device.


def _stacked(xp, h_wide, K):
    """(N, K*H) -> (K, N, H): a view, member-major, for the batched layer 2."""
    N = h_wide.shape[0]
    return xp.permute_dims(xp.reshape(h_wide, (N, K, h_wide.shape[1] // K)), (1, 0, 2))


def _widened(xp, d_stacked):
    """(K, N, H) -> (N, K*H): back to layer 1's layout (one copy)."""
    K, N, H = d_stacked.shape
    return xp.reshape(xp.permute_dims(d_stacked, (1, 0, 2)), (N, K * H))


def _per_column(xp, value, H):
    """(K,) -> (K*H,): member k's value repeated over its H columns of W1."""
    K = value.shape[0]
    return xp.reshape(xp.broadcast_to(xp.reshape(value, (K, 1)), (K, H)), (K * H,))


def population_scores_t(params, X, ctx: Context | None = None):
    """Class-major scores (K, C, N) of every member for X (N, D)."""
    ctx = _ctx(ctx, X, None, params, 0)
    h, _ = _hidden(ctx.xp, params, X)
    return _class_major_scores(ctx.xp, params, _stacked(ctx.xp, h, params["W2"].shape[0]))


def population_predict(params, X, ctx: Context | None = None):
    """Predicted labels (K, N)."""
    ctx = _ctx(ctx, X, None, params, 0)
    return ctx.xp.argmax(population_scores_t(params, X, ctx), axis=-2)


def population_count_correct(params, X, y, ctx: Context | None = None):
    """Correct predictions per member: integer array (K,). Stays on the device."""
    ctx = _ctx(ctx, X, y, params, params["b2"].shape[-1])
    hits = ctx.xp.astype(population_predict(params, X, ctx) == y, y.dtype)
    return ctx.xp.sum(hits, axis=-1)


def population_sgd_step(params, X, y, learning_rate, reg, ctx: Context | None = None):
    """One SGD step of every member on the shared minibatch (X, y), in place; loss (K,).

    The same arithmetic, member by member, as ``sgd_step`` (L2 as a decay applied to W1 right
    after it is read, lr folded into d scores), arranged for the wide layout.
    """
    ctx = _ctx(ctx, X, y, params, params["b2"].shape[-1])
    xp = ctx.xp
    K, H = params["W2"].shape[0], params["W2"].shape[1]
    lr, reg = xp.reshape(learning_rate, (K, 1, 1)), xp.reshape(reg, (K, 1, 1))
    decay = 1 - 2 * lr * reg  # (K, 1, 1)
    W1 = params["W1"]
    h, relu_mask = _hidden(xp, params, X)  # (N, K*H)
    l2_W1 = xp.sum(xp.reshape(xp.sum(W1 * W1, axis=0), (K, H)), axis=-1)
    l2 = reg[:, 0, 0] * (l2_W1 + _sum_squares(xp, params["W2"]))  # (K,)
    W1 *= _per_column(xp, decay[:, 0, 0], H)
    h_k = _stacked(xp, h, K)
    data_loss, dscores_t = _softmax_cross_entropy(ctx, _class_major_scores(xp, params, h_k), y, scale=lr)
    steps, dh_k = _backward_head(xp, params, h_k, dscores_t)  # dh needs W2 before its update
    params["W2"] *= decay
    steps = _backward_hidden(xp, X, relu_mask, _widened(xp, dh_k), steps)
    for name in PARAMS:
        params[name] -= steps[name]
    return data_loss + l2
