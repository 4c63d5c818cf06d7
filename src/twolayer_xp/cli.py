"""``twolayer-xp train``: the command line. Parses flags, runs, prints one summary line.

Exit codes: 0 done; 1 training diverged (the last finite state is kept); 2 bad input or a
missing requirement (one line saying what and how to fix it, never a traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .runs import DEFAULTS, RunConfig

EPILOG = """\
defaults per dataset (used for any hyperparameter you leave out):
  digits : {digits}
  cifar10: {cifar10}

examples:
  twolayer-xp train                                  # digits on the CPU, a few seconds
  twolayer-xp train --device cuda                    # the same on an NVIDIA GPU (needs CuPy)
  twolayer-xp train --dataset cifar10 --num-iters 3000 --hidden-size 200
  twolayer-xp train --resume runs/digits-.../model.npz --num-iters 4000

outputs (in --out): model.npz, metrics.json, loss.png, weights.png
exit codes: 0 ok, 1 training diverged, 2 bad input or missing requirement, 130 interrupted
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2), like every other error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _float(text):
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="twolayer-xp", description="The CS231n two-layer net on numpy (CPU) or CuPy (GPU).")
    parser.add_argument("--version", action="version", version=f"twolayer-xp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    fmt = {name: ", ".join(f"{k}={v}" for k, v in d.items()) for name, d in DEFAULTS.items()}
    train = commands.add_parser(
        "train",
        help="train the net and write model.npz, metrics.json, loss.png, weights.png",
        description="Train TwoLayerNet with minibatch SGD (CS231n semantics) and report test accuracy.",
        epilog=EPILOG.format(**fmt),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = train.add_argument_group("data")
    data.add_argument(
        "--dataset",
        choices=sorted(DEFAULTS),
        default=None,
        help="digits: scikit-learn's 8x8 digits, no download (default); cifar10: CS231n's dataset",
    )
    data.add_argument(
        "--data-dir",
        metavar="DIR",
        help="folder holding cifar-10-batches-py/ or the archive; downloaded there when absent "
        "(default: $TWOLAYER_XP_DATA or ~/.cache/twolayer-xp)",
    )
    data.add_argument(
        "--num-train", type=_positive_int, metavar="N", help="CIFAR-10 training rows (default 49000)"
    )
    data.add_argument(
        "--num-val",
        type=_positive_int,
        metavar="N",
        help="CIFAR-10 validation rows, taken after the training rows (default 1000)",
    )
    data.add_argument(
        "--num-test",
        type=_positive_int,
        metavar="N",
        help="CIFAR-10 test rows, the first of test_batch (default 1000)",
    )

    model = train.add_argument_group("model and training (defaults depend on --dataset, see below)")
    model.add_argument("--hidden-size", type=_positive_int, metavar="H", help="hidden units")
    model.add_argument("--std", type=_float, help="initial weights ~ std * N(0, 1)")
    model.add_argument("--learning-rate", "--lr", type=_float, metavar="LR", help="SGD step size")
    model.add_argument(
        "--learning-rate-decay", type=_float, metavar="F", help="multiply the learning rate by F every epoch"
    )
    model.add_argument("--reg", type=_float, help="L2 strength: loss += reg * (sum W1^2 + sum W2^2)")
    model.add_argument(
        "--num-iters", type=_positive_int, metavar="N", help="SGD iterations (total, when resuming)"
    )
    model.add_argument(
        "--batch-size", type=_positive_int, metavar="B", help="minibatch rows, sampled with replacement"
    )
    model.add_argument(
        "--seed",
        type=int,
        help="seed of weights and minibatches: one seed, one trajectory on any device (default 0)",
    )

    where = train.add_argument_group("device")
    where.add_argument("--device", default=None, help="cpu (default), cuda or cuda:N")
    where.add_argument(
        "--backend",
        choices=["numpy", "cupy", "torch", "array_api_strict"],
        help="array library (default: numpy on cpu, cupy on cuda)",
    )
    where.add_argument("--dtype", choices=["float32", "float64"], help="float32 (default) or float64")

    out = train.add_argument_group("output")
    out.add_argument(
        "--out",
        metavar="DIR",
        help="output folder (default: runs/<dataset>-<time>/, or the resumed run's folder)",
    )
    out.add_argument("--resume", metavar="CHECKPOINT", help="continue the run saved in this model.npz")
    out.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        metavar="N",
        help="rewrite model.npz every N iterations (default 1000)",
    )
    out.add_argument(
        "--verbose", action="store_true", help="print CS231n's 'iteration i / n: loss x' every 100 iterations"
    )
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    out.add_argument("--quiet", action="store_true", help="print only the summary line (and errors)")
    sweep = commands.add_parser(
        "sweep",
        help="search learning rate x reg with Optuna on populations of nets, on one or many machines",
        description="Hyperparameter search (Optuna) on one shared study; run the same command on "
        "any number of machines to share the work.",
    )
    from . import sweep as sweep_command

    sweep_command.add_arguments(sweep)
    return parser


# Flags that define what a checkpointed run is; a resumed run keeps them as saved.
FIXED_ON_RESUME = (
    "dataset",
    "data_dir",
    "num_train",
    "num_val",
    "num_test",
    "hidden_size",
    "std",
    "learning_rate",
    "learning_rate_decay",
    "reg",
    "batch_size",
    "seed",
    "dtype",
)
CLI_EXTRAS = {"matplotlib": "matplotlib", "tqdm": "tqdm", "sklearn": "scikit-learn"}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .backend import CudaUnavailableError
    from .training import TrainingDivergedError

    try:
        if args.command == "sweep":
            from . import sweep

            return sweep.command(args)
        return _train(args)
    except TrainingDivergedError as exc:
        _fail(f"{exc}; the last finite state is saved in the run's model.npz")
        return 1
    except KeyboardInterrupt:
        _fail(
            "interrupted; the last checkpoint (model.npz, if one was written) is intact: continue with --resume"
        )
        return 130
    except (ValueError, TypeError, ImportError, OSError, CudaUnavailableError) as exc:
        _fail(str(exc))
        return 2


def _train(args) -> int:
    from . import runs

    given = {
        f: getattr(args, f) for f in RunConfig.__dataclass_fields__ if getattr(args, f, None) is not None
    }
    if args.resume:
        fixed = [name for name in FIXED_ON_RESUME if name in given]
        if fixed:
            raise ValueError(
                f"--{fixed[0].replace('_', '-')} cannot change when resuming: a resumed run keeps its saved "
                "settings (only --num-iters, --device, --backend and the output flags may change)"
            )
    config = RunConfig(**given)
    show_bar = not (args.quiet or args.no_progress or args.verbose)
    _require_extras(config, show_bar)
    bar = _ProgressBar(config.dataset) if show_bar else None
    try:
        result = runs.run(
            config, args.out, resume=args.resume, progress=bar, verbose=args.verbose and not args.quiet
        )
    finally:
        if bar is not None:
            bar.close()
    print(result.summary())
    return 0


def _require_extras(config: RunConfig, show_bar: bool) -> None:
    import importlib.util

    needed = (
        ["matplotlib"] + (["tqdm"] if show_bar else []) + (["sklearn"] if config.dataset == "digits" else [])
    )
    missing = [CLI_EXTRAS[m] for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f'twolayer-xp train needs {", ".join(missing)}; fix: pip install "twolayer-xp[cli]"'
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
                total=info["num_iters"], initial=start, desc=self.desc, unit="it", dynamic_ncols=True
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


def _fail(message: str) -> None:
    line = " ".join(str(message).split())  # one line, whatever the exception held
    print(f"twolayer-xp: error: {line}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
