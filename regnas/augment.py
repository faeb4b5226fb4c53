"""Data augmentation on the device: random crops from zero-padded images and horizontal flips.

The training set already lives on the device (`regnas.engine.DeviceData`), so each epoch makes
one augmented copy there in a single jitted call. The host sends only a key per epoch.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.jit, static_argnums=(2, 3))
def augment_images(key: jax.Array, images: jax.Array, crop_padding: int, flip: bool) -> jax.Array:
    """Return a randomly cropped and flipped copy of a batch of NHWC images.

    Args:
        key: PRNG key; the same key gives the same copy.
        images: Images of shape (N, H, W, C), any dtype; the copy keeps it.
        crop_padding: Zero border, in pixels, added on every side before cutting an H x W
            window at a uniformly drawn offset; 0 leaves the images uncropped.
        flip: Whether each image is mirrored left to right with probability 1/2.
    """
    count, height, width, _ = images.shape
    crop_key, flip_key = jax.random.split(key)
    if crop_padding:
        pad = crop_padding
        padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        offsets = jax.random.randint(crop_key, (count, 2), 0, 2 * pad + 1)

        def crop(image: jax.Array, offset: jax.Array) -> jax.Array:
            return jax.lax.dynamic_slice(
                image, (offset[0], offset[1], 0), (height, width, image.shape[-1])
            )

        images = jax.vmap(crop)(padded, offsets)
    if flip:
        mirrored = jax.random.bernoulli(flip_key, 0.5, (count, 1, 1, 1))
        images = jnp.where(mirrored, images[:, :, ::-1, :], images)
    return images
