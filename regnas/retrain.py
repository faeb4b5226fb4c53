"""Retrain an exported architecture on the full training set and evaluate it on the test set."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from regnas import data as data_lib
from regnas.archive import load_architecture
from regnas.complexity import complexity
from regnas.engine import DeviceData, TrainConfig, Trainer


_logger = logging.getLogger(__name__)


def retrain(
    config_path: str,
    train_config: TrainConfig,
    data_dir: str | None = None,
    train_size: int | None = None,
) -> dict[str, Any]:
    """Rebuild the architecture of `config_path`, train it, and return a summary.

    The test set is evaluated once, after the last epoch; it never steers training.

    Args:
        config_path: An architecture file written by ``python -m regnas.export``.
        train_config: Optimization settings.
        data_dir: Directory with the Fashion-MNIST files; None searches the defaults.
        train_size: Training images; None uses all 60,000.

    Returns:
        A JSON-ready dict with the test accuracy, timings and the architecture's complexity.
    """
    architecture = load_architecture(config_path)
    spec = architecture.spec
    directory = data_lib.find_data_dir(data_dir)
    _logger.info("Reading Fashion-MNIST from %s", directory.resolve())
    train_images, train_labels = data_lib.load_arrays(directory, train=True)
    if train_size is not None:
        if not 1 <= train_size <= len(train_images):
            raise ValueError(
                f"--train-size must be in [1, {len(train_images)}], got {train_size}."
            )
        train_images, train_labels = train_images[:train_size], train_labels[:train_size]
    test_images, test_labels = data_lib.load_arrays(directory, train=False)
    _check_input(spec.in_channels, spec.num_classes, train_images.shape[-1])

    device_data = DeviceData.create(
        train_images, train_labels, test_images, test_labels, train_config.batch_size
    )
    trainer = Trainer(spec, train_config, device_data)
    compile_seconds = trainer.compile()
    _logger.info(
        "Compiled in %.1fs; training %d epochs on %d images.",
        compile_seconds,
        train_config.epochs,
        len(train_images),
    )

    start, train_seconds = time.perf_counter(), 0.0
    for result in trainer.epochs(evaluate=False):
        train_seconds += result.train_seconds
        _logger.info(
            "epoch %d/%d: loss %.4f, train accuracy %.4f, %.1fs, %.0f images/s",
            result.epoch,
            train_config.epochs,
            result.train_loss,
            result.train_accuracy,
            result.train_seconds,
            result.images_per_second,
        )
    test_accuracy, test_loss = trainer.evaluate()
    counts = complexity(spec, int(train_images.shape[1]))
    return {
        "config": str(config_path),
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "epochs": train_config.epochs,
        "train_images": len(train_images),
        "compile_seconds": round(compile_seconds, 3),
        "train_seconds": round(train_seconds, 3),
        "total_seconds": round(time.perf_counter() - start + compile_seconds, 3),
        "mflops": counts["flops"] / 1e6,
        "params": counts["params"],
        "train_config": dataclasses.asdict(train_config),
    }


def _check_input(in_channels: int, num_classes: int, data_channels: int) -> None:
    if in_channels != data_channels or num_classes != 10:
        raise ValueError(
            f"The architecture expects {in_channels} input channel(s) and {num_classes} classes, "
            f"but Fashion-MNIST has {data_channels} channel and 10 classes. Export an "
            "architecture searched on Fashion-MNIST."
        )
