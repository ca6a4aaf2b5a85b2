"""The device's copy bandwidth, measured in the same run as the ops: the practical limit a
memory-bound op is judged against (a copy reads and writes each byte once, as a one-pass
normalization would)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np

from normcheck.bench.metrics import COPY_BYTES
from normcheck.bench.stats import median
from normcheck.bench.target import Target
from normcheck.bench.timer import TimerSettings, measure_cuda_events, measure_host


@dataclass(frozen=True)
class CopyBandwidth:
    gbps: float
    how: str  # what was copied with what, and how it was timed


def copy_bandwidth(device: str, settings: TimerSettings) -> CopyBandwidth:
    """GB/s of copying a 256 MiB buffer into another (2 bytes moved per byte copied)."""
    have_torch = importlib.util.find_spec("torch") is not None
    if device.startswith("cuda"):
        return _torch_copy(device, settings)
    if have_torch:  # torch's copy runs on the threads set for the run; NumPy's on one
        return _torch_copy("cpu", settings)
    src = np.ones(COPY_BYTES // 4, dtype=np.float32)
    dst = np.empty_like(src)
    m = measure_host(Target(lambda: np.copyto(dst, src)), settings)
    return CopyBandwidth(2 * COPY_BYTES / median(m.samples) / 1e9, "numpy.copyto of 256 MiB, 1 thread")


def _torch_copy(device: str, settings: TimerSettings) -> CopyBandwidth:
    import torch

    src = torch.ones(COPY_BYTES // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    target = Target(lambda: dst.copy_(src), cuda_stream=device.startswith("cuda"))
    if device.startswith("cuda"):
        m = measure_cuda_events(target, settings, device)
        how = "torch copy_ of 256 MiB, CUDA events"
    else:
        m = measure_host(target, settings)
        how = f"torch copy_ of 256 MiB, {torch.get_num_threads()} thread(s)"
    return CopyBandwidth(2 * COPY_BYTES / median(m.samples) / 1e9, how)
