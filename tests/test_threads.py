"""CPU threads: the policy's order (flag > environment > automatic), the CPUs a process may use
(affinity, cgroup quota), each backend applying the count, and runs and sweep workers recording
what they used. Real thread pools, real processes, real Optuna."""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import textwrap
import warnings

import pytest

from twolayer_xp import Population
from twolayer_xp.app import config, runs
from twolayer_xp.core import kernels, threads
from twolayer_xp.core.threads import Threads

BIG = 1e15  # FLOPs of a step that could use any number of threads
QUIET = {}  # an environment that says nothing about threads


@pytest.fixture
def no_thread_variables(monkeypatch):
    for name in threads.ENV_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def blas_threads():
    from threadpoolctl import threadpool_info

    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def torch_threads():
    import torch

    return torch.get_num_threads()


# -- the policy --------------------------------------------------------------------------------


def test_the_flag_beats_the_environment_which_beats_automatic():
    env = {"OPENBLAS_NUM_THREADS": "3"}
    assert threads.choose(2, BIG, environ=env, cpus=8, busy=0) == Threads(2, "flag")
    assert threads.choose(None, BIG, environ=env, cpus=8, busy=0) == Threads(3, "environment")
    assert threads.choose(None, BIG, environ=QUIET, cpus=8, busy=0) == Threads(8, "automatic")
    # The environment's count is the libraries' own setting: nothing is imposed on them.
    assert threads.choose(None, environ=env).limit is None and threads.choose(2, environ=env).limit == 2


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"OMP_NUM_THREADS": "4"}, 4),
        ({"MKL_NUM_THREADS": "2"}, 2),
        ({"OMP_NUM_THREADS": "4,2"}, 4),  # OpenMP's nested form: the outer level
        ({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "4"}, 1),  # OpenBLAS reads its own first
        ({"OPENBLAS_NUM_THREADS": "", "OMP_NUM_THREADS": "0", "MKL_NUM_THREADS": "x"}, None),
    ],
)
def test_the_environment_variables_a_user_sets_are_respected(env, expected):
    assert threads.from_environment(env) == expected


def test_automatic_uses_what_the_step_can_use_within_the_cpus():
    per = threads.FLOPS_PER_THREAD
    digits = kernels.step_flops(100, 64, 128, 10)  # the default run: one thread pays best
    assert threads.choose(None, digits, environ=QUIET, cpus=64, busy=0) == Threads(1, "automatic")
    assert threads.choose(None, 3.5 * per, environ=QUIET, cpus=64, busy=0).count == 3
    assert threads.choose(None, BIG, environ=QUIET, cpus=6, busy=0).count == 6
    assert threads.choose(None, BIG, environ=QUIET, cpus=6, busy=0, share=3).count == 2  # sweep workers
    assert threads.choose(None, BIG, environ=QUIET, cpus=2, busy=0, share=3).count == 1
    assert threads.choose(None, BIG, environ=QUIET, cpus=4, busy=3) == Threads(1, "automatic", 3)


@pytest.mark.parametrize(
    "bad, error",
    [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError), (10**23, ValueError)],
)
def test_a_bad_count_is_refused_by_name(bad, error):
    """10**23 reached ctypes as an overflow traceback (torch: 'Overflow when unpacking long')."""
    with pytest.raises(error, match="threads must be"):
        threads.choose(bad)


def test_a_count_above_the_cpus_is_lowered_to_them_with_a_warning(monkeypatch):
    """--threads 1000 on 2 CPUs started 64 OpenBLAS threads (1001 torch ones) that stayed alive,
    and recorded 1000."""
    monkeypatch.setattr(threads, "_lowered", set())
    with pytest.warns(RuntimeWarning, match="threads=1000 is more than the 2 CPUs .* computing with 2"):
        assert threads.choose(1000, cpus=2) == Threads(2, "flag")
    assert threads.choose(2, cpus=2) == Threads(2, "flag")
    with (
        warnings.catch_warnings()
    ):  # said once: a sweep chose again for every population, saying it each time
        warnings.simplefilter("error")
        assert threads.choose(1000, cpus=2) == Threads(2, "flag")


