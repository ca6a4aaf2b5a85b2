"""Whether a shape's tensors can fit in this machine's memory, decided before anything is allocated.

Pure arithmetic and a read of /proc/meminfo: no framework is imported, so a hopeless shape is
refused in milliseconds instead of ending in an allocation failure or the OOM killer.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

FLOAT64_BYTES = 8
DEFAULT_ARRAY_COUNT = 12
MEMINFO = Path("/proc/meminfo")
UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def tensor_bytes_estimate(shape: Sequence[int], dtype_count: int = DEFAULT_ARRAY_COUNT) -> int:
    """Bytes the tensors of one case of ``shape`` need: ``dtype_count`` float64 arrays of its size.

    A check holds about 12 full-size arrays at once (the input x, the upstream gradient dy, the
    output y, the input gradient, the reference's output and gradients in float64, and the witness
    copies the comparison keeps), each counted as numel * 8 bytes. The framework's own copies in a
    narrower dtype are smaller than the float64 ones and are covered by that rounding up.
    """
    numel = math.prod(int(n) for n in shape)
    return numel * FLOAT64_BYTES * dtype_count


def available_memory() -> int | None:
    """Bytes this machine can still give: MemAvailable from /proc/meminfo, else the physical
    memory (os.sysconf), else None when neither can be read."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the file counts in kB (KiB)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; binary units, one decimal from KiB up."""
    value, index = float(n), 0
    while value >= 1024 and index < len(UNITS) - 1:
        value /= 1024
        index += 1
    return f"{int(value)} B" if index == 0 else f"{value:.1f} {UNITS[index]}"


def memory_problem(shape: Sequence[int], available: int | None = None) -> str | None:
    """Why ``shape`` cannot be run here (its tensors need more than the available memory), or None.

    ``available`` overrides the machine's free memory in bytes (for tests); when it is not given
    and cannot be read, nothing is refused.
    """
    if available is None:
        available = available_memory()
    need = tensor_bytes_estimate(shape)
    if available is None or need <= available:
        return None
    shape_text = ",".join(str(n) for n in shape)
    return (
        f"shape {shape_text} needs about {format_bytes(need)} for its tensors; "
        f"this machine has {format_bytes(available)} available"
    )
