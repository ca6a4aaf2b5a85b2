"""The worker's side of ``normcheck model``: load the model, inventory it, send the records
(the engine's worker runs ``inventory`` for messages of kind KIND: engine/worker.HANDLERS)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from normcheck.model.source import ModelSource

KIND = "model.inventory"


@dataclass(frozen=True)
class InventoryTask:
    source: ModelSource


def inventory(task: InventoryTask, send: Callable[[Any], None]) -> None:
    """Send ("inventory", Inventory); a UsageError (the worker sends it as "usage") for a model
    that cannot be loaded or is not a model."""
    from normcheck.model.loaders import inspect_model, load_model

    start = time.perf_counter()
    loaded = load_model(task.source)
    result = inspect_model(loaded, task.source.text)
    send(("inventory", replace(result, seconds=time.perf_counter() - start)))
