"""Storage arguments: paths become absolute SQLite URLs, mistyped URLs raise clear errors."""

from __future__ import annotations

from pathlib import Path
import subprocess
import sys

import pytest

from regnas.storage import mask_password, open_storage, resolve_storage, sqlite_path


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
