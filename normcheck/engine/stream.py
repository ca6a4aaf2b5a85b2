"""bench's engine on the parent's side: one worker at a time, each row under a time limit.

A row whose worker dies or overruns becomes an error row naming how, and a fresh worker resumes
with the next row; the parent never imports a framework or the user's code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from normcheck.engine.process import InlineWorker, Worker, WorkerDied, WorkerTimeout, make_worker
from normcheck.errors import UsageError

LOAD_TIMEOUT = 300.0  # seconds to import the frameworks and measure the copy bandwidth


@dataclass
class BenchRun:
    report: Any  # bench.records.BenchReport
    notes: list[str] = field(default_factory=list)


def run_bench(
    request: Any,
    settings: Any,
    timeout: float | None,
    verbose: bool = False,
    on_plan: Callable[[list[str], int], None] | None = None,
    progress: Callable[[Any], None] | None = None,
) -> BenchRun:
    """Every row of ``request`` timed in a worker; UsageError for a request the worker refused."""
    from normcheck.bench.bandwidth import CopyBandwidth
    from normcheck.bench.run import with_baseline

    began = time.perf_counter()
    cases: list[Any] = []
    baseline = None
    report = None
    start, copy = 0, None
    done: dict[int, Any] = {}
    worker: Worker | InlineWorker | None = None
    interrupted = False
    try:
        while start == 0 or start < len(cases):
            started = False
            worker = make_worker(verbose=verbose)
            deadline: float | None = LOAD_TIMEOUT + (timeout or 0.0)
            finished = False
            while not finished:
                try:
                    if not started:
                        started = True
                        worker.send(("bench.run", (request, settings, start, copy)))
                    kind, payload = worker.receive(deadline)
                except (WorkerDied, WorkerTimeout) as e:
                    if not cases:  # lost while loading: nothing planned to blame it on
                        how = e.how if isinstance(e, WorkerDied) else f"loading took over {LOAD_TIMEOUT:g} s"
                        raise UsageError(f"bench could not start: its worker died ({how})") from None
                    how = (
                        f"the worker died: {e.how}"
                        if isinstance(e, WorkerDied)
                        else f"timed out after {timeout:g} s (the limit is --timeout); the worker was stopped"
                    )
                    start = _lose_row(done, cases, start, how, progress)
                    break
                if kind == "plan":
                    notes, cases, baseline = payload
                    if on_plan is not None and report is None:
                        on_plan(notes, len(cases))
                    if not cases:
                        finished = True
                elif kind == "header":
                    if report is None:
                        report = payload
                        c = report.settings["copy_bandwidth"]
                        copy = CopyBandwidth(c["gbps"], c["how"])
                    deadline = timeout if timeout is not None else None
                elif kind == "result":
                    i, result = payload
                    done[i] = result
                    start = i + 1
                    if progress:
                        progress(result)
                elif kind == "usage":
                    raise UsageError(payload)
                elif kind == "fail":
                    if not cases:
                        raise UsageError(f"bench could not start: {payload}")
                    start = _lose_row(done, cases, start, payload, progress)
                    break
                elif kind == "done":
                    finished = True
                    start = len(cases)
            worker.stop()
            worker = None
            if finished:
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if worker is not None:
            worker.kill()
    if report is None:
        if interrupted:
            raise KeyboardInterrupt
        raise UsageError("bench could not start: its worker measured nothing")
    machine = {"copy_gbps": copy.gbps if copy else None, "dram_gbps": report.settings.get("dram_gbps")}
    rows = [done[i] if done[i].copy_gbps is not None else replace(done[i], **machine) for i in sorted(done)]
    report.results = with_baseline(rows, baseline)
    report.interrupted = interrupted
    report.seconds = time.perf_counter() - began
    return BenchRun(report, notes=[] if not cases else list(report.settings.get("notes", [])))


def _lose_row(
    done: dict[int, Any], cases: list[Any], start: int, reason: str, progress: Callable[[Any], None] | None
) -> int:
    """Row ``start`` ended without a result: an error row with ``reason``; the row to resume at."""
    from normcheck.bench.records import ERROR, BenchResult

    done[start] = BenchResult(cases[start], status=ERROR, reason=reason)
    if progress:
        progress(done[start])
    return start + 1
