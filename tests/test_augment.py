"""Device-side augmentation: random crops from zero-padded images and horizontal flips."""

from __future__ import annotations

import jax
import numpy as np

from regnas.augment import augment_images


def numbered_images(count: int = 64) -> np.ndarray:
    """Return uint8 images whose pixels are all different within an image (1-255, no zeros)."""
    rng = np.random.default_rng(0)
    return rng.integers(1, 256, (count, 8, 8, 1)).astype(np.uint8)


def test_no_augmentation_is_identity() -> None:
    images = numbered_images()

    out = augment_images(jax.random.key(0), images, 0, False)

    np.testing.assert_array_equal(out, images)


def test_flip_mirrors_some_images() -> None:
    images = numbered_images()

    out = np.asarray(augment_images(jax.random.key(1), images, 0, True))

    same = [np.array_equal(a, b) for a, b in zip(out, images, strict=True)]
    mirrored = [np.array_equal(a, b[:, ::-1]) for a, b in zip(out, images, strict=True)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert 0 < sum(mirrored) < len(images)


def test_crop_shifts_within_padding() -> None:
    images = numbered_images()
    pad = 2

    out = np.asarray(augment_images(jax.random.key(2), images, pad, False))

    assert out.shape == images.shape
    assert out.dtype == np.uint8
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = set()
    for image, source in zip(out, padded, strict=True):
        matches = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if np.array_equal(image, source[dy : dy + 8, dx : dx + 8])
        ]
        assert len(matches) == 1
        offsets.add(matches[0])
    # 64 images over 25 offsets: most offsets occur, so the crop position is random.
    assert len(offsets) > 10


def test_same_key_same_images() -> None:
    images = numbered_images()

    first = augment_images(jax.random.key(3), images, 2, True)
    again = augment_images(jax.random.key(3), images, 2, True)
    other = augment_images(jax.random.key(4), images, 2, True)

    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
