"""Benchmark tooling: timing helpers (``timing``) and the table/chart report (``report``).

Used by ``benchmarks/``, ``make bench`` and the notebook; training never imports it.
"""

# Who a step of ours is compared with, by device: the one place these labels are written.
PEER_LABELS = {"cpu": "torch-eager", "cuda": "torch-eager-cuda"}
GPU_BACKENDS = ("cupy", "torch-cuda")  # benchmark backend labels that run on a GPU


def peer_label(backend_label: str) -> str:
    """The peer a backend label's step is compared with."""
    return PEER_LABELS["cuda" if backend_label in GPU_BACKENDS else "cpu"]
