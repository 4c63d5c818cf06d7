"""Writing files so that nothing a user saved is ever half-written."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(binary_file)`` on a temp file beside ``path``, fsync it, rename it over ``path``.

    A crash or kill at any point leaves either the old file or the new one, never a mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))  # mkstemp makes 0600; a saved file gets the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _mode_for(path: Path) -> int:
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_json(path: str | os.PathLike, data: dict) -> None:
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


LOCK_NAME = ".twolayer-xp.lock"


@contextlib.contextmanager
def claim_folder(path: str | os.PathLike, continuing: bool, outputs: tuple[str, ...]):
    """Claim ``path`` for one run: create it if needed, take its lock file (O_EXCL, so of two
    runs started together exactly one proceeds), refuse a folder holding another run's
    ``outputs`` unless ``continuing`` it, and remove temp files a killed write left behind.
    On the way out the lock goes, and the folders this claim created (``runs/`` included) go
    too if they are left empty."""
    path = Path(path)
    created = _missing_folders(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        lock = _take_lock(path)
    except BaseException as exc:
        _remove_if_empty(created)
        if isinstance(exc, OSError):
            raise ValueError(f"output folder {path} is not writable ({exc.strerror or exc})") from None
        raise
    try:
        if not continuing and any((path / name).exists() for name in outputs):
            raise ValueError(
                f"output folder {path} already holds a run's files; choose another --out, "
                f"or continue that run with --resume {path / outputs[0]}"
            )
        for stale in path.glob(".*.tmp"):  # atomic_write's temp files; we hold the lock
            stale.unlink(missing_ok=True)
        yield path
    finally:
        _release_lock(lock)
        _remove_if_empty(created)


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first: a parent can only be empty once its child is gone
        try:
            folder.rmdir()
        except OSError:  # not empty (or already gone): keep it and its parents
            return


# A lock file with no pid yet is being written by the run that just created it (O_EXCL creates
# the file, the pid follows a moment later); only a much older empty one was left by a crash.
LOCK_WRITE_GRACE_S = 10.0


def _take_lock(folder: Path) -> Path:
    """Create ``folder``'s lock holding our pid, or raise ValueError if a live run holds it.

    A stale lock (its run is gone) is taken over under a second O_EXCL file, the takeover guard,
    with the owner checked again inside it: of two runs that both find the same stale lock, the
    second to get the guard sees the first one's live lock and stops."""
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
        raise ValueError(f"output folder {folder} is in use by another run (taking it over)") from None
    try:
        _refuse_if_held(folder, lock)  # again, under the guard
        lock.unlink(missing_ok=True)
        try:
            return _create_lock(lock)
        except FileExistsError:  # a new run created it meanwhile: it proceeds, we stop
            raise ValueError(f"output folder {folder} is in use by another run") from None
    finally:
        os.close(guard_fd)
        guard.unlink(missing_ok=True)


def _create_lock(lock: Path) -> Path:
    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    return lock


def _refuse_if_held(folder: Path, lock: Path) -> None:
    owner = _lock_owner(lock)
    if owner is not None:
        held_by = f" (pid {owner})" if owner > 0 else ""
        raise ValueError(f"output folder {folder} is in use by another run{held_by}")


def _release_lock(lock: Path) -> None:
    """Remove ``lock`` if it is still ours (never another run's that took over meanwhile)."""
    try:
        if lock.read_text().strip() == str(os.getpid()):
            lock.unlink(missing_ok=True)
    except OSError:
        pass


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _lock_owner(lock: Path) -> int | None:
    """The pid holding ``lock`` if that process is alive, 0 if the lock is being written right
    now (no pid in it yet), None if it is stale (its process is gone)."""
    try:
        text = lock.read_text().strip()
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return None  # released meanwhile: try again
    except OSError:
        return 0
    if not text:
        return 0 if age < LOCK_WRITE_GRACE_S else None
    try:
        pid = int(text)
    except ValueError:
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid
