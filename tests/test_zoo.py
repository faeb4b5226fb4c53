"""pycls's ImageNet zoo: every RegNetX and RegNetY model reproduces pycls's complexity exactly."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from regnas import complexity
from regnas.engine import count_params
from regnas.models import AnyNet, init_variables
from regnas.zoo import IMAGE_SIZE, ZOO, ZooModel, zoo_models


# pycls's zoo sizes in both families, from smallest to largest.
SIZES = [
    "200MF", "400MF", "600MF", "800MF", "1.6GF", "3.2GF",
    "4.0GF", "6.4GF", "8.0GF", "12GF", "16GF", "32GF",
]  # fmt: skip

# Only models under 12M parameters are built: each larger one would allocate 60-580 MB of
# float32 parameters on the host.
SMALL_MODELS = [model for model in ZOO.values() if model.params < 12_000_000]


@pytest.mark.parametrize("model", list(ZOO.values()), ids=list(ZOO))
def test_zoo_complexity_matches_pycls(model: ZooModel) -> None:
    result = complexity(model.to_anynet(), image_size=IMAGE_SIZE)

    assert result["flops"] == model.flops
    assert result["params"] == model.params
    assert result["acts"] == model.acts


@pytest.mark.parametrize("model", SMALL_MODELS, ids=[model.name for model in SMALL_MODELS])
def test_zoo_built_params_match_pycls(model: ZooModel) -> None:
    # Parameter shapes do not depend on the input size, so a small input keeps this fast.
    variables = init_variables(AnyNet(model.to_anynet()), seed=0, input_shape=(1, 32, 32, 3))

    assert count_params(variables["params"]) == model.params


@pytest.mark.parametrize("model", list(ZOO.values()), ids=list(ZOO))
def test_zoo_stages_cover_depth(model: ZooModel) -> None:
    spec = model.to_anynet()

    assert sum(spec.stage_depths) == model.regnet.depth
    assert spec.stage_widths == sorted(spec.stage_widths)


def test_zoo_has_every_pycls_model() -> None:
    expected = [f"RegNetX-{size}" for size in SIZES] + [f"RegNetY-{size}" for size in SIZES]

    assert list(ZOO) == expected
    assert all(model.name == name for name, model in ZOO.items())


@pytest.mark.parametrize("family", ["regnetx", "regnety"])
def test_zoo_family_ordered_by_flops(family: str) -> None:
    flops = [model.flops for model in zoo_models(family)]

    assert flops == sorted(flops)


@pytest.mark.parametrize(
    ("family", "prefix", "se_ratio"), [("regnetx", "RegNetX-", 0.0), ("regnety", "RegNetY-", 0.25)]
)
def test_zoo_models_filters_family(family: str, prefix: str, se_ratio: float) -> None:
    models = zoo_models(family)

    assert [model.name for model in models] == [prefix + size for size in SIZES]
    assert all(model.family == family for model in models)
    assert all(model.regnet.se_ratio == se_ratio for model in models)


@pytest.mark.parametrize("family", ["RegNetX", "resnet", ""])
def test_zoo_models_rejects_unknown_family(family: str) -> None:
    with pytest.raises(ValueError, match=f"got '{family}'") as error:
        zoo_models(family)

    assert "'regnetx', 'regnety'" in str(error.value)


def test_zoo_model_rejects_wrong_se_ratio() -> None:
    model = ZOO["RegNetX-200MF"]
    with_se = dataclasses.replace(model.regnet, se_ratio=0.25)

    with pytest.raises(ValueError, match="se_ratio"):
        dataclasses.replace(model, regnet=with_se)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "ResNet-50", "name"),
        ("flops", 0, "flops"),
        ("params", 2.5, "params"),
        ("acts", True, "acts"),
    ],
)
def test_zoo_model_rejects_invalid_field(field: str, value: object, message: str) -> None:
    changes: dict[str, Any] = {field: value}

    with pytest.raises(ValueError, match=message):
        dataclasses.replace(ZOO["RegNetY-200MF"], **changes)


def test_zoo_model_is_frozen_and_hashable() -> None:
    model = ZOO["RegNetY-200MF"]

    with pytest.raises(dataclasses.FrozenInstanceError):
        model.flops = 1  # type: ignore[misc]
    assert hash(model) == hash(dataclasses.replace(model))
