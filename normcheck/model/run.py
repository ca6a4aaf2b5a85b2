"""The parent's side of ``normcheck model``: the model is loaded and inspected in one worker process.

The user's code and files are untrusted: a factory may call sys.exit, segfault, hang or print,
and a crafted file may crash a parser. The worker (normcheck.engine.process, the engine's own
worker) runs in a session of its own with its output in a private log; the parent owns the
clock, kills the worker when it overruns, and turns every way the worker can end into one
UsageError line. Nothing but plain records comes back.
"""

from __future__ import annotations

from normcheck.engine.process import WorkerDied, WorkerTimeout, make_worker
from normcheck.errors import UsageError
from normcheck.model.records import Inventory
from normcheck.model.source import ModelSource
from normcheck.model.task import KIND, InventoryTask

LOAD_TIMEOUT = 300.0  # seconds to import the framework, load and inspect the model


def take_inventory(source: ModelSource, timeout: float | None = None, verbose: bool = False) -> Inventory:
    """The model's inventory, from a worker; UsageError naming the model for anything that keeps
    it from being one: not a model, unreadable, its code raised, exited, crashed or hung."""
    limit = LOAD_TIMEOUT if timeout is None else timeout
    if limit <= 0:
        raise UsageError(f"--timeout must be positive, not {limit:g}")
    label = source.label
    worker = make_worker(verbose=verbose)
    try:
        worker.send((KIND, InventoryTask(source)))
        result: Inventory | None = None
        while True:
            kind, payload = worker.receive(limit)
            if kind == "inventory" and isinstance(payload, Inventory):
                result = payload
            elif kind == "done":
                if result is None:
                    raise UsageError(f"{label}: the worker finished without an inventory")
                return result
            elif kind == "usage":
                raise UsageError(f"{label}: {payload}")
            elif kind == "fail":
                raise UsageError(f"{label}: could not inspect the model: {payload}")
            else:
                raise UsageError(f"{label}: the worker answered {kind!r}, not an inventory")
    except WorkerDied as e:
        raise UsageError(f"{label}: the process loading the model died: {e.how}") from None
    except WorkerTimeout:
        raise UsageError(
            f"{label}: loading and inspecting the model took longer than {limit:g} s (--timeout); it was stopped"
        ) from None
    finally:
        worker.stop(grace=0.5)
