"""twolayer-xp sweep: workers sharing one Optuna study (SQLite, PostgreSQL), killed workers,
search quality, and bad input. Real Optuna, real databases, real worker processes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

optuna = pytest.importorskip("optuna", reason="the sweep extra (optuna) is not installed")

from twolayer_xp import TwoLayerNet  # noqa: E402
from twolayer_xp.app import cli  # noqa: E402
from twolayer_xp.app.sweep import run_sweep  # noqa: E402
from twolayer_xp.app.sweep.pruning import DEFAULT_PRUNER, PRUNERS  # noqa: E402
from twolayer_xp.app.sweep.report import RESULTS, count_results, outcome  # noqa: E402
from twolayer_xp.io import datasets as data  # noqa: E402

import postgres  # noqa: E402

# Two workers share the 2 cores: one BLAS thread each (more threads on a busy box are slower).
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SMALL = ["--num-iters", "150", "--hidden-size", "32"]


def worker(out, *args):
    command = [sys.executable, "-m", "twolayer_xp", "sweep", "--out", str(out), "--heartbeat", "1", "--quiet"]
    command += list(map(str, args))
    return subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process, timeout=120):
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr
    assert len(stdout.strip().splitlines()) == 1 and "results" in stdout, stdout
    return stdout


def study_trials(storage, name="twolayer-xp-digits"):
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def check_results(trials, expected):
    """Exactly ``expected`` results, one per slot, no configuration run twice."""
    results = [t for t in trials if outcome(t) in RESULTS]
    assert len(results) == expected
    assert sorted(t.user_attrs["worker"]["slot"] for t in results) == list(range(expected))
    params = [(t.params["learning_rate"], t.params["reg"]) for t in results]
    assert len(set(params)) == expected
    assert not [t for t in trials if outcome(t) in ("running", "waiting")]
    return results


def best_completed(trials):
    """The study's best as a sweep picks it: a completed trial (a pruned one's value is its
    accuracy when it stopped, a diverged one has none), the earliest of the highest accuracy."""
    return max((t for t in trials if outcome(t) == "completed"), key=lambda t: (t.value, -t.number))


def check_csv(out, trials):
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [int(r["number"]) for r in rows] == [t.number for t in trials]
    assert [r["outcome"] for r in rows] == [outcome(t) for t in trials]
    return rows


def two_workers(tmp_path, storage, *args):
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    workers = [worker(out, "--storage", storage, *SMALL, *args) for out in (out_a, out_b)]
    for w in workers:
        finish(w)
    trials = study_trials(storage)
    # Each worker's trials.csv lists the whole study as it was at the worker's end: the last one
    # written, the final study; the other, every result (a trial the other worker asked after
    # the study was full may show there as running, or be missing, before it was turned away).
    first, last = sorted((out_a, out_b), key=lambda out: (out / "trials.csv").stat().st_mtime_ns)
    check_csv(last, trials)
    rows = {int(r["number"]): r["outcome"] for r in csv.DictReader((first / "trials.csv").open())}
    assert {n: o for n, o in rows.items() if o in RESULTS} == {
        t.number: outcome(t) for t in trials if outcome(t) in RESULTS
    }
    return trials


def test_two_workers_sqlite_cover_a_grid_exactly_once(tmp_path):
    """Exactly --trials results, each grid point once, both workers taking part. (The slots are
    the same for every sampler; the PostgreSQL test below runs TPE.)"""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    lrs, regs = [0.1, 0.3, 1.0, 3.0], [1e-5, 1e-4, 1e-3, 1e-2]
    grid = ["--sampler", "grid", "--grid-lr", ",".join(map(str, lrs)), "--grid-reg", ",".join(map(str, regs))]
    # enough work that a worker cannot finish the study while the other is still starting up
    trials = two_workers(tmp_path, storage, *grid, "--trials", 16, "--population", 1, "--num-iters", 1500)
    results = check_results(trials, 16)
    assert {(t.params["learning_rate"], t.params["reg"]) for t in results} == {
        (a, b) for a in lrs for b in regs
    }
    assert len({t.user_attrs["worker"]["pid"] for t in results}) == 2  # both workers took part


@pytest.mark.skipif(postgres.binaries() is None, reason="PostgreSQL's initdb and pg_ctl are not installed")
def test_two_workers_postgresql(tmp_path):
    """With the median pruner: six good trials, then six hopeless ones, queued.
    When a hopeless one starts, at least five good ones are complete, so it is pruned at its
    first report (epoch 12 of 115), once, and counts as a result."""
    from twolayer_xp.app.sweep import SweepConfig
    from twolayer_xp.app.sweep.study import open_storage, open_study

    with postgres.server() as url:
        config = SweepConfig(
            storage=url, out=str(tmp_path / "a"), hidden_size=32, num_iters=1500, pruner="median"
        )
        study, _ = open_study(optuna, open_storage(url), config)  # the study as the workers make it
        for k in range(12):
            study.enqueue_trial({"learning_rate": (1.0 if k < 6 else 0.01) * (1 + k / 100), "reg": 1e-4})
        trials = two_workers(
            tmp_path, url, "--trials", 12, "--population", 1, "--num-iters", 1500, "--pruner", "median"
        )
        results = check_results(trials, 12)
        assert len({t.user_attrs["worker"]["pid"] for t in results}) == 2
        assert [outcome(t) for t in results] == ["completed"] * 6 + ["pruned"] * 6
        assert all(t.last_step == 12 for t in results[6:])
        # Workers joining a study look it up before creating it: a create refused on the unique
        # name is an ERROR in the server's log, one per joining worker
        assert "duplicate key" not in postgres.log(url)


def test_killed_worker_then_restart_completes_the_study(tmp_path):
    out, storage = tmp_path / "sweep", f"sqlite:///{tmp_path / 'study.db'}"
    # two hidden sizes: a population's trials train as groups, and the retries keep their group;
    # no pruner, and populations long enough (~1 s) for the kill to land inside one
    args = [
        "--storage",
        storage,
        *SMALL,
        "--trials",
        12,
        "--population",
        3,
        "--num-iters",
        1500,
        "--hidden-size",
        "16,32",
        "--pruner",
        "none",
    ]
    victim = worker(out, *args)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # kill it mid-population: results told, others running
        time.sleep(0.1)
        try:
            trials = study_trials(storage)
        except (KeyError, Exception):  # the study does not exist yet
            continue
        training = [t for t in trials if outcome(t) == "running" and t.params]  # asked, marked, suggested
        if count_results(trials) >= 3 and training:
            break
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    assert "running" in [outcome(t) for t in study_trials(storage)], "the kill came too late"

    stdout = finish(worker(out, *args))
    trials = study_trials(storage)
    results = check_results(trials, 12)
    dead = [t for t in trials if outcome(t) == "dead worker"]
    assert dead and {t.user_attrs.get("worker", {}).get("pid") for t in dead} <= {victim.pid, None}
    retried = {t.system_attrs["failed_trial"]: t for t in trials if "failed_trial" in t.system_attrs}
    assert set(retried) == {t.number for t in dead}  # each dead trial re-run once, nothing lost
    # a retry keeps every setting its original had drawn (one killed mid-suggest drew only some)
    assert all(trials[n].params.items() <= retry.params.items() for n, retry in retried.items())
    rows = check_csv(out, trials)
    assert sum(r["outcome"] in RESULTS for r in rows) == 12
    # best/ holds a told trial, with the numbers the study has for it, and a net that reproduces them
    metrics = json.loads((out / "best" / "metrics.json").read_text())
    best = next(t for t in results if t.number == metrics["trial"])
    assert outcome(best) == "completed" and metrics["val_accuracy"] == best.value
    assert metrics["test_accuracy"] == best.user_attrs["test_accuracy"] and metrics["params"] == best.params
    ds = data.load("digits")
    net = TwoLayerNet.load(out / "best" / "model.npz")
    assert net.accuracy(ds.X_val, ds.y_val) == pytest.approx(metrics["val_accuracy"])
    assert net.metadata["sweep"]["trial"] == metrics["trial"]
    assert (out / "sweep.png").stat().st_size > 10_000
    assert f"#{best_completed(results).number}" in stdout


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_worker_saves_its_best(tmp_path, signum):
    """Ctrl-C or SIGTERM mid-round: trials told before it are in best/ (it was saved once per
    round, after every shape and budget had trained); the running ones stay running, re-run
    once stale, as a killed worker's are."""
    from twolayer_xp.app.sweep import SweepConfig
    from twolayer_xp.app.sweep.study import open_storage, open_study

    out, storage = tmp_path / "sweep", f"sqlite:///{tmp_path / 'study.db'}"
    args = ["--storage", storage, "--trials", 6, "--population", 6, "--hidden-size", 1024, "--pruner", "none"]
    config = SweepConfig(storage=storage, out=str(out), hidden_size=1024, num_iters="30,20000", pruner="none")
    study, _ = open_study(optuna, open_storage(storage), config)
    for k in range(6):  # three short trials, told at once; three long ones, interrupted
        study.enqueue_trial({"learning_rate": 0.5 + k / 10, "reg": 1e-4, "num_iters": 30 if k < 3 else 20000})
    victim = worker(out, *args, "--num-iters", "30,20000")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (out / "best" / "metrics.json").exists():
        time.sleep(0.05)
    victim.send_signal(signum)
    _, stderr = victim.communicate(timeout=60)
    assert victim.returncode == 128 + signum and "interrupted" in stderr, stderr
    trials = study_trials(storage)
    assert [outcome(t) for t in trials[:3]] == ["completed"] * 3, "the signal came too early"
    assert json.loads((out / "best" / "metrics.json").read_text())["trial"] == best_completed(trials).number
    assert [outcome(t) for t in trials[3:6]] == ["running"] * 3


