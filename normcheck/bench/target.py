"""What a framework's bench module turns one case into: a ``Target``, the call the timer times.

Each framework's bench module (normcheck/frameworks/<name>/bench.py, declared by
``normcheck.frameworks.base.BenchModule``) builds them; timer.py times them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from normcheck.names import CONTIGUOUS, Layout


def _no_sync(out: Any) -> None:
    return None


@dataclass
class MemoryProbe:
    """Peak device memory of one call above what was allocated before it (None: unknown)."""

    reset: Callable[[], None]
    peak_above: Callable[[], int | None]  # read after the call; bytes above the level at reset()


@dataclass
class Target:
    """One timed call of a case.

    ``call`` does the work once and returns its result; ``sync(result)`` returns when that work
    is finished (block_until_ready, a device synchronisation); the clock stops after it.
    ``cuda_stream`` true means ``call`` only enqueues work on torch's current CUDA stream, so
    CUDA events around it time the device work alone.
    """

    call: Callable[[], Any]
    sync: Callable[[Any], None] = _no_sync
    mode: str = "eager"
    compiled: bool = False  # the first call traces and compiles
    layout: Layout = CONTIGUOUS
    cuda_stream: bool = False
    memory: MemoryProbe | None = None  # device memory; the CPU's is measured by the runner
    setup_compile_s: float = 0.0  # compilation done while building (a compiled forward before its backward)
    notes: tuple[str, ...] = ()
    keep: list[Any] = field(default_factory=list)  # objects the call needs alive (buffers, sessions)
