"""Runs that say what happened: resumed from where, how many decays and why, an interrupted
run's metrics and plot, small metrics.json at any length, and how to reproduce it."""

import json

import numpy as np
import pytest

from twolayer_xp.app import config, plots, runs
from twolayer_xp.core.training import HISTORY_KEYS


@pytest.mark.parametrize("batch_size,expected", [(128, 7), (100, 154), (200, 154)])
def test_decay_count_follows_cs231ns_float_modulo(batch_size, expected):
    """The issue's numbers: 7 decays in 2,000 iterations at --batch-size 128 on digits' 1,300
    rows (1300/128 = 10.156..., whole only at multiples of 32 epochs), 154 at 100; at 200
    (6.5 iterations an epoch) only every other epoch ends on a whole iteration: 154 again."""
    assert runs.decays(0, 2000, 1300, batch_size)["count"] == expected


def test_decay_count_matches_the_training_loop(blobs):
    """The count metrics.json reports equals the decays the loop applied to the learning rate."""
    from twolayer_xp import TwoLayerNet

    X, y = blobs()[:2]
    net = TwoLayerNet(X.shape[1], 10, int(y.max()) + 1, std=1e-2, rng=0)
    net.train(X, y, X, y, learning_rate=1.0, learning_rate_decay=0.5, reg=0.0, num_iters=300, batch_size=64)
    count = runs.decays(0, 300, len(y), 64)["count"]
    assert net.state.learning_rate == pytest.approx(0.5**count)


def test_fractional_epoch_is_said_once_and_whole_is_silent(tmp_path):
    notes = []
    runs.run(
        config.RunConfig(num_iters=60, batch_size=128, checkpoint_every=20),
        tmp_path / "a",
        notify=notes.append,
    )
    assert len(notes) == 1 and "1300/128 = 10.16 is not a whole number" in notes[0]
    notes.clear()
    result = runs.run(
        config.RunConfig(num_iters=60, checkpoint_every=20), tmp_path / "b", notify=notes.append
    )
    assert notes == []
    assert (
        "learning rate decayed 5 times (once every num_train / batch_size = 13 iterations)"
        in result.summary()
    )


def test_resumed_summary_metrics_and_plot(tmp_path, monkeypatch):
    runs.run(config.RunConfig(num_iters=40), tmp_path)
    drawn = {}
    real = plots.history_figure
    monkeypatch.setattr(plots, "history_figure", lambda *a, **k: drawn.update(k) or real(*a, **k))
    result = runs.run(config.RunConfig(num_iters=80), resume=tmp_path / "model.npz")
    assert "after 80 iterations (resumed from iteration 40)" in result.summary()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["resumed_from_iteration"] == 40 and drawn["resumed_at"] == 40


def test_interrupted_run_still_writes_metrics_and_loss_plot(tmp_path):
    syncs = []

    def progress(info):
        syncs.append(info["iteration"])
        if len(syncs) == 2:
            raise KeyboardInterrupt

    with pytest.raises(runs.RunInterrupted, match="holds iteration 20"):
        runs.run(config.RunConfig(num_iters=60, checkpoint_every=20), tmp_path, progress=progress)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["iterations"] == 20
    assert metrics["test_accuracy"] is None and len(metrics["loss_history"]) == 20
    assert (tmp_path / "loss.png").stat().st_size > 0


def test_metrics_stay_small_and_history_npz_keeps_everything(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "MAX_HISTORY_POINTS", 50)
    result = runs.run(config.RunConfig(num_iters=300), tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert len(metrics["loss_history"]) == 50 and metrics["loss_history_every"] == 6
    full = np.load(tmp_path / "history.npz")
    assert set(full.files) == set(HISTORY_KEYS) and len(full["loss_history"]) == 300
    np.testing.assert_allclose(metrics["loss_history"], full["loss_history"][::6])
    assert result.metrics["loss_history"] == metrics["loss_history"]


def test_metrics_record_how_to_reproduce(tmp_path):
    runs.run(config.RunConfig(num_iters=20), tmp_path)
    p = json.loads((tmp_path / "metrics.json").read_text())["provenance"]
    assert {"numpy", "scikit-learn"} <= set(p["libraries"]) and p["twolayer_xp"]
    assert p["command"] and p["cpu"] and p["cpu_count"] >= 1 and p["device"] == "cpu"
    assert isinstance(p["threadpools"], list)
    assert p["git"] is None or len(p["git"]["commit"]) == 40  # a clone: the commit it ran


def test_loss_plot_reads_at_any_length():
    losses = list(np.exp(-np.linspace(0, 5, 20_000)) * 10 + np.random.default_rng(0).random(20_000))
    history = {"loss_history": losses, "train_acc_history": [0.1, 0.5], "val_acc_history": [0.1, 0.4]}
    fig = plots.history_figure(history, resumed_at=5000)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"  # spans more than 10x
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["minibatch loss", "mean of 100", "resumed at 5000"]
    short = plots.history_figure({**history, "loss_history": [2.3, 2.2, 2.1]})
    assert short.axes[0].get_yscale() == "linear" and len(short.axes[0].get_lines()) == 1


def test_sweep_on_own_data_and_its_best_carries_preprocessing_and_provenance(tmp_path):
    pytest.importorskip("optuna")
    from twolayer_xp import load_model, run_sweep

    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (400, 6))
    np.savez(tmp_path / "own.npz", X_train=X * 50 + 7, y_train=np.where(X[:, 0] + X[:, 1] > 0, "yes", "no"))
    result = run_sweep(
        dataset=str(tmp_path / "own.npz"),
        trials=2,
        population=2,
        num_iters=60,
        out=str(tmp_path / "s"),
        progress=False,
    )
    assert "own" in result["summary"]
    best = tmp_path / "s" / "best"
    assert "provenance" in json.loads((best / "metrics.json").read_text())
    model = load_model(best / "model.npz")
    assert model.labels == ["no", "yes"] and model.preprocessing.std is not None


