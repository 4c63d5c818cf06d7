"""A saved model you can use: load_model, predict / evaluate / export, and ONNX agreeing with predict."""

import csv

import numpy as np
import pytest

from twolayer_xp import TwoLayerNet, load_model
from twolayer_xp.app import cli, config, runs
from twolayer_xp.io import datasets
from twolayer_xp.io.checkpoint import CheckpointError


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "run"
    return runs.run(config.RunConfig(num_iters=300), out)


def _run_cli(*args):
    return cli.main([*map(str, args)])


def test_predict_on_raw_test_rows_gives_the_runs_accuracy(digits_run, tmp_path, capsys):
    model = load_model(digits_run.out_dir / "model.npz")
    X_raw, y, names = datasets.test_rows("digits")
    assert model.labels == names and model.preprocessing.scale == 16.0
    assert model.accuracy(X_raw, y) == digits_run.metrics["test_accuracy"]
    # exactly the inputs the run trained on, bit for bit
    np.testing.assert_array_equal(model.preprocess(X_raw), digits_run.dataset.X_test)
    # the CLI says the same, and writes one row per input
    assert _run_cli("predict", digits_run.out_dir / "model.npz", "digits", "--out", tmp_path / "p.csv") == 0
    assert f"accuracy {digits_run.metrics['test_accuracy']:.4f} on 300 rows" in capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert len(rows) == 300 and list(rows[0]) == ["row", "predicted", "label", "true_label"]
    assert np.mean([r["label"] == r["true_label"] for r in rows]) == digits_run.metrics["test_accuracy"]


def test_paths_given_with_a_tilde_are_expanded(digits_run, tmp_path, monkeypatch, capsys):
    """As train's --out and --data-dir are: the shell leaves '--out=~/p.csv' and quoted paths
    alone, and a folder literally named '~' must not appear in the current one."""
    import shutil

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    shutil.copy(digits_run.out_dir / "model.npz", tmp_path / "model.npz")
    np.savez(tmp_path / "rows.npz", X=datasets.test_rows("digits")[0][:5])
    assert _run_cli("predict", "~/model.npz", "~/rows.npz", "--out=~/p/p.csv") == 0
    assert len(list(csv.DictReader(open(tmp_path / "p" / "p.csv")))) == 5
    assert _run_cli("export", "~/model.npz", "~/m.onnx") == 0
    assert (tmp_path / "m.onnx").stat().st_size > 0 and not (tmp_path / "~").exists()
    capsys.readouterr()
    assert _run_cli("predict", "~/model.npz", "digits", "--out", "~nosuchuser-xyz/p.csv") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out '~nosuchuser-xyz/p.csv': cannot expand" in err


@pytest.mark.parametrize("target", ["MODEL", "INPUT", "export over MODEL", "folder", "FIFO"])
def test_an_output_never_replaces_what_it_reads_or_a_non_file(digits_run, tmp_path, capsys, target):
    """predict --out (and export's OUT.onnx) naming the model or the input would replace them
    with the output (a rename over them); a folder or a device (/dev/null) would be replaced by
    a file. Each is refused in one line, and left as it was."""
    import os
    import shutil
    import stat

    shutil.copy(digits_run.out_dir / "model.npz", tmp_path / "model.npz")
    np.savez(tmp_path / "rows.npz", X=datasets.test_rows("digits")[0][:5])
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo")
    model, rows = str(tmp_path / "model.npz"), str(tmp_path / "rows.npz")
    out, args = {
        "MODEL": (model, ["predict", model, rows, "--out", model]),
        "INPUT": (rows, ["predict", model, rows, "--out", rows]),
        "export over MODEL": (model, ["export", model, model]),
        "folder": (str(tmp_path / "folder"), ["predict", model, rows, "--out", str(tmp_path / "folder")]),
        "FIFO": (str(tmp_path / "fifo"), ["predict", model, rows, "--out", str(tmp_path / "fifo")]),
    }[target]
    before = os.lstat(out)
    content = open(out, "rb").read() if stat.S_ISREG(before.st_mode) else None
    capsys.readouterr()
    assert _run_cli(*args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and out in err, err
    after = os.lstat(out)
    assert (stat.S_IFMT(after.st_mode), after.st_ino) == (stat.S_IFMT(before.st_mode), before.st_ino)
    assert content is None or open(out, "rb").read() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "folder", "model.npz", "rows.npz"]


def test_the_plain_net_still_takes_preprocessed_inputs(digits_run):
    net = TwoLayerNet.load(digits_run.out_dir / "model.npz")
    assert (
        net.accuracy(digits_run.dataset.X_test, digits_run.dataset.y_test)
        == digits_run.metrics["test_accuracy"]
    )


