"""Files: written so that nothing a user saved is ever half-written or removed, read only when
they are regular files of a plausible size, and folders held by one run (or worker) at a time."""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import signal
import socket
import stat
import tempfile
import threading
import time
from pathlib import Path

# Every temp file this package writes is named ".<target>.<random>" + TEMP_SUFFIX, beside its
# target: cleanup removes only names of this form (never a user's ".notes.tmp").
TEMP_SUFFIX = ".twolayer-xp-part"

# atomic_write inside together(): the renames wait until every file of the unit is written.
_unit: contextvars.ContextVar[list | None] = contextvars.ContextVar("twolayer_xp_unit", default=None)


# Signals whose Python handler may raise (Ctrl-C's KeyboardInterrupt, a command's SIGTERM/SIGHUP).
_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
_held: list[int] | None = None  # the signals received inside uninterrupted(), while one is open


@contextlib.contextmanager
def uninterrupted():
    """A block that a signal does not cut in two: Ctrl-C, SIGTERM or SIGHUP received inside it
    waits, and is delivered (to the handlers there were, so a KeyboardInterrupt or the process's
    end) as the block ends; several, one after the other (``_deliver``). An
    exception raised halfway through a write would leave the writer in a state its own cleanup
    trips over (numpy's savez then raises zipfile's "Can't close the ZIP file", which hides the
    interruption), and a caller's record of what it saved would not match the file. Nested
    blocks are one block; outside the main thread (which alone receives signals) it changes
    nothing."""
    global _held
    if _held is not None or threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    saved: dict = {}
    try:
        _held = held
        _blocked(_hold, saved, held)
        yield
    finally:
        _held = None
        _blocked(_restore, saved)
        _deliver(held)  # even if the block failed: the user's Ctrl-C is the news


def _deliver(held: list[int]) -> None:
    """Each held signal to the handler it has now, in order, all of them (a command's handler
    counts each, and notes or raises as its stop goes: app/process.py); then the first exception
    a handler raised (usually KeyboardInterrupt) is raised from here. A default action (the
    process ends) is the system's."""
    first = None
    for signum in held:
        handler = signal.getsignal(signum)
        if callable(handler):
            try:
                handler(signum, None)
            except BaseException as exc:  # noqa: BLE001 - raised below, once every one was delivered
                first = first or exc
        elif handler == signal.SIG_DFL:
            signal.raise_signal(signum)
    if first is not None:
        raise first


def _blocked(change, *args) -> None:
    """``change(*args)`` with _SIGNALS blocked where the system can (POSIX): a signal arriving
    while handlers are swapped waits and then meets the new ones, not a half-swapped set."""
    mask = getattr(signal, "pthread_sigmask", None)
    previous = mask(signal.SIG_BLOCK, _SIGNALS) if mask else None
    try:
        change(*args)
    finally:
        if mask:
            mask(signal.SIG_SETMASK, previous)


def _hold(saved: dict, held: list) -> None:
    for signum in _SIGNALS:
        if signal.getsignal(signum) not in (signal.SIG_IGN, None):  # None: not set from Python
            saved[signum] = signal.signal(signum, lambda signum, frame: held.append(signum))


def _restore(saved: dict) -> None:
    with contextlib.ExitStack() as restores:  # each one, even if a handler raises during another
        for signum, handler in saved.items():
            restores.callback(signal.signal, signum, handler)


