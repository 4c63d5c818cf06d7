"""Whole runs (runs.run, mostly through the CLI): outputs, checkpoints, resume, divergence,
interrupts, the output folder and memory."""

import json
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from twolayer_xp import TwoLayerNet
from twolayer_xp.app import config, runs
from twolayer_xp.core import model
from twolayer_xp.io import files

RUN = [sys.executable, "-m", "twolayer_xp", "train", "--quiet"]


def test_default_run_on_digits(tmp_path, capsys, train):
    """The README's main job: defaults on digits reach test accuracy >= 0.96 and write 4 files."""
    assert train("--out", tmp_path / "run", "--no-progress") == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("digits on cpu (numpy, float32): test accuracy")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.96
    assert metrics["status"] == "completed" and metrics["iterations"] == 2000
    assert metrics["backend"] == "numpy" and metrics["device"] == "cpu" and metrics["dtype"] == "float32"
    assert {"numpy", "array_api_compat", "twolayer_xp"} <= set(metrics["versions"])
    assert len(metrics["loss_history"]) == 2000 and len(metrics["val_acc_history"]) == 154
    assert metrics["samples_per_second"] > 0 and metrics["train_seconds"] > 0
    assert f"test accuracy {metrics['test_accuracy']:.4f}" in out[0]
    net = TwoLayerNet.load(tmp_path / "run" / "model.npz")
    assert net.iteration == 2000 and net.hidden_size == 128


def test_plots_show_what_they_claim(tmp_path, train):
    from matplotlib.image import imread

    assert train("--out", tmp_path, "--quiet", "--num-iters", 300) == 0
    loss = imread(tmp_path / "loss.png")
    weights = imread(tmp_path / "weights.png")
    assert loss.shape[0] > 300 and loss.shape[1] > 300 and np.std(loss) > 0.05
    # 128 units in a 12-column grid of 8x8 tiles: the weights image is not blank or uniform
    assert weights.shape[0] > 300 and np.std(weights[..., :3]) > 0.05
    from twolayer_xp.app import plots

    grid = plots.visualize_grid(np.random.default_rng(0).standard_normal((128, 8, 8)))
    assert grid.shape == (11 * 9 - 1, 12 * 9 - 1) and grid.min() == 0 and grid.max() == pytest.approx(255)


def test_resume_keeps_its_settings(tmp_path, capsys, train, one_error_line):
    assert train("--out", tmp_path, "--num-iters", 30, "--quiet") == 0
    assert train("--resume", tmp_path / "model.npz", "--hidden-size", 10, "--quiet") == 2
    assert "--hidden-size cannot change when resuming" in one_error_line(capsys)
    assert train("--resume", tmp_path / "model.npz", "--quiet") == 2
    assert "already has 30 of num_iters=30" in one_error_line(capsys)


def test_resumed_run_equals_uninterrupted_run(tmp_path, train):
    common = ["--dtype", "float64", "--quiet", "--checkpoint-every", 15, "--seed", 5]
    assert train("--out", tmp_path / "whole", "--num-iters", 60, *common) == 0
    assert train("--out", tmp_path / "split", "--num-iters", 25, *common) == 0
    assert train("--resume", tmp_path / "split" / "model.npz", "--num-iters", 60, "--quiet") == 0
    whole = TwoLayerNet.load(tmp_path / "whole" / "model.npz")
    split = TwoLayerNet.load(tmp_path / "split" / "model.npz")
    for name in whole.params:
        np.testing.assert_array_equal(split.params[name], whole.params[name])
    a = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    b = json.loads((tmp_path / "split" / "metrics.json").read_text())
    assert a["loss_history"] == b["loss_history"] and a["val_acc_history"] == b["val_acc_history"]
    assert a["test_accuracy"] == b["test_accuracy"] and b["resumed_from"].endswith("model.npz")


def test_divergence_exits_1_and_keeps_a_finite_checkpoint(tmp_path, capsys, train, one_error_line):
    assert train("--out", tmp_path, "--learning-rate", 1e30, "--std", 1.0, "--quiet") == 1
    line = one_error_line(capsys)
    assert "diverged" in line and "smaller learning_rate" in line
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "diverged"
    net = TwoLayerNet.load(tmp_path / "model.npz")  # loading checks every param is finite
    assert net.iteration < 2000
    assert all(np.all(np.isfinite(p)) for p in net.params.values())


