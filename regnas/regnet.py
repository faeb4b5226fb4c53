"""RegNet: the few parameters that generate an AnyNet's stage widths and depths.

This follows Radosavovic et al., "Designing Network Design Spaces" (CVPR 2020), and its reference
implementation pycls (`pycls/models/regnet.py`, `pycls/models/blocks.py`). Block j has the
continuous width ``w0 + wa * j``. Each width is snapped to the nearest ``w0 * wm**k`` and rounded
to a multiple of 8, and consecutive blocks of equal width form a stage. The results match
pycls's model zoo exactly, which `tests/test_complexity.py` checks.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from regnas.spec import AnyNetSpec, StageSpec


# Widths are rounded to multiples of this quantum, as in pycls.
WIDTH_QUANTUM = 8


@dataclasses.dataclass(frozen=True)
class RegNetParams:
    """The RegNet design parameters, in the paper's symbols.

    Attributes:
        depth: Total number of blocks over all stages (the paper's d).
        w0: Width of the first block; a positive multiple of 8.
        wa: Width slope: continuous widths grow by ``wa`` per block (>= 0).
        wm: Width multiplier between consecutive quantized stage widths (> 1).
        group_w: Channels per group of every 3x3 grouped convolution.
        bot_mul: Bottleneck multiplier shared by every block.
        se_ratio: Squeeze-excitation ratio; 0 gives RegNetX, 0.25 gives RegNetY.
    """

    depth: int
    w0: int
    wa: float
    wm: float
    group_w: int
    bot_mul: float = 1.0
    se_ratio: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1:
            raise ValueError(f"depth must be an integer >= 1, got {self.depth!r}.")
        if (
            isinstance(self.w0, bool)
            or not isinstance(self.w0, int)
            or self.w0 < WIDTH_QUANTUM
            or self.w0 % WIDTH_QUANTUM
        ):
            raise ValueError(
                f"w0 must be a positive multiple of {WIDTH_QUANTUM}, got {self.w0!r}: "
                "smaller or unaligned first widths quantize to zero or break stage merging."
            )
        if not _is_finite(self.wa) or self.wa < 0:
            raise ValueError(f"wa must be a finite number >= 0, got {self.wa!r}.")
        if not _is_finite(self.wm) or self.wm <= 1:
            raise ValueError(
                f"wm must be a finite number > 1, got {self.wm!r}: with wm <= 1 the "
                "quantization log(w / w0) / log(wm) is undefined."
            )
        if isinstance(self.group_w, bool) or not isinstance(self.group_w, int) or self.group_w < 1:
            raise ValueError(f"group_w must be an integer >= 1, got {self.group_w!r}.")
        if not _is_finite(self.bot_mul) or self.bot_mul <= 0:
            raise ValueError(f"bot_mul must be a positive number, got {self.bot_mul!r}.")
        if not _is_finite(self.se_ratio) or not 0 <= self.se_ratio < 1:
            raise ValueError(f"se_ratio must be in [0, 1), got {self.se_ratio!r}.")
        for name in ("wa", "wm", "bot_mul", "se_ratio"):
            object.__setattr__(self, name, float(getattr(self, name)))

    def stage_widths_depths(self) -> tuple[list[int], list[int]]:
        """Return the quantized per-stage widths and depths, before group compatibility."""
        return generate_stages(self.depth, self.w0, self.wa, self.wm)

    def to_anynet(
        self,
        stem_w: int = 16,
        stem_stride: int = 1,
        in_channels: int = 1,
        num_classes: int = 10,
    ) -> AnyNetSpec:
        """Expand these parameters into a complete `AnyNetSpec` (every stage has stride 2)."""
        widths, depths = self.stage_widths_depths()
        widths, group_ws = adjust_block_compatibility(widths, self.bot_mul, self.group_w)
        stages = tuple(
            StageSpec(
                depth=depth,
                width=width,
                stride=2,
                group_w=group_w,
                bot_mul=self.bot_mul,
                se_ratio=self.se_ratio,
            )
            for width, depth, group_w in zip(widths, depths, group_ws, strict=True)
        )
        return AnyNetSpec(
            stages=stages,
            in_channels=in_channels,
            num_classes=num_classes,
            stem_w=stem_w,
            stem_stride=stem_stride,
        )

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def generate_stages(depth: int, w0: int, wa: float, wm: float) -> tuple[list[int], list[int]]:
    """Return per-stage widths and depths from the linear width rule, quantized as in pycls."""
    continuous = np.arange(depth) * wa + w0
    exponents = np.round(np.log(continuous / w0) / np.log(wm))
    quantized = w0 * np.power(wm, exponents)
    block_widths = np.round(quantized / WIDTH_QUANTUM).astype(int) * WIDTH_QUANTUM
    # Widths never decrease (wa >= 0), so equal widths are consecutive and form one stage each.
    widths, depths = np.unique(block_widths, return_counts=True)
    if len(widths) == 0 or widths.min() <= 0:
        raise ValueError(
            f"RegNet parameters depth={depth}, w0={w0}, wa={wa}, wm={wm} give stage widths "
            f"{widths.tolist()}; every stage needs a positive width."
        )
    return [int(width) for width in widths], [int(count) for count in depths]


def adjust_block_compatibility(
    widths: list[int], bot_mul: float, group_w: int
) -> tuple[list[int], list[int]]:
    """Make each stage's bottleneck width a multiple of its group width, as pycls does.

    The group width is clipped to the bottleneck width, the bottleneck width is rounded to a
    multiple of the group width (of lcm(group width, 8) for inverted bottlenecks), and the stage
    width is recomputed from it.

    Returns:
        The adjusted stage widths and the per-stage group widths.
    """
    new_widths, group_ws = [], []
    for width in widths:
        inner = int(max(1, width * bot_mul))
        group = int(min(group_w, inner))
        multiple = math.lcm(group, WIDTH_QUANTUM) if bot_mul > 1 else group
        inner = max(multiple, int(round(inner / multiple) * multiple))
        new_widths.append(int(inner / bot_mul))
        group_ws.append(group)
    return new_widths, group_ws


def _is_finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