def _digits_csv(path, label_names, with_labels=True, rows=None):
    X, y, _ = datasets._digits_rows()
    rows = slice(None) if rows is None else rows
    header = [f"p{i}" for i in range(64)] + (["digit"] if with_labels else [])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for x, label in zip(X[rows], y[rows], strict=True):
            w.writerow([int(v) for v in x] + ([label_names[label]] if with_labels else []))
    return path


NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def test_own_csv_train_then_predict_new_rows(tmp_path, capsys, train):
    data = _digits_csv(tmp_path / "digits.csv", NAMES)
    assert train("--dataset", data, "--out", tmp_path / "run", "--num-iters", 300, "--no-progress") == 0
    captured = capsys.readouterr()
    assert "note: digits.csv has no test split" in captured.err and "test accuracy" in captured.out
    model = load_model(tmp_path / "run" / "model.npz")
    assert model.labels == sorted(NAMES) and model.preprocessing.std is not None
    # the run's own test rows, raw, give the run's accuracy
    splits, _, _ = datasets.user_data.read(data)
    import json

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert model.accuracy(*splits["test"]) == pytest.approx(metrics["test_accuracy"])
    # new rows without a label column: predictions by name
    new = _digits_csv(tmp_path / "new.csv", NAMES, with_labels=False, rows=slice(0, 20))
    assert _run_cli("predict", tmp_path / "run" / "model.npz", new, "--out", tmp_path / "p.csv") == 0
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert len(rows) == 20 and set(r["label"] for r in rows) <= set(NAMES) and "true_label" not in rows[0]
    assert "accuracy" not in capsys.readouterr().out
    # evaluate needs labels
    assert _run_cli("evaluate", tmp_path / "run" / "model.npz", new) == 2
    assert "has no labels to evaluate" in capsys.readouterr().err


def test_unknown_labels_and_wrong_widths_are_one_line(digits_run, tmp_path, capsys, one_error_line):
    (tmp_path / "x.csv").write_text("a,b,y\n1,2,3\n")
    assert _run_cli("predict", digits_run.out_dir / "model.npz", tmp_path / "x.csv") == 2
    assert "has 3 feature columns; the model takes 64; if one of them holds labels" in one_error_line(capsys)
    np.savez(tmp_path / "x.npz", X_test=np.zeros((2, 64)), y_test=np.array([3, 11]))
    assert _run_cli("evaluate", digits_run.out_dir / "model.npz", tmp_path / "x.npz") == 2
    assert "labels the model does not know: 11" in one_error_line(capsys)


def test_a_checkpoint_without_preprocessing(digits_run, tmp_path):
    net = TwoLayerNet.load(digits_run.out_dir / "model.npz")
    net.metadata = {}
    bare = net.save(tmp_path / "bare.npz")
    with pytest.raises(CheckpointError, match="carries no preprocessing"):
        load_model(bare)
    # one written before preprocessing was kept: digits' scale and its mean image are enough
    net.metadata = {"config": {"dataset": "digits"}}
    old = net.save(tmp_path / "old.npz", arrays={"mean_image": digits_run.dataset.mean_image})
    X_raw, y, _ = datasets.test_rows("digits")
    assert load_model(old).accuracy(X_raw, y) == digits_run.metrics["test_accuracy"]


def test_bad_preprocessing_in_a_checkpoint_is_a_checkpoint_error(digits_run, tmp_path):
    net = TwoLayerNet.load(digits_run.out_dir / "model.npz")
    net.metadata["preprocessing"]["class_names"] = ["only one"]
    path = net.save(tmp_path / "bad.npz", arrays={"mean_image": digits_run.dataset.mean_image})
    with pytest.raises(CheckpointError, match="class_names must be 10 strings"):
        load_model(path)


def test_onnx_export_agrees_with_predict(digits_run, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the test extra has it)")
    assert _run_cli("export", digits_run.out_dir / "model.npz", tmp_path / "m.onnx") == 0
    assert "wrote" in capsys.readouterr().out
    model = load_model(digits_run.out_dir / "model.npz")
    X_raw, _, _ = datasets.test_rows("digits")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    scores, labels = session.run(["scores", "label"], {"X": X_raw.astype(np.float32)})
    np.testing.assert_array_equal(labels, model.predict(X_raw))
    np.testing.assert_allclose(scores, model.scores(X_raw), rtol=1e-5, atol=1e-5)


def test_onnx_export_of_standardized_own_data(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the test extra has it)")
    from twolayer_xp.app import export

    rng = np.random.default_rng(1)
    X = rng.normal(100.0, 30.0, (300, 5))
    np.savez(tmp_path / "d.npz", X_train=X, y_train=np.where(X[:, 0] > 100, "hi", "lo"))
    run = runs.run(config.RunConfig(dataset=str(tmp_path / "d.npz"), num_iters=200), tmp_path / "run")
    model = load_model(run.out_dir / "model.npz")
    export.export(model, tmp_path / "d.onnx")
    session = ort.InferenceSession(str(tmp_path / "d.onnx"), providers=["CPUExecutionProvider"])
    scores, labels = session.run(None, {"X": X.astype(np.float32)})
    np.testing.assert_array_equal(labels, model.predict(X.astype(np.float32)))
    np.testing.assert_allclose(scores, model.scores(X.astype(np.float32)), rtol=1e-4, atol=1e-4)


