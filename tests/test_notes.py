"""Dashboard notes and figures: the stage table, saving them, and failures that only log."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import optuna
from optuna_dashboard import get_note
from optuna_dashboard._custom_plot_data import get_plotly_graph_objects
import pytest

from regnas.notes import (
    annotate_study,
    save_study_figures,
    save_trial_note,
    stage_table,
    trial_note,
)
from regnas.spec import AnyNetSpec, StageSpec
from regnas.trials import REJECTED_KEY

from conftest import add_search_trials, regnet_trial


PARAMS = {"depth": 6, "w0": 16, "wa": 20.0, "wm": 2.5, "group_w": 8, "bot_mul": 0.5}


def study_in(tmp_path: Path, name: str = "notes") -> optuna.Study:
    storage = f"sqlite:///{tmp_path / 'notes.db'}"
    return optuna.create_study(study_name=name, storage=storage, direction="maximize")


def system_attrs(study: optuna.Study) -> dict[str, object]:
    return study._storage.get_study_system_attrs(study._study_id)


def test_stage_table_by_hand() -> None:
    spec = AnyNetSpec(
        stages=(
            StageSpec(depth=1, width=16, stride=2, group_w=8, bot_mul=1.0),
            StageSpec(depth=2, width=32, stride=2, group_w=8, bot_mul=0.5),
        ),
        stem_w=8,
    )

    rows = stage_table(spec, input_size=28)

    assert rows[0].split("|")[1:-1] == [
        " stage ",
        " depth ",
        " width ",
        " groups ",
        " group width ",
        " bottleneck width ",
        " stride ",
        " output ",
        " MFLOPs ",
    ]
    assert rows[2].startswith("| stem | | 8 | | | | 1 | 28x28 |")
    assert rows[3].startswith("| 1 | 1 | 16 | 2 | 8 | 16 | 2 | 14x14 |")
    assert rows[4].startswith("| 2 | 2 | 32 | 2 | 8 | 16 | 2 | 7x7 |")
    assert rows[5].startswith("| head | | 10 | | | | | 1x1 |")
    assert rows[6].startswith("| total | 3 |")


def test_stage_mflops_add_up() -> None:
    trial = regnet_trial(PARAMS, (0.8,))

    rows = stage_table(AnyNetSpec.from_dict(trial.user_attrs["architecture"]), input_size=28)

    parts = [float(row.rstrip(" |").rsplit("|", 1)[1]) for row in rows[2:-1]]
    total = float(rows[-1].rstrip(" |").rsplit("|", 1)[1])
    assert sum(parts) == pytest.approx(total, abs=0.003)
    assert total == pytest.approx(trial.user_attrs["mflops"], abs=0.001)


def test_note_of_complete_trial() -> None:
    trial = regnet_trial(PARAMS, (0.7, 0.8125))
    trial.number = 7

    note = trial_note(trial, 28)

    first = note.splitlines()[0]
    assert first == "### Trial 7: complete after 2 epochs, val_accuracy 0.8125, error 0.1875"
    assert f"{trial.user_attrs['mflops']:.3f} MFLOPs" in note
    assert "RegNet parameters: depth 6, w0 16, wa 20, wm 2.5, group_w 8, bot_mul 0.5" in note
    assert "| stage | depth |" in note


def test_note_of_other_outcomes() -> None:
    pruned = regnet_trial(PARAMS, (0.7,), optuna.trial.TrialState.PRUNED)
    rejected = regnet_trial(
        PARAMS, (), optuna.trial.TrialState.PRUNED, extra_attrs={"rejected": "5 stages"}
    )
    failed = regnet_trial(
        PARAMS, (), optuna.trial.TrialState.FAIL, extra_attrs={"fail_reason": "NaN loss"}
    )
    duplicate = regnet_trial(PARAMS, (0.8,), extra_attrs={"duplicate_of": 3})

    assert "pruned after 1 epoch, validation accuracy 0.7000 at epoch 1" in trial_note(pruned, 28)
    assert "rejected before training (5 stages)" in trial_note(rejected, 28)
    assert "failed (NaN loss)" in trial_note(failed, 28)
    assert "Same architecture as trial 3." in trial_note(duplicate, 28)


def test_note_of_multi_objective_trial() -> None:
    trial = regnet_trial(PARAMS, values=[0.125, 2.5])
    trial.number = 7
    directions = [optuna.study.StudyDirection.MINIMIZE] * 2

    note = trial_note(trial, 28, ["error", "mflops"], directions)

    assert note.splitlines()[0] == "### Trial 7: complete, error 0.1250, mflops 2.5000"


def test_note_without_architecture_raises() -> None:
    trial = optuna.trial.create_trial(value=0.5)

    with pytest.raises(ValueError, match="stores no 'architecture'"):
        trial_note(trial, 28)


def test_save_note_as_callback(tmp_path: Path) -> None:
    study = study_in(tmp_path)

    def objective(trial: optuna.Trial) -> float:
        for key, value in regnet_trial(PARAMS, (0.8,)).user_attrs.items():
            trial.set_user_attr(key, value)
        return 0.8

    study.optimize(objective, n_trials=2, callbacks=[save_trial_note])

    for trial in study.get_trials():
        live = optuna.trial.Trial(study, trial._trial_id)
        assert get_note(live).startswith(f"### Trial {trial.number}: complete"), trial.number


def test_save_note_twice_replaces(tmp_path: Path) -> None:
    study = study_in(tmp_path)
    study.add_trial(regnet_trial(PARAMS, (0.8,)))
    trial = study.trials[0]

    assert save_trial_note(study, trial)
    assert save_trial_note(study, trial, input_size=32)

    note = get_note(optuna.trial.Trial(study, trial._trial_id))
    assert "input 32x32x1" in note
    assert note.count("### Trial 0") == 1


def test_save_note_skips_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    study = study_in(tmp_path)
    study.add_trial(optuna.trial.create_trial(value=0.5))
    broken = regnet_trial(PARAMS, (0.8,))
    broken.user_attrs["architecture"] = {"stages": "none"}
    study.add_trial(broken)

    with caplog.at_level(logging.WARNING, logger="regnas"):
        assert not save_trial_note(study, study.trials[0])
        assert not save_trial_note(study, study.trials[1])

    assert "Could not save the dashboard note of trial 1 of study 'notes'" in caplog.text


def test_study_figures_saved(tmp_path: Path) -> None:
    study = study_in(tmp_path)
    add_search_trials(study, 12)

    saved = save_study_figures(study)
    again = save_study_figures(study)

    assert saved == ["regnas-edf", "regnas-pareto", "regnas-widths"]
    assert again == saved
    stored = get_plotly_graph_objects(system_attrs(study))
    assert set(stored) == set(saved)
    edf = json.loads(stored["regnas-edf"])
    assert edf["layout"]["title"]["text"] == "Error EDF"
    assert "10 trained" in edf["layout"]["title"]["subtitle"]["text"]


def test_study_figures_of_empty_study(tmp_path: Path) -> None:
    study = study_in(tmp_path)

    assert save_study_figures(study) == []
    assert get_plotly_graph_objects(system_attrs(study)) == {}


def test_annotate_existing_study(tmp_path: Path) -> None:
    study = study_in(tmp_path, name="old")
    add_search_trials(study, 8)

    notes, figures = annotate_study("old", str(tmp_path / "notes.db"))

    rejected = [trial for trial in study.trials if REJECTED_KEY in trial.user_attrs]
    assert len(rejected) == 1
    assert notes == 8 - len(rejected)  # rejected samples get no note, as during a search
    assert len(figures) == 3
    with pytest.raises(ValueError, match="Studies there: old"):
        annotate_study("new", str(tmp_path / "notes.db"))
