"""Train one architecture as a search trial would, and print its validation accuracy by epoch.

Usage:
    python scripts/bench_trial_budget.py --config FILE [--train-size 55000] [--epoch-size N]
        [--epochs 16] [--lr 0.2] [--warmup-epochs 1] [--val-size 5000] [--seed 0] [--json]

It measures how many training images a trial needs before its validation accuracy shows what
the architecture can reach. The search's defaults come from such runs. The split is the
search's: --train-size training images and --val-size validation images held out from the
official training set. Every epoch is evaluated, unlike in a pruned search. Run it under
``taskset -c 0`` to train on one core, as each worker of a two-worker search does.
"""

from __future__ import annotations

import argparse
import json
import time

from regnas.archive import load_architecture
from regnas.data import find_data_dir, load_splits
from regnas.engine import DeviceData, TrainConfig, Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="architecture JSON (regnas.export)")
    parser.add_argument("--train-size", type=int, default=55_000)
    parser.add_argument("--epoch-size", type=int, default=None, help="default: --train-size")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--warmup-epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--val-size", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args()

    spec = load_architecture(args.config).spec
    splits = load_splits(find_data_dir(args.data_dir), args.train_size, args.val_size)
    data = DeviceData.create(
        splits.train_images,
        splits.train_labels,
        splits.val_images,
        splits.val_labels,
        args.batch_size,
    )
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        epoch_size=args.epoch_size,
        lr=args.lr,
        warmup_epochs=args.warmup_epochs,
        seed=args.seed,
    )
    trainer = Trainer(spec, config, data)
    start = time.perf_counter()
    compile_seconds = trainer.compile()
    images_per_epoch = trainer.steps_per_epoch * args.batch_size
    accuracies = []
    for result in trainer.epochs():
        accuracies.append(round(result.eval_accuracy, 4))
        if not args.json:
            print(
                f"epoch {result.epoch}: {result.epoch * images_per_epoch:,} images, "
                f"val_accuracy {result.eval_accuracy:.4f}, {result.images_per_second:.0f} images/s"
            )
    summary = {
        "config": args.config,
        "train_size": args.train_size,
        "images_per_epoch": images_per_epoch,
        "epochs": args.epochs,
        "lr": args.lr,
        "warmup_epochs": args.warmup_epochs,
        "seed": args.seed,
        "compile_seconds": round(compile_seconds, 1),
        "total_seconds": round(time.perf_counter() - start, 1),
        "val_accuracy": accuracies,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"final val_accuracy {accuracies[-1]:.4f} after {args.epochs * images_per_epoch:,} "
            f"images; compile {summary['compile_seconds']} s, total {summary['total_seconds']} s"
        )


if __name__ == "__main__":
    main()
