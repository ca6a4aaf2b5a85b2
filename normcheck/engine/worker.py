"""A worker process: ``python -P -c <process.BOOTSTRAP> READ_FD WRITE_FD``.

It receives (kind, payload) messages and answers each with messages of its own, ending with
("done", None). A handler that fails sends ("usage", message) for a user's mistake or ("fail",
message) for anything else; the parent decides what becomes of it. The worker exits on ("exit",
None) or when its pipe closes, without waiting for threads the user's code left running.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
from collections.abc import Callable
from typing import Any


def _setup_path() -> None:
    """The parent's import path after the worker's own: its entries never shadow the standard
    library or installed packages, and the user's folders come last (spec loading appends them)."""
    extra = json.loads(os.environ.pop("NORMCHECK_WORKER_PATH", "[]"))
    for entry in extra:
        if entry not in sys.path:
            sys.path.append(entry)


HANDLERS = {  # message kind -> (module, function), imported when first asked for
    "verify.plan": ("normcheck.engine.tasks", "plan_part"),
    "verify.run": ("normcheck.engine.tasks", "run_units"),
    "bench.run": ("normcheck.engine.bench_tasks", "run_bench"),
    "model.inventory": ("normcheck.model.task", "inventory"),
    "model.check": ("normcheck.model.check_task", "check"),
    "model.port_source": ("normcheck.model.port_activation", "run_source"),
    "model.port_run": ("normcheck.model.port_activation", "run_port"),
}


def _handler(kind: str) -> Callable[[Any, Callable[[Any], None]], None]:
    import importlib

    module, name = HANDLERS[kind]
    return getattr(importlib.import_module(module), name)


def run_message(kind: str, payload: Any, send: Callable[[Any], None]) -> None:
    """Run one message's handler, ending with ("done", None), ("usage", ...) or ("fail", ...)."""
    from normcheck.errors import UsageError

    cwd = os.getcwd()
    try:
        _handler(kind)(payload, send)
        send(("done", None))
    except UsageError as e:
        send(("usage", str(e)))
    except KeyboardInterrupt:
        if not IN_WORKER:
            raise
        from normcheck.engine.deaths import escaped

        send(("fail", escaped(KeyboardInterrupt())))
    except BaseException as e:  # the user's code escaped a handler's own guard
        from normcheck.engine.deaths import escaped

        send(("fail", escaped(e)))
    finally:
        if os.getcwd() != cwd:  # the code's chdir must not move the next task's relative paths
            os.chdir(cwd)


def serve(read_fd: int, write_fd: int) -> None:
    from multiprocessing.connection import Connection

    inbox = Connection(read_fd, writable=False)
    outbox = Connection(write_fd, readable=False)
    while True:
        try:
            kind, payload = inbox.recv()
        except (EOFError, OSError):
            break
        except Exception as e:  # a task naming an object this process cannot import
            outbox.send(("fail", f"could not receive the task: {type(e).__name__}: {e}"))
            continue
        if kind == "exit":
            break
        run_message(kind, payload, outbox.send)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # not sys.exit: threads the code left running must not keep the process alive


IN_WORKER = False  # True in a worker process; inline, the caller's Ctrl-C must stay a Ctrl-C


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when normcheck's process ends, however it ends (a
    worker sits in a session of its own, so a terminal's hang-up would not reach it)."""
    import ctypes

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it ended before the request was made
        os._exit(1)


def main() -> None:
    global IN_WORKER
    IN_WORKER = True
    if sys.platform.startswith("linux"):
        _die_with_parent()
    faulthandler.enable()  # a hard crash leaves the Python stack in the log, which the parent reads
    _setup_path()
    # normcheck's "tensorflow" framework is Keras on TensorFlow, whatever the caller's environment says
    os.environ["KERAS_BACKEND"] = "tensorflow"
    read_fd, write_fd = int(sys.argv[-2]), int(sys.argv[-1])
    serve(read_fd, write_fd)


if __name__ == "__main__":
    main()
