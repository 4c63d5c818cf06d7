"""Hostile files, paths, signals, streams, locks and environments (issue 19, classes 1-4, 8, 10):
real FIFOs, real symlinks, real processes and real signals."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from twolayer_xp import TwoLayerNet
from twolayer_xp.app import runs
from twolayer_xp.io import checkpoint, datasets, files
from twolayer_xp.io.cifar_batches import DataError

RUN = [sys.executable, "-m", "twolayer_xp", "train"]
QUICK = ["--num-iters", "20", "--no-progress"]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
posix_only = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and signals are POSIX")


def run_cli(args, **kwargs):
    kwargs.setdefault("capture_output", True)
    return subprocess.run([*RUN, *map(str, args)], env={**ENV, **kwargs.pop("env", {})}, timeout=60, **kwargs)


def no_hang(seconds=5):
    """Turn a hang into a failure: SIGALRM raises in the test's thread after ``seconds``."""

    def fire(*_):
        raise TimeoutError(f"still running after {seconds} s")

    signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)


@pytest.fixture(autouse=True)
def _cancel_alarm():
    yield
    signal.alarm(0)


# -- 1. a run removes only what it made; an empty path is refused ---------------------------------


def test_a_run_keeps_the_users_tmp_files_and_folders(tmp_path, train, cifar):
    """--out an existing folder that is also --data-dir, holding the user's *.tmp files and a
    *.tmp folder: the run finishes and every one of them is still there, unchanged."""
    cifar.write_cifar(tmp_path)
    (tmp_path / ".notes.tmp").write_text("mine")
    (tmp_path / ".download.tmp").write_text("half a download, mine")
    (tmp_path / ".cache.tmp").mkdir()
    sizes = ["--num-train", "100", "--num-val", "10", "--num-test", "10"]
    assert train("--out", tmp_path, "--dataset", "cifar10", "--data-dir", tmp_path, *sizes, *QUICK) == 0
    assert (tmp_path / ".notes.tmp").read_text() == "mine"
    assert (tmp_path / ".download.tmp").read_text() == "half a download, mine"
    assert (tmp_path / ".cache.tmp").is_dir()


def test_an_empty_out_is_refused(tmp_path, monkeypatch, capsys, train, one_error_line):
    monkeypatch.chdir(tmp_path)
    assert train("--out", "", *QUICK) == 2
    assert "empty path" in one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []  # nothing written into the current folder


def test_an_empty_sweep_out_is_refused():
    pytest.importorskip("optuna")
    from twolayer_xp.app.sweep.config import SweepConfig

    with pytest.raises(ValueError, match="--out is an empty path"):
        SweepConfig(out="")


# -- 2. signals: SIGTERM and SIGHUP as Ctrl-C -------------------------------------------------------


def wait_for(path: Path, process, timeout=30):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@posix_only
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_train_ended_by_a_signal_keeps_its_checkpoint_and_says_how_to_resume(tmp_path, signum):
    out = tmp_path / "run"
    args = [*RUN, "--out", str(out), "--num-iters", "1000000", "--checkpoint-every", "50", "--no-progress"]
    with subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        wait_for(out / "model.npz", p)
        p.send_signal(signum)
        _, stderr = p.communicate(timeout=30)
    assert p.returncode == 128 + signum, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and f"continue with --resume {out / 'model.npz'}" in lines[0], stderr
    # the lock is gone, no temp left; an interrupted run still says what it did (metrics, plot)
    assert sorted(p.name for p in out.iterdir()) == ["history.npz", "loss.png", "metrics.json", "model.npz"]
    assert json.loads((out / "metrics.json").read_text())["status"] == "interrupted"
    assert TwoLayerNet.load(out / "model.npz").iteration % 50 == 0


@posix_only
def test_a_sweep_worker_ended_by_sigterm_exits_143_and_leaves_no_lock(tmp_path):
    pytest.importorskip("optuna")
    out = tmp_path / "sweep"
    args = [sys.executable, "-m", "twolayer_xp", "sweep", "--out", str(out), "--quiet", "--trials", "400"]
    args += ["--population", "2", "--num-iters", "100", "--hidden-size", "16"]
    with subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        wait_for(out / "trials.csv", p, timeout=60)
        p.send_signal(signal.SIGTERM)
        _, stderr = p.communicate(timeout=30)
    assert p.returncode == 143, stderr
    assert "interrupted; study" in stderr and "run the same command to continue" in stderr
    assert not list(out.rglob(files.LOCK_NAME + "*")) and not list(out.rglob(f"*{files.TEMP_SUFFIX}"))


