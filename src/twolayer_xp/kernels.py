"""The two-layer net's math, written once on the Python array API.

Pure functions of arrays: the namespace comes from the inputs (``array_namespace``), every new
array is made on the inputs' device, and only standard functions are called, so the same lines run
on numpy, CuPy, torch and array-api-strict.

Shapes. One net: X (N, D), y (N,) integer labels, W1 (D, H), b1 (H,), W2 (H, C), b2 (C,).
A stack of K nets adds a leading axis to every parameter (W1 (K, D, H), b1 (K, H), ...) and
to the per-net results (scores (K, N, C), loss (K,)); X and y stay shared, and ``reg`` and
``learning_rate`` may be scalars or (K,) arrays. Batched matmuls then train K nets at once.

Loss = mean softmax cross-entropy + reg * (sum W1**2 + sum W2**2): no 1/2, so the weight
gradients carry + 2*reg*W; biases are not regularized (the CS231n convention).
"""

from __future__ import annotations

from array_api_compat import array_namespace, device

WEIGHTS = ("W1", "W2")
PARAMS = ("W1", "b1", "W2", "b2")


# ------------------------------------------------------------------------------------------
# Building blocks (xp passed in, so a step resolves the namespace once)


def _forward(xp, params, X):
    """scores (..., N, C) and the cache (h, relu_mask), both (..., N, H), that backward needs."""
    h = X @ params["W1"]
    h += xp.expand_dims(params["b1"], axis=-2)
    relu_mask = xp.astype(h > 0, h.dtype)  # kept: backward gates the same units
    h *= relu_mask
    scores = h @ params["W2"]
    scores += xp.expand_dims(params["b2"], axis=-2)
    return scores, (h, relu_mask)


def _one_hot(xp, y, num_classes, dtype):
    """(N, C) float: 1 where column == y[n]. Made on y's device (the classic misplacement bug)."""
    classes = xp.arange(num_classes, dtype=y.dtype, device=device(y))
    return xp.astype(xp.expand_dims(y, axis=-1) == classes, dtype)


def _softmax_cross_entropy(xp, scores, y):
    """Mean cross-entropy (...,) and its gradient d loss / d scores (..., N, C).

    Stable: scores are shifted by their row max, so exp never overflows, and the log of the
    probabilities is taken as shifted - log(sum exp(shifted)), never log of a rounded-to-0 ratio.
    """
    n = scores.shape[-2]
    shifted = scores - xp.max(scores, axis=-1, keepdims=True)
    probs = xp.exp(shifted)
    sum_exp = xp.sum(probs, axis=-1, keepdims=True)
    onehot = _one_hot(xp, y, scores.shape[-1], scores.dtype)
    correct = xp.sum(shifted * onehot, axis=(-2, -1))
    data_loss = (xp.sum(xp.log(sum_exp), axis=(-2, -1)) - correct) / n
    probs /= sum_exp
    probs -= onehot
    probs /= n
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


def _backward(xp, params, X, cache, dscores):
    """Data-term gradients (no L2) of all four params, given d loss / d scores (..., N, C)."""
    h, relu_mask = cache
    grads = {
        "W2": xp.matrix_transpose(h) @ dscores,
        "b2": xp.sum(dscores, axis=-2),
    }
    dh = dscores @ xp.matrix_transpose(params["W2"])
    dh *= relu_mask
    grads["W1"] = xp.matrix_transpose(X) @ dh
    grads["b1"] = xp.sum(dh, axis=-2)
    return grads


# ------------------------------------------------------------------------------------------
# Public kernels


def scores(params, X):
    """Class scores (..., N, C) for X (N, D)."""
    xp = array_namespace(X, params["W1"])
    return _forward(xp, params, X)[0]


def predict(params, X):
    """Predicted labels (..., N): argmax of the scores."""
    xp = array_namespace(X, params["W1"])
    return xp.argmax(_forward(xp, params, X)[0], axis=-1)


def count_correct(params, X, y):
    """Number of rows whose prediction equals y: integer array (...,). Stays on the device."""
    xp = array_namespace(X, y, params["W1"])
    hits = xp.astype(predict(params, X) == y, y.dtype)  # count_nonzero needs the 2024.12 standard
    return xp.sum(hits, axis=-1)


def loss_and_grads(params, X, y, reg=0.0):
    """Loss (...,) and the full gradients (data term + 2*reg*W) of every parameter."""
    xp = array_namespace(X, y, params["W1"])
    scores_, cache = _forward(xp, params, X)
    data_loss, dscores = _softmax_cross_entropy(xp, scores_, y)
    loss = data_loss + _l2_penalty(xp, params, reg)
    grads = _backward(xp, params, X, cache, dscores)
    reg2 = 2 * _per_net(xp, reg, 2)
    for name in WEIGHTS:
        grads[name] += reg2 * params[name]
    return loss, grads


def sgd_update(params, grads, learning_rate):
    """In place: p -= learning_rate * grads[p] for every parameter."""
    xp = array_namespace(params["W1"])
    for name in PARAMS:
        lr = _per_net(xp, learning_rate, 2 if name in WEIGHTS else 1)
        params[name] -= lr * grads[name]


def sgd_step(params, X, y, learning_rate, reg=0.0):
    """One SGD step on the minibatch (X, y), in place on ``params``; returns the loss (...,).

    The loss is the one at the parameters before the update, as ``loss_and_grads`` reports it.
    Same update as ``loss_and_grads`` + ``sgd_update`` but with fewer passes over W1: the
    learning rate is folded into d scores (an (N, C) array) before the big matmuls, and the L2
    term becomes a decay, W <- (1 - 2*lr*reg) * W - lr*dW_data.
    """
    xp = array_namespace(X, y, params["W1"])
    scores_, cache = _forward(xp, params, X)
    data_loss, dscores = _softmax_cross_entropy(xp, scores_, y)
    loss = data_loss + _l2_penalty(xp, params, reg)
    dscores *= _per_net(xp, learning_rate, 2)
    steps = _backward(xp, params, X, cache, dscores)  # already lr * gradient
    decay = 1 - 2 * _per_net(xp, learning_rate, 2) * _per_net(xp, reg, 2)
    for name in PARAMS:
        if name in WEIGHTS and not _is_one(decay):
            params[name] *= decay
        params[name] -= steps[name]
    return loss


def _is_one(value):
    return isinstance(value, (int, float)) and value == 1
