"""The three commands end to end, as a user runs them, on fixture IDX files and real data."""

from __future__ import annotations

import json
import os
from pathlib import Path
import re
import signal
import sqlite3
import subprocess
import sys
import time

import optuna
import pytest
from sqlalchemy.exc import SQLAlchemyError

from regnas.browser import free_port
from regnas.study import count_finished

from conftest import REPO, requires_real_data, run_module


pytestmark = pytest.mark.slow

# Small and fast: one epoch on 256 images, so that a trial of the default space takes seconds.
FAST = ["--epochs", "1", "--train-size", "256", "--val-size", "128", "--batch-size", "64"]
STUDY = "cli"


def checkout_environment() -> dict[str, str]:
    """Return the environment with this checkout first on PYTHONPATH.

    Without it a subprocess imports whichever regnas is installed, which may be another
    checkout's.
    """
    return {**os.environ, "PYTHONPATH": str(REPO)}


def regnas(
    *args: str, cwd: Path, timeout: float = 600, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env={**checkout_environment(), **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def finished(storage: Path, study: str = STUDY) -> int:
    return count_finished(optuna.load_study(study_name=study, storage=f"sqlite:///{storage}"))


def test_search_export_train(idx_dir: Path, tmp_path: Path) -> None:
    search = regnas(
        "regnas.search",
        "--trials",
        "2",
        "--study",
        STUDY,
        "--workers",
        "1",
        "--data-dir",
        str(idx_dir),
        *FAST,
        cwd=tmp_path,
    )
    assert search.returncode == 0, search.stderr
    storage = tmp_path / "studies" / "regnas.db"
    assert f"Storage: {storage}" in search.stdout
    assert re.search(r"trial \d+ (complete|pruned): val_acc", search.stderr)
    assert "best " in search.stderr
    assert finished(storage) == 2

    export = regnas("regnas.export", "--study", STUDY, "--output", "best.json", cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    document = json.loads((tmp_path / "best.json").read_text())
    assert document["format"] == "regnas.architecture"
    assert document["version"] == 1
    assert set(document["anynet"]["stages"][0]) == {
        "depth",
        "width",
        "stride",
        "group_w",
        "bot_mul",
        "se_ratio",
    }
    assert set(document["complexity"]) == {"image_size", "flops", "params", "acts"}
    assert document["provenance"]["study"] == STUDY

    train = regnas(
        "regnas.train",
        "--config",
        "best.json",
        "--epochs",
        "1",
        "--train-size",
        "512",
        "--batch-size",
        "64",
        "--data-dir",
        str(idx_dir),
        "--json",
        cwd=tmp_path,
    )
    assert train.returncode == 0, train.stderr
    summary = json.loads(train.stdout)
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert summary["params"] == document["complexity"]["params"]


def test_two_workers_share_study(idx_dir: Path, tmp_path: Path) -> None:
    result = regnas(
        "regnas.search",
        "--trials",
        "3",
        "--study",
        STUDY,
        "--workers",
        "2",
        "--data-dir",
        str(idx_dir),
        *FAST,
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert "w0 trial" in result.stderr
    assert "w1 trial" in result.stderr
    # Each worker checks the total before it starts a trial, so at most one runs past it.
    assert 3 <= finished(tmp_path / "studies" / "regnas.db") <= 4


@pytest.mark.parametrize(("stop_signal", "workers"), [(signal.SIGINT, "1"), (signal.SIGTERM, "2")])
def test_interrupt_then_rerun(
    idx_dir: Path, tmp_path: Path, stop_signal: signal.Signals, workers: str
) -> None:
    command = [sys.executable, "-m", "regnas.search", "--trials", "3", "--study", STUDY]
    command += ["--workers", workers, "--data-dir", str(idx_dir), *FAST]
    storage = tmp_path / "studies" / "regnas.db"
    # A compile cache of its own keeps trials as slow as on a new machine, so that the search is
    # still running when the signal comes, whatever earlier tests compiled.
    environment = {**checkout_environment(), "REGNAS_COMPILE_CACHE": str(tmp_path / "xla")}
    # A shell starts background jobs with SIGINT ignored, and children inherit an ignored signal
    # but not a handler, so with a handler here the search gets the default one.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if storage.exists() and _finished_or_zero(storage) >= 1:
            break
        time.sleep(0.5)
    process.send_signal(stop_signal)
    _, stderr = process.communicate(timeout=300)

    # Shells report a process stopped by a signal as 128 + its number: 130 and 143.
    assert process.returncode == 128 + stop_signal, stderr
    assert "Rerun to continue: python -m regnas.search --trials 3" in stderr
    assert re.search(r"\d+ trials? (was|were) interrupted\.", stderr), stderr
    assert "Traceback" not in stderr
    interrupted = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{storage}")
    assert not interrupted.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    failed = interrupted.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert all(trial.user_attrs["fail_reason"].startswith("interrupted") for trial in failed)
    # No worker outlives the command: the study stops changing once it has exited.
    count = len(interrupted.trials)
    completed = interrupted.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert completed, "the search stopped before any trial completed"
    time.sleep(5)
    assert len(optuna.load_study(study_name=STUDY, storage=f"sqlite:///{storage}").trials) == count

    rerun = subprocess.run(
        command,
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stderr
    resumed = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{storage}")
    for trial in completed:
        kept = resumed.trials[trial.number]
        assert kept.state == optuna.trial.TrialState.COMPLETE, trial.number
        assert kept.values == trial.values, trial.number
        assert kept.params == trial.params, trial.number
    if workers == "1":
        assert finished(storage) == 3
    else:
        assert 3 <= finished(storage) <= 4


def _finished_or_zero(storage: Path) -> int:
    try:
        return finished(storage)
    except (KeyError, ValueError, optuna.exceptions.StorageInternalError, SQLAlchemyError):
        # The search may still be creating the database; opening it at the same moment can
        # also fail on the schema version row (IntegrityError).
        return 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trials", "0"], "--trials must be a positive integer"),
        (["--max-mflops", "-3"], "--max-mflops must be a positive number"),
        (["--max-mflops", "0.001"], "below the cheapest architecture"),
        (["--workers", "0"], "--workers must be a positive integer"),
        (["--storage", "nosuchdb://x"], "Cannot open storage nosuchdb://x"),
        (["--batch-size", "512", "--train-size", "256"], "exceeds --train-size"),
        (["--val-size", "1200"], "--val-size must be in [1, 1199], got 1200"),
        (["--train-size", "1100", "--val-size", "200"], "exceeds the 1200 training images"),
        (["--storage", "postgresql//x"], "a database URL needs '://'"),
        (["--storage", "/nonexistent-regnas-dir/x.db"], "/nonexistent-regnas-dir of the storage"),
        (["--seed", "-1"], "--seed must be an integer >= 0, got -1."),
        (["--epoch-size", "32"], "--epoch-size must be an integer of at least --batch-size (64)"),
        (["--epoch-size", "512"], "--epoch-size 512 exceeds --train-size 256"),
    ],
)
def test_search_bad_input(idx_dir: Path, tmp_path: Path, args: list[str], message: str) -> None:
    common = ["--study", STUDY, "--data-dir", str(idx_dir), *FAST]
    result = regnas("regnas.search", *common, *args, cwd=tmp_path)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(error_lines(result)) == 1
    assert message in error_lines(result)[0]
    assert list(tmp_path.iterdir()) == []


def test_search_bad_compile_cache_writes_nothing(idx_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    options = ["--study", STUDY, "--trials", "1", "--data-dir", str(idx_dir), *FAST]

    result = regnas(
        "regnas.search",
        *options,
        cwd=tmp_path,
        timeout=300,
        extra_env={"REGNAS_COMPILE_CACHE": str(blocker / "xla")},
    )

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert error_lines(result) == [
        f"error: Cannot create the compile cache directory {blocker / 'xla'}: Not a directory. "
        "Set REGNAS_COMPILE_CACHE to a writable directory, or to off."
    ]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a-file"]


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


def database_with_study(path: Path, study: str) -> bytes:
    """Create `study` with one complete trial in the SQLite file `path` and return its bytes."""
    created = optuna.create_study(study_name=study, storage=f"sqlite:///{path}")
    created.enqueue_trial({"depth": 1})
    created.optimize(lambda trial: trial.suggest_int("depth", 1, 2) / 2, n_trials=1)
    return path.read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "--workers must be a positive integer, got 0"),
        (["--trials", "0"], "--trials must be a positive integer"),
        (["--val-size", "1200"], "--val-size must be in [1, 1199], got 1200"),
    ],
)
def test_search_bad_input_keeps_database(
    idx_dir: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    database = tmp_path / "studies" / "regnas.db"
    database.parent.mkdir()
    before = database_with_study(database, STUDY)

    result = regnas(
        "regnas.search", "--study", STUDY, "--data-dir", str(idx_dir), *args, cwd=tmp_path
    )

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(error_lines(result)) == 1
    assert message in error_lines(result)[0]
    assert database.read_bytes() == before
    assert sorted(path.name for path in database.parent.iterdir()) == ["regnas.db"]


def test_search_unreachable_server(idx_dir: Path, tmp_path: Path) -> None:
    # Nothing listens on a port that was free a moment ago.
    url = f"postgresql://regnas@127.0.0.1:{free_port()}/regnas"

    result = regnas(
        "regnas.search", "--storage", url, "--data-dir", str(idx_dir), *FAST, cwd=tmp_path
    )

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(error_lines(result)) == 1
    assert f"error: Cannot open storage {url}: " in error_lines(result)[0]
    assert "Check that the database server is running" in error_lines(result)[0]
    assert list(tmp_path.iterdir()) == []


def test_search_old_schema_explains_upgrade(idx_dir: Path, tmp_path: Path) -> None:
    database = tmp_path / "old.db"
    database_with_study(database, STUDY)
    # A schema revision of Optuna 3.0, which Optuna 5 opens only after an upgrade.
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'v3.0.0.a'")
    before = database.read_bytes()

    result = regnas(
        "regnas.search",
        *("--study", STUDY, "--storage", str(database), "--data-dir", str(idx_dir), *FAST),
        cwd=tmp_path,
    )

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(error_lines(result)) == 1
    assert f"optuna storage upgrade --storage sqlite:///{database}" in error_lines(result)[0]
    assert database.read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["old.db"]


def test_export_unknown_study_lists_studies(tmp_path: Path) -> None:
    database = tmp_path / "studies" / "regnas.db"
    database.parent.mkdir()
    before = database_with_study(database, "present")

    result = regnas("regnas.export", "--study", "absent", cwd=tmp_path, timeout=120)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: Study 'absent' not found in sqlite:///{database}. Studies there: present."
    ]
    assert database.read_bytes() == before
    assert sorted(path.name for path in database.parent.iterdir()) == ["regnas.db"]


def test_missing_data_explains_fix(tmp_path: Path) -> None:
    env = {**checkout_environment(), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-m", "regnas.train", "--config", "missing.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )

    assert result.returncode == 2
    assert "missing.json not found" in result.stderr
    assert "python -m regnas.export" in result.stderr


def test_export_of_empty_study_fails(tmp_path: Path) -> None:
    storage = tmp_path / "empty.db"
    optuna.create_study(study_name="empty", storage=f"sqlite:///{storage}")

    result = regnas(
        "regnas.export",
        "--study",
        "empty",
        "--storage",
        str(storage),
        "--output",
        "out.json",
        cwd=tmp_path,
        timeout=120,
    )

    assert result.returncode == 2
    assert "has no completed trial yet" in result.stderr
    assert not (tmp_path / "out.json").exists()


@requires_real_data
def test_search_on_real_fashion_mnist(tmp_path: Path) -> None:
    args = "--trials 2 --study real --workers 1 --epochs 2 --train-size 2048 --batch-size 64"
    result = regnas("regnas.search", *args.split(), "--val-size", "512", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "Data: /usr/share/datasets/fashion-mnist (60000 training images)" in result.stdout
    study = optuna.load_study(
        study_name="real", storage=f"sqlite:///{tmp_path / 'studies' / 'regnas.db'}"
    )
    # Two epochs of 32 steps on real images learn far beyond the 10 % of chance.
    assert study.best_value > 0.3


def test_search_with_missing_data_dir_writes_nothing(tmp_path: Path) -> None:
    result = run_module(
        "regnas.search", "--trials", "1", "--data-dir", "fashoin-mnist", cwd=tmp_path
    )

    assert result.returncode == 2
    assert "Data directory fashoin-mnist" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []
