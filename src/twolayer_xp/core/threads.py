"""How many CPU threads a training run computes with: one policy, chosen here, applied by the
backend (``Backend.limit_threads``).

In order: what the user asked (``threads=`` / ``--threads``, at most the CPUs this process may
use), else what the environment says (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, MKL_NUM_THREADS,
read by the libraries when they load: we leave them as configured, and record the count the
library's pool took from them), else automatic: as many threads as the step's arithmetic can
use (one per ``FLOPS_PER_THREAD``; measured, docs/threads.md), never more than this process's
share of the CPUs it may run on (affinity mask and cgroup CPU quota, divided by ``share``: the
sweep workers on this host), nor than the library's pool holds when the call starts (a limit
the user set some other way: threadpoolctl, torch.set_num_threads, GOTO_NUM_THREADS). Small
steps get one thread: a second costs more in hand-offs than it computes, and BLAS threads spin
between calls, stealing a core from everyone else.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path
from typing import NamedTuple

from twolayer_xp.core import validation

ENV_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# A training step's FLOPs (kernels.step_flops) each thread must have before one more pays off.
# Quiet 2-core EPYC, 2 threads / 1: 1.0-1.3x (lost) at digits' 4 MFLOP, about even at 20-65
# MFLOP, 0.68x at 83 MFLOP, 0.7-0.8x at CIFAR's 247 MFLOP. docs/threads.md has the table.
FLOPS_PER_THREAD = 40e6
CGROUP_ROOT = Path("/sys/fs/cgroup")
SOURCES = ("flag", "environment", "automatic")
# The flag's and the API's check; the bound only keeps a typo from reaching the libraries as an
# overflow (a count above the CPUs is lowered to them, with a warning).
MAX_THREADS = 4096
CONSTRAINTS = {"threads": validation.Constraint(int, 0, True, MAX_THREADS)}


class Threads(NamedTuple):
    """The thread count a run uses, where it came from (one of SOURCES), and for an automatic
    count the other processes' tasks found running (``busy``) that it left their cores to."""

    count: int
    source: str
    busy: int = 0

    @property
    def limit(self) -> int | None:
        """The count to impose on the libraries: None when the environment already did."""
        return None if self.source == "environment" else self.count


_lowered: set[tuple[int, int]] = set()  # (asked, CPUs) counts already said to be lowered