def test_the_recorded_command_can_be_run_again():
    from twolayer_xp.app import provenance

    module = provenance.collect(argv=["/src/twolayer_xp/__main__.py", "train", "--out", "a b"])["command"]
    assert module == "python -m twolayer_xp train --out 'a b'"
    script = provenance.collect(argv=["/venv/bin/twolayer-xp", "sweep", "--trials", "8"])["command"]
    assert script == "twolayer-xp sweep --trials 8"


# -- seams: own data across resume and sweeps, interrupted runs, settings a resume cannot use ------


def _csv_with_label_first(path, rows=240, names="abc"):
    """A .csv whose label column 'target' (named by ``names``) comes first and whose last column
    is a feature."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, rows)
    X = rng.normal(size=(rows, 4)) + y[:, None]
    lines = ["target,a,b,c,d"] + [
        f"{names[k]},{','.join(f'{v:.4f}' for v in x)}" for k, x in zip(y, X, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_sweeps_best_model_knows_its_label_column_and_the_study_keeps_it(tmp_path, capsys):
    pytest.importorskip("optuna")
    from twolayer_xp.app import cli
    from twolayer_xp.app.sweep import run_sweep

    data = _csv_with_label_first(tmp_path / "d.csv", names="012")  # any column reads as numbers
    options = dict(dataset=str(data), trials=2, population=2, num_iters=30, out=str(tmp_path / "s"))
    run_sweep(label_column="target", **options)
    assert cli.main(["evaluate", str(tmp_path / "s" / "best" / "model.npz"), str(data)]) == 0
    assert "accuracy" in capsys.readouterr().out
    with pytest.raises(ValueError, match="label_column=target, this run has label_column=None"):
        run_sweep(**{**options, "trials": 4})  # the last column as labels: another task


def test_an_interrupted_run_resumed_with_fewer_iterations_is_refused_not_completed(tmp_path, train, capsys):
    assert train("--out", tmp_path, "--num-iters", 40, "--quiet") == 0
    (tmp_path / "weights.png").unlink()  # as an interrupted run leaves it: no weights.png
    assert train("--resume", tmp_path / "model.npz", "--num-iters", 20, "--quiet") == 2
    assert "already has 40 of num_iters=20" in capsys.readouterr().err
    assert train("--resume", tmp_path / "model.npz", "--num-iters", 40, "--quiet") == 0  # finishes outputs
    assert (tmp_path / "weights.png").exists()


def test_a_resume_refuses_a_data_dir_its_data_does_not_use(tmp_path, train, capsys):
    assert train("--out", tmp_path / "a", "--num-iters", 20, "--quiet") == 0
    args = ("--resume", tmp_path / "a" / "model.npz", "--data-dir", tmp_path, "--num-iters", 30)
    assert train(*args, "--out", tmp_path / "b", "--quiet") == 2
    assert "--data-dir does not apply to digits" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_an_own_data_run_resumes_from_another_folder(tmp_path, train, monkeypatch):
    _csv_with_label_first(tmp_path / "d.csv")
    monkeypatch.chdir(tmp_path)
    assert (
        train("--dataset", "d.csv", "--label-column", "target", "--out", "run", "--num-iters", 20, "--quiet")
        == 0
    )
    monkeypatch.chdir("/")
    assert train("--resume", tmp_path / "run" / "model.npz", "--num-iters", 40, "--quiet") == 0


@pytest.mark.parametrize("change", ["rows", "class names"])
def test_a_resume_on_data_that_changed_is_refused(tmp_path, train, capsys, change):
    """The checkpoint's preprocessing (class names, the training rows' mean and std) must be
    what the data gives now: a CSV rewritten with other rows, or other label names, was resumed
    on silently (exit 0), its weights fitted to inputs scaled otherwise."""
    _csv_with_label_first(tmp_path / "d.csv")
    args = ("--dataset", tmp_path / "d.csv", "--label-column", "target", "--out", tmp_path / "run")
    assert train(*args, "--num-iters", 20, "--quiet") == 0
    checkpoint = (tmp_path / "run" / "model.npz").read_bytes()
    lines = (tmp_path / "d.csv").read_text().splitlines()
    if change == "rows":
        lines = lines[: len(lines) // 2]
    else:
        header, *rows = lines
        lines = [header, *(f"c{row}" for row in rows)]  # the label is the first column
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert train("--resume", tmp_path / "run" / "model.npz", "--num-iters", 40, "--quiet") == 2
    err = capsys.readouterr().err.strip()
    differs = {"rows": "its training rows' mean or spread differ", "class names": "its class names differ"}[
        change
    ]
    assert len(err.splitlines()) == 1 and "was trained on other data" in err and differs in err
    assert (tmp_path / "run" / "model.npz").read_bytes() == checkpoint
