"""twolayer-xp train: flags, help, exit codes and one-line errors (whole runs: test_runs.py)."""

import subprocess
import sys

import pytest

from twolayer_xp import TwoLayerNet
from twolayer_xp.app import cli


def test_module_entry_point_and_progress_bar(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "twolayer_xp", "train", "--num-iters", "150", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "150/150" in done.stderr and "samples/s" in done.stderr  # tqdm writes to stderr
    assert "test accuracy" in done.stdout


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as excinfo:
        cli.main(["train", "--help"])
    assert excinfo.value.code == 0
    text = capsys.readouterr().out
    for flag in [
        "--device",
        "--backend",
        "--dtype",
        "--seed",
        "--dataset",
        "--data-dir",
        "--out",
        "--resume",
        "--quiet",
        "--no-progress",
        "--learning-rate",
        "--learning-rate-decay",
        "--reg",
        "--num-iters",
        "--batch-size",
        "--hidden-size",
        "--verbose",
        "learning_rate=1.0",
    ]:
        assert flag in text, flag


def test_verbose_prints_cs231n_lines(tmp_path, capsys, train):
    assert train("--out", tmp_path, "--num-iters", 250, "--verbose") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("iteration 0 / 250: loss ") and out[2].startswith("iteration 200 / 250")


@pytest.mark.parametrize(
    "args,words",
    [
        (
            ["--dataset", "imagenet"],
            "dataset must be one of digits, cifar10, mnist, fashion-mnist or a .npz/.csv file; got 'imagenet'",
        ),
        (["--hidden-size", "0"], "hidden_size must be a positive int, got 0"),
        (["--hidden-size", "-3"], "hidden_size must be a positive int"),
        (["--batch-size", "0"], "--batch-size"),
        (["--num-iters", "0"], "--num-iters"),
        (["--num-iters", "ten"], "num_iters must be an int, got 'ten'"),
        (["--learning-rate", "0"], "learning_rate must be > 0"),
        (["--lr=-1e-3"], "learning_rate must be > 0"),
        (["--reg", "-1"], "reg must be >= 0"),
        (["--std", "nan"], "std must be finite"),
        (["--dtype", "float16"], "invalid choice: 'float16'"),
        (["--device", "tpu"], "device must be 'cpu', 'cuda' or 'cuda:N'"),
        (["--num-train", "100"], "--num-train applies to cifar10, mnist, fashion-mnist only, not to digits"),
        (["--label-column", "y"], "--label-column applies to a .csv/.npz only, not to digits"),
        (["--seed", "-1"], "seed must be an int >= 0"),
        (["--std", "1e308"], "std is so large that the initial weights or scores overflow float32"),
        (["--hidden-size", "10000000000"], "TiB of memory (hidden_size=10000000000, batch_size=100"),
        (["--batch-size", "100000000000000"], "batch_size=100000000000000, 1797 rows) but"),
    ],
)
def test_bad_flags_give_one_line_and_exit_2(tmp_path, capsys, args, words, train, one_error_line):
    with pytest.raises(SystemExit) as excinfo:
        code = train("--out", tmp_path / "run", "--quiet", *args)
        raise SystemExit(code)
    assert excinfo.value.code == 2
    assert words in one_error_line(capsys)


def test_cuda_without_cupy(tmp_path, capsys, monkeypatch, train, one_error_line):
    from twolayer_xp.backend.cupy_lib import check_cuda

    check_cuda.cache_clear()
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert train("--device", "cuda", "--out", tmp_path, "--quiet") == 2
    check_cuda.cache_clear()
    line = one_error_line(capsys)
    assert "CuPy is not installed" in line and "pip install" in line


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_cuda_without_cupy_is_said_before_any_download(
    tmp_path, capsys, monkeypatch, command, one_error_line
):
    """A GPU run of a downloaded set on a machine without CuPy: the missing library first, not a
    163 MB download (or a network error) and then the missing library."""
    if command == "sweep":
        pytest.importorskip("optuna")
    from twolayer_xp.backend.cupy_lib import check_cuda

    check_cuda.cache_clear()
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setenv("TWOLAYER_XP_DATA", str(tmp_path / "data"))
    args = [command, "--dataset", "cifar10", "--device", "cuda", "--out", str(tmp_path / "out"), "--quiet"]
    try:
        assert cli.main(args) == 2
    finally:
        check_cuda.cache_clear()
    assert "CuPy is not installed" in one_error_line(capsys)
    assert not (tmp_path / "data").exists() and not (tmp_path / "out").exists()


def test_cuda_on_this_machine_fails_cleanly(tmp_path):
    from twolayer_xp import cuda_available

    if cuda_available():
        pytest.skip("this machine has a GPU")
    done = subprocess.run(
        [sys.executable, "-m", "twolayer_xp", "train", "--device", "cuda", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "fix:" in done.stderr


def test_out_that_is_not_writable(tmp_path, capsys, train, one_error_line):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert train("--out", blocker / "run", "--quiet") == 2
    assert "a-file" in one_error_line(capsys)


@pytest.mark.parametrize("content", [b"garbage", b""])
def test_resume_from_something_that_is_not_a_checkpoint(tmp_path, capsys, content, train, one_error_line):
    bad = tmp_path / "model.npz"
    bad.write_bytes(content)
    assert train("--resume", bad, "--quiet") == 2
    assert "not a readable twolayer-xp checkpoint" in one_error_line(capsys)


def test_resume_of_a_model_saved_outside_a_run(tmp_path, capsys, train, one_error_line):
    TwoLayerNet(64, 5, 10, rng=0).save(tmp_path / "model.npz")
    assert train("--resume", tmp_path / "model.npz", "--quiet") == 2
    assert "not written by a twolayer-xp run" in one_error_line(capsys)


def test_cifar10_missing_without_network(tmp_path, capsys, monkeypatch, train, one_error_line):
    import pooch

    def offline(*args, **kwargs):
        raise ConnectionError("Max retries exceeded")

    monkeypatch.setattr(pooch, "retrieve", offline)
    assert (
        train("--dataset", "cifar10", "--data-dir", tmp_path / "none", "--out", tmp_path / "run", "--quiet")
        == 2
    )
    assert "could not download CIFAR-10" in one_error_line(capsys)


def test_cifar10_corrupt_batch(tmp_path, capsys, cifar, train, one_error_line):
    folder = cifar.write_cifar(tmp_path / "data")
    (folder / "test_batch").write_bytes(b"\x80\x02}q\x00(")  # a pickle cut short
    args = [
        "--dataset",
        "cifar10",
        "--data-dir",
        tmp_path / "data",
        "--num-train",
        100,
        "--num-val",
        10,
        "--num-test",
        5,
        "--out",
        tmp_path / "run",
        "--quiet",
    ]
    assert train(*args) == 2
    assert "test_batch is not a readable CIFAR-10 batch" in one_error_line(capsys)


def test_out_of_memory_anywhere_is_one_line(tmp_path, capsys, monkeypatch, train, one_error_line):
    from twolayer_xp.app import runs

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(runs, "load_data", exhausted)
    assert train("--out", tmp_path / "run", "--quiet") == 2
    assert "out of memory" in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_torch_out_of_memory_is_one_line(tmp_path, capsys, monkeypatch, train, one_error_line):
    """torch's out-of-memory error is a RuntimeError, not a MemoryError (CuPy's is)."""
    torch = pytest.importorskip("torch")
    from twolayer_xp.app import runs

    def exhausted(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(runs, "load_data", exhausted)
    assert train("--out", tmp_path / "run", "--quiet") == 2
    assert "out of memory" in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_num_train_past_the_data(tmp_path, capsys, cifar, train, one_error_line):
    cifar.write_cifar(tmp_path / "data", rows_per_batch=60, test_rows=40)  # 300 training rows
    args = ["--dataset", "cifar10", "--data-dir", tmp_path / "data", "--num-train", 1000, "--num-val", 10]
    assert train(*args, "--out", tmp_path / "run", "--quiet") == 2
    line = one_error_line(capsys)
    assert "num_train + num_val = 1010 but the training batches hold only 300 images" in line