def test_the_count_recorded_is_the_one_in_effect():
    """The environment's count is what the library's pool took from it (OpenBLAS ignores
    MKL_NUM_THREADS; torch reads OMP's, not OpenBLAS's): it recorded the variable it parsed.
    An automatic count stays within a limit the user set some other way (threadpoolctl,
    torch.set_num_threads, GOTO_NUM_THREADS): it raised it."""
    env = {"MKL_NUM_THREADS": "1"}
    assert threads.choose(None, BIG, environ=env, cpus=8, busy=0, in_effect=2) == Threads(2, "environment")
    assert threads.choose(None, BIG, environ=env, cpus=8, busy=0) == Threads(1, "environment")  # unknown
    assert threads.choose(None, BIG, environ=QUIET, cpus=8, busy=0, in_effect=1) == Threads(1, "automatic")
    assert threads.choose(None, BIG, environ=QUIET, cpus=8, busy=0, in_effect=3).count == 3


def test_train_stays_within_a_limit_set_around_it(case, make_net, blobs, no_thread_variables, monkeypatch):
    """A big step on an idle 8-CPU machine, inside the user's own one-thread limit."""
    monkeypatch.setattr(threads, "available_cpus", lambda *args: 8)
    monkeypatch.setattr(threads, "others_running", lambda *args: 0)
    X, y = blobs(200, 20, 4)
    net = make_net(case, 20, 16, 4, rng=0)
    if case == "torch":
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(1)
        limit = contextlib.nullcontext()
    else:
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(1)
    big = threads.FLOPS_PER_THREAD * 8 / kernels.step_flops(1, 20, 16, 4)  # rows for an 8-thread step
    try:
        with limit:
            net.train(X, y, X, y, num_iters=1, batch_size=int(big) + 1)
    finally:
        if case == "torch":
            torch.set_num_threads(before)
    assert net.threads_used == Threads(1, "automatic")
    # another training's limit (two Python threads training at once) is not the user's: with 3
    # set by the user outside it, the run takes 3
    if case == "torch":
        torch.set_num_threads(3)
        users = contextlib.nullcontext()
    else:
        users = threadpool_limits(3)
    try:
        with users, net.backend.limit_threads(1):
            net.train(X, y, X, y, num_iters=1, batch_size=int(big) + 1)
    finally:
        if case == "torch":
            torch.set_num_threads(before)
    assert net.threads_used == Threads(3, "automatic")


def test_affinity_is_respected():
    """A process pinned to one CPU counts one, and its automatic runs use one thread."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    code = textwrap.dedent(
        """
        import os
        from twolayer_xp.core import threads
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        print(threads.available_cpus(), threads.choose(None, 1e15, environ={}, busy=0).count)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["1", "1"]
    assert threads.available_cpus() == len(os.sched_getaffinity(0))  # no quota on a test machine


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_is_parsed(tmp_path):
    write(tmp_path / "cpu.max", "max 100000\n")  # the root: unlimited
    assert threads.cgroup_cpu_quota(tmp_path, own="0::/\n") is None
    write(tmp_path / "cpu.max", "150000 100000\n")
    assert threads.cgroup_cpu_quota(tmp_path, own="0::/\n") == 1.5
    # In a nested cgroup the tightest quota on the way up counts.
    write(tmp_path / "ci" / "cpu.max", "50000 100000\n")
    write(tmp_path / "ci" / "job" / "cpu.max", "400000 100000\n")
    assert threads.cgroup_cpu_quota(tmp_path, own="0::/ci/job\n") == 0.5
    write(tmp_path / "cpu.max", "garbage\n")
    assert threads.cgroup_cpu_quota(tmp_path / "nowhere", own="0::/\n") is None


def test_cgroup_v1_quota_is_parsed(tmp_path):
    own = "5:memory:/docker/x\n4:cpu,cpuacct:/docker/x\n"
    folder = tmp_path / "cpu,cpuacct" / "docker" / "x"
    write(folder / "cpu.cfs_period_us", "100000\n")
    write(folder / "cpu.cfs_quota_us", "-1\n")
    assert threads.cgroup_cpu_quota(tmp_path, own=own) is None
    write(folder / "cpu.cfs_quota_us", "250000\n")
    assert threads.cgroup_cpu_quota(tmp_path, own=own) == 2.5


def test_a_quota_caps_the_cpus(tmp_path):
    """available_cpus reads this process's own cgroup file; a root-level cpu.max applies to all."""
    write(tmp_path / "cpu.max", "100000 100000\n")
    assert threads.available_cpus(tmp_path) == 1
    write(tmp_path / "cpu.max", "150000 100000\n")  # 1.5 CPUs' time: two threads can use it
    assert threads.available_cpus(tmp_path) == min(2, len(os.sched_getaffinity(0)))


