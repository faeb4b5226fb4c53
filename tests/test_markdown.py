"""Markdown stage tables: the header line, the columns, and a round trip of the stages."""

from __future__ import annotations

import pytest

from regnas.archive import architecture_document
from regnas.markdown import parse_markdown_stages, to_markdown
from regnas.regnet import RegNetParams
from regnas.spec import AnyNetSpec, StageSpec


FREE_SPEC = AnyNetSpec(
    stages=(
        StageSpec(depth=1, width=16, group_w=8, bot_mul=1.0, se_ratio=0.25),
        StageSpec(depth=3, width=32, group_w=4, bot_mul=0.25),
    ),
)
REGNET = RegNetParams(depth=6, w0=16, wa=34.25, wm=2.14, group_w=8, bot_mul=0.5)


def test_round_trip_of_two_sections() -> None:
    documents = [
        architecture_document(FREE_SPEC, None, 28, {"val_accuracy": 0.9}, {"trial": 4}),
        architecture_document(REGNET.to_anynet(), REGNET, 28, {}, {"trial": 9}),
    ]

    text = to_markdown(documents, "Two trials")

    assert parse_markdown_stages(text) == [FREE_SPEC.stages, REGNET.to_anynet().stages]
    assert text.startswith("# Two trials\n")
    assert text.count("\n## ") == 2


def test_header_names_trial_and_costs() -> None:
    document = architecture_document(
        FREE_SPEC, None, 28, {"val_accuracy": 0.91234}, {"study": "demo", "trial": 4}
    )
    flops = document["complexity"]["flops"]

    text = to_markdown([document], "One trial")

    header = next(line for line in text.splitlines() if line.startswith("## "))
    assert header.startswith("## Study 'demo', trial 4: val_accuracy 0.9123")
    assert f"{flops / 1e6:.2f} MFLOPs" in header
    assert f"{document['complexity']['params']:,} params" in header
    assert "| 1 | 1 | 16 | 2 | 8 | 2 | 1.0 | 0.25 |" in text
    assert "| 2 | 3 | 32 | 2 | 4 | 2 | 0.25 | off |" in text


def test_row_with_wrong_groups() -> None:
    text = to_markdown(
        [architecture_document(FREE_SPEC, None, 28, {}, {"trial": 1})], "One trial"
    ).replace("| 2 | 3 | 32 | 2 | 4 | 2 |", "| 2 | 3 | 32 | 2 | 4 | 5 |")

    with pytest.raises(ValueError, match=r"line \d+: groups is 5.*give 2"):
        parse_markdown_stages(text)
