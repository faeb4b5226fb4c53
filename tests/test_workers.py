"""Worker processes on shared storages: killed workers, 4 SQLite workers beside a dashboard,
reproducible single-worker studies, journal files, PostgreSQL."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
import sqlite3
import subprocess
import sys
import threading
import time
from typing import Any
import urllib.request
import uuid

import optuna
import pytest

from regnas import workers
from regnas.browser import running_dashboard
from regnas.engine import DeviceData
from regnas.storage import GRACE_PERIOD_ENV, HEARTBEAT_INTERVAL_ENV, open_storage
from regnas.study import Objective, SearchConfig, count_finished, make_objective

from conftest import REPO, TINY_SPACE


pytestmark = pytest.mark.slow

POSTGRES_URL_ENV = "REGNAS_TEST_POSTGRES_URL"
FAST = ["--epochs", "1", "--train-size", "256", "--val-size", "128", "--batch-size", "64"]
# The smallest RegNets (one or two stages, 8 to 40 channels), so that trials compile in seconds.
TINY_SPACE_TOML = """space = "regnetx"
depth = [1, 2]
w0 = [8, 16]
wa = [8.0, 16.0]
wm = [2.0, 3.0]
group_w = [8]
bot_mul = [1.0]
"""
State = optuna.trial.TrialState


def search_command(
    idx_dir: Path, tmp_path: Path, storage: str, study: str, trials: int, workers: int
) -> list[str]:
    space = tmp_path / "tiny.toml"
    space.write_text(TINY_SPACE_TOML)
    return [
        sys.executable,
        "-m",
        "regnas.search",
        "--study",
        study,
        "--storage",
        storage,
        "--trials",
        str(trials),
        "--workers",
        str(workers),
        "--space-config",
        str(space),
        "--data-dir",
        str(idx_dir),
        *FAST,
    ]


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def run(command: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,
        env=environment(**extra),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def load(storage: str, study: str) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=open_storage(storage, create=False))


def training_trial_number(database: Path) -> int | None:
    """Return the number of a RUNNING trial that got past sampling (it has a seed), if any."""
    if not database.exists():
        return None
    try:
        with sqlite3.connect(database, timeout=1) as connection:
            row = connection.execute(
                "SELECT t.number FROM trials t JOIN trial_user_attributes a "
                "ON a.trial_id = t.trial_id WHERE t.state = 'RUNNING' AND a.key = 'train_seed'"
            ).fetchone()
    except sqlite3.OperationalError:
        return None  # The search has not created the tables yet, or holds a lock.
    return None if row is None else int(row[0])


def test_killed_trial_is_retried(idx_dir: Path, tmp_path: Path) -> None:
    database = tmp_path / "kill.db"
    storage = f"sqlite:///{database}"
    command = search_command(idx_dir, tmp_path, str(database), "kill", trials=2, workers=1)
    heartbeat = {HEARTBEAT_INTERVAL_ENV: "1", GRACE_PERIOD_ENV: "3"}
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=environment(**heartbeat),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    killed = None
    while killed is None and time.monotonic() < deadline and process.poll() is None:
        killed = training_trial_number(database)
        time.sleep(0.1)
    process.kill()
    process.wait(timeout=60)
    assert killed is not None, "no trial started training before the search ended"
    time.sleep(4)  # Let the killed trial's last heartbeat age past the grace period.

    rerun = run(command, tmp_path, **heartbeat)

    assert rerun.returncode == 0, rerun.stderr
    study = load(storage, "kill")
    original = study.trials[killed]
    assert original.state == State.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1
    assert retries[0].params == original.params
    assert retries[0].state in (State.COMPLETE, State.PRUNED)
    assert retries[0].user_attrs["worker_pid"] != original.user_attrs["worker_pid"]
    assert count_finished(study) == 2


def test_trial_failed_elsewhere_keeps_worker(
    idx_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    storage = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    config = SearchConfig(
        study="elsewhere",
        storage=storage,
        trials=2,
        epochs=1,
        train_size=256,
        val_size=128,
        batch_size=64,
        max_mflops=None,
        data_dir=str(idx_dir),
        space=TINY_SPACE,
    )
    failed_numbers = []

    def make_failing_objective(config: SearchConfig, device_data: DeviceData) -> Objective:
        objective = make_objective(config, device_data)

        def fail_first_trial(trial: optuna.Trial) -> float | list[float]:
            # Another process (a stale-heartbeat check) fails the first trial while it runs.
            if not failed_numbers:
                failed_numbers.append(trial.number)
                trial.study._storage.set_trial_state_values(trial._trial_id, State.FAIL)
            return objective(trial)

        return fail_first_trial

    monkeypatch.setattr(workers, "make_objective", make_failing_objective)
    caplog.set_level(logging.WARNING, logger="regnas")

    assert workers.run_search(config, workers=1) == 2

    study = load(storage, "elsewhere")
    assert study.trials[failed_numbers[0]].state == State.FAIL
    assert count_finished(study) == 2
    # Optuna's own warning quotes the error too when its logger propagates (another test's doing).
    lost = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("regnas") and "marked failed by another" in r.message
    ]
    assert len(lost) == 1
    assert lost[0].startswith(f"Trial {failed_numbers[0]} was marked failed")


class DashboardPoller(threading.Thread):
    """Reads every study and its trials from optuna-dashboard's JSON API until stopped."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.trial_counts: list[int] = []

    def get(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.base}{path}", timeout=60) as response:
            return json.loads(response.read())

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                summaries = self.get("/api/studies")["study_summaries"]
                for summary in summaries:
                    detail = self.get(f"/api/studies/{summary['study_id']}?after=0")
                    self.trial_counts.append(len(detail["trials"]))
            except (OSError, ValueError, KeyError) as error:  # urllib's errors are OSErrors.
                self.errors.append(f"{type(error).__name__}: {error}")
            time.sleep(0.2)