def test_predict_reads_labels_from_the_column_the_model_trained_with(tmp_path, capsys, train):
    """A model trained with --label-column NAME finds NAME in a labelled input by itself, wherever
    the column stands; an input with a different number of columns is one line, before parsing."""
    X, y, _ = datasets._digits_rows()
    with open(tmp_path / "data.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["digit", *(f"p{i}" for i in range(64))])
        w.writerows([NAMES[label], *map(int, x)] for x, label in zip(X, y, strict=True))
    args = ("--dataset", tmp_path / "data.csv", "--label-column", "digit", "--num-iters", 200, "--quiet")
    assert train(*args, "--out", tmp_path / "run") == 0
    capsys.readouterr()
    model = tmp_path / "run" / "model.npz"
    assert _run_cli("evaluate", model, tmp_path / "data.csv") == 0
    assert "accuracy" in capsys.readouterr().out
    (tmp_path / "short.csv").write_text("digit,a,b\none,1,2\n")
    assert _run_cli("predict", model, tmp_path / "short.csv") == 2
    assert "has 2 feature columns and its label column digit; the model takes 64" in capsys.readouterr().err


def test_a_model_trained_on_the_default_last_column_knows_it_by_name(tmp_path, capsys, train):
    """No --label-column: the label is the last column, and the model keeps its name. An input
    with that column and one feature fewer is refused (it was read as 4 features, the label one
    of them, exit 0); one with the label first is read by the name (its last feature was taken
    as labels, and refused as unknown ones)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)

    def write(name, header, rows):
        with open(tmp_path / name, "w", newline="") as f:
            csv.writer(f).writerows([header, *rows])

    write("ok.csv", ["a", "b", "c", "d", "label"], [[*x, label] for x, label in zip(X, y, strict=True)])
    write("narrow.csv", ["a", "b", "c", "label"], [[*x[:3], label] for x, label in zip(X, y, strict=True)])
    write("first.csv", ["label", "a", "b", "c", "d"], [[label, *x] for x, label in zip(X, y, strict=True)])
    assert (
        train("--dataset", tmp_path / "ok.csv", "--num-iters", 100, "--quiet", "--out", tmp_path / "run") == 0
    )
    model = tmp_path / "run" / "model.npz"
    assert load_model(model).label_column == "label"
    capsys.readouterr()
    assert _run_cli("predict", model, tmp_path / "narrow.csv", "--out", tmp_path / "n.csv") == 2
    assert "has 3 feature columns and its label column label; the model takes 4" in capsys.readouterr().err
    for name in ("ok", "first"):
        assert _run_cli("predict", model, tmp_path / f"{name}.csv", "--out", tmp_path / f"{name}-p.csv") == 0
    assert (tmp_path / "first-p.csv").read_text() == (tmp_path / "ok-p.csv").read_text()


def test_predict_refuses_rows_with_nan_instead_of_predicting_a_class(digits_run, tmp_path, capsys):
    """A NaN feature made every row it touched predict class 0, exit 0: the CPU path skipped
    the scan meant to spare a GPU a sync."""
    X = datasets.test_rows("digits")[0][:5].astype(float)
    X[1, 5] = np.nan
    np.savez(tmp_path / "rows.npz", X=X, y=np.arange(5))
    model, rows = digits_run.out_dir / "model.npz", tmp_path / "rows.npz"
    for args in (["predict", model, rows, "--out", tmp_path / "p.csv"], ["evaluate", model, rows]):
        assert _run_cli(*args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "X contains 1 non-finite value(s)" in err
    assert not (tmp_path / "p.csv").exists()


def test_a_repeated_header_name_keeps_the_label_found_by_position(tmp_path, capsys, train):
    """Header a,b,a: the label is the last column, but its name also names the first, so the
    model keeps no name and finds it by position, as before (by name it took column 0)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 2))
    with open(tmp_path / "dup.csv", "w", newline="") as f:
        csv.writer(f).writerows([["a", "b", "a"], *([*x, int(x[0] > 0)] for x in X)])
    assert (
        train("--dataset", tmp_path / "dup.csv", "--num-iters", 50, "--quiet", "--out", tmp_path / "run") == 0
    )
    assert load_model(tmp_path / "run" / "model.npz").label_column is None
    assert _run_cli("evaluate", tmp_path / "run" / "model.npz", tmp_path / "dup.csv") == 0
    assert "accuracy" in capsys.readouterr().out
