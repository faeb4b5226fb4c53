"""Run a search with one or more worker processes on one study.

The parent creates the study (and its schema) once, finds the data, then either works itself
(one worker) or starts worker processes with the spawn method and shows the progress of the
whole study. It never initializes a JAX backend, so spawned workers own the devices.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import importlib.util
import logging
import multiprocessing
import os
import signal
import sys
import time

import optuna
from tqdm import tqdm

from regnas import data as data_lib
from regnas.cli import (
    SearchError,
    StopRequest,
    TrialFailedElsewhere,
    count_text,
    setup_logging,
)
from regnas.engine import DeviceData, prepare_compile_cache
from regnas.notes import save_study_figures, save_trial_note
from regnas.storage import mask_password, open_storage, resolve_storage, sqlite_path
from regnas.study import (
    MAX_CONSECUTIVE_FAILURES,
    SearchConfig,
    best_text,
    check_budget,
    count_finished,
    describe_search,
    format_trial,
    make_objective,
    open_study,
    trial_counts_text,
)
from regnas.trials import REJECTION_CAUSE, is_rejected
from regnas.versions import package_versions


_logger = logging.getLogger(__name__)

# Seconds between two looks at the study while worker processes run.
_POLL_SECONDS = 5.0
# Finished trials between two updates of the study's dashboard figures.
FIGURES_EVERY = 10
_GPU_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin")


def default_workers() -> int:
    """Return one worker per CPU core (at most 4) on CPU hosts, and 1 when a GPU plugin exists.

    On this project's 2-core benchmark machine two single-core workers train about 1.3x more
    images per second than one worker on both cores, and one compiles while the other trains
    (docs/benchmarks.md). The GPU check looks for JAX's plugin packages rather than asking JAX,
    because initializing a backend here would claim the device before the workers start.
    """
    if any(importlib.util.find_spec(name) for name in _GPU_PLUGINS):
        return 1
    return max(1, min(4, len(os.sched_getaffinity(0))))


def run_search(
    config: SearchConfig,
    workers: int | None = None,
    resume_command: str = "python -m regnas.search",
    verbose: bool = False,
) -> int:
    """Run the search until the study contains `config.trials` finished trials.

    Args:
        config: The search settings.
        workers: Worker processes; None picks `default_workers()`.
        resume_command: The command printed after an interruption.
        verbose: Whether worker processes log debug messages.

    Returns:
        The number of finished trials in the study.
    """
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise ValueError(f"--workers must be a positive integer, got {workers!r}.")
    workers = workers or default_workers()
    storage_url = resolve_storage(config.storage)
    check_budget(config)
    prepare_compile_cache()
    # Find (or download) the data once, so that workers do not race to download it, and check
    # the split before the study is created, so that a bad size cannot fix its settings.
    data_dir = data_lib.find_data_dir(config.data_dir)
    available = data_lib.count_training_images(data_dir)
    data_lib.check_split_sizes(available, config.train_size, config.val_size)
    config = dataclasses.replace(config, data_dir=str(data_dir))

    # A SQLite file is shown as its path and a journal file as its URL, the forms regnas.status
    # accepts.
    path = sqlite_path(storage_url)
    _logger.info(
        "regnas search with %s: %s", count_text(workers, "worker"), dataclasses.asdict(config)
    )
    _logger.info("versions: %s", package_versions())
    print(f"Storage: {path if path else mask_password(storage_url)}", flush=True)
    print(f"Data: {data_dir.resolve()} ({available} training images)", flush=True)
    study = open_study(config, storage_url)
    print(f"Study: {config.study} ({describe_search(config)})", flush=True)
    if config.warm_start == "zoo":
        from regnas.warmstart import enqueue_zoo

        enqueue_zoo(study, config)

    finished = count_finished(study)
    if finished >= config.trials:
        print(
            f"Study {config.study!r} already has {count_text(finished, 'finished trial')} "
            f"(--trials {config.trials}); nothing to do."
        )
        return finished

    try:
        if workers == 1:
            work(config, storage_url, worker=0, alone=True)
        else:
            _run_processes(config, storage_url, workers, verbose)
    except KeyboardInterrupt:
        print(
            f"\nInterrupted with {count_finished(study)} of {config.trials} trials finished. "
            f"Rerun to continue: {resume_command}",
            file=sys.stderr,
        )
        print(trial_counts_text(study), file=sys.stderr)
        raise

    save_study_figures(study)
    finished = count_finished(study)
    print(f"Study {config.study!r}: {count_text(finished, 'finished trial')}; {best_text(study)}.")
    print(trial_counts_text(study))
    return finished


def work(config: SearchConfig, storage_url: str, worker: int, alone: bool) -> None:
    """Run trials in this process until the study contains `config.trials` finished trials.

    A worker `alone` in the search shows a progress bar, and leaves the count of samples it
    rejected to the search's summary. One of several workers logs that count instead.
    """
    study = open_study(config, storage_url, worker=worker)
    splits = data_lib.load_splits(
        data_lib.find_data_dir(config.data_dir), config.train_size, config.val_size
    )
    device_data = DeviceData.create(
        splits.train_images,
        splits.train_labels,
        splits.val_images,
        splits.val_labels,
        config.batch_size,
    )
    objective = make_objective(config, device_data)

    failures, rejected = 0, 0
    first, start = count_finished(study), time.perf_counter()
    progress = _progress_bar(config, first, enabled=alone)

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal failures, rejected
        if is_rejected(trial):
            rejected += 1
            progress.set_postfix(rejected=rejected)
            _logger.debug(format_trial(trial, study))
            return
        failures = failures + 1 if trial.state == optuna.trial.TrialState.FAIL else 0
        save_trial_note(study, trial)
        done = count_finished(study)
        # One process writes the figures, because two writers can interleave their chunks.
        if worker == 0 and done % FIGURES_EVERY == 0:
            save_study_figures(study)
        progress.update(done - progress.n)
        eta = _eta(time.perf_counter() - start, done - first, config.trials - done)
        _logger.info("%s [%d/%d, ETA %s]", format_trial(trial, study), done, config.trials, eta)

    lost: list[TrialFailedElsewhere] = []

    def run_trial(trial: optuna.Trial) -> float | list[float]:
        try:
            return objective(trial)
        except TrialFailedElsewhere as error:
            lost.append(error)
            raise

    try:
        while count_finished(study) < config.trials:
            StopRequest.check()
            if failures >= MAX_CONSECUTIVE_FAILURES:
                raise SearchError(
                    f"{failures} trials in a row failed; see their reasons above. "
                    "Fix the cause, then rerun the command to continue."
                )
            lost.clear()
            try:
                study.optimize(run_trial, n_trials=1, callbacks=[after_trial])
            except ValueError:
                # Optuna's tell raises ValueError ("Cannot tell a FAIL trial") for a trial that
                # another process failed. Its retry, if any, is queued, so this worker goes on.
                # NOTE: a trial failed between its last write and Optuna's tell is not caught
                # here, so it stops the worker. The window is one storage round trip.
                StopRequest.check()
                if not lost:
                    raise
                # Several workers log with a "wN" prefix (`_worker_main`), so the message has none.
                _logger.warning("%s; going on with the next trial.", lost[0])
    finally:
        progress.close()
        if rejected and not alone:
            _logger.info(
                "This worker rejected %s before training (%s).",
                count_text(rejected, "sampled architecture"),
                REJECTION_CAUSE,
            )


def _run_processes(config: SearchConfig, storage_url: str, workers: int, verbose: bool) -> None:
    context = multiprocessing.get_context("spawn")
    cpus = sorted(os.sched_getaffinity(0))
    processes = []
    for index in range(workers):
        share = _cpu_share(cpus, workers, index)
        # daemon: a worker never outlives a parent that exits, even through an error.
        process = context.Process(
            daemon=True,
            target=_worker_main,
            name=f"regnas-worker-{index}",
            args=(config, storage_url, index, share, verbose),
        )
        process.start()
        processes.append(process)

    study = optuna.load_study(study_name=config.study, storage=open_storage(storage_url))
    first, start = count_finished(study), time.perf_counter()
    progress = _progress_bar(config, first, enabled=True)
    try:
        while any(process.is_alive() for process in processes):
            # Only the sleep is interruptible: a signal inside a storage read could break it.
            with StopRequest.interruptible():
                time.sleep(_POLL_SECONDS)
            progress.update(count_finished(study) - progress.n)
    except KeyboardInterrupt:
        _stop(processes)
        raise
    finally:
        progress.close()
    _logger.info("Workers finished in %.0fs.", time.perf_counter() - start)

    failed = [
        f"worker {index} (exit code {process.exitcode})"
        for index, process in enumerate(processes)
        if process.exitcode != 0
    ]
    if failed:
        raise SearchError(
            f"{', '.join(failed)} stopped with an error; see its log above. Rerun "
            "the command to continue the study."
        )


def _cpu_share(cpus: Sequence[int], workers: int, index: int) -> list[int]:
    """Return the cores of worker `index`: its own when there are enough, else a shared one.

    XLA:CPU threads of two workers on one core only contend, so each worker gets disjoint cores
    when `workers <= len(cpus)`. With more workers than cores, workers take turns on the cores,
    so that none of them floats over all cores and slows the pinned ones.
    """
    if workers >= len(cpus):
        return [cpus[index % len(cpus)]] if cpus else []
    return [cpu for position, cpu in enumerate(cpus) if position % workers == index]


def _worker_main(
    config: SearchConfig, storage_url: str, index: int, cpus: list[int], verbose: bool
) -> None:
    StopRequest.install()
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)
    setup_logging(verbose, prefix=f"w{index} ")
    try:
        work(config, storage_url, worker=index, alone=False)
    except KeyboardInterrupt:
        sys.exit(130)
    except (SearchError, ValueError, FileNotFoundError) as error:
        _logger.error("Stopped: %s", error)
        sys.exit(1)


def _stop(processes: Sequence[multiprocessing.process.BaseProcess]) -> None:
    # A terminal's Ctrl-C reaches every worker already, but a signal sent to the parent alone
    # does not, so forward it. SIGTERM, because a parent started with SIGINT ignored passes that
    # on to its workers. Each worker marks its running trial failed before it exits.
    for process in processes:
        if process.is_alive() and process.pid is not None:
            try:
                os.kill(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for process in processes:
        # An interrupt takes effect only after a running XLA compile returns, so wait long.
        process.join(timeout=120)
        if process.is_alive():
            process.terminate()


def _progress_bar(config: SearchConfig, finished: int, enabled: bool) -> tqdm:
    # disable=None shows the bar on a terminal only; in a log file the per-trial lines carry
    # the progress and the ETA.
    return tqdm(
        total=config.trials,
        initial=finished,
        unit="trial",
        dynamic_ncols=True,
        file=sys.stderr,
        desc=config.study,
        disable=None if enabled else True,
    )


def _eta(elapsed: float, done: int, remaining: int) -> str:
    if done <= 0:
        return "unknown"
    seconds = int(elapsed / done * max(remaining, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
