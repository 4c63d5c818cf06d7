"""Figures drawn by a helper process beside the command (app.drawing): the same PNGs and the same
problem lines as drawing them in-process, a helper that dies is replaced by in-process drawing,
and no helper outlives its command."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from twolayer_xp.app import drawing

pytest.importorskip("matplotlib")
PNG = b"\x89PNG\r\n\x1a\n"
SWEEP = ([(1e-3, 1e-4, 0.5, 0), (3e-3, 1e-5, 0.7, 1)], [(0.5, 0.1, None, 3)], (3e-3, 1e-5, 0.7, 1),
         (1e-5, 1e-1), (1e-6, 1e-1), "a study")  # fmt: skip
HISTORY = {"loss_history": [2.3, 2.1, 1.9], "train_acc_history": [0.1, 0.3], "val_acc_history": [0.12, 0.25]}


def figures(folder):
    return {
        folder / "loss.png": ("history_figure", (HISTORY, "test"), {"resumed_at": None}),
        folder / "weights.png": ("weights_figure", (np.ones((64, 4)), (8, 8)), {}),
        folder / "sweep.png": ("sweep_figure", SWEEP, {"pruned": [(1e-2, 1e-3, 0.2, 2, 1)]}),
    }


def test_the_helper_draws_what_drawing_here_draws(tmp_path):
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir(), there.mkdir()
    assert drawing.draw_here(figures(here)) == []
    with drawing.beside():
        helper = drawing._helper
        assert helper is not None and helper.process.poll() is None
        assert drawing.save_figures(figures(there)) == []
        assert drawing._helper is helper  # it drew them: no fallback
    assert helper.process.returncode is not None  # ended with the block
    for name in ("loss.png", "weights.png", "sweep.png"):
        assert (there / name).read_bytes().startswith(PNG)
        assert (there / name).read_bytes() == (
            here / name
        ).read_bytes()  # its lighter matplotlib draws the same
    assert sorted(p.name for p in there.iterdir()) == ["loss.png", "sweep.png", "weights.png"]  # no temp left


def test_a_figure_that_cannot_be_saved_is_the_same_line_from_the_helper(tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    bad = {blocked / "loss.png": figures(tmp_path)[tmp_path / "loss.png"]}
    here = drawing.draw_here(bad)
    with drawing.beside():
        there = drawing.save_figures(bad)
        assert drawing._helper is not None  # a figure's failure is not the helper's
    assert len(here) == 1 and "not drawn" in here[0] and there == here


def test_a_helper_that_died_is_replaced_by_drawing_here(tmp_path):
    with drawing.beside():
        drawing._helper.process.kill()
        drawing._helper.process.wait()
        assert drawing.save_figures(figures(tmp_path)) == []
        assert drawing._helper is None  # not asked again
    assert (tmp_path / "loss.png").read_bytes().startswith(PNG)


def test_figures_asked_after_an_interrupted_wait_get_their_own_answer(tmp_path):
    """A Ctrl-C while the command waited for the helper, then the interrupted run's figures:
    the earlier answer is read first, so the new one is not mistaken for it."""
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    first = {blocked / "loss.png": figures(tmp_path)[tmp_path / "loss.png"]}
    with drawing.beside():
        helper = drawing._helper
        helper.busy = True  # as if draw() had been interrupted after sending
        drawing.pickle.dump(first, helper.process.stdin)
        helper.process.stdin.flush()
        assert drawing.save_figures(figures(tmp_path)) == []  # not the first request's problem
    assert (tmp_path / "loss.png").read_bytes().startswith(PNG)


def test_a_request_cut_short_by_ctrl_c_does_not_hang_the_next_one(tmp_path, monkeypatch):
    """Ctrl-C while a big request was still being sent (the helper still importing): the
    helper waits for the rest. Before, the interrupted run's figures then waited for an answer
    that could never come; now the helper is stopped and they are drawn here."""
    real_dump = drawing.pickle.dump

    def half_then_ctrl_c(obj, stream):
        stream.write(drawing.pickle.dumps(obj)[:20])
        raise KeyboardInterrupt

    done = []
    with drawing.beside():
        monkeypatch.setattr(drawing.pickle, "dump", half_then_ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            drawing.save_figures(figures(tmp_path))
        monkeypatch.setattr(drawing.pickle, "dump", real_dump)
        again = threading.Thread(
            target=lambda: done.append(drawing.save_figures(figures(tmp_path))), daemon=True
        )
        again.start()
        again.join(60)
        assert done == [[]], "the figures after the interruption were not drawn"
        assert drawing._helper is None  # drawn here
    assert (tmp_path / "loss.png").read_bytes().startswith(PNG)


def test_the_helper_imports_what_this_process_imports_not_the_current_folder(tmp_path, monkeypatch):
    """``python -m`` puts the current folder first on the path: a pickle.py (or twolayer_xp/)
    there made the helper die or run other code. It gets this process's sys.path instead."""
    (tmp_path / "pickle.py").write_text("raise SystemExit('not the real pickle')\n")
    monkeypatch.chdir(tmp_path)
    with drawing.beside():
        helper = drawing._helper
        assert drawing.save_figures(figures(tmp_path)) == []
        assert drawing._helper is helper  # the helper drew them


def test_without_matplotlib_no_helper_is_started(monkeypatch):
    monkeypatch.setattr(drawing.importlib.util, "find_spec", lambda name: None)
    with drawing.beside():
        assert drawing._helper is None


def test_the_command_draws_its_figures_without_importing_matplotlib(tmp_path):
    """The real command: matplotlib is imported by the helper, not by the process that trains
    (its import is what the helper overlaps with the work), and the figures are there."""
    out = tmp_path / "run"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    args = [
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "twolayer_xp",
        "train",
        "--num-iters",
        "3",
        "--out",
        str(out),
    ]
    done = subprocess.run([*args, "--no-progress"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {
        line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")
    }
    assert "numpy" in imported and "matplotlib" not in imported
    assert (out / "loss.png").read_bytes().startswith(PNG) and (out / "weights.png").read_bytes().startswith(
        PNG
    )
    assert "twolayer-xp: warning" not in done.stderr


def test_the_helper_starts_with_one_thread_for_each_library_the_thread_policy_knows():
    from twolayer_xp.core import threads

    assert set(drawing._ONE_THREAD) == set(threads.ENV_VARIABLES)


def test_ctrl_c_while_the_helper_finishes_is_the_commands_exit_code(
    tmp_path, monkeypatch, capsys, one_error_line
):
    """The real command (argv None): a Ctrl-C while the helper finished a figure after the run
    came out of main() as a traceback; it is one line and exit 130."""
    import gc

    from twolayer_xp.app import cli

    def interrupted(self):
        self.process.kill()
        self.process.wait()
        raise KeyboardInterrupt

    monkeypatch.setattr(drawing.Helper, "close", interrupted)
    monkeypatch.setattr(
        sys, "argv", ["twolayer-xp", "train", "--num-iters", "3", "--out", str(tmp_path / "r"), "--quiet"]
    )
    try:
        assert cli.main() == 130
    finally:
        gc.unfreeze()  # main() froze this process's objects, as the real command's last act
    assert "interrupted while the figure helper" in one_error_line(capsys)
    assert (tmp_path / "r" / "model.npz").exists()


def test_pruned_trials_are_grouped_by_the_epoch_they_stopped_at():
    """One legend entry per epoch a pruner stopped trials at, with how many: a pruner stops
    trials at a few epochs only, so the figure names them once, not beside every ring."""
    from twolayer_xp.app import plots

    pruned = [(1e-2, 1e-3, 0.2, 2, 8), (2e-2, 1e-3, 0.3, 4, 24), (3e-2, 1e-4, 0.2, 5, 8)]
    figure = plots.sweep_figure(*SWEEP, pruned=pruned)
    space = figure.axes[0]
    labels = [t.get_text() for t in space.get_legend().get_texts()]
    assert labels[-2:] == ["pruned at epoch 8 (2)", "pruned at epoch 24 (1)"]
    assert not space.texts  # no label beside each point
    assert "2 completed, 3 pruned trials" in space.get_title()


def test_many_pruning_epochs_share_a_few_legend_entries():
    """median's ~10 report points: the legend names ranges of epochs, at most PRUNED_GROUPS,
    their counts adding up to every pruned trial, and the shades stay apart."""
    from twolayer_xp.app import plots

    pruned = [(1e-2 * (1 + k), 1e-3, 0.2, k, 2 * (1 + k % 9)) for k in range(90)]  # epochs 2, 4, ..., 18
    space = plots.sweep_figure(*SWEEP, pruned=pruned).axes[0]
    labels = [t.get_text() for t in space.get_legend().get_texts() if t.get_text().startswith("pruned")]
    assert len(labels) == plots.PRUNED_GROUPS and labels[0].startswith("pruned at epochs 2-")
    assert sum(int(label.rsplit("(", 1)[1].rstrip(")")) for label in labels) == 90
    greys = [c.get_edgecolor()[0][0] for c in space.collections if c.get_label().startswith("pruned")]
    assert min(abs(a - b) for a, b in zip(greys, greys[1:], strict=False)) > 0.1
