"""Sweep storage and studies under faults (issue 19, class 7): every way the storage cannot be
opened or fails mid-sweep is one line naming it (exit 2), never a traceback or a hang, and a
database or study that is not a sweep's is refused by name before anything is written to it.
Real Optuna, real SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

optuna = pytest.importorskip("optuna", reason="the sweep extra (optuna) is not installed")

from twolayer_xp.app import cli  # noqa: E402
from twolayer_xp.app.sweep import pruning, report, study  # noqa: E402

import postgres  # noqa: E402

TINY = ["--trials", "2", "--population", "2", "--num-iters", "5", "--hidden-size", "4", "--quiet"]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def sweep(out, *args) -> int:
    try:
        return cli.main(["sweep", "--out", str(out), *TINY, *map(str, args)])
    except SystemExit as exc:  # argparse's own checks exit from inside parse_args
        return exc.code


def failed_with(capsys, *words) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("twolayer-xp") and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def tables(path) -> list[str]:
    with sqlite3.connect(path) as db:
        return sorted(r[0] for r in db.execute("select name from sqlite_master where type='table'"))


@pytest.mark.parametrize(
    "args,words",
    [
        (["--storage", "sqlite://"], "--storage sqlite:// is an in-memory database"),
        (["--storage", "sqlite:///:memory:"], "--storage sqlite:///:memory: is an in-memory database"),
        (["--storage", "sqlite:///{tmp}/s.db?timeout=abc"], "cannot open storage sqlite:///"),
        (["--storage", "sqlite:///{tmp}/s.db?timeout=abc"], "?timeout=abc is not a finite number of seconds"),
        (["--storage", "sqlite:///{tmp}/s.db?timeout=inf"], "?timeout=inf is not a finite number of seconds"),
        (["--storage", "sqlite:///{tmp}/s.db?timeout=-5"], "?timeout=-5 is not a finite number of seconds"),
        (["--heartbeat", 10**11], "heartbeat must be at most 86400, got 100000000000"),
        (
            ["--sampler", "grid", "--grid-lr", "nan", "--grid-reg", "0.1"],
            "--grid-lr needs at least one positive",
        ),
        (["--study", "s" * 2000], "--study is 2000 characters long; a study name has at most 512"),
    ],
)
def test_storage_flags_that_cannot_work(tmp_path, capsys, args, words):
    args = [a.format(tmp=tmp_path) if isinstance(a, str) else a for a in args]
    assert sweep(tmp_path / "out", *args) == 2
    failed_with(capsys, words)


def test_a_sqlalchemy_without_psycopg3s_dialect_says_so(monkeypatch, capsys):
    """SQLAlchemy 1.4 (which Optuna allows) has no postgresql+psycopg dialect: the URL was called
    "not a database URL I can use (e.g. ... postgresql+psycopg://...)"."""
    import sqlalchemy

    def no_dialect(url):
        raise sqlalchemy.exc.NoSuchModuleError(f"Can't load plugin: sqlalchemy.dialects:{url.drivername}")

    monkeypatch.setattr(sqlalchemy.engine.URL, "get_dialect", no_dialect)
    monkeypatch.setattr(sqlalchemy, "__version__", "1.4.54")
    with pytest.raises(
        ImportError, match=r'needs SQLAlchemy 2.0 or later, found 1.4.54; fix: pip install -U "sqlalch'
    ):
        study.open_storage("postgresql+psycopg://u@h/db")
    with pytest.raises(ValueError, match="is not a database URL I can use") as refused:  # no such driver
        study.open_storage("postgresql+psycopgg://u:secret@h/db")
    assert "secret" not in str(refused.value)  # the URL is shown with its password hidden


def test_a_plain_postgresql_url_without_psycopg2_says_to_name_psycopg(monkeypatch):
    """postgresql:// is psycopg2's URL under SQLAlchemy 2.0; the fix said to install the postgres
    extra, which brings psycopg 3, so the same URL failed again."""
    import sqlalchemy

    def missing(url):
        raise ModuleNotFoundError("No module named 'psycopg2'", name="psycopg2")

    monkeypatch.setattr(sqlalchemy.engine.URL, "get_dialect", missing)
    with pytest.raises(ImportError, match=r"needs psycopg2; fix: write the URL as postgresql\+psycopg://"):
        study.open_storage("postgresql://u@h/db")


def test_a_database_of_another_application_is_refused_before_writing(tmp_path, capsys):
    other = tmp_path / "shop.db"
    with sqlite3.connect(other) as db:
        db.execute("create table customers (name text)")
        db.execute("create table alembic_version (version_num text)")  # it uses alembic too
    assert sweep(tmp_path / "out", "--storage", f"sqlite:///{other}") == 2
    failed_with(
        capsys, f"cannot open storage sqlite:///{other}: holds tables of another application (customers)"
    )
    assert tables(other) == ["alembic_version", "customers"]


@pytest.fixture
def finished_study(tmp_path, capsys):
    """The study.db of a finished 2-trial sweep."""
    assert sweep(tmp_path / "first") == 0
    capsys.readouterr()
    return tmp_path / "first" / "study.db"


def test_a_read_only_database(tmp_path, capsys, finished_study):
    url = f"sqlite:///file:{finished_study}?mode=ro&uri=true"
    assert sweep(tmp_path / "out", "--storage", url, "--trials", 3) == 2
    failed_with(
        capsys, f"storage {url} failed (attempt to write a readonly database)", "run the same command"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files")
def test_a_read_only_database_file(tmp_path, capsys, finished_study):
    finished_study.chmod(0o444)
    assert sweep(tmp_path / "out", "--storage", f"sqlite:///{finished_study}", "--trials", 3) == 2
    failed_with(capsys, f"storage sqlite:///{finished_study} failed", "readonly")


def test_a_lock_never_released_fails_the_worker_in_one_line(tmp_path, capsys, finished_study):
    """What a SIGSTOPped worker holding SQLite's write lock does to the others, made certain: a
    connection that takes the lock and keeps it. The worker waits ?timeout=1 s, then says so."""
    holder = sqlite3.connect(finished_study, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        url = f"sqlite:///{finished_study}?timeout=1"
        assert sweep(tmp_path / "out", "--storage", url, "--trials", 3) == 2
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    failed_with(capsys, f"storage {url} failed (database is locked)", "keeps every trial told before")


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE stands in for a full disk on Linux")
def test_a_full_disk_mid_sweep_is_one_line(tmp_path):
    """Files may grow to 120 kB: enough for the study's tables and a few trials, not for 30."""

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (120_000, 120_000))

    command = [sys.executable, "-m", "twolayer_xp", "sweep", "--out", str(tmp_path), *TINY, "--trials", "30"]
    done = subprocess.run(
        command, env=ENV, capture_output=True, text=True, timeout=120, preexec_fn=small_disk
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"storage sqlite:///{tmp_path / 'study.db'} failed (disk I/O error)" in done.stderr


# Studies that are not this sweep's.


def foreign_study(storage, kind):
    if kind == "plain optuna":
        s = optuna.create_study(storage=storage, study_name="s", direction="maximize")
        s.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    elif kind == "multi-objective":
        optuna.create_study(storage=storage, study_name="s", directions=["maximize", "minimize"])
    elif kind == "minimizing":
        optuna.create_study(storage=storage, study_name="s", direction="minimize")
    else:
        s = optuna.create_study(storage=storage, study_name="s", direction="maximize")
        s.set_user_attr(report.SEARCH_ATTR, {"str": "digits", "list": ["digits", "tpe"], "null": None}[kind])


@pytest.mark.parametrize(
    "kind,words",
    [
        ("plain optuna", "holds 2 trials not made by twolayer-xp sweep"),
        ("multi-objective", "has 2 objectives; a sweep maximizes one"),
        ("minimizing", "minimizes its objective"),
        ("str", "has a twolayer_xp_sweep attribute that is a str, not a sweep's"),
        ("list", "has a twolayer_xp_sweep attribute that is a list, not a sweep's"),
        ("null", "has a twolayer_xp_sweep attribute that is a NoneType, not a sweep's"),
    ],
)
def test_a_study_that_is_not_a_sweeps_is_refused_by_name(tmp_path, capsys, kind, words):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    foreign_study(url, kind)
    before = [(t.number, t.state, t.params) for t in optuna.load_study(study_name="s", storage=url).trials]
    assert sweep(tmp_path / "out", "--storage", url, "--study", "s") == 2
    failed_with(capsys, f"study s in {url} {words}", "choose another --study")
    loaded = optuna.load_study(study_name="s", storage=url)
    assert [(t.number, t.state, t.params) for t in loaded.trials] == before
    assert report.SEARCH_ATTR not in loaded.user_attrs or kind in ("str", "list", "null")


# Two workers with different flags starting a new study at the same moment.


@pytest.mark.parametrize("made", ["new", "bare"])
def test_workers_with_different_flags_starting_at_once_are_not_both_let_in(tmp_path, monkeypatch, made):
    """Two workers, hidden sizes 8,16 and 8,32, reach the point of storing the study's search at
    the same moment (a barrier holds each until the other is there): exactly one search is
    stored and the other worker is refused against it. "new": no study yet; "bare": an empty
    study made by plain Optuna (or by a creator killed before it stored its search)."""
    from twolayer_xp.app.sweep import SweepConfig

    url = f"sqlite:///{tmp_path / 'study.db'}"
    if made == "bare":
        optuna.create_study(storage=url, study_name="s", direction="maximize")
    together, with_pruner = threading.Barrier(2, timeout=30), study.with_pruner
    monkeypatch.setattr(study, "with_pruner", lambda *a: (together.wait(), with_pruner(*a))[1])
    outcomes = {}

    def start(hidden):
        config = SweepConfig(storage=url, out=str(tmp_path / hidden), study="s", hidden_size=hidden)
        try:
            study.open_study(optuna, study.open_storage(url), config)
            outcomes[hidden] = "joined"
        except ValueError as exc:
            outcomes[hidden] = str(exc)

    threads = [threading.Thread(target=start, args=(h,)) for h in ("8,16", "8,32")]
    [t.start() for t in threads]
    [t.join() for t in threads]
    stored = optuna.load_study(study_name="s", storage=url).user_attrs[report.SEARCH_ATTR]
    winner = "8,16" if stored["hidden_size"] == {"choices": [8, 16]} else "8,32"
    loser = {"8,16": "8,32", "8,32": "8,16"}[winner]
    assert outcomes[winner] == "joined", outcomes
    assert f"was created with hidden_size={winner}, this run has hidden_size={loser}" in outcomes[loser]


def test_an_offered_search_never_replaces_a_stored_one(tmp_path):
    """The store itself is insert-only: a second offer, whoever makes it and whenever, leaves
    the first search (set_study_user_attr would overwrite it, and the first worker, judged
    before, would train under a search the study no longer holds)."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(storage=url, study_name="s", direction="maximize")
    storage = study.open_storage(url)
    study_id = storage.get_study_id_from_name("s")
    study._offer(storage, study_id, report.SEARCH_ATTR, {"hidden_size": 8})
    study._offer(storage, study_id, report.SEARCH_ATTR, {"hidden_size": 16})
    assert storage.get_study_user_attrs(study_id)[report.SEARCH_ATTR] == {"hidden_size": 8}


def test_an_empty_study_made_elsewhere_is_joined_at_once(tmp_path):
    """A study with no search and no trials (plain Optuna's, or a creator killed before it stored
    its search) takes the first worker's search, without a wait."""
    from twolayer_xp.app.sweep import SweepConfig

    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(storage=url, study_name="s", direction="maximize")
    config = SweepConfig(storage=url, out=str(tmp_path / "a"), study="s")
    started = time.monotonic()
    joined, _ = study.open_study(optuna, study.open_storage(url), config)
    assert time.monotonic() - started < 5
    assert joined.user_attrs[report.SEARCH_ATTR] == {**config.search, "pruner": pruning.DEFAULT_PRUNER}


class RefusesWal:
    """A real SQLite connection whose first ``refusals`` switches to WAL are answered as SQLite
    answers workers switching a new file at the same moment: "database is locked" at once, with
    no lock wait, where waiting could deadlock (6 processes at once on a new file: ~9% of them)."""

    def __init__(self, path, refusals: int, error: str = "database is locked"):
        self.connection, self.refusals, self.error = (
            sqlite3.connect(path, isolation_level=None),
            refusals,
            error,
        )

    def execute(self, sql):
        if sql == "PRAGMA journal_mode=WAL" and self.refusals:
            self.refusals -= 1
            raise sqlite3.OperationalError(self.error)
        return self.connection.execute(sql)


def test_a_switch_to_wal_answered_locked_is_tried_again(tmp_path):
    connection = RefusesWal(tmp_path / "study.db", refusals=2)
    study._sqlite_pragmas(connection, None)
    assert connection.refusals == 0
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):  # anything else is final
        study._sqlite_pragmas(RefusesWal(tmp_path / "other.db", 1, "disk I/O error"), None)
    started = time.monotonic()  # a lock held for good: given up after the worker's lock wait
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        study._sqlite_pragmas(RefusesWal(tmp_path / "third.db", 10**6), None, wait=0.3)
    assert 0.3 <= time.monotonic() - started < 5


