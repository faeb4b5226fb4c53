"""Analytic complexity of an AnyNet: FLOPs, parameters and activations, without building it.

Counting follows pycls (`pycls/models/blocks.py`) so that published RegNet figures reproduce
exactly. One multiply-add is one flop. BatchNorm adds 2 parameters per channel and no flops.
Activations count the output elements of every convolution and linear layer. Each helper mirrors
one layer of `regnas.models`, in the same order.
"""

from __future__ import annotations

import dataclasses

from regnas.spec import AnyNetSpec, StageSpec


@dataclasses.dataclass
class _Counter:
    size: int
    flops: int = 0
    params: int = 0
    acts: int = 0

    def conv(
        self,
        w_in: int,
        w_out: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        padding = kernel // 2
        self.size = (self.size + 2 * padding - kernel) // stride + 1
        pixels = self.size * self.size
        self.flops += kernel * kernel * w_in * w_out * pixels // groups + (
            w_out * pixels if bias else 0
        )
        self.params += kernel * kernel * w_in * w_out // groups + (w_out if bias else 0)
        self.acts += w_out * pixels

    def norm(self, width: int) -> None:
        self.params += 2 * width

    def linear(self, w_in: int, w_out: int) -> None:
        self.flops += w_in * w_out + w_out
        self.params += w_in * w_out + w_out
        self.acts += w_out

    def take(self) -> dict[str, int]:
        """Collect the counts since the last call and restart them from zero."""
        counts = {"flops": self.flops, "params": self.params, "acts": self.acts}
        self.flops = self.params = self.acts = 0
        return counts


def complexity(spec: AnyNetSpec, image_size: int) -> dict[str, int]:
    """Count the FLOPs, parameters and activations of `spec` on square images.

    Args:
        spec: The architecture.
        image_size: Side of the square input image in pixels.

    Returns:
        A dict with int values under "flops", "params" and "acts".
    """
    parts = complexity_by_part(spec, image_size)
    return {key: sum(part[key] for part in parts) for key in ("flops", "params", "acts")}


def complexity_by_part(spec: AnyNetSpec, image_size: int) -> list[dict[str, int]]:
    """Count FLOPs, parameters and activations of the stem, of each stage and of the head.

    Args:
        spec: The architecture.
        image_size: Side of the square input image in pixels.

    Returns:
        One dict per part, in the order stem, stages 1 to n, head, each with int values under
        "flops", "params" and "acts". They add up to `complexity(spec, image_size)`.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}.")

    counter = _Counter(size=image_size)
    parts = []
    counter.conv(spec.in_channels, spec.stem_w, 3, stride=spec.stem_stride)
    counter.norm(spec.stem_w)
    parts.append(counter.take())

    w_in = spec.stem_w
    for stage in spec.stages:
        for index in range(stage.depth):
            _block(counter, w_in, stage, stride=stage.stride if index == 0 else 1)
            w_in = stage.width
        parts.append(counter.take())

    counter.size = 1  # global average pooling
    counter.linear(w_in, spec.num_classes)
    parts.append(counter.take())
    return parts


def _block(counter: _Counter, w_in: int, stage: StageSpec, stride: int) -> None:
    w_out, w_b = stage.width, stage.inner_width
    if w_in != w_out or stride != 1:
        # The projection is a parallel branch: count it, then restore the input size.
        size = counter.size
        counter.conv(w_in, w_out, 1, stride=stride)
        counter.norm(w_out)
        counter.size = size

    counter.conv(w_in, w_b, 1)
    counter.norm(w_b)
    counter.conv(w_b, w_b, 3, stride=stride, groups=stage.groups)
    counter.norm(w_b)

    w_se = se_width(w_in, stage.se_ratio)
    if w_se:
        size = counter.size
        counter.size = 1
        counter.conv(w_b, w_se, 1, bias=True)
        counter.conv(w_se, w_b, 1, bias=True)
        counter.size = size

    counter.conv(w_b, w_out, 1)
    counter.norm(w_out)


def se_width(w_in: int, se_ratio: float) -> int:
    """Return the squeeze width of a block's SE module, which pycls sizes from the block input."""
    return round(w_in * se_ratio)
