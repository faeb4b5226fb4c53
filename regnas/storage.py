"""Optuna storages: resolve the `--storage` argument and open it with settings for workers.

A plain path, or no argument at all, means a SQLite file; anything with ``://`` is an Optuna
storage URL and is passed through.
"""

from __future__ import annotations

import logging
from pathlib import Path
import re
import time
from typing import Any

import optuna
import sqlalchemy.exc


_logger = logging.getLogger(__name__)

DEFAULT_STORAGE_PATH = Path("studies") / "regnas.db"
# Seconds a SQLite connection waits for another writer's lock before failing.
SQLITE_BUSY_TIMEOUT = 60.0
_SCHEMA_RETRIES = 5
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
# A database scheme followed by ":" or "//" but not "://" is a mistyped URL, not a file name.
_MISTYPED_URL = re.compile(
    r"^(sqlite|postgres|postgresql|mysql|mariadb|oracle|mssql)[+\w]*(:|//)", re.I
)


def resolve_storage(value: str | None) -> str:
    """Return a storage URL: a SQLite URL with an absolute path for a file path or None.

    Args:
        value: A storage URL, a path to a SQLite file, or None for ``studies/regnas.db``.
    """
    if value is not None and not value.strip():
        raise ValueError("--storage is empty; pass a URL such as sqlite:///studies/regnas.db.")
    if value is not None and "://" in value:
        if not _URL_SCHEME.match(value):
            raise ValueError(
                f"Invalid storage URL {value!r}; expected SCHEME://..., for example "
                "sqlite:///studies/regnas.db or postgresql://user@host/db."
            )
        if value.startswith("sqlite:///") and value != "sqlite:///:memory:":
            return "sqlite:///" + str(Path(value[len("sqlite:///") :]).expanduser().resolve())
        return value
    if value is not None and _MISTYPED_URL.match(value):
        raise ValueError(
            f"Invalid storage URL {value!r}: a database URL needs '://', for example "
            "postgresql://user@host/db or sqlite:///studies/regnas.db."
        )
    path = Path(value).expanduser() if value is not None else DEFAULT_STORAGE_PATH
    if path.is_dir():
        raise ValueError(
            f"--storage {value!r} is a directory; pass a SQLite file such as {path / 'regnas.db'}."
        )
    return "sqlite:///" + str(path.resolve())


def sqlite_path(url: str) -> Path | None:
    """Return the file of a SQLite URL, or None for other storages."""
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return Path(url[len("sqlite:///") :])
    return None


def open_storage(url: str, create: bool = True) -> optuna.storages.BaseStorage:
    """Open an Optuna storage; raise ValueError with the URL and the fix when that fails.

    Args:
        url: A storage URL (see `resolve_storage`).
        create: Whether a missing SQLite file may be created. Read-only commands pass False so
            that a mistyped path is reported instead of leaving an empty database behind.
    """
    engine_kwargs: dict[str, Any] = {}
    path = sqlite_path(url)
    if path is not None:
        if not create and not path.is_file():
            raise ValueError(
                f"Storage file {path} does not exist. Pass the --storage that the search used."
            )
        if not path.parent.is_dir():
            # Only the default location is created: a mistyped path must not make directories.
            if path != DEFAULT_STORAGE_PATH.resolve():
                raise ValueError(
                    f"Directory {path.parent} of the storage file does not exist; create it or "
                    "pass another --storage."
                )
            path.parent.mkdir(parents=True)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT}
    try:
        return _create_rdb_storage(url, engine_kwargs)
    except ImportError as error:
        raise ValueError(
            f"Cannot open storage {mask_password(url)}: {error}. Install the database driver, "
            "for example 'pip install psycopg2-binary' for PostgreSQL."
        ) from None
    except Exception as error:  # SQLAlchemy and Optuna raise many types for a bad URL.
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(
            f"Cannot open storage {mask_password(url)}: {first_line}. Use a URL that SQLAlchemy "
            "supports, such as sqlite:///FILE or postgresql://USER@HOST/DB, with its driver "
            "installed."
        ) from None


def _create_rdb_storage(url: str, engine_kwargs: dict[str, Any]) -> optuna.storages.RDBStorage:
    # Processes that open a new database at once (workers, a dashboard) race to create the
    # schema. The loser fails with "table ... already exists", a duplicate alembic_version row
    # or a lock; a retry then finds the finished schema.
    for attempt in range(_SCHEMA_RETRIES):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError) as error:
            text = str(error)
            race = any(mark in text for mark in ("already exists", "alembic_version", "locked"))
            if not race or attempt == _SCHEMA_RETRIES - 1:
                raise
            _logger.debug("Schema creation raced with another process; retrying: %s", error)
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def mask_password(url: str) -> str:
    """Return `url` with any password replaced by ***, for logs and exported files."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return sorted(summary.study_name for summary in optuna.get_all_study_summaries(storage))


def load_existing_study(
    name: str, storage: optuna.storages.BaseStorage, storage_url: str
) -> optuna.Study:
    """Load a study, or raise ValueError listing the studies that the storage has."""
    names = study_names(storage)
    if name not in names:
        known = ", ".join(names) if names else "none"
        raise ValueError(
            f"Study {name!r} not found in {mask_password(storage_url)}. Studies there: {known}."
        )
    return optuna.load_study(study_name=name, storage=storage)
