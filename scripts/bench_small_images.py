"""Time grouped 3x3 convolutions on small images in the forms regnas chooses between on the CPU.

Usage: python scripts/bench_small_images.py [--config FILE [--trial N] | --case SPEC ...]
       [--batch-size N] [--repeats N]

On the CPU, regnas runs a grouped 3x3 convolution in one of three forms:
  - dense: the kernel expanded to a block-diagonal dense kernel, convolved. With stride 2 it
    multiplies gathered pixels (`regnas.models.conv3x3_stride2_as_matmul`); on images of 400
    pixels and more regnas uses `conv3x3_stride2_by_phases` instead, which
    `scripts/bench_stride2.py` times.
  - group chunks, stride 1 only: one dense convolution per chunk of neighbouring groups
    (`regnas.models.conv3x3_by_group_chunks`).
  - pixel pairs: all input pixels multiplied by one matrix per group
    (`regnas.models.conv3x3_as_pixel_pairs`).
`regnas.models.grouped_conv_form` picks one from the shape and the batch size. This script times
every form on each grouped 3x3 convolution of a network, or on each --case. It times the forward
pass alone and the forward and backward pass together (gradients with respect to the input and
the kernel). It prints the median of the repeats in milliseconds and the form regnas picks for
--batch-size. Without --config or --case it times the reference AnyNet (stem 16, stages (1, 24),
(2, 56), (4, 152), group width 8). Use at least 10 repeats: with fewer, a busy machine can show
a forward pass slower than forward and backward together.

A --case is IMAGE:STRIDE:WIDTH:GROUP_W, for example 2:1:384:8 (a 2x2 image, stride 1, 384
channels in groups of 8).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import sys

from bench_stride2 import add_timing_arguments, check_trial, load_network, median_ms
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from regnas import AnyNetSpec
from regnas.models import (
    block_diagonal_kernel,
    conv3x3_as_pixel_pairs,
    conv3x3_by_group_chunks,
    conv3x3_stride2_as_matmul,
    grouped_conv_form,
)


# Cases whose pixel-pair matrix would exceed this many numbers (256 MB) time the dense form only.
PIXEL_PAIR_CAP = 1 << 26


# image size, stride, channels, group width
Case = tuple[int, int, int, int]


def dense_form(x: jax.Array, kernel: jax.Array, groups: int, stride: int) -> jax.Array:
    """Convolve with the grouped `kernel` spread onto the diagonal of a dense one."""
    dense = block_diagonal_kernel(kernel, groups)
    if stride == 2:
        return conv3x3_stride2_as_matmul(x, dense)
    return lax.conv_general_dilated(
        x, dense, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def group_chunks_form(x: jax.Array, kernel: jax.Array, groups: int, stride: int) -> jax.Array:
    """Convolve one chunk of groups at a time (stride 1 only)."""
    del stride  # Only called with stride 1.
    return conv3x3_by_group_chunks(x, kernel, groups)


FORMS: dict[str, Callable[[jax.Array, jax.Array, int, int], jax.Array]] = {
    "dense": dense_form,
    "group chunks": group_chunks_form,
    "pixel pairs": conv3x3_as_pixel_pairs,
}


def network_cases(spec: AnyNetSpec, image_size: int) -> list[Case]:
    """Return the distinct grouped 3x3 convolutions of `spec`, in order."""
    size = -(-image_size // spec.stem_stride)
    cases: list[Case] = []
    for stage in spec.stages:
        for block in range(stage.depth):
            stride = stage.stride if block == 0 else 1
            case = (size, stride, stage.inner_width, stage.inner_width // stage.groups)
            if stage.groups > 1 and case not in cases:
                cases.append(case)
            size = -(-size // stride)
    return cases


def parse_case(text: str) -> Case:
    """Parse IMAGE:STRIDE:WIDTH:GROUP_W."""
    try:
        image, stride, width, group_w = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected IMAGE:STRIDE:WIDTH:GROUP_W such as 2:1:384:8, got {text!r}"
        ) from None
    if min(image, width, group_w) < 1:
        problem = "IMAGE, WIDTH and GROUP_W must be positive"
    elif stride not in (1, 2):
        problem = f"STRIDE must be 1 or 2, not {stride}"
    elif width % group_w:
        problem = f"WIDTH {width} must be a multiple of GROUP_W {group_w}"
    else:
        return image, stride, width, group_w
    raise argparse.ArgumentTypeError(f"{text!r}: {problem}")


def time_case(case: Case, batch_size: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Return each form's (forward ms, forward and backward ms) on `case`.

    The pixel-pair form is left out where its matrix would exceed `PIXEL_PAIR_CAP` numbers, and
    the group-chunk form with stride 2.
    """
    image, stride, width, group_w = case
    groups = width // group_w
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch_size, image, image, width)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((3, 3, group_w, width)), jnp.float32)
    out = -(-image // stride)
    forms = dict(FORMS)
    if (image * out) ** 2 * group_w * width > PIXEL_PAIR_CAP:
        del forms["pixel pairs"]
    if stride != 1:
        del forms["group chunks"]
    times = {}
    for form, function in forms.items():

        def apply(x: jax.Array, kernel: jax.Array, function=function) -> jax.Array:
            return function(x, kernel, groups, stride)

        def loss(x: jax.Array, kernel: jax.Array, apply=apply) -> jax.Array:
            return jnp.sum(jnp.square(apply(x, kernel)))

        forward = median_ms(jax.jit(apply), x, kernel, repeats=repeats)
        both = median_ms(jax.jit(jax.grad(loss, (0, 1))), x, kernel, repeats=repeats)
        times[form] = (forward, both)
    return times


def attach_case_values(argv: list[str]) -> list[str]:
    """Write each '--case VALUE' as '--case=VALUE', so that argparse takes '-2:1:64:8' as a value.

    Otherwise a value that starts with a minus sign looks like an option, and it never reaches
    `parse_case`, which names the rule it breaks.
    """
    joined: list[str] = []
    index = 0
    while index < len(argv):
        if argv[index] == "--case" and index + 1 < len(argv) and ":" in argv[index + 1]:
            joined.append(f"--case={argv[index + 1]}")
            index += 2
        else:
            joined.append(argv[index])
            index += 1
    return joined


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--config", default=None, help="architecture JSON from regnas.export (default: reference)"
    )
    source.add_argument(
        "--case",
        type=parse_case,
        action="append",
        help="IMAGE:STRIDE:WIDTH:GROUP_W, such as 2:1:384:8; repeat for more",
    )
    add_timing_arguments(parser)
    args = parser.parse_args(attach_case_values(sys.argv[1:]))

    check_trial(parser, args.config, args.trial)
    if args.case:
        cases = args.case
    else:
        cases = network_cases(*load_network(parser, args.config, args.trial))
    print(
        "input          stride  groups  regnas picks  forward / forward+backward ms: "
        "dense, group chunks, pixel pairs"
    )
    for case in cases:
        image, stride, width, group_w = case
        groups = width // group_w
        pick = grouped_conv_form((image, image), stride, groups, group_w, args.batch_size)
        times = time_case(case, args.batch_size, args.repeats)
        columns = []
        for form, missing in (
            ("dense", ""),
            ("group chunks", "stride 1 only"),
            ("pixel pairs", "too large to build"),
        ):
            if form in times:
                forward, both = times[form]
                columns.append(f"{forward:>8.2f} / {both:>8.2f}")
            else:
                columns.append(f"{missing:>19}")
        shape = f"{image}x{image}x{width}"
        print(
            f"{shape:<14} {stride:>6}  {groups:>6}  {pick:<12}  "
            f"{columns[0]}      {columns[1]}  {columns[2]}",
            flush=True,
        )


if __name__ == "__main__":
    main()
