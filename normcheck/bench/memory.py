"""Peak memory of one call on the CPU: how far the process's resident set rose above its level
before the call (Linux's VmHWM, reset through /proc/self/clear_refs).

For the reading to see the call's buffers they must land on pages not yet resident, so before
the call glibc's malloc_trim(0) hands the free memory of malloc's heaps back to the kernel: a
block reused from an earlier call then faults its pages in again and is counted. Allocators
that keep their own pools (ONNX Runtime's arena, for one) still reuse resident memory, which is
then not counted.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

from normcheck.bench.targets import MemoryProbe

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
WHAT = ("CPU: rise of the process's peak resident memory (VmHWM) during one call, malloc's free memory "
        "returned to the system first; memory a framework's own pool keeps is not counted")


def _malloc_trim():
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def _status_bytes(field: str) -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def rss_probe() -> MemoryProbe | None:
    """The probe, or None where the kernel or libc does not offer what it needs."""
    if _TRIM is None:
        return None
    try:
        CLEAR_REFS.write_text("5")
        _status_bytes("VmHWM")
    except (OSError, KeyError):
        return None
    level = [0]

    def reset() -> None:
        _TRIM(0)
        CLEAR_REFS.write_text("5")
        level[0] = _status_bytes("VmRSS")

    def peak_above() -> int:
        return max(0, _status_bytes("VmHWM") - level[0])

    return MemoryProbe(reset, peak_above)
