"""One watchdog for tests that must fail rather than hang the suite."""

from __future__ import annotations

import contextlib
import signal


@contextlib.contextmanager
def alarm_after(seconds: float, error: type[BaseException] = AssertionError):
    """Raise `error` in the running code after `seconds` of wall time (SIGALRM), instead of hanging."""
    def ring(signum, frame):
        raise error(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
