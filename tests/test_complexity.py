"""Golden complexity values of pycls's RegNet model zoo, and counts of built models."""

from __future__ import annotations

import pytest

from regnas import AnyNetSpec, RegNetParams, StageSpec, complexity
from regnas.complexity import complexity_by_part
from regnas.engine import count_params
from regnas.models import AnyNet, init_variables


# pycls model zoo (MODEL_ZOO.md), 224x224x3 input, 1000 classes.
REGNETX_200MF = {"flops": 199_040_872, "params": 2_684_792, "acts": 2_164_056}
REGNETY_200MF = {"flops": 199_519_076, "params": 3_162_996, "acts": 2_168_052}


@pytest.mark.parametrize(("se_ratio", "expected"), [(0.0, REGNETX_200MF), (0.25, REGNETY_200MF)])
def test_regnet_200mf_matches_pycls(se_ratio: float, expected: dict[str, int]) -> None:
    spec = RegNetParams(
        depth=13, w0=24, wa=36.44, wm=2.49, group_w=8, se_ratio=se_ratio
    ).to_anynet(stem_w=32, stem_stride=2, in_channels=3, num_classes=1000)

    result = complexity(spec, image_size=224)

    assert result == expected
    assert all(isinstance(value, int) for value in result.values())
    assert spec.stage_widths == [24, 56, 152, 368]
    assert spec.stage_depths == [1, 1, 4, 7]


def test_complexity_rejects_bad_image_size() -> None:
    spec = AnyNetSpec(stages=(StageSpec(depth=1, width=8),))
    with pytest.raises(ValueError, match="image_size"):
        complexity(spec, image_size=0)


@pytest.mark.parametrize("se_ratio", [0.0, 0.25])
def test_params_match_built_model(se_ratio: float) -> None:
    spec = AnyNetSpec(
        stages=(
            StageSpec(depth=2, width=16, group_w=8, se_ratio=se_ratio),
            StageSpec(depth=1, width=64, group_w=16, bot_mul=0.5, se_ratio=se_ratio),
        )
    )
    variables = init_variables(AnyNet(spec), seed=0, input_shape=(1, 28, 28, 1))

    assert count_params(variables["params"]) == complexity(spec, 28)["params"]


def test_flops_scale_with_pixels() -> None:
    spec = AnyNetSpec(stages=(StageSpec(depth=1, width=8),), num_classes=1)
    small, large = complexity(spec, 28), complexity(spec, 56)

    # Every layer but the head runs on 4x the pixels; parameters do not depend on the input.
    assert 3.9 < large["flops"] / small["flops"] < 4.0
    assert large["params"] == small["params"]


def test_parts_counted_by_hand() -> None:
    # 4x4 input: the stem keeps 4x4, the stage's stride-2 block ends at 2x2 and needs a projection.
    spec = AnyNetSpec(stages=(StageSpec(depth=1, width=8, stride=2, group_w=8),), stem_w=8)

    stem, stage, head = complexity_by_part(spec, image_size=4)

    assert stem == {"flops": 9 * 8 * 16, "params": 9 * 8 + 2 * 8, "acts": 8 * 16}
    # projection 1x1 at 2x2, 1x1 at 4x4, grouped 3x3 at 2x2, 1x1 at 2x2
    assert stage["flops"] == 64 * 4 + 64 * 16 + 9 * 64 * 4 + 64 * 4
    assert stage["params"] == 4 * 2 * 8 + 64 * 3 + 9 * 64
    assert stage["acts"] == 8 * 4 + 8 * 16 + 8 * 4 + 8 * 4
    assert head == {"flops": 8 * 10 + 10, "params": 8 * 10 + 10, "acts": 10}


def test_parts_add_up_to_total() -> None:
    spec = RegNetParams(depth=13, w0=24, wa=36.44, wm=2.49, group_w=8, se_ratio=0.25).to_anynet(
        stem_w=32, stem_stride=2, in_channels=3, num_classes=1000
    )

    parts = complexity_by_part(spec, image_size=224)

    assert len(parts) == len(spec.stages) + 2
    for key in ("flops", "params", "acts"):
        assert sum(part[key] for part in parts) == REGNETY_200MF[key], key
