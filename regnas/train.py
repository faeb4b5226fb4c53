"""Retrain an exported architecture: ``python -m regnas.train --config FILE --epochs N``."""

from __future__ import annotations

import argparse
import json

from regnas.cli import run_main, setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m regnas.train",
        description="Rebuild an exported architecture, train it on the Fashion-MNIST training "
        "set and print its test accuracy.",
    )
    parser.add_argument(
        "--config", required=True, help="architecture JSON written by 'python -m regnas.export'"
    )
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
        help="initialization and batch-order seed (default: %(default)s)",
    )
    parser.add_argument(
        "--train-size", type=int, default=None, help="training images (default: all 60,000)"
    )
    parser.add_argument(
        "--data-dir", default=None, help="directory with the four Fashion-MNIST IDX .gz files"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the summary as one JSON object on stdout"
    )
    args = parser.parse_args(argv)
    setup_logging()

    from regnas.engine import TrainConfig
    from regnas.retrain import retrain

    train_config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
    )
    summary = retrain(
        args.config, train_config, data_dir=args.data_dir, train_size=args.train_size
    )
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"test accuracy {summary['test_accuracy']:.4f} after {summary['epochs']} epochs "
            f"({summary['total_seconds']:.0f}s, {summary['mflops']:.2f} MFLOPs)"
        )
    return 0


if __name__ == "__main__":
    run_main(main)
