"""``twolayer-xp``: the command line. Parses flags, runs a command, prints one summary line.

Exit codes: 0 done; 1 training diverged (the last finite state is kept); 2 bad input or a
missing requirement (one line saying what and how to fix it, never a traceback); 130 interrupted
(Ctrl-C), 143 / 129 ended by SIGTERM / SIGHUP (handled like Ctrl-C).
The ``train`` flags are built from ``config.SETTINGS``, the one table of run settings.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import sys

from twolayer_xp.app import drawing, process  # import no numpy: signals are handled from the start
from twolayer_xp.errors import one_line  # imports nothing: usable while numpy is still loading

EPILOG = """\
defaults per dataset (used for any hyperparameter you leave out):
{defaults}

examples:
  twolayer-xp train                                  # digits on the CPU, a few seconds
  twolayer-xp train --device cuda                    # the same on an NVIDIA GPU (needs CuPy)
  twolayer-xp train --dataset cifar10 --num-iters 3000 --hidden-size 200
  twolayer-xp train --resume runs/digits-.../model.npz --num-iters 4000
  twolayer-xp train --dataset my-data.csv --label-column species   # your own data (.csv or .npz)

outputs (in --out): model.npz (with its preprocessing), metrics.json, history.npz, loss.png, weights.png
use the model: twolayer-xp predict MODEL INPUT | evaluate MODEL INPUT | export MODEL OUT.onnx
resuming may change only: {resume}
exit codes: 0 ok, 1 training diverged, 2 bad input or missing requirement, 130 interrupted
(Ctrl-C), 143 / 129 SIGTERM / SIGHUP (handled like Ctrl-C: the last checkpoint is kept)
"""
CLI_EXTRAS = {"matplotlib": "matplotlib", "tqdm": "tqdm", "sklearn": "scikit-learn"}
GROUPS = {
    "data": "data",
    "model": "model and training (defaults depend on --dataset, see below)",
    "device": "device",
    "output": "output",
}


def build_parser() -> argparse.ArgumentParser:
    from twolayer_xp import __version__
    from twolayer_xp.app.flags import Parser

    parser = Parser(prog="twolayer-xp", description="The CS231n two-layer net on numpy (CPU) or CuPy (GPU).")
    parser.add_argument("--version", action="version", version=f"twolayer-xp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    _add_train(commands)
    _add_sweep(commands)
    _add_model_commands(commands)
    return parser


def _add_model_commands(commands) -> None:
    """predict, evaluate and export: what to do with a saved model (app.model_commands)."""
    from twolayer_xp.app import model_commands

    model_commands.add_parsers(commands)


def _add_sweep(commands) -> None:
    from twolayer_xp.app.sweep import command as sweep

    parser = commands.add_parser(
        "sweep",
        help="search learning rate x reg with Optuna on populations of nets, on one or many machines",
        description="Hyperparameter search (Optuna) on one shared study; run the same command on "
        "any number of machines to share the work.",
    )
    sweep.add_arguments(parser)


def _add_train(commands) -> None:
    from twolayer_xp.app.config import CONSTRAINTS, DEFAULTS, RESUME_MAY_CHANGE, SETTINGS
    from twolayer_xp.app.flags import add_settings, flag

    defaults = "\n".join(
        f"  {name:<8}: " + ", ".join(f"{k}={v}" for k, v in d.items()) for name, d in DEFAULTS.items()
    )
    train = commands.add_parser(
        "train",
        help="train the net and write model.npz, metrics.json, loss.png, weights.png",
        description="Train TwoLayerNet with minibatch SGD (CS231n semantics) and report test accuracy.",
        epilog=EPILOG.format(
            defaults=defaults, resume=", ".join(flag(n) for n in RESUME_MAY_CHANGE) + " and the output flags"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    groups = {key: train.add_argument_group(title) for key, title in GROUPS.items()}
    add_settings(groups, SETTINGS, CONSTRAINTS)
    out = groups["output"]
    out.add_argument(
        "--out",
        metavar="DIR",
        help="output folder (default: runs/<dataset>-<time>/, or the resumed run's folder)",
    )
    out.add_argument("--resume", metavar="CHECKPOINT", help="continue the run saved in this model.npz")
    out.add_argument(
        "--verbose", action="store_true", help="print CS231n's 'iteration i / n: loss x' every 100 iterations"
    )
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    out.add_argument("--quiet", action="store_true", help="print only the summary line (and errors)")


def main(argv=None) -> int:
    # The real command (argv None) draws its figures in a helper process started now, so that
    # matplotlib's import overlaps the work; a caller's main([...]) draws them in-process.
    draws = argv is None and sys.argv[1:2] in (["train"], ["sweep"]) and not {"-h", "--help"} & set(sys.argv)
    with process.command(final=argv is None):  # SIGTERM/SIGHUP as Ctrl-C, warnings as lines
        try:
            with drawing.beside(draws):
                code = _main(argv)
        except KeyboardInterrupt:  # while the helper started, or while it finished a figure
            if not process.cut_short():  # else the command said already that it was interrupted
                _fail("interrupted while the figure helper started or finished a figure")
            code = process.exit_code()
    if argv is None:
        # The process ends with the command. Python's last garbage collections would only free
        # memory the OS takes back anyway, and cost a sweep 0.25 s: objects are kept out of them.
        gc.freeze()
    return code


def _main(argv) -> int:
    try:
        args = build_parser().parse_args(argv)
        from twolayer_xp.backend import CudaUnavailableError
        from twolayer_xp.core import threads
        from twolayer_xp.core.training import TrainingDivergedError

        mine = drawing.helpers()  # this command's figure helper: its own work, not a neighbour's
        threads.helpers.update(mine)
        try:
            process.check_address_space()
            if args.command == "sweep":
                from twolayer_xp.app.sweep import command as sweep

                return sweep.command(args)
            if args.command != "train":
                from twolayer_xp.app import model_commands

                return model_commands.command(args)
            return _train(args)
        except TrainingDivergedError as exc:
            _fail(f"{exc}; the last finite state is saved in the run's model.npz")
            return 1
        except (ValueError, TypeError, ImportError, OSError, CudaUnavailableError) as exc:
            _fail(str(exc))
            return 2
        except (MemoryError, RuntimeError) as exc:
            if not isinstance(exc, MemoryError) and not _torch_out_of_memory(exc):
                raise
            _fail(
                "out of memory: the sizes asked for do not fit; use a smaller --hidden-size or --batch-size"
            )
            return 2
        finally:
            threads.helpers.difference_update(mine)  # its pid may name another process later
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM or SIGHUP, during start-up (imports) or a run
        cut = "stopped at once by a third signal, before it said what it had saved (its files are whole)"
        _fail(str(exc) or (cut if process.cut_short() else "interrupted before anything was saved"))
        return process.exit_code()


def _train(args) -> int:
    from twolayer_xp.app import runs
    from twolayer_xp.app.config import FIELDS, RunConfig

    given = {f: getattr(args, f) for f in FIELDS if getattr(args, f, None) is not None}
    config = RunConfig(**given)
    show_bar = not (args.quiet or args.no_progress or args.verbose)
    _require_extras(config, show_bar)
    bar = _ProgressBar(config.dataset or "train") if show_bar else None
    try:
        result = runs.run(
            config,
            args.out,
            resume=args.resume,
            progress=bar,
            verbose=args.verbose and not args.quiet,
            notify=lambda text: None if args.quiet else print(f"twolayer-xp: note: {text}", file=sys.stderr),
        )
    finally:
        if bar is not None:
            bar.close()
    for warning in result.warnings:
        process.say(f"twolayer-xp: warning: {warning}", err=True)
    process.say(result.summary())
    return 0


def _require_extras(config, show_bar: bool) -> None:
    needed = (
        ["matplotlib"]
        + (["tqdm"] if show_bar else [])
        + (["sklearn"] if config.dataset in (None, "digits") else [])
    )
    missing = [CLI_EXTRAS[m] for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"twolayer-xp train needs {', '.join(missing)}; fix: pip install {' '.join(missing)} "
            '(or, in the clone: pip install -e ".[cli]")'
        )


class _ProgressBar:
    """A tqdm bar fed at the training loop's sync points only: it never forces a device sync."""

    def __init__(self, desc: str):
        self.desc = desc
        self.bar = None

    def __call__(self, info: dict) -> None:
        from tqdm.auto import tqdm

        if self.bar is None:
            start = info["iteration"] - len(info["losses"])
            self.bar = tqdm(
                total=info["num_iters"],
                initial=start,
                desc=self.desc,
                unit="it",
                dynamic_ncols=True,
                file=process.Guarded(sys.stderr),  # a closed or full stderr never fails the run
            )
        self.bar.update(info["iteration"] - self.bar.n)
        postfix = {"loss": f"{info['losses'][-1]:.4f}"}
        if info.get("val_acc") is not None:
            postfix["val_acc"] = f"{info['val_acc']:.3f}"
        postfix["samples/s"] = f"{info['samples_per_second']:,.0f}"
        self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _torch_out_of_memory(exc: BaseException) -> bool:
    """True for torch's out-of-memory error: a RuntimeError (CuPy's is a MemoryError). Only a
    loaded torch can have raised one, so torch is never imported for the question."""
    out_of_memory = getattr(getattr(sys.modules.get("torch"), "cuda", None), "OutOfMemoryError", None)
    return out_of_memory is not None and isinstance(exc, out_of_memory)


def _fail(what: BaseException | str) -> None:
    process.say(f"twolayer-xp: error: {one_line(what)}", err=True)


if __name__ == "__main__":
    sys.exit(main())
