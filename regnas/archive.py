"""The architecture file: a versioned JSON document that rebuilds a searched network exactly.

Layout (version 1), built-in JSON types only::

    {"format": "regnas.architecture", "version": 1,
     "anynet": {"in_channels", "num_classes", "stem_w", "stem_stride",
                "stages": [{"depth", "width", "stride", "group_w", "bot_mul", "se_ratio"}]},
     "regnet": {"depth", "w0", "wa", "wm", "group_w", "bot_mul", "se_ratio"} or null,
     "complexity": {"image_size", "flops", "params", "acts"},
     "metrics": {...}, "provenance": {...}}

`anynet` is authoritative. On load, `regnet` (when present) must expand to it and `complexity` must
match a recount, so a hand-edited file that contradicts itself is rejected. Every key, its type and
unit, and the version rule are described in docs/architecture-format.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from regnas.complexity import complexity
from regnas.regnet import RegNetParams
from regnas.spec import AnyNetSpec


FORMAT = "regnas.architecture"
VERSION = 1
EXPORT_COMMAND = "python -m regnas.export --study NAME --output FILE"


class ArchitectureError(ValueError):
    """An architecture file or document that cannot be read.

    Attributes:
        key: Path of the offending key, such as ``anynet.stages[2].group_w``; None when the
            problem is the file as a whole.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A loaded architecture file.

    Attributes:
        spec: The network to build.
        regnet: The RegNet parameters it came from, or None for a free AnyNet.
        image_size: Input side that `complexity` refers to.
        complexity: FLOPs, parameters and activations at `image_size`.
        metrics: Results recorded with the architecture (validation accuracy, ...).
        provenance: Where it came from (study, trial, storage, seed, versions).
    """

    spec: AnyNetSpec
    regnet: RegNetParams | None
    image_size: int
    complexity: dict[str, int]
    metrics: dict[str, Any]
    provenance: dict[str, Any]


def architecture_document(
    spec: AnyNetSpec,
    regnet: RegNetParams | None,
    image_size: int,
    metrics: Mapping[str, Any],
    provenance: Mapping[str, Any],
) -> dict[str, Any]:
    """Return the JSON document for `spec`, with its complexity counted at `image_size`."""
    counts = complexity(spec, image_size)
    document = {
        "format": FORMAT,
        "version": VERSION,
        "anynet": spec.to_dict(),
        "regnet": regnet.to_dict() if regnet is not None else None,
        "complexity": {"image_size": image_size, **counts},
        "metrics": dict(metrics),
        "provenance": dict(provenance),
    }
    # Fail here, not in a reader: everything must survive a JSON round trip unchanged.
    if json.loads(json.dumps(document)) != document:
        raise TypeError("The architecture document contains values that JSON cannot represent.")
    return document


def save_architecture(
    path: str | Path, document: Mapping[str, Any] | Sequence[Mapping[str, Any]]
) -> Path:
    """Write a document, or a list of them, as indented JSON, creating parent directories."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


