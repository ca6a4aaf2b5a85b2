"""The environment header of a run: what a timing means depends on all of it."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Any

from normcheck.frameworks import REGISTRY


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions(frameworks: list[str]) -> dict[str, str]:
    """The versions of normcheck, Python, the core dependencies' frameworks (NumPy) and ``frameworks``:
    of every distribution their registry entries name."""
    out = {"normcheck": _version("normcheck") or "unknown", "python": platform.python_version()}
    core = [name for name, entry in REGISTRY.items() if entry.extra is None]
    for fw in [*core, *frameworks]:
        entry = REGISTRY.get(fw)
        for dist in entry.distributions if entry is not None else ():
            v = _version(dist)
            if v:
                out[dist] = v
    return out


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(
    frameworks: list[str], device: str, threads: int, cpus: list[int], gpu: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["normcheck", *sys.argv[1:]]),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "cpus_pinned": cpus,
        "device": device,
        "gpu": gpu,
        "versions": versions(frameworks),
    }


def gpu_info(device: str) -> dict[str, Any] | None:
    """Name, memory and driver of the GPU, through torch when it is installed."""
    if not device.startswith("cuda"):
        return None
    try:
        import torch

        index = int(device.partition(":")[2] or 0)
        props = torch.cuda.get_device_properties(index)
        return {
            "name": props.name,
            "memory_bytes": props.total_memory,
            "cuda": torch.version.cuda,
            "capability": f"{props.major}.{props.minor}",
        }
    except Exception:
        return None
