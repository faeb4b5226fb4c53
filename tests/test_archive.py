"""The architecture file: validation on load, lists of documents, and the Python API."""

from __future__ import annotations

from collections.abc import Callable
import contextlib
import json
from pathlib import Path
import sqlite3
from typing import Any

import jax
import numpy as np
import pytest

import regnas
from regnas.archive import ArchitectureError, architecture_document, save_architecture
from regnas.models import AnyNet, init_variables
from regnas.regnet import RegNetParams
from regnas.spec import AnyNetSpec, StageSpec


FREE_SPEC = AnyNetSpec(
    stages=(
        StageSpec(depth=1, width=16, group_w=8, bot_mul=1.0),
        StageSpec(depth=2, width=32, group_w=16, bot_mul=0.5, se_ratio=0.25),
        StageSpec(depth=1, width=48, stride=1, group_w=24, bot_mul=1.0),
    ),
    stem_w=8,
)
REGNET = RegNetParams(depth=6, w0=16, wa=34.25, wm=2.14, group_w=8, bot_mul=0.5)


def free_document(trial: int = 3) -> dict[str, Any]:
    return architecture_document(FREE_SPEC, None, 28, {"val_accuracy": 0.9}, {"trial": trial})


def regnet_document(trial: int = 4) -> dict[str, Any]:
    spec = REGNET.to_anynet()
    return architecture_document(spec, REGNET, 28, {"val_accuracy": 0.8}, {"trial": trial})


def _parent(document: dict[str, Any], path: list[Any]) -> Any:
    target: Any = document
    for key in path[:-1]:
        target = target[key]
    return target


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        _parent(document, path)[path[-1]] = value

    return edit


def _delete(path: list[Any]) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        del _parent(document, path)[path[-1]]

    return edit


STAGES = ["anynet", "stages"]
# Each case: an edit of a valid document, the key the error must name, and text of its message
# (the bad value as Python prints it, and the fix).
BAD_FILES = {
    "wrong format": (_set(["format"], "pycls"), "format", ["'pycls'", "regnas.export"]),
    "no format": (_delete(["format"]), "format", ["no 'format' entry", "regnas.export"]),
    "newer version": (_set(["version"], 2), "version", ["is 2", "upgrade regnas"]),
    "older version": (_set(["version"], 0), "version", ["is 0", "Re-export"]),
    "version as text": (_set(["version"], "1"), "version", ["'1'", "the integer 1"]),
    "missing section": (_delete(["complexity"]), "complexity", ["missing key", "Re-export"]),
    "missing stage key": (
        _delete([*STAGES, 2, "group_w"]),
        "anynet.stages[2].group_w",
        ["missing key", "an integer >= 1"],
    ),
    "width as text": (
        _set([*STAGES, 0, "width"], "16"),
        "anynet.stages[0].width",
        ["'16'", "an integer >= 1"],
    ),
    "zero depth": (
        _set([*STAGES, 1, "depth"], 0),
        "anynet.stages[1].depth",
        ["is 0", "an integer >= 1"],
    ),
    "boolean stem width": (_set(["anynet", "stem_w"], True), "anynet.stem_w", ["True"]),
    "indivisible group width": (
        _set([*STAGES, 2, "group_w"], 32),
        "anynet.stages[2].group_w",
        ["is 32", "bottleneck width 48", "such as 16"],
    ),
    "se ratio above one": (
        _set([*STAGES, 1, "se_ratio"], 1.5),
        "anynet.stages[1].se_ratio",
        ["1.5", "[0, 1)"],
    ),
    "empty stage list": (_set([*STAGES], []), "anynet.stages", ["[]", "non-empty list"]),
    "stage not an object": (_set([*STAGES, 0], 16), "anynet.stages[0]", ["is 16", "object"]),
    "wrong flops": (
        _set(["complexity", "flops"], 1),
        "complexity.flops",
        ["is 1", "Set it to"],
    ),
    "zero image size": (
        _set(["complexity", "image_size"], 0),
        "complexity.image_size",
        ["is 0", "an integer >= 1"],
    ),
    "metrics as list": (_set(["metrics"], [0.9]), "metrics", ["[0.9]", "informational"]),
    "misspelled stem key": (
        _set(["anynet", "stem_wdith"], 3),
        "anynet.stem_wdith",
        ["unknown key", "value 3", "Fix its spelling"],
    ),
    "misspelled stage key": (
        _set([*STAGES, 1, "widht"], 64),
        "anynet.stages[1].widht",
        ["unknown key", "'width'"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES), ids=list(BAD_FILES))
def test_bad_file_names_key(case: str, tmp_path: Path) -> None:
    edit, key, fragments = BAD_FILES[case]
    document = free_document()
    edit(document)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))

    with pytest.raises(ArchitectureError) as caught:
        regnas.load_architecture(path)

    message = str(caught.value)
    assert caught.value.key == key
    assert message.startswith(f"{path}: ")
    assert f"'{key}'" in message
    for fragment in fragments:
        assert fragment in message


BAD_REGNET = {
    "negative slope": (_set(["regnet", "wa"], -1.0), "regnet.wa", ["-1.0", "a number >= 0"]),
    "unaligned w0": (_set(["regnet", "w0"], 12), "regnet.w0", ["is 12", "multiple of 8"]),
    "missing wm": (_delete(["regnet", "wm"]), "regnet.wm", ["missing key", "a number > 1"]),
    "contradicts anynet": (_set(["regnet", "depth"], 9), "regnet", ["expands to", "null"]),
}


