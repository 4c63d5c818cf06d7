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
    already loaded: params, step temporaries, the largest evaluation (rows x H of the biggest
    split) and the minibatch indices (8 bytes each)."""
    params = members * (D * H + H + H * C + C) * itemsize * PARAM_COPIES
    step = batch_size * (D + members * H * STEP_TEMPORARIES) * itemsize + 8 * batch_size
    evaluate = max(rows.values()) * members * (H + C) * itemsize
    return params + step + evaluate


def check_run(config, num_features: int, num_classes: int, rows: dict, members: int = 1) -> None:
    """ValueError in one line when ``config`` cannot fit in host memory (CPU runs; a GPU's
    memory is only known once it is in use)."""
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
    have = available_bytes()
    if have is not None and need > have:
        raise ValueError(
            f"this run needs about {_size(need)} of memory (hidden_size={config.hidden_size}, "
            f"batch_size={config.batch_size}, {sum(rows.values())} rows) but {_size(have)} is available; "
            "use a smaller --hidden-size or --batch-size"
        )


def check_net(D: int, H: int, C: int, dtype: str, params_on_host: bool) -> None:
    """ValueError in one line when a ``TwoLayerNet(D, H, C)`` cannot fit in host memory: its
    weights are drawn on the host in float64 (two arrays: the draw and ``std *`` it), and a
    host backend (numpy) then keeps the params there too. Asking the allocator instead would
    fail with a MemoryError at best, and with overcommit let the system swap or kill at worst."""
    weights = D * H + H * C
    need = 2 * weights * ITEMSIZE["float64"] + (weights + H + C) * ITEMSIZE[dtype] * params_on_host
    have = available_bytes()
    if have is not None and need > have:
        raise ValueError(
            f"a net with input_size={D}, hidden_size={H}, output_size={C} needs about {_size(need)} "
            f"of host memory for its weights but {_size(have)} is available; use a smaller hidden_size"
        )
