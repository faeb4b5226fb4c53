"""The study report: each figure is drawn or skipped with a reason, on awkward studies too."""

from __future__ import annotations

from collections.abc import Sequence
import html
import json
from pathlib import Path
import re
import subprocess
import sys
from typing import Any

import optuna
import pytest

from regnas.figures import FIGURES_BY_NAME, edf_steps, pareto_front
from regnas.report import Report, write_report
from regnas.trials import StudyTrials, error_source

from conftest import add_search_trials, regnet_trial, run_module


COMPLETE = optuna.trial.TrialState.COMPLETE
PRUNED = optuna.trial.TrialState.PRUNED
FAIL = optuna.trial.TrialState.FAIL
ALL_FIGURES = set(FIGURES_BY_NAME)
PARAMS = {"depth": 6, "w0": 16, "wa": 20.0, "wm": 2.5, "group_w": 8, "bot_mul": 0.5}


def new_study(
    tmp_path: Path, directions: Sequence[str] = ("maximize",), name: str = "s"
) -> tuple[str, optuna.Study]:
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(study_name=name, storage=storage, directions=list(directions))
    return storage, study


def report_of(storage: str, tmp_path: Path, name: str = "s") -> Report:
    return write_report(name, storage, tmp_path / "report")


def drawn(report: Report) -> set[str]:
    return {item.name for item in report.figures if not item.skipped}


def check_not_blank(report: Report) -> None:
    """Each drawn figure has a trace with data, and each page embeds it with plotly.js."""
    for item in report.figures:
        if item.skipped:
            assert item.note.startswith("Skipped: "), item.name
            assert item.name not in report.pages, item.name
            continue
        assert item.figure.data, item.name
        assert any(_trace_points(trace) for trace in item.figure.data), item.name
        page = report.pages[item.name].read_text()
        assert f'id="{item.name}"' in page, item.name
        assert "Plotly.newPlot" in page, item.name
        assert html.escape(item.note.split(".")[0]) in page, item.name


def _trace_points(trace: Any) -> int:
    if trace.type == "parcoords":
        return len(trace.dimensions[0]["values"])
    return len([value for value in (trace.x if trace.x is not None else []) if value is not None])


def index_text(report: Report) -> str:
    return report.index.read_text()


def test_full_study_draws_every_figure(tmp_path: Path) -> None:
    storage, study = new_study(tmp_path)
    add_search_trials(study, 40)

    report = report_of(storage, tmp_path)

    assert drawn(report) == ALL_FIGURES
    check_not_blank(report)
    index = index_text(report)
    assert "Skipped figures" not in index
    for item in report.figures:
        assert f'href="{item.name}.html"' in index
    assert "34 trained (28 complete, 6 pruned), 5 rejected before training, 1 failed" in index
    assert "val_accuracy (maximize)" in index


def test_empty_study_skips_everything(tmp_path: Path) -> None:
    storage, _study = new_study(tmp_path)

    report = report_of(storage, tmp_path)

    assert drawn(report) == set()
    check_not_blank(report)
    index = index_text(report)
    assert "Skipped figures" in index
    for item in report.figures:
        assert item.title in index
    assert "no trial has completed" in index
    assert "0 trained (0 complete, 0 pruned)" in index
    assert sorted(path.name for path in (tmp_path / "report").iterdir()) == ["index.html"]


def test_only_pruned_and_failed(tmp_path: Path) -> None:
    storage, study = new_study(tmp_path)
    rejected = {"rejected": "7.10 MFLOPs, above --max-mflops 5.0"}
    study.add_trial(regnet_trial(PARAMS, (), PRUNED, minute=0, extra_attrs=rejected))
    study.add_trial(regnet_trial(PARAMS, (0.7,), PRUNED, minute=1))
    failed = {"fail_reason": "loss became NaN in epoch 1"}
    study.add_trial(regnet_trial(PARAMS, (), FAIL, minute=2, extra_attrs=failed))

    report = report_of(storage, tmp_path)

    assert drawn(report) == {"curves", "timeline"}
    check_not_blank(report)
    index = index_text(report)
    assert "1 trained (0 complete, 1 pruned), 1 rejected before training, 1 failed" in index
    timeline = next(item for item in report.figures if item.name == "timeline").figure
    assert sorted(trace.name for trace in timeline.data) == ["fail", "pruned"]


