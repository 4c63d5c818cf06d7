"""One training step per backend, next to its GEMM floor and PyTorch eager, grouped per shape."""

from __future__ import annotations

import pytest
from floor import floor_fn
from peers import jax_jit_step, torch_eager_step

from twolayer_xp.backend import resolve
from twolayer_xp.bench import GPU_BACKENDS, peer_label
from twolayer_xp.bench.timing import SHAPES, flops_per_step, make_problem, step_fn, time_interleaved

from conftest import BACKENDS, HAS_JAX, HAS_TORCH, QUICK, rounds


def record(benchmark, shape, dtype, implementation, backend_label, fn, n_rounds):
    benchmark.group = f"step {shape} {dtype}"
    benchmark.extra_info.update(
        {"shape": list(shape), "dtype": dtype, "implementation": implementation, "backend": backend_label}
    )
    benchmark.pedantic(fn, rounds=n_rounds, iterations=1, warmup_rounds=3)
    if benchmark.stats is not None:  # None under --benchmark-disable
        median = benchmark.stats.stats.median
        benchmark.extra_info["samples_per_second"] = shape[0] / median
        benchmark.extra_info["gflops"] = flops_per_step(shape) / median / 1e9


def test_step(benchmark, shape_name, dtype, backend_label):
    shape = SHAPES[shape_name]
    problem = make_problem(resolve(*BACKENDS[backend_label]), shape, dtype)
    ours, floor = step_fn(problem), floor_fn(problem)
    record(benchmark, shape, dtype, "ours", backend_label, ours, rounds(shape_name))
    # Ratios from alternating measurements in this one test: robust to a machine that drifts.
    n_rounds, repeats = (2, 3) if QUICK else (7, 15)
    times = time_interleaved({"ours": ours, "floor": floor}, rounds=n_rounds, repeats=repeats)
    benchmark.extra_info["interleaved_ms"] = {k: v * 1e3 for k, v in times.items()}
    benchmark.extra_info["x_floor"] = times["ours"] / times["floor"]
    if HAS_TORCH:
        device = "cuda" if backend_label in GPU_BACKENDS else "cpu"
        peer = torch_eager_step(shape, dtype, device)
        settle = 0.02 if QUICK else 0.25
        vs = time_interleaved(
            {"ours": ours, "torch_eager": peer}, rounds=n_rounds, repeats=repeats, settle=settle
        )
        benchmark.extra_info["interleaved_ms"]["torch_eager"] = vs["torch_eager"] * 1e3
        benchmark.extra_info["x_peer"] = vs["torch_eager"] / vs["ours"]  # > 1: we are faster
    if HAS_JAX and backend_label in ("numpy", "torch"):  # an optional CPU peer
        jit = jax_jit_step(shape, dtype)
        vs = time_interleaved(
            {"ours": ours, "jax_jit": jit}, rounds=n_rounds, repeats=repeats, settle=0.02 if QUICK else 0.25
        )
        benchmark.extra_info["interleaved_ms"]["jax_jit"] = vs["jax_jit"] * 1e3
        benchmark.extra_info["x_jax"] = vs["jax_jit"] / vs["ours"]  # > 1: we are faster


def test_floor(benchmark, shape_name, dtype, backend_label):
    shape = SHAPES[shape_name]
    problem = make_problem(resolve(*BACKENDS[backend_label]), shape, dtype)
    record(benchmark, shape, dtype, "floor", backend_label, floor_fn(problem), rounds(shape_name))


def test_torch_eager(benchmark, shape_name, dtype, peer_device):
    shape = SHAPES[shape_name]
    label = peer_label("cupy" if peer_device == "cuda" else "numpy")
    record(
        benchmark,
        shape,
        dtype,
        "peer",
        label,
        torch_eager_step(shape, dtype, peer_device),
        rounds(shape_name),
    )


@pytest.mark.parametrize("rows", [1000 if QUICK else 10_000])
def test_predict(benchmark, dtype, backend_label, rows):
    """Inference on 10,000 CIFAR-shaped rows (H = 100): forward and argmax, synchronized."""
    from twolayer_xp.core import kernels

    shape = (rows, 3072, 100, 10)
    problem = make_problem(resolve(*BACKENDS[backend_label]), shape, dtype)

    def predict():
        kernels.predict(problem.params, problem.X)
        problem.backend.synchronize()

    benchmark.group = f"predict {rows} rows {dtype}"
    benchmark.extra_info.update(
        {"implementation": "predict", "backend": backend_label, "dtype": dtype, "rows": rows}
    )
    benchmark.pedantic(predict, rounds=3 if QUICK else 10, iterations=1, warmup_rounds=2)
    if benchmark.stats is not None:
        benchmark.extra_info["samples_per_second"] = rows / benchmark.stats.stats.median
