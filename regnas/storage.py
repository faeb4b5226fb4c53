"""Optuna storages: resolve the `--storage` argument and open it with settings for workers.

A plain path, or no argument at all, means a SQLite file. ``journal://PATH`` means Optuna's
journal file at PATH (everything after ``journal://``, so ``journal:///tmp/a.log`` is absolute).
Anything else with ``://`` is an Optuna RDB storage URL and is passed through.

RDB storages record heartbeats of running trials: a trial whose worker stopped beating (killed,
preempted, out of memory) is marked FAIL by the next worker that starts a trial, and Optuna
queues one retry with the same parameters. Journal storages record no heartbeats, so stale
trials there are failed with ``python -m regnas.status --fail-stale``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
import re
import time
from typing import Any
import warnings

import optuna
from optuna.storages.journal import JournalFileBackend
import sqlalchemy.exc


_logger = logging.getLogger(__name__)

DEFAULT_STORAGE_PATH = Path("studies") / "regnas.db"
# Seconds a SQLite connection waits for another writer's lock before failing.
SQLITE_BUSY_TIMEOUT = 60.0
# Seconds between two heartbeats of a running trial, and seconds without one after which the
# trial is stale. The heartbeat thread needs the GIL and a database write, so a compile, an epoch
# or a SQLite lock wait (up to SQLITE_BUSY_TIMEOUT) can delay a beat. On a 2-core machine busy
# with other jobs, the slowest compile seen took about 55 s and an epoch of the default search
# 15-30 s. The grace period exceeds one interval plus all three delays, so that live trials are
# not failed. The price is that a killed trial waits 5 minutes for its retry.
HEARTBEAT_INTERVAL = 60
GRACE_PERIOD = 300
# Environment variables that shorten both, so that tests can kill a worker and see the retry.
HEARTBEAT_INTERVAL_ENV = "REGNAS_HEARTBEAT_INTERVAL"
GRACE_PERIOD_ENV = "REGNAS_GRACE_PERIOD"
# A trial failed for a stale heartbeat is queued again once; a second failure stays failed.
MAX_RETRY = 1
JOURNAL_SCHEME = "journal://"
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
    if value is not None and value.startswith(JOURNAL_SCHEME):
        return JOURNAL_SCHEME + str(_journal_file(value).resolve())
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


def _journal_file(url: str) -> Path:
    text = url[len(JOURNAL_SCHEME) :]
    if not text.strip():
        raise ValueError(
            f"Invalid storage URL {url!r}: a journal storage needs a file, for example "
            "journal:///shared/regnas.log (absolute) or journal://studies/regnas.log (relative)."
        )
    path = Path(text).expanduser()
    if path.is_dir():
        raise ValueError(
            f"--storage {url!r} is a directory; pass a journal file such as "
            f"{JOURNAL_SCHEME}{path / 'regnas.log'}."
        )
    return path


def sqlite_path(url: str) -> Path | None:
    """Return the file of a SQLite URL, or None for other storages."""
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return Path(url[len("sqlite:///") :])
    return None


def journal_path(url: str) -> Path | None:
    """Return the file of a ``journal://`` URL, or None for other storages."""
    return Path(url[len(JOURNAL_SCHEME) :]) if url.startswith(JOURNAL_SCHEME) else None


def storage_file(url: str) -> Path | None:
    """Return the file of a SQLite or journal storage, or None for database servers."""
    return sqlite_path(url) or journal_path(url)