def test_only_rejected_skips_timeline(tmp_path: Path) -> None:
    storage, study = new_study(tmp_path)
    rejected = {"rejected": "5 stages, more than 4"}
    study.add_trial(regnet_trial(PARAMS, (), PRUNED, extra_attrs=rejected))

    report = report_of(storage, tmp_path)

    assert drawn(report) == set()
    assert "no trained or failed trial has a start time" in index_text(report)


def test_one_trial(tmp_path: Path) -> None:
    storage, study = new_study(tmp_path)
    study.add_trial(regnet_trial(PARAMS, (0.7, 0.8)))

    report = report_of(storage, tmp_path)

    assert drawn(report) == ALL_FIGURES - {"importances"}
    check_not_blank(report)
    notes = {item.name: item.note for item in report.figures}
    assert "need at least 2 completed trials" in notes["importances"]
    assert "single step" in notes["edf"]
    assert "Never varied" in notes["parallel"]


def test_parameter_that_never_varied(tmp_path: Path) -> None:
    storage, study = new_study(tmp_path)
    for number, wa in enumerate([10.0, 20.0, 30.0, 40.0]):
        params = {**PARAMS, "wa": wa}
        study.add_trial(regnet_trial(params, (0.9 - wa / 1000,), minute=number))

    report = report_of(storage, tmp_path)

    assert drawn(report) == ALL_FIGURES
    check_not_blank(report)
    notes = {item.name: item.note for item in report.figures}
    assert "group_w (always 8)" in notes["importances"]
    assert "group_w (always 8)" in notes["parallel"]
    importances = next(item for item in report.figures if item.name == "importances").figure
    assert list(importances.data[0].y) == ["wa"]


def test_only_constant_parameters_skip_importances(tmp_path: Path) -> None:
    storage, study = new_study(tmp_path)
    study.add_trial(regnet_trial(PARAMS, (0.80,), minute=0))
    study.add_trial(regnet_trial(PARAMS, (0.81,), minute=1))

    report = report_of(storage, tmp_path)

    notes = {item.name: item.note for item in report.figures}
    assert "importances" not in drawn(report)
    assert "no parameter took more than one value" in notes["importances"]


def test_multi_objective_study(tmp_path: Path) -> None:
    storage, study = new_study(tmp_path, directions=("minimize", "minimize"))
    study.set_metric_names(["error", "mflops"])
    for number, (error, wa) in enumerate([(0.20, 10.0), (0.12, 30.0), (0.15, 20.0)]):
        trial = regnet_trial({**PARAMS, "wa": wa}, values=[error, 1.0 + number], minute=number)
        study.add_trial(trial)

    report = report_of(storage, tmp_path)

    assert drawn(report) == ALL_FIGURES - {"curves"}
    check_not_blank(report)
    notes = {item.name: item.note for item in report.figures}
    assert "no trial reported a validation accuracy per epoch" in notes["curves"]
    assert "several objectives" in notes["history"]
    index = index_text(report)
    assert "error (minimize), mflops (minimize)" in index
    assert "Lowest error: trial 1, error 0.1200" in index
    history = next(item for item in report.figures if item.name == "history").figure
    assert list(history.data[1].y) == [0.20, 0.12, 0.12]


def test_duplicates_counted_once_in_edf(tmp_path: Path) -> None:
    storage, study = new_study(tmp_path)
    study.add_trial(regnet_trial(PARAMS, (0.80,), minute=0))
    duplicate = {"duplicate_of": 0}
    study.add_trial(regnet_trial(PARAMS, (0.80,), minute=1, extra_attrs=duplicate))

    report = report_of(storage, tmp_path)

    notes = {item.name: item.note for item in report.figures}
    assert "1 distinct completed models" in notes["edf"]
    assert "1 repeated an earlier architecture" in notes["edf"]


