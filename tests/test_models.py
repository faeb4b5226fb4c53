"""Flax AnyNet: the dense grouped convolution equals XLA's grouped one, BatchNorm equals Flax's,
host initialization."""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from regnas import AnyNetSpec, StageSpec
from regnas.models import (
    AnyNet,
    BatchNorm,
    Conv1x1,
    GroupedConv3x3,
    init_variables,
    pixel_pairs_are_cheaper,
    resolve_grouped_conv,
)


@pytest.mark.parametrize(
    ("groups", "stride", "size", "pixel_pairs"),
    [
        (4, 1, 9, False),
        (3, 2, 9, False),
        (3, 2, 8, False),
        (1, 2, 7, False),
        (3, 2, 28, False),
        (1, 2, 21, False),
        (8, 2, 2, True),
        (1, 1, 9, False),
        (4, 1, 2, True),
        (12, 1, 3, True),
        (12, 1, 7, True),
        (1, 1, 1, True),
        (8, 2, 4, True),
        (12, 2, 5, True),
    ],
)
def test_dense_grouped_conv_matches_native(
    groups: int, stride: int, size: int, pixel_pairs: bool
) -> None:
    # With stride 2 the dense path multiplies gathered pixels, or on images of 400 pixels and more
    # computes the input's gradient by pixel phases, so odd and even sizes check their padding.
    # Small images take the pixel-pair form instead, with stride 1 only up to 16 pixels: larger
    # ones (7x8 here) are convolved in chunks of groups.
    batch = 128
    assert pixel_pairs_are_cheaper((size, size + 1), stride, groups, 24 * 24 // groups, batch) is (
        pixel_pairs
    )
    x = jax.random.normal(jax.random.key(0), (batch, size, size + 1, 24))
    dense = GroupedConv3x3(24, groups, stride, "dense")
    native = GroupedConv3x3(24, groups, stride, "native")
    params = native.init(jax.random.key(1), x)

    def loss(params: dict, x: jax.Array, module: GroupedConv3x3) -> jax.Array:
        return jnp.sum(jnp.sin(module.apply(params, x)))

    np.testing.assert_allclose(
        dense.apply(params, x), native.apply(params, x), rtol=1e-5, atol=1e-5
    )
    grad_dense = jax.grad(loss, argnums=(0, 1))(params, x, dense)
    grad_native = jax.grad(loss, argnums=(0, 1))(params, x, native)
    for got, expected in zip(
        jax.tree_util.tree_leaves(grad_dense),
        jax.tree_util.tree_leaves(grad_native),
        strict=True,
    ):
        # A kernel's gradient sums tens of thousands of products, in a different order in each
        # form, so the tolerance scales with its largest entry.
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize(("stride", "size"), [(1, 7), (2, 7), (2, 28)])
def test_conv1x1_matches_flax_conv(stride: int, size: int) -> None:
    # Odd and even sizes check which pixels the strided form reads.
    x = jax.random.normal(jax.random.key(0), (4, size, size + 1, 16))
    conv = Conv1x1(24, stride)
    params = conv.init(jax.random.key(1), x)
    flax_conv = nn.Conv(24, (1, 1), strides=stride, use_bias=False)

    np.testing.assert_allclose(
        conv.apply(params, x), flax_conv.apply(params, x), rtol=1e-5, atol=1e-5
    )


def test_pixel_pairs_only_on_small_images() -> None:
    # Measured cases (docs/benchmarks.md): image, stride, groups, group width, width, batch.
    cases = {
        ((2, 2), 1, 48, 8, 384, 128): True,
        ((2, 2), 1, 48, 8, 384, 8): True,
        ((4, 4), 1, 19, 8, 152, 128): True,
        ((4, 4), 1, 19, 8, 152, 8): True,
        ((7, 7), 2, 19, 8, 152, 128): True,
        ((7, 7), 2, 19, 8, 152, 32): False,
        ((7, 7), 1, 7, 8, 56, 128): True,
        ((7, 7), 1, 7, 8, 56, 32): False,
        ((7, 7), 1, 6, 8, 48, 128): False,
        ((7, 7), 1, 6, 32, 192, 128): False,
        ((4, 4), 2, 4, 32, 128, 128): False,
        ((4, 4), 1, 6, 64, 384, 128): False,
        ((14, 14), 2, 7, 8, 56, 128): False,
        ((28, 28), 1, 96, 8, 768, 128): False,
    }
    for (image, stride, groups, group_w, width, batch), expected in cases.items():
        chosen = pixel_pairs_are_cheaper(image, stride, groups, group_w * width, batch)
        assert chosen is expected, (image, stride, groups, batch)


