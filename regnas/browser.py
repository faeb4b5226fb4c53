"""Headless Chromium and a local optuna-dashboard, for screenshots of reports and browser tests.

Everything here runs on 127.0.0.1 only. Chromium runs with a fresh profile directory and with
background networking off, so it contacts no other host.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import os
from pathlib import Path
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import IO
import urllib.error
import urllib.request


CHROMIUM = Path("/usr/bin/chromium")
# Milliseconds of page time Chromium lets scripts run before it dumps or captures the page.
VIRTUAL_TIME_BUDGET_MS = 15_000
_FLAGS = (
    "--headless",
    "--no-sandbox",  # Chromium refuses to start as root with its sandbox on.
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def run_chromium(url: str, *arguments: str, timeout: float = 120) -> str:
    """Load `url` in headless Chromium with extra `arguments`; return its standard output.

    Raises:
        FileNotFoundError: /usr/bin/chromium is missing.
        RuntimeError: Chromium exited with an error.
    """
    if not CHROMIUM.is_file():
        raise FileNotFoundError(
            f"{CHROMIUM} is missing; install it with apt-get install chromium."
        )
    with tempfile.TemporaryDirectory(prefix="regnas-chromium-") as profile:
        command = [
            str(CHROMIUM),
            *_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}",
            *arguments,
            url,
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
    if result.returncode != 0:
        raise RuntimeError(f"Chromium failed on {url} (exit {result.returncode}): {result.stderr}")
    return result.stdout


def page_dom(url: str) -> str:
    """Return the page's HTML after its scripts ran."""
    return run_chromium(url, "--dump-dom")


def screenshot(url: str, path: Path, width: int = 1280, height: int = 900) -> Path:
    """Save a PNG screenshot of the page to `path` and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    run_chromium(url, f"--window-size={width},{height}", f"--screenshot={path.resolve()}")
    if not path.is_file():
        raise RuntimeError(f"Chromium wrote no screenshot of {url} to {path}.")
    return path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def dashboard_command() -> list[str]:
    """Return the optuna-dashboard executable of this Python environment, or the one on PATH."""
    beside = Path(sys.executable).parent / "optuna-dashboard"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("optuna-dashboard")
    if found is None:
        raise FileNotFoundError(
            "optuna-dashboard is not installed; run pip install optuna-dashboard."
        )
    return [found]


@contextlib.contextmanager
def running_dashboard(storage_url: str, startup_timeout: float = 60) -> Iterator[str]:
    """Serve `storage_url` with optuna-dashboard on 127.0.0.1 and yield its base URL.

    The server stops when the block ends.

    Raises:
        RuntimeError: The dashboard exited or did not respond within `startup_timeout` seconds.
    """
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [
        *dashboard_command(),
        storage_url,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--server",
        "wsgiref",
        "--quiet",
    ]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ)
        try:
            _wait_until_serving(process, f"{base}/api/studies", startup_timeout, log)
            yield base
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_serving(
    process: subprocess.Popen[bytes], url: str, timeout: float, log: IO[bytes]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"optuna-dashboard exited with {process.returncode}: {_read(log)}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise RuntimeError(
        f"optuna-dashboard did not respond at {url} within {timeout:g} s: {_read(log)}"
    )


def _read(log: IO[bytes]) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-2000:]
