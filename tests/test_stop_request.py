"""StopRequest: a signal raises KeyboardInterrupt only inside interruptible blocks."""

from __future__ import annotations

from collections.abc import Iterator
import os
import signal
import sys
import time

import pytest

from regnas.cli import StopRequest


@pytest.fixture(autouse=True)
def restore_handlers() -> Iterator[None]:
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    unraisable_hook = sys.unraisablehook
    # Start from Python's own SIGINT handler, also where pytest runs as a background job of a
    # shell, which starts it with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    StopRequest.requested = False
    sys.unraisablehook = unraisable_hook
    for number, handler in handlers.items():
        signal.signal(number, handler)


def _deliver(number: int) -> None:
    os.kill(os.getpid(), number)
    time.sleep(0.05)  # Python runs the handler at the next bytecode boundary.


def test_signal_outside_block_sets_flag() -> None:
    StopRequest.install()

    _deliver(signal.SIGTERM)

    assert StopRequest.requested
    with pytest.raises(KeyboardInterrupt):
        StopRequest.check()


def test_signal_inside_block_raises() -> None:
    StopRequest.install()

    with pytest.raises(KeyboardInterrupt), StopRequest.interruptible():
        _deliver(signal.SIGINT)
        time.sleep(5)
    assert StopRequest.requested


class _SignalsWhenCollected:
    def __del__(self) -> None:
        _deliver(signal.SIGTERM)


def test_signal_swallowed_by_finalizer_raises_at_block_end(
    capsys: pytest.CaptureFixture[str],
) -> None:
    StopRequest.install()
    reached_end = False

    with pytest.raises(KeyboardInterrupt), StopRequest.interruptible():
        # Python drops an exception raised in a finalizer, as it does in JAX's GC callbacks.
        _SignalsWhenCollected()
        reached_end = True

    assert reached_end
    assert StopRequest.requested
    assert "KeyboardInterrupt" not in capsys.readouterr().err


def test_block_refuses_to_start_after_request() -> None:
    StopRequest.requested = True

    with pytest.raises(KeyboardInterrupt), StopRequest.interruptible():
        pytest.fail("the block must not run after a stop request")


def test_ignored_sigint_stays_ignored() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    StopRequest.install()

    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