def test_batch_norm_matches_flax() -> None:
    # Shifted and scaled input, so that mean and variance matter; random scale and bias.
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (4, 5, 5, 6))
    ours = BatchNorm(use_running_average=False)
    flax_bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
    variables = flax_bn.init(jax.random.key(1), x)
    keys = jax.random.split(jax.random.key(2), 2)
    variables = {
        "params": {
            "scale": jax.random.uniform(keys[0], (6,), minval=0.5, maxval=1.5),
            "bias": jax.random.normal(keys[1], (6,)),
        },
        "batch_stats": variables["batch_stats"],
    }
    cotangent = jax.random.normal(jax.random.key(3), x.shape)

    def run(module: nn.Module, params: dict, x: jax.Array) -> tuple[jax.Array, dict]:
        variables_now = {"params": params, "batch_stats": variables["batch_stats"]}
        return module.apply(variables_now, x, mutable=["batch_stats"])

    results = {}
    for name, module in (("ours", ours), ("flax", flax_bn)):
        (y, updates), pullback = jax.vjp(
            lambda p, x, m=module: run(m, p, x), variables["params"], x
        )
        zero_stats = jax.tree_util.tree_map(jnp.zeros_like, updates)
        grads = pullback((cotangent, zero_stats))
        evaluated = module.clone(use_running_average=True).apply(
            {"params": variables["params"], **updates}, x
        )
        results[name] = (y, updates, grads, evaluated)

    for got, expected in zip(
        jax.tree_util.tree_leaves(results["ours"]),
        jax.tree_util.tree_leaves(results["flax"]),
        strict=True,
    ):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_grouped_conv_choice_validated() -> None:
    with pytest.raises(ValueError, match="'auto', 'dense' or 'native'"):
        resolve_grouped_conv("fast")  # type: ignore[arg-type]


def test_cpu_uses_dense_kernel() -> None:
    assert jax.default_backend() != "cpu" or resolve_grouped_conv("auto") == "dense"


def test_host_init_matches_flax_init() -> None:
    spec = AnyNetSpec(stages=(StageSpec(1, 16, se_ratio=0.25), StageSpec(2, 32)))
    model = AnyNet(spec)
    flax_variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)
    host_variables = init_variables(model, seed=0, input_shape=(1, 28, 28, 1))

    flax_leaves = jax.tree_util.tree_leaves_with_path(flax_variables)
    host_leaves = jax.tree_util.tree_leaves_with_path(host_variables)
    assert [path for path, _ in flax_leaves] == [path for path, _ in host_leaves]
    for (path, flax_value), (_, got) in zip(flax_leaves, host_leaves, strict=True):
        expected = np.asarray(flax_value)
        assert got.shape == expected.shape, jax.tree_util.keystr(path)
        if np.all(expected == expected.flat[0]):
            # Constant initializers (zeros, ones) must match exactly.
            np.testing.assert_array_equal(got, expected, jax.tree_util.keystr(path))


def test_final_block_gamma_starts_at_zero() -> None:
    spec = AnyNetSpec(stages=(StageSpec(1, 16),))
    variables = init_variables(AnyNet(spec), seed=0, input_shape=(1, 28, 28, 1))

    block = variables["params"]["s1_b1"]
    assert np.all(block["bn_c"]["scale"] == 0)
    assert np.all(block["bn_a"]["scale"] == 1)
    assert np.all(variables["batch_stats"]["s1_b1"]["bn_c"]["var"] == 1)


def test_parameter_paths_are_stable() -> None:
    spec = AnyNetSpec(stages=(StageSpec(2, 16, se_ratio=0.25),))
    variables = init_variables(AnyNet(spec), seed=0, input_shape=(1, 28, 28, 1))

    assert sorted(variables["params"]) == ["head", "s1_b1", "s1_b2", "stem", "stem_bn"]
    assert sorted(variables["params"]["s1_b1"]) == [
        "bn_a",
        "bn_b",
        "bn_c",
        "conv_a",
        "conv_b",
        "conv_c",
        "proj",
        "proj_bn",
        "se",
    ]


def test_bfloat16_model_computes_in_bfloat16() -> None:
    spec = AnyNetSpec(
        stages=(StageSpec(1, 16, group_w=8), StageSpec(1, 32, group_w=8, se_ratio=0.25))
    )
    single = AnyNet(spec)
    half = AnyNet(spec, precision="bfloat16")
    variables = init_variables(single, 0, (1, 28, 28, 1))
    x = jax.random.normal(jax.random.key(0), (4, 28, 28, 1))

    text = jax.jit(lambda v: half.apply(v, x, True, mutable=["batch_stats"])).lower(variables)
    # The result types of the lowered convolutions and matrix multiplies, in program order.
    products = re.findall(
        r"stablehlo\.(?:convolution|dot_general).*-> tensor<[0-9x]*(\w+)>", text.as_text()
    )
    # Every convolution and matrix multiply but the classifier's computes in bfloat16.
    assert len(products) > 8
    assert products[:-1] == ["bf16"] * (len(products) - 1)
    assert products[-1] == "f32"
    logits, updates = half.apply(variables, x, True, mutable=["batch_stats"])
    assert logits.dtype == jnp.float32
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(updates)} == {jnp.dtype("float32")}
    expected = single.apply(variables, x, False)
    np.testing.assert_allclose(half.apply(variables, x, False), expected, rtol=0.1, atol=0.02)


def test_unknown_precision_is_rejected() -> None:
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16, got 'fp16'"):
        AnyNet(AnyNetSpec(stages=(StageSpec(1, 16),)), precision="fp16").init(
            jax.random.key(0), jnp.zeros((1, 28, 28, 1))
        )
