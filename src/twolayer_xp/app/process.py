"""How a command meets its process: signals, the terminal, the address-space limit.

- SIGTERM (Slurm, Kubernetes, ``kill``) and SIGHUP (the terminal closed) take the path Ctrl-C
  takes: a ``KeyboardInterrupt`` raised in the main thread, so a run saves what it can, says
  so, releases its locks, and the command exits 128 + the signal's number. One more signal
  while it stops (an impatient second Ctrl-C) is noted and waits for that; the next one after
  it cuts the stop short.
- Text for the terminal goes through ``say`` or a ``Guarded`` stream: what cannot be encoded is
  written with backslash escapes, and a closed pipe, a full disk or a closed stream drops the
  text quietly. Writing to the terminal never turns a finished run into a failure.
"""

from __future__ import annotations

import _thread
import contextlib
import functools
import os
import signal
import sys
import threading
import warnings

SIGNALS = ("SIGTERM", "SIGHUP")  # handled like SIGINT; names, since SIGHUP is POSIX-only
MIN_ADDRESS_SPACE = 1 << 30  # numpy's BLAS reserves buffers per thread; below this, start-up can hang

_received: list[int] = []  # the signals this command received, in order
_noted: list[int] = []  # one that came while it stopped: noted, not raised
_cut: list[int] = []  # the one after it, which cut the stop short; any later one only counts
RAISE_AGAIN_AFTER_S = 0.001  # a swallowed stop is sent again this long after (``_raise_again``)
STOPPING_NOTE = "twolayer-xp: stopping: it finishes what it is saving first (Ctrl-C again quits at once)"


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C's KeyboardInterrupt would be."""


@contextlib.contextmanager
def command(final: bool = False):
    """For the duration of one command: SIGTERM and SIGHUP as Ctrl-C, warnings as one line each,
    the environment checked. What it changed is put back on the way out (a test, a notebook or
    any other caller of ``cli.main`` keeps its own handlers), except a missing stderr, which
    stays /dev/null. ``final``: the process ends with the command (the CLI's own run); once a
    signal has stopped it, later ones are ignored instead: Python's default would end the
    exiting interpreter by the signal (status -2, not 130)."""
    _received.clear()
    _noted.clear()
    _cut.clear()
    if sys.stderr is None:  # started with 2>&-: a library that writes to it on import would fail
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the process's life (numpy 2.0.0-2.0.1's f2py)
    saved_signals = interrupt_on_signals()
    saved_show, saved_unraisable = warnings.showwarning, sys.unraisablehook
    warnings.showwarning = _show_warning
    sys.unraisablehook = functools.partial(_raise_again, saved_unraisable)
    try:
        check_environment()
        yield
    finally:
        warnings.showwarning, sys.unraisablehook = saved_show, saved_unraisable
        for signum, handler in saved_signals.items():
            signal.signal(signum, signal.SIG_IGN if final and _received else handler)


def interrupt_on_signals() -> dict:
    """Make SIGINT raise ``KeyboardInterrupt``, SIGTERM and SIGHUP ``Terminated``, in the main
    thread, through ``_raise``; return the handlers they had. Only Python's defaults (SIGINT's
    KeyboardInterrupt, the others' dying silently) are replaced: a signal someone chose to
    ignore (``nohup`` ignores SIGHUP) or to handle stays as it is."""
    saved = {}
    if threading.current_thread() is not threading.main_thread():
        return saved  # only the main thread may set handlers (and only it receives signals)
    for name in ("SIGINT", *SIGNALS):
        signum = getattr(signal, name, None)
        default = signal.default_int_handler if name == "SIGINT" else signal.SIG_DFL
        if signum is not None and signal.getsignal(signum) == default:
            saved[signum] = signal.signal(signum, _raise)
    return saved


def _raise(signum, frame) -> None:
    """Stop the command. A signal that comes once it is stopping (a signal already stopped it:
    its clean-up runs, a checkpoint or best/ saved, the study's connections closed, the figure
    helper asked for its figures) is noted once and not raised: raised there, it cut that
    short, and a library caught it and printed its traceback (SQLAlchemy closing a connection).
    A signal after the noted one stops even that; any later one only counts (raised again and
    again, the signals of a burst each cut the way out somewhere else, and the command said
    several contradictory things). Every one counts for the exit status."""
    stopping = bool(_received)
    _received.append(signum)
    if stopping and not _noted:
        _noted.append(signum)
        _note(STOPPING_NOTE)
        return
    if stopping:
        if _cut:
            return
        _cut.append(signum)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(f"received {signal.Signals(signum).name}")