@posix_only
def test_nohup_keeps_sighup_ignored_and_main_restores_the_handlers(train, tmp_path):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)
    assert train("--out", "", *QUICK) == 2
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)) == before
    code = "import signal; from twolayer_xp.app import process; held = process.command(); held.__enter__(); "
    code += "print(signal.getsignal(signal.SIGHUP) == signal.SIG_IGN, signal.getsignal(signal.SIGTERM) is process._raise)"
    done = subprocess.run(["nohup", sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert done.stdout.split() == ["True", "True"], done


def ctrl_c(signum=signal.SIGINT):
    os.kill(os.getpid(), signum)
    time.sleep(0.01)  # the handler runs at the next bytecode


@posix_only
def test_one_more_ctrl_c_while_a_command_stops_waits_for_the_stop_and_the_next_cuts_it(capfd):
    """An impatient second Ctrl-C landed in the stop's clean-up (best/'s save, the storage's
    connections closed, the figure helper asked for its figures) and cut it short; the next one
    after it still can."""
    from twolayer_xp.app import process

    stages = []
    with process.command():
        with pytest.raises(KeyboardInterrupt):
            try:
                ctrl_c()
            finally:  # the stop's clean-up: the second one is noted, not raised
                ctrl_c()
                stages.append("cleaned up")
                ctrl_c()  # the third is raised
                stages.append("never")
        code = process.exit_code()
    assert stages == ["cleaned up"] and code == 130
    assert capfd.readouterr().err.splitlines() == [process.STOPPING_NOTE]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


@posix_only
def test_a_command_stopping_notes_a_signal_after_its_interrupt_was_handled(capfd):
    """Once the run had turned the interrupt into its exit status, a second Ctrl-C (while the
    figure helper was asked for its figures) was raised again and reported as a failure of the
    figure helper; a Ctrl-C then SIGTERM exits 143, the status naming the last signal."""
    from twolayer_xp.app import process

    with process.command():
        try:
            ctrl_c()
        except KeyboardInterrupt:
            pass  # the run's exit status is decided; what follows is the command's way out
        ctrl_c(signal.SIGTERM)  # noted
        with pytest.raises(process.Terminated):
            ctrl_c(signal.SIGTERM)
        code = process.exit_code()
    assert code == 143 and capfd.readouterr().err.splitlines() == [process.STOPPING_NOTE]


@posix_only
def test_every_signal_held_by_a_save_counts(capfd):
    """A Ctrl-C and a SIGTERM held by one save: the first handler raised and the SIGTERM was
    never delivered (exit 130, not 143); three held Ctrl-Cs counted as one, so two more presses
    were needed to cut the stop short."""
    from twolayer_xp.app import process

    with process.command():
        with pytest.raises(KeyboardInterrupt):
            with files.uninterrupted():
                ctrl_c()
                ctrl_c(signal.SIGTERM)
        code = process.exit_code()
    assert code == 143 and capfd.readouterr().err.splitlines() == [process.STOPPING_NOTE]
    with process.command():
        with pytest.raises(KeyboardInterrupt):
            with files.uninterrupted():
                for _ in range(3):
                    ctrl_c()
        assert process.cut_short()  # stopped, noted, cut: all three counted


@posix_only
def test_signals_after_the_one_that_cut_the_stop_short_only_count(capfd):
    """A burst of Ctrl-Cs: each one after the third was raised wherever the way out had got to,
    and the command printed contradictory lines (and once a traceback from a weakref callback)."""
    from twolayer_xp.app import process

    with process.command():
        for stage in ("stops", "noted", "cuts"):
            try:
                ctrl_c()
            except KeyboardInterrupt:
                assert stage != "noted"
            else:
                assert stage == "noted"
        ctrl_c(signal.SIGTERM)  # only counts
        ctrl_c()
        code = process.exit_code()
    assert code == 130 and process.cut_short()
    assert capfd.readouterr().err.splitlines() == [process.STOPPING_NOTE]


@posix_only
def test_a_ctrl_c_that_lands_in_a_weakref_callback_still_stops_the_command(capfd):
    """Python cannot raise out of a weakref callback (SQLAlchemy's pool has them): a Ctrl-C
    landing in one was printed as "Exception ignored in ..." and the sweep ran on to its end
    (1 in 30-100 tries), and the next Ctrl-C was then taken for an impatient second one."""
    import weakref

    from twolayer_xp.app import process

    class Pooled:
        pass

    with process.command():
        with pytest.raises(KeyboardInterrupt):
            pooled = Pooled()
            watch = weakref.ref(pooled, lambda _: ctrl_c())  # noqa: F841 - its callback is the point
            del pooled  # the callback runs here, and the signal's handler with it
            time.sleep(0.05)
        code = process.exit_code()
    assert code == 130 and "Exception ignored" not in capfd.readouterr().err


@posix_only
def test_the_clis_own_run_ignores_signals_after_its_stop_until_it_exits():
    """A second Ctrl-C right after an interrupted sweep's last line met Python's default handler
    while the interpreter exited, and the process died of it (status -2, not 130). A caller of
    ``cli.main([...])`` gets its handlers back as they were."""
    from twolayer_xp.app import process

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for final, after in ((False, before[signal.SIGINT]), (True, signal.SIG_IGN)):
            with process.command(final=final):
                try:
                    ctrl_c()
                except KeyboardInterrupt:
                    pass
            assert signal.getsignal(signal.SIGINT) == after and signal.getsignal(signal.SIGTERM) == (
                signal.SIG_IGN if final else before[signal.SIGTERM]
            )
        for signum, handler in before.items():
            signal.signal(signum, handler)
        with process.command(final=True):  # not stopped: its handlers are put back
            pass
        assert {s: signal.getsignal(s) for s in before} == before
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


@posix_only
def test_a_commands_first_ctrl_c_stops_it_whatever_its_caller_is_handling():
    """A caller inside its own ``except KeyboardInterrupt`` (a notebook, a test) ran a command
    whose first Ctrl-C was only noted: the stop was judged from the caller's exception."""
    from twolayer_xp.app import process

    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        with process.command(), pytest.raises(KeyboardInterrupt):
            ctrl_c()


@posix_only
def test_signals_held_by_a_save_while_a_command_stops_are_each_delivered(capfd):
    """Two Ctrl-Cs held by a save while the command stopped were delivered as one, which was
    only noted: the promised 'Ctrl-C again quits at once' did not."""
    from twolayer_xp.app import process

    with process.command():
        try:
            ctrl_c()
        except KeyboardInterrupt:
            with pytest.raises(KeyboardInterrupt):
                with files.uninterrupted():
                    ctrl_c()
                    ctrl_c()
    assert capfd.readouterr().err.splitlines() == [process.STOPPING_NOTE]


@posix_only
def test_a_second_ctrl_c_while_a_sweep_closes_its_storage_prints_no_traceback(
    tmp_path, capfd, caplog, monkeypatch
):
    """It landed in SQLAlchemy's close of a connection, which logged its traceback ("Exception
    closing connection ...", printed before the interrupted line) and left the connection open,
    so study.db kept its write-ahead log beside it."""
    pytest.importorskip("optuna")
    from sqlalchemy.engine import default

    from twolayer_xp.app import process
    from twolayer_xp.app.sweep import worker

    real_close = default.DefaultDialect.do_close

    def ctrl_c_then_close(dialect, connection):
        ctrl_c()
        real_close(dialect, connection)
        closed.append(connection)

    closed = []

    def interrupted_train(*args):
        monkeypatch.setattr(default.DefaultDialect, "do_close", ctrl_c_then_close)
        ctrl_c()

    monkeypatch.setattr(worker.Worker, "train", interrupted_train)
    assert sweep(tmp_path / "out") == 130
    err = capfd.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 2 and lines[0] == process.STOPPING_NOTE, err
    assert lines[1].startswith("twolayer-xp: interrupted; study A keeps every told trial"), err
    assert closed and not any("Exception closing" in r.getMessage() for r in caplog.records)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["study.db", "study.json"]


class SignalOnFirstWrite:
    """A binary file that sends this process ``signum`` during its first write: a signal landing
    inside numpy's zip writer, where a run's checkpoint save is interrupted."""

    def __init__(self, f, signum):
        self.f, self.signum, self.sent = f, signum, False

    def write(self, data):
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)
            time.sleep(0.01)  # the handler runs at the next bytecode: here, mid-write
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


@posix_only
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_a_save_waits_for_the_file_then_interrupts(tmp_path, signum):
    """Before, the save was abandoned halfway, and where the signal landed inside numpy's zip
    writer, zipfile's "Can't close the ZIP file" ValueError hid it (exit 2, seen in CI). Now the
    write finishes, then the handler that was there runs."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signum, interrupt)
    try:
        path = tmp_path / "a.npz"
        with pytest.raises(KeyboardInterrupt, match=signal.Signals(signum).name):
            files.atomic_write(path, lambda f: np.savez(SignalOnFirstWrite(f, signum), a=np.arange(1000)))
        assert signal.getsignal(signum) is interrupt  # the handler is back
    finally:
        signal.signal(signum, previous)
    np.testing.assert_array_equal(np.load(path)["a"], np.arange(1000))  # whole, and in place
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]  # no temp left


@posix_only
def test_a_signal_held_while_a_write_fails_is_still_delivered(tmp_path):
    def fail(f):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        raise OSError("disk full")

    with pytest.raises(KeyboardInterrupt) as caught:
        files.atomic_write(tmp_path / "a.json", fail)
    assert isinstance(caught.value.__context__, OSError)  # the failure travels with it
    assert list(tmp_path.iterdir()) == []


@posix_only
def test_a_signal_while_the_handlers_are_put_back_leaves_every_handler_back(monkeypatch):
    """Ctrl-C landing just after SIGINT's handler is restored, before the others are: before,
    SIGTERM kept the deferring handler (SIGTERM then did nothing) and every later block was a
    no-op; now the signals wait while the handlers are swapped, and each is put back."""
    real = signal.signal
    restoring = []

    def signal_then_ctrl_c(signum, handler):
        previous = real(signum, handler)
        if restoring and signum == signal.SIGINT:
            os.kill(os.getpid(), signal.SIGINT)
        return previous

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with pytest.raises(KeyboardInterrupt):
        with files.uninterrupted():
            monkeypatch.setattr(signal, "signal", signal_then_ctrl_c)
            restoring.append(True)
    monkeypatch.undo()
    assert {s: signal.getsignal(s) for s in before} == before
    assert files._held is None


def test_outside_the_main_thread_a_save_leaves_the_handlers_alone(tmp_path):
    import threading

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    seen = []

    def write(f):
        seen.append({s: signal.getsignal(s) for s in before})
        f.write(b"x")

    worker = threading.Thread(target=files.atomic_write, args=(tmp_path / "a", write))
    worker.start()
    worker.join()
    assert seen == [before] and (tmp_path / "a").read_bytes() == b"x"


# -- 2. output streams: the terminal never fails a finished run -----------------------------------

STREAMS = {
    "stdout-full": ("{run} > /dev/full", []),
    "stdout-closed-pipe": ("{run} | head -c 0", []),
    "stderr-full-bar": ("{run} 2> /dev/full", ["--num-iters", "20"]),
    "stderr-closed-bar": ("{run} 2>&-", ["--num-iters", "20"]),
    "stdout-closed": ("{run} >&-", []),
}


@posix_only
@pytest.mark.parametrize("case", sorted(STREAMS))
def test_a_finished_run_exits_0_whatever_its_streams(tmp_path, case):
    shell, extra = STREAMS[case]
    out = tmp_path / "run"
    command = " ".join(map(str, [*RUN, "--out", out, *(extra or QUICK)]))
    done = subprocess.run(
        ["bash", "-c", shell.format(run=command) + "; exit ${PIPESTATUS[0]}"], env=ENV, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    assert b"Traceback" not in done.stderr and b"Exception ignored" not in done.stderr, done.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(runs.OUTPUTS)


@posix_only
@pytest.mark.parametrize("encoding", ["ascii", "utf-8:strict"])
def test_a_path_the_terminal_cannot_encode_is_printed_with_escapes(tmp_path, encoding):
    out = os.fsencode(tmp_path) + b"/run-\xff\xe9"  # not UTF-8
    done = subprocess.run(
        [*map(os.fsencode, RUN), b"--out", out, *map(os.fsencode, QUICK)],
        env={**ENV, "PYTHONIOENCODING": encoding},
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode("ascii").rstrip().endswith("run-\\udcff\\udce9")
    assert sorted(map(os.fsdecode, os.listdir(out))) == sorted(runs.OUTPUTS)


# -- 3. special files and paths ---------------------------------------------------------------------


def special(tmp_path, kind) -> Path:
    """A path that is a FIFO, a link to /dev/zero or /dev/urandom, or a folder."""
    path = tmp_path / f"special-{kind}"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        path.symlink_to(f"/dev/{kind}")
    return path


SPECIAL = {"fifo": "FIFO", "zero": "character device", "urandom": "character device", "folder": "directory"}


@posix_only
@pytest.mark.parametrize("kind", sorted(SPECIAL))
def test_a_cifar_archive_that_is_not_a_regular_file_is_refused_at_once(tmp_path, kind, monkeypatch):
    monkeypatch.setattr(datasets, "_download", lambda archive: pytest.fail("tried to download over it"))
    special(tmp_path, kind).rename(tmp_path / datasets.CIFAR10_ARCHIVE)
    no_hang()
    with pytest.raises(DataError, match=SPECIAL[kind]):
        datasets.find_or_fetch_cifar10(tmp_path)
    assert os.path.lexists(tmp_path / datasets.CIFAR10_ARCHIVE)  # still the user's, untouched


@posix_only
@pytest.mark.parametrize("kind", ["fifo", "zero", "folder"])
def test_a_cifar_batch_that_is_not_a_regular_file_is_refused(tmp_path, kind, cifar):
    folder = cifar.write_cifar(tmp_path)
    (folder / "data_batch_2").unlink()
    special(tmp_path, kind).rename(folder / "data_batch_2")
    no_hang()
    with pytest.raises(DataError, match=f"data_batch_2 is an? {SPECIAL[kind]}"):
        datasets.load_cifar10(tmp_path, num_train=100, num_val=10, num_test=10)


@posix_only
@pytest.mark.parametrize("kind", sorted(SPECIAL))
def test_a_checkpoint_that_is_not_a_regular_file_is_named_for_what_it_is(tmp_path, kind, capsys, train):
    path = special(tmp_path, kind)
    no_hang()
    with pytest.raises(checkpoint.CheckpointError, match=SPECIAL[kind]):
        TwoLayerNet.load(path)
    assert train("--resume", path, "--out", tmp_path / "out", *QUICK) == 2
    err = capsys.readouterr().err
    assert SPECIAL[kind] in err and "does not exist" not in err


def test_a_checkpoint_larger_than_any_net_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "huge.npz"
    with open(path, "wb") as f:
        f.truncate(checkpoint.MAX_FILE_BYTES + 1)  # sparse: no disk used
    with pytest.raises(checkpoint.CheckpointError, match="bytes; at most"):
        TwoLayerNet.load(path)


@pytest.mark.parametrize(
    "dataset,where",
    [("cifar10", "--data-dir"), ("cifar10", "TWOLAYER_XP_DATA"), ("mnist", "--data-dir"),
     ("fashion-mnist", "TWOLAYER_XP_DATA"), ("~nosuchuser-xyz/my.csv", "--dataset")],
)  # fmt: skip
def test_a_path_whose_tilde_cannot_be_expanded_is_one_line_naming_it(
    dataset, where, monkeypatch, capsys, tmp_path, train
):
    args = ["--dataset", dataset, "--out", tmp_path / "out", *QUICK]
    if where == "--data-dir":
        args += ["--data-dir", "~nosuchuser-xyz/data"]
    elif where == "TWOLAYER_XP_DATA":
        monkeypatch.setenv("TWOLAYER_XP_DATA", "~nosuchuser-xyz/data")
    assert train(*args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nosuchuser-xyz" in err and where in err, err
    assert not (tmp_path / "out").exists()


def test_no_home_and_no_passwd_entry_is_one_line(monkeypatch, capsys, tmp_path, train):
    import pwd

    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    for name in ("HOME", "TWOLAYER_XP_DATA", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    assert train("--dataset", "cifar10", "--out", tmp_path / "out", *QUICK) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "HOME is unset" in err and "TWOLAYER_XP_DATA" in err


# -- 4. locks ---------------------------------------------------------------------------------------


def test_a_lock_whose_pid_now_names_another_process_is_stale(tmp_path):
    """A run's lock, left by its crash, whose pid now names an unrelated live process (the pid
    was reused): the folder is free, not blocked forever."""
    lock = files._take_lock(tmp_path)  # the lock as a run writes it; that run then dies
    text = lock.read_text()
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as unrelated:
        if text.startswith("{"):
            lock.write_text(json.dumps({**json.loads(text), "pid": unrelated.pid}))
        else:  # a bare pid
            lock.write_text(str(unrelated.pid))
        try:
            with files.claim_folder(tmp_path, False, runs.OUTPUTS):
                assert json.loads(lock.read_text())["pid"] == os.getpid()
        finally:
            unrelated.kill()
    assert not lock.exists()


def test_a_live_lock_names_its_file_and_how_to_clear_it(tmp_path):
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive:
        record = {
            "pid": alive.pid,
            "started": files.process_start(alive.pid),
            "host": files.own_record()["host"],
        }
        (tmp_path / files.LOCK_NAME).write_text(json.dumps(record))
        try:
            with pytest.raises(ValueError) as refused:
                with files.claim_folder(tmp_path, False, runs.OUTPUTS):
                    pass
        finally:
            alive.kill()
    message = str(refused.value)
    assert f"(pid {alive.pid})" in message and f"delete {tmp_path / files.LOCK_NAME}" in message


def test_a_lock_of_another_host_is_respected_and_named(tmp_path):
    (tmp_path / files.LOCK_NAME).write_text(json.dumps({"pid": 1, "started": "5", "host": "elsewhere"}))
    with pytest.raises(ValueError, match="pid 1 on host elsewhere"):
        with files.claim_folder(tmp_path, False, runs.OUTPUTS):
            pass


def test_a_lock_path_that_is_a_folder_is_reported_as_such(tmp_path):
    (tmp_path / files.LOCK_NAME).mkdir()
    with pytest.raises(ValueError, match="is a directory") as refused:
        with files.claim_folder(tmp_path, False, runs.OUTPUTS):
            pass
    assert "in use by another run" not in str(refused.value)
    assert (tmp_path / files.LOCK_NAME).is_dir()  # not ours to remove


def test_a_waiting_lock_waits_for_its_holder(tmp_path):
    code = (
        "import sys, time; from pathlib import Path; from twolayer_xp.io import files\n"
        "with files.locked(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(1.0)"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    ) as holder:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(ValueError, match="in use"):
            with files.locked(tmp_path):
                pass
        start = time.monotonic()
        with files.locked(tmp_path, wait_s=30):
            assert time.monotonic() - start > 0.1  # it waited for the holder
    assert not (tmp_path / files.LOCK_NAME).exists()


# -- 8. best/ is one unit; an --out belongs to one study -------------------------------------------


def test_files_written_together_appear_together_or_not_at_all(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    files.write_json(a, {"v": "old"})
    files.write_json(b, {"v": "old"})

    def disk_full(f):
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError), files.together():
        files.write_json(a, {"v": "new"})
        assert json.loads(a.read_text()) == {"v": "old"}  # not yet: the unit is not complete
        files.atomic_write(b, disk_full)
    assert json.loads(a.read_text()) == json.loads(b.read_text()) == {"v": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
    with files.together():
        files.write_json(a, {"v": "new"})
        files.write_json(b, {"v": "new"})
    assert json.loads(a.read_text()) == json.loads(b.read_text()) == {"v": "new"}


@pytest.fixture
def best_saver(tmp_path):
    """save(trial_number, val) -> report.save_best of a tiny net as that trial."""
    pytest.importorskip("optuna")
    from types import SimpleNamespace

    from twolayer_xp.app.sweep import report
    from twolayer_xp.io.datasets import Dataset

    X, y = np.zeros((1, 4), np.float32), np.zeros(1, np.int64)
    ds = Dataset(
        "tiny", X, y, X, y, X, y, mean_image=np.zeros(4, np.float32), image_shape=None, class_names=["a", "b"]
    )
    config = SimpleNamespace(study="s", storage="sqlite:///x.db", search={}, seed=0)

    def save(number, val):
        net = TwoLayerNet(4, 3, 2, rng=number)
        trial = SimpleNamespace(number=number, params={"learning_rate": 0.1, "reg": 0.0}, user_attrs={})
        accuracy = {"val": val, "train_eval": val, "test": val}
        report.save_best(tmp_path, net, trial, accuracy, config, ds)

    return save


def test_a_failed_metrics_write_leaves_the_previous_best_whole(tmp_path, best_saver, monkeypatch):
    best_saver(0, 0.5)
    real_write_json = files.write_json

    def full_disk(path, data):
        if Path(path).name == "metrics.json":
            raise OSError(28, "No space left on device")
        real_write_json(path, data)

    monkeypatch.setattr(files, "write_json", full_disk)
    with pytest.raises(OSError):
        best_saver(3, 0.9)
    metrics = json.loads((tmp_path / "best" / "metrics.json").read_text())
    model = TwoLayerNet.load(tmp_path / "best" / "model.npz")
    assert metrics["trial"] == model.metadata["sweep"]["trial"] == 0
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == ["metrics.json", "model.npz"]


@pytest.mark.parametrize(
    "content", ["{not json", '{"trial": 2}', "[1, 2]", '{"val_accuracy": "x", "trial": 1}']
)
def test_an_unreadable_previous_best_is_absent_with_a_warning(tmp_path, best_saver, content):
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "metrics.json").write_text(content)
    with pytest.warns(RuntimeWarning, match="metrics.json is unreadable .* treated as absent"):
        best_saver(4, 0.7)
    assert json.loads((tmp_path / "best" / "metrics.json").read_text())["trial"] == 4
    assert not (tmp_path / "best" / files.LOCK_NAME).exists()


def sweep(out, *args, study="A"):
    from twolayer_xp.app import cli

    return cli.main(
        ["sweep", "--out", str(out), "--study", study, "--quiet", "--trials", "2", "--population", "2"]
        + ["--num-iters", "30", "--hidden-size", "8", *map(str, args)]
    )


def test_an_out_belongs_to_one_study(tmp_path, capsys, one_error_line):
    pytest.importorskip("optuna")
    assert sweep(tmp_path, study="A") == 0
    assert not list(tmp_path.rglob(files.LOCK_NAME + "*"))  # no sweep leaves a lock behind
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert sweep(tmp_path, study="B") == 2
    line = one_error_line(capsys)
    assert "'A'" in line and "'B'" in line and "another --out" in line
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_an_out_is_not_taken_by_a_namesake_study_in_another_storage(
    tmp_path, capsys, one_error_line, monkeypatch
):
    """A study's name is unique only within its storage: `sweep` then `sweep --storage
    postgresql://...` (the default --out and study name both times) made the second study's
    trials.csv and best/ replace the first's in the same folder. The folder's study is now
    named by an id stored in the study; the same study from another URL spelling still joins."""
    pytest.importorskip("optuna")
    one, two = tmp_path / "one", tmp_path / "two"
    assert sweep(one) == 0 and sweep(two) == 0
    before = {p: p.read_bytes() for p in one.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert sweep(one, "--storage", f"sqlite:///{two / 'study.db'}", "--trials", 4) == 2
    line = one_error_line(capsys)
    assert f"sqlite:///{two / 'study.db'} holds another study of that name" in line
    assert line.endswith(f"or continue that one with --storage sqlite:///{one / 'study.db'}")
    assert {p: p.read_bytes() for p in one.rglob("*") if p.is_file()} == before
    # the advice works, and so does the folder's own study.db named from elsewhere
    monkeypatch.chdir(tmp_path)
    assert sweep(one, "--storage", "sqlite:///one/study.db", "--trials", 3) == 0
    # a mark from before ids: its storage URL as written names its study, and so does the
    # folder's own study.db however the --out is written (relative then, absolute now)
    mark = json.loads((two / "study.json").read_text())
    (two / "study.json").write_text(json.dumps({k: v for k, v in mark.items() if k != "id"}))
    assert sweep(two, "--trials", 3) == 0
    assert json.loads((two / "study.json").read_text()) == mark  # and it gets the id
    old_mark = {"study": "A", "storage": "sqlite:///two/study.db"}
    (two / "study.json").write_text(json.dumps(old_mark))
    assert sweep(two, "--trials", 3) == 0  # (the default storage: sqlite:///<absolute two>/study.db)
    assert json.loads((two / "study.json").read_text())["id"] == mark["id"]
    capsys.readouterr()
    assert sweep(one, "--storage", f"sqlite:///{two / 'study.db'}", "--trials", 4) == 2
    one_error_line(capsys)
    # a storage without the study: refused before one is made there (a refused run made it, with
    # this run's search, so a later sweep there with other flags was refused for a study never run)
    three = f"sqlite:///{tmp_path / 'three.db'}"
    assert sweep(one, "--storage", three) == 2
    assert f"{three} holds no study of that name: choose another --out" in one_error_line(capsys)
    import optuna

    assert optuna.get_all_study_names(three) == []
    # the study deleted (and made anew) in the same storage: said so, not "another storage"
    (one / "study.db").unlink()
    assert sweep(one) == 2
    since = f"holds the results of an earlier study 'A' in sqlite:///{one / 'study.db'}, since "
    assert one_error_line(capsys).endswith(
        since + "deleted there: choose another --out, or move those results away"
    )
    assert optuna.get_all_study_names(f"sqlite:///{one / 'study.db'}") == []
    assert sweep(tmp_path / "four", "--storage", f"sqlite:///{one / 'study.db'}") == 0
    assert sweep(one) == 2
    assert one_error_line(capsys).endswith(
        since + "made anew there (another id): choose another --out, or move those results away"
    )


def test_the_out_check_reads_the_study_id_under_the_folders_lock(tmp_path, monkeypatch):
    """Workers share an --out: one marks it only once its study and id are stored, under the
    folder's lock. A worker that read the storage's id before taking the lock could find no
    study there, then the partner's fresh mark, and be refused for a "deleted" study; the id is
    read under the lock, after the mark. (A folder without a mark needs no read at all.)"""
    pytest.importorskip("optuna")
    from twolayer_xp.app.sweep import run_sweep, worker

    options = dict(
        out=str(tmp_path / "out"), storage=f"sqlite:///{tmp_path / 'study.db'}", study="A", trials=2,
        population=2, num_iters=30, hidden_size=8,
    )  # fmt: skip
    read, held = worker.stored_id, []

    def read_under_the_lock(*args):
        with pytest.raises(files.FolderBusy):  # ours: nobody else can mark the folder meanwhile
            with files.locked(tmp_path / "out"):
                pass
        held.append(True)
        return read(*args)

    monkeypatch.setattr(worker, "stored_id", read_under_the_lock)
    run_sweep(**options)
    assert held == []  # a new folder: nothing to compare
    run_sweep(**{**options, "trials": 3})
    assert held == [True]


@pytest.mark.parametrize(
    "where, said",
    [
        ("app.runs:load_data", " before this worker joined study A: run the same command to start it again"),
        (
            "app.sweep.study:_created",
            " before this worker joined study A: run the same command to start it again",
        ),
        (
            "app.sweep.worker:Worker.claim",
            "; study A keeps every told trial (running ones are re-run after a",
        ),
    ],
    ids=["loading", "opening", "working"],
)
def test_an_interrupted_sweep_says_what_the_study_keeps_only_once_there_is_one(
    tmp_path, capsys, monkeypatch, where, said
):
    """Ctrl-C while the data loaded said "study A keeps every told trial" of a study that did
    not exist yet."""
    pytest.importorskip("optuna")
    import importlib

    module, name = where.split(":")
    owner = importlib.import_module(f"twolayer_xp.{module}")
    *path, attr = name.split(".")
    for part in path:
        owner = getattr(owner, part)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(owner, attr, interrupt)
    assert sweep(tmp_path / "out") == 130
    assert capsys.readouterr().err.startswith(f"twolayer-xp: interrupted{said}")


def test_a_sweep_removes_the_temp_files_a_killed_worker_left(tmp_path):
    """A worker killed inside a write leaves its temp file (in --out: study.json's, trials.csv's;
    in best/: the model's). The next worker removes those old enough to be nobody's live write;
    workers sharing the folder write trials.csv outside its lock, so a fresh one stays."""
    pytest.importorskip("optuna")
    from twolayer_xp.app.sweep import report

    assert sweep(tmp_path) == 0
    old = [
        tmp_path / f".trials.csv.x1{files.TEMP_SUFFIX}",
        tmp_path / "best" / f".model.npz.x2{files.TEMP_SUFFIX}",
    ]
    fresh = tmp_path / f".trials.csv.x3{files.TEMP_SUFFIX}"
    for path in (*old, fresh):
        path.write_bytes(b"half")
    past = time.time() - report.STALE_TEMP_S - 1
    for path in old:
        os.utime(path, (past, past))
    assert sweep(tmp_path, "--trials", 3) == 0
    assert not any(path.exists() for path in old) and fresh.exists()


def test_resuming_a_sweeps_best_model_says_how_to_train_its_settings(tmp_path, capsys, one_error_line):
    """`train --resume best/model.npz` said the file "was not written by a twolayer-xp run" (a
    sweep wrote it); it now names the trial and the train command of its settings, which runs."""
    pytest.importorskip("optuna")
    from twolayer_xp.app import cli, runs

    assert sweep(tmp_path / "sw", "--lr-decay", "0.9,0.95", "--num-iters", "20,30") == 0
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(tmp_path / "sw" / "best" / "model.npz"), "--quiet"]) == 2
    line = one_error_line(capsys)
    assert "is a sweep's best model (trial #" in line and "of study 'A'" in line
    command = line.split("train its settings afresh: twolayer-xp ")[1].split()
    assert {"--hidden-size", "--learning-rate-decay", "--num-iters", "--dataset"} <= set(command)
    assert cli.main([*command, "--out", str(tmp_path / "again"), "--quiet"]) == 0
    # a trial of a searched --epochs: its num_iters is the budget, and train takes one of the two
    searched_epochs = {"sweep": {"trial": 3}, "hyperparameters": {"epochs": 3, "num_iters": 39}}
    assert "--epochs" not in runs._not_a_run(searched_epochs)
    # a CSV's label column, the dtype, and a path with a space, as a shell reads them
    own = {"search": {"dataset": "my data.csv", "label_column": "species"}, "dtype": "float64"}
    said = runs._not_a_run({"sweep": own, "hyperparameters": {"hidden_size": 8}})
    assert said.endswith(
        "twolayer-xp train --dataset 'my data.csv' --label-column species --dtype float64 --hidden-size 8"
    )


def test_provenance_masks_a_storage_password():
    """A sweep's best/ records its command line: `--storage postgresql://user:pw@host/db` wrote
    the password into metrics.json and the model's header (the storage field beside it masked)."""
    from twolayer_xp.app import provenance

    argv = [
        "twolayer-xp",
        "sweep",
        "--storage",
        "postgresql+psycopg://me:p%40ss@db:5432/s",
        "--storage=mysql://u:pw@h/d",
    ]
    command = provenance.collect(argv=argv)["command"]
    assert "p%40ss" not in command and ":pw@" not in command
    assert "postgresql+psycopg://me:***@db:5432/s" in command and "mysql://u:***@h/d" in command
    assert provenance.collect(argv=["twolayer-xp", "--out", "a:b@c"])["command"].endswith("a:b@c")


def test_provenance_reads_the_libraries_and_the_clone_once_per_process(monkeypatch):
    """A sweep records provenance with every best it saves; the library versions (~20 ms) and
    git's commit (~5 ms, two subprocesses) were read afresh each time, though they are those of
    the code this process loaded."""
    from importlib import metadata

    from twolayer_xp.app import provenance

    reads = []
    real_version, real_git = metadata.version, provenance._git
    monkeypatch.setattr(metadata, "version", lambda name: reads.append(name) or real_version(name))
    monkeypatch.setattr(provenance, "_git", lambda *args: reads.append(args) or real_git(*args))
    provenance.libraries.cache_clear()
    provenance.git_commit.cache_clear()
    first = provenance.collect(argv=["twolayer-xp"])
    assert len(reads) >= len(provenance.LIBRARIES)  # read once: the first time
    reads.clear()
    assert provenance.collect(argv=["twolayer-xp"]) == first and reads == []
    first["libraries"]["numpy"] = "changed by a caller"  # a caller's record is its own
    assert provenance.collect(argv=["twolayer-xp"])["libraries"]["numpy"] != "changed by a caller"


def test_the_progress_bar_of_a_study_past_its_trials_starts_full():
    """A study holding more results than --trials asks: the bar started at its count (8 of 2)
    and was moved back to 2, showing a negative rate. A waiting bar says what it waits for."""
    from twolayer_xp.app.sweep import SweepConfig, report

    with report.TrialsBar(SweepConfig(trials=2), enabled=True) as bar:
        bar.show(8, None)
        assert (bar.bar.initial, bar.bar.n, bar.bar.total) == (2, 2, 2)
        # a bar standing still says why (it said nothing for the 3 heartbeats of a killed worker)
        bar.waiting(3, 30.0)
        assert "waiting for 3 trial(s) running elsewhere" in bar.bar.postfix and "30 s" in bar.bar.postfix
        bar.show(2, None)  # moving again: the note goes
        assert not bar.bar.postfix


# -- carried over: a failed sweep leaves no debris ------------------------------------------------


def test_a_sweep_whose_storage_cannot_be_opened_leaves_no_out(tmp_path, capsys):
    pytest.importorskip("optuna")
    out = tmp_path / "new" / "sweep"
    assert sweep(out, "--storage", f"sqlite:///{tmp_path}/no/such/folder/study.db") == 2
    assert not (tmp_path / "new").exists()


def test_a_sweep_on_a_missing_device_creates_nothing(tmp_path, capsys):
    pytest.importorskip("optuna")
    if sys.modules.get("cupy") is not None or __import__("importlib").util.find_spec("cupy"):
        pytest.skip("CuPy is installed here")
    out = tmp_path / "sweep"
    assert sweep(out, "--device", "cuda") == 2
    assert not out.exists()


# -- 10. environment --------------------------------------------------------------------------------


@posix_only
def test_a_small_address_space_fails_fast_with_one_line(tmp_path):
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (256000 * 1024, resource.RLIM_INFINITY))

    start = time.monotonic()
    done = run_cli(["--out", tmp_path / "run", *QUICK], preexec_fn=limit, text=True)
    assert done.returncode == 2 and time.monotonic() - start < 30, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "ulimit -v" in lines[0], done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "env", [{"MPLBACKEND": "nonexistent"}, {"SOURCE_DATE_EPOCH": "abc"}, {"TZ": "Garbage/Nowhere+99:99"}]
)
def test_a_broken_plotting_environment_is_a_warning_beside_a_finished_run(tmp_path, env):
    done = run_cli(["--out", tmp_path / "run", *QUICK], env=env, text=True)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and all(
        line.startswith("twolayer-xp: warning:") for line in done.stderr.splitlines()
    ), done.stderr
    assert {"model.npz", "metrics.json"} <= set(os.listdir(tmp_path / "run"))


def test_a_librarys_deprecation_notes_are_not_the_users_warnings(capsys):
    """matplotlib before 3.10.7 with pyparsing 3.3 printed nine 'twolayer-xp: warning:
    'parseString' deprecated' lines on every sweep: notes for matplotlib's developers."""
    import warnings

    from twolayer_xp.app import process

    with process.command():
        warnings.warn("'parseString' deprecated", DeprecationWarning, stacklevel=1)
        warnings.warn("soon", PendingDeprecationWarning, stacklevel=1)
        warnings.warn("d.npz has no test split", UserWarning, stacklevel=1)
    assert capsys.readouterr().err == "twolayer-xp: warning: d.npz has no test split\n"
