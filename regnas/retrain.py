"""Retrain an exported architecture on the full training set and evaluate it on the test set.

A run writes into its run directory (default ``runs/<architecture file name without .json>``):
``checkpoint.msgpack`` after every epoch, which a rerun of the same command resumes from, then
the trained model ``model.msgpack`` (see `regnas.trained`) and ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
import sys
import time
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from regnas import data as data_lib
from regnas.archive import architecture_document, load_architecture
from regnas.checkpoint import (
    CHECKPOINT_NAME,
    checkpoint_lock,
    load_checkpoint,
    save_checkpoint,
    write_atomic,
)
from regnas.cli import count_text
from regnas.complexity import complexity
from regnas.engine import DeviceData, EpochResult, TrainConfig, Trainer
from regnas.trained import MODEL_NAME, evaluation_summary, load_trained, save_model
from regnas.versions import package_versions


_logger = logging.getLogger(__name__)

SUMMARY_NAME = "summary.json"
# The TrainConfig fields that regnas.train sets from its flag of the same name (--batch-size).
RECIPE_FIELDS = (
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "seed",
    "crop_padding",
    "flip",
    "label_smoothing",
    "ema_decay",
    "precision",
)
# Settings that older checkpoints did not store, with the value they trained with.
_OLD_DEFAULTS = {"precision": "float32"}
# The flag that sets each setting, as a checkpoint mismatch error names it.
_SETTING_FLAGS = {
    "train_images": "--train-size",
    **{name: "--" + name.replace("_", "-") for name in RECIPE_FIELDS},
}
# Steps between two reads of the running loss for the progress bar; each read waits for the
# device, which stalls the queue of dispatched steps.
_PROGRESS_LOSS_EVERY = 50


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Where a retraining run writes, and what it shows.

    Attributes:
        run_dir: Directory of the model and summary; None uses ``runs/<architecture name>``.
        checkpoint_dir: Directory of the checkpoint; None uses `run_dir`.
        fresh: Whether to ignore an existing checkpoint and start at epoch 1. The old
            checkpoint stays until the first epoch of the new run replaces it.
        progress: Whether to draw a progress bar on stderr during each epoch.
        eval_every_epoch: Whether to log the test accuracy after every epoch. It only informs;
            nothing in training depends on it.
    """

    run_dir: str | Path | None = None
    checkpoint_dir: str | Path | None = None
    fresh: bool = False
    progress: bool = False
    eval_every_epoch: bool = False


def default_run_dir(config_path: str | Path, trial: int | None = None) -> Path:
    """Return ``runs/<name>`` for ``<name>.json``; ``runs/<name>-trialN`` for one of its trials."""
    name = Path(config_path).stem
    return Path("runs") / (name if trial is None else f"{name}-trial{trial}")


def retrain(
    config_path: str,
    train_config: TrainConfig,
    data_dir: str | None = None,
    train_size: int | None = None,
    options: RunOptions | None = None,
    trial: int | None = None,
) -> dict[str, Any]:
    """Rebuild the architecture of `config_path`, train it, save it, and return a summary.

    The test set is evaluated after the last epoch, on the saved model, so that loading the
    model later gives the same accuracy. It never steers training.

    Args:
        config_path: An architecture file written by ``python -m regnas.export``.
        train_config: Optimization and augmentation settings.
        data_dir: Directory with the Fashion-MNIST files; None searches the defaults.
        train_size: Training images; None uses all 60,000.
        options: Output directories, resuming and display; None uses `RunOptions` defaults.
        trial: The trial to train from a file of several (``--pareto``, ``--top-k``).

    Returns:
        The JSON-ready summary that is also written to ``summary.json``.

    Raises:
        ValueError: Bad input, a checkpoint written with other settings, or another run
            using the checkpoint directory.
    """
    options = options or RunOptions()
    if train_size is not None and train_size < 1:
        # Checked before the data is read, which takes seconds.
        raise ValueError(f"--train-size must be a positive integer, got {train_size}.")
    start = time.perf_counter()
    architecture = load_architecture(config_path, trial=trial)
    spec = architecture.spec
    document = architecture_document(
        spec,
        architecture.regnet,
        architecture.image_size,
        architecture.metrics,
        architecture.provenance,
    )
    train_images, train_labels, test_images, test_labels = _load_data(data_dir, train_size)
    _check_input(spec.in_channels, spec.num_classes, train_images.shape[-1])
    if architecture.image_size != train_images.shape[1]:
        raise ValueError(
            f"{config_path} describes {architecture.image_size}x{architecture.image_size} "
            f"inputs (complexity.image_size), but Fashion-MNIST images are "
            f"{train_images.shape[1]}x{train_images.shape[2]}. Set image_size to "
            f"{train_images.shape[1]}, or export the architecture again."
        )

    run_dir = Path(options.run_dir) if options.run_dir else default_run_dir(config_path, trial)
    checkpoint = Path(options.checkpoint_dir or run_dir) / CHECKPOINT_NAME
    for directory, flag in ((run_dir, "--run-dir"), (checkpoint.parent, "--checkpoint-dir")):
        if directory.exists() and not directory.is_dir():
            raise ValueError(f"{flag} {directory} is a file; pass a directory.")
    settings = {
        "architecture": spec.to_dict(),
        **dataclasses.asdict(train_config),
        "train_images": len(train_images),
    }
    device_data = DeviceData.create(
        train_images, train_labels, test_images, test_labels, train_config.batch_size
    )
    trainer = Trainer(spec, train_config, device_data)
    model_file = run_dir / MODEL_NAME
    with checkpoint_lock(checkpoint.parent):
        history = _resume(trainer, checkpoint, settings, options.fresh)
        resumed_after = trainer.epoch
        compile_seconds = 0.0
        if trainer.epoch < train_config.epochs:
            compile_seconds = trainer.compile()
            _logger.info(
                "Compiled in %.1fs; %d of %s left, on %d images; checkpoint %s",
                compile_seconds,
                train_config.epochs - trainer.epoch,
                count_text(train_config.epochs, "epoch"),
                len(train_images),
                checkpoint,
            )
            _train(trainer, history, checkpoint, settings, options)
        else:
            _logger.info(
                "Training is already complete (%s); evaluating the model. Pass --fresh to "
                "train again.",
                count_text(train_config.epochs, "epoch"),
            )
        save_model(model_file, document, trainer.final_variables())

    # Loading the saved model compiles its whole forward pass, which takes a while on a CPU.
    _logger.info(
        "Evaluating the saved model on %d test images, plain and mirrored", len(test_images)
    )
    summary = {
        "config": str(config_path),
        "run_dir": str(run_dir),
        "model": str(model_file),
        "architecture": spec.to_dict(),
        **evaluation_summary(load_trained(model_file), test_images, test_labels),
    }
    if train_config.ema_decay:
        summary["test_accuracy_without_ema"] = trainer.evaluate()[0]
    facts = _training_facts(
        spec, train_config, history, resumed_after, len(train_images), train_images.shape[1]
    )
    summary.update(facts)
    summary.update(
        compile_seconds=round(compile_seconds, 3),
        total_seconds=round(time.perf_counter() - start, 3),
    )
    write_atomic(run_dir / SUMMARY_NAME, (json.dumps(summary, indent=2) + "\n").encode())
    _logger.info("Wrote %s and %s", model_file, run_dir / SUMMARY_NAME)
    return summary


def _load_data(
    data_dir: str | None, train_size: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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
    return train_images, train_labels, test_images, test_labels


def _resume(
    trainer: Trainer, checkpoint: Path, settings: dict[str, Any], fresh: bool
) -> list[dict[str, Any]]:
    """Restore `trainer` from `checkpoint` when there is one; return the epochs trained so far."""
    if not checkpoint.exists():
        return []
    if fresh:
        _logger.info("--fresh: starting at epoch 1; the first epoch replaces %s", checkpoint)
        return []
    history = load_checkpoint(checkpoint, trainer, settings, _SETTING_FLAGS, _OLD_DEFAULTS)
    _logger.info(
        "Resuming from %s after epoch %d of %d", checkpoint, trainer.epoch, trainer.config.epochs
    )
    return history


def _train(
    trainer: Trainer,
    history: list[dict[str, Any]],
    checkpoint: Path,
    settings: dict[str, Any],
    options: RunOptions,
) -> None:
    """Train the remaining epochs, checkpointing and logging after each one."""
    progress = _EpochProgress(trainer) if options.progress else None
    try:
        for result in trainer.epochs(evaluate=options.eval_every_epoch, on_step=progress):
            history.append(_epoch_record(result, options.eval_every_epoch))
            save_checkpoint(checkpoint, trainer, settings, history)
            _log_epoch(result, trainer.config.epochs, options.eval_every_epoch)
    except KeyboardInterrupt:
        _logger.info(
            "Interrupted; rerun the same command to resume from the last checkpoint, %s",
            checkpoint,
        )
        raise


def _log_epoch(result: EpochResult, epochs: int, evaluated: bool) -> None:
    evaluation = f", test accuracy {result.eval_accuracy:.4f}" if evaluated else ""
    _logger.info(
        "epoch %d/%d: loss %.4f, train accuracy %.4f%s, %.1fs, %.0f images/s",
        result.epoch,
        epochs,
        result.train_loss,
        result.train_accuracy,
        evaluation,
        result.train_seconds,
        result.images_per_second,
    )


def _epoch_record(result: EpochResult, evaluated: bool) -> dict[str, Any]:
    return {
        "epoch": result.epoch,
        "train_loss": result.train_loss,
        "train_accuracy": result.train_accuracy,
        # JSON has no NaN, so an epoch without evaluation stores null.
        "test_accuracy": result.eval_accuracy if evaluated else None,
        "seconds": round(result.train_seconds, 3),
        "images_per_second": round(result.images_per_second, 1),
    }


def _training_facts(
    spec: Any,
    train_config: TrainConfig,
    history: list[dict[str, Any]],
    resumed_after: int,
    train_count: int,
    image_size: int,
) -> dict[str, Any]:
    """Return the summary entries that describe training itself."""
    train_seconds = sum(record["seconds"] for record in history)
    steps = train_count // train_config.batch_size
    images = steps * train_config.batch_size * len(history)
    counts = complexity(spec, image_size)
    return {
        "epochs": train_config.epochs,
        "resumed_after_epoch": resumed_after,
        "train_images": train_count,
        "history": history,
        "train_seconds": round(train_seconds, 3),
        "images_per_second": round(images / train_seconds, 1) if train_seconds else None,
        "mflops": counts["flops"] / 1e6,
        "params": counts["params"],
        "train_config": dataclasses.asdict(train_config),
        "versions": package_versions(),
    }


class _EpochProgress:
    """A tqdm bar per epoch on stderr, counting images, with the running mean loss."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.bar: tqdm[Any] | None = None

    def __call__(self, step: int, totals: jax.Array) -> None:
        trainer = self.trainer
        steps, batch_size = trainer.steps_per_epoch, trainer.config.batch_size
        if self.bar is None:
            self.bar = tqdm(
                total=steps * batch_size,
                desc=f"epoch {trainer.epoch + 1}/{trainer.config.epochs}",
                unit="img",
                unit_scale=True,
                leave=False,
                file=sys.stderr,
            )
        self.bar.update(batch_size)
        if step % _PROGRESS_LOSS_EVERY == 0 or step == steps:
            self.bar.set_postfix(loss=f"{float(totals[0]) / step:.4f}", refresh=False)
        if step == steps:
            self.bar.close()
            self.bar = None


def _check_input(in_channels: int, num_classes: int, data_channels: int) -> None:
    if in_channels != data_channels or num_classes != 10:
        raise ValueError(
            f"The architecture expects {count_text(in_channels, 'input channel')} and "
            f"{num_classes} classes, "
            f"but Fashion-MNIST has {data_channels} channel and 10 classes. Export an "
            "architecture searched on Fashion-MNIST."
        )
