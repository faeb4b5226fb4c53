"""The architecture file: a versioned JSON document that rebuilds a searched network exactly.

Layout (version 1), built-in JSON types only::

    {"format": "regnas.architecture", "version": 1,
     "anynet": {"in_channels", "num_classes", "stem_w", "stem_stride",
                "stages": [{"depth", "width", "stride", "group_w", "bot_mul", "se_ratio"}]},
     "regnet": {"depth", "w0", "wa", "wm", "group_w", "bot_mul", "se_ratio"} or null,
     "complexity": {"image_size", "flops", "params", "acts"},
     "metrics": {...}, "provenance": {...}}

`anynet` is authoritative. On load, `regnet` (when present) must expand to it and `complexity` must
match a recount, so a hand-edited file that contradicts itself is rejected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import json
from pathlib import Path
from typing import Any

from regnas.complexity import complexity
from regnas.regnet import RegNetParams
from regnas.spec import AnyNetSpec


FORMAT = "regnas.architecture"
VERSION = 1


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


def load_architecture(path: str | Path) -> Architecture:
    """Read and validate an architecture file.

    Raises:
        ValueError: The file is not valid JSON, has another format or version, misses a key, or
            describes an impossible or self-contradicting network; the message names the key.
        FileNotFoundError: The file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Architecture file {path} not found. Create one with "
            "'python -m regnas.export --study NAME --output FILE'."
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    try:
        return parse_architecture(document)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def parse_architecture(document: Any) -> Architecture:
    """Validate a decoded architecture document (see `load_architecture`)."""
    if not isinstance(document, Mapping):
        raise ValueError(f"expected a JSON object, got {type(document).__name__}")
    if document.get("format") != FORMAT:
        raise ValueError(f"'format' is {document.get('format')!r}, expected {FORMAT!r}")
    if document.get("version") != VERSION:
        raise ValueError(
            f"'version' is {document.get('version')!r}; this regnas reads version "
            f"{VERSION}. Upgrade regnas to read newer files."
        )
    for key in ("anynet", "regnet", "complexity"):
        if key not in document:
            raise ValueError(f"missing key {key!r}")
    spec = AnyNetSpec.from_dict(document["anynet"])
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


def _parse_regnet(data: Any, spec: AnyNetSpec) -> RegNetParams | None:
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise ValueError(f"'regnet' must be an object or null, got {data!r}")
    names = [field.name for field in dataclasses.fields(RegNetParams)]
    missing = [name for name in names if name not in data]
    if missing:
        raise ValueError(f"'regnet' is missing key(s) {missing}")
    try:
        regnet = RegNetParams(**{name: data[name] for name in names})
    except (TypeError, ValueError) as error:
        raise ValueError(f"invalid 'regnet': {error}") from None
    expanded = regnet.to_anynet(
        stem_w=spec.stem_w,
        stem_stride=spec.stem_stride,
        in_channels=spec.in_channels,
        num_classes=spec.num_classes,
    )
    if expanded != spec:
        raise ValueError(
            f"'regnet' expands to stage widths {expanded.stage_widths} and depths "
            f"{expanded.stage_depths}, but 'anynet' has {spec.stage_widths} and "
            f"{spec.stage_depths}; fix one of them or set 'regnet' to null"
        )
    return regnet


def _parse_complexity(data: Any, spec: AnyNetSpec) -> tuple[int, dict[str, int]]:
    if not isinstance(data, Mapping) or "image_size" not in data:
        raise ValueError(f"'complexity' must be an object with 'image_size', got {data!r}")
    image_size = data["image_size"]
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"'complexity.image_size' must be a positive integer, got {image_size!r}")
    counts = complexity(spec, image_size)
    for key, value in counts.items():
        if key in data and data[key] != value:
            raise ValueError(
                f"'complexity.{key}' is {data[key]!r}, but the architecture has "
                f"{value} at {image_size}x{image_size}"
            )
    return image_size, counts
