"""pycls configuration files: write an architecture as pycls's YAML and read one back.

Key names follow pycls's `pycls/core/config.py` (facebookresearch/pycls): ``MODEL.TYPE``,
``MODEL.NUM_CLASSES``, the ``REGNET`` section for networks generated from RegNet parameters, and
the ``ANYNET`` section with per-stage lists for free AnyNets. Only the model sections are written,
so pycls supplies its own defaults for training, data and everything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from regnas.regnet import RegNetParams
from regnas.spec import AnyNetSpec, StageSpec


# pycls's stems that regnas builds: both are a 3x3 convolution, BN and ReLU, with stride 1
# ("res_stem_cifar") or 2 ("simple_stem_in"). pycls has no stem with another stride.
STEM_TYPES = {1: "res_stem_cifar", 2: "simple_stem_in"}
BLOCK_TYPE = "res_bottleneck_block"


def pycls_config(spec: AnyNetSpec, regnet: RegNetParams | None) -> dict[str, Any]:
    """Return the pycls model configuration of `spec` as nested dicts of built-in types.

    A spec generated from `regnet` is written as ``MODEL.TYPE: regnet`` with the RegNet
    parameters; any other spec as ``MODEL.TYPE: anynet`` with per-stage lists.

    Raises:
        ValueError: The stem stride is not 1 or 2, or the stages mix squeeze-excitation ratios,
            which pycls cannot express.
    """
    if spec.stem_stride not in STEM_TYPES:
        raise ValueError(
            f"stem_stride is {spec.stem_stride}, but pycls has 3x3 stems with stride 1 "
            "(res_stem_cifar) or 2 (simple_stem_in) only. Export to JSON instead."
        )
    se_ratios = sorted({stage.se_ratio for stage in spec.stages})
    if len(se_ratios) > 1:
        raise ValueError(
            f"The stages use squeeze-excitation ratios {se_ratios}, but pycls has one SE_R for "
            "all stages. Export to JSON instead."
        )
    se_ratio = se_ratios[0]
    stem = {"STEM_TYPE": STEM_TYPES[spec.stem_stride], "STEM_W": spec.stem_w}
    se = {"SE_ON": se_ratio > 0, "SE_R": se_ratio}

    if regnet is not None:
        section = "REGNET"
        body = {
            **stem,
            "BLOCK_TYPE": BLOCK_TYPE,
            "STRIDE": 2,
            "DEPTH": regnet.depth,
            "W0": regnet.w0,
            "WA": regnet.wa,
            "WM": regnet.wm,
            "GROUP_W": regnet.group_w,
            "BOT_MUL": regnet.bot_mul,
            **se,
        }
    else:
        section = "ANYNET"
        body = {
            **stem,
            "BLOCK_TYPE": BLOCK_TYPE,
            "DEPTHS": [stage.depth for stage in spec.stages],
            "WIDTHS": [stage.width for stage in spec.stages],
            "STRIDES": [stage.stride for stage in spec.stages],
            "BOT_MULS": [stage.bot_mul for stage in spec.stages],
            "GROUP_WS": [stage.group_w for stage in spec.stages],
            **se,
        }
    model = {"TYPE": section.lower(), "NUM_CLASSES": spec.num_classes}
    return {"MODEL": model, section: body}


def to_pycls_yaml(document: Mapping[str, Any]) -> str:
    """Return an architecture document (see `regnas.archive`) as a pycls YAML configuration.

    A comment header records the study, the trial and the input channels, which pycls has no
    key for: pycls always builds for 3-channel input.
    """
    spec = AnyNetSpec.from_dict(document["anynet"])
    regnet = RegNetParams(**document["regnet"]) if document.get("regnet") else None
    provenance = document.get("provenance") or {}
    header = (
        f"# pycls model configuration written by regnas from study "
        f"{provenance.get('study')!r}, trial {provenance.get('trial')}.\n"
        f"# Input channels: {spec.in_channels} (pycls builds its stem for 3).\n"
    )
    return header + yaml.safe_dump(pycls_config(spec, regnet), sort_keys=False)


def from_pycls_yaml(path: str | Path, in_channels: int = 1) -> AnyNetSpec:
    """Read a pycls configuration (``MODEL.TYPE`` regnet or anynet) into an `AnyNetSpec`.

    Args:
        path: The YAML file.
        in_channels: Input channels of the network; pycls's files have no key for it.

    Raises:
        ValueError: The file is not YAML, its model type is neither regnet nor anynet, or a key
            is missing or invalid; the message names the file and the key.
    """
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from None
    try:
        return pycls_spec(config, in_channels)
    except (KeyError, TypeError, ValueError) as error:
        message = error.args[0] if isinstance(error, KeyError) else error
        raise ValueError(f"{path}: {message}") from None


def pycls_spec(config: Any, in_channels: int = 1) -> AnyNetSpec:
    """Build the `AnyNetSpec` of a decoded pycls configuration (see `from_pycls_yaml`)."""
    model_type = _get(config, "MODEL", "TYPE")
    if model_type not in ("regnet", "anynet"):
        raise ValueError(
            f"'MODEL.TYPE' is {model_type!r}; regnas reads 'regnet' and 'anynet' models only."
        )
    section = model_type.upper()
    stem_type = _get(config, section, "STEM_TYPE")
    strides = {name: stride for stride, name in STEM_TYPES.items()}
    if stem_type not in strides:
        raise ValueError(
            f"'{section}.STEM_TYPE' is {stem_type!r}; regnas builds {sorted(strides)} only."
        )
    block_type = config[section].get("BLOCK_TYPE", BLOCK_TYPE)
    if block_type != BLOCK_TYPE:
        raise ValueError(f"'{section}.BLOCK_TYPE' is {block_type!r}; regnas builds {BLOCK_TYPE}.")
    se_ratio = _get(config, section, "SE_R") if _get(config, section, "SE_ON") else 0.0
    network = {
        "stem_w": _get(config, section, "STEM_W"),
        "stem_stride": strides[stem_type],
        "in_channels": in_channels,
        "num_classes": _get(config, "MODEL", "NUM_CLASSES"),
    }

    if model_type == "regnet":
        stride = _get(config, section, "STRIDE")
        if stride != 2:
            raise ValueError(f"'REGNET.STRIDE' is {stride!r}; regnas builds RegNets with 2.")
        names = {"depth": "DEPTH", "w0": "W0", "wa": "WA", "wm": "WM", "group_w": "GROUP_W"}
        regnet = RegNetParams(
            **{name: _get(config, section, key) for name, key in names.items()},
            bot_mul=_get(config, section, "BOT_MUL"),
            se_ratio=se_ratio,
        )
        return regnet.to_anynet(**network)

    lists = [_get(config, section, key) for key in ("DEPTHS", "WIDTHS", "STRIDES", "BOT_MULS")]
    lists.append(_get(config, section, "GROUP_WS"))
    if len({len(values) for values in lists}) != 1:
        raise ValueError(
            "'ANYNET.DEPTHS', 'WIDTHS', 'STRIDES', 'BOT_MULS' and 'GROUP_WS' must have one "
            f"entry per stage, got lengths {[len(values) for values in lists]}."
        )
    stages = tuple(
        StageSpec(depth, width, stride, group_w, bot_mul, se_ratio)
        for depth, width, stride, bot_mul, group_w in zip(*lists, strict=True)
    )
    return AnyNetSpec(stages, **network)


def _get(config: Any, section: str, key: str) -> Any:
    if not isinstance(config, Mapping) or not isinstance(config.get(section), Mapping):
        raise ValueError(f"missing section '{section}' of a pycls configuration.")
    if key not in config[section]:
        raise ValueError(f"missing key '{section}.{key}'.")
    return config[section][key]