def test_a_signal_between_two_tells_still_saves_the_told_best(tmp_path, monkeypatch):
    """Ctrl-C lands right after a real tell (Optuna's, unchanged, then the interrupt a signal
    would raise there): the told trial reaches best/ (the save waited for every tell of the
    finishing members, and the interrupt skipped it)."""
    real_tell = optuna.study.Study.tell

    def tell_then_interrupt(study, *args, **kwargs):
        real_tell(study, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(optuna.study.Study, "tell", tell_then_interrupt)
    out, storage = tmp_path / "sw", f"sqlite:///{tmp_path / 'study.db'}"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(
            storage=storage, out=str(out), trials=2, population=2, num_iters=20, hidden_size=8, pruner="none"
        )
    trials = study_trials(storage)
    assert [outcome(t) for t in trials[:2]] == ["completed", "running"]
    assert json.loads((out / "best" / "metrics.json").read_text())["trial"] == 0


def test_digits_sweep_finds_a_good_net(tmp_path):
    """The issue's bar: 32 trials in populations of 16 find test accuracy >= 0.975."""
    stdout = finish(worker(tmp_path, "--trials", 32, "--population", 16, "--num-iters", 1000))
    best = best_completed(check_results(study_trials(f"sqlite:///{tmp_path / 'study.db'}"), 32))
    assert best.user_attrs["test_accuracy"] >= 0.975, stdout
    assert f"best #{best.number}:" in stdout and f"test {best.user_attrs['test_accuracy']:.4f}" in stdout
    metrics = json.loads((tmp_path / "best" / "metrics.json").read_text())
    assert metrics["trial"] == best.number and metrics["test_accuracy"] >= 0.975
    from matplotlib.image import imread

    image = imread(tmp_path / "sweep.png")
    assert image.shape[1] > 800 and np.std(image[..., :3]) > 0.05


def one_error_line(capsys):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("twolayer-xp") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--sampler", "bayes"], "invalid choice: 'bayes'"),
        (["--pruner", "asha"], "invalid choice: 'asha'"),
        (["--lr", "1e-1:1e-3"], "empty or inverted"),
        (["--reg", "1e-3:1e-3"], "empty or inverted"),
        (["--lr", "fast"], "LOW:HIGH"),
        (["--sampler", "grid", "--grid-lr", "0.1"], "needs --grid-lr and --grid-reg"),
        (["--hidden-size", "0,5"], "hidden_size must be a positive int"),
        (["--batch-size", "a:b"], "--batch-size must be a value, A,B,.. (choices) or LOW:HIGH"),
        (["--lr-decay", "1:0.5"], "--learning-rate-decay 1:0.5 is empty or inverted"),
        (["--std", "0:1e-2"], "need 0 < LOW < HIGH (log scale)"),
        (["--epochs", "3", "--num-iters", "5"], "give one of them"),
        (["--sampler", "grid", "--grid-lr", "1", "--grid-reg", "1", "--hidden-size", "8,16"], "one value"),
        (["--storage", "not a url"], "not a database URL"),
        (["--study", ""], "--study is empty"),
        (
            ["--lr", "-1:1"],
            "argument --lr: expected one argument; a value starting with '-' is written --lr=-1:1",
        ),
        (["--lr-decay", "-0.9:1"], "a value starting with '-' is written --lr-decay=-0.9:1"),
        (["--learning", "-0.9:1"], "a value starting with '-' is written --learning=-0.9:1"),  # abbreviated
        (["--lr", "--reg", "1:2"], "argument --lr: expected one argument (see --help)"),  # no value
        (["--lr", "--re", "1:2"], "argument --lr: expected one argument (see --help)"),
        (["--storage", "nosuchdb://x/y"], "not a database URL"),
        (
            ["--storage", f"postgresql+psycopg://nobody@127.0.0.1:{postgres.free_port()}/db"],
            "cannot open storage",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, expected):
    try:
        code = cli.main(["sweep", "--out", str(tmp_path), "--quiet", *args])
    except SystemExit as exc:  # argparse's own checks (choices) exit from inside parse_args
        code = exc.code
    assert code == 2
    assert expected in one_error_line(capsys)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--std", "1e-3:1e30"], "std is so large that the initial weights or scores overflow float32"),
        (["--std", "1e30"], "std is so large"),
        (
            ["--hidden-size", "8,99999999999999999999", "--population", "4", "--trials", "4"],
            "a population of 4 nets with input_size=64, hidden_size=99999999999999999999",
        ),
    ],
)
def test_a_search_whose_largest_nets_cannot_be_made_is_refused_before_anything_is_written(
    tmp_path, capsys, args, expected
):
    """The largest hidden size (times --population) and std of the search are checked before
    --out or the storage exists: failing in the first population instead left the study with
    running trials that every retry failed again."""
    out = tmp_path / "out"
    assert cli.main(["sweep", "--out", str(out), "--quiet", "--trials", "2", "--num-iters", "20", *args]) == 2
    assert expected in one_error_line(capsys)
    assert not out.exists()