@pytest.mark.parametrize(
    ("names", "directions", "expected"),
    [
        (None, ["maximize"], (0, True, "error (1 - val_accuracy)")),
        (["val_accuracy"], ["maximize"], (0, True, "error (1 - val_accuracy)")),
        (["mflops", "error"], ["minimize", "minimize"], (1, False, "error")),
        (None, ["minimize"], (0, False, "error (objective 0)")),
        (["loss", "mflops"], ["minimize", "minimize"], (0, False, "error (loss)")),
    ],
)
def test_error_source(
    names: list[str] | None, directions: list[str], expected: tuple[int, bool, str]
) -> None:
    parsed = [optuna.study.StudyDirection[direction.upper()] for direction in directions]

    source = error_source(names, parsed)

    assert (source.index, source.from_accuracy, source.label) == expected


def test_error_of_accuracy_and_missing_values() -> None:
    source = error_source(["val_accuracy"], [optuna.study.StudyDirection.MAXIMIZE])

    assert source.error([0.875]) == pytest.approx(0.125)
    assert source.error(None) is None
    assert source.error([float("nan")]) is None


def test_pareto_front_keeps_undominated() -> None:
    points = [(3.0, 0.10, 0), (1.0, 0.20, 1), (2.0, 0.25, 2), (2.0, 0.15, 3), (4.0, 0.10, 4)]

    front = pareto_front(points)

    assert [point[2] for point in front] == [1, 3, 0]


def test_edf_steps_rise_to_one() -> None:
    x, y = edf_steps([0.1, 0.2, 0.2, 0.4])

    assert x == [0.1, 0.1, 0.2, 0.2, 0.4]
    assert y == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_view_groups_trials(tmp_path: Path) -> None:
    _storage, study = new_study(tmp_path)
    add_search_trials(study, 15)

    view = StudyTrials.from_study(study)

    assert [trial.number for trial in view.rejected] == [6, 13]
    assert [trial.number for trial in view.failed] == [14]
    assert len(view.trained) == 12
    assert len(view.complete) == 10
    assert view.best(1)[0].number == min(view.complete, key=view.error).number  # type: ignore[arg-type]


def run_plot(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_module("regnas.plot", *args, cwd=cwd)


def test_plot_command_writes_report(tmp_path: Path) -> None:
    storage, study = new_study(tmp_path, name="cli")
    add_search_trials(study, 12)

    result = run_plot("--study", "cli", "--storage", storage, "--output-dir", "out", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert f"Wrote 8 figures and the index to {tmp_path / 'out' / 'index.html'}" in result.stdout
    assert (tmp_path / "out" / "edf.html").is_file()


def test_plot_command_lists_studies(tmp_path: Path) -> None:
    storage, _study = new_study(tmp_path, name="present")

    result = run_plot(
        "--study", "absent", "--storage", storage, "--output-dir", "out", cwd=tmp_path
    )

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: Study 'absent' not found in {storage}. Studies there: present."
    ]
    assert not (tmp_path / "out").exists()


def test_plot_command_missing_storage(tmp_path: Path) -> None:
    result = run_plot(
        "--study", "s", "--storage", str(tmp_path / "none.db"), "--output-dir", "out", cwd=tmp_path
    )

    assert result.returncode == 2
    assert re.fullmatch(r"error: Storage file .*none\.db does not exist\..*\n", result.stderr)
    assert not (tmp_path / "none.db").exists()


def test_png_without_kaleido_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage, _study = new_study(tmp_path)
    monkeypatch.setitem(sys.modules, "kaleido", None)

    with pytest.raises(ValueError, match=r"run pip install kaleido, or leave out --png"):
        write_report("s", storage, tmp_path / "report", png=True)


def test_png_export(tmp_path: Path) -> None:
    pytest.importorskip("kaleido", reason="kaleido is not installed (optional extra 'png')")
    from conftest import CHROMIUM

    if not CHROMIUM.is_file():
        pytest.skip("/usr/bin/chromium is missing; kaleido needs a browser")
    storage, study = new_study(tmp_path)
    add_search_trials(study, 12)

    report = write_report("s", storage, tmp_path / "report", png=True)

    assert set(report.images) == ALL_FIGURES
    for path in report.images.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    assert 'href="edf.png"' in index_text(report)


def test_figures_serialize_for_dashboard(tmp_path: Path) -> None:
    _storage, study = new_study(tmp_path)
    add_search_trials(study, 12)
    view = StudyTrials.from_study(study)

    for name, builder in FIGURES_BY_NAME.items():
        item = builder(view)
        assert json.loads(item.figure.to_json())["data"], name
