"""The RegNetX and RegNetY models of pycls's ImageNet model zoo, with pycls's exact complexity.

Each entry pairs a model's RegNet parameters with the flops, params and acts that pycls measured
for it. Sources, all in facebookresearch/pycls:

- Parameters: ``configs/dds_baselines/regnetx/RegNetX-*_dds_8gpu.yaml`` and
  ``configs/dds_baselines/regnety/RegNetY-*_dds_8gpu.yaml``, the config files that
  ``pycls/models/model_zoo.py`` lists for each zoo model. Keys these files leave out take the
  defaults of ``pycls/core/config.py``: ``BOT_MUL`` 1.0, ``STEM_W`` 32, ``STRIDE`` 2 and, for
  RegNetY (``SE_ON: True``), ``SE_R`` 0.25.
- Complexity: ``dev/model_complexity.json`` (created 2020-09-04), the reference values of
  pycls's complexity test ``dev/test_models.py``. pycls counts at ``TRAIN.IM_SIZE``, which is 224
  in these configs, with 3 input channels and 1000 classes. ``dev/model_zoo_tables.py`` rounds
  the same counts to one decimal for ``MODEL_ZOO.md``.

Neither source lists per-stage widths or depths. pycls computes them from the parameters when it
builds a model, so this table stores none. Every stage width, depth and group width enters the
exact flops, params and acts, so a wrong stage would change those counts.
"""

from __future__ import annotations

import dataclasses

from regnas.regnet import RegNetParams
from regnas.spec import AnyNetSpec


# The input and head of every zoo model: ImageNet images at pycls's training resolution.
IMAGE_SIZE = 224
IN_CHANNELS = 3
NUM_CLASSES = 1000

# pycls's RegNet stem (simple_stem_in) is a 3x3 convolution with stride 2 and STEM_W outputs.
STEM_W = 32
STEM_STRIDE = 2

FAMILIES = ("regnetx", "regnety")

# Every zoo name starts with its family's prefix, as in "RegNetX-200MF".
_PREFIXES = {"regnetx": "RegNetX-", "regnety": "RegNetY-"}

# RegNetY adds squeeze-excitation with pycls's default ratio, and RegNetX has none.
_SE_RATIOS = {"regnetx": 0.0, "regnety": 0.25}


def _family_of(name: str) -> str:
    return next(family for family, prefix in _PREFIXES.items() if name.startswith(prefix))


@dataclasses.dataclass(frozen=True)
class ZooModel:
    """One model of pycls's ImageNet zoo: its RegNet parameters and pycls's complexity figures.

    Attributes:
        name: pycls's model name, such as "RegNetX-200MF".
        regnet: The design parameters from the model's pycls config file.
        flops: Multiply-adds of one forward pass at `IMAGE_SIZE`, as pycls counts them.
        params: Parameters, counting 2 per BatchNorm channel as pycls does.
        acts: Output elements of every convolution and linear layer at `IMAGE_SIZE`.
    """

    name: str
    regnet: RegNetParams
    flops: int
    params: int
    acts: int

    def __post_init__(self) -> None:
        prefixes = tuple(_PREFIXES.values())
        if not isinstance(self.name, str) or not self.name.startswith(prefixes):
            raise ValueError(f"name must start with one of {list(prefixes)}, got {self.name!r}.")
        if not isinstance(self.regnet, RegNetParams):
            raise TypeError(f"regnet must be a RegNetParams, got {type(self.regnet).__name__}.")
        expected_se = _SE_RATIOS[self.family]
        if self.regnet.se_ratio != expected_se:
            raise ValueError(
                f"se_ratio of {self.name} must be {expected_se}, got {self.regnet.se_ratio}. "
                "RegNetY models use squeeze-excitation with ratio 0.25 and RegNetX models none."
            )
        for field in ("flops", "params", "acts"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field} must be a positive integer, got {value!r}.")

    @property
    def family(self) -> str:
        """The design space, "regnetx" or "regnety", read from the name."""
        return _family_of(self.name)

    def to_anynet(self) -> AnyNetSpec:
        """Expand the model with pycls's ImageNet stem, input channels and classes."""
        return self.regnet.to_anynet(
            stem_w=STEM_W,
            stem_stride=STEM_STRIDE,
            in_channels=IN_CHANNELS,
            num_classes=NUM_CLASSES,
        )


