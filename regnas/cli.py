"""Shared pieces of the command-line entry points: logging and error reporting."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
import contextlib
import logging
import os
import signal
import sys
import warnings

from tqdm import tqdm


# The study that the commands use without --study. It equals regnas.study.DEFAULT_STUDY, which
# the report commands do not import because it loads JAX.
DEFAULT_STUDY = "regnetx-fashion-mnist"


def add_study_arguments(parser: argparse.ArgumentParser, default_study: str) -> None:
    """Add the --study and --storage options that the commands reading a study share."""
    parser.add_argument(
        "--study", default=default_study, help=f"study name (default: {default_study})"
    )
    parser.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL or SQLite file (default: studies/regnas.db)",
    )


class SearchError(RuntimeError):
    """The search stopped for a reason that rerunning alone does not fix."""


class TrialFailedElsewhere(RuntimeError):
    """Another process marked this worker's running trial FAIL, so its result cannot be stored.

    That happens when the trial's heartbeat was older than the grace period, or when
    ``python -m regnas.status --fail-stale`` failed it.
    """


class _TqdmHandler(logging.Handler):
    """Writes log records above an active progress bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def setup_logging(verbose: bool = False, prefix: str = "") -> None:
    """Send `regnas` logs to stderr and quiet Optuna's per-trial lines, which regnas replaces.

    Args:
        verbose: Whether to log debug messages.
        prefix: Text put before every message, such as a worker's name.
    """
    import optuna

    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter(f"[%(asctime)s] {prefix}%(message)s", "%H:%M:%S"))
    logger = logging.getLogger("regnas")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for optuna_handler in logging.getLogger("optuna").handlers:
        optuna_handler.addFilter(_DropInterruptTracebacks())
    # Constraints and Hyperband are stable in use here; their experimental notices are noise.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class _DropInterruptTracebacks(logging.Filter):
    """Drops Optuna's traceback for an interrupted trial or one failed by another process.

    regnas prints how to resume after an interrupt, and logs one line for a trial failed
    elsewhere.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        quiet = (KeyboardInterrupt, TrialFailedElsewhere)
        return not (record.exc_info and isinstance(record.exc_info[1], quiet))


class StopRequest:
    """Turns SIGINT and SIGTERM into KeyboardInterrupt only where raising it is safe.

    An interrupt that lands inside a storage write breaks Optuna's session (optuna 5.1 then
    raises UnboundLocalError or StorageInternalError), so outside `interruptible` blocks a signal
    only sets `requested`, and the code stops at its next `check`.

    Python swallows an exception raised in a garbage-collection callback or a finalizer, and
    JAX runs such callbacks while it compiles. An interrupt that lands there is lost, so an
    `interruptible` block also checks `requested` when it ends, and the swallowed exception is
    not printed.
    """

    requested = False
    # The signal that requested the stop, so that the exit status can name it (128 + number).
    signum: int | None = None
    _depth = 0

    @classmethod
    def install(cls) -> None:
        """Handle SIGTERM, and SIGINT unless the process was started with SIGINT ignored."""
        signal.signal(signal.SIGTERM, cls._handle)
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, cls._handle)
        previous_hook = sys.unraisablehook

        def unraisable_hook(unraisable: sys.UnraisableHookArgs) -> None:
            if not (cls.requested and isinstance(unraisable.exc_value, KeyboardInterrupt)):
                previous_hook(unraisable)

        sys.unraisablehook = unraisable_hook

    @classmethod
    def _handle(cls, signum: int, frame: object) -> None:
        cls.requested = True
        cls.signum = signum
        if cls._depth:
            raise KeyboardInterrupt(f"signal {signum}")

    @classmethod
    def check(cls) -> None:
        """Raise KeyboardInterrupt if a stop was requested."""
        if cls.requested:
            raise KeyboardInterrupt("stop requested")

    @classmethod
    @contextlib.contextmanager
    def interruptible(cls) -> Iterator[None]:
        """Let a signal raise KeyboardInterrupt at once inside this block, or at its end."""
        cls.check()
        cls._depth += 1
        try:
            yield
        finally:
            cls._depth -= 1
        cls.check()


def count_text(count: int, noun: str) -> str:
    """Return `count` and `noun`, with an "s" unless the count is 1: "1 epoch", "3 epochs"."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def run_main(main: Callable[[], int | None]) -> None:
    """Run an entry point: user errors print one line and exit 2, a stop exits 128 + signal.

    Ctrl-C (SIGINT) exits 130 and SIGTERM 143, as shells report a process killed by them.
    """
    try:
        code = main()
    except (ValueError, FileNotFoundError, SearchError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        # The study and any checkpoint are written by now. Exit without the interpreter's
        # teardown, in which JAX's runtime crashed once in eight interrupts during a compile.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + (StopRequest.signum or signal.SIGINT))
    sys.exit(code or 0)
