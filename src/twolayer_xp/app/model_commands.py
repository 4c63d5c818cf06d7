"""``twolayer-xp predict | evaluate | export``: a saved model applied to new rows, or exported.

predict MODEL INPUT: predictions.csv (row, class index, label name[, true label]) and, when
INPUT has labels, the accuracy. evaluate MODEL INPUT: the accuracy only (INPUT must have
labels). export MODEL OUT.onnx: the model with its preprocessing as an ONNX graph. INPUT is a
.csv (every row), a .npz (X_test/y_test, else X/y, else X_train/y_train) or a data set name (its
test split, e.g. ``digits``), in raw form, as the run's data came: the model preprocesses it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

INPUT_HELP = (
    "rows to classify, raw as the training data came: FILE.csv (a header row; a label column is "
    "used when present), FILE.npz (X_test/y_test, else X/y, else X_train/y_train), or a data set "
    "name for its test split (digits, mnist, ...)"
)


def add_parsers(commands) -> None:
    """The three subcommands' flags."""
    predict = commands.add_parser(
        "predict",
        help="classify new rows with a saved model.npz (its preprocessing applied); write predictions.csv",
        description="Apply a run's model.npz, with the scaling, mean image and label names it "
        "trained with, to raw rows; write their predicted labels as CSV.",
    )
    evaluate = commands.add_parser(
        "evaluate",
        help="accuracy of a saved model.npz on labelled rows",
        description="The accuracy of a run's model.npz on labelled raw rows (its preprocessing applied).",
    )
    for parser in (predict, evaluate):
        parser.add_argument("model", metavar="MODEL", help="a run's model.npz (or a sweep's best/model.npz)")
        parser.add_argument("input", metavar="INPUT", help=INPUT_HELP)
        parser.add_argument(
            "--label-column",
            metavar="NAME",
            help="INPUT.csv: the label column (default: the last, when the CSV has one more column than the model has features)",
        )
        parser.add_argument("--data-dir", metavar="DIR", help="a downloaded data set's folder (as for train)")
    predict.add_argument(
        "--out", metavar="FILE", help="where to write the predictions (default: predictions.csv)"
    )
    export = commands.add_parser(
        "export",
        help="write a saved model.npz as ONNX, its preprocessing included (needs the onnx extra)",
        description="Export a run's model.npz to ONNX: raw float32 rows X (N, D) in; scores (N, C) "
        "and label (N,) out, the run's preprocessing part of the graph.",
    )
    export.add_argument("model", metavar="MODEL", help="a run's model.npz")
    export.add_argument("out", metavar="OUT.onnx", help="the ONNX file to write")


def command(args: argparse.Namespace) -> int:
    from twolayer_xp.app import trained as trained_models

    model_path = _expanded(args.model, "MODEL")
    model = trained_models.load_model(model_path)
    if args.command == "export":
        from twolayer_xp.app import export

        path = export.export(model, _output(args.out, "OUT.onnx", {"MODEL": model_path}))
        print(
            f"wrote {path}: input X (N, {model.net.input_size}) float32, outputs scores and label; labels {', '.join(model.labels[:10])}"
        )
        return 0
    input_path = _expanded(args.input, "INPUT")
    X, y, source = trained_models.inputs(input_path, model, args.label_column, args.data_dir)
    if args.command == "evaluate" and y is None:
        raise ValueError(
            f"{source} has no labels to evaluate against (a .csv needs a label column, a .npz y)"
        )
    predicted = model.predict(X)
    accuracy = f"accuracy {float((predicted == y).mean()):.4f} on " if y is not None else ""
    if args.command == "evaluate":
        print(f"{accuracy}{len(predicted)} rows of {source}")
        return 0
    out = Path(_output(args.out or "predictions.csv", "--out", {"MODEL": model_path, "INPUT": input_path}))
    trained_models.write_predictions(out, model, predicted, y)
    print(f"{accuracy}{len(predicted)} rows of {source}; predictions in {out}")
    return 0


def _expanded(path: str, what: str) -> str:
    """A path argument with a leading ``~`` or ``~user`` expanded, as train's are (the shell leaves
    ``--out=~/p.csv`` and quoted paths alone); a ValueError naming ``what`` if it cannot be."""
    from twolayer_xp.io import files

    return str(files.expand_path(path, what)) if path.startswith("~") else path


def _output(path: str, what: str, read: dict) -> str:
    """An output path argument, expanded, checked before anything is written: not one of the
    files the command reads (``read``: argument -> path; writing it would replace the model or
    the data with the output), and a file, not a folder or a device (``files.check_replaceable``)."""
    from twolayer_xp.io import files

    out = _expanded(path, what)
    for name, source in read.items():
        if os.path.exists(out) and os.path.exists(source) and os.path.samefile(out, source):
            raise ValueError(f"{what} {out} is the {name} this command reads; write the output elsewhere")
    files.check_replaceable(out, what)
    return out