@pytest.mark.parametrize("case", list(BAD_REGNET), ids=list(BAD_REGNET))
def test_bad_regnet_names_key(case: str, tmp_path: Path) -> None:
    edit, key, fragments = BAD_REGNET[case]
    document = regnet_document()
    edit(document)
    path = save_architecture(tmp_path / "bad.json", document)

    with pytest.raises(ArchitectureError) as caught:
        regnas.load_architecture(path)

    assert caught.value.key == key
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_invalid_json_names_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"format": ')

    with pytest.raises(ArchitectureError, match=r"broken\.json is not valid JSON"):
        regnas.load_architecture(path)


def test_saved_model_is_not_an_architecture(tmp_path: Path) -> None:
    from regnas.models import build_model, init_variables
    from regnas.trained import save_model

    spec = regnas.AnyNetSpec(stages=(regnas.StageSpec(1, 16),))
    path = tmp_path / "model.msgpack"
    variables = init_variables(build_model(spec), 0, (1, 28, 28, 1))
    save_model(path, architecture_document(spec, None, 28, {}, {}), variables)

    with pytest.raises(
        ArchitectureError,
        match=r"model\.msgpack is a binary file.*contains weights.*regnas\.export",
    ):
        regnas.load_architecture(path)
    database = tmp_path / "study.db"
    with contextlib.closing(sqlite3.connect(database)) as connection:
        connection.execute("CREATE TABLE trials (number INTEGER)")
    with pytest.raises(ArchitectureError) as error:
        regnas.load_architecture(database)
    assert "study.db is a binary file, not an architecture JSON. Export" in str(error.value)


def test_device_file_is_not_an_architecture() -> None:
    with pytest.raises(FileNotFoundError, match=r"/dev/null is not a regular file"):
        regnas.load_architecture("/dev/null")


def test_missing_file_names_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"absent\.json not found.*regnas\.export"):
        regnas.load_architecture(tmp_path / "absent.json")
    with pytest.raises(FileNotFoundError, match=r"is a directory; pass an architecture JSON file"):
        regnas.load_architecture(tmp_path)


def test_json_round_trip_keeps_spec(tmp_path: Path) -> None:
    for document, spec, regnet in (
        (free_document(), FREE_SPEC, None),
        (regnet_document(), REGNET.to_anynet(), REGNET),
    ):
        path = save_architecture(tmp_path / "one.json", document)

        architecture = regnas.load_architecture(path)

        assert architecture.spec == spec
        assert architecture.regnet == regnet
        assert architecture.image_size == 28
        assert architecture.complexity == regnas.complexity(spec, 28)
        assert architecture.metrics == document["metrics"]


def test_list_needs_trial(tmp_path: Path) -> None:
    path = save_architecture(tmp_path / "front.json", [free_document(3), regnet_document(7)])

    with pytest.raises(ArchitectureError, match=r"trials \[3, 7\]\. Pick one with --trial N"):
        regnas.load_architecture(path)
    with pytest.raises(ArchitectureError, match=r"no architecture of trial 5.*\[3, 7\]"):
        regnas.load_architecture(path, trial=5)

    assert regnas.load_architecture(path, trial=7).regnet == REGNET
    assert regnas.load_architecture(path, trial=3).spec == FREE_SPEC


def test_list_of_one_needs_no_trial(tmp_path: Path) -> None:
    path = save_architecture(tmp_path / "front.json", [regnet_document(7)])

    assert regnas.load_architecture(path).regnet == REGNET


def test_list_error_names_entry_key(tmp_path: Path) -> None:
    second = regnet_document(7)
    second["anynet"]["stages"][0]["depth"] = -1
    path = save_architecture(tmp_path / "front.json", [free_document(3), second])

    with pytest.raises(ArchitectureError) as caught:
        regnas.load_architecture(path, trial=7)

    assert caught.value.key == "[1].anynet.stages[0].depth"
    assert "'[1].anynet.stages[0].depth' is -1" in str(caught.value)


def test_single_document_checks_trial(tmp_path: Path) -> None:
    path = save_architecture(tmp_path / "best.json", free_document(3))

    assert regnas.load_architecture(path, trial=3).spec == FREE_SPEC
    with pytest.raises(ArchitectureError, match="contains only trial 3, not trial 4"):
        regnas.load_architecture(path, trial=4)
    with pytest.raises(TypeError, match="trial must be an integer"):
        regnas.load_architecture(path, trial="3")  # type: ignore[arg-type]


def test_trial_of_document_without_one(tmp_path: Path) -> None:
    document = architecture_document(FREE_SPEC, None, 28, {}, {})
    path = save_architecture(tmp_path / "arch.json", document)

    with pytest.raises(ArchitectureError) as caught:
        regnas.load_architecture(path, trial=5)

    assert "contains one architecture, not trial 5" in str(caught.value)
    assert "--trial None" not in str(caught.value)


def test_build_model_from_file(tmp_path: Path) -> None:
    path = save_architecture(tmp_path / "best.json", free_document())

    architecture = regnas.load_architecture(path)
    from_file = regnas.build_model(architecture)
    from_spec = regnas.build_model(FREE_SPEC)

    assert isinstance(from_file, AnyNet)
    assert from_file.spec == FREE_SPEC
    variables = init_variables(from_spec, seed=0, input_shape=(1, 28, 28, 1))
    images = jax.random.normal(jax.random.key(1), (2, 28, 28, 1))
    logits = from_file.apply(variables, images)
    assert logits.shape == (2, 10)
    np.testing.assert_array_equal(logits, from_spec.apply(variables, images))


def test_build_model_rejects_path(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"AnyNetSpec or the Architecture.*got PosixPath"):
        regnas.build_model(tmp_path / "best.json")  # type: ignore[arg-type]
