"""Shared fixtures: small Fashion-MNIST-shaped IDX files on disk, and a tiny search space."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from regnas import data as data_lib
from regnas.space import RegNetSpace


DEBIAN_DATA = data_lib.DEBIAN_DIR
# The smallest networks of the RegNet space: one or two stages, so that a trial compiles quickly.
TINY_SPACE = RegNetSpace(
    depth=(1, 2), w0=(8, 16), wa=(8.0, 16.0), wm=(2.0, 3.0), group_w=(8,), bot_mul=(1.0,)
)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzip-compressed IDX file."""
    magic = 0x0800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())


def make_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return learnable 28x28 images: each class lights a different horizontal band."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count).astype(np.uint8)
    images = rng.integers(0, 60, (count, 28, 28)).astype(np.uint8)
    for index, label in enumerate(labels):
        row = 1 + int(label) * 2
        images[index, row : row + 3, :] = 230
    return images, labels


@pytest.fixture(scope="session")
def idx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the four IDX files: 1,200 training and 300 test images."""
    directory = tmp_path_factory.mktemp("fashion-mnist")
    train_images, train_labels = make_images(1200, seed=1)
    test_images, test_labels = make_images(300, seed=2)
    write_idx(directory / data_lib.TRAIN_IMAGES, train_images)
    write_idx(directory / data_lib.TRAIN_LABELS, train_labels)
    write_idx(directory / data_lib.TEST_IMAGES, test_images)
    write_idx(directory / data_lib.TEST_LABELS, test_labels)
    return directory


@pytest.fixture
def isolated_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Hide Debian's directory, the user cache and REGNAS_DATA_DIR; return the fake cache."""
    monkeypatch.setattr(data_lib, "DEBIAN_DIR", tmp_path / "debian")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(data_lib.DATA_DIR_ENV, raising=False)
    return tmp_path / "cache" / "regnas" / "fashion-mnist"


def real_data_available() -> bool:
    return all((DEBIAN_DATA / name).is_file() for name in data_lib.FILENAMES)


# Tests on the real dataset skip where Debian's package is missing, except when
# REGNAS_REQUIRE_DATASET is set (CI sets it): there they run, and fail on the missing files.
requires_real_data = pytest.mark.skipif(
    not real_data_available() and not os.environ.get("REGNAS_REQUIRE_DATASET"),
    reason="dataset-fashion-mnist is not installed",
)
