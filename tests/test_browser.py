"""Real headless Chromium on a local optuna-dashboard and on a report page."""

from __future__ import annotations

import json
from pathlib import Path
import re
import threading
import urllib.request

import optuna
import pytest

from regnas.browser import page_dom, running_dashboard, screenshot
from regnas.notes import save_study_figures, save_trial_note, save_trial_notes
from regnas.report import write_report
from regnas.trials import REJECTED_KEY

from conftest import add_search_trials, regnet_trial, requires_chromium


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STUDY = "regnetx-browser"


@pytest.fixture
def annotated_storage(tmp_path: Path) -> tuple[str, optuna.Study]:
    """A 16-trial study with notes on its trials and the regnas figures stored."""
    url = f"sqlite:///{tmp_path / 'dashboard.db'}"
    study = optuna.create_study(study_name=STUDY, storage=url, direction="maximize")
    study.set_metric_names(["val_accuracy"])
    add_search_trials(study, 16)
    rejected = sum(REJECTED_KEY in trial.user_attrs for trial in study.trials)
    assert save_trial_notes(study) == 16 - rejected
    assert len(save_study_figures(study)) == 3
    return url, study


@requires_chromium
@pytest.mark.browser
def test_dashboard_shows_notes_and_figures(
    annotated_storage: tuple[str, optuna.Study], tmp_path: Path
) -> None:
    url, study = annotated_storage
    best = study.best_trial.number

    with running_dashboard(url) as base:
        study_page = page_dom(f"{base}/dashboard/studies/1")
        trial_url = f"{base}/dashboard/studies/1/trials?numbers={best}"
        trial_page = page_dom(trial_url)
        image = screenshot(trial_url, tmp_path / "dashboard-trial.png", 1400, 1000)

    assert STUDY in study_page
    for graph_id in ("regnas-edf", "regnas-pareto", "regnas-widths"):
        # optuna-dashboard 0.21 puts a prefix before the graph object id.
        assert re.search(rf'id="[^"]*{graph_id}"', study_page), graph_id
    # Plotly draws titles as SVG text only once the figure rendered.
    assert 'class="gtitle"' in study_page
    assert re.search(r'data-unformatted="Error EDF"', study_page)
    assert f"Trial {best}: complete after 4 epochs, val_accuracy" in trial_page
    assert "<th" in trial_page
    assert ">bottleneck width</th>" in trial_page
    assert ">head</td>" in trial_page
    assert image.read_bytes()[:8] == PNG_MAGIC
    assert image.stat().st_size > 20_000


@requires_chromium
@pytest.mark.browser
def test_report_page_renders(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'report.db'}"
    add_search_trials(optuna.create_study(study_name="r", storage=url, direction="maximize"), 16)
    report = write_report("r", url, tmp_path / "report")

    page = page_dom(report.pages["pareto"].resolve().as_uri())
    index = page_dom(report.index.resolve().as_uri())
    image = screenshot(report.pages["pareto"].resolve().as_uri(), tmp_path / "pareto.png")

    assert 'class="main-svg"' in page
    assert 'data-unformatted="Error versus MFLOPs"' in page
    assert 'class="scatterlayer' in page
    assert "Pareto front" in page
    assert 'href="pareto.html"' in index
    assert image.read_bytes()[:8] == PNG_MAGIC
    assert image.stat().st_size > 20_000


def test_dashboard_reads_while_trials_are_written(tmp_path: Path) -> None:
    # A search worker writes trials and notes while the dashboard serves the same SQLite file;
    # neither side may fail.
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    study = optuna.create_study(study_name="busy", storage=url, direction="maximize")
    statuses: list[int] = []
    stop = threading.Event()

    def poll(base: str) -> None:
        while not stop.is_set():
            with urllib.request.urlopen(f"{base}/api/studies/1?after=0", timeout=30) as response:
                statuses.append(response.status)
                json.loads(response.read())

    params = {"depth": 6, "w0": 16, "wa": 20.0, "wm": 2.5, "group_w": 8, "bot_mul": 0.5}
    with running_dashboard(url) as base:
        reader = threading.Thread(target=poll, args=(base,))
        reader.start()
        try:
            for minute in range(30):
                study.add_trial(regnet_trial(params, (0.8,), minute=minute))
                assert save_trial_note(study, study.trials[-1])
        finally:
            stop.set()
            reader.join(timeout=60)

    assert len(study.trials) == 30
    assert statuses
    assert set(statuses) == {200}
