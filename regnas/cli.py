"""Shared pieces of the command-line entry points: logging and error reporting."""

from __future__ import annotations

from collections.abc import Callable
import logging
import signal
import sys
import warnings

from tqdm import tqdm


class SearchError(RuntimeError):
    """The search stopped for a reason that rerunning alone does not fix."""


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
    """Drops Optuna's traceback for an interrupted trial; regnas prints how to resume instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt))


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def interrupt_on_sigterm() -> None:
    """Handle SIGTERM like Ctrl-C, so that `kill PID` also fails the running trial cleanly."""
    signal.signal(signal.SIGTERM, _raise_interrupt)


def run_main(main: Callable[[], int | None]) -> None:
    """Run an entry point: user errors print one line and exit 2, Ctrl-C exits 130."""
    try:
        code = main()
    except (ValueError, FileNotFoundError, SearchError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code or 0)
