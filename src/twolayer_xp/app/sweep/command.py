"""``twolayer-xp sweep``: its flags and the command; the work is ``worker.run_sweep``'s."""

from __future__ import annotations

import argparse

from twolayer_xp.app import config as configs
from twolayer_xp.app import process
from twolayer_xp.app.flags import add_settings, checked
from twolayer_xp.app.runs import RunInterrupted
from twolayer_xp.app.sweep import pruning, space
from twolayer_xp.app.sweep.config import (
    CONSTRAINTS,
    DEFAULT_POPULATION,
    DEFAULT_TRIALS,
    HEARTBEAT_SECONDS,
    SAMPLERS,
    SEARCH_SPAN,
    SEARCHED,
    SHARED_SETTINGS,
    STALE_HEARTBEATS,
    SweepConfig,
)
from twolayer_xp.app.sweep.study import StorageFailure, failure_reason, is_storage_error, storage_name
from twolayer_xp.app.sweep.worker import run_sweep

# -- the command line -----------------------------------------------------------------------------


# A shared flag's help where train's does not fit a sweep (it speaks of resumed runs and train's
# summary line).
SWEEP_HELP = {
    "num_iters": "SGD iterations per trial",
    "learning_rate_decay": "multiply the learning rate by F every epoch, where an epoch is CS231n's "
    "float num_train / batch_size iterations: a decay falls on iteration i only when i %% that == 0, "
    "so a fractional epoch decays far less often",
    "data_dir": f"{configs.DATA_DIR_HELP}; each worker's own, not stored in the study",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every ``sweep`` flag, with its help, on ``parser`` (the CLI's ``sweep`` subparser).

    Long because: one declaration per flag, in the order ``--help`` shows them."""
    a = parser.add_argument

    shared = {name: configs.SETTINGS[name] for name in SHARED_SETTINGS}
    for name, help in SWEEP_HELP.items():
        shared[name] = shared[name]._replace(help=help)
    for name in SEARCHED:  # a value, or what to search: see docs/sweep-search.md
        help = f"{shared[name].help}: {space.SYNTAX}, {'log' if space.SCALES[name] else 'linear'} scale"
        shared[name] = shared[name]._replace(help=help)
    types = {name: searchable(name) for name in SEARCHED}
    add_settings({group: parser for group in {s.group for s in shared.values()}}, shared, CONSTRAINTS, types)
    a(
        "--epochs",
        type=searchable("epochs"),
        metavar="E",
        help=f"instead of --num-iters: passes over the training set per trial, rounded up to whole iterations: {space.SYNTAX}, linear scale",
    )
    a(
        "--trials",
        type=checked("trials", CONSTRAINTS),
        metavar="N",
        help=f"the study's total of results across all workers (default {DEFAULT_TRIALS}; grid: its size)",
    )
    a(
        "--population",
        type=checked("population", CONSTRAINTS),
        default=DEFAULT_POPULATION,
        metavar="K",
        help="trials asked at a time, trained as one Population per (hidden size, batch size) "
        f"among them (default {DEFAULT_POPULATION})",
    )
    a(
        "--sampler",
        choices=SAMPLERS,
        default="tpe",
        help="Optuna's TPE (default), random, or grid over --grid-lr x --grid-reg",
    )
    a(
        "--pruner",
        choices=pruning.PRUNERS,
        help="stop hopeless trials at an epoch end: successive halving, Optuna's median or hyperband "
        f"pruner, or none (default: the study's own; {pruning.DEFAULT_PRUNER} for a new study)",
    )
    a(
        "--lr",
        metavar="LOW:HIGH",
        help=f"learning-rate range, log scale (default: the dataset's default x {SEARCH_SPAN[0]:g}..{SEARCH_SPAN[1]:g})",
    )
    a("--reg", metavar="LOW:HIGH", help="L2 strength range, log scale (default: as for --lr)")
    a("--grid-lr", metavar="A,B,..", help="grid sampler: learning rates to try")
    a("--grid-reg", metavar="A,B,..", help="grid sampler: reg values to try (each pair exactly once)")
    a(
        "--storage",
        metavar="URL",
        help="SQLAlchemy URL of the study, e.g. postgresql+psycopg://user@host:5432/db to share it between machines (default: sqlite:///<out>/study.db)",
    )
    a(
        "--study",
        metavar="NAME",
        help="study name; the same storage and name continue a sweep (default: twolayer-xp-<dataset>)",
    )
    a("--out", metavar="DIR", help="trials.csv, sweep.png and best/ go here (default: runs/sweep-<dataset>)")
    a(
        "--heartbeat",
        type=checked("heartbeat", CONSTRAINTS),
        default=HEARTBEAT_SECONDS,
        metavar="S",
        help=f"seconds between a worker's liveness marks; a killed worker's trials are re-run {STALE_HEARTBEATS}x this later (default {HEARTBEAT_SECONDS})",
    )
    a("--quiet", action="store_true", help="no progress bar; print only the summary line")


def searchable(name: str):
    """An argparse type for a searchable setting: ``space.parse`` with the sweep's CONSTRAINTS."""

    def parse(text: str):
        try:
            return space.parse(name, text, CONSTRAINTS)
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def command(args: argparse.Namespace) -> int:
    """Run the sweep the flags describe; bad input raises ValueError/ImportError with one line."""
    names = SweepConfig.__dataclass_fields__.keys() - {"search"}
    config = SweepConfig(**{k: getattr(args, k) for k in names if getattr(args, k, None) is not None})
    try:
        result = run_sweep(config, progress=not args.quiet)
    except Exception as exc:
        if not is_storage_error(exc):
            raise
        raise StorageFailure(
            f"storage {storage_name(config.storage)} failed ({failure_reason(exc)}); study "
            f"{config.study} keeps every trial told before (trials.csv and best/ in {config.out} are as "
            "of the last one): run the same command to continue"
        ) from None
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM or SIGHUP
        said = str(exc) if isinstance(exc, RunInterrupted) else None  # before the study was opened
        process.say(
            f"twolayer-xp: {said}"
            if said
            else f"twolayer-xp: interrupted; study {config.study} keeps every told trial (running ones are "
            "re-run after a restart): run the same command to continue",
            err=True,
        )
        return process.exit_code()
    for warning in result["warnings"]:
        process.say(f"twolayer-xp: warning: {warning}", err=True)
    process.say(result["summary"])
    return 0
