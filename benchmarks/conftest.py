"""Benchmark matrix: backends x dtypes x shapes. TWOLAYER_XP_BENCH_QUICK=1 keeps only the small
shape and a short loop, so CI can run every benchmark body once (with --benchmark-disable)."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from twolayer_xp import cuda_available
from twolayer_xp.backend import DTYPES  # noqa: E402
from twolayer_xp.bench.timing import SHAPES  # noqa: E402

QUICK = os.environ.get("TWOLAYER_XP_BENCH_QUICK") == "1"
HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_JAX = importlib.util.find_spec("jax") is not None  # an optional peer


def _torch_cuda():
    if not HAS_TORCH:
        return False
    import torch

    return torch.cuda.is_available()


# label -> (device, backend) for our kernels
BACKENDS = {"numpy": ("cpu", None)}
if cuda_available():
    BACKENDS["cupy"] = ("cuda", None)
if HAS_TORCH:
    BACKENDS["torch"] = ("cpu", "torch")
    if _torch_cuda():
        BACKENDS["torch-cuda"] = ("cuda", "torch")

SHAPE_NAMES = ["small"] if QUICK else list(SHAPES)


def pytest_generate_tests(metafunc):
    if "shape_name" in metafunc.fixturenames:
        metafunc.parametrize("shape_name", SHAPE_NAMES)
    if "dtype" in metafunc.fixturenames:
        metafunc.parametrize("dtype", DTYPES)
    if "backend_label" in metafunc.fixturenames:
        metafunc.parametrize("backend_label", list(BACKENDS))
    if "peer_device" in metafunc.fixturenames:
        devices = []
        if HAS_TORCH:
            devices.append("cpu")
            if _torch_cuda():
                devices.append("cuda")
        metafunc.parametrize(
            "peer_device", devices or [pytest.param("cpu", marks=pytest.mark.skip("torch is not installed"))]
        )


@pytest.fixture(autouse=True)
def settle():
    """Let the previous test's thread pools (OpenBLAS, torch's OpenMP) stop spinning first:
    their idle threads busy-wait for a while and would steal this test's cores."""
    if not QUICK:
        time.sleep(0.3)


def rounds(shape_name: str) -> int:
    return 3 if QUICK else (10 if shape_name == "cifar-n1000" else 30)


# Issue 17's wider search: hidden size and decay besides learning rate x reg (both sweep benchmarks).
WIDER_SEARCH = dict(hidden_size="32,64,128,256", learning_rate_decay="0.9:1.0")


def sweep_seeds() -> tuple[int, ...]:
    """TPE seeds the sweep benchmarks repeat each comparison for (their verdict is the median over
    them): 0, 1, 2, or the comma-separated ints in TWOLAYER_XP_BENCH_SEEDS (e.g. ``3,4,5,6,7``, to
    check a verdict on seeds it was not chosen on); quick runs use seed 0 alone."""
    text = os.environ.get("TWOLAYER_XP_BENCH_SEEDS")
    if QUICK or text is None:
        return (0,) if QUICK else (0, 1, 2)
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        seeds = ()
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"TWOLAYER_XP_BENCH_SEEDS must be distinct comma-separated ints >= 0, got {text!r}")
    return seeds


def seeded_tpe(monkeypatch, optuna, seed: int) -> None:
    """The sweep's TPE sampler seeded with ``seed``, for the sweep benchmarks: their studies have
    one worker each, so a seeded sampler makes a study repeatable, and a comparison can be
    repeated over seeds. (The sweep itself leaves TPE unseeded: workers seeded alike would draw
    the same startup trials.)"""
    import functools

    monkeypatch.setattr(
        optuna.samplers, "TPESampler", functools.partial(optuna.samplers.TPESampler, seed=seed)
    )
