"""The named design spaces: parameter ranges, and how an Optuna trial samples an architecture.

Radosavovic et al. (2020) start from AnyNetX, where every stage has its own depth, width, group
width and bottleneck ratio, and narrow it step by step. Each step keeps the good models and
drops many bad ones:

- ``anynet_a``: every stage free;
- ``anynet_b``: one bottleneck ratio shared by all stages;
- ``anynet_c``: one group width shared too;
- ``anynet_d``: stage widths non-decreasing;
- ``anynet_e``: stage depths non-decreasing too;
- ``regnetx``: widths that grow linearly with the block index, quantized into stages;
- ``regnety``: ``regnetx`` with squeeze-excitation.

Optuna parameter names are a storage format and must not change, or resumed studies would mix
two spaces. RegNet parameters are named after the `RegNetParams` fields. Per-stage AnyNet
parameters carry a 1-based stage suffix (``depth_s1``, ``width_s1``, ``group_w_s1``,
``bot_mul_s1``); shared ones drop it.

Every space suggests the same parameters with the same distributions in every trial. With a
fixed search space, multivariate TPE models all parameters jointly and never falls back to
independent sampling. The monotone spaces therefore sort their samples: ``anynet_d`` gives its
stages the sampled widths in increasing order, and ``anynet_e`` does the same with depths.
Sorting independent uniform samples gives the uniform distribution over the non-decreasing
sequences, which is what the paper's rejection sampling draws from, without rejecting anything.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import math
from pathlib import Path
import tomllib
from typing import Any, ClassVar

import optuna

from regnas.regnet import WIDTH_QUANTUM, RegNetParams, adjust_block_compatibility
from regnas.spec import AnyNetSpec, StageSpec


ANYNET_SPACES = ("anynet_a", "anynet_b", "anynet_c", "anynet_d", "anynet_e")
REGNET_SPACES = ("regnetx", "regnety")
SPACE_NAMES = ANYNET_SPACES + REGNET_SPACES
# The squeeze-excitation ratio of RegNetY in the paper and in pycls.
REGNETY_SE_RATIO = 0.25


@dataclasses.dataclass(frozen=True)
class RegNetSpace:
    """Ranges of the RegNet parameters, sized for 28x28 inputs on a CPU.

    Radosavovic et al. (2020) sample d < 64, w0 < 256, wa < 256 and 1.5 <= wm <= 3 for
    ImageNet. These ranges are smaller, so that a trial trains in seconds at 28x28. Group widths
    start at 8 because narrower groups waste most of the block-diagonal kernel of the CPU path.

    Attributes:
        name: ``regnetx``, or ``regnety`` for squeeze-excitation in every block.
        depth: Inclusive range of the total block count.
        w0: Inclusive range of the first width, sampled in steps of 8.
        wa: Range of the width slope.
        wm: Range of the width multiplier.
        group_w: Choices of the group width.
        bot_mul: Choices of the bottleneck multiplier.
        se_ratio: Squeeze-excitation ratio of every block: 0 for regnetx, 0.25 by default for
            regnety.
        max_stages: Samples with more stages are rejected before they are built.
    """

    name: str = "regnetx"
    depth: tuple[int, int] = (4, 16)
    w0: tuple[int, int] = (16, 48)
    wa: tuple[float, float] = (8.0, 48.0)
    wm: tuple[float, float] = (2.0, 3.0)
    group_w: tuple[int, ...] = (8, 16, 32)
    bot_mul: tuple[float, ...] = (0.25, 0.5, 1.0)
    se_ratio: float | None = None
    max_stages: int = 4

    _RANGES: ClassVar[tuple[str, ...]] = ("depth", "w0", "wa", "wm")
    _CHOICES: ClassVar[tuple[str, ...]] = ("group_w", "bot_mul")

    def __post_init__(self) -> None:
        if self.name not in REGNET_SPACES:
            raise ValueError(
                f"RegNetSpace name must be one of {REGNET_SPACES}, got {self.name!r}."
            )
        _set(self, "depth", _int_range("depth", self.depth, minimum=1))
        _set(self, "w0", _int_range("w0", self.w0, minimum=WIDTH_QUANTUM, step=WIDTH_QUANTUM))
        _set(self, "wa", _float_range("wa", self.wa, minimum=0.0))
        _set(self, "wm", _float_range("wm", self.wm, minimum=1.0, strict=True))
        _set(self, "group_w", _int_choices("group_w", self.group_w))
        _set(self, "bot_mul", _float_choices("bot_mul", self.bot_mul))
        _set(self, "max_stages", _positive_int("max_stages", self.max_stages))
        default_se = REGNETY_SE_RATIO if self.name == "regnety" else 0.0
        se_ratio = default_se if self.se_ratio is None else self.se_ratio
        if self.name == "regnetx" and se_ratio != 0:
            raise ValueError(
                f"se_ratio {se_ratio!r} is set for regnetx, which has no squeeze-excitation; "
                "use the regnety space instead."
            )
        if self.name == "regnety" and not (_is_number(se_ratio) and 0 < se_ratio < 1):
            raise ValueError(f"se_ratio must be in (0, 1) for regnety, got {se_ratio!r}.")
        _set(self, "se_ratio", float(se_ratio))

    @property
    def stages(self) -> int:
        return self.max_stages

    def suggest(self, trial: optuna.Trial) -> RegNetParams:
        """Sample RegNet parameters; the names of the Optuna parameters equal the field names."""
        return RegNetParams(
            depth=trial.suggest_int("depth", *self.depth),
            w0=trial.suggest_int("w0", *self.w0, step=WIDTH_QUANTUM),
            wa=trial.suggest_float("wa", *self.wa),
            wm=trial.suggest_float("wm", *self.wm),
            group_w=int(trial.suggest_categorical("group_w", list(self.group_w))),
            bot_mul=float(trial.suggest_categorical("bot_mul", list(self.bot_mul))),
            se_ratio=float(self.se_ratio or 0.0),
        )

    def sample(
        self, trial: optuna.Trial, stem_w: int, stem_stride: int
    ) -> tuple[AnyNetSpec, dict[str, Any]]:
        """Sample an architecture; also return the attributes that describe how it was made."""
        params = self.suggest(trial)
        spec = params.to_anynet(stem_w=stem_w, stem_stride=stem_stride)
        return spec, {"regnet": params.to_dict()}

    def smallest(self) -> RegNetParams:
        """Return the parameters of the cheapest corner of the space, for budget checks."""
        return RegNetParams(
            depth=self.depth[0],
            w0=self.w0[0],
            wa=self.wa[0],
            wm=self.wm[1],
            group_w=max(self.group_w),
            bot_mul=min(self.bot_mul),
            se_ratio=float(self.se_ratio or 0.0),
        )

    def smallest_spec(self, stem_w: int, stem_stride: int) -> AnyNetSpec:
        return self.smallest().to_anynet(stem_w=stem_w, stem_stride=stem_stride)

    def params_for(self, regnet: RegNetParams) -> dict[str, Any] | None:
        """Return the Optuna parameters that give `regnet`, or None if it lies outside."""
        params = {
            "depth": regnet.depth,
            "w0": regnet.w0,
            "wa": regnet.wa,
            "wm": regnet.wm,
            "group_w": regnet.group_w,
            "bot_mul": regnet.bot_mul,
        }
        inside = (
            self.depth[0] <= regnet.depth <= self.depth[1]
            and self.w0[0] <= regnet.w0 <= self.w0[1]
            and self.wa[0] <= regnet.wa <= self.wa[1]
            and self.wm[0] <= regnet.wm <= self.wm[1]
            and regnet.group_w in self.group_w
            and regnet.bot_mul in self.bot_mul
        )
        return params if inside else None

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


@dataclasses.dataclass(frozen=True)
class AnyNetSpace:
    """Ranges of the per-stage AnyNet parameters, sized for 28x28 inputs on a CPU.

    The paper samples ImageNet AnyNetX models with up to 16 blocks and widths up to 1024 per
    stage, group widths 1 to 32 and bottleneck ratios 1, 2 and 4 (bottleneck multipliers 1, 1/2
    and 1/4). These defaults keep the multipliers and shrink depths and widths, so that a trial
    trains in seconds at 28x28; group widths start at 8 for the same reason as in `RegNetSpace`.

    Attributes:
        name: One of ``anynet_a`` to ``anynet_e``.
        stages: Number of stages, 1 to 4; each halves the resolution.
        depth: Inclusive range of each stage's block count.
        width: Inclusive range of each stage's width, sampled in steps of 8.
        group_w: Choices of the group width.
        bot_mul: Choices of the bottleneck multiplier.
    """

    name: str = "anynet_a"
    stages: int = 4
    depth: tuple[int, int] = (1, 4)
    width: tuple[int, int] = (8, 128)
    group_w: tuple[int, ...] = (8, 16, 32)
    bot_mul: tuple[float, ...] = (0.25, 0.5, 1.0)

    _RANGES: ClassVar[tuple[str, ...]] = ("depth", "width")
    _CHOICES: ClassVar[tuple[str, ...]] = ("group_w", "bot_mul")
    # Stride-2 stages on a 28x28 map with a stride-1 stem: a fifth stage would run at 1x1.
    MAX_STAGES: ClassVar[int] = 4

    def __post_init__(self) -> None:
        if self.name not in ANYNET_SPACES:
            raise ValueError(
                f"AnyNetSpace name must be one of {ANYNET_SPACES}, got {self.name!r}."
            )
        stages = _positive_int("stages", self.stages)
        if stages > self.MAX_STAGES:
            raise ValueError(
                f"stages must be between 1 and {self.MAX_STAGES}, got {stages!r}: every stage "
                "halves the resolution, and 28x28 inputs reach 2x2 after four."
            )
        _set(self, "depth", _int_range("depth", self.depth, minimum=1))
        width = _int_range("width", self.width, minimum=WIDTH_QUANTUM, step=WIDTH_QUANTUM)
        _set(self, "width", width)
        _set(self, "group_w", _int_choices("group_w", self.group_w))
        _set(self, "bot_mul", _float_choices("bot_mul", self.bot_mul))

    @property
    def max_stages(self) -> int:
        return self.stages

    @property
    def level(self) -> str:
        """The constraint letter: ``a`` (none) to ``e`` (all)."""
        return self.name[-1]

    def parameter_names(self) -> list[str]:
        """Return the Optuna parameter names, in sampling order."""
        names = []
        for stage in range(1, self.stages + 1):
            names += [f"depth_s{stage}", f"width_s{stage}"]
            if self.level in "ab":
                names.append(f"group_w_s{stage}")
            if self.level == "a":
                names.append(f"bot_mul_s{stage}")
        if self.level not in "ab":
            names.append("group_w")
        if self.level != "a":
            names.append("bot_mul")
        return names

    def sample(
        self, trial: optuna.Trial, stem_w: int, stem_stride: int
    ) -> tuple[AnyNetSpec, dict[str, Any]]:
        """Sample an architecture; the stages follow the constraints of this space's level."""
        values: dict[str, Any] = {}
        for name in self.parameter_names():
            base = name.split("_s")[0]
            if base == "depth":
                values[name] = trial.suggest_int(name, *self.depth)
            elif base == "width":
                values[name] = trial.suggest_int(name, *self.width, step=WIDTH_QUANTUM)
            elif base == "group_w":
                values[name] = int(trial.suggest_categorical(name, list(self.group_w)))
            else:
                values[name] = float(trial.suggest_categorical(name, list(self.bot_mul)))
        return self.build(values, stem_w, stem_stride), {}

    def build(self, values: Mapping[str, Any], stem_w: int, stem_stride: int) -> AnyNetSpec:
        """Expand Optuna parameter values into an architecture."""
        indices = range(1, self.stages + 1)
        depths = [int(values[f"depth_s{i}"]) for i in indices]
        widths = [int(values[f"width_s{i}"]) for i in indices]
        group_ws = [int(values.get(f"group_w_s{i}", values.get("group_w", 0))) for i in indices]
        bot_muls = [
            float(values.get(f"bot_mul_s{i}", values.get("bot_mul", 0.0))) for i in indices
        ]
        if self.level in "de":
            widths = sorted(widths)
        if self.level == "e":
            depths = sorted(depths)
        stages = []
        for depth, width, group_w, bot_mul in zip(depths, widths, group_ws, bot_muls, strict=True):
            # The same group and bottleneck compatibility rule as RegNet, one stage at a time.
            [fit_width], [fit_group_w] = adjust_block_compatibility([width], bot_mul, group_w)
            stages.append(
                StageSpec(
                    depth=depth, width=fit_width, stride=2, group_w=fit_group_w, bot_mul=bot_mul
                )
            )
        return AnyNetSpec(stages=tuple(stages), stem_w=stem_w, stem_stride=stem_stride)

    def smallest_spec(self, stem_w: int, stem_stride: int) -> AnyNetSpec:
        """Return the cheapest architecture of the space, for budget checks."""
        values: dict[str, Any] = {"group_w": max(self.group_w), "bot_mul": min(self.bot_mul)}
        for stage in range(1, self.stages + 1):
            values[f"depth_s{stage}"] = self.depth[0]
            values[f"width_s{stage}"] = self.width[0]
            values[f"group_w_s{stage}"] = max(self.group_w)
            values[f"bot_mul_s{stage}"] = min(self.bot_mul)
        return self.build(values, stem_w, stem_stride)

    def params_for(self, regnet: RegNetParams) -> dict[str, Any] | None:
        """Return the Optuna parameters of the stages `regnet` expands to, or None."""
        widths, depths = regnet.stage_widths_depths()
        if len(widths) != self.stages:
            return None
        values: dict[str, Any] = {"group_w": regnet.group_w, "bot_mul": regnet.bot_mul}
        for stage, (width, depth) in enumerate(zip(widths, depths, strict=True), start=1):
            values[f"depth_s{stage}"] = depth
            values[f"width_s{stage}"] = width
            values[f"group_w_s{stage}"] = regnet.group_w
            values[f"bot_mul_s{stage}"] = regnet.bot_mul
        params = {name: values[name] for name in self.parameter_names()}
        # anynet_e sorts sampled depths, so only non-decreasing depths come out as given.
        inside = (
            (self.level != "e" or depths == sorted(depths))
            and all(self.depth[0] <= depth <= self.depth[1] for depth in depths)
            and all(self.width[0] <= width <= self.width[1] for width in widths)
            and regnet.group_w in self.group_w
            and regnet.bot_mul in self.bot_mul
        )
        return params if inside else None

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


