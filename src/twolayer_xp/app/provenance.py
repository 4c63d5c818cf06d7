"""What a result needs to be reproduced from its files: the command, the code, the libraries
and the machine (CPU, BLAS and its threads, device, GPU). Recorded in every metrics.json."""

from __future__ import annotations

import copy
import functools
import os
import platform
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from twolayer_xp import __version__

# Distributions whose version can change a number: the array libraries, the data and sweep
# stack, and ONNX. Those not installed are left out.
LIBRARIES = (
    "numpy", "scipy", "scikit-learn", "array-api-compat", "array-api-strict", "torch", "cupy",
    "cupy-cuda12x", "cupy-cuda13x", "matplotlib", "optuna", "pooch", "threadpoolctl", "onnx", "onnxruntime",
)  # fmt: skip
GIT_SECONDS = 5


def _program(argv0: str) -> str:
    """How to run this command again: `twolayer-xp`, or `python -m twolayer_xp` for the module
    (whose argv[0] is the path of its __main__.py)."""
    path = Path(argv0)
    if path.name == "__main__.py" and path.parent.name == "twolayer_xp":
        return "python -m twolayer_xp"
    return "twolayer-xp" if "twolayer" in path.name else shlex.quote(argv0)


def _hidden(arg: str) -> str:
    """A command-line word with a URL's password masked (--storage postgresql://user:pw@host/db):
    provenance is written into files a user shares."""
    return re.sub(r"(://[^/:@\s]*:)[^/@\s]*@", r"\1***@", arg)


def collect(backend=None, argv: list | None = None) -> dict:
    """The provenance of a run or a sweep's best: its command line, package version and git
    commit (from a clone), library versions, CPU, BLAS threads, and the device it ran on."""
    argv = sys.argv if argv is None else argv
    record = {
        "command": " ".join([_program(argv[0]), shlex.join(map(_hidden, argv[1:]))]).strip()
        if argv
        else None,
        "twolayer_xp": __version__,
        "git": copy.deepcopy(git_commit()),  # copies: the cached records stay as read
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": dict(libraries()),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threadpools": threadpools(),
    }
    if backend is not None:
        record.update(backend=backend.name, device=str(backend.device), gpu=backend.gpu_name())
    return record


# The libraries and the clone's commit are read once per process: they are those of the code
# this process loaded (a pip install or a commit made meanwhile would not be what ran), and a
# sweep records them with every best it saves (~25 ms a time, read afresh).
@functools.cache
def libraries() -> dict:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


@functools.cache
def git_commit() -> dict | None:
    """{'commit', 'dirty'} of the clone this package runs from, None when not run from one."""
    root = Path(__file__).resolve().parents[3]  # src/twolayer_xp/app/provenance.py -> the clone
    if not (root / ".git").exists():
        return None
    try:
        commit = _git(root, "rev-parse", "HEAD")
        dirty = bool(_git(root, "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=GIT_SECONDS, check=True
    )
    return done.stdout.strip()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def threadpools() -> list | None:
    """The BLAS/OpenMP libraries loaded and their own thread counts (threadpoolctl), None without
    it. Read outside a run's limit, these are the libraries' defaults; the count a run computed
    with is its ``threads`` record."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    keys = ("internal_api", "prefix", "version", "num_threads", "threading_layer", "architecture")
    return [{k: info[k] for k in keys if k in info} for info in threadpool_info()]
