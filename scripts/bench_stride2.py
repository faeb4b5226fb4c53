"""Time the stride-2 3x3 convolutions of a network in regnas's two forms and as XLA's convolution.

Usage: python scripts/bench_stride2.py [--config FILE [--trial N]] [--batch-size N] [--repeats N]

The first block of each stage with stride 2 has a grouped 3x3 convolution with stride 2. On the
CPU, regnas expands its kernel to a block-diagonal dense kernel and computes it with
`regnas.models.conv3x3_stride2_as_matmul`, or on images of 400 pixels and more with
`regnas.models.conv3x3_stride2_by_phases` (XLA's convolution forward, a gradient built from
pixel phases). For each such convolution of the network, this script times both forms and
`lax.conv_general_dilated` with stride 2 on the same dense kernel. It times the forward pass
alone, and the forward and backward pass together (the gradient with respect to the input and
the kernel), and prints the median of the repeats in milliseconds. Without --config it times
the reference AnyNet (stem 16, stages (1, 24), (2, 56), (4, 152), group width 8).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import time

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from regnas import AnyNetSpec, StageSpec
from regnas.archive import load_architecture
from regnas.models import conv3x3_stride2_as_matmul, conv3x3_stride2_by_phases


def strided_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Convolve NHWC `x` with a 3x3 HWIO `kernel`, stride 2 and padding 1, as XLA does."""
    return lax.conv_general_dilated(
        x, kernel, (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


FORMS = {
    "convolution": strided_conv,
    "matrix multiply": conv3x3_stride2_as_matmul,
    "pixel phases": conv3x3_stride2_by_phases,
}


def stride2_shapes(spec: AnyNetSpec, image_size: int) -> list[tuple[str, int, int]]:
    """Return (block name, input size, channels) of each stride-2 3x3 convolution of `spec`."""
    size = -(-image_size // spec.stem_stride)
    shapes = []
    for index, stage in enumerate(spec.stages, start=1):
        if stage.stride == 2:
            shapes.append((f"s{index}_b1", size, stage.inner_width))
        size = -(-size // stage.stride)
    return shapes


def median_ms(function: Callable[..., object], *args: jax.Array, repeats: int) -> float:
    """Return the median wall time of `function(*args)` in milliseconds, after one warm-up call."""
    jax.block_until_ready(function(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def positive_int(text: str) -> int:
    """Parse a command-line integer of at least 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def load_network(
    parser: argparse.ArgumentParser, config: str | None, trial: int | None
) -> tuple[AnyNetSpec, int]:
    """Return the spec and image size of the `config` file, or of the reference AnyNet."""
    check_trial(parser, config, trial)
    if config is None:
        stages = [(1, 24), (2, 56), (4, 152)]
        return AnyNetSpec(stages=tuple(StageSpec(d, w, group_w=8) for d, w in stages)), 28
    try:
        architecture = load_architecture(config, trial=trial)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    return architecture.spec, architecture.image_size


def check_trial(parser: argparse.ArgumentParser, config: str | None, trial: int | None) -> None:
    """Exit with a usage error when --trial comes without --config, which it picks from."""
    if trial is not None and not config:
        parser.error("--trial picks an architecture from a --config file; pass --config FILE too.")


def add_timing_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --trial, --batch-size and --repeats, which both convolution benchmarks take."""
    parser.add_argument(
        "--trial", type=int, default=None, help="the trial to time from a file of several"
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=128,
        help="images per call (default: %(default)s)",
    )
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=30,
        help="timed calls of each form; the median is printed (default: %(default)s)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config", default=None, help="architecture JSON from regnas.export (default: reference)"
    )
    add_timing_arguments(parser)
    args = parser.parse_args()

    spec, image_size = load_network(parser, args.config, args.trial)
    rng = np.random.default_rng(0)
    print("block     input        form              forward ms  forward+backward ms")
    for name, size, channels in stride2_shapes(spec, image_size):
        x = jnp.asarray(rng.standard_normal((args.batch_size, size, size, channels)), jnp.float32)
        kernel = jnp.asarray(rng.standard_normal((3, 3, channels, channels)), jnp.float32)
        for form, function in FORMS.items():

            def loss(x: jax.Array, kernel: jax.Array, function=function) -> jax.Array:
                return jnp.sum(jnp.square(function(x, kernel)))

            forward = median_ms(jax.jit(function), x, kernel, repeats=args.repeats)
            both = median_ms(jax.jit(jax.grad(loss, (0, 1))), x, kernel, repeats=args.repeats)
            shape = f"{size}x{size}x{channels}"
            print(f"{name:<9} {shape:<12} {form:<17} {forward:>10.2f}  {both:>19.2f}", flush=True)


if __name__ == "__main__":
    main()