def test_the_largest_population_is_judged_as_trained_and_as_it_can_be(tmp_path, capsys, monkeypatch):
    """With 600 MiB free, 4 float64 nets of 8000 units can be built but not trained and evaluated
    on digits' 1300 training rows (~820 MiB): refused before anything is written, naming the
    flags. 2 trials never make a population of more than 2 (whatever --population says): ~410 MiB."""
    from twolayer_xp.core import resources

    monkeypatch.setattr(resources, "available_bytes", lambda: 600 * 2**20)
    args = ["sweep", "--quiet", "--num-iters", "20", "--hidden-size", "8000", "--dtype", "float64"]
    out = tmp_path / "four"
    assert cli.main([*args, "--out", str(out), "--trials", "4", "--population", "4"]) == 2
    line = one_error_line(capsys)
    assert (
        "this run needs about" in line
        and "x 4 nets" in line
        and "--hidden-size, --batch-size or --population" in line
    )
    assert not out.exists()
    assert cli.main([*args, "--out", str(tmp_path / "two"), "--trials", "2"]) == 0  # --population 16


def test_a_study_keeps_its_search_space(tmp_path, capsys):
    args = [
        "sweep",
        "--out",
        str(tmp_path),
        "--quiet",
        "--trials",
        "2",
        "--population",
        "2",
        "--num-iters",
        "20",
    ]
    assert cli.main(args) == 0
    capsys.readouterr()
    assert cli.main([*args, "--trials", "3"]) == 0  # more trials: the same study, continued
    assert "3 results" in capsys.readouterr().out
    assert cli.main([*args, "--lr", "1e-3:1e-2"]) == 2
    line = one_error_line(capsys)
    assert "was created with lr=" in line and line.endswith("or choose another --out")
    # --storage given, even where the default would be: the study.db stays where it is named
    assert cli.main([*args, "--lr", "1e-3:1e-2", "--storage", f"sqlite:///{tmp_path / 'study.db'}"]) == 2
    assert one_error_line(capsys).endswith("or choose another --study, with an --out of its own")
    # the advice works: the default storage is the study.db inside --out
    assert cli.main([*args, "--lr", "1e-3:1e-2", "--out", str(tmp_path / "other")]) == 0
    # with a shared --storage, another study (and an --out of its own) is what it takes
    shared = ["--storage", f"sqlite:///{tmp_path / 'shared.db'}"]
    assert cli.main([*args, *shared, "--out", str(tmp_path / "s1")]) == 0
    assert cli.main([*args, *shared, "--out", str(tmp_path / "s1"), "--lr", "1e-3:1e-2"]) == 2
    assert one_error_line(capsys).endswith("or choose another --study, with an --out of its own")
    assert cli.main([*args, *shared, "--out", str(tmp_path / "s2"), "--lr", "1e-3:1e-2", "--study", "b"]) == 0


def test_a_diverged_member_is_told_failed_not_zero(tmp_path, capsys):
    args = ["--trials", "2", "--population", "2", "--num-iters", "60", "--lr", "1e3:1e5"]
    assert cli.main(["sweep", "--out", str(tmp_path), "--quiet", *args]) == 0
    printed = capsys.readouterr()
    assert "2 results (0 completed, 0 pruned, 2 diverged); no completed trial" in printed.out
    # the README's next step (predict .../best/model.npz) would fail: the sweep says so, and why
    assert printed.err.strip().splitlines() == [
        f"twolayer-xp: warning: no trial of study twolayer-xp-digits completed (2 diverged, 0 pruned), "
        f"so {tmp_path / 'best'} holds no model yet: try a lower --lr range or more --trials"
    ]
    trials = study_trials(f"sqlite:///{tmp_path / 'study.db'}")
    assert [(t.state.name, t.value, t.user_attrs["diverged"]) for t in trials] == [("FAIL", None, True)] * 2
    assert not (tmp_path / "best").exists()  # no net worth keeping


def test_a_trial_orphaned_before_its_first_heartbeat_is_rerun(tmp_path):
    """Optuna never finds such a trial stale (it has no heartbeat): the sweep fails it itself."""
    from twolayer_xp.app.sweep.config import SweepConfig
    from twolayer_xp.app.sweep.study import STALE_HEARTBEATS, open_storage, open_study

    url = f"sqlite:///{tmp_path / 'study.db'}"
    config = SweepConfig(out=str(tmp_path), trials=2, population=2, num_iters=20, heartbeat=1)
    study, _ = open_study(optuna, open_storage(url, 1), config)  # the study as a sweep makes it
    study.ask()  # its worker died right after ask(): RUNNING, no heartbeat, no worker mark
    time.sleep(STALE_HEARTBEATS * 1 + 0.5)
    args = ["--trials", "2", "--population", "2", "--num-iters", "20", "--heartbeat", "1"]
    assert cli.main(["sweep", "--out", str(tmp_path), "--quiet", *args]) == 0
    trials = study_trials(url)
    check_results(trials, 2)
    assert outcome(trials[0]) == "dead worker"
    assert [t.system_attrs.get("failed_trial") for t in trials].count(0) == 1  # re-run once


# Trials queued with fixed params, so that the test knows its groups: (hidden size, iterations,
# learning rate, reg, std, decay). Hidden size 16: three budgets; 8: two.
QUEUED = [
    (16, 70, 1.0, 1e-4, 0.01, 0.99),
    (8, 20, 0.5, 1e-3, 0.05, 0.9),
    (16, 20, 2.0, 1e-4, 0.05, 0.9),
    (16, 45, 0.3, 1e-5, 0.01, 0.99),
    (8, 70, 1.0, 3e-4, 0.01, 0.9),
]
SEARCH = dict(hidden_size="8,16", num_iters="20,45,70", std="0.01,0.05", learning_rate_decay="0.9,0.99")