def test_interrupted_run_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch, train, one_error_line):
    real_train = TwoLayerNet.train
    calls = []

    def interrupted_second_segment(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(self, *args, **kwargs)

    monkeypatch.setattr(TwoLayerNet, "train", interrupted_second_segment)
    assert train("--out", tmp_path, "--num-iters", 40, "--checkpoint-every", 20, "--quiet") == 130
    assert "--resume" in one_error_line(capsys)
    assert TwoLayerNet.load(tmp_path / "model.npz").iteration == 20


def test_cifar10_on_synthetic_files(tmp_path, capsys, cifar, train):
    cifar.write_cifar(tmp_path / "data", rows_per_batch=60, test_rows=40)
    args = [
        "--dataset",
        "cifar10",
        "--data-dir",
        tmp_path / "data",
        "--num-train",
        250,
        "--num-val",
        30,
        "--num-test",
        20,
        "--num-iters",
        30,
        "--batch-size",
        25,
        "--out",
        tmp_path / "run",
        "--quiet",
    ]
    assert train(*args) == 0
    assert capsys.readouterr().out.startswith("cifar10 on cpu")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["dataset_sizes"] == {"train": 250, "val": 30, "test": 20}
    assert metrics["config"]["hidden_size"] == config.DEFAULTS["cifar10"]["hidden_size"]
    _, arrays = model.load_net(tmp_path / "run" / "model.npz")
    assert arrays["mean_image"].shape == (3072,)
    assert len(metrics["val_acc_history"]) == 3  # an epoch is 250 / 25 = 10 iterations


def test_an_existing_run_is_never_overwritten(tmp_path, capsys, train, one_error_line):
    assert train("--out", tmp_path, "--num-iters", 20, "--quiet") == 0
    before = {name: (tmp_path / name).read_bytes() for name in runs.OUTPUTS}
    capsys.readouterr()
    assert train("--out", tmp_path, "--num-iters", 30, "--quiet") == 2
    assert "already holds a run's files" in one_error_line(capsys)
    assert before == {name: (tmp_path / name).read_bytes() for name in runs.OUTPUTS}


def test_resume_keeps_the_backend_unless_told_otherwise(tmp_path, train):
    assert train("--out", tmp_path, "--num-iters", 20, "--backend", "array_api_strict", "--quiet") == 0
    assert train("--resume", tmp_path / "model.npz", "--num-iters", 40, "--quiet") == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["backend"] == "array_api_strict" and metrics["iterations"] == 40
    assert train("--resume", tmp_path / "model.npz", "--num-iters", 60, "--backend", "numpy", "--quiet") == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["backend"] == "numpy"


def test_cifar10_run_peak_memory_under_twice_the_training_set(tmp_path, cifar):
    """A whole run (load, place, train, evaluate, save, plot) on float32 CIFAR-shaped data."""
    import tracemalloc

    cifar.write_cifar(tmp_path / "data", rows_per_batch=1000, test_rows=200)
    cfg = config.RunConfig(
        dataset="cifar10",
        data_dir=str(tmp_path / "data"),
        num_train=4900,
        num_val=100,
        num_test=100,
        num_iters=30,
        batch_size=100,
        hidden_size=50,
    )
    tracemalloc.start()
    result = runs.run(cfg, tmp_path / "run")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    train_bytes = 4900 * 3072 * 4
    assert result.dataset.X_train.nbytes == train_bytes
    # matplotlib needs a fixed ~35 MiB to render weights.png whatever the data size: negligible
    # next to CIFAR-10's 575 MiB, but not next to this test's 57 MiB, so it is allowed for.
    plot_allowance = 40 * 2**20
    assert peak < 2 * train_bytes + plot_allowance, (
        f"peak {peak / 2**20:.0f} MiB, data {train_bytes / 2**20:.0f} MiB"
    )


# -- the output folder: one run at a time, no leftovers ---------------------------------------------


def test_two_runs_started_together_in_one_folder(tmp_path):
    """Of two runs started at once with the same --out exactly one proceeds; the other exits 2
    with one line (the lock; or, had it started late, the first run's files)."""
    out = tmp_path / "run"
    procs = [
        subprocess.Popen(
            [*RUN, "--out", str(out), "--num-iters", "300"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    done = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    assert sorted(code for code, _, _ in done) == [0, 2], done
    _, stdout, stderr = next(d for d in done if d[0] == 2)
    lines = stderr.strip().splitlines()
    assert stdout == "" and len(lines) == 1, stderr
    # the lock (its owner's pid, or none yet while it is being written; always the lock's path),
    # or, had the second run started late, the first run's files
    assert (
        "in use by another run" in lines[0]
        and str(out / files.LOCK_NAME) in lines[0]
        or ("already holds a run's files" in lines[0])
    )
    assert json.loads((out / "metrics.json").read_text())["iterations"] == 300
    assert not (out / files.LOCK_NAME).exists()


def test_lock_of_a_live_run_refuses_and_a_stale_one_is_taken_over(tmp_path):
    lock = tmp_path / files.LOCK_NAME
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive:
        lock.write_text(str(alive.pid))
        with pytest.raises(ValueError, match=f"in use by another run \\(pid {alive.pid}\\)"):
            with files.claim_folder(tmp_path, False, runs.OUTPUTS):
                pass
        assert lock.read_text() == str(alive.pid)  # a refused claim leaves the owner's lock alone
        alive.kill()
    alive.wait()
    # the run that held it was killed: its lock is stale and the next run takes it
    with files.claim_folder(tmp_path, False, runs.OUTPUTS) as out:
        assert json.loads((out / files.LOCK_NAME).read_text()) == files.own_record()
    assert not lock.exists()


def test_a_lock_still_being_written_is_not_taken_as_stale(tmp_path):
    """O_EXCL creates the lock empty and the pid follows: a second run that reads it in between
    must not remove it (both would then proceed). An empty lock left by a crash long ago is stale."""
    lock = tmp_path / files.LOCK_NAME
    lock.write_text("")
    with pytest.raises(ValueError, match="in use by another run"):
        with files.claim_folder(tmp_path, False, runs.OUTPUTS):
            pass
    assert lock.exists()
    old = time.time() - 10 * files.LOCK_WRITE_GRACE_S
    os.utime(lock, (old, old))
    with files.claim_folder(tmp_path, False, runs.OUTPUTS):
        assert json.loads(lock.read_text()) == files.own_record()


def test_temp_files_of_a_killed_write_are_removed_by_the_next_run(tmp_path, train):
    # what atomic_write leaves when a run is killed between mkstemp and the rename
    stale = [
        tmp_path / f".model.npz.k1lled{files.TEMP_SUFFIX}",
        tmp_path / f".metrics.json.x9_2{files.TEMP_SUFFIX}",
    ]
    for f in stale:
        f.write_bytes(b"half a file")
    assert train("--out", tmp_path, "--num-iters", 20, "--quiet") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(runs.OUTPUTS)


@pytest.mark.parametrize("failure", ["too-big", "no-cuda"])
def test_a_run_that_fails_before_writing_leaves_no_folder(tmp_path, capsys, monkeypatch, failure, train):
    """Both errors come after the output folder was claimed (and created)."""
    monkeypatch.chdir(tmp_path)
    if failure == "too-big":
        args, words = ["--hidden-size", 10**10], "hidden_size=10000000000"
    else:
        from twolayer_xp.backend.cupy_lib import check_cuda

        check_cuda.cache_clear()
        monkeypatch.setitem(sys.modules, "cupy", None)
        args, words = ["--device", "cuda"], "CuPy is not installed"
    assert train(*args, "--quiet") == 2
    assert train(*args, "--quiet", "--out", tmp_path / "a" / "b") == 2
    if failure == "no-cuda":
        check_cuda.cache_clear()
    assert words in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # neither runs/<dataset>-<time>/ nor runs/ nor a/b/


# -- resume: one policy, and a run killed before its outputs --------------------------------------


def test_checkpoint_every_may_change_on_resume(tmp_path, monkeypatch, train):
    saved_at = []
    real_save = model.save_net

    def recording_save(path, net, *args, **kwargs):
        saved_at.append(net.iteration)
        return real_save(path, net, *args, **kwargs)

    monkeypatch.setattr(model, "save_net", recording_save)
    assert train("--out", tmp_path, "--num-iters", 30, "--checkpoint-every", 10, "--quiet") == 0
    assert saved_at == [10, 20, 30]
    saved = tmp_path / "model.npz"
    assert train("--resume", saved, "--num-iters", 60, "--checkpoint-every", 15, "--quiet") == 0
    assert saved_at == [10, 20, 30, 45, 60]
    assert json.loads((tmp_path / "metrics.json").read_text())["config"]["checkpoint_every"] == 15
    assert "checkpoint_every" in config.RESUME_MAY_CHANGE


def test_resume_of_a_completed_run_writes_its_missing_outputs(tmp_path, capsys, train):
    """A run killed after its last checkpoint but before metrics.json and the plots."""
    assert train("--out", tmp_path, "--num-iters", 20, "--quiet") == 0
    model = (tmp_path / "model.npz").read_bytes()
    (tmp_path / "metrics.json").unlink()
    (tmp_path / "loss.png").unlink()
    capsys.readouterr()
    assert train("--resume", tmp_path / "model.npz", "--quiet") == 0
    assert "after 20 iterations" in capsys.readouterr().out
    assert all((tmp_path / name).exists() for name in runs.OUTPUTS)
    assert (tmp_path / "model.npz").read_bytes() == model  # nothing retrained
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "completed" and len(metrics["loss_history"]) == metrics["iterations"] == 20
    # resumed into a new folder, the finished run's outputs (its checkpoint too) go there
    assert train("--resume", tmp_path / "model.npz", "--out", tmp_path / "copy", "--quiet") == 0
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == sorted(runs.OUTPUTS)


# -- Ctrl-C ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("interrupt_at_sync", [1, 2])
def test_ctrl_c_names_the_checkpoint_and_its_iteration(tmp_path, interrupt_at_sync):
    """Segments of 20 iterations sync (call progress) at their end, just before the checkpoint."""
    syncs = []

    def progress(info):
        syncs.append(info["iteration"])
        if len(syncs) == interrupt_at_sync:
            raise KeyboardInterrupt

    out = tmp_path / "run"
    with pytest.raises(runs.RunInterrupted) as excinfo:
        runs.run(config.RunConfig(num_iters=60, checkpoint_every=20), out, progress=progress)
    message = str(excinfo.value)
    if interrupt_at_sync == 1:
        assert message == "interrupted before the first checkpoint; nothing was saved"
        assert not out.exists()
    else:
        model = out / "model.npz"
        assert message == f"interrupted; {model} holds iteration 20: continue with --resume {model}"
        assert TwoLayerNet.load(model).iteration == 20
        assert not (out / files.LOCK_NAME).exists()


@pytest.mark.parametrize("where", ["loading the data", "drawing the plots"])
def test_ctrl_c_outside_the_training_loop(tmp_path, capsys, monkeypatch, where, train, one_error_line):
    """Before training (a resumed run's checkpoint is untouched) or after it (the final
    checkpoint is written): the message says so rather than 'nothing was saved'."""
    model = tmp_path / "model.npz"
    assert train("--out", tmp_path, "--num-iters", 20, "--quiet") == 0
    capsys.readouterr()

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    if where == "loading the data":
        monkeypatch.setattr(runs, "load_data", interrupt)
        expected = f"interrupted; {model} is unchanged: continue with --resume {model}"
    else:
        from twolayer_xp.app import plots

        monkeypatch.setattr(plots, "save", interrupt)
        expected = f"interrupted; {model} holds iteration 40: continue with --resume {model}"
    assert train("--resume", model, "--num-iters", 40, "--quiet") == 130
    assert one_error_line(capsys) == f"twolayer-xp: error: {expected}"


def test_sigint_during_training_exits_130_naming_the_checkpoint(tmp_path):
    """A real Ctrl-C (SIGINT) to a running `twolayer-xp train`, once it has a checkpoint."""
    out = tmp_path / "run"
    args = ["--out", str(out), "--num-iters", str(10**6), "--checkpoint-every", "100"]
    with subprocess.Popen([*RUN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        deadline = time.monotonic() + 60
        while not (out / "model.npz").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(2)  # SIGINT
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert stdout == "" and len(lines) == 1 and "Traceback" not in stderr, stderr
    iteration = TwoLayerNet.load(out / "model.npz").iteration
    assert lines[0].startswith(f"twolayer-xp: error: interrupted; {out / 'model.npz'} holds iteration ")
    assert lines[0].endswith(f"iteration {iteration}: continue with --resume {out / 'model.npz'}")


INTERRUPTED_IMPORT = """
import runpy, sys

class CtrlCOnImport:  # Ctrl-C while `twolayer-xp` is still importing numpy
    def find_spec(self, name, path=None, target=None):
        if name == "numpy":
            raise KeyboardInterrupt

sys.meta_path.insert(0, CtrlCOnImport())
sys.argv = ["twolayer-xp", "train", "--out", sys.argv[1]]
runpy.run_module("twolayer_xp", run_name="__main__")
"""


def test_ctrl_c_during_start_up_imports(tmp_path):
    """The package imports lazily, so `python -m twolayer_xp` is inside main's try before numpy
    loads: Ctrl-C there is exit 130 and one line, not a traceback."""
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_IMPORT, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr == "twolayer-xp: error: interrupted before anything was saved\n"
    assert not (tmp_path / "run").exists()


# -- overflow: refused up front, and never a warning on stderr --------------------------------------


@pytest.mark.parametrize(
    "args,code,words",
    [
        (["--std", "1e308"], 2, "std is so large that the initial weights or scores overflow float32"),
        (["--learning-rate", "1e30", "--std", "1.0"], 1, "training diverged"),
    ],
)
def test_overflow_is_one_line_without_runtime_warnings(tmp_path, args, code, words):
    """stderr as a user sees it (pytest would capture the warnings in-process)."""
    done = subprocess.run(
        [*RUN, "--out", str(tmp_path / "run"), *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == code, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and words in done.stderr, done.stderr
    assert "RuntimeWarning" not in done.stderr


def test_final_evaluation_of_overflowing_params_warns_nothing(tmp_path, capsys, train):
    """Finite params whose scores overflow float32 (what a run that diverged slowly can keep):
    the accuracies written at the end are computed without numpy's overflow warnings."""
    assert train("--out", tmp_path, "--num-iters", 20, "--quiet") == 0
    net, arrays = model.load_net(tmp_path / "model.npz")
    big = float(np.finfo(np.float32).max) * 0.9
    net.params["W1"][...] = 0
    net.params["b1"][...] = 0
    net.params["b1"][0] = 1  # one hidden unit on for every input
    net.params["W2"][...] = 0
    net.params["W2"][0] = big  # its scores: big, plus b2 = big: inf
    net.params["b2"][...] = big
    model.save_net(tmp_path / "model.npz", net, arrays=arrays)
    (tmp_path / "metrics.json").unlink()
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train("--resume", tmp_path / "model.npz", "--quiet") == 0
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "completed"


def test_two_runs_finding_the_same_stale_lock_do_not_both_take_it(tmp_path, monkeypatch):
    """B reads the dead run's lock as stale; before B acts, A takes it over. B must then see A's
    live lock and stop (the takeover is guarded), and A's lock must survive B's attempt."""
    lock = tmp_path / files.LOCK_NAME
    lock.write_text("999999999")  # a dead run's pid
    real_owner, taken = files._lock_owner, []

    def owner_while_a_takes_over(path):
        judged = real_owner(path)
        if not taken:  # B has read the stale lock; A runs now (its own checks see the real owner)
            taken.append(None)
            taken[0] = files._take_lock(tmp_path)
        return judged

    monkeypatch.setattr(files, "_lock_owner", owner_while_a_takes_over)
    with pytest.raises(ValueError, match=f"in use by another run \\(pid {os.getpid()}\\)"):
        files._take_lock(tmp_path)  # B
    assert taken == [lock] and json.loads(lock.read_text()) == files.own_record()  # A holds it
    assert not (tmp_path / (files.LOCK_NAME + ".takeover")).exists()


WRITES_TO_STDERR_ON_IMPORT = """
import runpy, sys

class Chatty:  # numpy 2.0.0-2.0.1: f2py, imported with numpy's namespace, writes to sys.stderr
    def find_spec(self, name, path=None, target=None):
        if name == "numpy":
            sys.stderr.write("")
        return None

sys.meta_path.insert(0, Chatty())
sys.argv = ["twolayer-xp", "train", "--num-iters", "5", "--quiet", "--out", sys.argv[1]]
runpy.run_module("twolayer_xp", run_name="__main__")
"""


def test_a_run_with_stderr_closed(tmp_path):
    """`twolayer-xp train 2>&-` exited 1 with no word on numpy 2.0.0-2.0.1: Python starts with
    sys.stderr None, and a library writing to it while it loads failed."""
    done = subprocess.run(
        [sys.executable, "-c", WRITES_TO_STDERR_ON_IMPORT, str(tmp_path / "run")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=120,
        preexec_fn=lambda: os.close(2),
    )  # fmt: skip
    assert done.returncode == 0 and "test accuracy" in done.stdout
    assert (tmp_path / "run" / "model.npz").exists()
