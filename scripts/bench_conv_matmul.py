"""Time the train step with convolutions rewritten as matrix multiplies.

Usage: python scripts/bench_conv_matmul.py [--config FILE] [--mode MODE ...]

XLA:CPU runs `lax.conv_general_dilated` through its own convolution code. This script replaces
that function, for one process, with matrix-multiply forms and times regnas's train step with
each (`regnas.bench.benchmark`):
  - conv: the convolution as regnas runs it (the reference);
  - matmul1x1: 1x1 convolutions as one `einsum`, 3x3 ones unchanged;
  - shifted9: also each 3x3 convolution as the sum of 9 `einsum`s over shifted views;
  - patches: also each 3x3 convolution as one `einsum` over the 9 views concatenated;
  - grouped: like shifted9, but grouped 3x3 convolutions keep their groups: each of the 9
    `einsum`s multiplies every group by its own small kernel (a batched matrix multiply),
    which does 1/groups of the multiply-adds of the block-diagonal dense kernel.
Without --config it times the reference AnyNet (stem 16, stages (1, 24), (2, 56), (4, 152),
group width 8). In the other modes, grouped kernels are the block-diagonal dense kernels of
regnas's CPU path. That path computes stride-2 3x3 convolutions as a matrix multiply without
`lax.conv_general_dilated` (`scripts/bench_stride2.py`), so the modes change only the other
convolutions, except in `grouped` mode.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp


MODES = ("conv", "matmul1x1", "shifted9", "patches", "grouped")
_CONV = lax.conv_general_dilated


def conv_as_matmul(mode: str) -> Any:
    """Return a stand-in for `lax.conv_general_dilated` for NHWC inputs and HWIO kernels."""

    def conv(
        x: jax.Array,
        kernel: jax.Array,
        window_strides: Any,
        padding: Any,
        *args: Any,
        **kwargs: Any,
    ) -> jax.Array:
        size, stride = kernel.shape[0], window_strides[0]
        groups = kwargs.get("feature_group_count", 1)
        if mode == "conv" or (groups != 1 and mode != "grouped") or size not in (1, 3):
            return _CONV(x, kernel, window_strides, padding, *args, **kwargs)
        if size == 1:
            return jnp.einsum("nhwc,co->nhwo", x[:, ::stride, ::stride], kernel[0, 0])
        if mode == "matmul1x1":
            return _CONV(x, kernel, window_strides, padding, *args, **kwargs)
        height, width = x.shape[1], x.shape[2]
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        out_h, out_w = (height - 1) // stride + 1, (width - 1) // stride + 1
        views = [
            padded[
                :,
                i : i + (out_h - 1) * stride + 1 : stride,
                j : j + (out_w - 1) * stride + 1 : stride,
            ]
            for i in range(3)
            for j in range(3)
        ]
        if mode == "grouped":
            # (3, 3, in per group, out) -> per tap (in per group, groups, out per group).
            group_in, group_out = kernel.shape[2], kernel.shape[3] // groups
            taps = kernel.reshape(9, group_in, groups, group_out)
            total = sum(
                jnp.einsum(
                    "nhwgi,igo->nhwgo",
                    view.reshape(*view.shape[:3], groups, group_in),
                    taps[k],
                )
                for k, view in enumerate(views)
            )
            return total.reshape(*total.shape[:3], groups * group_out)
        if mode == "shifted9":
            return sum(
                jnp.einsum("nhwc,co->nhwo", view, kernel[k // 3, k % 3])
                for k, view in enumerate(views)
            )
        flat = kernel.reshape(9 * kernel.shape[2], kernel.shape[3])
        return jnp.einsum("nhwk,ko->nhwo", jnp.concatenate(views, axis=-1), flat)

    return conv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="architecture JSON from regnas.export")
    parser.add_argument("--mode", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    from regnas import AnyNetSpec, StageSpec, engine
    from regnas.archive import load_architecture
    from regnas.bench import benchmark

    if args.config:
        spec = load_architecture(args.config).spec
    else:
        stages = [(1, 24), (2, 56), (4, 152)]
        spec = AnyNetSpec(stages=tuple(StageSpec(d, w, group_w=8) for d, w in stages))
    for mode in args.mode:
        # Compiled segments are shared across trainers; drop them so that each mode traces anew.
        engine._SEGMENT_FUNCTIONS.clear()
        engine._COMPILED_SIGNATURES.clear()
        lax.conv_general_dilated = conv_as_matmul(mode)
        # The grouped form needs the groups, which only the native path passes down.
        impl = "native" if mode == "grouped" else "dense"
        try:
            result = benchmark(spec, steps=args.steps, grouped_conv=impl)
        finally:
            lax.conv_general_dilated = _CONV
        keys = ("images_per_second", "compile_seconds", "train_gflops_per_second")
        print(mode, json.dumps({key: result[key] for key in keys}), flush=True)


if __name__ == "__main__":
    main()