# Columns: name, depth, w0, wa, wm, group_w, flops, params, acts. Within each family the rows are
# ordered by flops.
_ROWS: tuple[tuple[str, int, int, float, float, int, int, int, int], ...] = (
    ("RegNetX-200MF", 13, 24, 36.44, 2.49, 8, 199_040_872, 2_684_792, 2_164_056),
    ("RegNetX-400MF", 22, 24, 24.48, 2.54, 16, 397_678_568, 5_157_512, 3_143_272),
    ("RegNetX-600MF", 16, 48, 36.97, 2.24, 24, 600_891_112, 6_196_040, 3_975_096),
    ("RegNetX-800MF", 16, 56, 35.73, 2.28, 16, 799_700_712, 7_259_656, 5_148_744),
    ("RegNetX-1.6GF", 18, 80, 34.01, 2.25, 24, 1_602_850_792, 9_190_136, 7_933_512),
    ("RegNetX-3.2GF", 25, 88, 26.31, 2.25, 48, 3_176_622_952, 15_296_552, 11_367_432),
    ("RegNetX-4.0GF", 23, 96, 38.65, 2.43, 40, 3_964_499_816, 22_118_248, 12_201_608),
    ("RegNetX-6.4GF", 17, 184, 60.83, 2.07, 56, 6_460_292_264, 26_209_256, 16_369_744),
    ("RegNetX-8.0GF", 23, 80, 49.56, 2.88, 120, 7_995_133_416, 39_572_648, 14_059_688),
    ("RegNetX-12GF", 19, 168, 73.36, 2.37, 112, 12_086_679_016, 46_106_056, 21_366_568),
    ("RegNetX-16GF", 22, 216, 55.59, 2.1, 128, 15_940_756_456, 54_278_536, 25_515_496),
    ("RegNetX-32GF", 23, 320, 69.86, 2.0, 168, 31_735_930_792, 107_811_560, 36_302_160),
    ("RegNetY-200MF", 13, 24, 36.44, 2.49, 8, 199_519_076, 3_162_996, 2_168_052),
    ("RegNetY-400MF", 16, 48, 27.89, 2.09, 8, 401_849_056, 4_344_144, 3_892_496),
    ("RegNetY-600MF", 15, 48, 32.54, 2.32, 16, 601_227_608, 6_055_160, 4_334_296),
    ("RegNetY-800MF", 14, 56, 38.84, 2.4, 16, 797_183_328, 6_263_168, 5_249_888),
    ("RegNetY-1.6GF", 27, 48, 20.71, 2.65, 24, 1_612_087_326, 11_202_430, 8_044_814),
    ("RegNetY-3.2GF", 21, 80, 42.63, 2.66, 24, 3_176_496_162, 19_436_338, 11_263_418),
    ("RegNetY-4.0GF", 22, 96, 31.41, 2.24, 64, 3_973_301_344, 20_646_656, 12_287_200),
    ("RegNetY-6.4GF", 25, 112, 33.22, 2.27, 72, 6_355_221_876, 30_583_252, 16_407_188),
    ("RegNetY-8.0GF", 17, 192, 76.82, 2.19, 56, 7_963_074_196, 39_180_068, 17_968_916),
    ("RegNetY-12GF", 19, 168, 73.36, 2.37, 112, 12_092_395_504, 51_822_544, 21_384_496),
    ("RegNetY-16GF", 18, 200, 106.23, 2.48, 112, 15_911_534_044, 83_590_140, 23_041_228),
    ("RegNetY-32GF", 20, 232, 115.89, 2.53, 232, 32_279_583_362, 145_046_770, 30_261_570),
)


def _build_zoo() -> dict[str, ZooModel]:
    zoo = {}
    for name, depth, w0, wa, wm, group_w, flops, params, acts in _ROWS:
        se_ratio = _SE_RATIOS[_family_of(name)]
        regnet = RegNetParams(depth=depth, w0=w0, wa=wa, wm=wm, group_w=group_w, se_ratio=se_ratio)
        zoo[name] = ZooModel(name=name, regnet=regnet, flops=flops, params=params, acts=acts)
    return zoo


# Every zoo model by name: RegNetX models, then RegNetY models, each from smallest to largest.
ZOO: dict[str, ZooModel] = _build_zoo()


def zoo_models(family: str) -> list[ZooModel]:
    """Return the zoo models of one family, "regnetx" or "regnety", from smallest to largest.

    Raises:
        ValueError: If `family` is not one of `FAMILIES`.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {list(FAMILIES)}, got {family!r}.")
    return [model for model in ZOO.values() if model.family == family]