def test_trials_of_one_shape_train_together_each_to_its_own_budget(tmp_path):
    """Grouping and budgets: each trial is told exactly the accuracies its member gets in a
    population of its group trained straight to the trial's own budget."""
    from twolayer_xp import Population
    from twolayer_xp.app.sweep import SweepConfig, run_sweep
    from twolayer_xp.app.sweep.study import open_storage, open_study

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    config = SweepConfig(trials=5, population=5, sampler="random", pruner="none", out=str(tmp_path), **SEARCH)
    study, _ = open_study(optuna, open_storage(storage), config)  # the study as a sweep makes it
    names = ("hidden_size", "num_iters", "learning_rate", "reg", "std", "learning_rate_decay")
    for values in QUEUED:
        study.enqueue_trial(dict(zip(names, values, strict=True)))
    result = run_sweep(config)
    trials = check_results(study_trials(storage), 5)
    assert result["trials_run"] == 5 and all(outcome(t) == "completed" for t in trials)
    ds = data.load("digits", dtype="float32")
    for hidden in (16, 8):
        group = [t for t in trials if t.params["hidden_size"] == hidden]  # in trial order
        for budget in {t.params["num_iters"] for t in group}:
            pop = Population(ds.num_features, hidden, ds.num_classes, size=len(group),
                             std=[t.params["std"] for t in group], dtype="float32", rng=config.seed)  # fmt: skip
            pop.train(
                ds.X_train, ds.y_train, ds.X_val, ds.y_val, num_iters=budget, batch_size=100,
                **{n: [t.params[n] for t in group] for n in ("learning_rate", "reg", "learning_rate_decay")},
            )  # fmt: skip
            val, test = pop.accuracy(ds.X_val, ds.y_val), pop.accuracy(ds.X_test, ds.y_test)
            for k, t in enumerate(group):
                if t.params["num_iters"] == budget:
                    assert (t.value, t.user_attrs["test_accuracy"]) == (val[k], test[k])
    rows = check_csv(tmp_path, trials)
    assert [(int(r["hidden_size"]), int(r["num_iters"]), r["batch_size"], r["epochs"]) for r in rows] == [
        (h, n, "100", "") for h, n, *_ in QUEUED
    ]  # searched settings from the trial, fixed ones (batch size) from the study
    metrics = json.loads((tmp_path / "best" / "metrics.json").read_text())
    best = best_completed(trials)
    assert metrics["trial"] == best.number and metrics["val_accuracy"] == best.value
    saved = TwoLayerNet.load(tmp_path / "best" / "model.npz")
    assert saved.state.iteration == best.params["num_iters"]
    assert saved.metadata["hyperparameters"]["num_iters"] == best.params["num_iters"]
    assert saved.accuracy(ds.X_val, ds.y_val) == pytest.approx(best.value)


def test_a_study_keeps_its_searched_settings(tmp_path, capsys):
    args = ["sweep", "--out", str(tmp_path), "--quiet", "--trials", "2", "--population", "2",
            "--hidden-size", "8,16", "--lr-decay", "0.9:1", "--epochs", "2"]  # fmt: skip
    assert cli.main(args) == 0
    capsys.readouterr()
    same = [*args[:-6], "--hidden-size", "16,8,16", "--learning-rate-decay", "0.9:1.0", "--epochs", "2"]
    assert cli.main([*same, "--trials", "3"]) == 0  # the same space, written differently
    assert "3 results" in capsys.readouterr().out
    changed = {
        "--hidden-size": ("8,32", "hidden_size=8,16, this run has hidden_size=8,32"),
        "--lr-decay": ("0.95", "learning_rate_decay=0.9:1, this run has learning_rate_decay=0.95"),
        "--epochs": ("1:3", "epochs=2, this run has epochs=1:3"),
    }
    for name, (value, words) in changed.items():
        i = args.index(name)
        assert cli.main([*args[:i], name, value, *args[i + 2 :]]) == 2
        line = one_error_line(capsys)
        assert words in line and "another --out" in line
    assert cli.main([*args[:-2], "--num-iters", "20"]) == 2
    assert "was created with epochs=2, this run has num_iters=20" in one_error_line(capsys)


def test_a_refusal_names_the_trial_length_each_side_counts(tmp_path):
    """A study counting iterations, joined by a run counting epochs (and the reverse): each side
    is shown as the length it counts, not as the other one's None."""
    from twolayer_xp.app.sweep.config import SweepConfig
    from twolayer_xp.app.sweep.study import open_storage, open_study

    for made, joined, words in [
        ({"num_iters": 20}, {"epochs": 2}, "was created with num_iters=20, this run has epochs=2"),
        (
            {"epochs": 2},
            {"num_iters": "20:40"},
            "was created with epochs=2, this run has num_iters=20:40 (log scale)",
        ),
    ]:
        url = f"sqlite:///{tmp_path / (next(iter(made)) + '.db')}"
        open_study(optuna, open_storage(url), SweepConfig(out=str(tmp_path), **made))
        with pytest.raises(ValueError) as refused:
            open_study(optuna, open_storage(url), SweepConfig(out=str(tmp_path), **joined))
        assert words in str(refused.value)


def test_the_default_lr_and_reg_ranges_are_what_a_user_types(tmp_path):
    """mnist's default reg range is 1e-4 x 0.01 .. x 10: stored as 1e-06:0.001 (not the float
    product 1.0000000000000002e-06), so typing it joins a study made with the defaults; a study
    an older version stored unrounded is joined by the same command, flags or none; a refusal
    shows the ranges as LOW:HIGH."""
    from twolayer_xp.app.sweep.config import SweepConfig
    from twolayer_xp.app.sweep.study import open_storage, open_study

    assert SweepConfig(dataset="mnist").reg == (1e-06, 0.001)
    assert SweepConfig(dataset="cifar10").lr == (1e-05, 0.01)
    for unrounded in (False, True):
        url = f"sqlite:///{tmp_path / f'{unrounded}.db'}"
        made = SweepConfig(dataset="mnist", out=str(tmp_path))
        if unrounded:  # what the previous version stored
            made.search["reg"] = [1e-4 * 0.01, 1e-4 * 10.0]
            assert made.search["reg"][0] == 1.0000000000000002e-06
        open_study(optuna, open_storage(url), made)
        for reg in (None, "1e-6:1e-3", (1e-06, 0.001)):
            open_study(optuna, open_storage(url), SweepConfig(dataset="mnist", out=str(tmp_path), reg=reg))
        with pytest.raises(ValueError, match="created with reg=1e-06:0.001, this run has reg=1e-05:0.001: "):
            open_study(
                optuna, open_storage(url), SweepConfig(dataset="mnist", out=str(tmp_path), reg="1e-5:1e-3")
            )


