"""The RegNet search space: parameter ranges and how an Optuna trial samples them.

Optuna parameter names are a storage format: they equal the `RegNetParams` field names and must
not change, or resumed studies would mix two spaces.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import optuna

from regnas.regnet import WIDTH_QUANTUM, RegNetParams


@dataclasses.dataclass(frozen=True)
class RegNetSpace:
    """Ranges of the RegNet parameters, sized for 28x28 inputs on a CPU.

    Radosavovic et al. (2020) sample d < 64, w0 < 256, wa < 256 and 1.5 <= wm <= 3 for
    ImageNet. These ranges are smaller, so that a trial trains in seconds at 28x28. Group widths
    start at 8 because narrower groups waste most of the block-diagonal kernel of the CPU path.

    Attributes:
        depth: Inclusive range of the total block count.
        w0: Inclusive range of the first width, sampled in steps of 8.
        wa: Range of the width slope.
        wm: Range of the width multiplier.
        group_w: Choices of the group width.
        bot_mul: Choices of the bottleneck multiplier.
        se_ratio: Squeeze-excitation ratio of every block (0 for RegNetX).
        max_stages: Samples with more stages are rejected before they are built.
    """

    depth: tuple[int, int] = (4, 16)
    w0: tuple[int, int] = (16, 48)
    wa: tuple[float, float] = (8.0, 48.0)
    wm: tuple[float, float] = (2.0, 3.0)
    group_w: tuple[int, ...] = (8, 16, 32)
    bot_mul: tuple[float, ...] = (0.25, 0.5, 1.0)
    se_ratio: float = 0.0
    max_stages: int = 4

    def suggest(self, trial: optuna.Trial) -> RegNetParams:
        """Sample RegNet parameters; the names of the Optuna parameters equal the field names."""
        return RegNetParams(
            depth=trial.suggest_int("depth", *self.depth),
            w0=trial.suggest_int("w0", *self.w0, step=WIDTH_QUANTUM),
            wa=trial.suggest_float("wa", *self.wa),
            wm=trial.suggest_float("wm", *self.wm),
            group_w=int(trial.suggest_categorical("group_w", list(self.group_w))),
            bot_mul=float(trial.suggest_categorical("bot_mul", list(self.bot_mul))),
            se_ratio=self.se_ratio,
        )

    def smallest(self) -> RegNetParams:
        """Return the parameters of the cheapest corner of the space, for budget checks."""
        return RegNetParams(
            depth=self.depth[0],
            w0=self.w0[0],
            wa=self.wa[0],
            wm=self.wm[1],
            group_w=max(self.group_w),
            bot_mul=min(self.bot_mul),
            se_ratio=self.se_ratio,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }
