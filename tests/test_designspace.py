"""Design-space comparison: EDFs, shares below errors, good ranges, and the analyze command."""

from __future__ import annotations

from pathlib import Path
import subprocess

import optuna
import pytest

from regnas.designspace import (
    compare_studies,
    default_thresholds,
    range_table,
    share_table,
    write_comparison,
)

from conftest import add_search_trials, regnet_trial, run_module


BASE = {"depth": 6, "w0": 16, "wa": 20.0, "wm": 2.5, "group_w": 8, "bot_mul": 0.5}


@pytest.fixture
def storage(tmp_path: Path) -> str:
    """Two studies: 'narrow' has errors 0.10 to 0.13, 'wide' 0.10 to 0.40, and one empty."""
    url = f"sqlite:///{tmp_path / 'spaces.db'}"
    narrow = optuna.create_study(study_name="narrow", storage=url, direction="maximize")
    for number, (error, w0) in enumerate([(0.10, 16), (0.11, 16), (0.12, 24), (0.13, 48)]):
        narrow.add_trial(regnet_trial({**BASE, "w0": w0}, (1 - error,), minute=number))
    wide = optuna.create_study(study_name="wide", storage=url, direction="maximize")
    for number, error in enumerate([0.10, 0.20, 0.30, 0.40]):
        params = {**BASE, "depth": 4 + 3 * number}
        wide.add_trial(regnet_trial(params, (1 - error,), minute=number))
    optuna.create_study(study_name="empty", storage=url, direction="maximize")
    return url


def test_shares_below_errors(storage: str) -> None:
    comparison = compare_studies(["narrow", "wide"], storage, thresholds=[0.115, 0.25])

    rows = share_table(comparison)

    assert rows[0] == ["study", "models", "error < 0.115", "error < 0.25"]
    assert rows[1] == ["narrow", "4", "50.0%", "100.0%"]
    assert rows[2] == ["wide", "4", "25.0%", "50.0%"]


def test_good_ranges_are_best_quarter(storage: str) -> None:
    comparison = compare_studies(["narrow", "wide"], storage, thresholds=[0.2])

    rows = {(row[0], row[1]): row[2:] for row in range_table(comparison)[1:]}

    assert rows[("w0", "narrow")] == ["16 (x1)", "16 (x2), 24 (x1), 48 (x1)", "1"]
    assert rows[("depth", "wide")] == ["4 (x1)", "4 - 13", "1"]
    assert rows[("group_w", "wide")] == ["8 (x1)", "8 (x4)", "1"]


def test_complexity_band_filters(storage: str) -> None:
    all_models = compare_studies(["wide"], storage, thresholds=[0.5])
    mflops = sorted(
        trial.user_attrs["mflops"]
        for trial in optuna.load_study(study_name="wide", storage=storage).trials
    )

    banded = compare_studies(
        ["wide"], storage, min_mflops=mflops[1], max_mflops=mflops[2], thresholds=[0.5]
    )

    assert len(all_models.spaces[0].errors) == 4
    assert len(banded.spaces[0].errors) == 2
    assert banded.spaces[0].outside_band == 2
    assert banded.band_text == f"{mflops[1]:g} to {mflops[2]:g} MFLOPs"


def test_empty_study_has_no_share(storage: str, tmp_path: Path) -> None:
    comparison = compare_studies(["empty", "narrow"], storage, thresholds=[0.2])

    path = write_comparison(comparison, tmp_path / "out" / "compare.html")

    assert share_table(comparison)[1] == ["empty", "0", "-"]
    page = path.read_text()
    assert "empty (n=" not in page
    assert "narrow (n=4)" in page


def test_no_models_anywhere(storage: str, tmp_path: Path) -> None:
    comparison = compare_studies(["empty"], storage)

    page = write_comparison(comparison, tmp_path / "compare.html").read_text()

    assert comparison.thresholds == []
    assert "No EDF: no study has a completed model in the band." in page


def test_default_thresholds_are_quartiles() -> None:
    assert default_thresholds([0.1, 0.2, 0.3, 0.4, 0.5]) == [0.2, 0.3, 0.4]
    assert default_thresholds([0.25, 0.25]) == [0.25]
    assert default_thresholds([]) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"study_names": []}, "one or more study names"),
        ({"study_names": ["wide", "wide"]}, "names wide more than once"),
        ({"min_mflops": 3.0, "max_mflops": 1.0}, "exceeds --max-mflops"),
        ({"max_mflops": -1.0}, "--max-mflops must be a number >= 0"),
        ({"thresholds": [1.5]}, r"--errors takes errors in \(0, 1\]"),
    ],
)
def test_invalid_arguments(storage: str, kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"study_names": ["wide"], "storage": storage, **kwargs}

    with pytest.raises(ValueError, match=message):
        compare_studies(**arguments)  # type: ignore[arg-type]


def run_analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_module("regnas.analyze", *args, cwd=cwd)


def test_analyze_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    for seed, name in enumerate(["regnet", "anynet"]):
        study = optuna.create_study(study_name=name, storage=url, direction="maximize")
        add_search_trials(study, 20, seed=seed)

    result = run_analyze(
        "--studies", "regnet,anynet", "--storage", url, "--errors", "0.1,0.9", "--output",
        "compare.html", cwd=tmp_path,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Models with all complexities:"
    assert lines[1].split() == ["study", "models", "error", "<", "0.1", "error", "<", "0.9"]
    assert lines[3].split()[0] == "regnet"
    assert lines[3].split()[3:] == ["100.0%"]
    assert (tmp_path / "compare.html").is_file()


def test_analyze_command_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    optuna.create_study(study_name="only", storage=url)

    missing = run_analyze("--studies", "only,other", "--storage", url, "--output", "x.html",
                          cwd=tmp_path)  # fmt: skip
    bad_errors = run_analyze("--studies", "only", "--storage", url, "--errors", "0.1,x",
                             "--output", "x.html", cwd=tmp_path)  # fmt: skip

    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        f"error: Study 'other' not found in {url}. Studies there: only."
    )
    assert bad_errors.returncode == 2
    assert "--errors takes comma-separated numbers" in bad_errors.stderr
    assert not (tmp_path / "x.html").exists()
