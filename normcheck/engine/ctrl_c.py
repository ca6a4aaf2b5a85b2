"""After a first Ctrl-C the parent writes what it has: a second one (or the SIGINTs the checked
code may keep sending) must not cut that short."""

from __future__ import annotations

import signal
import threading
from typing import Any


class SecondCtrlC:
    """``ignore()`` SIGINT from now on (only the main thread can); ``restore()`` the handler."""

    def __init__(self) -> None:
        self._saved: Any = None

    def ignore(self) -> None:
        if threading.current_thread() is threading.main_thread() and self._saved is None:
            self._saved = signal.signal(signal.SIGINT, signal.SIG_IGN)

    def restore(self) -> None:
        if self._saved is not None:
            signal.signal(signal.SIGINT, self._saved)
            self._saved = None