def choose(
    requested: int | None = None,
    flops: float = 0.0,
    *,
    share: int = 1,
    environ=None,
    cpus=None,
    busy=None,
    in_effect: int | None = None,
) -> Threads:
    """Threads for a run whose step costs ``flops`` (kernels.step_flops), shared by ``share``
    processes of one job on this host (sweep workers). ``requested``: the user's count or None.
    ``in_effect``: the threads the backend's pool has outside this package's own limits
    (``Backend.threads_in_effect``; None: unknown). ``environ``, ``cpus`` and ``busy`` default
    to this process's (os.environ, available_cpus(), others_running())."""
    if requested is not None:
        count = validation.check("threads", requested, CONSTRAINTS)
        cpus = available_cpus() if cpus is None else cpus
        if count > cpus and (count, cpus) not in _lowered:  # more threads than CPUs wait for each other
            _lowered.add((count, cpus))  # said once: a sweep chooses again for every population
            warnings.warn(
                f"threads={count} is more than the {cpus} CPUs this process may use; computing with {cpus}",
                RuntimeWarning,
                stacklevel=3,
            )
        return Threads(min(count, cpus), "flag")
    given = from_environment(os.environ if environ is None else environ)
    if given is not None:  # what the library made of the variables, where it says
        return Threads(in_effect or given, "environment")
    useful = max(1, int(flops // FLOPS_PER_THREAD))
    if useful == 1:  # nothing to share out: skip reading the machine's state
        return Threads(1, "automatic")
    cpus = available_cpus() if cpus is None else cpus
    busy = others_running() if busy is None else busy
    # A core someone else is computing on is no core of ours: a GEMM split across it waits for
    # the slower half (measured 1.7-3x slower with two busy neighbours, docs/threads.md).
    budget = max(1, min(cpus // max(1, share), cpus - busy))
    return Threads(min(budget, useful, in_effect or budget), "automatic", busy)


def from_environment(environ) -> int | None:
    """The first of ENV_VARIABLES set to a positive count (OMP's "4,2" nesting: its first), or None."""
    for name in ENV_VARIABLES:
        first = environ.get(name, "").split(",")[0].strip()
        if first.isdigit() and int(first) > 0:
            return int(first)
    return None


# Processes this one started for itself whose running tasks are its own work, not a neighbour's:
# the command's figure helper (app.drawing), importing matplotlib while the data loads. Counted,
# it cost a CIFAR run on 2 CPUs its second thread. Other children (a user's multiprocessing
# workers) compute beside the run, and are counted.
helpers: set[int] = set()


def others_running(proc: Path = Path("/proc"), samples: int = 3) -> int:
    """Tasks of other processes runnable right now: /proc/stat's procs_running less this
    process's own running threads (its BLAS threads may still be spinning) and its ``helpers``',
    the least of a few reads 2 ms apart (a neighbour that computes shows in every read, a
    passing one rarely). 0 where unknown."""
    counts = []
    for i in range(samples):
        try:
            stat = (proc / "stat").read_text().split("procs_running", 1)[1]
            own = _tasks_running(proc / "self") + sum(_tasks_running(proc / str(pid)) for pid in helpers)
            counts.append(int(stat.split()[0]) - own)
        except (OSError, IndexError, ValueError):
            return 0
        if i + 1 < samples:
            time.sleep(0.002)
    return max(0, min(counts))


def _tasks_running(process: Path) -> int:
    """Running threads of ``process`` (/proc/<pid>); 0 for one that has exited (not /proc/self,
    whose absence means there is no /proc to read)."""
    try:
        return sum(_running(task) for task in (process / "task").iterdir())
    except OSError:
        if process.name == "self":
            raise
        return 0


def _running(task: Path) -> bool:
    try:  # /proc/<pid>/task/<tid>/stat: "tid (name) STATE ..."; the name may hold spaces
        return (task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "R"
    except (OSError, IndexError):
        return False


def available_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may run on: its affinity mask, capped by its cgroup's CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root)
    return max(1, min(cpus, math.ceil(quota))) if quota is not None else max(1, cpus)


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, own: str | None = None) -> float | None:
    """CPUs' worth of time per period the cgroup allows (e.g. 1.5), the tightest on the way from
    this process's cgroup up to ``root``; None when unlimited or unknown.

    cgroup v2: ``cpu.max`` holds "QUOTA PERIOD" or "max PERIOD". v1: ``cpu.cfs_quota_us``
    (-1: none) and ``cpu.cfs_period_us``, under ``cpu/`` or ``cpu,cpuacct/``. ``own``: the
    contents of /proc/self/cgroup (read when None); a container sees its own cgroup as the root.
    """
    if own is None:
        try:
            own = Path("/proc/self/cgroup").read_text()
        except OSError:
            own = ""
    quotas = []
    for line in own.splitlines() or [""]:
        _, controllers, path = (line.split(":", 2) + ["", "", ""])[:3]
        relative = Path(path.strip().lstrip("/"))
        if controllers in ("", "0"):  # v2 (or no /proc): cpu.max at the root and below
            quotas += [_v2_quota(root / d) for d in _ancestors(relative)]
        elif "cpu" in controllers.split(","):
            for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
                quotas += [_v1_quota(root / mount / d) for d in _ancestors(relative)]
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def _ancestors(relative: Path) -> list[Path]:
    return [Path(".")] + [Path(*relative.parts[: i + 1]) for i in range(len(relative.parts))]


def _v2_quota(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return int(quota) / int(period) if quota != "max" and int(period) > 0 else None
    except (OSError, ValueError):
        return None


def _v1_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None
