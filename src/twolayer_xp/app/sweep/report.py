"""What a sweep reports: its results read from the study, trials.csv, sweep.png, best/, bar and summary.

A *result* is a trial that ran to an outcome: completed (told its validation accuracy), pruned
(stopped early by the study's pruner, told PRUNED: its value is its last reported validation
accuracy, at step ``last_step``, an epoch) or diverged (told FAIL, marked ``diverged``). Other FAIL trials are a dead worker's (re-run as a
retry) or surplus ones turned away unrun; neither counts.
"""

from __future__ import annotations

import csv
import io
import json
import math
import platform
import sys
import warnings
from pathlib import Path

from twolayer_xp import __version__
from twolayer_xp.app import drawing, process, provenance
from twolayer_xp.app.sweep import space
from twolayer_xp.errors import one_line
from twolayer_xp.io import files

SEARCH_ATTR = "twolayer_xp_sweep"  # the study's user attr holding what its trials mean
# The study's user attr holding a random id: a study's name is unique only within its storage,
# and an --out must not take another storage's study of the same name for its own (claim_out).
ID_ATTR = "twolayer_xp_id"
NO_STUDY = ""  # claim_out's study id when the storage holds no study of that name
SETTINGS_COLUMNS = ("learning_rate", "reg", *space.SCALES)  # a trial's settings: searched or fixed
CSV_COLUMNS = (
    "number", "outcome", *SETTINGS_COLUMNS, "val_accuracy", "pruned_at_epoch", "train_accuracy", "test_accuracy",
    "seconds", "host", "pid", "slot", "retry_of",
)  # fmt: skip


def outcome(trial) -> str:
    """completed, pruned, diverged, dead worker, surplus, running or waiting."""
    state, attrs = trial.state.name, trial.user_attrs
    if state == "COMPLETE":
        return "completed"
    if state == "PRUNED":
        return "pruned"
    if state == "FAIL":
        return "diverged" if attrs.get("diverged") else "surplus" if attrs.get("surplus") else "dead worker"
    return state.lower()


RESULTS = ("completed", "pruned", "diverged")  # the outcomes that count towards --trials


def count_results(trials) -> int:
    return sum(outcome(t) in RESULTS for t in trials)


def best_trial(trials):
    completed = [t for t in trials if outcome(t) == "completed"]
    return max(completed, key=lambda t: (t.value, -t.number)) if completed else None


def best_value(trials) -> float | None:
    best = best_trial(trials)
    return None if best is None else best.value


def write_trials_csv(study, path: Path) -> None:
    """One row per trial of the whole study (every worker's), rewritten atomically. A setting
    the study keeps fixed is in every row; one it searches, in the rows of trials that drew it."""
    fixed = {
        k: v
        for k, v in study.user_attrs.get(SEARCH_ATTR, {}).items()
        if k in space.SCALES and space.is_fixed(v)
    }
    text = io.StringIO()
    writer = csv.DictWriter(text, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        seconds = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None
        )
        row = {
            "number": t.number,
            "outcome": outcome(t),
            **{name: t.params.get(name, fixed.get(name)) for name in SETTINGS_COLUMNS},
            "val_accuracy": t.value if t.state.name in ("COMPLETE", "PRUNED") else None,
            "pruned_at_epoch": t.last_step if t.state.name == "PRUNED" else None,
            **{name: a.get(name) for name in ("train_accuracy", "test_accuracy")},
            **{name: a.get("worker", {}).get(name) for name in ("host", "pid", "slot")},
            "seconds": None if seconds is None else round(seconds, 3),
            "retry_of": t.system_attrs.get("failed_trial"),
        }
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    files.atomic_write(path, lambda f: f.write(text.getvalue().encode()))


def save_figure(trials, config, path: Path) -> list[str]:
    """sweep.png: the completed, pruned and diverged trials over learning rate x reg, best
    starred. A pruned trial's point carries the epoch it stopped at (its value: its accuracy
    there). Returns why the figure could not be drawn, if it could not (``drawing.save_figures``)."""

    def points(kind):
        return [
            (t.params["learning_rate"], t.params["reg"], t.value, t.number, t.last_step)
            for t in trials
            if outcome(t) == kind
        ]

    best = best_trial(trials)
    starred = (
        None if best is None else (best.params["learning_rate"], best.params["reg"], best.value, best.number)
    )
    kwargs = {"pruned": points("pruned")}
    args = (points("completed"), points("diverged"), starred, config.lr, config.reg, config.study)
    return drawing.save_figures({path: ("sweep_figure", args, kwargs)})