def load_architecture(path: str | Path, trial: int | None = None) -> Architecture:
    """Read and validate an architecture file.

    Args:
        path: A file written by ``python -m regnas.export``: one document, or a list of them
            (``--pareto``, ``--top-k``).
        trial: For a list, the trial number (``provenance.trial``) of the entry to load. For a
            single document it must match that document's trial, or be None.

    Raises:
        ArchitectureError: The file is not valid JSON, has another format or version, misses a
            key, describes an impossible or self-contradicting network, or is a list and `trial`
            does not pick one entry. The message names the file, the key and the value.
        FileNotFoundError: The file does not exist.
    """
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(
            f"{path} is a directory; pass an architecture JSON file, such as one written by "
            f"'{EXPORT_COMMAND}'."
        )
    if path.exists() and not path.is_file():
        raise FileNotFoundError(
            f"{path} is not a regular file. Pass an architecture JSON file, such as one written "
            f"by '{EXPORT_COMMAND}'."
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"Architecture file {path} not found. Create one with '{EXPORT_COMMAND}'."
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        saved = ""
        if path.suffix == ".msgpack":
            saved = (
                " A model.msgpack or checkpoint.msgpack of 'python -m regnas.train' contains "
                "weights, so pass the architecture file that run trained."
            )
        raise ArchitectureError(
            f"{path} is a binary file, not an architecture JSON.{saved} Export an architecture "
            f"with '{EXPORT_COMMAND}'."
        ) from None
    except json.JSONDecodeError as error:
        raise ArchitectureError(
            f"{path} is not valid JSON: {error}. Re-export it with '{EXPORT_COMMAND}'."
        ) from None
    try:
        prefix, entry = select_entry(document, trial)
        try:
            return parse_architecture(entry)
        except ArchitectureError as error:
            key = prefix + error.key if error.key else None
            message = str(error).replace(f"'{error.key}'", f"'{key}'") if key else str(error)
            raise ArchitectureError(message, key) from None
    except ArchitectureError as error:
        raise ArchitectureError(f"{path}: {error}", error.key) from None


def select_entry(document: Any, trial: int | None) -> tuple[str, Any]:
    """Pick the document of `trial` from a decoded file, with the key prefix of its position.

    A single document is returned as it is (prefix ``""``). From a list, the entry whose
    ``provenance.trial`` is `trial` is returned with the prefix ``[INDEX].``. A list of one
    entry, such as a Pareto front of one trial, needs no `trial`.
    """
    if trial is not None and (isinstance(trial, bool) or not isinstance(trial, int)):
        raise TypeError(f"trial must be an integer trial number or None, got {trial!r}.")
    if not isinstance(document, list):
        found = _trial_of(document)
        if trial is not None and found != trial:
            contents = f"only trial {found}" if found is not None else "one architecture"
            other = f", or pass --trial {found}" if found is not None else ""
            raise ArchitectureError(
                f"the file contains {contents}, not trial {trial}. Leave out --trial "
                f"(trial=None in Python){other}.",
                key="provenance.trial",
            )
        return "", document

    numbers = [_trial_of(entry) for entry in document]
    if not document:
        raise ArchitectureError(
            "the file contains an empty list of architectures. Re-export it with "
            f"'{EXPORT_COMMAND}'."
        )
    if trial is None and len(document) == 1:
        return "[0].", document[0]
    if trial is None:
        raise ArchitectureError(
            f"the file contains {len(document)} architectures, of trials {numbers}. Pick one "
            "with --trial N (trial=N in Python)."
        )
    if trial not in numbers:
        raise ArchitectureError(
            f"the file contains no architecture of trial {trial}, only trials {numbers}. "
            "Pass one of these with --trial N (trial=N in Python)."
        )
    index = numbers.index(trial)
    return f"[{index}].", document[index]


def _trial_of(entry: Any) -> Any:
    provenance = entry.get("provenance") if isinstance(entry, Mapping) else None
    return provenance.get("trial") if isinstance(provenance, Mapping) else None


def parse_architecture(document: Any) -> Architecture:
    """Validate a decoded architecture document (see `load_architecture`).

    Raises:
        ArchitectureError: Anything `load_architecture` rejects in a document; `key` names
            the offending key.
    """
    if not isinstance(document, Mapping):
        raise ArchitectureError(
            f"expected a JSON object, got {type(document).__name__}. Re-export the file with "
            f"'{EXPORT_COMMAND}'."
        )
    _check_header(document)
    for key in ("anynet", "regnet", "complexity"):
        if key not in document:
            raise ArchitectureError(
                f"missing key '{key}'. Re-export the file with '{EXPORT_COMMAND}'.", key
            )
    for key in ("metrics", "provenance"):
        value = document.get(key)
        if value is not None and not isinstance(value, Mapping):
            raise ArchitectureError(
                f"'{key}' is {value!r}; expected an object or null. Fix the value or delete "
                "the key, which is informational.",
                key,
            )

    spec = _parse_anynet(document["anynet"])
    regnet = _parse_regnet(document["regnet"], spec)
    image_size, counts = _parse_complexity(document["complexity"], spec)
    return Architecture(
        spec,
        regnet,
        image_size,
        counts,
        dict(document.get("metrics") or {}),
        dict(document.get("provenance") or {}),
    )


def _check_header(document: Mapping[str, Any]) -> None:
    found = document.get("format")
    if found != FORMAT:
        if "format" in document:
            problem = f"'format' is {found!r}"
        else:
            problem = "There is no 'format' entry"
        raise ArchitectureError(
            f"{problem}; expected {FORMAT!r}. This is not a regnas architecture "
            f"file; create one with '{EXPORT_COMMAND}'.",
            "format",
        )
    version = document.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ArchitectureError(
            f"'version' is {version!r}; expected the integer {VERSION}. Re-export the file "
            f"with '{EXPORT_COMMAND}'.",
            "version",
        )
    if version > VERSION:
        raise ArchitectureError(
            f"'version' is {version}, but this regnas reads versions up to {VERSION}. "
            "A newer regnas wrote the file: upgrade regnas to read it.",
            "version",
        )
    if version < 1:
        raise ArchitectureError(
            f"'version' is {version}, but versions start at 1. Re-export the file with "
            f"'{EXPORT_COMMAND}'.",
            "version",
        )


# A rule is a test of a value and what the value must be, as the error message states it.
_Rule = tuple[Callable[[Any], bool], str]


def _is_integer(value: Any, minimum: int) -> bool:
    # bool is an int subclass; True as a width is always a mistake.
    return not isinstance(value, bool) and isinstance(value, int) and value >= minimum


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


_POSITIVE_INTEGER: _Rule = (lambda value: _is_integer(value, 1), "an integer >= 1")
_POSITIVE_NUMBER: _Rule = (lambda value: _is_number(value) and value > 0, "a number > 0")
_SE_RATIO: _Rule = (
    lambda value: _is_number(value) and 0 <= value < 1,
    "a number in [0, 1), 0 for no squeeze-excitation",
)
_ANYNET_RULES: dict[str, _Rule] = {
    "in_channels": _POSITIVE_INTEGER,
    "num_classes": _POSITIVE_INTEGER,
    "stem_w": _POSITIVE_INTEGER,
    "stem_stride": _POSITIVE_INTEGER,
}
_STAGE_RULES: dict[str, _Rule] = {
    "depth": _POSITIVE_INTEGER,
    "width": _POSITIVE_INTEGER,
    "stride": _POSITIVE_INTEGER,
    "group_w": _POSITIVE_INTEGER,
    "bot_mul": _POSITIVE_NUMBER,
    "se_ratio": _SE_RATIO,
}
_REGNET_RULES: dict[str, _Rule] = {
    "depth": _POSITIVE_INTEGER,
    "w0": (
        lambda value: _is_integer(value, 8) and value % 8 == 0,
        "a positive multiple of 8",
    ),
    "wa": (lambda value: _is_number(value) and value >= 0, "a number >= 0"),
    "wm": (lambda value: _is_number(value) and value > 1, "a number > 1"),
    "group_w": _POSITIVE_INTEGER,
    "bot_mul": _POSITIVE_NUMBER,
    "se_ratio": _SE_RATIO,
}


def _check_keys(
    where: str, data: Any, rules: Mapping[str, _Rule], known_only: bool = True
) -> None:
    """Check that `data` is an object whose keys in `rules` exist and obey their rule.

    With `known_only`, a key outside `rules` is an error too: in the sections that define the
    network, an unknown key is most likely a misspelled one whose value would be ignored.
    """
    if not isinstance(data, Mapping):
        raise ArchitectureError(
            f"'{where}' is {data!r}; expected an object with keys {list(rules)}.", where
        )
    unknown = [key for key in data if key not in rules]
    if known_only and unknown:
        path = f"{where}.{unknown[0]}"
        raise ArchitectureError(
            f"unknown key '{path}' (value {data[unknown[0]]!r}); the keys of '{where}' are "
            f"{list(rules)}. Fix its spelling or remove it.",
            path,
        )
    for key, (valid, expected) in rules.items():
        path = f"{where}.{key}"
        if key not in data:
            raise ArchitectureError(
                f"missing key '{path}', which must be {expected}. Add it, or re-export the "
                f"file with '{EXPORT_COMMAND}'.",
                path,
            )
        if not valid(data[key]):
            raise ArchitectureError(
                f"'{path}' is {data[key]!r}; it must be {expected}. Fix the value, or "
                f"re-export the file with '{EXPORT_COMMAND}'.",
                path,
            )


def _parse_anynet(data: Any) -> AnyNetSpec:
    _check_keys("anynet", data, {**_ANYNET_RULES, "stages": (lambda _: True, "a list")})
    stages = data["stages"]
    if not isinstance(stages, list) or not stages:
        raise ArchitectureError(
            f"'anynet.stages' is {stages!r}; it must be a non-empty list of stage objects.",
            "anynet.stages",
        )
    for index, stage in enumerate(stages):
        where = f"anynet.stages[{index}]"
        _check_keys(where, stage, _STAGE_RULES)
        inner = round(stage["width"] * stage["bot_mul"])
        if inner % stage["group_w"]:
            raise ArchitectureError(
                f"'{where}.group_w' is {stage['group_w']!r}, but it must divide the bottleneck "
                f"width {inner} (width {stage['width']} x bot_mul {stage['bot_mul']}). Use a "
                f"group_w that divides {inner}, such as {math.gcd(inner, stage['group_w'])}, "
                "or change the width.",
                f"{where}.group_w",
            )
    try:
        return AnyNetSpec.from_dict(data)
    except (TypeError, ValueError) as error:
        # The checks above mirror AnyNetSpec's, so this is a rule they do not know yet.
        raise ArchitectureError(f"invalid 'anynet': {error}", "anynet") from None


def _parse_regnet(data: Any, spec: AnyNetSpec) -> RegNetParams | None:
    if data is None:
        return None
    _check_keys("regnet", data, _REGNET_RULES)
    try:
        regnet = RegNetParams(**{name: data[name] for name in _REGNET_RULES})
        expanded = regnet.to_anynet(
            stem_w=spec.stem_w,
            stem_stride=spec.stem_stride,
            in_channels=spec.in_channels,
            num_classes=spec.num_classes,
        )
    except (TypeError, ValueError) as error:
        raise ArchitectureError(f"invalid 'regnet': {error}", "regnet") from None
    if expanded != spec:
        raise ArchitectureError(
            f"'regnet' expands to stage widths {expanded.stage_widths} and depths "
            f"{expanded.stage_depths}, but 'anynet' has {spec.stage_widths} and "
            f"{spec.stage_depths}. Fix one of them, or set 'regnet' to null.",
            "regnet",
        )
    return regnet


def _parse_complexity(data: Any, spec: AnyNetSpec) -> tuple[int, dict[str, int]]:
    _check_keys("complexity", data, {"image_size": _POSITIVE_INTEGER}, known_only=False)
    image_size = data["image_size"]
    counts = complexity(spec, image_size)
    for key, value in counts.items():
        if key in data and data[key] != value:
            raise ArchitectureError(
                f"'complexity.{key}' is {data[key]!r}, but the architecture has {value} at "
                f"{image_size}x{image_size}. Set it to {value} or delete it; it is recounted "
                "on load.",
                f"complexity.{key}",
            )
    return image_size, counts
