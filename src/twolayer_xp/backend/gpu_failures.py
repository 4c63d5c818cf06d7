"""What a GPU that fails at start-up says, and the fix: the facts CuPy's and torch's checks share
(neither library is imported here)."""

from __future__ import annotations

import math
import re

from twolayer_xp.errors import one_line

SMOKE_VALUE = 4 * 2 * math.e  # sum(exp(A) @ A) for A = ones((2, 2)): a GPU's start-up test
CAUSE_LIMIT = 160  # characters of a library's error quoted inside a one-line message
NO_DRIVER_FIX = (
    "run on a machine with an NVIDIA GPU and its driver (e.g. a Colab GPU runtime), or use --device cpu"
)
# Compute capabilities (major, minor) CUDA's releases build code for, at the low end.
CUDA12_OLDEST = (5, 0)  # older GPUs: no CUDA 12 or 13 build runs on them
CUDA13_OLDEST = (7, 5)  # CUDA 13 dropped 5.x-7.0: those need a CUDA 12 build
# CUDA's words (runtime, driver, NVRTC) for "this build has no code for this GPU's architecture".
NO_KERNEL_FOR_ARCH = re.compile(r"no kernel image|NO_BINARY_FOR_GPU|NoKernelImage|gpu-architecture")


def quoted(error: BaseException | str) -> str:
    """A library's error for quoting inside a one-line message: named, its first line, bounded."""
    text = str(error)
    first = next((line for line in text.splitlines() if line.strip()), "")
    if isinstance(error, BaseException):
        first = f"{type(error).__name__}: {first}" if first else type(error).__name__
    return one_line(first, limit=CAUSE_LIMIT)


def gpu_state(exc: BaseException, index: int) -> str | None:
    """What any CUDA library's error ``exc`` says about GPU ``index`` itself (its memory is full, or
    another process holds it), with the fix; None when it says nothing of the kind."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":  # CuPy's, torch's
        return (
            f"its memory is full; fix: free it (nvidia-smi lists the processes using GPU {index}), "
            "or pick another GPU with --device cuda:N"
        )
    if re.search(r"busy or unavailable|DevicesUnavailable|DEVICE_UNAVAILABLE", str(exc)):
        return (
            "it is in exclusive compute mode and another process holds it; fix: wait for that process "
            f"(nvidia-smi lists it), pick another GPU with --device cuda:N, or as root: nvidia-smi -i {index} -c DEFAULT"
        )
    return None


def capability_text(capability: tuple[int, int]) -> str:
    return ".".join(map(str, capability))


def too_old(capability: tuple[int, int]) -> str | None:
    """What a GPU older than every CUDA 12 and 13 build says, with the fix; None otherwise."""
    if capability >= CUDA12_OLDEST:
        return None
    return (
        f"compute capability {capability_text(capability)} is older than CUDA 12 and 13 support "
        f"(they need {capability_text(CUDA12_OLDEST)}+); fix: use --device cpu"
    )


def wrong_result(index: int, value: float) -> str | None:
    """What GPU ``index`` computing ``value`` for the smoke test (sum(exp(A) @ A)) says, or None
    when the value is right."""
    if math.isclose(value, SMOKE_VALUE, rel_tol=1e-5):
        return None
    return f"GPU {index} computed a wrong result in a smoke test ({value}, not {SMOKE_VALUE:.6g})"


def too_few_gpus(index: int, count: int) -> str:
    """What asking for GPU ``index`` where ``count`` are visible says, with the fix."""
    return (
        f"device cuda:{index} requested but only {count} GPU(s) are visible (CUDA_VISIBLE_DEVICES?); "
        f"fix: use cuda:0..cuda:{count - 1}"
    )