def test_choices_differing_in_any_digit_are_another_search(tmp_path):
    """Numbers are compared to a relative 1e-9, but not choices: Optuna refuses a categorical
    whose values changed at all, so a run with std 0.1 * 3 (0.30000000000000004) beside a
    study's 0.3 joined it and then failed at its first trial, leaving it RUNNING."""
    from twolayer_xp.app.sweep.config import SweepConfig
    from twolayer_xp.app.sweep.study import open_storage, open_study

    url = f"sqlite:///{tmp_path / 'study.db'}"
    open_study(optuna, open_storage(url), SweepConfig(out=str(tmp_path), std="0.3,0.5"))
    with pytest.raises(
        ValueError, match="was created with std=0.3,0.5, this run has std=0.30000000000000004,0.5: "
    ):
        open_study(optuna, open_storage(url), SweepConfig(out=str(tmp_path), std=[0.1 * 3, 0.5]))
    open_study(optuna, open_storage(url), SweepConfig(out=str(tmp_path), std=[0.5, 0.3]))  # the same


def test_the_api_takes_searches_as_strings_lists_and_tuples():
    from twolayer_xp.app.sweep import SweepConfig

    flags = SweepConfig(hidden_size="100,50", std="1e-3:1e-1", epochs="3", learning_rate_decay="0.9:1")
    api = SweepConfig(hidden_size=[50, 100, 50], std=(1e-3, 0.1), epochs=3, learning_rate_decay=(0.9, 1))
    assert flags.search == api.search
    assert api.search["hidden_size"] == {"choices": [50, 100]} and "num_iters" not in api.search
    assert api.search["std"] == {"low": 1e-3, "high": 0.1, "log": True}
    assert api.search["learning_rate_decay"] == {"low": 0.9, "high": 1.0, "log": False}
    assert SweepConfig(batch_size=[64]).search["batch_size"] == 64  # one choice is a fixed value
    with pytest.raises(TypeError, match="hidden_size must be an int"):
        SweepConfig(hidden_size=[50, 1.5])
    with pytest.raises(
        ValueError, match="--pruner must be one of none, median, halving, hyperband; got 'asha'"
    ):
        SweepConfig(pruner="asha")
    # the stored form (what the CLI's flags hold) is taken as it is
    stored = {"low": 10, "high": 20, "log": True}
    assert SweepConfig(hidden_size=dict(stored)).search["hidden_size"] == stored
    assert SweepConfig(hidden_size={"choices": [16, 8]}).search["hidden_size"] == {"choices": [8, 16]}


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"lr": 0.1}, TypeError, '--lr takes a range, "LOW:HIGH" or a (low, high) tuple, not float 0.1'),
        ({"reg": 1e-3}, TypeError, '--reg takes a range, "LOW:HIGH" or a (low, high) tuple, not float 0.001'),
        ({"lr": (1, 2, 3)}, ValueError, "--lr must be LOW:HIGH, two numbers, got (1, 2, 3)"),
        ({"sampler": "grid", "grid_lr": 0.1, "grid_reg": [1e-3]}, TypeError, "--grid-lr takes values"),
        ({"sampler": "grid", "grid_lr": [0.1], "grid_reg": 1e-3}, TypeError, '"a,b,c" or a list of numbers'),
        # a range's scale is the setting's: a dict asking for another is refused, not overridden
        (
            {"hidden_size": {"low": 10, "high": 20, "log": False}},
            TypeError,
            '"log": True} (log scale, its only one)',
        ),
        (
            {"learning_rate_decay": {"low": 0.9, "high": 1, "log": True}},
            TypeError,
            '"log": False} (linear scale',
        ),
        ({"hidden_size": {"choices": 5}}, TypeError, "--hidden-size must be a value, A,B,.."),
        ({"hidden_size": {"low": 10, "high": 20}}, TypeError, "got {'low': 10, 'high': 20}"),
        ({"lr": {"low": 0.1, "high": 1}}, TypeError, "--lr takes a range"),
        # no order (a set: its ends came in hash order, refused as inverted or not), a number
        # as a 0-d array, bytes-like text
        ({"lr": {1e-3, 1e-1}}, TypeError, "--lr takes a range"),
        ({"reg": np.array(1e-3)}, TypeError, "--reg takes a range"),
        (
            {"sampler": "grid", "grid_lr": bytearray(b"\x01\x05"), "grid_reg": [1e-3]},
            TypeError,
            "--grid-lr takes",
        ),
    ],
)
def test_an_argument_of_the_wrong_kind_is_named(options, error, words):
    from twolayer_xp.app.sweep import SweepConfig

    with pytest.raises(error) as caught:
        SweepConfig(**options)
    assert words in str(caught.value)


def test_numbers_one_by_one_from_numpy_are_ranges_and_grids():
    """np.logspace for a grid, an array for a range: taken as they were before the wrong-kind
    checks, which let only lists and tuples through."""
    from twolayer_xp.app.sweep import SweepConfig

    grid = SweepConfig(sampler="grid", grid_lr=np.logspace(-3, -1, 3), grid_reg=np.array([1e-4]))
    assert grid.grid_lr == [0.001, 0.01, 0.1] and grid.grid_reg == [1e-4]
    assert SweepConfig(lr=np.array([1e-3, 1e-1])).lr == (1e-3, 0.1)


def test_the_summary_names_the_best_trials_searched_settings_as_drawn():
    """Whole-number settings are shown whole: hidden_size=1024, not 1.02e+03."""
    from twolayer_xp.app.sweep import SweepConfig, report

    config = SweepConfig(hidden_size="512,1024", learning_rate_decay="0.9:1")
    params = {"learning_rate": 0.0123, "reg": 1e-4, "hidden_size": 1024, "learning_rate_decay": 0.9712}
    distributions = {
        "learning_rate": optuna.distributions.FloatDistribution(1e-3, 1, log=True),
        "reg": optuna.distributions.FloatDistribution(1e-6, 1e-2, log=True),
        "hidden_size": optuna.distributions.CategoricalDistribution([512, 1024]),
        "learning_rate_decay": optuna.distributions.FloatDistribution(0.9, 1),
    }
    best = optuna.trial.create_trial(params=params, distributions=distributions, value=0.98,
                                     user_attrs={"test_accuracy": 0.97})  # fmt: skip
    line = report.summary(config, [best], {"best": best, "trials_run": 1, "seconds": 1.0})
    assert "learning_rate=0.0123 reg=0.0001 hidden_size=1024 learning_rate_decay=0.971 val 0.9800" in line


