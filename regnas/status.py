"""List a study's trials by state and fail stale ones: ``python -m regnas.status --study NAME``.

A trial stays RUNNING when its worker dies. On RDB storages (SQLite, PostgreSQL, MySQL) the
heartbeat finds such trials when a worker starts its next trial, and ``--fail-stale`` runs that
check at once. Journal files record no heartbeats, so there ``--fail-stale``
needs ``--older-than`` and fails the RUNNING trials started longer ago than that. Either way a
failed trial is queued again once with the same parameters, as the heartbeat does.
"""

from __future__ import annotations

import argparse
import datetime
import warnings

import optuna

from regnas.cli import DEFAULT_STUDY, add_study_arguments, count_text, run_main, setup_logging
from regnas.storage import (
    MAX_RETRY,
    load_existing_study,
    mask_password,
    open_storage,
    resolve_storage,
)
from regnas.trials import (
    FAIL_REASON_KEY,
    REJECTION_CAUSE,
    WORKER_HOST_KEY,
    WORKER_PID_KEY,
    is_rejected,
)


_State = optuna.trial.TrialState


def study_status(
    study_name: str,
    storage: str | None,
    fail_stale: bool = False,
    older_than: float | None = None,
) -> str:
    """Return a report of the study's trials by state, after failing stale trials if asked.

    Args:
        study_name: The study.
        storage: Storage URL or SQLite path; None means ``studies/regnas.db``.
        fail_stale: Whether to fail stale RUNNING trials and queue their retries.
        older_than: Seconds after its start at which a RUNNING trial counts as stale, whatever
            its heartbeat; required with `fail_stale` on storages without heartbeats.

    Raises:
        ValueError: The storage or study does not exist, or `older_than` is missing or invalid.
    """
    if older_than is not None and not older_than > 0:
        raise ValueError(f"--older-than must be a positive number of seconds, got {older_than}.")
    if older_than is not None and not fail_stale:
        raise ValueError("--older-than only applies with --fail-stale; add --fail-stale.")
    url = resolve_storage(storage)
    opened = open_storage(url, create=False)
    heartbeat = (
        isinstance(opened, optuna.storages.RDBStorage)
        and opened.get_heartbeat_interval() is not None
    )
    if fail_stale and older_than is None and not heartbeat:
        raise ValueError(
            f"Storage {mask_password(url)} records no heartbeats, so --fail-stale needs "
            "--older-than SECONDS: RUNNING trials started longer ago than that are failed."
        )
    study = load_existing_study(study_name, opened, url)

    lines = []
    if fail_stale:
        failed = _fail_stale(study, opened, heartbeat, older_than)
        if failed:
            numbers = ", ".join(str(number) for number in failed)
            retries = "its retry" if len(failed) == 1 else "their retries"
            lines.append(
                f"Failed {count_text(len(failed), 'stale trial')} and queued {retries}: {numbers}."
            )
        else:
            lines.append("No stale trials found, so none was failed or queued.")
    lines.extend(_state_lines(study, mask_password(url)))
    return "\n".join(lines)


def _fail_stale(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    heartbeat: bool,
    older_than: float | None,
) -> list[int]:
    running = {trial.number for trial in study.get_trials(states=(_State.RUNNING,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if heartbeat:
            # Optuna fails trials whose heartbeat is older than the grace period and runs the
            # storage's retry callback, which regnas sets to one retry.
            optuna.storages.fail_stale_trials(study)
        if older_than is not None:
            _fail_older_than(study, storage, older_than)
    still_running = {trial.number for trial in study.get_trials(states=(_State.RUNNING,))}
    return sorted(running - still_running)


def _fail_older_than(
    study: optuna.Study, storage: optuna.storages.BaseStorage, older_than: float
) -> None:
    now = datetime.datetime.now()
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    for trial in study.get_trials(states=(_State.RUNNING,)):
        started = trial.datetime_start
        if started is None or (now - started).total_seconds() <= older_than:
            continue
        reason = f"stale: RUNNING for more than {older_than:g} s; failed by regnas.status"
        try:
            # The reason first, because a finished trial accepts no attributes.
            storage.set_trial_user_attr(trial._trial_id, FAIL_REASON_KEY, reason)
            changed = storage.set_trial_state_values(trial._trial_id, _State.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # Its worker finished it meanwhile.
        if changed:
            retry(study, storage.get_trial(trial._trial_id))


def _state_lines(study: optuna.Study, storage_text: str) -> list[str]:
    trials = study.get_trials(deepcopy=False)
    counts = ", ".join(
        f"{sum(trial.state == state for trial in trials)} {state.name}" for state in _State
    )
    lines = [f"Study {study.study_name!r} in {storage_text}: {len(trials)} trials: {counts}."]
    rejected = sum(is_rejected(trial) for trial in trials)
    if rejected:
        # Rejected samples are stored as PRUNED, but the search neither trains nor counts them.
        lines.append(
            f"  {rejected} of the PRUNED are samples rejected before training "
            f"({REJECTION_CAUSE}), which --trials does not count."
        )
    running = [trial for trial in trials if trial.state == _State.RUNNING]
    now = datetime.datetime.now()
    for trial in running:
        started = trial.datetime_start
        age = f"{(now - started).total_seconds():.0f} s ago" if started else "unknown"
        when = f"{started:%Y-%m-%d %H:%M:%S} ({age})" if started else "unknown time"
        host = trial.user_attrs.get(WORKER_HOST_KEY, "unknown host")
        pid = trial.user_attrs.get(WORKER_PID_KEY, "unknown pid")
        lines.append(f"  RUNNING trial {trial.number}: started {when}, worker {host} pid {pid}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m regnas.status",
        description="Count a study's trials by state and list the RUNNING ones with their start "
        "time and worker; optionally fail stale RUNNING trials and queue one retry of each.",
    )
    add_study_arguments(parser, DEFAULT_STUDY)
    parser.add_argument(
        "--fail-stale",
        action="store_true",
        help="fail RUNNING trials whose heartbeat is older than the grace period (RDB "
        "storages), or that started more than --older-than seconds ago",
    )
    parser.add_argument(
        "--older-than",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --fail-stale: fail RUNNING trials started more than SECONDS ago; required "
        "for journal files, which record no heartbeats",
    )
    args = parser.parse_args(argv)
    setup_logging()
    print(study_status(args.study, args.storage, args.fail_stale, args.older_than))
    return 0


if __name__ == "__main__":
    run_main(main)
