"""Markdown tables of architectures: one section per architecture, one table row per stage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from regnas.cli import count_text
from regnas.spec import AnyNetSpec, StageSpec


COLUMNS = (
    "stage",
    "depth",
    "width",
    "stride",
    "group width",
    "groups",
    "bottleneck ratio",
    "SE",
)


def to_markdown(documents: Sequence[Mapping[str, Any]], title: str) -> str:
    """Return architecture documents (see `regnas.archive`) as Markdown, one section each.

    Each section starts with a heading that names the study, the trial, the validation accuracy,
    the MFLOPs and the parameter count, followed by a table of the stages.
    """
    sections = [f"# {title}\n"]
    for document in documents:
        sections.append(_section(document))
    return "\n".join(sections)


def _section(document: Mapping[str, Any]) -> str:
    spec = AnyNetSpec.from_dict(document["anynet"])
    provenance = document.get("provenance") or {}
    metrics = document.get("metrics") or {}
    counts = document["complexity"]
    accuracy = metrics.get("val_accuracy")
    accuracy_text = f"{accuracy:.4f}" if isinstance(accuracy, (int, float)) else "unknown"
    lines = [
        f"## Study {provenance.get('study')!r}, trial {provenance.get('trial')}: "
        f"val_accuracy {accuracy_text}, {counts['flops'] / 1e6:.2f} MFLOPs, "
        f"{counts['params']:,} params",
        "",
        f"Input {count_text(spec.in_channels, 'channel')} at "
        f"{counts['image_size']}x{counts['image_size']}; "
        f"stem: 3x3 convolution to {spec.stem_w} channels, stride {spec.stem_stride}; "
        f"head: {spec.num_classes} classes.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + " --- |" * len(COLUMNS),
    ]
    for index, stage in enumerate(spec.stages, start=1):
        se = repr(stage.se_ratio) if stage.se_ratio else "off"
        cells = (
            index,
            stage.depth,
            stage.width,
            stage.stride,
            stage.group_w,
            stage.groups,
            repr(stage.bot_mul),
            se,
        )
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def parse_markdown_stages(text: str) -> list[tuple[StageSpec, ...]]:
    """Read the stage tables of a file written by `to_markdown`, one tuple of stages per table.

    Raises:
        ValueError: A row has the wrong number of cells or an invalid value, or its groups
            column disagrees with its widths; the message names the row.
    """
    tables: list[list[StageSpec]] = []
    header = "| " + " | ".join(COLUMNS) + " |"
    rows: list[StageSpec] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip() == header:
            rows = []
            tables.append(rows)
        elif rows is not None and line.startswith("|") and not line.startswith("| ---"):
            rows.append(_parse_row(line, number))
        elif not line.startswith("|"):
            rows = None
    return [tuple(table) for table in tables]


def _parse_row(line: str, number: int) -> StageSpec:
    cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
    if len(cells) != len(COLUMNS):
        raise ValueError(
            f"line {number}: expected {len(COLUMNS)} cells ({', '.join(COLUMNS)}), got {line!r}"
        )
    try:
        depth, width, stride, group_w, groups = (int(cell) for cell in cells[1:6])
        bot_mul = float(cells[6])
        se_ratio = 0.0 if cells[7] == "off" else float(cells[7])
        stage = StageSpec(depth, width, stride, group_w, bot_mul, se_ratio)
    except ValueError as error:
        raise ValueError(f"line {number}: invalid stage row {line!r}: {error}") from None
    if stage.groups != groups:
        raise ValueError(
            f"line {number}: groups is {groups}, but width {width}, bottleneck ratio {bot_mul} "
            f"and group width {group_w} give {stage.groups}"
        )
    return stage
