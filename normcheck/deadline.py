"""A per-case time limit that stops hung user code instead of waiting for it forever."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class CaseTimeout(BaseException):
    """A case ran past its limit. A BaseException, so user code's ``except Exception`` cannot
    swallow it."""


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise CaseTimeout in the running code after ``seconds``. SIGALRM interrupts Python code
    and blocking calls such as sleep; it needs the main thread of a POSIX process, and elsewhere
    the limit is not enforced."""
    usable = seconds and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def on_alarm(signum, frame):
        raise CaseTimeout(f"timed out after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
