"""The search, in process on fixture IDX files: budget, rejection, resume, failures, export."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
import optuna
import pytest

from regnas import export, workers
from regnas.archive import load_architecture, save_architecture
from regnas.cli import SearchError
from regnas.models import AnyNet, init_variables
from regnas.results import export_best
from regnas.spec import AnyNetSpec
from regnas.study import SearchConfig, count_finished, describe_search
from regnas.trials import SETTINGS_KEY

from conftest import TINY_SPACE


def tiny_config(idx_dir: Path, tmp_path: Path, **overrides: object) -> SearchConfig:
    settings: dict = {
        "study": "tiny",
        "storage": str(tmp_path / "study.db"),
        "trials": 3,
        "epochs": 2,
        "train_size": 256,
        "val_size": 128,
        "batch_size": 64,
        "max_mflops": None,
        "data_dir": str(idx_dir),
        "space": TINY_SPACE,
    }
    settings.update(overrides)
    return SearchConfig(**settings)  # type: ignore[arg-type]


def load(config: SearchConfig) -> optuna.Study:
    return optuna.load_study(study_name=config.study, storage=f"sqlite:///{config.storage}")


def test_search_stores_trials(idx_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(idx_dir, tmp_path)

    assert workers.run_search(config, workers=1) == 3

    study = load(config)
    trials = [t for t in study.trials if t.state != optuna.trial.TrialState.FAIL]
    assert count_finished(study) == 3
    for trial in trials:
        attrs = trial.user_attrs
        assert set(trial.params) == {"depth", "w0", "wa", "wm", "group_w", "bot_mul"}
        assert AnyNetSpec.from_dict(attrs["architecture"]).stage_widths == attrs["stage_widths"]
        for key in ("mflops", "params", "compile_seconds", "train_seconds", "images_per_second"):
            assert attrs[key] > 0, key
        steps = sorted(trial.intermediate_values)
        assert steps == list(range(1, len(steps) + 1))
    assert study.user_attrs["regnas.settings"]["train_size"] == 256


def test_rerun_keeps_study_total(idx_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(idx_dir, tmp_path, trials=2)
    workers.run_search(config, workers=1)

    assert workers.run_search(config, workers=1) == 2
    assert workers.run_search(dataclasses.replace(config, trials=3), workers=1) == 3
    assert count_finished(load(config)) == 3


def test_budget_below_space_fails_early(idx_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(idx_dir, tmp_path, max_mflops=0.01)

    with pytest.raises(ValueError, match=r"--max-mflops 0\.01 is below the cheapest"):
        workers.run_search(config, workers=1)
    assert not Path(config.storage).exists()


def test_changed_settings_refuse_resume(idx_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(idx_dir, tmp_path, trials=1, epochs=1)
    workers.run_search(config, workers=1)

    with pytest.raises(ValueError, match=r"epochs: stored 1, now 2.*new --study"):
        workers.run_search(dataclasses.replace(config, epochs=2, trials=2), workers=1)
    assert count_finished(load(config)) == 1


def test_pruned_search_evaluates_where_it_decides(idx_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(idx_dir, tmp_path, trials=4, epochs=5, epoch_size=64)
    assert config.evaluated_epochs == {1, 4, 5}

    workers.run_search(config, workers=1)

    study = load(config)
    assert study.user_attrs[SETTINGS_KEY]["epoch_size"] == 64
    trained = [t for t in study.trials if t.state != optuna.trial.TrialState.FAIL]
    assert len(trained) == 4
    for trial in trained:
        epochs = trial.user_attrs["epochs_trained"]
        assert epochs in (1, 4, 5), trial.number
        assert sorted(trial.intermediate_values) == [e for e in (1, 4, 5) if e <= epochs]
        assert trial.user_attrs["val_accuracy"] == trial.intermediate_values[epochs]
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert epochs == 5
            assert trial.value == trial.intermediate_values[5]


def test_description_counts_whole_batches() -> None:
    config = SearchConfig(epochs=2, train_size=2000, epoch_size=2000, batch_size=128)
    assert describe_search(config).endswith("successive halving over 2 epochs of 1,920 images")

    config = SearchConfig()
    assert describe_search(config).endswith("over 16 epochs of 6,400 images")


def test_one_epoch_says_pruning_off() -> None:
    config = SearchConfig(epochs=1)
    assert describe_search(config).endswith(
        "pruning off: with 1 epoch per trial, no trial can stop early"
    )


def test_study_from_before_epoch_size_resumes(idx_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(idx_dir, tmp_path, trials=1, epochs=1)
    workers.run_search(config, workers=1)
    # A study made before epoch_size existed stored no such setting: its epochs were passes.
    study = load(config)
    settings = dict(study.user_attrs[SETTINGS_KEY])
    assert settings.pop("epoch_size") == config.train_size
    study.set_user_attr(SETTINGS_KEY, settings)

    assert workers.run_search(dataclasses.replace(config, trials=2), workers=1) == 2
    smaller = dataclasses.replace(config, trials=3, epoch_size=64)
    with pytest.raises(ValueError, match=r"epoch_size: stored 256, now 64.*--epoch-size 256"):
        workers.run_search(smaller, workers=1)
    assert count_finished(load(config)) == 2


def test_non_finite_loss_fails_trial(
    idx_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers, "MAX_CONSECUTIVE_FAILURES", 2)
    config = tiny_config(idx_dir, tmp_path, lr=1e30, epochs=2)

    with pytest.raises(SearchError, match="2 trials in a row failed"):
        workers.run_search(config, workers=1)

    failed = load(config).get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert len(failed) == 2
    assert all("training loss is" in t.user_attrs["fail_reason"] for t in failed)


def test_export_rebuilds_same_network(idx_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(idx_dir, tmp_path, trials=2, epochs=1)
    workers.run_search(config, workers=1)

    document = export_best(config.study, config.storage)
    path = save_architecture(tmp_path / "best.json", document)
    loaded = load_architecture(path)

    best = load(config).best_trial
    original = AnyNetSpec.from_dict(best.user_attrs["architecture"])
    assert loaded.spec == original
    assert document["provenance"]["trial"] == best.number
    assert document["metrics"]["val_accuracy"] == best.value
    assert loaded.complexity["params"] == best.user_attrs["params"]
    with pytest.raises(ValueError, match="Pass --output FILE in a writable directory"):
        export.main(["--study", config.study, "--storage", config.storage, "--output", "/"])
    variables = init_variables(AnyNet(original), seed=5, input_shape=(1, 28, 28, 1))
    images = jax.random.normal(jax.random.key(0), (4, 28, 28, 1))
    np.testing.assert_array_equal(
        AnyNet(loaded.spec).apply(variables, images), AnyNet(original).apply(variables, images)
    )


def test_export_without_completed_trial(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.create_study(study_name="empty", storage=storage)

    with pytest.raises(ValueError, match="has no completed trial yet"):
        export_best("empty", storage)


def test_export_without_completed_trial_repeats_flags(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'small.db'}"
    study = optuna.create_study(study_name="small", storage=storage)
    study.set_user_attr(SETTINGS_KEY, {"epochs": 1, "train_size": 2000, "val_size": 1000})

    with pytest.raises(ValueError) as error:
        export_best("small", storage)

    message = str(error.value)
    assert "python -m regnas.search --study small --epochs 1 --train-size 2000" in message
    assert "--val-size 1000" in message


def test_export_unknown_study_lists_known(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'one.db'}"
    optuna.create_study(study_name="present", storage=storage)

    with pytest.raises(ValueError, match=r"Study 'absent' not found.*present"):
        export_best("absent", storage)
