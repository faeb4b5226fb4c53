"""AnyNetSpec and StageSpec: validation on construction, JSON form, hashing."""

from __future__ import annotations

from typing import Any

import pytest

from regnas import AnyNetSpec, StageSpec


def test_stage_rejects_indivisible_group() -> None:
    with pytest.raises(ValueError, match="not divisible by group_w 16"):
        StageSpec(depth=1, width=24, group_w=16)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": 0, "width": 8}, "depth"),
        ({"depth": 1, "width": 0}, "width"),
        ({"depth": 1, "width": 8, "stride": 0}, "stride"),
        ({"depth": 1, "width": 8, "bot_mul": -1.0}, "bot_mul"),
        ({"depth": 1, "width": 8, "se_ratio": 2.0}, "se_ratio"),
        ({"depth": True, "width": 8}, "depth"),
    ],
)
def test_stage_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StageSpec(**kwargs)


def test_anynet_needs_a_stage() -> None:
    with pytest.raises(ValueError, match="at least one stage"):
        AnyNetSpec(stages=())


def test_anynet_rejects_non_stage() -> None:
    with pytest.raises(TypeError, match="Stage 1"):
        AnyNetSpec(stages=({"depth": 1},))  # type: ignore[arg-type]


def test_dict_round_trip() -> None:
    spec = AnyNetSpec(stages=(StageSpec(1, 16), StageSpec(2, 32, se_ratio=0.25)), stem_w=8)

    assert AnyNetSpec.from_dict(spec.to_dict()) == spec
    assert hash(AnyNetSpec.from_dict(spec.to_dict())) == hash(spec)


def test_from_dict_names_missing_key() -> None:
    data = AnyNetSpec(stages=(StageSpec(1, 16),)).to_dict()
    del data["stages"][0]["group_w"]

    with pytest.raises(ValueError, match=r"anynet.stages\[0\].*group_w"):
        AnyNetSpec.from_dict(data)


def test_output_sizes_for_28px() -> None:
    spec = AnyNetSpec(stages=tuple(StageSpec(1, 8) for _ in range(4)))

    # With stem stride 1 the last of four stride-2 stages outputs 2x2, not 1x1.
    assert spec.output_sizes(28) == [28, 14, 7, 4, 2]
