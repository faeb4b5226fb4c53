"""pycls YAML configurations: key names, round trips for RegNet and AnyNet, bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from regnas.archive import architecture_document
from regnas.pycls import from_pycls_yaml, pycls_config, to_pycls_yaml
from regnas.regnet import RegNetParams
from regnas.spec import AnyNetSpec, StageSpec


REGNETY = RegNetParams(depth=6, w0=16, wa=34.25, wm=2.14, group_w=8, bot_mul=0.5, se_ratio=0.25)
FREE_SPEC = AnyNetSpec(
    stages=(
        StageSpec(depth=1, width=16, group_w=8, bot_mul=1.0),
        StageSpec(depth=2, width=32, group_w=16, bot_mul=0.5),
        StageSpec(depth=1, width=48, stride=1, group_w=24, bot_mul=1.0),
    ),
    stem_w=8,
    num_classes=7,
)


def _write(tmp_path: Path, spec: AnyNetSpec, regnet: RegNetParams | None) -> Path:
    document = architecture_document(spec, regnet, 28, {}, {"study": "s", "trial": 2})
    path = tmp_path / "model.yaml"
    path.write_text(to_pycls_yaml(document))
    return path


def test_regnet_round_trip(tmp_path: Path) -> None:
    spec = REGNETY.to_anynet(stem_w=24, stem_stride=2)
    path = _write(tmp_path, spec, REGNETY)

    config = yaml.safe_load(path.read_text())

    assert config["MODEL"] == {"TYPE": "regnet", "NUM_CLASSES": 10}
    assert config["REGNET"]["STEM_TYPE"] == "simple_stem_in"
    assert config["REGNET"]["WA"] == 34.25
    assert config["REGNET"]["SE_ON"] is True
    assert config["REGNET"]["SE_R"] == 0.25
    assert "ANYNET" not in config
    assert from_pycls_yaml(path) == spec


def test_anynet_round_trip(tmp_path: Path) -> None:
    path = _write(tmp_path, FREE_SPEC, None)

    config = yaml.safe_load(path.read_text())

    assert config["MODEL"] == {"TYPE": "anynet", "NUM_CLASSES": 7}
    assert config["ANYNET"]["STEM_TYPE"] == "res_stem_cifar"
    assert config["ANYNET"]["DEPTHS"] == [1, 2, 1]
    assert config["ANYNET"]["WIDTHS"] == [16, 32, 48]
    assert config["ANYNET"]["STRIDES"] == [2, 2, 1]
    assert config["ANYNET"]["GROUP_WS"] == [8, 16, 24]
    assert config["ANYNET"]["BOT_MULS"] == [1.0, 0.5, 1.0]
    assert config["ANYNET"]["SE_ON"] is False
    assert from_pycls_yaml(path) == FREE_SPEC


def test_header_records_input_channels(tmp_path: Path) -> None:
    path = _write(tmp_path, FREE_SPEC, None)

    assert "# Input channels: 1" in path.read_text()
    assert from_pycls_yaml(path, in_channels=3).in_channels == 3


def test_unsupported_stem_stride() -> None:
    spec = AnyNetSpec(stages=(StageSpec(1, 16),), stem_stride=3)

    with pytest.raises(ValueError, match=r"stem_stride is 3.*Export to JSON"):
        pycls_config(spec, None)


def test_mixed_se_ratios() -> None:
    spec = AnyNetSpec(stages=(StageSpec(1, 16), StageSpec(1, 32, se_ratio=0.25)))

    with pytest.raises(ValueError, match=r"ratios \[0\.0, 0\.25\]"):
        pycls_config(spec, None)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"MODEL": {"TYPE": "resnet", "NUM_CLASSES": 10}}, "'MODEL.TYPE' is 'resnet'"),
        ({"MODEL": {"TYPE": "anynet"}}, "missing key 'MODEL.NUM_CLASSES'"),
        ({"ANYNET": {"STEM_TYPE": "res_stem_in"}}, "'ANYNET.STEM_TYPE' is 'res_stem_in'"),
        ({"ANYNET": {"DEPTHS": [1, 2]}}, r"lengths \[2, 3, 3, 3, 3\]"),
        ({"ANYNET": {"GROUP_WS": [8, 16, 32]}}, "not divisible by group_w 32"),
    ],
)
def test_bad_config_names_key(edit: dict, message: str, tmp_path: Path) -> None:
    config = pycls_config(FREE_SPEC, None)
    for section, values in edit.items():
        config[section] = {**config[section], **values}
        if section == "MODEL" and "NUM_CLASSES" not in values:
            del config[section]["NUM_CLASSES"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))

    with pytest.raises(ValueError, match=message) as caught:
        from_pycls_yaml(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("MODEL: [unclosed\n")

    with pytest.raises(ValueError, match=r"broken\.yaml is not valid YAML"):
        from_pycls_yaml(path)
