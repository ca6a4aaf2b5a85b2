"""Measuring one target: warm-up excluded, blocks of calls until the spread is small.

CPU (and any host-timed device): a block is enough calls to last ``BLOCK_S`` (10 ms: the timer's
own overhead is below 1e-4 of it, as torch.utils.benchmark requires, and one page fault or
interrupt is averaged over many calls), each call followed by the target's sync; a sample is the
block's time per call. Blocks are added until at least
``min_time`` is measured and IQR/median < ``threshold``, or ``max_time`` runs out.

CUDA with torch: one CUDA event pair per call around work on the current stream, the L2 cache
flushed before each call by zeroing a buffer larger than it (triton's do_bench); a sample is
one call. Everything else on CUDA is timed on the host, the device synchronised and the L2
flushed before each call and synchronised after it.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from normcheck.bench import stats
from normcheck.bench.target import Target

BLOCK_S = 1e-2
MIN_SAMPLES = 5


@dataclass(frozen=True)
class TimerSettings:
    min_time: float = 0.2  # seconds of samples at least
    max_time: float = 2.0  # seconds of samples at most; a row still noisy then is flagged
    threshold: float = stats.NOISY_IQR  # stop once IQR/median is below this
    warmup: float = 0.05  # seconds of calls run and discarded after the first one


# the quick profile's timing: a quarter of the default's, enough for a median within a few
# percent on a quiet machine, not for a regression gate's fine differences
QUICK_SETTINGS = TimerSettings(min_time=0.05, max_time=0.5)


@dataclass(frozen=True)
class Measurement:
    samples: tuple[float, ...]
    block: int
    first_call_s: float
    converged: bool
    timer: str


@contextmanager
def _no_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _once(target: Target) -> float:
    start = time.perf_counter()
    target.sync(target.call())
    return time.perf_counter() - start


def _warm_up(target: Target, settings: TimerSettings) -> tuple[float, float]:
    """(first call's time, estimated steady time per call: the median of the warm-up calls)."""
    first = _once(target)
    times: list[float] = []
    while len(times) < 3 or sum(times) < settings.warmup:
        times.append(_once(target))
        if sum(times) > settings.max_time:
            break
    return first, max(stats.median(times), 1e-9)


def _done(samples: list[float], spent: float, settings: TimerSettings) -> bool | None:
    """True: converged; False: the time cap is reached; None: go on."""
    if len(samples) >= MIN_SAMPLES and spent >= settings.min_time and stats.relative_iqr(samples) < settings.threshold:
        return True
    if spent >= settings.max_time and len(samples) >= 2:
        return False
    return None


# A timer's one hook: given the warm-up's estimate of a call, the block size and a function that
# times one round and returns (its samples, the seconds it measured).
Rounds = Callable[[float], tuple[int, Callable[[], tuple[list[float], float]]]]


def _measure(target: Target, settings: TimerSettings, rounds: Rounds, timer: str) -> Measurement:
    """The measurement loop every timer shares (as torch.utils.benchmark's): warm up with the
    collector off, then time rounds until the samples are stable or the time cap is reached."""
    with _no_gc():
        first, estimate = _warm_up(target, settings)
        block, one_round = rounds(estimate)
        samples: list[float] = []
        spent = 0.0
        while True:
            round_samples, seconds = one_round()
            samples.extend(round_samples)
            spent += seconds
            verdict = _done(samples, spent, settings)
            if verdict is not None:
                return Measurement(tuple(samples), block, first, verdict, timer)


def measure_host(target: Target, settings: TimerSettings, flush: Callable[[], None] | None = None) -> Measurement:
    """Blocks of calls timed with perf_counter; with ``flush`` (a device), one call per block,
    the cache flushed and the device idle before each."""

    def rounds(estimate: float) -> tuple[int, Callable[[], tuple[list[float], float]]]:
        block = 1 if flush else max(1, math.ceil(BLOCK_S / estimate))

        def one_block() -> tuple[list[float], float]:
            if flush:
                flush()
            call, sync = target.call, target.sync
            start = time.perf_counter()
            for _ in range(block):
                sync(call())
            elapsed = time.perf_counter() - start
            return [elapsed / block], elapsed

        return block, one_block

    return _measure(target, settings, rounds, "perf_counter + sync, L2 flushed" if flush else "perf_counter")


def measure_cuda_events(target: Target, settings: TimerSettings, device: str) -> Measurement:
    """Per-call CUDA events on the current stream, the L2 flushed before each call."""
    import torch

    cache = l2_flush_buffer(device)

    def rounds(estimate: float) -> tuple[int, Callable[[], tuple[list[float], float]]]:
        # a round of calls lasting about 10 ms of device time, read back at once
        n = max(MIN_SAMPLES, min(1000, math.ceil(0.01 / estimate)))

        def one_round() -> tuple[list[float], float]:
            starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
            ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
            for s, e in zip(starts, ends, strict=True):
                cache.zero_()
                s.record()
                target.call()  # its outputs go back to the allocator at once, as in a training step
                e.record()
            torch.cuda.synchronize(device)
            times = [s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends, strict=True)]
            return times, sum(times)

        return 1, one_round

    return _measure(target, settings, rounds, "cuda events, L2 flushed")


L2_FLUSH_BYTES = 256 * 2**20  # larger than any current GPU's L2 (triton's do_bench uses the same)
_FLUSH: dict[str, Any] = {}


def l2_flush_buffer(device: str) -> Any:
    import torch

    if device not in _FLUSH:
        _FLUSH[device] = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.int32, device=device)
    return _FLUSH[device]


def host_flush(device: str) -> Callable[[], None] | None:
    """Flush the L2 of ``device`` and wait for the device (through torch), or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    cache = l2_flush_buffer(device)

    def flush() -> None:
        cache.zero_()
        torch.cuda.synchronize(device)

    return flush
