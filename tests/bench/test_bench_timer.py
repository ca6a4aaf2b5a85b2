"""The timer on targets whose cost is known: warm-up excluded, every call synced, blocks sized."""

from __future__ import annotations

import time

from normcheck.bench.target import Target
from normcheck.bench.timer import BLOCK_S, MIN_SAMPLES, TimerSettings, measure_host

FAST = TimerSettings(min_time=0.02, max_time=0.2, warmup=0.005)


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_every_call_is_synced_and_blocks_last_long_enough():
    calls, syncs = [], []
    target = Target(lambda: calls.append(1) or len(calls), sync=syncs.append)
    m = measure_host(target, FAST)
    assert len(calls) == len(syncs)
    assert syncs == list(range(1, len(calls) + 1))  # each call's own result
    assert len(m.samples) >= 2
    assert m.block * min(m.samples) >= BLOCK_S / 20  # a block is sized to last about BLOCK_S


def test_first_call_is_measured_apart_from_the_samples():
    state = {"first": True}

    def call() -> None:
        if state["first"]:
            state["first"] = False
            spin(0.05)  # a compile
        spin(0.0005)

    m = measure_host(Target(call), FAST)
    assert m.first_call_s >= 0.05
    assert max(m.samples) < 0.01


def test_steady_target_converges_with_enough_samples():
    m = measure_host(Target(lambda: spin(0.0002)), TimerSettings(min_time=0.05, max_time=1.0, warmup=0.005))
    assert m.timer == "perf_counter"
    assert len(m.samples) >= 2
    if m.converged:
        assert len(m.samples) >= MIN_SAMPLES


def test_time_cap_ends_a_noisy_target():
    state = {"n": 0}

    def call() -> None:
        state["n"] += 1
        spin(0.004 if state["n"] % 2 else 0.0001)

    settings = TimerSettings(min_time=0.01, max_time=0.1, warmup=0.0, threshold=0.0)
    start = time.perf_counter()
    m = measure_host(Target(call), settings)
    assert not m.converged
    assert time.perf_counter() - start < 2.0


def test_flush_runs_before_every_sample():
    flushes = []
    m = measure_host(Target(lambda: spin(0.0001)), FAST, flush=lambda: flushes.append(1))
    assert m.block == 1
    assert len(flushes) == len(m.samples)
    assert "L2 flushed" in m.timer
