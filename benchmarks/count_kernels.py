"""Count the device operations of one training step: on a GPU each is (at least) one kernel
launch, and at small shapes launches, not FLOPs, are the cost.

    python benchmarks/count_kernels.py        # needs torch (CPU is enough)

Runs our kernels on torch and counts the top-level ATen operators torch's profiler records,
leaving out pure views (transpose, unsqueeze, slicing...), which launch nothing.
"""

from __future__ import annotations

import collections
import sys

VIEWS = {
    "aten::t",
    "aten::transpose",
    "aten::unsqueeze",
    "aten::view",
    "aten::reshape",
    "aten::_reshape_alias",
    "aten::expand",
    "aten::as_strided",
    "aten::permute",
    "aten::slice",
    "aten::alias",
    "aten::squeeze",
    "aten::detach",
    "aten::lift_fresh",
    "aten::select",
    "aten::mT",
    "aten::matrix_H",
    "aten::numpy_T",
    "aten::resolve_conj",
    "aten::resolve_neg",
    "aten::result_type",
    "aten::empty",
    "aten::empty_like",
    "aten::swapaxes",
    "aten::moveaxis",
    "aten::broadcast_tensors",
    "aten::expand_as",
    "aten::movedim",
}


def count(fn) -> collections.Counter:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    ops = collections.Counter()
    for event in prof.events():
        if event.cpu_parent is None and event.name.startswith("aten::") and event.name not in VIEWS:
            ops[event.name] += 1
    return ops


def population_step(K: int, shape=(200, 3072, 100, 10)):
    """A population step of K members on torch (CPU), ready to be counted."""
    import numpy as np

    from twolayer_xp import Population
    from twolayer_xp.core import kernels

    N, D, H, C = shape
    pop = Population(D, H, C, size=K, std=1e-3, backend="torch", dtype="float32", rng=0)
    rng = np.random.default_rng(0)
    X, y = pop.place(rng.standard_normal((N, D)), rng.integers(0, C, size=N), "X")
    lr = pop.backend.asarray(np.full(K, 1e-4), dtype="float32")
    reg = pop.backend.asarray(np.full(K, 1e-3), dtype="float32")
    ctx = kernels.context(y, C)
    return lambda: kernels.population_sgd_step(pop.params, X, y, lr, reg, ctx)


def main() -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        print("count_kernels needs torch (pip install torch)", file=sys.stderr)
        return 2
    from twolayer_xp.backend import resolve
    from twolayer_xp.bench.timing import make_problem
    from twolayer_xp.core import kernels

    problem = make_problem(resolve("cpu", "torch"), (200, 3072, 100, 10), "float32")
    steps = {"one net (sgd_step)": lambda: kernels.sgd_step(problem.params, problem.X, problem.y, 1e-4, 1e-3)}
    for K in (1, 64):
        steps[f"population K={K} (population_sgd_step)"] = population_step(K)
    for label, step in steps.items():
        step()
        ops = count(step)
        print(f"{label}: {sum(ops.values())} device operations")
        for name, n in ops.most_common():
            print(f"  {n:3d}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