class FileRefused(ValueError):
    """A path that is not a regular file of a plausible size (a FIFO, a device, a folder...)."""


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(binary_file)`` on a temp file beside ``path``, fsync it, rename it over ``path``.

    A crash or kill at any point leaves either the old file or the new one, never a mix. Inside
    ``together()`` the rename waits for the other files of the unit.
    """
    with uninterrupted():
        _atomic_write(Path(path), write)


def _atomic_write(path: Path, write) -> None:
    check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))  # mkstemp makes 0600; a saved file gets the usual mode
        unit = _unit.get()
        if unit is None:
            os.replace(tmp, path)
        else:
            unit.append((tmp, path))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def together():
    """Files written (by ``atomic_write``) inside this block appear together: all of them are
    written and synced first, then renamed in one go; if any write fails, none is replaced."""
    unit: list = []
    token = _unit.set(unit)
    try:
        yield
    except BaseException:
        for tmp, _ in unit:
            Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        _unit.reset(token)
    with uninterrupted():  # all the renames, or (a crash aside) none
        for tmp, path in unit:
            os.replace(tmp, path)


def remove_stale_temps(folder: Path, older_than_s: float = 0.0) -> None:
    """Remove the temp files a killed ``atomic_write`` left in ``folder``: call it holding the
    lock every writer there holds, or give ``older_than_s``, the age (since the last write) past
    which a temp file cannot be a live writer's. Only regular files named by this package go;
    nothing else is touched."""
    now = time.time()
    for stale in folder.glob(f".*{TEMP_SUFFIX}"):
        try:
            if stale.is_file() and not stale.is_symlink() and now - stale.stat().st_mtime >= older_than_s:
                stale.unlink(missing_ok=True)
        except FileNotFoundError:
            pass  # its writer renamed it meanwhile


def _mode_for(path: Path) -> int:
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_json(path: str | os.PathLike, data: dict) -> None:
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


# -- reading: regular files of a plausible size only --------------------------------------------

_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def open_regular(path: str | os.PathLike, max_bytes: int):
    """``path`` opened for binary reading, after checking (on the open file itself, so nothing can
    be swapped in between) that it is a regular file of at most ``max_bytes``. A FIFO is opened
    without waiting for a writer and refused; so are devices (``/dev/zero``), folders, sockets,
    and links to any of them. FileNotFoundError if it is missing; FileRefused otherwise."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        _check_regular(path, os.fstat(fd), max_bytes)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_replaceable(path: str | os.PathLike, what: str | None = None) -> None:
    """FileRefused unless ``path`` is missing or a regular file (links followed): writing renames
    a new file over it, which would put a file where a folder or a device such as /dev/null
    was. ``what``: the flag or argument it came from, named in the message."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
        named = f"{what} {path}" if what else str(path)
        raise FileRefused(f"{named} is {kind}, not a file to write; it is left as it is (name a file)")


def check_regular(path: str | os.PathLike, max_bytes: int) -> None:
    """Like ``open_regular`` for a file that another library opens by name (links followed)."""
    _check_regular(path, os.stat(path), max_bytes)


def _check_regular(path, st: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
        raise FileRefused(f"{path} is {kind}, not a regular file")
    if st.st_size > max_bytes:
        raise FileRefused(f"{path} is {st.st_size} bytes; at most {max_bytes} are expected there")


def expand_path(value: str | os.PathLike, what: str) -> Path:
    """``value`` as a Path with a leading ``~`` or ``~user`` expanded; a ValueError naming
    ``what`` (the flag or variable it came from) if it is empty or cannot be expanded."""
    text = os.fspath(value)
    if text == "":
        raise ValueError(f"{what} is an empty path; name a folder (. for the current one)")
    if not text.startswith("~"):
        return Path(text)
    expanded = os.path.expanduser(text)
    if expanded.startswith("~"):  # no such user, or no home at all (HOME unset, no passwd entry)
        head = text.split(os.sep, 1)[0]
        reason = (
            f"there is no user {head[1:]!r}" if head != "~" else "HOME is unset and this user has no home"
        )
        raise ValueError(f"{what} {text!r}: cannot expand {head} ({reason}); give the full path")
    return Path(expanded)


# -- folders: created and removed by whoever made them, locked by one process at a time --------

LOCK_NAME = ".twolayer-xp.lock"
MAX_LOCK_BYTES = 4096


@contextlib.contextmanager
def made_folder(path: str | os.PathLike, what: str = "output folder"):
    """``path``, created if needed; on the way out the folders this created (parents included)
    are removed again if they were left empty, so a failed command leaves no empty folders."""
    path = expand_path(path, what) if not isinstance(path, Path) else path
    created = _missing_folders(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_if_empty(created)
        reason = "it exists and is not a folder" if os.path.lexists(path) else exc.strerror or exc
        raise ValueError(f"{what} {path} is not writable ({reason})") from None
    try:
        yield path
    finally:
        _remove_if_empty(created)


@contextlib.contextmanager
def locked(folder: Path, wait_s: float = 0.0):
    """Hold ``folder``'s lock file: of the processes asking at once exactly one holds it; the
    others wait up to ``wait_s`` seconds, then get a ValueError naming the holder and the lock.
    The lock goes on the way out (only while it is still ours)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            lock = _take_lock(folder)
            break
        except FolderBusy:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
    try:
        yield lock
    finally:
        _release_lock(lock)


@contextlib.contextmanager
def claim_folder(path: str | os.PathLike, continuing: bool, outputs: tuple[str, ...]):
    """Claim ``path`` for one run: create it if needed, take its lock, refuse a folder holding
    another run's ``outputs`` unless ``continuing`` it, and remove the temp files a killed write
    of ours left behind. On the way out the lock goes, and the folders this claim created
    (``runs/`` included) go too if they are left empty."""
    with made_folder(path) as path, contextlib.ExitStack() as held:
        try:
            held.enter_context(locked(path))
        except FolderBusy as exc:
            raise FolderBusy(f"output folder {exc}") from None
        except OSError as exc:
            raise ValueError(f"output folder {path} is not writable ({exc.strerror or exc})") from None
        if not continuing and any((path / name).exists() for name in outputs):
            raise ValueError(
                f"output folder {path} already holds a run's files; choose another --out, "
                f"or continue that run with --resume {path / outputs[0]}"
            )
        remove_stale_temps(path)
        yield path


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not os.path.lexists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first: a parent can only be empty once its child is gone
        try:
            folder.rmdir()
        except OSError:  # not empty (or already gone): keep it and its parents
            return


