"""Saved models: loading, prediction, the evaluate command and rejected files."""

from __future__ import annotations

import json
from pathlib import Path
import re
from typing import Any

from flax import serialization
import numpy as np
import pytest

import regnas
from regnas import data as data_lib
from regnas.archive import architecture_document, save_architecture
from regnas.checkpoint import CHECKPOINT_NAME
from regnas.engine import TrainConfig
from regnas.retrain import RunOptions, retrain
from regnas.spec import AnyNetSpec, StageSpec
from regnas.trained import MODEL_NAME, TrainedModel, load_trained

from conftest import run_module


SPEC = AnyNetSpec(stages=(StageSpec(1, 16),))


@pytest.fixture(scope="module")
def trained_run(idx_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A one-epoch run; returns its summary, whose run_dir contains the model."""
    directory = tmp_path_factory.mktemp("trained")
    config = save_architecture(
        directory / "one-stage.json", architecture_document(SPEC, None, 28, {}, {})
    )
    return retrain(
        str(config),
        TrainConfig(epochs=1, batch_size=64, crop_padding=2, flip=True, label_smoothing=0.1),
        data_dir=str(idx_dir),
        train_size=512,
        options=RunOptions(run_dir=directory / "run"),
    )


def test_evaluate_command_matches_summary(
    trained_run: dict[str, Any], idx_dir: Path, tmp_path: Path
) -> None:
    run_dir = trained_run["run_dir"]
    for target in (run_dir, str(Path(run_dir) / MODEL_NAME)):
        result = run_module(
            "regnas.evaluate", target, "--data-dir", str(idx_dir), "--json", cwd=tmp_path
        )

        assert result.returncode == 0, result.stderr
        output = json.loads(result.stdout)
        assert output["test_accuracy"] == trained_run["test_accuracy"]
        assert output["test_loss"] == trained_run["test_loss"]
        assert output["test_accuracy_mirrored"] == trained_run["test_accuracy_mirrored"]
        assert output["test_images"] == 300


def test_evaluate_command_prints_accuracy(
    trained_run: dict[str, Any], idx_dir: Path, tmp_path: Path
) -> None:
    result = run_module(
        "regnas.evaluate", trained_run["run_dir"], "--data-dir", str(idx_dir), cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    expected = (
        f"test accuracy {trained_run['test_accuracy']:.4f} "
        f"({trained_run['test_accuracy_mirrored']:.4f} averaged with mirrored images) "
        "on 300 images"
    )
    assert expected in result.stdout


def test_package_exports_load_trained(trained_run: dict[str, Any]) -> None:
    model = regnas.load_trained(trained_run["model"])

    assert isinstance(model, TrainedModel)
    assert model.spec == SPEC
    assert set(model.variables) == {"params", "batch_stats"}
    assert model.module.spec == SPEC


def test_predict_accepts_layouts(trained_run: dict[str, Any], idx_dir: Path) -> None:
    model = load_trained(trained_run["run_dir"])
    images, labels = data_lib.load_arrays(idx_dir, train=False)

    predictions = model.predict(images)

    assert float(np.mean(predictions == labels)) == trained_run["test_accuracy"]
    np.testing.assert_array_equal(model.predict(images[..., 0]), predictions)
    np.testing.assert_array_equal(model.predict(images.astype(np.float32) / 255), predictions)
    assert model.logits(images[:0]).shape == (0, 10)


def test_predict_accepts_one_image(trained_run: dict[str, Any], idx_dir: Path) -> None:
    model = load_trained(trained_run["run_dir"])
    images, _ = data_lib.load_arrays(idx_dir, train=False)
    batch_logits = model.logits(images[:1])

    np.testing.assert_array_equal(model.logits(images[0]), batch_logits[0])
    np.testing.assert_array_equal(model.logits(images[0, ..., 0]), batch_logits[0])
    assert model.predict(images[0]).shape == ()
    assert int(model.predict(images[0])) == int(np.argmax(batch_logits[0]))


def test_mirror_averages_flipped_scores(trained_run: dict[str, Any], idx_dir: Path) -> None:
    model = load_trained(trained_run["run_dir"])
    images, labels = data_lib.load_arrays(idx_dir, train=False)
    plain, mirrored = model.logits(images), model.logits(images[:, :, ::-1])

    averaged = model.logits(images, mirror=True)

    np.testing.assert_allclose(averaged, (plain + mirrored) / 2, rtol=1e-6, atol=1e-6)
    assert not np.allclose(averaged, plain)
    np.testing.assert_array_equal(model.logits(images[0], mirror=True), averaged[0])
    predictions = model.predict(images, mirror=True)
    assert float(np.mean(predictions == labels)) == trained_run["test_accuracy_mirrored"]
    with pytest.raises(TypeError, match="mirror must be True or False, got 'yes'"):
        model.predict(images, mirror="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((2, 32, 32), np.uint8), r"shape \(N, 28, 28\).* \(28, 28, 1\) for one image"),
        (np.zeros((5, 27, 28), np.uint8), r"got \(5, 27, 28\)\.$"),
        (np.zeros((2, 28, 28, 3), np.uint8), r"got \(2, 28, 28, 3\)"),
        (np.full((2, 28, 28), 255.0, np.float32), r"must be in \[0, 1\]"),
        (np.zeros((2, 28, 28), np.int32), r"uint8 or float.*np\.asarray\(images, np\.uint8\)"),
        ([[[0] * 28] * 28], r"got dtype int64\. Pass pixel values 0-255 as uint8"),
        (np.zeros((2, 28, 28), np.complex64), r"got dtype complex64\.$"),
        (np.full((28, 28), np.nan, np.float32), "must be finite"),
    ],
)
def test_predict_rejects_bad_images(
    trained_run: dict[str, Any], images: np.ndarray | list[Any], message: str
) -> None:
    model = load_trained(trained_run["run_dir"])

    with pytest.raises(ValueError, match=message):
        model.predict(images)


def test_missing_model_names_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape("python -m regnas.train")) as error:
        load_trained(tmp_path / "absent.msgpack")

    assert str(tmp_path / "absent.msgpack") in str(error.value)


def test_missing_model_command_fails(tmp_path: Path) -> None:
    result = run_module("regnas.evaluate", str(tmp_path), cwd=tmp_path)

    assert result.returncode == 2
    assert f"{tmp_path / MODEL_NAME} not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_other_files_are_not_models(trained_run: dict[str, Any], tmp_path: Path) -> None:
    run_dir = Path(trained_run["run_dir"])
    text = tmp_path / "notes.msgpack"
    text.write_text("not msgpack at all")

    checkpoint_message = "is not a saved model: its format is 'regnas.checkpoint'"
    with pytest.raises(ValueError, match=re.escape(checkpoint_message)):
        load_trained(run_dir / CHECKPOINT_NAME)
    with pytest.raises(ValueError, match=re.escape(f"{text} is not a saved model")) as error:
        load_trained(text)
    assert ".)" not in str(error.value)
    unnamed = tmp_path / "unnamed.msgpack"
    unnamed.write_bytes(serialization.msgpack_serialize({"weights": np.zeros(2)}))
    with pytest.raises(
        ValueError, match=re.escape("it has no format entry, expected 'regnas.model'")
    ):
        load_trained(unnamed)
    with pytest.raises(ValueError, match="is not a saved model: it is a JSON file") as error:
        load_trained(run_dir / "summary.json")
    assert "regnas.train --config FILE" in str(error.value)
    assert f"or the {MODEL_NAME} in it" in str(error.value)


def test_weights_must_fit_architecture(trained_run: dict[str, Any], tmp_path: Path) -> None:
    raw = serialization.msgpack_restore(Path(trained_run["model"]).read_bytes())
    wider = AnyNetSpec(stages=(StageSpec(1, 24),))
    raw["architecture"] = json.dumps(architecture_document(wider, None, 28, {}, {}))
    mismatched = tmp_path / "mismatched.msgpack"
    mismatched.write_bytes(serialization.msgpack_serialize(raw))

    with pytest.raises(ValueError, match="weights do not match its architecture") as error:
        load_trained(mismatched)

    assert str(mismatched) in str(error.value)
    assert "(24,)" in str(error.value)