# PostgreSQL: a server that never answers, and one that stops mid-sweep.


def test_a_server_that_accepts_and_never_answers(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(study.POSTGRES_TIMEOUTS, "connect_timeout", 1)
    pytest.importorskip("psycopg")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted = []

    def accept():
        with contextlib.suppress(OSError):  # the listener closed when the test is done
            for _ in range(8):
                accepted.append(listener.accept())

    threading.Thread(target=accept, daemon=True).start()
    url = f"postgresql+psycopg://nobody@127.0.0.1:{listener.getsockname()[1]}/db"
    started = time.monotonic()
    try:
        assert sweep(tmp_path / "out", "--storage", url) == 2
    finally:
        listener.close()
    assert time.monotonic() - started < 20
    failed_with(capsys, f"cannot open storage {url}: connection timeout expired")
    assert accepted  # it did connect: the silence, not a refusal, is what timed out


@pytest.mark.skipif(postgres.binaries() is None, reason="PostgreSQL's initdb and pg_ctl are not installed")
def test_a_server_stopped_mid_sweep_exits_2_saying_what_is_kept(tmp_path):
    with postgres.server() as url:
        with study.open_storage(url).engine.connect() as connection:  # the server-side timeouts hold
            assert connection.exec_driver_sql("SHOW statement_timeout").scalar() == "1min"
            assert connection.exec_driver_sql("SHOW lock_timeout").scalar() == "1min"
        args = ["--storage", url, "--heartbeat", "1", "--trials", "200", "--population", "1"]
        command = [sys.executable, "-m", "twolayer_xp", "sweep", "--out", str(tmp_path), *TINY, *args]
        worker = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (tmp_path / "trials.csv").exists():
            time.sleep(0.2)
        told = len(optuna.load_study(study_name="twolayer-xp-digits", storage=url).trials)
        postgres.stop(url)
        _, stderr = worker.communicate(timeout=120)
    assert told >= 1 and worker.returncode == 2, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert f"storage {url} failed (" in stderr and "keeps every trial told before" in stderr


def test_a_finished_sweep_leaves_a_whole_study_db(tmp_path):
    """The real command (whose process skips its last garbage collections): its SQLite
    connections are closed when the sweep ends, so the write-ahead log is folded into study.db
    and removed, and study.db alone holds the study. Before, a freed-by-nobody engine left
    study.db-wal behind and a copy of study.db held no trials."""
    out = tmp_path / "sweep"
    args = [sys.executable, "-m", "twolayer_xp", "sweep", "--out", str(out), "--quiet", "--trials", "2"]
    done = subprocess.run([*args, "--population", "1", "--num-iters", "20", "--hidden-size", "16"],
                          capture_output=True, text=True, env=ENV, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not [p.name for p in out.iterdir() if p.name.startswith("study.db-")]
    copy = tmp_path / "copy.db"
    copy.write_bytes((out / "study.db").read_bytes())
    with sqlite3.connect(copy) as db:
        assert db.execute("select count(*) from trials").fetchone() == (2,)