def test_run_sweep_takes_a_config_or_its_fields_not_both(tmp_path):
    """Options beside a config were dropped: this ran the config's 2 trials, silently."""
    from twolayer_xp.app.sweep import SweepConfig

    config = SweepConfig(trials=2, population=2, num_iters=20, hidden_size=8, out=str(tmp_path / "out"))
    with pytest.raises(TypeError, match="SweepConfig or its fields .*, not both: got trials, bogus_option$"):
        run_sweep(config, trials=1, bogus_option=5)
    assert not (tmp_path / "out").exists()


# (learning rate, reg): five good trials to set the median, then two good and two hopeless ones.
FIRST = [(1.0, 1e-4), (0.5, 1e-4), (2.0, 1e-5), (0.7, 1e-3), (1.5, 1e-4)]
SECOND = [(3.0, 1e-5), (0.011, 1e-4), (2.5, 1e-4), (0.01, 1e-3)]
HOPELESS = [(0.01 * (1 + k / 100), 1e-4) for k in range(4)]  # (lr, reg) far below FIRST[0] at epoch 1


def test_pruned_members_stop_and_the_survivors_train_on_exactly(tmp_path):
    """Median pruning: the hopeless members are told PRUNED at their first report (their value:
    their accuracy at that epoch), counted once; the survivors, trained on in a compacted
    population, are told exactly what an uncompacted population of all four gives them."""
    from twolayer_xp import Population
    from twolayer_xp.app.sweep import SweepConfig, run_sweep
    from twolayer_xp.app.sweep.study import open_storage, open_study

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    options = dict(sampler="random", pruner="median", out=str(tmp_path), num_iters=130, hidden_size=16)
    study, _ = open_study(optuna, open_storage(storage), SweepConfig(trials=5, population=5, **options))
    for lr, reg in FIRST + SECOND:
        study.enqueue_trial({"learning_rate": lr, "reg": reg})
    assert run_sweep(SweepConfig(trials=5, population=5, **options))["trials_run"] == 5
    config = SweepConfig(trials=9, population=4, **options)
    result = run_sweep(config)
    trials = check_results(study_trials(storage), 9)
    assert result["trials_run"] == 4 and count_results(trials) == 9
    assert [outcome(t) for t in trials[5:]] == ["completed", "pruned", "completed", "pruned"]
    assert all(t.user_attrs["threads"]["count"] >= 1 for t in trials[5:])  # pruned ones say it too
    ds = data.load("digits", dtype="float32")
    pop = Population(
        ds.num_features, 16, ds.num_classes, size=4, std=config.std, dtype="float32", rng=config.seed
    )
    history = pop.train(ds.X_train, ds.y_train, ds.X_val, ds.y_val, num_iters=130, batch_size=100,
                        learning_rate=[lr for lr, _ in SECOND], reg=[reg for _, reg in SECOND],
                        learning_rate_decay=0.99)  # fmt: skip
    val, test = pop.accuracy(ds.X_val, ds.y_val), pop.accuracy(ds.X_test, ds.y_test)
    for k, t in enumerate(trials[5:]):
        assert t.intermediate_values == {
            e: history["val_acc_history"][k, e] for e in range(1, t.last_step + 1)
        }
        if outcome(t) == "completed":
            assert (t.value, t.user_attrs["test_accuracy"]) == (val[k], test[k])
        else:
            assert t.last_step == 1 and t.value == history["val_acc_history"][k, 1]
    rows = check_csv(tmp_path, trials)
    assert [r["pruned_at_epoch"] for r in rows[5:]] == ["", "1", "", "1"]
    assert result["samples"] == 100 * (4 * 14 + 2 * (130 - 14))  # the pruned stopped costing
    assert "9 results (7 completed, 2 pruned, 0 diverged)" in result["summary"]
    assert not result["warnings"] and (tmp_path / "sweep.png").stat().st_size > 10_000  # pruned drawn too


@pytest.mark.parametrize("good", [0, 4])
def test_successive_halving_prunes_inside_the_first_population(tmp_path, good, monkeypatch):
    """Successive halving compares a report with every trial's at the same rung, running ones
    included: a population's members report together, so the first population is pruned too
    (the median pruner waits for five completed trials). One good trial and four hopeless ones,
    the good one asked first or last: the members are judged as a whole, so the best one alone
    (5 // 3 = 1) goes on wherever it stands. Asked last is the case that tells this rule from
    Optuna's pruner, which judges each member only against those asked before it and lets the
    first through unconditionally. Trials report at the rungs only, those no later than a third
    of the trial; no rung record besides the report is written."""
    from twolayer_xp.app.sweep import SweepConfig, pruning, run_sweep
    from twolayer_xp.app.sweep.study import open_storage, open_study

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    config = SweepConfig(trials=5, population=5, sampler="random", pruner="halving", out=str(tmp_path),
                         num_iters=130, hidden_size=16)  # fmt: skip
    study, _ = open_study(optuna, open_storage(storage), config, num_train=1300)
    assert isinstance(study.pruner, pruning.Halving)
    for lr, reg in [*HOPELESS[:good], FIRST[0], *HOPELESS[good:]]:
        study.enqueue_trial({"learning_rate": lr, "reg": reg})
    from twolayer_xp import Population

    evaluated, accuracy = [], Population.accuracy
    monkeypatch.setattr(
        Population, "accuracy", lambda pop, X, y: evaluated.append(len(y)) or accuracy(pop, X, y)
    )
    result = run_sweep(config)
    ds = data.load("digits")  # 1300 / 100 is whole: the reports read the training history, and the
    # only evaluations are the completed trial's three (train, validation and test rows)
    assert evaluated == [len(ds.y_train), len(ds.y_val), len(ds.y_test)]
    trials = check_results(study_trials(storage), 5)
    assert [outcome(t) for t in trials] == ["pruned"] * good + ["completed"] + ["pruned"] * (4 - good)
    assert all(t.last_step == 1 for t in trials if outcome(t) == "pruned")  # stopped at the first rung
    assert sorted(trials[good].intermediate_values) == [1, 3]  # its rungs, of 10 epochs: 1 and 3 (not 9)
    assert not any(k.startswith("completed_rung") for t in trials for k in t.system_attrs)
    assert result["samples"] == 100 * (5 * 14 + (130 - 14))  # the pruned stopped at epoch 1
    assert "5 results (1 completed, 4 pruned, 0 diverged)" in result["summary"]


