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

from normcheck.bench.target import MemoryProbe

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
WHAT = (
    "CPU: rise of the process's peak resident memory (VmHWM) during one call, malloc's free memory "
    "returned to the system first; memory a framework's own pool keeps is not counted"
)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
STEADY_MMAP = 32 * 2**20  # the most glibc's own dynamic rule raises the threshold to
NEVER_TRIM = 2**31 - 1


def steady_malloc() -> bool:
    """Fix glibc malloc's thresholds for the whole run; False where there is no glibc.

    glibc adapts them to the allocations it has seen, so whether a call's temporaries are reused
    or handed back to the system and faulted in again on every call depends on what ran before
    (the same backward measured 2,000 to 4,500 page faults per call, IQR/median 0.45 to 0.9). Fixed
    at the values a long-running process settles on (blocks up to 32 MiB from the heap, the heap
    not trimmed), every case is timed under the same allocator, with no faults in steady state.
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, STEADY_MMAP)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))


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
