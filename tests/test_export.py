"""``python -m regnas.export``: --top-k and --format on a small SQLite study."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

import regnas
from regnas import export
from regnas.markdown import parse_markdown_stages
from regnas.pycls import from_pycls_yaml
from regnas.results import export_best, export_top_k

from conftest import regnet_trial, run_module


STUDY = "ranked"
# Trial number: (RegNet parameters, final validation accuracy). Trial 3 reused trial 1's result,
# trial 4 was pruned, so five of the seven are trained and distinct.
TRIALS = {
    0: ({"depth": 4, "w0": 16, "wa": 8.0, "wm": 2.0, "group_w": 8, "bot_mul": 1.0}, 0.80),
    1: ({"depth": 5, "w0": 24, "wa": 12.0, "wm": 2.5, "group_w": 8, "bot_mul": 0.5}, 0.86),
    2: ({"depth": 6, "w0": 32, "wa": 20.0, "wm": 2.2, "group_w": 16, "bot_mul": 0.5}, 0.83),
    3: ({"depth": 5, "w0": 24, "wa": 12.0, "wm": 2.5, "group_w": 8, "bot_mul": 0.5}, 0.86),
    4: ({"depth": 7, "w0": 16, "wa": 30.0, "wm": 2.8, "group_w": 8, "bot_mul": 1.0}, 0.50),
    5: ({"depth": 8, "w0": 40, "wa": 16.0, "wm": 2.4, "group_w": 8, "bot_mul": 0.25}, 0.86),
    6: ({"depth": 4, "w0": 48, "wa": 40.0, "wm": 2.6, "group_w": 32, "bot_mul": 1.0}, 0.70),
}


@pytest.fixture
def storage(tmp_path: Path) -> str:
    path = tmp_path / "ranked.db"
    study = optuna.create_study(
        study_name=STUDY, storage=f"sqlite:///{path}", direction="maximize"
    )
    for number, (params, accuracy) in TRIALS.items():
        extra = {"duplicate_of": 1} if number == 3 else {}
        state = optuna.trial.TrialState.PRUNED if number == 4 else optuna.trial.TrialState.COMPLETE
        values = None if number == 4 else [accuracy]
        study.add_trial(
            regnet_trial(params, [accuracy], state, values, minute=number, extra_attrs=extra)
        )
    return str(path)


def _trials(documents: list[dict]) -> list[int]:
    return [document["provenance"]["trial"] for document in documents]


def test_top_k_ranks_by_accuracy(storage: str) -> None:
    # Ties (trials 1 and 5 at 0.86) go to the earlier trial, as in export_best.
    assert _trials(export_top_k(STUDY, storage, 3)) == [1, 5, 2]
    assert export_top_k(STUDY, storage, 1)[0] == export_best(STUDY, storage)


def test_top_k_rejects_zero(storage: str) -> None:
    with pytest.raises(ValueError, match=r"k must be an integer >= 1.*got 0"):
        export_top_k(STUDY, storage, 0)


def test_cli_top_k_writes_list(
    storage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "top.json"

    assert (
        export.main(
            ["--study", STUDY, "--storage", storage, "--top-k", "2", "--output", str(output)]
        )
        == 0
    )

    printed = capsys.readouterr().out
    assert "trial  val_accuracy  error   MFLOPs" in printed
    assert printed.index("    1  ") < printed.index("    5  ")
    assert "Note" not in printed
    assert regnas.load_architecture(output, trial=5).regnet is not None
    with pytest.raises(ValueError, match=r"trials \[1, 5\]"):
        regnas.load_architecture(output)


def test_cli_top_k_one_reads_singular(
    storage: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    options = ["--study", STUDY, "--storage", storage, "--top-k", "1", "--format", "markdown"]

    assert export.main(options) == 0

    printed = capsys.readouterr().out
    assert f"The 1 trial of '{STUDY}' with the best val_accuracy:" in printed
    assert "Wrote it to " in printed
    markdown = (tmp_path / "studies" / f"{STUDY}.top1.md").read_text()
    assert markdown.startswith(f"# Best trial of study '{STUDY}'")


def test_cli_top_k_beyond_trained(
    storage: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)

    assert export.main(["--study", STUDY, "--storage", storage, "--top-k", "10"]) == 0

    printed = capsys.readouterr().out
    assert "only 5 completed trials" in printed
    default = tmp_path / "studies" / f"{STUDY}.top10.json"
    assert default.is_file()
    for trial in (1, 5, 2, 0, 6):
        assert regnas.load_architecture(default, trial=trial).provenance["trial"] == trial
    with pytest.raises(ValueError, match="no architecture of trial 3"):
        regnas.load_architecture(default, trial=3)


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_cli_top_k_below_one(value: str, storage: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        export.main(["--study", STUDY, "--storage", storage, "--top-k", value])

    assert caught.value.code == 2
    assert f"--top-k: must be a whole number >= 1 (how many trials to write), got '{value}'" in (
        capsys.readouterr().err
    )


def test_cli_pycls_list_one_file_per_trial(storage: str, tmp_path: Path) -> None:
    output = tmp_path / "configs" / "front.yaml"

    export.main(
        [
            "--study",
            STUDY,
            "--storage",
            storage,
            "--top-k",
            "2",
            "--format",
            "pycls",
            "--output",
            str(output),
        ]
    )

    assert sorted(path.name for path in output.parent.iterdir()) == [
        "front.trial1.yaml",
        "front.trial5.yaml",
    ]
    best = export_best(STUDY, storage)
    config = yaml.safe_load((output.parent / "front.trial1.yaml").read_text())
    assert config["MODEL"]["TYPE"] == "regnet"
    assert config["REGNET"]["W0"] == TRIALS[1][0]["w0"]
    assert from_pycls_yaml(output.parent / "front.trial1.yaml") == regnas.AnyNetSpec.from_dict(
        best["anynet"]
    )


def test_cli_formats_of_best(
    storage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    best = regnas.AnyNetSpec.from_dict(export_best(STUDY, storage)["anynet"])

    for export_format in ("json", "pycls", "markdown"):
        export.main(["--study", STUDY, "--storage", storage, "--format", export_format])

    studies = tmp_path / "studies"
    assert regnas.load_architecture(studies / f"{STUDY}.best.json").spec == best
    assert from_pycls_yaml(studies / f"{STUDY}.best.yaml") == best
    markdown = (studies / f"{STUDY}.best.md").read_text()
    assert parse_markdown_stages(markdown) == [best.stages]
    assert f"## Study '{STUDY}', trial 1: val_accuracy 0.8600" in markdown


def test_cli_markdown_pareto_sections(storage: str, tmp_path: Path) -> None:
    output = tmp_path / "front.md"

    export.main(
        [
            "--study",
            STUDY,
            "--storage",
            storage,
            "--pareto",
            "--format",
            "markdown",
            "--output",
            str(output),
        ]
    )

    text = output.read_text()
    assert text.startswith(f"# Error-MFLOPs Pareto front of study '{STUDY}'")
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert len(sections) == len(parse_markdown_stages(text)) >= 1


def test_cli_rejects_storage_output(storage: str) -> None:
    before = Path(storage).read_bytes()

    with pytest.raises(ValueError, match="is the study's storage file"):
        export.main(["--study", STUDY, "--storage", storage, "--output", storage])

    assert Path(storage).read_bytes() == before


def test_cli_unwritable_output_one_line(storage: str, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")

    result = run_module(
        "regnas.export",
        "--study",
        STUDY,
        "--storage",
        storage,
        "--format",
        "pycls",
        "--output",
        str(blocker / "best.yaml"),
        cwd=tmp_path,
    )

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: Cannot write {blocker / 'best.yaml'}")
    assert "Pass --output FILE in a writable directory" in lines[0]


def test_cli_says_when_it_creates_a_directory(
    storage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "new" / "nested" / "best.json"

    assert export.main(["--study", STUDY, "--storage", storage, "--output", str(output)]) == 0

    assert f"Created the directory {output.parent.resolve()}" in capsys.readouterr().out
    assert regnas.load_architecture(output).provenance["trial"] == 1