Space = RegNetSpace | AnyNetSpace


def make_space(name: str, overrides: Mapping[str, Any] | None = None) -> Space:
    """Return the named space with its default ranges, or with `overrides` applied.

    Raises:
        ValueError: The name is unknown, or an override names an unknown key or a bad value.
    """
    if name not in SPACE_NAMES:
        raise ValueError(f"Unknown space {name!r}; choose one of: {', '.join(SPACE_NAMES)}.")
    cls: type[Space] = AnyNetSpace if name in ANYNET_SPACES else RegNetSpace
    overrides = dict(overrides or {})
    allowed = sorted(field.name for field in dataclasses.fields(cls) if field.name != "name")
    if name == "regnetx":
        allowed.remove("se_ratio")
    for key in overrides:
        if key not in allowed:
            raise ValueError(
                f"Unknown key {key!r} for the {name} space; the keys it accepts are: "
                f"{', '.join(allowed)}."
            )
    for key in cls._RANGES + cls._CHOICES:
        if key in overrides:
            value = overrides[key]
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"{key} must be a list, got {value!r}.")
            overrides[key] = tuple(value)
    return cls(name=name, **overrides)


def load_space_config(path: str | Path, space: str | None = None) -> Space:
    """Read a study definition file (TOML) into a space.

    The file names the space with the ``space`` key, or `space` names it (``--space``); each
    other key overrides one default range. See ``studies/README.md``.

    Raises:
        ValueError: The file is missing or unreadable, or a key or value is invalid; the
            message names the file, the key and the value.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except FileNotFoundError:
        raise ValueError(f"--space-config {path}: no such file.") from None
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"--space-config {path}: not a readable TOML file ({error}).") from None
    name = document.pop("space", None)
    if name is None:
        name = space or "regnetx"
    elif space is not None and space != name:
        raise ValueError(
            f"--space {space} disagrees with space = {name!r} in {path}; pass one of them only."
        )
    if not isinstance(name, str):
        raise ValueError(f"{path}: key 'space' must be a space name, got {name!r}.")
    try:
        return make_space(name, document)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def _to_dict(space: Space) -> dict[str, Any]:
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in dataclasses.asdict(space).items()
    }


def _set(space: Space, name: str, value: Any) -> None:
    object.__setattr__(space, name, value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(name: str, value: Any) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _pair(name: str, value: Any) -> tuple[Any, Any]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{name} must be a range [low, high], got {value!r}.")
    low, high = value
    return low, high


def _int_range(name: str, value: Any, minimum: int, step: int = 1) -> tuple[int, int]:
    low, high = _pair(name, value)
    if not (_is_int(low) and _is_int(high)) or not minimum <= low <= high:
        raise ValueError(
            f"{name} must be a range [low, high] of integers with {minimum} <= low <= high, "
            f"got {list(value)!r}."
        )
    if low % step or high % step:
        raise ValueError(f"{name} bounds must be multiples of {step}, got {list(value)!r}.")
    return int(low), int(high)


def _float_range(
    name: str, value: Any, minimum: float, strict: bool = False
) -> tuple[float, float]:
    low, high = _pair(name, value)
    above = (low > minimum) if strict else (low >= minimum)
    if not (_is_number(low) and _is_number(high)) or not (above and low <= high):
        bound = ">" if strict else ">="
        raise ValueError(
            f"{name} must be a range [low, high] with low {bound} {minimum} and low <= high, "
            f"got {list(value)!r}."
        )
    return float(low), float(high)


def _int_choices(name: str, value: Any) -> tuple[int, ...]:
    if (
        not isinstance(value, (list, tuple))
        or not value
        or not all(_is_int(item) and item >= 1 for item in value)
        or len(set(value)) != len(value)
    ):
        raise ValueError(
            f"{name} must be a non-empty list of distinct positive integers, got {value!r}."
        )
    return tuple(int(item) for item in value)


def _float_choices(name: str, value: Any) -> tuple[float, ...]:
    if (
        not isinstance(value, (list, tuple))
        or not value
        or not all(_is_number(item) and item > 0 for item in value)
        or len(set(value)) != len(value)
    ):
        raise ValueError(
            f"{name} must be a non-empty list of distinct positive numbers, got {value!r}."
        )
    return tuple(float(item) for item in value)
