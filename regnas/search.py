"""Search RegNet architectures on Fashion-MNIST: ``python -m regnas.search --trials 200``."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from regnas.cli import StopRequest, run_main, setup_logging
from regnas.space import SPACE_NAMES, load_space_config, make_space
from regnas.spec import PRECISIONS
from regnas.study import DEFAULT_EPOCH_SIZE, SAMPLERS, SearchConfig


def build_parser() -> argparse.ArgumentParser:
    defaults = SearchConfig()
    parser = argparse.ArgumentParser(
        prog="python -m regnas.search",
        description="Search the AnyNet and RegNet design spaces on Fashion-MNIST with Optuna. "
        "Rerunning the same command resumes the study until it contains --trials finished trials.",
    )
    parser.add_argument(
        "--trials",
        type=int,
        default=defaults.trials,
        help="study-wide total of trained trials, complete or pruned; rejected samples are "
        "not counted (default: %(default)s)",
    )
    parser.add_argument(
        "--study",
        default=None,
        help="study name (default: SPACE-fashion-mnist, e.g. regnetx-fashion-mnist)",
    )
    parser.add_argument(
        "--space",
        choices=SPACE_NAMES,
        default=None,
        help="design space (default: the space of --space-config, else regnetx)",
    )
    parser.add_argument(
        "--space-config",
        default=None,
        metavar="FILE",
        help="study definition file (TOML) that overrides the space's ranges; see studies/",
    )
    parser.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL or SQLite file path (default: studies/regnas.db)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="seed of the sampler and of each trial's training (default: %(default)s)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=defaults.epochs,
        help="training epochs per trial; successive halving keeps the best quarter of the "
        "trials after epochs 1, 4, 16, ... before the last (default: %(default)s)",
    )
    parser.add_argument(
        "--train-size",
        type=int,
        default=defaults.train_size,
        help="training images a trial draws from, from the official training set "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--epoch-size",
        type=int,
        default=None,
        help="training images per epoch, drawn at random from the --train-size ones and "
        f"rounded down to whole batches (default: {DEFAULT_EPOCH_SIZE}, or --train-size if "
        "smaller)",
    )
    parser.add_argument(
        "--val-size",
        type=int,
        default=defaults.val_size,
        help="validation images, held out from the official training set (default: %(default)s)",
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=defaults.lr,
        help="peak learning rate of each trial's training (default: %(default)s)",
    )
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=defaults.weight_decay,
        help="L2 penalty on kernels in each trial's training (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help="images per SGD step (default: %(default)s)",
    )
    parser.add_argument(
        "--max-mflops",
        type=float,
        default=defaults.max_mflops,
        help="reject sampled architectures above this many MFLOPs at 28x28 before compiling "
        "them (default: %(default)s)",
    )
    parser.add_argument(
        "--min-mflops",
        type=float,
        default=None,
        help="reject sampled architectures below this many MFLOPs before compiling them",
    )
    parser.add_argument(
        "--max-params",
        type=int,
        default=None,
        help="reject sampled architectures with more parameters before compiling them",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=defaults.precision,
        help="dtype the stem and blocks compute in; bfloat16 is for GPUs, and weights, "
        "BatchNorm, the head and the loss stay float32 (default: %(default)s)",
    )
    parser.add_argument(
        "--objectives",
        default="accuracy",
        help="comma-separated objectives: accuracy (maximized), or error followed by mflops "
        "and/or params for a multi-objective study without pruning (default: %(default)s)",
    )
    parser.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default=defaults.sampler,
        help="tpe searches; random samples the space evenly, for honest error EDFs "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--warm-start",
        choices=("zoo",),
        default=None,
        help="zoo: first train RegNet model-zoo configurations scaled to the budget",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="directory with the four Fashion-MNIST IDX .gz files "
        "(default: $REGNAS_DATA_DIR, Debian's dataset-fashion-mnist, the cache)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes on this machine (default: one per CPU core, at "
        "most 4, each pinned to its cores; 1 when a JAX GPU plugin is installed)",
    )
    parser.add_argument("--verbose", action="store_true", help="log debug messages")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    StopRequest.install()
    # Several workers share one GPU, so none may claim most of its memory up front.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    from regnas.workers import run_search

    if args.space_config is not None:
        space = load_space_config(args.space_config, args.space)
    else:
        space = make_space(args.space or "regnetx")
    objectives = tuple(name.strip() for name in args.objectives.split(",") if name.strip())
    config = SearchConfig(
        study=args.study or f"{space.name}-fashion-mnist",
        space=space,
        min_mflops=args.min_mflops,
        max_params=args.max_params,
        objectives=objectives,
        sampler=args.sampler,
        warm_start=args.warm_start,
        space_config=args.space_config,
        storage=args.storage,
        trials=args.trials,
        seed=args.seed,
        epochs=args.epochs,
        train_size=args.train_size,
        epoch_size=args.epoch_size,
        val_size=args.val_size,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        precision=args.precision,
        max_mflops=args.max_mflops,
        data_dir=args.data_dir,
    )
    command = "python -m regnas.search " + shlex.join(sys.argv[1:] if argv is None else argv)
    run_search(config, workers=args.workers, resume_command=command.strip(), verbose=args.verbose)
    return 0


if __name__ == "__main__":
    run_main(main)
