"""RegNet generation: validation, pycls quantization rules, and properties over random samples."""

from __future__ import annotations

import numpy as np
import pytest

from regnas import RegNetParams
from regnas.regnet import adjust_block_compatibility, generate_stages


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("depth", 0, "depth"),
        ("depth", 2.5, "depth"),
        ("w0", 12, "multiple of 8"),
        ("w0", 0, "multiple of 8"),
        ("wa", -1.0, "wa"),
        ("wa", float("nan"), "wa"),
        ("wm", 1.0, "wm"),
        ("wm", 0.5, "wm"),
        ("group_w", 0, "group_w"),
        ("bot_mul", 0.0, "bot_mul"),
        ("se_ratio", 1.0, "se_ratio"),
    ],
)
def test_invalid_params_raise(field: str, value: object, message: str) -> None:
    params = {"depth": 8, "w0": 16, "wa": 16.0, "wm": 2.0, "group_w": 8}
    params[field] = value

    with pytest.raises(ValueError, match=message):
        RegNetParams(**params)


def test_error_shows_value() -> None:
    with pytest.raises(ValueError, match="12"):
        RegNetParams(depth=8, w0=12, wa=16.0, wm=2.0, group_w=8)


def test_zero_slope_gives_one_stage() -> None:
    widths, depths = generate_stages(depth=5, w0=32, wa=0.0, wm=2.0)

    assert widths == [32]
    assert depths == [5]


def test_group_width_clipped_to_bottleneck() -> None:
    widths, group_ws = adjust_block_compatibility([16, 64], bot_mul=0.25, group_w=8)

    # 16 * 0.25 = 4 channels cannot hold a group of 8: the group shrinks to 4.
    assert group_ws == [4, 8]
    assert widths == [16, 64]


def test_bottleneck_rounded_to_group_multiple() -> None:
    widths, group_ws = adjust_block_compatibility([40], bot_mul=1.0, group_w=24)

    # 40 / 24 rounds to 2 groups, so the width becomes 48.
    assert group_ws == [24]
    assert widths == [48]


def test_equal_params_hash_equal() -> None:
    first = RegNetParams(depth=8, w0=16, wa=16, wm=2, group_w=8)
    second = RegNetParams(depth=8, w0=16, wa=16.0, wm=2.0, group_w=8)

    assert first == second
    assert hash(first) == hash(second)
    assert first.to_anynet() == second.to_anynet()


def test_random_samples_are_valid() -> None:
    rng = np.random.default_rng(0)
    for _ in range(3000):
        params = RegNetParams(
            depth=int(rng.integers(1, 40)),
            w0=int(rng.integers(1, 33)) * 8,
            wa=float(rng.uniform(0.0, 256.0)),
            wm=float(rng.uniform(1.1, 4.0)),
            group_w=int(rng.choice([1, 2, 4, 8, 16, 32, 64])),
            bot_mul=float(rng.choice([0.25, 0.5, 1.0, 2.0])),
            se_ratio=float(rng.choice([0.0, 0.25])),
        )
        raw_widths, raw_depths = params.stage_widths_depths()
        spec = params.to_anynet()

        assert len(spec.stages) == len(raw_widths), params
        assert sum(spec.stage_depths) == params.depth, params
        assert spec.stage_depths == raw_depths, params
        assert raw_widths == sorted(set(raw_widths)), params
        for stage in spec.stages:
            assert all(width > 0 and width % 8 == 0 for width in raw_widths), params
            assert stage.width > 0, params
            assert stage.group_w >= 1, params
            assert stage.groups >= 1, params
            assert stage.inner_width % stage.group_w == 0, params
            assert stage.group_w <= stage.inner_width, params