def no_best(trials, config) -> list[str]:
    """A line saying that no trial of the study completed, so best/ holds no model yet (the
    next step, predict .../best/model.npz, would fail), and what to try; none once one has."""
    if best_trial(trials) is not None:
        return []
    diverged, pruned = (sum(outcome(t) == name for t in trials) for name in ("diverged", "pruned"))
    tries = [
        *(["a lower --lr range"] if diverged else []),
        *(["--pruner none"] if pruned else []),
        "more --trials",
    ]
    return [
        f"no trial of study {config.study} completed ({diverged} diverged, {pruned} pruned), so "
        f"{Path(config.out) / 'best'} holds no model yet: try {' or '.join(tries)}"
    ]


BEST_LOCK_WAIT_S = 300.0  # another worker holds best/ only while it saves one net
MAX_METRICS_BYTES = 1 << 20
STUDY_MARK = "study.json"  # which study an --out belongs to
STALE_TEMP_S = 600.0  # a temp file this old is a killed write's: each write takes milliseconds


def claim_out(out: Path, config, read_id=None, *, mark: bool = False) -> None:
    """Refuse an ``--out`` that holds another study's results: by name, and by the study's id,
    since the same name in another storage is another study. ``read_id()``: the id its storage
    holds (ID_ATTR; NO_STUDY when there is no study of that name; None when unknown yet), read
    under the folder's lock: a worker marks the folder only once its study and id are stored, so
    no mark seen is newer than the id read. Checked before the study is opened too, so that a
    refused run makes no study there. ``mark``: the study is open; a new ``--out`` is marked as
    its."""
    path = out / STUDY_MARK
    with files.locked(out, wait_s=BEST_LOCK_WAIT_S):
        owner = _read_json(path, "study")
        if owner is not None and owner["study"] != config.study:
            raise ValueError(
                f"--out {out} holds the results of study {owner['study']!r} ({owner.get('storage')}); "
                f"study {config.study!r} needs another --out"
            )
        if read_id is None or (owner is None and not mark):
            return
        study_id = read_id()
        if study_id is None:
            return
        this = {"study": config.study, "storage": _shown(config.storage), "id": study_id}
        if owner is not None and not _same_study(owner, this, _is_own_db(config.storage, out)):
            raise ValueError(f"--out {out} holds the results of {_another_study(owner, this)}")
        if not mark:
            return
        if owner is None or "id" not in owner:
            files.write_json(path, this)
        # What a killed worker's writes left: the workers sharing this folder write trials.csv
        # outside its lock, so only temp files no live write can still own go.
        for folder in (out, out / "best"):
            files.remove_stale_temps(folder, older_than_s=STALE_TEMP_S)


def _same_study(owner: dict, mark: dict, own_db: bool) -> bool:
    """Whether an --out's study mark ``owner`` names the study of ``mark``: by id; a mark written
    before ids, by its storage URL as written, or when this storage is the folder's own
    study.db (``own_db``: another storage's namesake is never there)."""
    if "id" in owner:
        return owner["id"] == mark["id"]
    return own_db or owner.get("storage") == mark["storage"]


def _is_own_db(url: str, out: Path) -> bool:
    """Whether ``url`` is the SQLite file study.db inside ``out``, however the path is written."""
    import sqlalchemy

    parsed = sqlalchemy.engine.make_url(url)
    own = (out / "study.db").resolve()
    return (
        parsed.get_backend_name() == "sqlite"
        and bool(parsed.database)
        and Path(parsed.database).resolve() == own
    )


def _another_study(owner: dict, mark: dict) -> str:
    """What a refusal says of the study an --out holds (``owner``) and this run's (``mark``)."""
    name, then, now = mark["study"], owner.get("storage"), mark["storage"]
    if then == now:  # the same storage: its study of that name was deleted (and made anew)
        since = "deleted there" if mark["id"] == NO_STUDY else "made anew there (another id)"
        return f"an earlier study {name!r} in {now}, since {since}: choose another --out, or move those results away"
    again = f"--storage {then}" if "***" not in str(then) else f"the --storage it was made with ({then})"
    there = "holds no study of that name" if mark["id"] == NO_STUDY else "holds another study of that name"
    return f"study {name!r} in {then}; {now} {there}: choose another --out, or continue that one with {again}"


def save_best(out: Path, net, trial, accuracy: dict, config, dataset) -> None:
    """best/model.npz and best/metrics.json, if ``trial`` beats the one saved there. The workers
    sharing this folder replace it one at a time (its lock), and the two files together: both are
    written first and a failed write replaces neither (the renames that follow are microseconds
    apart; the model's metadata repeats its metrics, so a reader can check the pair). An unreadable previous best counts as absent (a warning)."""
    best = out / "best"
    best.mkdir(parents=True, exist_ok=True)
    # Once the lock is held, a signal waits for the pair to be written (~30 ms, git included):
    # the trial is told already, and no later run would save it.
    with files.locked(best, wait_s=BEST_LOCK_WAIT_S), files.uninterrupted():
        previous = _read_json(best / "metrics.json", "val_accuracy", "trial")
        if previous is not None and (previous["val_accuracy"], -previous["trial"]) >= (
            accuracy["val"],
            -trial.number,
        ):
            return
        metrics = {
            "study": config.study,
            "storage": _shown(config.storage),
            "trial": trial.number,
            "params": dict(trial.params),
            "val_accuracy": accuracy["val"],
            "train_accuracy": accuracy["train_eval"],
            "test_accuracy": accuracy["test"],
            "search": config.search,
            "seed": config.seed,
            "dataset_sizes": dataset.sizes(),
            "backend": net.backend.name,
            "device": net.device,
            "dtype": net.dtype_name,
            "worker": trial.user_attrs.get("worker"),
            "versions": {"twolayer_xp": __version__, "python": platform.python_version()},
            "provenance": provenance.collect(net.backend),
        }
        net.metadata = {**net.metadata, "sweep": metrics, "preprocessing": dataset.preprocessing.metadata()}
        with files.together():
            net.save(best / "model.npz", arrays=dataset.preprocessing.arrays())
            files.write_json(best / "metrics.json", metrics)


def _read_json(path: Path, *keys: str) -> dict | None:
    """The JSON object in ``path`` if it holds ``keys`` (numbers, or a str for "study"); None if
    it is missing, or unreadable (with a warning: it is then treated as absent)."""
    try:
        with files.open_regular(path, MAX_METRICS_BYTES) as f:
            data = json.loads(f.read())
        expected = {key: str if key == "study" else (int, float) for key in keys}
        if not isinstance(data, dict) or not all(isinstance(data.get(k), t) for k, t in expected.items()):
            raise ValueError(f"not a JSON object with {', '.join(keys)}")
        return data
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        warnings.warn(
            f"{path} is unreadable ({one_line(exc, limit=200)}); treated as absent",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def _shown(url: str) -> str:
    import sqlalchemy

    return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)


class TrialsBar:
    """tqdm over the study's results (all workers'), updated once per population."""

    def __init__(self, config, enabled: bool):
        self.config, self.enabled, self.bar = config, enabled, None

    def show(self, done: int, best: float | None) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=self.config.trials,
                initial=min(done, self.config.trials),  # a study may hold more than --trials asks
                desc=self.config.study,
                unit="trial",
                dynamic_ncols=True,
                file=process.Guarded(sys.stderr),  # a closed or full stderr never fails the sweep
            )
        self.bar.update(min(done, self.config.trials) - self.bar.n)
        # (replaces a waiting note: the bar moves again)
        self.bar.set_postfix({"best_val": f"{best:.4f}"} if best is not None else {}, refresh=True)

    def waiting(self, running: int, stale_s: float) -> None:
        """Say why the bar stands still: ``running`` trials are another worker's, or a killed
        one's (re-run once its last heartbeat is ``stale_s`` old)."""
        if self.enabled and self.bar is not None and running:
            self.bar.set_postfix_str(
                f"waiting for {running} trial(s) running elsewhere "
                f"(a killed worker's are re-run {stale_s:g} s after its last heartbeat)"
            )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()


def summary(config, trials, result: dict) -> str:
    """The one line a sweep prints."""
    counts = {name: sum(outcome(t) == name for t in trials) for name in RESULTS}
    best = result["best"]
    rate = result["trials_run"] / result["seconds"] if result["seconds"] > 0 else math.nan
    found = (
        f"best #{best.number}: {_settings(best.params)} "
        f"val {best.value:.4f} test {best.user_attrs.get('test_accuracy', math.nan):.4f}"
        if best is not None
        else "no completed trial"
    )
    return (
        f"sweep {config.study} ({config.dataset}, {config.sampler}): {sum(counts.values())} results "
        f"({counts['completed']} completed, {counts['pruned']} pruned, {counts['diverged']} diverged); {found}; this worker ran "
        f"{result['trials_run']} trials in {result['seconds']:.1f} s ({rate:.2f} trials/s); outputs in {config.out}"
    )


def _settings(params: dict) -> str:
    """A trial's drawn settings as ``name=value``: learning rate and reg, then the others its
    study searched (hidden_size=256 learning_rate_decay=0.976)."""
    names = ["learning_rate", "reg", *(name for name in params if name not in ("learning_rate", "reg"))]
    shown = {name: f"{v}" if isinstance(v, int) else f"{v:.3g}" for name, v in params.items()}
    return " ".join(f"{name}={shown[name]}" for name in names if name in params)