def open_storage(url: str, create: bool = True) -> optuna.storages.BaseStorage:
    """Open an Optuna storage; raise ValueError with the URL and the fix when that fails.

    Args:
        url: A storage URL (see `resolve_storage`).
        create: Whether a missing SQLite or journal file may be created. Read-only commands
            pass False so that a mistyped path is reported instead of leaving an empty file.
    """
    engine_kwargs: dict[str, Any] = {}
    path = storage_file(url)
    if path is not None:
        _check_storage_file(path, create)
    if journal_path(url) is not None:
        try:
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        except OSError as error:
            raise ValueError(
                f"Cannot open the journal file {path}: {error.strerror or error}. Pass a "
                "--storage journal file in a directory you can write to."
            ) from None
    if path is not None:
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT}
    interval, grace = heartbeat_settings()
    try:
        return _create_rdb_storage(url, engine_kwargs, interval, grace)
    except ImportError as error:
        # Optuna rewraps the driver's ImportError; the original names the missing module.
        cause = error.__cause__
        module = cause.name if isinstance(cause, ImportError) and cause.name else None
        missing = f"driver module {module!r} is not installed" if module else str(error)
        scheme = url.partition("://")[0].partition("+")[0]
        advice = _DRIVER_ADVICE.get(scheme) or (
            f"the package that provides the {module!r} module"
            if module
            else f"the one that SQLAlchemy documents for {scheme}:// URLs"
        )
        raise ValueError(
            f"Cannot open storage {mask_password(url)}: {missing}. Install the database "
            f"driver: {advice}."
        ) from None
    except Exception as error:  # SQLAlchemy and Optuna raise many types for a bad URL.
        if "no longer compatible with the table schema" in str(error):
            raise ValueError(incompatible_schema_message(url, str(error))) from None
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        if isinstance(error, sqlalchemy.exc.OperationalError) and path is None:
            # The URL parsed and the driver loaded, so the server was not reachable or
            # rejected the login or the database name.
            raise ValueError(
                f"Cannot open storage {mask_password(url)}: {first_line}. Check that the "
                "database server is running and reachable, and that the URL's user, password "
                "and database name are right."
            ) from None
        raise ValueError(
            f"Cannot open storage {mask_password(url)}: {first_line}. Use a URL that SQLAlchemy "
            "supports, such as sqlite:///FILE or postgresql://USER@HOST/DB, with its driver "
            "installed."
        ) from None


# Driver installation advice for the most common URL schemes.
_DRIVER_ADVICE = {
    "postgresql": "'pip install \"psycopg[binary]\"' (SQLAlchemy 2.1 uses psycopg 3 for "
    "postgresql:// URLs; psycopg2 needs postgresql+psycopg2://)",
    "mysql": "'pip install mysqlclient' for mysql:// URLs, or PyMySQL with mysql+pymysql://",
}


def _check_storage_file(path: Path, create: bool) -> None:
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


def heartbeat_settings() -> tuple[int, int]:
    """Return the heartbeat interval and grace period in seconds, from the environment if set."""
    settings = []
    for name, default in (
        (HEARTBEAT_INTERVAL_ENV, HEARTBEAT_INTERVAL),
        (GRACE_PERIOD_ENV, GRACE_PERIOD),
    ):
        text = os.environ.get(name, "").strip()
        if not text:
            settings.append(default)
            continue
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"{name} must be a positive whole number of seconds, got {text!r}.")
        settings.append(int(text))
    interval, grace = settings
    if grace <= interval:
        raise ValueError(
            f"{GRACE_PERIOD_ENV} ({grace} s) must exceed {HEARTBEAT_INTERVAL_ENV} "
            f"({interval} s), or live trials are failed between two heartbeats."
        )
    return interval, grace


def incompatible_schema_message(url: str, optuna_message: str) -> str:
    """Return the one-line error for a database whose schema another Optuna version wrote."""
    found = re.search(r"set up by optuna ([^)]*)\)", optuna_message)
    written_by = found.group(1) if found else "another version"
    masked = mask_password(url)
    if "storage upgrade" in optuna_message:
        return (
            f"Storage {masked} was written by Optuna {written_by}, whose schema Optuna "
            f"{optuna.__version__} cannot read. Back up the database, then upgrade it with: "
            f"optuna storage upgrade --storage {masked}"
        )
    return (
        f"Storage {masked} was written by a newer Optuna ({written_by}) than the installed "
        f"{optuna.__version__}. Upgrade Optuna with: pip install -U optuna"
    )


def _create_rdb_storage(
    url: str, engine_kwargs: dict[str, Any], interval: int, grace: int
) -> optuna.storages.RDBStorage:
    # Processes that open a new database at once (workers, a dashboard) race to create the
    # schema. The loser fails with "table ... already exists", a duplicate alembic_version row
    # or a lock; a retry then finds the finished schema.
    for attempt in range(_SCHEMA_RETRIES):
        try:
            # Heartbeats and their retry callback are experimental in Optuna 5.1; regnas relies
            # on them knowingly, so their warnings would only be noise in every command.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=interval,
                    grace_period=grace,
                    heartbeat_stale_trial_callback=retry,
                )
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
