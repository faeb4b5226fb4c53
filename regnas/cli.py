"""Shared pieces of the command-line entry points: logging and error reporting."""

from __future__ import annotations

from collections.abc import Callable
import logging
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
    # Constraints and Hyperband are stable in use here; their experimental notices are noise.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


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
