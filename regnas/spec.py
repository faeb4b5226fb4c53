"""The architecture of one AnyNet: a frozen, validated description that every other part reads.

An AnyNet (Radosavovic et al., "Designing Network Design Spaces", CVPR 2020) is a stem, a
sequence of stages of residual bottleneck blocks, and a head. `AnyNetSpec` names every number
needed to build it, so it can serve as a `jax.jit` static argument, a cache key and the body of an
exported JSON file.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
from typing import Any


# Dtypes that a network's stem and blocks may compute in. Parameters, BatchNorm, the head and
# the loss stay float32 in both.
PRECISIONS = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One stage: `depth` bottleneck blocks of output width `width`.

    Attributes:
        depth: Number of blocks in the stage.
        width: Output channels of every block in the stage.
        stride: Stride of the first block (the other blocks use stride 1).
        group_w: Channels per group of the 3x3 grouped convolution.
        bot_mul: Bottleneck multiplier: the inner width is ``round(width * bot_mul)``.
        se_ratio: Squeeze-excitation ratio relative to the block input width; 0 disables SE.
    """

    depth: int
    width: int
    stride: int = 2
    group_w: int = 8
    bot_mul: float = 1.0
    se_ratio: float = 0.0

    def __post_init__(self) -> None:
        _require_int("depth", self.depth, minimum=1)
        _require_int("width", self.width, minimum=1)
        _require_int("stride", self.stride, minimum=1)
        _require_int("group_w", self.group_w, minimum=1)
        if not isinstance(self.bot_mul, (int, float)) or not self.bot_mul > 0:
            raise ValueError(f"bot_mul must be a positive number, got {self.bot_mul!r}.")
        if not isinstance(self.se_ratio, (int, float)) or not 0 <= self.se_ratio < 1:
            raise ValueError(f"se_ratio must be in [0, 1), got {self.se_ratio!r}.")
        # Normalize numbers so that equal architectures compare and hash equal.
        object.__setattr__(self, "bot_mul", float(self.bot_mul))
        object.__setattr__(self, "se_ratio", float(self.se_ratio))

        inner = self.inner_width
        if inner % self.group_w != 0:
            raise ValueError(
                f"Bottleneck width {inner} (width {self.width} x bot_mul {self.bot_mul}) is not "
                f"divisible by group_w {self.group_w}. Choose a width whose bottleneck width is a "
                "multiple of group_w, or let RegNetParams.to_anynet adjust the widths."
            )

    @property
    def inner_width(self) -> int:
        """Width of the 3x3 convolution inside each block."""
        return round(self.width * self.bot_mul)

    @property
    def groups(self) -> int:
        """Number of groups of the 3x3 convolution."""
        return self.inner_width // self.group_w


@dataclasses.dataclass(frozen=True)
class AnyNetSpec:
    """A complete AnyNet: stem, stages and a linear classifier.

    Attributes:
        stages: The stages in order; each halves the resolution when its stride is 2.
        in_channels: Channels of the input image.
        num_classes: Outputs of the linear head.
        stem_w: Output channels of the 3x3 stem convolution.
        stem_stride: Stride of the stem convolution.
    """

    stages: tuple[StageSpec, ...]
    in_channels: int = 1
    num_classes: int = 10
    stem_w: int = 16
    stem_stride: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.stages, list):
            object.__setattr__(self, "stages", tuple(self.stages))
        if not isinstance(self.stages, tuple) or not self.stages:
            raise ValueError(f"An AnyNet needs at least one stage, got stages={self.stages!r}.")
        for index, stage in enumerate(self.stages, start=1):
            if not isinstance(stage, StageSpec):
                raise TypeError(f"Stage {index} must be a StageSpec, got {type(stage).__name__}.")
        _require_int("in_channels", self.in_channels, minimum=1)
        _require_int("num_classes", self.num_classes, minimum=1)
        _require_int("stem_w", self.stem_w, minimum=1)
        _require_int("stem_stride", self.stem_stride, minimum=1)

    @property
    def stage_depths(self) -> list[int]:
        return [stage.depth for stage in self.stages]

    @property
    def stage_widths(self) -> list[int]:
        return [stage.width for stage in self.stages]

    def output_sizes(self, image_size: int) -> list[int]:
        """Return the feature-map side after the stem and after each stage for a square input."""
        size = _conv_out(image_size, 3, self.stem_stride)
        sizes = [size]
        for stage in self.stages:
            size = _conv_out(size, 3, stage.stride)
            sizes.append(size)
        return sizes

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form: built-in types only, keys as in the export format."""
        return {
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "stem_w": self.stem_w,
            "stem_stride": self.stem_stride,
            "stages": [dataclasses.asdict(stage) for stage in self.stages],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnyNetSpec:
        """Build a spec from its JSON form, naming the key that is missing or invalid."""
        if not isinstance(data, Mapping):
            raise ValueError(f"'anynet' must be an object, got {type(data).__name__}.")
        stage_keys = [field.name for field in dataclasses.fields(StageSpec)]
        top_keys = ["in_channels", "num_classes", "stem_w", "stem_stride", "stages"]
        _require_keys("anynet", data, top_keys)
        stages_data = data["stages"]
        if not isinstance(stages_data, list):
            raise ValueError(f"'anynet.stages' must be a list, got {stages_data!r}.")
        stages = []
        for index, stage_data in enumerate(stages_data, start=1):
            where = f"anynet.stages[{index - 1}]"
            if not isinstance(stage_data, Mapping):
                raise ValueError(f"'{where}' must be an object, got {stage_data!r}.")
            _require_keys(where, stage_data, stage_keys)
            try:
                stages.append(StageSpec(**{key: stage_data[key] for key in stage_keys}))
            except (TypeError, ValueError) as error:
                raise ValueError(f"Invalid '{where}': {error}") from None
        try:
            return cls(stages=tuple(stages), **{key: data[key] for key in top_keys[:-1]})
        except (TypeError, ValueError) as error:
            raise ValueError(f"Invalid 'anynet': {error}") from None


def _conv_out(size: int, kernel: int, stride: int) -> int:
    padding = kernel // 2
    return (size + 2 * padding - kernel) // stride + 1


def _require_int(name: str, value: Any, minimum: int) -> None:
    # bool is an int subclass; True as a width is always a mistake.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _require_keys(where: str, data: Mapping[str, Any], keys: list[str]) -> None:
    missing = [key for key in keys if key not in data]
    if missing:
        raise ValueError(f"'{where}' is missing key(s) {missing}; expected keys {keys}.")