def test_others_running_counts_other_processes_not_this_ones_threads(tmp_path, monkeypatch):
    proc = tmp_path / "proc"
    write(proc / "stat", "cpu 1 2 3\nprocs_running 5\nprocs_blocked 0\n")
    write(proc / "self" / "task" / "1" / "stat", "1 (python (main)) R 0 0\n")
    write(proc / "self" / "task" / "2" / "stat", "2 (blas) S 0 0\n")
    assert threads.others_running(proc) == 4
    assert threads.others_running(tmp_path / "absent") == 0
    # its figure helper (importing matplotlib at the start) is this job too; other children are not
    write(proc / "77" / "task" / "77" / "stat", "77 (python) R 1 0\n")
    write(proc / "77" / "task" / "79" / "stat", "79 (python) R 1 0\n")
    monkeypatch.setattr(threads, "helpers", {77, 78})  # 78 has exited
    assert threads.others_running(proc) == 2


def test_the_commands_figure_helper_is_not_a_busy_neighbour(tmp_path, monkeypatch):
    """The command counts its figure helper (drawing.beside's) as its own while it runs."""
    from twolayer_xp.app import cli, drawing

    monkeypatch.setattr(threads, "helpers", set())
    seen = []
    choose = threads.choose
    monkeypatch.setattr(
        threads, "choose", lambda *a, **k: (seen.append(set(threads.helpers)), choose(*a, **k))[1]
    )
    with drawing.beside(True):
        (pid,) = drawing.helpers()
        assert cli._main(["train", "--num-iters", "1", "--quiet", "--out", str(tmp_path / "r")]) == 0
    assert seen == [{pid}] and threads.helpers == set()


# -- the backends apply it -----------------------------------------------------------------------


def test_numpy_limits_its_blas_pool_and_restores_it(backend_of):
    backend = backend_of("numpy")
    before = blas_threads()
    with backend.limit_threads(1):
        assert blas_threads() == {1}
    assert blas_threads() == before
    with backend.limit_threads(None):  # the environment's count: left alone
        assert blas_threads() == before


def test_torch_limits_its_own_pool(backend_of, has_torch):
    if not has_torch:
        pytest.skip("torch is not installed")
    import torch

    before = torch.get_num_threads()
    with backend_of("torch").limit_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_overlapping_limits_closed_out_of_order_restore_the_pool(backend_of, has_torch, library):
    """Two Python threads training at once: each limit restored the count it had saved, so when
    the first one opened closed first, the second restored the first's limit and the pool stayed
    lowered for good. Now the latest open limit applies, and the last one out restores."""
    if library == "torch" and not has_torch:
        pytest.skip("torch is not installed")
    pool = (lambda: max(blas_threads())) if library == "numpy" else torch_threads
    backend, before = backend_of(library), pool()
    first, second = backend.limit_threads(1), backend.limit_threads(before + 1)
    first.__enter__()
    assert pool() == 1
    second.__enter__()
    assert pool() in (before + 1, before)  # OpenBLAS caps a pool at the threads it was built with
    first.__exit__(None, None, None)
    assert pool() in (before + 1, before)  # the one still open
    second.__exit__(None, None, None)
    assert pool() == before


def test_a_training_in_another_python_thread_records_what_its_pool_had(
    case, make_net, blobs, no_thread_variables
):
    """OpenBLAS may keep a count another Python thread set, and OpenMP's (torch's) is per
    thread: a worker thread asking for 1 thread recorded 1 while its steps ran with the pool's 2.
    The record is now what the pool had for the training thread, whatever that was."""
    from concurrent.futures import ThreadPoolExecutor

    X, y = blobs(200, 20, 4)
    net = make_net(case, 20, 16, 4, rng=0)
    pool = torch_threads if case == "torch" else lambda: max(blas_threads())
    net.train(X, y, X, y, num_iters=5, batch_size=50, threads=2)  # this thread sets a count first
    seen = []

    def train():
        progress = lambda info: seen.append(pool())  # inside the step loop, in the worker thread
        net.train(X, y, X, y, num_iters=20, batch_size=50, threads=1, progress=progress, sync_every=10)

    with ThreadPoolExecutor(1) as worker:
        worker.submit(train).result()
    assert len(seen) == 2 and {net.threads_used.count} == set(seen), (net.threads_used, seen)


# -- runs record what they used -------------------------------------------------------------------


