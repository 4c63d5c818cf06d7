"""A throw-away PostgreSQL server for tests: initdb of a temp folder, started on 127.0.0.1 at a
free port, stopped and removed afterwards. initdb refuses root, so as root the server runs as the
unprivileged ``postgres`` user (runuser)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def binaries() -> tuple[str, str] | None:
    """(initdb, pg_ctl), from PATH or a Debian-style /usr/lib/postgresql/<version>/bin; None if absent."""
    found = shutil.which("initdb"), shutil.which("pg_ctl")
    if all(found):
        return found
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        tools = Path(folder) / "initdb", Path(folder) / "pg_ctl"
        if all(t.exists() for t in tools):
            return tuple(map(str, tools))
    return None


_stoppers = {}  # URL of a running server() -> how to stop it
_logs = {}  # URL of a running server() -> its log file


def log(url: str) -> str:
    """What the running ``server()`` of ``url`` has logged so far (its ERRORs among it)."""
    return _logs[url].read_text()


def stop(url: str) -> None:
    """Stop the running ``server()`` of ``url`` now (as a crash or an admin would, mid-use)."""
    _stoppers.pop(url)()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server():
    """Yield the SQLAlchemy URL of a fresh PostgreSQL server (database ``postgres``, trust auth)."""
    initdb, pg_ctl = binaries()
    as_user = []
    folder = Path(tempfile.mkdtemp(prefix="twolayer-xp-pg-"))
    if os.geteuid() == 0:
        import pwd

        user = pwd.getpwnam("postgres")  # KeyError: no such user, the caller reports it
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", free_port()

    def run(*args):
        subprocess.run([*as_user, *map(str, args)], check=True, capture_output=True, timeout=60)

    try:
        run(initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(pg_ctl, "-D", data, "-l", folder / "server.log", "-o", options, "-w", "start")
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        _stoppers[url] = lambda: run(pg_ctl, "-D", data, "-m", "fast", "-w", "stop")
        _logs[url] = folder / "server.log"
        try:
            yield url
        finally:
            _logs.pop(url, None)
            if _stoppers.pop(url, None) is not None:
                run(pg_ctl, "-D", data, "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
