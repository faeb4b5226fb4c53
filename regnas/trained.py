"""Saved models: trained weights with their architecture, and the code to run them.

A saved model is one msgpack file (`flax.serialization`) with the entries ``format``,
``version``, ``architecture`` (the architecture document as JSON text), ``normalization`` (the
pixel mean and standard deviation that training used) and ``variables`` (``params`` and
``batch_stats`` in AnyNet's layout). `load_trained` rebuilds the network from it.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

from flax import serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from regnas import data as data_lib
from regnas.archive import Architecture, parse_architecture
from regnas.checkpoint import read_msgpack, restore_tree, write_atomic
from regnas.engine import PIXEL_MEAN, PIXEL_STD
from regnas.models import AnyNet, init_variables


MODEL_NAME = "model.msgpack"
FORMAT = "regnas.model"
VERSION = 1
# Images per forward pass in `TrainedModel.logits`; the last batch is zero-padded to this size,
# so any number of images compiles one executable.
_BATCH = 500


def save_model(path: Path, document: Mapping[str, Any], variables: Mapping[str, Any]) -> None:
    """Write trained `variables` and their architecture `document` as one file, atomically."""
    tree = {
        "format": FORMAT,
        "version": VERSION,
        "architecture": json.dumps(document),
        "normalization": {"mean": PIXEL_MEAN, "std": PIXEL_STD},
        "variables": {
            "params": variables["params"],
            "batch_stats": variables["batch_stats"],
        },
    }
    write_atomic(path, serialization.msgpack_serialize(jax.device_get(tree)))


@dataclasses.dataclass(frozen=True, eq=False)
class TrainedModel:
    """A trained network, ready to classify Fashion-MNIST-like images.

    Attributes:
        path: The file it was loaded from.
        architecture: The architecture document, parsed.
        module: The Flax module.
        variables: ``{"params": ..., "batch_stats": ...}`` for `module`.
        mean: Pixel mean, in [0, 1] units, subtracted before the network.
        std: Pixel standard deviation that the centred pixels are divided by.
    """

    path: Path
    architecture: Architecture
    module: AnyNet
    variables: dict[str, Any]
    mean: float
    std: float

    @property
    def spec(self) -> Any:
        """The `AnyNetSpec` of the network."""
        return self.architecture.spec

    def logits(self, images: np.ndarray | jax.Array, mirror: bool = False) -> np.ndarray:
        """Return the class scores of uint8 or float images.

        Args:
            images: A batch, shape (N, 28, 28) or (N, 28, 28, 1), or one image, shape (28, 28)
                or (28, 28, 1); uint8 in [0, 255] or floats in [0, 1].
            mirror: Also score each image mirrored left to right and return the mean of the
                two scores (test-time augmentation), for networks trained with random flips.

        Returns:
            Shape (N, classes) for a batch, (classes,) for one image.

        Raises:
            ValueError: The shape, dtype or value range does not fit.
            TypeError: `mirror` is not a bool.
        """
        if not isinstance(mirror, (bool, np.bool_)):
            raise TypeError(f"mirror must be True or False, got {mirror!r}.")
        images = np.asarray(images)
        if self._is_one_image(images.shape):
            return self.logits(images[None], mirror)[0]
        pixels = self._pixels(images)
        if mirror:
            return _mirror_average(self._scores(pixels), self._scores(pixels[:, :, ::-1]))
        return self._scores(pixels)

    def predict(self, images: np.ndarray | jax.Array, mirror: bool = False) -> np.ndarray:
        """Return the predicted class of each image, or of one image as a 0-d array.

        See `logits` for the arguments.
        """
        return np.argmax(self.logits(images, mirror), axis=-1)

    def _scores(self, pixels: np.ndarray) -> np.ndarray:
        count = len(pixels)
        padded = -(-count // _BATCH) * _BATCH
        padding = np.zeros((padded - count, *pixels.shape[1:]), np.float32)
        pixels = np.concatenate([pixels, padding])
        outputs = [
            np.asarray(_apply(self.module, self.variables, pixels[start : start + _BATCH]))
            for start in range(0, padded, _BATCH)
        ]
        return np.concatenate(outputs)[:count] if outputs else np.zeros((0, self.spec.num_classes))

    def _is_one_image(self, shape: tuple[int, ...]) -> bool:
        size, channels = self.architecture.image_size, self.spec.in_channels
        return shape in ((size, size), (size, size, channels))

    def _pixels(self, images: np.ndarray | jax.Array) -> np.ndarray:
        images = np.asarray(images)
        size, input_shape = self.architecture.image_size, np.shape(images)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.shape[1:] != (size, size, self.spec.in_channels):
            raise ValueError(
                f"images must have shape (N, {size}, {size}) or (N, {size}, {size}, "
                f"{self.spec.in_channels}), or ({size}, {size}) or ({size}, {size}, "
                f"{self.spec.in_channels}) for one image, got {input_shape}."
            )
        if images.dtype == np.uint8:
            # The same operations, in the same order, as the training engine's normalization.
            scaled = images.astype(np.float32) / np.float32(255.0)
        elif np.issubdtype(images.dtype, np.floating):
            scaled = images.astype(np.float32)
            if not np.isfinite(scaled).all():
                raise ValueError("float images must be finite, got NaN or infinite values.")
            if scaled.size and (scaled.min() < 0.0 or scaled.max() > 1.0):
                raise ValueError(
                    f"float images must be in [0, 1], got values in [{scaled.min()}, "
                    f"{scaled.max()}]; pass uint8 images for pixel values 0-255."
                )
        else:
            hint = ""
            if np.issubdtype(images.dtype, np.integer):
                # A list of Python integers arrives here as int64.
                hint = (
                    " Pass pixel values 0-255 as uint8, for example np.asarray(images, np.uint8)."
                )
            raise ValueError(f"images must be uint8 or float, got dtype {images.dtype}.{hint}")
        return (scaled - np.float32(self.mean)) / np.float32(self.std)


@functools.partial(jax.jit, static_argnums=0)
def _apply(module: AnyNet, variables: dict[str, Any], pixels: jax.Array) -> Any:
    return module.apply(variables, pixels, False)


def model_path(path: str | Path) -> Path:
    """Return the model file for a run directory or a model file."""
    path = Path(path)
    return path / MODEL_NAME if path.is_dir() else path


def load_trained(path: str | Path) -> TrainedModel:
    """Load a model saved by ``python -m regnas.train``.

    Args:
        path: A run directory (its ``model.msgpack`` is read) or a model file.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is not a saved model, or its weights do not fit its architecture.
    """
    file = model_path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"Saved model {file} not found. Train one with 'python -m regnas.train --config "
            "FILE', which writes runs/NAME/model.msgpack, and pass that file or its directory."
        )
    fix = f"Pass a run directory of 'python -m regnas.train', or the {MODEL_NAME} in it."
    raw = read_msgpack(file, FORMAT, VERSION, "a saved model", fix)
    try:
        architecture = parse_architecture(json.loads(raw["architecture"]))
        normalization = raw["normalization"]
        saved = raw["variables"]
        mean, std = float(normalization["mean"]), float(normalization["std"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{file} is not a valid saved model: {error!r}.") from None

    module = AnyNet(architecture.spec)
    size, channels = architecture.image_size, architecture.spec.in_channels
    target = init_variables(module, 0, (1, size, size, channels))
    restored = restore_tree(
        {"params": target["params"], "batch_stats": target["batch_stats"]},
        saved,
        f"{file} (weights do not match its architecture; retrain to write a new model)",
    )
    variables = jax.device_put(restored)
    return TrainedModel(file, architecture, module, variables, mean, std)


def evaluate_model(
    model: TrainedModel, images: np.ndarray, labels: np.ndarray, mirror: bool = False
) -> tuple[float, float]:
    """Return (accuracy, mean cross-entropy) of `model` on labelled images.

    With `mirror`, the scores are averaged with those of the mirrored images (see `logits`).
    """
    return _accuracy_and_loss(model.logits(images, mirror), labels)


def _accuracy_and_loss(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    labels = np.asarray(labels, np.int32)
    correct = int(np.sum(np.argmax(logits, axis=-1) == labels))
    loss = optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits), labels)
    return correct / len(labels), float(jnp.mean(loss))


def _mirror_average(scores: np.ndarray, mirrored_scores: np.ndarray) -> np.ndarray:
    return (scores + mirrored_scores) / np.float32(2.0)


def evaluate_test_set(path: str | Path, data_dir: str | None = None) -> dict[str, Any]:
    """Load a saved model and return its test accuracy and loss as a JSON-ready dict.

    Args:
        path: A run directory or a model file (see `load_trained`).
        data_dir: Directory with the Fashion-MNIST files; None searches the defaults.
    """
    model = load_trained(path)
    images, labels = data_lib.load_arrays(data_lib.find_data_dir(data_dir), train=False)
    return {"model": str(model.path), **evaluation_summary(model, images, labels)}


def evaluation_summary(
    model: TrainedModel, images: np.ndarray, labels: np.ndarray
) -> dict[str, Any]:
    """Return the test-set entries of a run's summary: accuracy and loss, plain and mirrored."""
    # The plain scores serve both entries, so the network runs once on each orientation.
    scores = model.logits(images)
    mirrored_scores = model.logits(np.flip(images, axis=2))
    accuracy, loss = _accuracy_and_loss(scores, labels)
    mirrored_accuracy, _ = _accuracy_and_loss(_mirror_average(scores, mirrored_scores), labels)
    return {
        "test_accuracy": accuracy,
        "test_loss": loss,
        "test_accuracy_mirrored": mirrored_accuracy,
        "test_images": len(labels),
    }


def accuracy_text(summary: Mapping[str, Any]) -> str:
    """Return "test accuracy A (B averaged with mirrored images)" for a test-set summary."""
    return (
        f"test accuracy {summary['test_accuracy']:.4f} "
        f"({summary['test_accuracy_mirrored']:.4f} averaged with mirrored images)"
    )