def test_train_computes_with_the_count_and_records_it(make_net, blobs, case, no_thread_variables):
    X, y = blobs(200, 20, 4)
    net = make_net(case, 20, 16, 4, rng=0)
    seen = []
    pool = torch_threads if case == "torch" else blas_threads
    progress = lambda info: seen.append(pool())  # called inside training, at sync points
    net.train(X, y, X, y, num_iters=20, batch_size=50, threads=1, progress=progress, sync_every=10)
    assert net.threads_used == Threads(1, "flag")
    assert len(seen) == 2 and all(s in ({1}, 1) for s in seen), seen
    net.train(X, y, X, y, num_iters=5, batch_size=50)
    assert net.threads_used == Threads(1, "automatic")  # a small step: one thread
    with pytest.raises(ValueError, match="threads must be a positive int"):
        net.train(X, y, X, y, num_iters=5, threads=0)


def test_population_records_its_count(blobs, no_thread_variables, monkeypatch):
    X, y = blobs(200, 20, 4)
    pop = Population(20, 16, 4, size=3, rng=0)
    pop.train(X, y, X, y, num_iters=5, batch_size=50, threads=2)
    assert pop.threads_used == Threads(2, "flag")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # after OpenBLAS loaded: its pool keeps its count
    pop.train(X, y, X, y, num_iters=5, batch_size=50)
    assert pop.threads_used == Threads(max(blas_threads()), "environment")


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_the_flag_is_checked_in_one_line(command, capsys, one_error_line):
    from twolayer_xp.app import cli

    with pytest.raises(SystemExit) as raised:  # argparse's usage error, in one line
        cli.main([command, "--threads", "0"])
    assert raised.value.code == 2
    assert "--threads: threads must be a positive int, got 0" in one_error_line(capsys)


def test_a_run_says_what_it_used(tmp_path, no_thread_variables):
    result = runs.run(config.RunConfig(num_iters=20, threads=1), tmp_path / "run")
    assert result.metrics["threads"] == {"count": 1, "source": "flag", "busy": 0}
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["threads"]["count"] == 1
    assert "samples/s, 1 thread)" in result.summary()


# -- sweep workers share the host -----------------------------------------------------------------

# A worker that, when it counts the host's workers, waits until another process of this host holds a trial
# too, and stays RUNNING a moment after, so that both count each other (the waits are in the test,
# not the code), and that sees no other process computing (this machine may be busy: the share is
# under test).
TWO_AT_ONCE = textwrap.dedent(
    """
    import sys, time
    from twolayer_xp.app.sweep import worker
    from twolayer_xp.core import threads
    threads.others_running = lambda *args: 0
    count = worker.Worker.workers_here

    def together(self):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running = self.study.get_trials(deepcopy=False, states=(self.optuna.trial.TrialState.RUNNING,))
            if len({t.user_attrs.get("worker", {}).get("pid") for t in running} - {None}) >= 2:
                break
            time.sleep(0.05)
        counted = count(self)
        time.sleep(2)  # still RUNNING while the other worker counts too
        return counted

    worker.Worker.workers_here = together
    from twolayer_xp.app import cli
    sys.exit(cli.main(["sweep", *sys.argv[1:]]))
    """
)


def test_two_sweep_workers_on_one_host_each_take_half_the_cpus(tmp_path):
    optuna = pytest.importorskip("optuna", reason="the sweep extra (optuna) is not installed")
    cpus = threads.available_cpus()
    if cpus < 2:
        pytest.skip("one CPU: nothing to share")
    # A step big enough to use every CPU alone, so that the share is what limits it.
    hidden = math.ceil(cpus * threads.FLOPS_PER_THREAD / kernels.step_flops(1000, 64, 1, 10)) + 1
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["--storage", storage, "--trials", "2", "--population", "1", "--num-iters", "2",
            "--hidden-size", hidden, "--batch-size", 1000, "--heartbeat", "5", "--quiet"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in threads.ENV_VARIABLES}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", TWO_AT_ONCE, "--out", str(tmp_path / name), *map(str, args)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for name in ("a", "b")
    ]
    for w in workers:
        _, err = w.communicate(timeout=180)
        assert w.returncode == 0, err
    trials = optuna.load_study(study_name="twolayer-xp-digits", storage=storage).get_trials()
    used = [t.user_attrs["threads"] for t in trials if t.state.name == "COMPLETE"]
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 2 and len(used) == 2
    assert all(u["workers"] == 2 and u["source"] == "automatic" for u in used), used
    # Half the CPUs each, where one worker alone would have taken them all.
    assert [u["count"] for u in used] == [cpus // 2] * 2, used
    assert threads.choose(None, BIG, environ=QUIET, busy=0).count == cpus
