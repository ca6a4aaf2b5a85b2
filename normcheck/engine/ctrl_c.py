"""After a first Ctrl-C the parent writes what it has: a second one (or the SIGINTs the checked
code may keep sending) must not cut that short."""

from __future__ import annotations

import signal
import threading
from typing import Any


class SecondCtrlC:
    """``arm()`` a first-SIGINT-only handler, or ``ignore()`` SIGINT from now on (only the main
    thread can); ``restore()`` the handler there was."""

    def __init__(self) -> None:
        self._saved: Any = None

    def arm(self) -> None:
        """From now on the first SIGINT raises KeyboardInterrupt and turns the next ones off in
        the same instant, before any Python code runs: checked code that sends SIGINT again and
        again (or a user pressing Ctrl-C twice) cannot interrupt the handler that writes the
        report. The caller's handler comes back with ``restore()``."""
        if threading.current_thread() is not threading.main_thread() or self._saved is not None:
            return

        def first(signum: int, frame: Any) -> None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            raise KeyboardInterrupt

        self._saved = signal.signal(signal.SIGINT, first)

    def ignore(self) -> None:
        if threading.current_thread() is threading.main_thread() and self._saved is None:
            self._saved = signal.signal(signal.SIGINT, signal.SIG_IGN)

    def restore(self) -> None:
        if self._saved is not None:
            signal.signal(signal.SIGINT, self._saved)
            self._saved = None
