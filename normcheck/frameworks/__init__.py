"""Framework adapters, discovered without importing any framework.

Adding a framework is one module here plus one entry in FRAMEWORKS.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from normcheck.frameworks.base import Framework


@dataclass(frozen=True)
class FrameworkInfo:
    name: str
    adapter: str  # module holding the adapter's FRAMEWORK factory
    requires: tuple[str, ...]  # import names that must be installed
    extra: str  # pip extra that installs it


FRAMEWORKS: dict[str, FrameworkInfo] = {
    "torch": FrameworkInfo("torch", "normcheck.frameworks.torch", ("torch",), "torch"),
    "tensorflow": FrameworkInfo("tensorflow", "normcheck.frameworks.tensorflow", ("tensorflow", "keras"), "tensorflow"),
    "jax": FrameworkInfo("jax", "normcheck.frameworks.jax", ("jax", "flax"), "jax"),
    "onnxruntime": FrameworkInfo(
        "onnxruntime", "normcheck.frameworks.onnxruntime", ("onnxruntime", "onnx"), "onnxruntime"
    ),
}


def is_installed(name: str) -> bool:
    return all(importlib.util.find_spec(mod) is not None for mod in FRAMEWORKS[name].requires)


def installed() -> list[str]:
    return [name for name in FRAMEWORKS if is_installed(name)]


def load(name: str) -> Framework:
    """Import the adapter (and with it the framework) and return it."""
    return importlib.import_module(FRAMEWORKS[name].adapter).framework()
