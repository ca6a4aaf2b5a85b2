"""Timed calls, one module per framework: each turns an implementation (built-in or the user's)
into a ``Target`` for one case, pass and mode.

A module provides
    MODES: dict[str, tuple[str, ...]]   --mode eager/compiled -> the variants it runs, each a row
                                         (TensorFlow's "compiled" is tf.function and tf.function+XLA)
    layout(impl, shape) -> str           the layout the implementation runs in (its native one)
    build(impl, problem, pass_, variant, device) -> Target
                                         raises Unsupported(reason) for a case it cannot time
    set_threads(n) -> int | None         the CPU thread count actually in effect afterwards
    classify(exc) -> "oom" | "skip" | None
                                         an out-of-memory error, a missing kernel (a skip), or neither
and imports its framework at the top, so importing it is what loads the framework.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

MODULES = {
    "torch": "normcheck.bench.targets.torch",
    "tensorflow": "normcheck.bench.targets.tensorflow",
    "jax": "normcheck.bench.targets.jax",
    "onnxruntime": "normcheck.bench.targets.onnxruntime",
    "numpy": "normcheck.bench.targets.numpy",
}


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
    layout: str = "contiguous"
    cuda_stream: bool = False
    memory: MemoryProbe | None = None  # device memory; the CPU's is measured by the runner
    setup_compile_s: float = 0.0  # compilation done while building (a compiled forward before its backward)
    notes: tuple[str, ...] = ()
    keep: list[Any] = field(default_factory=list)  # objects the call needs alive (buffers, sessions)


def module(impl_framework: str) -> ModuleType:
    """The target module for an implementation's framework (importing it loads the framework)."""
    return importlib.import_module(MODULES[impl_framework])


def target_framework(impl: Any) -> str:
    """Which target module runs ``impl``: its framework, or for user code the form's framework."""
    fw = getattr(impl, "framework", None)
    if fw == "user":  # the CS231n NumPy pair
        return "numpy"
    return fw