@pytest.mark.parametrize("pruner", ["halving", "median"])
def test_a_rounds_shapes_report_before_the_pruner_decides_on_any(tmp_path, pruner):
    """Each shape of a round trained to its end before the next started, so the pruner judged a
    shape's members only against the shapes trained before it: with successive halving the
    first shape's members went on unopposed (here: the best of four hopeless 8-unit nets went on
    while the good 16-unit one came later), and the median pruner, whose first population cannot
    be pruned (no trial has completed), pruned the second shape against the first. Now every
    member of the round reports an epoch before any is decided."""
    from twolayer_xp.app.sweep import SweepConfig
    from twolayer_xp.app.sweep.study import open_storage, open_study

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    config = SweepConfig(trials=8, population=8, sampler="random", pruner=pruner, out=str(tmp_path),
                         num_iters=130, hidden_size="8,16")  # fmt: skip
    study, _ = open_study(optuna, open_storage(storage), config, num_train=1300)
    good = (
        [(lr, 1e-5) for lr in (2.0, 2.5, 3.0, 3.5)] if pruner == "halving" else FIRST
    )  # 5: median's startup
    first, second = (HOPELESS, good) if pruner == "halving" else (good, HOPELESS[:3])
    for shape, trials in [(8, first), (16, second)]:
        for lr, reg in trials:
            study.enqueue_trial({"learning_rate": lr, "reg": reg, "hidden_size": shape})
    result = run_sweep(config)
    trials = check_results(study_trials(storage), 8)
    if pruner == "median":
        assert [outcome(t) for t in trials] == ["completed"] * 8
    else:  # 8 reached the first rung: its best 8 // 3 = 2 (ties too) go on, none of the first shape
        rung = sorted((t.intermediate_values[1] for t in trials), reverse=True)[1]
        went_on = [t.number for t in trials if t.last_step > 1 or outcome(t) == "completed"]
        assert went_on == [t.number for t in trials if t.intermediate_values[1] >= rung] and len(went_on) >= 2
        assert all(outcome(t) == "pruned" and t.last_step == 1 for t in trials[:4])
    assert result["trials_run"] == 8
    best = result["best"]  # the summary names the searched settings of the best trial too
    assert f"reg={best.params['reg']:.3g} hidden_size={best.params['hidden_size']} val" in result["summary"]


def test_a_member_declared_stale_at_a_report_is_no_longer_beaten_for(tmp_path, monkeypatch):
    """Another worker fails a trial as stale just before it reports (its retry will run it):
    the member is dropped, and its heartbeat stops with it. Where no other member of its shape
    waited for the pruner, it was dropped without leaving the heartbeat's set, which went on
    marking the failed trial alive for the rest of the worker's life."""
    from twolayer_xp.app.sweep import SweepConfig
    from twolayer_xp.app.sweep import study as sweep_study

    beaten = {}
    real_exit, real_report = sweep_study.Heartbeat.__exit__, optuna.trial.Trial.report

    def exit_noting(heartbeat, *exc):
        beaten.update(ids=set(heartbeat.trial_ids))
        return real_exit(heartbeat, *exc)

    def stale_then_report(trial, value, step):
        if trial.number == 0:  # what another worker's stale check does
            storage = trial.study._storage
            if storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL):
                storage.get_heartbeat_stale_trial_callback()(trial.study, storage.get_trial(trial._trial_id))
        return real_report(trial, value, step)

    monkeypatch.setattr(sweep_study.Heartbeat, "__exit__", exit_noting)
    monkeypatch.setattr(optuna.trial.Trial, "report", stale_then_report)
    config = SweepConfig(out=str(tmp_path), trials=2, population=1, hidden_size="8,16", sampler="random",
                         pruner="halving", num_iters=200)  # fmt: skip
    result = run_sweep(config)
    trials = study_trials(f"sqlite:///{tmp_path / 'study.db'}")
    assert trials[0].state == optuna.trial.TrialState.FAIL and count_results(trials) == 2
    assert beaten["ids"] == set()
    assert result["trials_run"] == 2  # trial 1 and trial 0's retry: the stale one told nothing


def test_a_trial_failed_as_stale_after_it_reported_does_not_stop_the_pruners_decision(tmp_path):
    """Hyperband writes a rung mark to each trial it decides on; a trial another worker failed
    as stale between its report and the decision raised UpdateFinishedTrialError out of the
    worker (found with Optuna's pruner on its own, the window being a round's other shapes'
    training). It is now stopped (dropped: its retry runs it), and the others are decided."""
    from twolayer_xp.app.sweep import pruning

    pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=27, reduction_factor=3)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'hb.db'}", study_name="hb",
                                direction="maximize", pruner=pruner)  # fmt: skip
    trials = [study.ask() for _ in range(9)]
    for k, trial in enumerate(trials):
        trial.suggest_float("x", 0, 1)
        trial.report(0.5 + k / 100, step=1)
    stale = trials[::2]
    for trial in stale:  # what another worker's stale check does
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    stops = pruning.stopped(optuna, study, [t._trial_id for t in trials])  # raised before
    # Those in a bracket with a rung at epoch 1 could not be marked: stopped. The others go on
    # for now; their next report or tell meets the failed state, and they are dropped then.
    assert len(stops) == 9 and any(stop for trial, stop in zip(trials, stops, strict=True) if trial in stale)


def test_trials_report_where_the_batch_does_not_divide_the_training_set(tmp_path):
    """1300 rows in batches of 64 (20.3 iterations an epoch): CS231n's float rule marks an epoch
    end only every 325 iterations (16 passes), so the trials report at passes of the training set
    instead: epoch e after
    ceil(20.3125 e) + 1 iterations, the accuracy there that of a population trained so far. The
    hopeless four stop at the first rung (epoch 1, 22 iterations), the good one reports at 1 and 3."""
    from twolayer_xp import Population
    from twolayer_xp.app.sweep import SweepConfig, run_sweep
    from twolayer_xp.app.sweep.study import open_storage, open_study

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    config = SweepConfig(trials=5, population=5, sampler="random", pruner="halving", out=str(tmp_path),
                         num_iters=210, batch_size=64, hidden_size=16, dtype="float32")  # fmt: skip
    study, _ = open_study(optuna, open_storage(storage), config, num_train=1300)
    chosen = [FIRST[0], *HOPELESS]
    for lr, reg in chosen:
        study.enqueue_trial({"learning_rate": lr, "reg": reg})
    result = run_sweep(config)
    trials = check_results(study_trials(storage), 5)
    assert [outcome(t) for t in trials] == ["completed"] + ["pruned"] * 4
    assert sorted(trials[0].intermediate_values) == [1, 3]
    ds = data.load("digits", dtype="float32")
    pop = Population(
        ds.num_features, 16, ds.num_classes, size=5, std=config.std, dtype="float32", rng=config.seed
    )
    pop.train(ds.X_train, ds.y_train, ds.X_val, ds.y_val, num_iters=22, batch_size=64,
              learning_rate=[lr for lr, _ in chosen], reg=[reg for _, reg in chosen],
              learning_rate_decay=config.learning_rate_decay)  # fmt: skip
    val = pop.accuracy(ds.X_val, ds.y_val)
    assert [t.intermediate_values[1] for t in trials] == list(val)
    assert [r["pruned_at_epoch"] for r in check_csv(tmp_path, trials)] == ["", "1", "1", "1", "1"]
    assert result["samples"] == 64 * (5 * 22 + (210 - 22))


