"""Retraining runs: checkpoints, exact resume, the saved model and the summary file."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from flax import serialization
import jax
import numpy as np
import pytest

from regnas import data as data_lib
from regnas import retrain as retrain_lib
from regnas.archive import architecture_document, save_architecture
from regnas.checkpoint import CHECKPOINT_NAME, checkpoint_lock
from regnas.complexity import complexity
from regnas.engine import TrainConfig
from regnas.retrain import RunOptions, retrain
from regnas.spec import AnyNetSpec, StageSpec
from regnas.trained import MODEL_NAME, load_trained

from conftest import run_module


SPEC = AnyNetSpec(stages=(StageSpec(1, 16), StageSpec(1, 32)))
# Every part of the recipe is on, so that resuming has to restore all of it.
RECIPE = TrainConfig(
    epochs=2, batch_size=64, crop_padding=2, flip=True, label_smoothing=0.1, ema_decay=0.9
)


@pytest.fixture
def architecture(tmp_path: Path) -> Path:
    document = architecture_document(SPEC, None, 28, {}, {})
    return save_architecture(tmp_path / "tiny.json", document)


def run(
    architecture: Path, idx_dir: Path, run_dir: Path, config: TrainConfig = RECIPE, **options: Any
) -> dict[str, Any]:
    return retrain(
        str(architecture),
        config,
        data_dir=str(idx_dir),
        train_size=512,
        options=RunOptions(run_dir=run_dir, **options),
    )


def saved_leaves(model_file: Path) -> list[np.ndarray]:
    raw = serialization.msgpack_restore(model_file.read_bytes())
    return jax.tree_util.tree_leaves(raw["variables"])


def test_resume_matches_uninterrupted_run(
    architecture: Path, idx_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = run(architecture, idx_dir, tmp_path / "straight")

    real_save = retrain_lib.save_checkpoint

    def save_then_stop(path: Path, trainer: Any, *args: Any) -> None:
        real_save(path, trainer, *args)
        raise KeyboardInterrupt("stopped after the first checkpoint")

    monkeypatch.setattr(retrain_lib, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run(architecture, idx_dir, tmp_path / "resumed")
    assert (tmp_path / "resumed" / CHECKPOINT_NAME).is_file()
    assert not (tmp_path / "resumed" / MODEL_NAME).exists()
    monkeypatch.setattr(retrain_lib, "save_checkpoint", real_save)
    resumed = run(architecture, idx_dir, tmp_path / "resumed")

    assert resumed["resumed_after_epoch"] == 1
    assert straight["resumed_after_epoch"] == 0
    assert resumed["test_accuracy"] == straight["test_accuracy"]
    assert resumed["test_loss"] == straight["test_loss"]
    assert resumed["test_accuracy_without_ema"] == straight["test_accuracy_without_ema"]
    for key in ("epoch", "train_loss", "train_accuracy"):
        assert [epoch[key] for epoch in resumed["history"]] == [
            epoch[key] for epoch in straight["history"]
        ]
    want = saved_leaves(tmp_path / "straight" / MODEL_NAME)
    got = saved_leaves(tmp_path / "resumed" / MODEL_NAME)
    assert len(want) == len(got) > 0
    for expected, actual in zip(want, got, strict=True):
        np.testing.assert_array_equal(actual, expected)


def test_augmentation_changes_training(architecture: Path, idx_dir: Path, tmp_path: Path) -> None:
    plain = TrainConfig(epochs=1, batch_size=64)
    augmented = TrainConfig(epochs=1, batch_size=64, crop_padding=2, flip=True)

    first = run(architecture, idx_dir, tmp_path / "plain", plain)
    second = run(architecture, idx_dir, tmp_path / "augmented", augmented)

    assert first["history"][0]["train_loss"] != second["history"][0]["train_loss"]


def test_changed_setting_keeps_checkpoint(
    architecture: Path, idx_dir: Path, tmp_path: Path
) -> None:
    config = TrainConfig(epochs=1, batch_size=64)
    run(architecture, idx_dir, tmp_path / "run", config)
    checkpoint = tmp_path / "run" / CHECKPOINT_NAME
    before = checkpoint.read_bytes()

    with pytest.raises(ValueError, match=r"with --lr 0\.1, but this run has --lr 0\.2") as error:
        run(architecture, idx_dir, tmp_path / "run", TrainConfig(epochs=1, batch_size=64, lr=0.2))

    assert "--fresh" in str(error.value)
    assert "--checkpoint-dir" in str(error.value)
    assert str(checkpoint) in str(error.value)
    assert checkpoint.read_bytes() == before


def test_checkpoint_without_precision_resumes_in_float32(
    architecture: Path, idx_dir: Path, tmp_path: Path
) -> None:
    run(architecture, idx_dir, tmp_path / "run", TrainConfig(epochs=1, batch_size=64))
    checkpoint = tmp_path / "run" / CHECKPOINT_NAME
    # Checkpoints written before the precision setting existed do not store it.
    raw = serialization.msgpack_restore(checkpoint.read_bytes())
    settings = json.loads(raw["settings"])
    del settings["precision"]
    raw["settings"] = json.dumps(settings)
    checkpoint.write_bytes(serialization.msgpack_serialize(raw))
    before = checkpoint.read_bytes()

    with pytest.raises(
        ValueError, match='with --precision "float32", but this run has --precision "bfloat16"'
    ):
        run(
            architecture,
            idx_dir,
            tmp_path / "run",
            TrainConfig(epochs=1, batch_size=64, precision="bfloat16"),
        )
    assert checkpoint.read_bytes() == before

    # The same float32 run resumes: its one epoch is done, so nothing is trained again.
    resumed = run(architecture, idx_dir, tmp_path / "run", TrainConfig(epochs=1, batch_size=64))
    assert [entry["epoch"] for entry in resumed["history"]] == [1]


def test_changed_architecture_keeps_checkpoint(
    architecture: Path, idx_dir: Path, tmp_path: Path
) -> None:
    config = TrainConfig(epochs=1, batch_size=64)
    run(architecture, idx_dir, tmp_path / "run", config)
    wider = AnyNetSpec(stages=(StageSpec(1, 24),))
    other = save_architecture(
        tmp_path / "wider.json", architecture_document(wider, None, 28, {}, {})
    )

    with pytest.raises(ValueError, match="written with architecture = "):
        run(other, idx_dir, tmp_path / "run", config)
    other_batch = TrainConfig(epochs=1, batch_size=32)
    with pytest.raises(ValueError, match="--batch-size 64, but this run has --batch-size 32"):
        run(architecture, idx_dir, tmp_path / "run", other_batch)
    with pytest.raises(ValueError, match="--train-size 512, but this run has --train-size 256"):
        retrain(
            str(architecture),
            config,
            data_dir=str(idx_dir),
            train_size=256,
            options=RunOptions(run_dir=tmp_path / "run"),
        )

    assert (tmp_path / "run" / CHECKPOINT_NAME).is_file()


def test_fresh_starts_over(architecture: Path, idx_dir: Path, tmp_path: Path) -> None:
    run(architecture, idx_dir, tmp_path / "run", TrainConfig(epochs=1, batch_size=64))
    config = TrainConfig(epochs=1, batch_size=64, lr=0.05)

    summary = run(architecture, idx_dir, tmp_path / "run", config, fresh=True)

    assert summary["resumed_after_epoch"] == 0
    assert summary["train_config"]["lr"] == 0.05
    # The new checkpoint now matches the new settings, so the same command resumes.
    assert run(architecture, idx_dir, tmp_path / "run", config)["resumed_after_epoch"] == 1


def test_finished_run_reruns_without_compiling(
    architecture: Path, idx_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = TrainConfig(epochs=1, batch_size=64)
    first = run(architecture, idx_dir, tmp_path / "run", config)

    def fail_on_compile(self: Any) -> float:
        raise AssertionError("a finished run compiled its train step again")

    monkeypatch.setattr(retrain_lib.Trainer, "compile", fail_on_compile)
    again = run(architecture, idx_dir, tmp_path / "run", config)

    assert again["resumed_after_epoch"] == 1
    assert again["compile_seconds"] == 0.0
    assert again["test_accuracy"] == first["test_accuracy"]
    assert again["history"] == first["history"]


def test_checkpoint_dir_option(architecture: Path, idx_dir: Path, tmp_path: Path) -> None:
    config = TrainConfig(epochs=1, batch_size=64)

    run(architecture, idx_dir, tmp_path / "run", config, checkpoint_dir=tmp_path / "ckpt")

    assert (tmp_path / "ckpt" / CHECKPOINT_NAME).is_file()
    assert not (tmp_path / "run" / CHECKPOINT_NAME).exists()


def test_summary_file_matches_result(
    architecture: Path, idx_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = TrainConfig(epochs=1, batch_size=64)
    caplog.set_level(logging.INFO, logger="regnas")

    summary = run(architecture, idx_dir, tmp_path / "run", config, eval_every_epoch=True)

    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == summary
    assert summary["config"] == str(architecture)
    assert summary["architecture"] == SPEC.to_dict()
    assert summary["params"] == complexity(SPEC, 28)["params"]
    assert summary["train_images"] == 512
    assert summary["images_per_second"] > 0
    assert summary["versions"]["jax"] == jax.__version__
    assert [epoch["epoch"] for epoch in summary["history"]] == [1]
    assert 0.0 <= summary["history"][0]["test_accuracy"] <= 1.0
    assert "test_accuracy_without_ema" not in summary
    test_images = len(data_lib.load_arrays(idx_dir, train=False)[1])
    assert f"Evaluating the saved model on {test_images} test images" in caplog.text


def test_saved_model_reproduces_test_accuracy(
    architecture: Path, idx_dir: Path, tmp_path: Path
) -> None:
    summary = run(architecture, idx_dir, tmp_path / "run")
    images, labels = data_lib.load_arrays(idx_dir, train=False)

    model = load_trained(tmp_path / "run")
    predictions = model.predict(images)

    assert model.spec == SPEC
    assert predictions.shape == (len(labels),)
    assert float(np.mean(predictions == labels)) == summary["test_accuracy"]


def test_unreadable_checkpoint_explains_fix(
    architecture: Path, idx_dir: Path, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "run" / CHECKPOINT_NAME
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"\xc1 not msgpack")
    config = TrainConfig(epochs=1, batch_size=64)

    with pytest.raises(ValueError, match="is not a training checkpoint") as error:
        run(architecture, idx_dir, tmp_path / "run", config)

    assert str(checkpoint) in str(error.value)
    assert "--fresh" in str(error.value)
    assert checkpoint.read_bytes() == b"\xc1 not msgpack"
    assert run(architecture, idx_dir, tmp_path / "run", config, fresh=True)["epochs"] == 1


def test_concurrent_run_is_rejected(architecture: Path, idx_dir: Path, tmp_path: Path) -> None:
    config = TrainConfig(epochs=1, batch_size=64)

    with (
        checkpoint_lock(tmp_path / "run"),
        pytest.raises(ValueError, match="Another run") as error,
    ):
        run(architecture, idx_dir, tmp_path / "run", config)

    assert str(tmp_path / "run") in str(error.value)
    assert not (tmp_path / "run" / CHECKPOINT_NAME).exists()
    # The lock ends with the run that held it.
    assert run(architecture, idx_dir, tmp_path / "run", config)["epochs"] == 1


def test_trial_picks_list_entry(idx_dir: Path, tmp_path: Path) -> None:
    other = AnyNetSpec(stages=(StageSpec(1, 8, group_w=4),))
    listing = save_architecture(
        tmp_path / "top2.json",
        [
            architecture_document(SPEC, None, 28, {}, {"trial": 3}),
            architecture_document(other, None, 28, {}, {"trial": 7}),
        ],
    )
    config = TrainConfig(epochs=1, batch_size=64)

    with pytest.raises(ValueError, match=r"trial=") as error:
        retrain(str(listing), config, data_dir=str(idx_dir), train_size=128)
    assert "3" in str(error.value)
    assert "7" in str(error.value)

    summary = retrain(
        str(listing),
        config,
        data_dir=str(idx_dir),
        train_size=128,
        options=RunOptions(run_dir=tmp_path / "run"),
        trial=7,
    )
    assert summary["params"] == complexity(other, 28)["params"]
    assert load_trained(tmp_path / "run").spec == other
    assert retrain_lib.default_run_dir(listing, 7) == Path("runs") / "top2-trial7"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "error: --epochs must be a positive integer, got 0."),
        (["--batch-size", "-1"], "error: --batch-size must be a positive integer, got -1."),
        (["--lr", "nan"], "error: --lr must be a finite number >= 0, got nan."),
        (["--crop-padding", "9"], "error: --crop-padding must be an integer in [0, 8]"),
        (["--label-smoothing", "1"], "error: --label-smoothing must be in [0, 1), got 1.0."),
        (["--ema-decay", "-0.5"], "error: --ema-decay must be in [0, 1), got -0.5."),
        # Before the data is read: the data directory does not exist.
        (
            ["--train-size", "0", "--data-dir", "absent"],
            "error: --train-size must be a positive integer, got 0.",
        ),
    ],
)
def test_bad_recipe_flag_is_named(
    architecture: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_module("regnas.train", "--config", str(architecture), *args, cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_run_dir_that_is_a_file_fails_first(
    architecture: Path, idx_dir: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")

    with pytest.raises(ValueError, match=f"--run-dir {blocker} is a file; pass a directory."):
        run(architecture, idx_dir, blocker)


def test_other_image_size_fails_before_training(idx_dir: Path, tmp_path: Path) -> None:
    config = save_architecture(
        tmp_path / "at32.json", architecture_document(SPEC, None, 32, {}, {})
    )

    with pytest.raises(ValueError, match="describes 32x32 inputs"):
        run(config, idx_dir, tmp_path / "run")

    assert not (tmp_path / "run").exists()
