"""The parent's side of ``normcheck model``: the model is loaded and inspected in one worker process.

The user's code and files are untrusted: a factory may call sys.exit, segfault, hang or print,
and a crafted file may crash a parser. The worker (normcheck.engine.process, the engine's own
worker) runs in a session of its own with its output in a private log; the parent owns the
clock, kills the worker when it overruns, and turns every way the worker can end into one
UsageError line. Nothing but plain records comes back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from normcheck.engine.process import WorkerDied, WorkerTimeout, make_worker
from normcheck.errors import UsageError
from normcheck.model.check_task import KIND as CHECK_KIND
from normcheck.model.check_task import CheckTask
from normcheck.model.port import Finding
from normcheck.model.port_activation import KIND_PORT, KIND_SOURCE, PortTask, SourceTask
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


CHECK_TIMEOUT = 300.0  # seconds for loading and the capture pass, and again for each layer's checks


def check_model(task: CheckTask, timeout: float | None = None, verbose: bool = False) -> tuple[Inventory, list]:
    """(the inventory, every layer's CheckResult records), from one worker that loads the model,
    runs it once on the input and checks each layer. The clock restarts with each message: the
    load and capture pass, then each layer, may take ``timeout`` seconds. A model that cannot be
    loaded or run on the input is a UsageError; a worker that dies or overruns while checking a
    layer leaves an error row naming the layer, and the layers after it are not checked."""
    from normcheck.verify.records import CheckResult

    limit = CHECK_TIMEOUT if timeout is None else timeout
    if limit <= 0:
        raise UsageError(f"--timeout must be positive, not {limit:g}")
    label = task.source.label
    worker = make_worker(verbose=verbose)
    inventory: Inventory | None = None
    rows: list[CheckResult] = []
    done = 0  # layers reported
    try:
        worker.send((CHECK_KIND, task))
        while True:
            kind, payload = worker.receive(limit)
            if kind == "inventory" and isinstance(payload, Inventory):
                inventory = payload
            elif kind == "layer" and isinstance(payload, list):
                rows.extend(r for r in payload if isinstance(r, CheckResult))
                done += 1
            elif kind == "done":
                if inventory is None:
                    raise UsageError(f"{label}: the worker finished without an inventory")
                return inventory, rows
            elif kind == "usage":
                raise UsageError(f"{label}: {payload}")
            elif kind == "fail":
                raise UsageError(f"{label}: could not check the model: {payload}")
            else:
                raise UsageError(f"{label}: the worker answered {kind!r}")
    except WorkerDied as e:
        if inventory is None:
            raise UsageError(f"{label}: the process loading the model died: {e.how}") from None
        return inventory, rows + _stopped(inventory, done, f"the process checking it died: {e.how}")
    except WorkerTimeout:
        if inventory is None:
            raise UsageError(
                f"{label}: loading the model took longer than {limit:g} s (--timeout); it was stopped"
            ) from None
        if done == 0 and not rows:
            raise UsageError(
                f"{label}: running the model on the input took longer than {limit:g} s (--timeout); it was stopped"
            ) from None
        return inventory, rows + _stopped(inventory, done, f"its checks took longer than {limit:g} s (--timeout)")
    finally:
        worker.stop(grace=0.5)


def _stopped(inventory: Inventory, done: int, why: str) -> list:
    """An error row for the layer being checked when the worker stopped, a skip row for each after."""
    from normcheck.model.checks import layer_row

    out = []
    for i, layer in enumerate(inventory.layers[done:]):
        label = f"{layer.path} ({layer.kind})"
        if i == 0:
            out.append(layer_row(label, layer.framework, "error", why, layer.op, layer.dtype))
        else:
            out.append(
                layer_row(
                    label, layer.framework, "skip", "not checked: the worker stopped before it", layer.op, layer.dtype
                )
            )
    return out


PORT_TIMEOUT = 600.0  # seconds for a port's source to load, run and capture, and for the port's layers to run


def _converse(
    kind: str, task: object, label: str, limit: float, verbose: bool, take: Callable[[str, Any], bool]
) -> None:
    """Send one task to a fresh worker and hand each message to ``take`` (False: not one it knows)
    until "done"; every other way the worker ends is one UsageError naming ``label``."""
    worker = make_worker(verbose=verbose)
    try:
        worker.send((kind, task))
        while True:
            what, payload = worker.receive(limit)
            if what == "done":
                return
            if what == "usage":
                raise UsageError(f"{label}: {payload}")
            if what == "fail":
                raise UsageError(f"{label}: {payload}")
            if not take(what, payload):
                raise UsageError(f"{label}: the worker answered {what!r}")
    except WorkerDied as e:
        raise UsageError(f"{label}: the process running the model died: {e.how}") from None
    except WorkerTimeout:
        raise UsageError(
            f"{label}: running the model took longer than {limit:g} s (--timeout); it was stopped"
        ) from None
    finally:
        worker.stop(grace=0.5)


def capture_source(
    task: SourceTask, timeout: float | None = None, verbose: bool = False
) -> tuple[Inventory, dict[int, str | None]]:
    """The source's inventory and, per layer index, None (its activation and outputs are in the
    task's folder) or why not."""
    limit = PORT_TIMEOUT if timeout is None else timeout
    found: dict[str, Any] = {}
    captured: dict[int, str | None] = {}

    def take(kind: str, payload: Any) -> bool:
        if kind == "inventory" and isinstance(payload, Inventory):
            found["inventory"] = payload
        elif kind == "captured" and isinstance(payload, tuple) and len(payload) == 2:
            captured[int(payload[0])] = payload[1] if isinstance(payload[1], str) else None
        else:
            return False
        return True

    _converse(KIND_SOURCE, task, task.source.label, limit, verbose, take)
    if "inventory" not in found:
        raise UsageError(f"{task.source.label}: the worker finished without an inventory")
    return found["inventory"], captured


def run_port_layers(task: PortTask, timeout: float | None = None, verbose: bool = False) -> dict[int, list[Finding]]:
    """Per pair index, the findings of the port's layer run on the source's activation."""
    limit = PORT_TIMEOUT if timeout is None else timeout
    out: dict[int, list[Finding]] = {}

    def take(kind: str, payload: Any) -> bool:
        if kind != "activation" or not isinstance(payload, tuple) or len(payload) != 2:
            return False
        out[int(payload[0])] = [f for f in payload[1] if isinstance(f, Finding)]
        return True

    _converse(KIND_PORT, task, task.source.label, limit, verbose, take)
    return out
