"""One worker process, seen from the parent: started fresh (never forked), talked to over two
private pipes, and stopped or killed by the parent, which owns every time limit."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from normcheck.engine.deaths import describe_exit, last_frame

# Framework chatter (TensorFlow's C++ log, oneDNN, absl, XLA) goes to the worker's log, and
# these keep most of it from being produced at all.
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR"}  # logs only: nothing that changes results
LOG_TAIL_BYTES = 64 * 1024


class WorkerDied(Exception):
    """The worker ended while the parent waited for it; ``how`` says how."""

    def __init__(self, how: str) -> None:
        super().__init__(how)
        self.how = how


class WorkerTimeout(Exception):
    """The worker sent nothing within the deadline (it has been killed)."""


# The worker imports the very normcheck the parent runs (a source checkout, not some installed
# copy), then takes that folder off its import path again so it shadows nothing.
BOOTSTRAP = (
    "import sys; sys.path.insert(0, {root!r}); import normcheck.engine.worker as w; sys.path.remove({root!r}); w.main()"
)


def _normcheck_root() -> str:
    return str(Path(__file__).resolve().parents[2])


class Worker:
    """A ``python -P -c <BOOTSTRAP>`` child running normcheck.engine.worker.main.

    Its stdout and stderr go to a private log file (or, with ``verbose``, to the parent's stderr),
    so nothing it prints reaches a report on stdout. It runs in a session of its own, so a Ctrl-C
    at the terminal reaches only the parent, which then stops it. ``-P`` keeps the current
    directory off the front of its import path; the parent's path is appended after its own, so
    a user's ``pandas.py`` cannot shadow a library normcheck imports.
    """

    def __init__(self, env: dict[str, str] | None = None, verbose: bool = False) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self.log = tempfile.TemporaryFile(prefix="normcheck-worker-")  # noqa: SIM115 (lives as long as the worker)
        child_env = {**os.environ, **({} if verbose else QUIET_ENV), **(env or {})}
        if env and "XLA_FLAGS" in env and os.environ.get("XLA_FLAGS"):  # the caller's flags, then ours
            child_env["XLA_FLAGS"] = f"{os.environ['XLA_FLAGS']} {env['XLA_FLAGS']}"
        child_env["NORMCHECK_WORKER_PATH"] = json.dumps([_normcheck_root(), *[p for p in sys.path if p]])
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-P",
                    "-c",
                    BOOTSTRAP.format(root=_normcheck_root()),
                    str(to_child_r),
                    str(from_child_w),
                ],
                pass_fds=(to_child_r, from_child_w),
                stdin=subprocess.DEVNULL,
                stdout=2 if verbose else self.log,  # never the report stream, even verbose
                stderr=None if verbose else self.log,
                start_new_session=True,
                env=child_env,
                cwd=os.getcwd(),
            )
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self.to_child = Connection(to_child_w, readable=False)
        self.from_child = Connection(from_child_r, writable=False)
        self.tags: set[str] = set()  # what it has loaded (frameworks), for the scheduler

    inline = False

    def ready(self) -> bool:
        return False  # readiness comes from its pipe

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, message: Any) -> None:
        try:
            self.to_child.send(message)
        except (BrokenPipeError, ConnectionResetError, OSError):
            raise WorkerDied(self._death()) from None

    def receive(self, timeout: float | None) -> Any:
        """The next message; WorkerTimeout (the worker is killed) when none comes in ``timeout`` s,
        WorkerDied when the worker ends first."""
        try:
            ready = self.from_child.poll(timeout)
        except (EOFError, OSError):
            ready = True
        if not ready:
            self.kill()
            raise WorkerTimeout()
        try:
            return self.from_child.recv()
        except (EOFError, ConnectionResetError, OSError):
            raise WorkerDied(self._death()) from None
        except Exception as e:  # a message that cannot be unpickled: the worker is of no further use
            self.kill()
            raise WorkerDied(f"an unreadable message ({type(e).__name__}: {e})") from None

    def _death(self) -> str:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # its pipe closed but it lives on (the code closed it)
            self.kill()
            return "its pipe to normcheck closed"
        how = describe_exit(code)
        if code == 0 or (code is not None and code > 0):
            how += " (the process exited: os._exit, or an exit during interpreter shutdown)"
        frame = last_frame(self.log_tail())
        return how + (f"; last Python frame {frame}" if frame else "")

    def death(self) -> str | None:
        """How it ended, when it has (its pipe may stay open in a process it forked), else None."""
        return None if self.alive() else self._death()

    def log_tail(self) -> str:
        try:
            size = self.log.seek(0, os.SEEK_END)
            self.log.seek(max(0, size - LOG_TAIL_BYTES))
            return self.log.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    def stop(self, grace: float = 1.0) -> None:
        """Ask it to leave (it exits without waiting for threads the code left running), then kill
        it if it has not."""
        if self.alive():
            with contextlib.suppress(OSError):
                self.to_child.send(("exit", None))
            deadline = time.monotonic() + grace
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.01)
        self.kill()

    def kill(self) -> None:
        try:  # its whole process group: children it started too, even after it has died itself
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            if self.alive():
                self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        for conn in (self.to_child, self.from_child):
            with contextlib.suppress(OSError):
                conn.close()
        self.log.close()


class InlineWorker:
    """The handlers run in the calling process, with no isolation and no time limit: for
    debugging normcheck itself and for tests that install stand-in frameworks in this process
    (``NORMCHECK_INLINE=1``). Its messages wait in a queue until received."""

    inline = True

    def __init__(self, env: dict[str, str] | None = None, verbose: bool = False) -> None:
        from collections import deque

        self.queue: deque[Any] = deque()
        self.tags: set[str] = set()
        self.from_child = None

    def alive(self) -> bool:
        return True

    def death(self) -> str | None:
        return None

    def ready(self) -> bool:
        return bool(self.queue)

    def send(self, message: Any) -> None:
        from normcheck.engine.worker import run_message

        kind, payload = message
        if kind != "exit":
            run_message(kind, payload, self.queue.append)

    def receive(self, timeout: float | None) -> Any:
        if not self.queue:
            raise WorkerDied("the inline worker has nothing to say")
        return self.queue.popleft()

    def stop(self, grace: float = 1.0) -> None:
        self.queue.clear()

    def kill(self) -> None:
        self.queue.clear()
        # a real worker's processes die with it; here, the rank processes of distributed batch
        # norm (--world-size) that this process started must be stopped (loaded only if it ran)
        distributed = sys.modules.get("normcheck.frameworks.torch.distributed")
        if distributed is not None:
            distributed.close_groups()


def make_worker(
    env: dict[str, str] | None = None, verbose: bool = False, inline: bool = False
) -> Worker | InlineWorker:
    if inline or os.environ.get("NORMCHECK_INLINE") == "1":
        return InlineWorker(env, verbose)
    return Worker(env, verbose)
