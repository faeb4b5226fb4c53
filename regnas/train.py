"""Retrain an exported architecture: ``python -m regnas.train --config FILE --epochs N``."""

from __future__ import annotations

import argparse
import json
import sys

from regnas.cli import count_text, run_main, setup_logging
from regnas.spec import PRECISIONS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m regnas.train",
        description="Rebuild an exported architecture, train it on the Fashion-MNIST training "
        "set and print its test accuracy. Rerunning the same command resumes from the last "
        "epoch's checkpoint.",
    )
    parser.add_argument(
        "--config", required=True, help="architecture JSON written by 'python -m regnas.export'"
    )
    parser.add_argument(
        "--trial",
        type=int,
        default=None,
        help="the trial to train from a file of several (export --pareto or --top-k)",
    )
    _add_recipe_arguments(parser)
    parser.add_argument(
        "--train-size", type=int, default=None, help="training images (default: all 60,000)"
    )
    parser.add_argument(
        "--data-dir", default=None, help="directory with the four Fashion-MNIST IDX .gz files"
    )
    _add_run_arguments(parser)
    parser.add_argument(
        "--json", action="store_true", help="print the summary as one JSON object on stdout"
    )
    args = parser.parse_args(argv)
    setup_logging()

    from regnas.engine import TrainConfig
    from regnas.retrain import RECIPE_FIELDS, RunOptions, retrain
    from regnas.trained import accuracy_text

    try:
        train_config = TrainConfig(**{name: getattr(args, name) for name in RECIPE_FIELDS})
    except ValueError as error:
        # TrainConfig names its fields; on the command line they are flags.
        name, _, rest = str(error).partition(" ")
        if name not in RECIPE_FIELDS:
            raise
        raise ValueError(f"--{name.replace('_', '-')} {rest}") from None
    options = RunOptions(
        run_dir=args.run_dir,
        checkpoint_dir=args.checkpoint_dir,
        fresh=args.fresh,
        progress=args.progress and sys.stderr.isatty(),
        eval_every_epoch=args.eval_every_epoch,
    )
    summary = retrain(
        args.config,
        train_config,
        data_dir=args.data_dir,
        train_size=args.train_size,
        options=options,
        trial=args.trial,
    )
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{accuracy_text(summary)} after {count_text(summary['epochs'], 'epoch')} "
            f"({summary['total_seconds']:.0f}s, {summary['mflops']:.2f} MFLOPs); "
            f"model {summary['model']}"
        )
    return 0


def _add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of the training recipe: optimization, augmentation, averaging."""
    parser.add_argument(
        "--epochs", type=int, default=30, help="training epochs (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=128, help="images per SGD step (default: %(default)s)"
    )
    parser.add_argument(
        "--lr", type=float, default=0.1, help="peak learning rate (default: %(default)s)"
    )
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=5e-4,
        help="L2 penalty on kernels (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="initialization, batch-order and augmentation seed (default: %(default)s)",
    )
    parser.add_argument(
        "--crop-padding",
        type=int,
        default=2,
        help="zero border in pixels before a random 28x28 crop; 0 disables cropping "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="mirror half of the training images left to right (default: on)",
    )
    parser.add_argument(
        "--label-smoothing",
        type=float,
        default=0.1,
        help="weight of the uniform target mixed into the labels (default: %(default)s)",
    )
    parser.add_argument(
        "--ema-decay",
        type=float,
        default=0.0,
        help="decay of a moving average of the weights and BatchNorm statistics, which is "
        "then saved and evaluated instead of the last weights; 0 disables it, 0.999 is a "
        "typical value (default: %(default)s)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="dtype the stem and blocks compute in; bfloat16 is for GPUs, and weights, "
        "BatchNorm, the head and the loss stay float32 (default: %(default)s)",
    )


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of the run's files and display."""
    parser.add_argument(
        "--run-dir",
        default=None,
        help="directory of model.msgpack and summary.json (default: runs/NAME for --config "
        "NAME.json, runs/NAME-trialN with --trial N)",
    )
    parser.add_argument(
        "--checkpoint-dir",
        default=None,
        help="directory of checkpoint.msgpack, written after every epoch (default: --run-dir)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start at epoch 1 even if a checkpoint exists; the first epoch replaces it",
    )
    parser.add_argument(
        "--eval-every-epoch",
        action="store_true",
        help="also log the test accuracy after every epoch (never used to steer training)",
    )
    parser.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar (it is drawn only when stderr is a terminal)",
    )


if __name__ == "__main__":
    run_main(main)