def study_exists(database: Path, study: str) -> bool:
    try:
        with sqlite3.connect(database, timeout=1) as connection:
            query = "SELECT 1 FROM studies WHERE study_name = ?"
            return connection.execute(query, (study,)).fetchone() is not None
    except sqlite3.OperationalError:
        return False  # The search has not created the tables yet, or holds a lock.


def test_four_sqlite_workers_with_dashboard(idx_dir: Path, tmp_path: Path) -> None:
    database = tmp_path / "four.db"
    command = search_command(idx_dir, tmp_path, str(database), "four", trials=8, workers=4)
    log = tmp_path / "search.log"

    with log.open("w") as output:
        process = subprocess.Popen(
            command, cwd=tmp_path, env=environment(), stdout=output, stderr=subprocess.STDOUT
        )
        try:
            # optuna-dashboard does not create tables, so it starts once the study exists.
            deadline = time.monotonic() + 300
            while not study_exists(database, "four") and time.monotonic() < deadline:
                time.sleep(0.2)
            with running_dashboard(f"sqlite:///{database}") as base:
                poller = DashboardPoller(base)
                poller.start()
                try:
                    returncode = process.wait(timeout=900)
                finally:
                    poller.stop.set()
                    poller.join(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
    text = log.read_text()

    assert returncode == 0, text
    assert "database is locked" not in text
    assert "w3 trial" in text
    assert poller.errors == []
    # The dashboard read the study while trials were being added, not only before or after.
    assert len(set(poller.trial_counts)) > 2
    study = load(f"sqlite:///{database}", "four")
    assert study.get_trials(states=(State.FAIL,)) == []
    # Each worker checks the total before it starts a trial, so at most 3 run past it.
    assert 8 <= count_finished(study) <= 8 + 3


def test_one_worker_repeats_study(idx_dir: Path, tmp_path: Path) -> None:
    studies = []
    for name in ("first", "second"):
        database = tmp_path / f"{name}.db"
        command = search_command(idx_dir, tmp_path, str(database), "seeded", trials=3, workers=1)
        result = run([*command, "--seed", "7"], tmp_path)
        assert result.returncode == 0, result.stderr
        studies.append(load(f"sqlite:///{database}", "seeded").trials)

    first, second = studies
    assert len(first) == len(second)
    for one, other in zip(first, second, strict=True):
        assert one.state == other.state, one.number
        assert one.params == other.params, one.number
        # A trial that reuses an identical architecture's result trains nothing and has no seed.
        assert one.user_attrs.get("train_seed") == other.user_attrs.get("train_seed")
        # Equal seeds must give equal accuracies, up to float32 rounding in the last bit.
        assert one.values == pytest.approx(other.values, rel=1e-6), one.number
        assert one.intermediate_values == pytest.approx(other.intermediate_values, rel=1e-6)
    trained = [trial for trial in first if "train_seed" in trial.user_attrs]
    assert trained
    for trial in trained:
        assert trial.user_attrs["train_seed"] == SearchConfig(seed=7).trial_seed(trial.number)


def test_two_workers_on_journal_file(idx_dir: Path, tmp_path: Path) -> None:
    storage = f"journal://{tmp_path / 'study.log'}"
    command = search_command(idx_dir, tmp_path, storage, "journal", trials=4, workers=2)

    result = run(command, tmp_path)

    assert result.returncode == 0, result.stderr
    assert f"Storage: {storage}\n" in result.stdout
    assert "w0 trial" in result.stderr
    assert "w1 trial" in result.stderr
    assert 4 <= count_finished(load(storage, "journal")) <= 5


@pytest.mark.skipif(
    not os.environ.get(POSTGRES_URL_ENV),
    reason=f"{POSTGRES_URL_ENV} is unset; .ci/run starts a PostgreSQL server and sets it",
)
def test_two_workers_on_postgresql(idx_dir: Path, tmp_path: Path) -> None:
    storage = os.environ[POSTGRES_URL_ENV]
    # A new study name per run, because the database outlives the test.
    study = f"pg-{uuid.uuid4().hex[:8]}"
    command = search_command(idx_dir, tmp_path, storage, study, trials=4, workers=2)

    result = run(command, tmp_path)

    assert result.returncode == 0, result.stderr
    assert "w0 trial" in result.stderr
    assert "w1 trial" in result.stderr
    loaded = load(storage, study)
    assert 4 <= count_finished(loaded) <= 5
    assert loaded.get_trials(states=(State.FAIL,)) == []


# Runs a two-worker search whose process starts are recorded instead of made, and prints for
# each start the method, whether this parent process has a JAX backend, and whether the study
# already exists.
RECORD_STARTS = """
import json
import sys

import optuna
from jax._src import xla_bridge

from regnas import workers
from regnas.study import SearchConfig

storage_url, data_dir = sys.argv[1:]
starts = []


class FinishedProcess:
    pid = None
    exitcode = 0

    def start(self):
        pass

    def is_alive(self):
        return False


class RecordingContext:
    def __init__(self, method):
        self.method = method

    def Process(self, **kwargs):
        studies = optuna.get_all_study_names(storage_url)
        starts.append([self.method, xla_bridge.backends_are_initialized(), "spawn" in studies])
        return FinishedProcess()


workers.multiprocessing.get_context = RecordingContext
config = SearchConfig(
    study="spawn", storage=storage_url, trials=2, data_dir=data_dir, train_size=256, val_size=128
)
workers.run_search(config, workers=2)
print(json.dumps(starts))
"""


def test_workers_spawn_after_study_without_jax(idx_dir: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'spawn.db'}"

    result = run([sys.executable, "-c", RECORD_STARTS, storage, str(idx_dir)], tmp_path)

    assert result.returncode == 0, result.stderr
    starts = json.loads(result.stdout.strip().splitlines()[-1])
    # A forked child of a process with a JAX backend gets its locks but not the threads that
    # hold them, so it can deadlock.
    assert starts == [["spawn", False, True], ["spawn", False, True]]


@pytest.mark.parametrize(
    ("cpus", "count", "expected"),
    [
        ([0, 1], 1, [[0, 1]]),
        ([0, 1], 2, [[0], [1]]),
        ([0, 1], 4, [[0], [1], [0], [1]]),
        ([0, 1, 2, 3], 2, [[0, 2], [1, 3]]),
        ([5, 7, 9], 3, [[5], [7], [9]]),
    ],
)
def test_every_worker_is_pinned_to_cores(
    cpus: list[int], count: int, expected: list[list[int]]
) -> None:
    shares = [workers._cpu_share(cpus, count, index) for index in range(count)]
    assert shares == expected
