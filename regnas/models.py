"""Flax AnyNet: stem, stages of residual bottleneck blocks, and a linear head.

Parameter paths (`stem`, `s1`, `b1`, `conv_a`, `head`, ...) are a checkpoint format: keep them.
Each module mirrors a counter in `regnas.complexity`.
"""

from __future__ import annotations

from collections.abc import Callable
import functools
from typing import Any, Literal

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from regnas.archive import Architecture
from regnas.complexity import se_width
from regnas.spec import PRECISIONS, AnyNetSpec, StageSpec


GroupedConvImpl = Literal["auto", "dense", "native"]

# BatchNorm as in pycls: PyTorch momentum 0.1 is a running-average decay of 0.9 here.
_MOMENTUM, _EPSILON = 0.9, 1e-5
# pycls's initialization: convolutions normal with std sqrt(2 / (k * k * out_channels)), the
# classifier normal with std 0.01, biases zero. `init_variables` draws the same on the host.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_head_init = nn.initializers.normal(0.01)
_HEAD_STD = 0.01


def resolve_grouped_conv(impl: GroupedConvImpl) -> Literal["dense", "native"]:
    """Pick how grouped convolutions run: "dense" on CPU, XLA's native grouped kernel elsewhere.

    XLA:CPU runs `feature_group_count` convolutions through a slow generic path (10-30x slower
    than a dense convolution of the same shape, forward plus backward), so on CPU "dense" puts
    the groups on the diagonal of dense kernels: of a few groups at a time with stride 1, of all
    groups with stride 2. On small images it computes the convolution as pixel-pair matrices
    instead, where that is cheaper (`grouped_conv_form`). Measurements: docs/benchmarks.md.
    """
    if impl not in ("auto", "dense", "native"):
        raise ValueError(f"grouped_conv must be 'auto', 'dense' or 'native', got {impl!r}.")
    if impl == "auto":
        return "dense" if jax.default_backend() == "cpu" else "native"
    return impl


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _batch_norm(
    x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Normalize `x` over all axes but the last; return the output, batch mean and variance."""
    y, mean, var, _ = _batch_norm_forward(x, scale, bias, epsilon)
    return y, mean, var


def _batch_norm_forward(
    x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    # E[x^2] - E[x]^2, clipped at 0, as nn.BatchNorm computes it.
    var = jnp.maximum(jnp.mean(x * x, axes) - mean * mean, 0.0)
    inverse = lax.rsqrt(var + epsilon)
    return (x - mean) * (inverse * scale) + bias, mean, var, inverse


def _batch_norm_fwd(
    x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float
) -> tuple[tuple[jax.Array, jax.Array, jax.Array], tuple[jax.Array, ...]]:
    y, mean, var, inverse = _batch_norm_forward(x, scale, bias, epsilon)
    return (y, mean, var), (x, mean, inverse, scale)


def _batch_norm_bwd(
    epsilon: float, residuals: tuple[jax.Array, ...], cotangents: tuple[jax.Array, ...]
) -> tuple[jax.Array, jax.Array, jax.Array]:
    # The batch statistics only feed the running averages, which are not differentiated, so
    # their cotangents are zero and left out.
    del epsilon
    x, mean, inverse, scale = residuals
    grad_y = cotangents[0]
    axes = tuple(range(x.ndim - 1))
    count = x.size // x.shape[-1]
    normalized = (x - mean) * inverse
    grad_bias = jnp.sum(grad_y, axes)
    grad_scale = jnp.sum(grad_y * normalized, axes)
    grad_x = (scale * inverse / count) * (count * grad_y - grad_bias - normalized * grad_scale)
    return grad_x, grad_scale, grad_bias


_batch_norm.defvjp(_batch_norm_fwd, _batch_norm_bwd)


class BatchNorm(nn.Module):
    """BatchNorm over every axis but the last, with a closed-form backward pass.

    Its variables (``scale``, ``bias``; ``mean``, ``var`` in ``batch_stats``) and results are
    those of ``nn.BatchNorm(momentum=0.9, epsilon=1e-5)``. XLA compiles the closed-form
    gradient faster than the one JAX derives from the generic module (docs/benchmarks.md).
    """

    use_running_average: bool
    scale_init: Callable[..., Any] = nn.initializers.ones

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        # Statistics and normalization run in float32, whatever dtype the convolutions use.
        dtype, x = x.dtype, x.astype(jnp.float32)
        features = x.shape[-1]
        scale = self.param("scale", self.scale_init, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        if self.use_running_average:
            y = (x - mean.value) * (lax.rsqrt(var.value + _EPSILON) * scale) + bias
            return y.astype(dtype)
        y, batch_mean, batch_var = _batch_norm(x, scale, bias, _EPSILON)
        if not self.is_initializing():
            batch_mean, batch_var = lax.stop_gradient((batch_mean, batch_var))
            mean.value = _MOMENTUM * mean.value + (1 - _MOMENTUM) * batch_mean
            var.value = _MOMENTUM * var.value + (1 - _MOMENTUM) * batch_var
        return y.astype(dtype)


_norm = BatchNorm


class GroupedConv3x3(nn.Module):
    """3x3 grouped convolution, no bias; the kernel is stored grouped (3, 3, w / groups, w)."""

    features: int
    groups: int
    stride: int
    impl: Literal["dense", "native"]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        group_in = x.shape[-1] // self.groups
        kernel = self.param(
            "kernel", _conv_init, (3, 3, group_in, self.features), jnp.float32
        ).astype(x.dtype)
        groups, image = self.groups, x.shape[1:3]
        if self.impl == "native":
            return _conv3x3(x, kernel, self.stride, groups)
        form = grouped_conv_form(image, self.stride, groups, group_in, x.shape[0])
        if form == "pixel pairs":
            return conv3x3_as_pixel_pairs(x, kernel, groups, self.stride)
        if form == "group chunks":
            return conv3x3_by_group_chunks(x, kernel, groups)
        # Spread the grouped kernel onto the block diagonal of a dense kernel: more flops, but
        # XLA:CPU runs the dense convolution through its fast path.
        kernel = block_diagonal_kernel(kernel, groups)
        if image[0] * image[1] >= _PHASES_MIN_PIXELS:
            return conv3x3_stride2_by_phases(x, kernel)
        return conv3x3_stride2_as_matmul(x, kernel)


def grouped_conv_form(
    image: tuple[int, ...], stride: int, groups: int, group_in: int, batch: int
) -> Literal["pixel pairs", "group chunks", "dense"]:
    """Return the form in which the CPU path computes a grouped 3x3 convolution.

    "pixel pairs" is `conv3x3_as_pixel_pairs`, taken where `pixel_pairs_are_cheaper` returns
    True, and with stride 1 only on images of up to 16 pixels. Other stride-1 convolutions are
    "group chunks" (`conv3x3_by_group_chunks`). With stride 2 the rest is "dense": the groups
    on the diagonal of one kernel, computed by `conv3x3_stride2_by_phases` on images of 400
    pixels and more, else by `conv3x3_stride2_as_matmul`.
    """
    features = group_in * groups
    if pixel_pairs_are_cheaper(image, stride, groups, group_in * features, batch):
        if stride == 2 or image[0] * image[1] <= _PIXEL_PAIRS_STRIDE1_MAX_PIXELS:
            return "pixel pairs"
    return "group chunks" if stride == 1 else "dense"


def _conv3x3(x: jax.Array, kernel: jax.Array, stride: int, groups: int = 1) -> jax.Array:
    """Return XLA's 3x3 convolution of NHWC `x` with an HWIO `kernel`, padding 1."""
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(stride, stride),
        padding=((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )


def block_diagonal_kernel(kernel: jax.Array, groups: int) -> jax.Array:
    """Return the dense (3, 3, in, out) kernel with a grouped kernel's groups on its diagonal."""
    group_in, features = kernel.shape[2], kernel.shape[3]
    blocks = kernel.reshape(3, 3, group_in, groups, features // groups)
    eye = jnp.eye(groups, dtype=kernel.dtype)
    dense = jnp.einsum("hwigo,fg->hwfigo", blocks, eye)
    return dense.reshape(3, 3, group_in * groups, features)


# Channels per convolution in `conv3x3_by_group_chunks`: chunks of 16 were faster than of 8 at
# group width 8, and single groups of 16 or 32 channels faster than pairs.
_CHUNK_CHANNELS = 16
# With stride 1, the pixel-pair form beat group chunks on images of up to this many pixels
# (4x4x152 with 19 groups: 3.4 against 4.4 ms). From 7x7 on, the chunks won.
# NOTE: measured on batches of 128 only. On 8 images, chunks were faster at 4x4x152 as well.
_PIXEL_PAIRS_STRIDE1_MAX_PIXELS = 16


def conv3x3_by_group_chunks(x: jax.Array, kernel: jax.Array, groups: int) -> jax.Array:
    """Return the grouped 3x3 convolution of NHWC `x`, stride 1, as one convolution per chunk.

    Each chunk is as many neighbouring groups as fit in `_CHUNK_CHANNELS` input channels. It
    takes fewer where that count does not divide the groups, and at least one. The chunk's
    kernels go on a block diagonal. XLA:CPU runs these small dense convolutions side by side on its
    cores, and they skip most of the zeros that a block-diagonal kernel of all groups multiplies.
    Forward and backward on a batch of 128, 14x14x64 with 8 groups took 20 ms instead of 46 ms
    for one block-diagonal kernel, and 7x7x96 with 12 groups 6.3 ms instead of 22 ms
    (docs/benchmarks.md).
    """
    group_in, group_out = x.shape[-1] // groups, kernel.shape[-1] // groups
    per_chunk = max(1, _CHUNK_CHANNELS // group_in)
    while groups % per_chunk:
        per_chunk -= 1
    outputs = []
    for start in range(0, groups, per_chunk):
        inputs = x[..., start * group_in : (start + per_chunk) * group_in]
        chunk = kernel[..., start * group_out : (start + per_chunk) * group_out]
        if per_chunk > 1:
            chunk = block_diagonal_kernel(chunk, per_chunk)
        outputs.append(_conv3x3(inputs, chunk, 1))
    return outputs[0] if len(outputs) == 1 else jnp.concatenate(outputs, axis=-1)


def conv3x3_stride2_as_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Return the 3x3 convolution of NHWC `x` with stride 2 and padding 1, as one matrix multiply.

    The nine pixels that each output pixel reads are gathered along the channel axis with
    strided slices, and multiplied by the kernel flattened to (9 * channels, features). The
    result equals the strided convolution's. XLA:CPU computes the gradient of a strided convolution
    slowly, most of all on small images: forward and backward together took 18.2 ms for a batch
    of 128 4x4x128 inputs as a convolution and 2.9 ms in this form (docs/benchmarks.md).
    """
    _, height, width, channels = x.shape
    out_h, out_w = (height + 1) // 2, (width + 1) // 2
    x = jnp.pad(x, ((0, 0), (1, 2 * out_h + 1 - height), (1, 2 * out_w + 1 - width), (0, 0)))
    columns = jnp.concatenate(
        [
            x[:, row : row + 2 * out_h : 2, col : col + 2 * out_w : 2]
            for row in range(3)
            for col in range(3)
        ],
        axis=-1,
    )
    return jnp.einsum("nhwc,cf->nhwf", columns, kernel.reshape(9 * channels, -1))


# Input pixels from which `conv3x3_stride2_by_phases` beats `conv3x3_stride2_as_matmul`: it was
# 1.2-2.5x faster at 28x28 with 16 to 64 channels, and up to 1.6x slower at 14x14 and 7x7.
_PHASES_MIN_PIXELS = 400


@jax.custom_vjp
def conv3x3_stride2_by_phases(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Return the 3x3 convolution of NHWC `x` with stride 2 and padding 1, and a faster gradient.

    The forward pass is XLA's. XLA:CPU computes the input's gradient by spreading the output
    gradient onto a grid of zeros twice its size and convolving that, which took 10.5 ms at
    28x28x24 on a batch of 128. Here each of the input's four pixel phases (even or odd row, even
    or odd column) is a sum of one, two or four matrix multiplies of the output gradient. The
    nine multiplies do the forward pass's multiply-adds, and took 2.4 ms at that shape. The
    kernel's gradient is nine matrix multiplies of a pixel phase and the output gradient as
    well. XLA's own copied whole images into a transposed layout first: 16 of the 66 ms of a
    first block's backward pass.
    """
    return _conv3x3(x, kernel, 2)


def _by_phases_forward(x: jax.Array, kernel: jax.Array) -> tuple[jax.Array, Any]:
    return _conv3x3(x, kernel, 2), (x, kernel)


def _by_phases_backward(residuals: Any, grad: jax.Array) -> tuple[jax.Array, jax.Array]:
    x, kernel = residuals
    batch, height, width, channels = x.shape
    out_h, out_w = grad.shape[1:3]
    # Along one axis, kernel tap 1 joins even input pixel 2m to output pixel m. Tap 2 joins odd
    # pixel 2m + 1 to output pixel m, and tap 0 joins it to output pixel m + 1. So each tap maps
    # to (input phase, output shift):
    taps = {0: (1, 1), 1: (0, 0), 2: (1, 0)}

    def rows(array: jax.Array) -> jax.Array:
        return array.reshape(-1, array.shape[-1])

    # The output gradient moved back by (row, column) shift, with zeros after the end.
    shifted = {
        (sr, sc): rows(jnp.pad(grad[:, sr:, sc:], ((0, 0), (0, sr), (0, sc), (0, 0))))
        for sr in (0, 1)
        for sc in (0, 1)
    }
    # Each phase of the input: its pixels in output positions, zeros after the end.
    phases = {
        (a, b): rows(
            jnp.pad(
                x[:, a::2, b::2],
                (
                    (0, 0),
                    (0, out_h - len(range(a, height, 2))),
                    (0, out_w - len(range(b, width, 2))),
                    (0, 0),
                ),
            )
        )
        for a in (0, 1)
        for b in (0, 1)
    }
    grad_phases = {key: jnp.zeros((batch * out_h * out_w, channels), x.dtype) for key in phases}
    grad_kernel = []
    for row_tap, (a, sr) in taps.items():
        for col_tap, (b, sc) in taps.items():
            tap = kernel[row_tap, col_tap]
            grad_phases[a, b] = grad_phases[a, b] + shifted[sr, sc] @ tap.T
            # Written as (grad^T phase)^T because in the compiled code XLA:CPU read a transposed
            # left operand in place but copied a transposed right operand.
            grad_kernel.append((shifted[sr, sc].T @ phases[a, b]).T)
    grid = jnp.stack([grad_phases[a, b] for a in (0, 1) for b in (0, 1)], axis=1)
    grid = grid.reshape(batch, out_h, out_w, 2, 2, channels).transpose(0, 1, 3, 2, 4, 5)
    grad_x = grid.reshape(batch, 2 * out_h, 2 * out_w, channels)[:, :height, :width]
    return grad_x, jnp.stack(grad_kernel).reshape(kernel.shape)


conv3x3_stride2_by_phases.defvjp(_by_phases_forward, _by_phases_backward)


def _output_size(size: int, stride: int) -> int:
    return (size - 1) // stride + 1


def _pixel_pair_taps(image: tuple[int, int], stride: int) -> np.ndarray:
    """Return a 0/1 array (input pixels, output pixels, 9): the kernel tap joining each pair."""
    height, width = image
    out_h, out_w = _output_size(height, stride), _output_size(width, stride)
    # The kernel row joining input row r to output row o is r - stride * o + 1; outside 0-2,
    # the one-hot row is all zeros. Columns likewise.
    rows = np.arange(height)[:, None] - stride * np.arange(out_h) + 1
    cols = np.arange(width)[:, None] - stride * np.arange(out_w) + 1
    row_taps = rows[..., None] == np.arange(3)
    col_taps = cols[..., None] == np.arange(3)
    taps = np.einsum("axr,byc->abxyrc", row_taps, col_taps).astype(np.float32)
    return taps.reshape(height * width, out_h * out_w, 9)


# Largest matrix (in numbers) that `conv3x3_as_pixel_pairs` builds. Beyond it, building the matrix
# and summing its gradient back into the kernel cost more than the multiply saves.
# NOTE: an estimate between measured shapes: a matrix of 3.7M numbers was faster, 7.4M slower.
_PIXEL_PAIR_LIMIT = 1 << 22
# Building the matrix and summing its gradient back cost about as much as multiplying this many
# images by it, forward and backward (batches of 8 to 128 at 7x7 and 4x4).
_PIXEL_PAIR_BUILD_IMAGES = 48
# Per multiply-add, how much faster the pixel-pair matrices ran than the dense form, forward and
# backward, apart from building the matrix. With stride 2 the dense form is one gathered matrix
# multiply already, which is harder to beat.
_PIXEL_PAIR_SPEED = {1: 1.1, 2: 0.46}


def pixel_pairs_are_cheaper(
    image: tuple[int, ...], stride: int, groups: int, kernel_size: int, batch: int
) -> bool:
    """Return whether `conv3x3_as_pixel_pairs` beats a dense convolution on XLA:CPU.

    For each output pixel, the pixel-pair form reads every input pixel of its own group, and the
    dense kernel reads 9 pixels of every group. So the pixel-pair form needs pixels /
    (9 * groups) of the dense multiply-adds. Building its matrix costs about as much as 48 more
    images, so small batches need a smaller share. On a batch of 128 the form is taken at four
    fifths or less (a third with stride 2), and on a batch of 32 at two fifths. Its matrix, pixel
    pairs times `kernel_size` (the grouped kernel's numbers per tap), must also stay small.

    Measured forward and backward (scripts/bench_small_images.py) on a batch of 128, it took 1.2
    instead of 212 ms at 2x2x384 with 48 groups, where XLA:CPU's convolution is slowest. At
    4x4x152 with 19 groups it took 4.1 instead of 17.9 ms, and at 7x7x56 with 7 groups 7.9
    instead of 15.4 ms. On a batch of 8, the 7x7x56 case took 5.9 against 1.0 ms. With stride 1,
    `grouped_conv_form` compares it with group chunks instead, and takes it only up to 4x4.
    """
    height, width = image
    pixels = height * width
    pairs = pixels * _output_size(height, stride) * _output_size(width, stride)
    share = _PIXEL_PAIR_SPEED[stride] * batch / (batch + _PIXEL_PAIR_BUILD_IMAGES)
    return pixels <= share * 9 * groups and pairs * kernel_size <= _PIXEL_PAIR_LIMIT


def conv3x3_as_pixel_pairs(x: jax.Array, kernel: jax.Array, groups: int, stride: int) -> jax.Array:
    """Return the grouped 3x3 convolution of NHWC `x` (padding 1) as one matrix per group.

    On a small image, each output pixel reads most input pixels. So the convolution is a matrix
    from all input pixels to all output pixels, per group: the kernel's taps are spread onto
    it, zeros where a pixel lies outside an output pixel's 3x3 window. The groups' matrices are
    multiplied as one batch, which skips the zeros between groups that a dense kernel holds.
    The result equals the convolution's.
    """
    batch, height, width, channels = x.shape
    group_in, features = channels // groups, kernel.shape[-1]
    out_h, out_w = _output_size(height, stride), _output_size(width, stride)
    taps = jnp.asarray(_pixel_pair_taps((height, width), stride), kernel.dtype)
    blocks = kernel.reshape(9, group_in, groups, features // groups)
    pairs = jnp.einsum("pqt,tigo->pqigo", taps, blocks)
    x = x.reshape(batch, height * width, groups, group_in)
    y = jnp.einsum("npgi,pqigo->nqgo", x, pairs)
    return y.reshape(batch, out_h, out_w, features)


class Conv1x1(nn.Module):
    """1x1 convolution without bias with a (1, 1, in, out) kernel, computed as a matrix multiply.

    Its variables and results are those of ``nn.Conv(features, (1, 1), strides=stride,
    use_bias=False)``: with stride 2 it reads every other pixel, starting with the first. XLA:CPU
    runs the matrix multiply faster than its 1x1 convolution, forward and backward: the
    reference network trained 25-28 % faster with it (docs/benchmarks.md).
    """

    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", _conv_init, (1, 1, x.shape[-1], self.features), jnp.float32)
        if self.stride != 1:
            x = x[:, :: self.stride, :: self.stride]
        batch_shape = x.shape[:-1]
        y = x.reshape(-1, x.shape[-1]) @ kernel[0, 0].astype(x.dtype)
        return y.reshape(*batch_shape, self.features)


class SqueezeExcitation(nn.Module):
    """Squeeze-excitation: global pool, 1x1 conv, ReLU, 1x1 conv, sigmoid, channel scaling."""

    w_se: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = jnp.mean(x, axis=(1, 2), keepdims=True)
        conv = functools.partial(
            nn.Conv, kernel_size=(1, 1), kernel_init=_conv_init, dtype=x.dtype
        )
        scale = nn.relu(conv(self.w_se, name="reduce")(scale))
        scale = conv(x.shape[-1], name="expand")(scale)
        scale = nn.sigmoid(scale)
        return x * scale


class BottleneckBlock(nn.Module):
    """Residual bottleneck: 1x1, BN, ReLU; 3x3 grouped, BN, ReLU; [SE]; 1x1, BN; add; ReLU."""

    stage: StageSpec
    stride: int
    grouped_conv: Literal["dense", "native"]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        w_in, stage = x.shape[-1], self.stage
        norm = functools.partial(_norm, use_running_average=not train)

        shortcut = x
        if w_in != stage.width or self.stride != 1:
            shortcut = Conv1x1(stage.width, self.stride, name="proj")(x)
            shortcut = norm(name="proj_bn")(shortcut)

        y = nn.relu(norm(name="bn_a")(Conv1x1(stage.inner_width, name="conv_a")(x)))
        y = GroupedConv3x3(
            stage.inner_width, stage.groups, self.stride, self.grouped_conv, name="conv_b"
        )(y)
        y = nn.relu(norm(name="bn_b")(y))
        w_se = se_width(w_in, stage.se_ratio)
        if w_se:
            y = SqueezeExcitation(w_se, name="se")(y)
        y = Conv1x1(stage.width, name="conv_c")(y)
        # A zero final gamma starts every block as the identity, which steadies early training.
        y = norm(name="bn_c", scale_init=nn.initializers.zeros)(y)
        return nn.relu(y + shortcut)


def stem_layers(
    spec: AnyNetSpec, x: jax.Array, train: bool, precision: str = "float32"
) -> jax.Array:
    """Apply the stem (3x3 convolution, BN, ReLU) as layers ``stem`` and ``stem_bn`` of the caller.

    Called from a compact method, so `AnyNet` and `Stem` name the layers alike and share weights.
    The output has the dtype `precision` names, in which the blocks then compute.
    """
    x = x.astype(precision)
    x = nn.Conv(
        spec.stem_w,
        (3, 3),
        strides=spec.stem_stride,
        padding=((1, 1), (1, 1)),
        use_bias=False,
        kernel_init=_conv_init,
        dtype=x.dtype,
        name="stem",
    )(x)
    return nn.relu(_norm(use_running_average=not train, name="stem_bn")(x))


class Stem(nn.Module):
    """The stem of `AnyNet` alone; its variables are the ``stem`` and ``stem_bn`` of AnyNet's."""

    spec: AnyNetSpec
    precision: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return stem_layers(self.spec, x, train, self.precision)


class AnyNet(nn.Module):
    """AnyNet classifier built from an `AnyNetSpec`; inputs are NHWC floats.

    Attributes:
        spec: The architecture.
        grouped_conv: How grouped convolutions run; see `resolve_grouped_conv`.
        precision: The dtype the stem and blocks compute in, one of `PRECISIONS`. Parameters,
            BatchNorm and the head (pooling and classifier) stay float32.
    """

    spec: AnyNetSpec
    grouped_conv: GroupedConvImpl = "auto"
    precision: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        spec, impl = self.spec, resolve_grouped_conv(self.grouped_conv)
        check_precision(self.precision)
        x = stem_layers(spec, x, train, self.precision)
        for stage_index, stage in enumerate(spec.stages, start=1):
            for block_index in range(1, stage.depth + 1):
                stride = stage.stride if block_index == 1 else 1
                x = BottleneckBlock(stage, stride, impl, name=f"s{stage_index}_b{block_index}")(
                    x, train
                )
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        return nn.Dense(spec.num_classes, kernel_init=_head_init, name="head")(x)


def check_precision(precision: str, label: str = "precision") -> None:
    """Raise ValueError, naming the setting as `label`, unless `precision` is in `PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"{label} must be one of {', '.join(PRECISIONS)}, got {precision!r}.")


def build_model(
    architecture: AnyNetSpec | Architecture, grouped_conv: GroupedConvImpl = "auto"
) -> AnyNet:
    """Build the Flax `AnyNet` of a spec, or of a loaded architecture file.

    Args:
        architecture: An `AnyNetSpec`, or the `Architecture` that `load_architecture` returns.
        grouped_conv: How grouped convolutions run; see `resolve_grouped_conv`.

    Raises:
        TypeError: `architecture` is neither.
    """
    if isinstance(architecture, Architecture):
        architecture = architecture.spec
    if not isinstance(architecture, AnyNetSpec):
        raise TypeError(
            "build_model takes an AnyNetSpec or the Architecture from "
            f"regnas.load_architecture(path), got {type(architecture).__name__}."
        )
    return AnyNet(architecture, grouped_conv)


def init_variables(model: AnyNet, seed: int, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Initialize parameters and BatchNorm statistics on the host, with `model.init`'s rules.

    `model.init` runs every initializer as its own small XLA computation, which took 5-10 s for a
    12-block network on a 2-core CPU; drawing the same distributions with numpy takes
    milliseconds. Only shapes come from tracing the model.
    """
    sample = jax.ShapeDtypeStruct(input_shape, jnp.float32)
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), sample)
    rng = np.random.default_rng(seed)

    def initial_value(path: tuple[Any, ...], leaf: jax.ShapeDtypeStruct) -> np.ndarray:
        names = [str(getattr(entry, "key", entry)) for entry in path]
        shape, name = leaf.shape, names[-1]
        if name == "kernel" and len(shape) == 4:
            std = np.sqrt(2.0 / (shape[0] * shape[1] * shape[3]))
            return rng.normal(0.0, std, shape).astype(np.float32)
        if name == "kernel":
            return rng.normal(0.0, _HEAD_STD, shape).astype(np.float32)
        if name == "var" or (name == "scale" and names[-2] != "bn_c"):
            return np.ones(shape, np.float32)
        return np.zeros(shape, np.float32)

    return jax.tree_util.tree_map_with_path(initial_value, shapes)
