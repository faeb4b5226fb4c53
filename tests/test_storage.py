"""Storage arguments and opening: SQLite paths, journal files, heartbeats, clear errors."""

from __future__ import annotations

from pathlib import Path
import sqlite3
import subprocess
import sys

import optuna
import pytest

from regnas.storage import (
    GRACE_PERIOD,
    GRACE_PERIOD_ENV,
    HEARTBEAT_INTERVAL,
    HEARTBEAT_INTERVAL_ENV,
    heartbeat_settings,
    journal_path,
    mask_password,
    open_storage,
    resolve_storage,
    sqlite_path,
)

from conftest import run_module


def test_default_is_absolute_sqlite(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)

    url = resolve_storage(None)

    assert url == f"sqlite:///{tmp_path / 'studies' / 'regnas.db'}"
    assert sqlite_path(url) == tmp_path / "studies" / "regnas.db"


def test_plain_path_becomes_sqlite_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)

    assert resolve_storage("runs/a.db") == f"sqlite:///{tmp_path / 'runs' / 'a.db'}"
    assert resolve_storage("sqlite:///b.db") == f"sqlite:///{tmp_path / 'b.db'}"


def test_other_urls_pass_through() -> None:
    url = "postgresql://user:secret@127.0.0.1:5432/regnas"

    assert resolve_storage(url) == url
    assert sqlite_path(url) is None
    assert mask_password(url) == "postgresql://user:***@127.0.0.1:5432/regnas"


@pytest.mark.parametrize("value", ["postgresql//x", "sqlite:/x.db", "mysql:host/db"])
def test_mistyped_url_raises(value: str) -> None:
    with pytest.raises(ValueError, match="needs '://'"):
        resolve_storage(value)


def test_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is a directory"):
        resolve_storage(str(tmp_path))


def test_empty_value_raises() -> None:
    with pytest.raises(ValueError, match="--storage is empty"):
        resolve_storage(" ")


def test_read_only_open_needs_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing.db'}"

    with pytest.raises(ValueError, match="does not exist"):
        open_storage(url, create=False)
    assert not (tmp_path / "missing.db").exists()


def test_unknown_driver_raises() -> None:
    with pytest.raises(ValueError, match="Cannot open storage nosuchdb://x"):
        open_storage("nosuchdb://x")


@pytest.mark.parametrize(
    ("url", "advice"),
    [
        ("mysql://user@127.0.0.1/db", "'pip install mysqlclient' for mysql:// URLs"),
        ("mssql+pyodbc://user@127.0.0.1/db", "the package that provides the 'pyodbc' module"),
    ],
)
def test_missing_driver_names_its_package(url: str, advice: str) -> None:
    with pytest.raises(ValueError, match=r"not installed\. Install the database driver") as error:
        open_storage(url)

    assert advice in str(error.value)
    assert "psycopg" not in str(error.value)


def test_unopenable_journal_file_raises() -> None:
    with pytest.raises(
        ValueError,
        match=r"^Cannot open the journal file /proc/regnas\.log: No such file or directory\. ",
    ):
        open_storage("journal:///proc/regnas.log")


def test_concurrent_schema_creation(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    script = (
        "import sys; from regnas.storage import open_storage; "
        "import optuna; optuna.create_study(study_name='s', storage=open_storage(sys.argv[1]), "
        "load_if_exists=True)"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script, url], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    errors = [process.communicate(timeout=120)[1] for process in processes]

    assert [process.returncode for process in processes] == [0, 0, 0, 0], "\n".join(errors)


def test_journal_url_resolves_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)

    assert resolve_storage("journal:///tmp/a.log") == "journal:///tmp/a.log"
    assert resolve_storage("journal://runs/a.log") == f"journal://{tmp_path / 'runs' / 'a.log'}"
    assert journal_path(resolve_storage("journal://a.log")) == tmp_path / "a.log"
    assert sqlite_path("journal:///tmp/a.log") is None


@pytest.mark.parametrize("value", ["journal://", "journal://  "])
def test_journal_without_file_raises(value: str) -> None:
    with pytest.raises(ValueError, match="a journal storage needs a file"):
        resolve_storage(value)


def test_journal_opens_journal_storage(tmp_path: Path) -> None:
    url = resolve_storage(f"journal://{tmp_path / 'study.log'}")

    storage = open_storage(url)
    optuna.create_study(study_name="s", storage=storage)

    assert isinstance(storage, optuna.storages.JournalStorage)
    assert (tmp_path / "study.log").stat().st_size > 0
    with pytest.raises(ValueError, match="does not exist"):
        open_storage(f"journal://{tmp_path / 'missing.log'}", create=False)


def test_rdb_storage_has_heartbeat(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'beat.db'}"

    storage = open_storage(url)

    assert isinstance(storage, optuna.storages.RDBStorage)
    assert storage.get_heartbeat_interval() == HEARTBEAT_INTERVAL
    assert storage.grace_period == GRACE_PERIOD
    monkeypatch.setenv(HEARTBEAT_INTERVAL_ENV, "2")
    monkeypatch.setenv(GRACE_PERIOD_ENV, "5")
    assert heartbeat_settings() == (2, 5)


@pytest.mark.parametrize(("interval", "grace"), [("0", "5"), ("x", "5"), ("5", "5")])
def test_bad_heartbeat_settings_raise(
    monkeypatch: pytest.MonkeyPatch, interval: str, grace: str
) -> None:
    monkeypatch.setenv(HEARTBEAT_INTERVAL_ENV, interval)
    monkeypatch.setenv(GRACE_PERIOD_ENV, grace)

    with pytest.raises(ValueError, match="REGNAS_"):
        heartbeat_settings()


@pytest.mark.parametrize(
    ("revision", "message"),
    [
        ("v3.0.0.a", "Back up the database, then upgrade it with: optuna storage upgrade"),
        ("v99.0.0.a", "was written by a newer Optuna (99.0.0) than the installed"),
    ],
)
def test_incompatible_schema_explains_upgrade(tmp_path: Path, revision: str, message: str) -> None:
    database = tmp_path / "old.db"
    url = f"sqlite:///{database}"
    optuna.create_study(study_name="s", storage=url)
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE alembic_version SET version_num = ?", (revision,))
        connection.execute("UPDATE version_info SET library_version = ?", (revision[1:-2],))

    with pytest.raises(ValueError) as raised:
        open_storage(url)

    text = str(raised.value)
    assert message in text
    assert "\n" not in text


def test_incompatible_schema_command_fails(tmp_path: Path) -> None:
    database = tmp_path / "old.db"
    url = f"sqlite:///{database}"
    optuna.create_study(study_name="s", storage=url)
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'v3.0.0.a'")

    result = run_module("regnas.status", "--study", "s", "--storage", url, cwd=tmp_path)

    assert result.returncode == 2
    assert f"optuna storage upgrade --storage {url}" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
