"""The status command: counts by state, RUNNING trials, failing stale trials, bad input."""

from __future__ import annotations

from pathlib import Path
import time

import optuna
import pytest

from regnas.storage import GRACE_PERIOD_ENV, HEARTBEAT_INTERVAL_ENV, open_storage
from regnas.trials import REJECTED_KEY, REJECTION_CAUSE

from conftest import run_module


State = optuna.trial.TrialState


def make_study(storage: str) -> tuple[optuna.Study, optuna.trial.Trial]:
    """Create study 'status' with one complete trial and one RUNNING trial that has params."""
    study = optuna.create_study(study_name="status", storage=open_storage(storage))
    done = study.ask()
    done.suggest_int("depth", 1, 4)
    study.tell(done, 0.5)
    running = study.ask()
    running.suggest_int("depth", 1, 4)
    running.set_user_attr("worker_host", "node7")
    running.set_user_attr("worker_pid", 4242)
    return study, running


def test_lists_running_trials(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'status.db'}"
    make_study(storage)

    result = run_module("regnas.status", "--study", "status", "--storage", storage, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "2 trials: 1 RUNNING, 1 COMPLETE, 0 PRUNED, 0 FAIL, 0 WAITING" in result.stdout
    assert "RUNNING trial 1: started " in result.stdout
    assert "worker node7 pid 4242" in result.stdout


def test_rejected_samples_counted_apart(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'status.db'}"
    study, _ = make_study(storage)
    rejected = study.ask()
    rejected.set_user_attr(REJECTED_KEY, "above 5 MFLOPs")
    study.tell(rejected, state=State.PRUNED)

    result = run_module("regnas.status", "--study", "status", "--storage", storage, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "3 trials: 1 RUNNING, 1 COMPLETE, 1 PRUNED" in result.stdout
    assert f"1 of the PRUNED are samples rejected before training ({REJECTION_CAUSE})" in (
        result.stdout
    )


def test_journal_fails_old_running_trial(tmp_path: Path) -> None:
    storage = f"journal://{tmp_path / 'status.log'}"
    _, running = make_study(storage)
    time.sleep(1.5)

    result = run_module(
        "regnas.status",
        *("--study", "status", "--storage", storage, "--fail-stale", "--older-than", "1"),
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert "Failed 1 stale trial and queued its retry: 1." in result.stdout
    study = optuna.load_study(study_name="status", storage=open_storage(storage))
    failed = study.trials[running.number]
    assert failed.state == State.FAIL
    assert failed.user_attrs["fail_reason"].startswith("stale: RUNNING for more than 1 s")
    retries = study.get_trials(states=(State.WAITING,))
    assert len(retries) == 1
    assert retries[0].params == failed.params
    assert retries[0].system_attrs["failed_trial"] == running.number


def test_journal_keeps_recent_running_trial(tmp_path: Path) -> None:
    storage = f"journal://{tmp_path / 'status.log'}"
    make_study(storage)

    result = run_module(
        "regnas.status",
        *("--study", "status", "--storage", storage, "--fail-stale", "--older-than", "3600"),
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert "No stale trials found, so none was failed or queued." in result.stdout
    assert "1 RUNNING" in result.stdout


def test_journal_fail_stale_needs_age(tmp_path: Path) -> None:
    storage = f"journal://{tmp_path / 'status.log'}"
    make_study(storage)

    result = run_module(
        "regnas.status", "--study", "status", "--storage", storage, "--fail-stale", cwd=tmp_path
    )

    assert result.returncode == 2
    assert "records no heartbeats, so --fail-stale needs --older-than SECONDS" in result.stderr


def test_sqlite_fails_trial_without_heartbeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HEARTBEAT_INTERVAL_ENV, "1")
    monkeypatch.setenv(GRACE_PERIOD_ENV, "2")
    storage = f"sqlite:///{tmp_path / 'status.db'}"
    study, running = make_study(storage)
    # A worker's heartbeat thread records beats; this one beats once and then "dies".
    study._storage.record_heartbeat(running._trial_id)  # type: ignore[attr-defined]
    time.sleep(3)

    result = run_module(
        "regnas.status", "--study", "status", "--storage", storage, "--fail-stale", cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    assert "Failed 1 stale trial and queued its retry: 1." in result.stdout
    reloaded = optuna.load_study(study_name="status", storage=storage)
    assert reloaded.trials[running.number].state == State.FAIL
    assert len(reloaded.get_trials(states=(State.WAITING,))) == 1


def test_unknown_study_lists_known(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'status.db'}"
    make_study(storage)

    result = run_module("regnas.status", "--study", "absent", "--storage", storage, cwd=tmp_path)

    assert result.returncode == 2
    assert "Study 'absent' not found" in result.stderr
    assert "Studies there: status." in result.stderr


def test_older_than_needs_fail_stale(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'status.db'}"
    make_study(storage)

    result = run_module(
        "regnas.status",
        "--study",
        "status",
        "--storage",
        storage,
        "--older-than",
        "5",
        cwd=tmp_path,
    )

    assert result.returncode == 2
    assert "--older-than only applies with --fail-stale" in result.stderr
