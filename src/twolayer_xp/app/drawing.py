"""Figures drawn beside the work: a command's PNGs come from a helper process started with the
command, which imports matplotlib (two thirds of a second, the largest fixed cost of a short run)
and warms its fonts while the command loads data, trains and talks to its study on another core.

A figure is ``path: (name, args, kwargs)``: ``plots.<name>(*args, **kwargs)`` drawn and saved
at ``path``, the same call in the helper or, where there is none, here. The helper is an
optimisation only: none started (a library call, no matplotlib), or one that died, and the
figures are drawn in this process, with the same results and the same warnings.

Helper protocol: pickles over its stdin/stdout (a trusted pipe to our own child). It reads a
{path: figure} dict, answers the list of lines saying what could not be drawn and the warnings
drawing raised, and exits at end of input. It ignores Ctrl-C and SIGHUP: the command gets them
and may still ask for the figures of an interrupted run.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import os
import pickle
import signal
import subprocess
import sys
import warnings
from pathlib import Path

from twolayer_xp.app import process
from twolayer_xp.errors import one_line

FigureCall = tuple  # (name of a plots function, args, kwargs)
CLOSE_WAIT_S = 30.0  # a helper still saving a figure when the command ends gets this long
# core.threads.ENV_VARIABLES (tested equal): importing that module loads numpy, which would
# delay the helper's start by the import it is there to overlap.
_ONE_THREAD = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}

_helper: Helper | None = None  # the command's, inside beside()


def save_figures(figures: dict[Path, FigureCall]) -> list[str]:
    """Draw and save each figure; return one line per figure that could not be drawn. A figure
    is a view of results already saved, so matplotlib missing or misconfigured (MPLBACKEND,
    SOURCE_DATE_EPOCH) is a warning beside a finished run, never its failure."""
    global _helper
    if _helper is not None and _helper.broken:  # a Ctrl-C cut a request short: it cannot be trusted
        _helper.close()
        _helper = None
    if _helper is not None:
        try:
            problems, caught = _helper.draw(figures)
        except Exception:  # it died, or its answer was garbled: draw here
            _helper.close()
            _helper = None
        else:
            for message in caught:
                warnings.warn(message, stacklevel=2)
            return problems
    return draw_here(figures)


def draw_here(figures: dict[Path, FigureCall]) -> list[str]:
    problems = []
    for path, (name, args, kwargs) in figures.items():
        try:
            from twolayer_xp.app import plots  # matplotlib is imported only when there is something to draw

            plots.save(getattr(plots, name)(*args, **kwargs), path)
        except Exception as exc:
            problems.append(f"{path} not drawn ({one_line(exc, named=True, limit=200)})")
    return problems


@contextlib.contextmanager
def beside(enabled: bool = True):
    """Figures saved inside this block are drawn by a helper process started now (if
    ``enabled`` and matplotlib is there to import); it ends with the block, after finishing the
    figure it may be saving."""
    global _helper
    if not enabled or _helper is not None or importlib.util.find_spec("matplotlib") is None:
        yield
        return
    try:
        _helper = Helper()
    except OSError:  # no process to spare (ulimit -u): draw here
        pass
    try:
        yield
    finally:
        if _helper is not None:
            _helper.close()
        _helper = None


def helpers() -> set[int]:
    """The pid of the live helper, if there is one: its start-up (matplotlib's import) is this
    command's own work, which ``core.threads`` does not count as a busy neighbour."""
    return {_helper.process.pid} if _helper is not None else set()


class Helper:
    """The child process that draws. It imports from exactly this process's ``sys.path`` (not
    the current folder first, as ``python -m`` would), so it runs this twolayer_xp and these
    libraries, whatever lies in the folder it was started from."""

    def __init__(self):
        self.busy = False  # sent figures it has not answered yet
        self.broken = False  # a request was cut short: the helper would wait for its rest
        start = (
            f"import sys; sys.path[:] = {sys.path!r}; from twolayer_xp.app import drawing; drawing.serve()"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", start],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # what fails there fails again here, in the fallback, and is said
            env=os.environ | _ONE_THREAD,  # it draws; it needs no BLAS threads
        )

    def draw(self, figures: dict[Path, FigureCall]) -> tuple[list[str], list[str]]:
        if self.busy:  # a Ctrl-C ended the last call while it waited: that answer comes first
            pickle.load(self.process.stdout)
            self.busy = False
        self.broken = True  # until the whole request is sent
        pickle.dump(figures, self.process.stdin)
        self.process.stdin.flush()
        self.broken, self.busy = False, True
        answer = pickle.load(self.process.stdout)
        self.busy = False
        return answer

    def close(self) -> None:
        """An idle (or broken) helper is stopped at once: it is saving nothing. One still
        saving (the command was interrupted while it waited) gets CLOSE_WAIT_S to finish its
        file; then, or at a Ctrl-C, SIGTERM, which its file writes hold off until the file is
        whole, so no temp file is left behind."""
        try:
            if self.busy and not self.broken:
                self.process.stdin.close()
                self.process.wait(CLOSE_WAIT_S)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:  # a Ctrl-C while waiting included: it is not ours to wait for any longer
            if self.process.poll() is None and self.busy and not self.broken:
                self.process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(CLOSE_WAIT_S)
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            for stream in (self.process.stdin, self.process.stdout):
                with contextlib.suppress(OSError):  # unsent bytes to a stopped helper
                    stream.close()


def serve() -> None:
    """The helper's life: import matplotlib and warm it up, then draw what it is sent until the
    end of its input. Answers go to a copy of its stdout; stdout itself is pointed at /dev/null,
    so nothing a library prints can garble them."""
    stdin, stdout = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    for name in ("SIGINT", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    gc.disable()  # matplotlib's import makes garbage it does not collect: 4% of it was collecting
    _skip_set_signatures()
    if not _warm_up():  # let the command draw in-process, with matplotlib as it is, and say why
        os._exit(1)
    gc.enable()
    while True:
        try:
            figures = pickle.load(stdin)
        except EOFError:  # the command is done with us: skip tearing matplotlib down
            os._exit(0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            for note in process.LIBRARY_NOTES if not sys.warnoptions else ():  # sent on as UserWarnings
                warnings.simplefilter("ignore", note)
            problems = draw_here(figures)
        pickle.dump((problems, [str(w.message) for w in caught]), stdout)
        stdout.flush()


def _skip_set_signatures() -> None:
    """As matplotlib is imported, every Artist subclass gets a generated ``set()`` signature and
    docstring listing its properties: a quarter of the import, for introspection that a process
    which only saves PNGs never does. Skipped here: ``set()`` itself is inherited and works the
    same, and the figures are byte for byte those drawn in-process (tested); if drawing fails
    anyway, the helper exits and the command draws with matplotlib untouched."""
    from matplotlib import artist

    if hasattr(artist.Artist, "_update_set_signature_and_docstring"):
        artist.Artist._update_set_signature_and_docstring = classmethod(lambda cls: None)


def _warm_up() -> bool:
    """What a first figure pays once: matplotlib's import, its font list, a font's glyphs, Agg.
    False if that fails."""
    import io

    try:
        from twolayer_xp.app import plots

        figure = plots.Figure(figsize=(1, 1))
        figure.subplots().set_title("0.1 Loss")
        figure.savefig(io.BytesIO(), format="png")
    except Exception:
        return False
    return True