def _raise_again(hook, unraisable) -> None:
    """``sys.unraisablehook`` during a command: a stop ``_raise`` raised where Python cannot
    raise (a weakref callback or a ``__del__`` running just then: SQLAlchemy's pool has them),
    so that Python printed "Exception ignored in ..." and the command ran on, is sent again: it
    stopped nothing, so it is taken back, and the repeat is raised in the command a moment
    later. Anything else goes to ``hook``, the one there was."""
    swallowed = isinstance(unraisable.exc_value, KeyboardInterrupt) and _received
    if not swallowed or threading.current_thread() is not threading.main_thread():
        hook(unraisable)
        return
    signum = _received.pop()
    if _cut:
        _cut.pop()
    # Sent from another thread a moment later: sent from here, its handler would run at once,
    # still inside this hook, and be swallowed again.
    again = threading.Timer(RAISE_AGAIN_AFTER_S, _thread.interrupt_main, (signum,))
    again.daemon = True
    again.start()


def _note(text: str) -> None:
    """``text`` as a line on stderr, from a signal handler: one unbuffered write (a buffered one
    could land inside a write of the interrupted code's, which raises), on a line of its own
    on a terminal (a progress bar may hold the line)."""
    try:
        fd = sys.stderr.fileno()
        os.write(fd, (("\n" if os.isatty(fd) else "") + text + "\n").encode("ascii", "backslashreplace"))
    except (OSError, ValueError, AttributeError):  # no stderr, closed, or not a file (a capture)
        pass


def cut_short() -> bool:
    """Whether a signal cut this command's stop short (it then said nothing more of its own)."""
    return bool(_cut)


def exit_code() -> int:
    """The exit status of an interrupted command: 128 + the last signal it received (130: Ctrl-C)."""
    return 128 + (_received[-1] if _received else signal.SIGINT)


def check_environment() -> None:
    """Variables that libraries parse while they are imported, checked first: a malformed
    ``SOURCE_DATE_EPOCH`` (reproducible builds' clock, read by numpy.f2py and matplotlib) would
    fail an import halfway through a run; it is dropped with a warning instead."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is not None and not epoch.strip().lstrip("-").isdigit():
        say(
            f"twolayer-xp: warning: SOURCE_DATE_EPOCH={epoch!r} is not a whole number of seconds; ignored",
            err=True,
        )
        del os.environ["SOURCE_DATE_EPOCH"]


def check_address_space() -> None:
    """A ValueError saying so if ``ulimit -v`` leaves less address space than start-up needs:
    numpy's BLAS then fails to allocate its buffers and can hang instead of raising."""
    try:
        import resource
    except ImportError:  # not POSIX
        return
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY and soft < MIN_ADDRESS_SPACE:
        raise ValueError(
            f"the address space is limited to {soft >> 20} MiB (ulimit -v {soft >> 10}); twolayer-xp "
            f"needs at least {MIN_ADDRESS_SPACE >> 20} MiB: raise the limit (ulimit -v {MIN_ADDRESS_SPACE >> 10})"
        )


# A library's deprecation notes (matplotlib's of pyparsing's names) are for its callers'
# developers, not for the user: not shown unless asked for with -W or PYTHONWARNINGS (this
# package raises none; FutureWarning, what a user must act on, is shown).
LIBRARY_NOTES = (DeprecationWarning, PendingDeprecationWarning)


def _show_warning(message, category=UserWarning, *args, **kwargs) -> None:
    """A Python warning as one ``twolayer-xp: warning:`` line on stderr (LIBRARY_NOTES aside)."""
    if issubclass(category, LIBRARY_NOTES) and not sys.warnoptions:
        return
    say(f"twolayer-xp: warning: {message}", err=True)


def say(text: str, *, err: bool = False) -> None:
    """Print one line on stdout (or stderr), never raising (see ``Guarded``)."""
    stream = Guarded(sys.stderr if err else sys.stdout)
    stream.write(text + "\n")
    stream.flush()


class Guarded:
    """A text stream whose writes never raise. Characters its encoding lacks (a non-UTF-8 path,
    an ASCII locale) are written as backslash escapes; once a write fails (closed pipe, full
    disk, closed or missing stream) the stream's file descriptor is pointed at /dev/null, so
    neither later writes nor the interpreter's final flush fail, and the text is dropped."""

    def __init__(self, stream):
        self.stream = stream

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        if self.stream is not None:
            try:
                self.stream.write(text.encode(self.encoding, "backslashreplace").decode(self.encoding))
            except (OSError, ValueError):  # ValueError: the stream was closed
                self._drop()
        return len(text)

    def flush(self) -> None:
        if self.stream is not None:
            try:
                self.stream.flush()
            except (OSError, ValueError):
                self._drop()

    def isatty(self) -> bool:
        try:
            return self.stream is not None and self.stream.isatty()
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        if self.stream is None:
            raise OSError("no stream")
        return self.stream.fileno()

    def _drop(self) -> None:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass  # not a file descriptor (a test's capture): nothing flushes it at exit
        self.stream = None
