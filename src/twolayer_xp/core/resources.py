"""Memory a run needs, estimated before anything is allocated, so a size that cannot fit is
refused in one line instead of failing deep inside numpy."""

from __future__ import annotations

import numpy as np

from twolayer_xp.backend import DTYPES
from twolayer_xp.io.memory import available_bytes
from twolayer_xp.io.memory import size_text as _size

# Copies of the params a run holds at once: live, two rollback snapshots, the step's updates.
PARAM_COPIES = 4
# (rows, H) temporaries of a step: hidden, ReLU mask, d hidden; plus the gathered rows.
STEP_TEMPORARIES = 3
ITEMSIZE = {name: np.dtype(name).itemsize for name in DTYPES}  # bytes per value of each dtype


def run_bytes(D: int, H: int, C: int, batch_size: int, rows: dict, itemsize: int, members: int = 1) -> int:
    """Bytes one run (or a population of ``members`` nets) allocates beyond its data, which is
    already loaded: params, step temporaries, the largest evaluation (of the biggest split's
    rows: the hidden layer and its ReLU mask, the bool comparison the mask is cast from, and the
    scores) and the minibatch indices (8 bytes each)."""
    params = members * (D * H + H + H * C + C) * itemsize * PARAM_COPIES
    step = batch_size * (D + members * H * STEP_TEMPORARIES) * itemsize + 8 * batch_size
    evaluate = max(rows.values()) * members * ((2 * H + C) * itemsize + H)
    return params + step + evaluate


def check_run(
    config,
    num_features: int,
    num_classes: int,
    rows: dict,
    members: int = 1,
    remedy: str = "--hidden-size or --batch-size",
) -> None:
    """ValueError in one line when ``config`` cannot fit in host memory (CPU runs; a GPU's
    memory is only known once it is in use); ``remedy``: the flags that make it smaller."""
    if config.device not in (None, "cpu"):
        return
    need = run_bytes(
        num_features,
        config.hidden_size,
        num_classes,
        config.batch_size,
        rows,
        ITEMSIZE[config.dtype],
        members,
    )
    _refuse_over(
        need,
        f"this run needs about {{need}} of memory (hidden_size={config.hidden_size}"
        f"{'' if members == 1 else f' x {members} nets'}, "
        f"batch_size={config.batch_size}, {sum(rows.values())} rows) but {{have}} is available; "
        f"use a smaller {remedy}",
    )


def check_fit(trainee, batch_size: int, eval_rows: int) -> None:
    """ValueError naming batch_size when training ``trainee`` (a net or a population) on
    minibatches of ``batch_size`` rows cannot fit: the API's counterpart of ``check_run``,
    judged before the loop draws a single index. A host backend holds all of ``run_bytes``; a
    GPU's run still draws its indices on the host (8 bytes each, a block of at least one step)."""
    members = trainee.size or 1
    itemsize = np.dtype(trainee.dtype_name).itemsize
    D, H, C = trainee.input_size, trainee.hidden_size, trainee.output_size
    need = run_bytes(D, H, C, batch_size, {"eval": eval_rows}, itemsize, members)
    if not trainee.backend.host_memory:
        need = 8 * batch_size
    _refuse_over(
        need,
        f"training with batch_size={batch_size} needs about {{need}} of host memory (hidden_size={H}"
        f"{'' if trainee.size is None else f', {members} nets'}) but {{have}} is available; use a "
        "smaller batch_size (rows are drawn with replacement: more than the training rows rarely helps)",
    )


def _refuse_over(need: int, message: str) -> None:
    """ValueError(``message`` with {need} and {have} filled in) when ``need`` bytes exceed what
    the host has available (never where that is unknown)."""
    have = available_bytes()
    if have is not None and need > have:
        raise ValueError(message.format(need=_size(need), have=_size(have)))


def check_net(
    D: int, H: int, C: int, dtype: str, params_on_host: bool, members: int = 1, remedy: str | None = None
) -> None:
    """ValueError in one line when a ``TwoLayerNet(D, H, C)``, or a Population of ``members``
    of them, cannot fit in host memory: its weights are drawn on the host in float64 (two arrays:
    the draw and ``std *`` it), and a host backend (numpy) then keeps the params there too. Asking
    the allocator instead would fail with a MemoryError at best, and with overcommit let the
    system swap or kill at worst. ``remedy``: the arguments that make it smaller (default: the
    net's, or the Population's ``hidden_size or size``)."""
    weights = members * (D * H + H * C)
    need = (
        2 * weights * ITEMSIZE["float64"] + (weights + members * (H + C)) * ITEMSIZE[dtype] * params_on_host
    )
    shape = f"input_size={D}, hidden_size={H}, output_size={C}"
    what = f"a net with {shape}" if members == 1 else f"a population of {members} nets with {shape}"
    remedy = remedy or ("hidden_size" if members == 1 else "hidden_size or size")
    _refuse_over(
        need,
        f"{what} needs about {{need}} of host memory for its weights but {{have}} is available; use a smaller {remedy}",
    )