class FolderBusy(ValueError):
    """Another live process holds the folder's lock."""


# A lock file with no record yet is being written by the process that just created it (O_EXCL
# creates the file, the record follows a moment later); only a much older empty one is stale.
LOCK_WRITE_GRACE_S = 10.0


def _take_lock(folder: Path) -> Path:
    """Create ``folder``'s lock holding our record, or raise FolderBusy if a live process holds it.

    A stale lock (its process is gone, or its pid now names another process) is taken over under
    a second O_EXCL file, the takeover guard, with the owner checked again inside it: of two
    runs that both find the same stale lock, the second to get the guard sees the first one's
    live lock and stops."""
    lock = folder / LOCK_NAME
    try:
        return _create_lock(lock)
    except FileExistsError:
        _refuse_if_held(folder, lock)
    guard = folder / (LOCK_NAME + ".takeover")
    try:
        guard_fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        if _age(guard) > LOCK_WRITE_GRACE_S:  # left by a run killed mid-takeover
            guard.unlink(missing_ok=True)
        raise _busy(lock, " (taking it over)") from None
    try:
        _refuse_if_held(folder, lock)  # again, under the guard
        lock.unlink(missing_ok=True)
        try:
            return _create_lock(lock)
        except FileExistsError:  # a new run created it meanwhile: it proceeds, we stop
            raise _busy(lock, "") from None
    finally:
        os.close(guard_fd)
        guard.unlink(missing_ok=True)


def _create_lock(lock: Path) -> Path:
    record = json.dumps(own_record())  # before the file exists: it stays empty as briefly as can be
    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(record)
    return lock


def own_record() -> dict:
    """What tells this process from any other, now or later: pid, its start time, the host."""
    return {"pid": os.getpid(), "started": process_start(os.getpid()), "host": socket.gethostname()}


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), or None where unknown:
    a pid reused by a later process has a later start."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    return text.rsplit(")", 1)[-1].split()[19]  # field 22; the command name before ")" may hold spaces


def _refuse_if_held(folder: Path, lock: Path) -> None:
    owner = _lock_owner(lock)
    if owner is not None:
        raise _busy(lock, owner)


def _busy(lock: Path, owner: str) -> FolderBusy:
    return FolderBusy(
        f"{lock.parent} is in use by another run{owner}; if no such process is alive, delete {lock} "
        "and try again"
    )


def _release_lock(lock: Path) -> None:
    """Remove ``lock`` if it is still ours (never another run's that took over meanwhile)."""
    try:
        if _read_record(lock) == own_record():
            lock.unlink(missing_ok=True)
    except (OSError, ValueError):
        pass


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _read_record(lock: Path) -> dict | None:
    """The lock's record; None while it is still empty. A legacy lock holds a bare pid."""
    with open_regular(lock, MAX_LOCK_BYTES) as f:
        text = f.read().decode("utf-8", "replace").strip()
    if not text:
        return None
    record = json.loads(text) if text.startswith("{") else {"pid": int(text)}
    if not isinstance(record, dict) or not isinstance(record.get("pid"), int):
        raise ValueError("no pid")
    return record


def _lock_owner(lock: Path) -> str | None:
    """Who holds ``lock`` (" (pid N)", or "" while it is being written), or None if it is stale:
    its process is gone or its pid now names a process started later. A lock path that is not
    a regular file (a folder someone made) is a ValueError saying so."""
    try:
        age = time.time() - lock.stat().st_mtime
        record = _read_record(lock)
    except FileNotFoundError:
        return None  # released meanwhile: try again
    except FileRefused as exc:
        raise ValueError(f"{exc}, so it cannot be the lock of {lock.parent}; remove it") from None
    except (ValueError, UnicodeError):
        return None  # garbage: no run wrote it
    if record is None:
        return "" if age < LOCK_WRITE_GRACE_S else None
    pid, host = record["pid"], record.get("host")
    if host not in (None, socket.gethostname()):
        return f" (pid {pid} on host {host})"  # cannot be checked from here: assume it is alive
    if not alive(pid):
        return None
    started = record.get("started")
    if started is not None and process_start(pid) not in (None, started):
        return None  # the pid was reused by another process
    return f" (pid {pid})"


def alive(pid) -> bool:
    """Whether a process ``pid`` (an int > 0) exists on this host."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True