@pytest.mark.parametrize(("N", "B"), [(1300, 100), (1300, 50), (60000, 200), (1000, 1000), (300, 500)])
def test_report_points_are_cs231n_epoch_ends_where_n_over_b_is_whole(N, B):
    """Where N / B is whole (or B >= N: an epoch a step) the report points are CS231n's epoch
    ends, found here by its own float rule, step by step."""
    from twolayer_xp.app.sweep import pruning

    epochs, budget, per_epoch = {1, 2, 3, 8, 24, 70}, 2000, max(N / B, 1)
    ends = [t for t in range(1, budget) if t % per_epoch == 0]  # 0-based steps after step 0
    expected = {t + 1: e for e, t in enumerate(ends, start=1) if e in epochs}
    assert pruning.in_history(N, B) and pruning.report_points(N, B, budget, epochs) == expected


def test_epochs_and_iterations_are_counted_in_integers():
    """ceil(E N / B) and its inverse without floats: E * (N / B) lands a hair above 3900 for 27
    epochs of 1300 rows in batches of 9 (one iteration too many), and 7800 / (1300 / 9) a hair
    below 54 (an epoch too few in the study's longest trial)."""
    from twolayer_xp.app.sweep import pruning, space

    assert space.iterations(27, 1300, 9) == 3900 and space.epochs_in(7800, 1300, 9) == 54
    assert pruning.longest({"num_iters": 7800, "batch_size": 9}, 1300) == 54
    for N, B, E in [(1300, 9, 1), (1300, 64, 7), (1299, 100, 3), (50000, 300, 99), (300, 500, 4)]:
        assert space.epochs_in(space.iterations(E, N, B), N, B) == E
        assert space.epochs_in(space.iterations(E, N, B) - 1, N, B) == E - 1


@pytest.mark.parametrize("retry_reported", [True, False])
def test_successive_halving_counts_a_retried_trial_once(retry_reported):
    """A killed worker's trial (FAIL) is run again from the start by its retry: once the retry
    has reported at a rung, the two are one configuration and count once there; until then the
    first run's report is the configuration's. Five trials at epoch 1 keep one (5 // 3), six keep
    two: the twice-counted run would let the second best through."""
    from twolayer_xp.app.sweep import pruning

    study = optuna.create_study(direction="maximize")
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}

    def add(value, state, **system_attrs):
        study.add_trial(optuna.trial.create_trial(
            state=state, params={"x": 0.5}, distributions=dist, value=value if state.name == "COMPLETE" else None,
            intermediate_values={} if value is None else {1: value}, system_attrs=system_attrs,
        ))  # fmt: skip
        return study.get_trials(deepcopy=False)[-1]

    State = optuna.trial.TrialState
    killed = add(0.1, State.FAIL)  # trial 0: its worker died after the rung
    for value in (0.9, 0.5, 0.4, 0.05):
        add(value, State.COMPLETE)
    retry = {"failed_trial": killed.number, "retry_history": [killed.number]}
    add(0.1 if retry_reported else None, State.RUNNING, **retry)
    second = [t for t in study.get_trials(deepcopy=False) if t.intermediate_values.get(1) == 0.5][0]
    # Retry reported: 0.9, 0.5, 0.4, 0.1, 0.05 count (five: the best alone goes on); not yet:
    # the killed run's 0.1 counts instead, the same five values. Counted twice: six, two go on.
    assert pruning.Halving().prune(study, second) is True
    later = add(0.45, State.RUNNING)  # a sixth configuration: now two go on, 0.9 and 0.5
    assert pruning.Halving().prune(study, second) is False
    assert pruning.Halving().prune(study, later) is True


def test_a_study_keeps_its_pruner(tmp_path, capsys):
    """Every worker of a study prunes alike; a study stored before pruning existed pruned nothing."""
    from twolayer_xp.app.sweep.report import SEARCH_ATTR

    args = [
        "sweep",
        "--out",
        str(tmp_path),
        "--quiet",
        "--trials",
        "1",
        "--population",
        "1",
        "--num-iters",
        "20",
    ]
    assert cli.main([*args, "--pruner", "hyperband"]) == 0
    capsys.readouterr()
    assert cli.main([*args, "--pruner", "median"]) == 2
    assert "was created with pruner=hyperband, this run has pruner=median" in one_error_line(capsys)
    study = optuna.load_study(study_name="twolayer-xp-digits", storage=f"sqlite:///{tmp_path / 'study.db'}")
    study.set_user_attr(
        SEARCH_ATTR, {k: v for k, v in study.user_attrs[SEARCH_ATTR].items() if k != "pruner"}
    )
    assert cli.main([*args, "--pruner", "hyperband"]) == 2
    assert "was created with pruner=none, this run has pruner=hyperband" in one_error_line(capsys)
    assert cli.main([*args, "--pruner", "none", "--trials", "2"]) == 0
    assert "2 results" in capsys.readouterr().out
    # Without --pruner, a study continues with its own (stored before pruning: none), whatever
    # the default is now; a new study gets the default.
    assert cli.main([*args, "--trials", "3"]) == 0
    assert "3 results" in capsys.readouterr().out
    assert "pruner" not in study.user_attrs[SEARCH_ATTR]  # unchanged: still read as none
    assert cli.main([*args[:2], str(tmp_path / "new"), *args[3:]]) == 0
    new = optuna.load_study(
        study_name="twolayer-xp-digits", storage=f"sqlite:///{tmp_path / 'new' / 'study.db'}"
    )
    assert new.user_attrs[SEARCH_ATTR]["pruner"] == DEFAULT_PRUNER


def test_a_study_made_under_another_default_pruner_continues_with_it(tmp_path):
    from twolayer_xp.app.sweep.report import SEARCH_ATTR

    options = dict(out=str(tmp_path), population=1, num_iters=20, hidden_size=16)
    other = next(name for name in PRUNERS if name != DEFAULT_PRUNER)
    run_sweep(trials=1, pruner=other, **options)
    result = run_sweep(trials=2, **options)  # no pruner given: the study's
    assert result["study"].user_attrs[SEARCH_ATTR]["pruner"] == other
    assert "2 results" in result["summary"]
    with pytest.raises(
        ValueError, match=f"was created with pruner={other}, this run has pruner={DEFAULT_PRUNER}"
    ):
        run_sweep(trials=3, pruner=DEFAULT_PRUNER, **options)  # asked for: checked as before
