"""bench's engine on the parent's side: one worker at a time, each row under a time limit.

A row whose worker dies or overruns becomes an error row naming how, and a fresh worker resumes
with the next row; the parent never imports a framework or the user's code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from normcheck.bench.bandwidth import CopyBandwidth
from normcheck.bench.plan import BenchRequest
from normcheck.bench.records import ERROR, BenchCase, BenchReport, BenchResult
from normcheck.bench.timer import TimerSettings
from normcheck.engine.ctrl_c import SecondCtrlC
from normcheck.engine.process import InlineWorker, Worker, WorkerDied, WorkerTimeout, make_worker
from normcheck.errors import UsageError

LOAD_TIMEOUT = 300.0  # seconds to import the frameworks and measure the copy bandwidth


@dataclass
class BenchRun:
    report: BenchReport
    notes: list[str] = field(default_factory=list)


@dataclass
class _Stream:
    """What the parent knows of a bench run so far, from the workers' messages."""

    progress: Callable[[BenchResult], None] | None
    on_plan: Callable[[list[str], int], None] | None
    cases: list[BenchCase] = field(default_factory=list)
    planned: bool = False
    baseline: str | None = None
    report: BenchReport | None = None
    copy: CopyBandwidth | None = None
    done: dict[int, BenchResult] = field(default_factory=dict)
    start: int = 0  # the next row to run

    def take(self, kind: str, payload: Any) -> bool:
        """Record one message; True when the worker has run every row it was given."""
        if kind == "plan":
            notes, self.cases, self.baseline = payload
            if self.on_plan is not None and not self.planned:
                self.on_plan(notes, len(self.cases))
            self.planned = True
            return not self.cases
        if kind == "header":
            if self.report is None:
                self.report = payload
                c = payload.settings["copy_bandwidth"]
                self.copy = CopyBandwidth(c["gbps"], c["how"])
        elif kind == "result":
            i, result = payload
            self.done[i] = result
            self.start = i + 1
            if self.progress:
                self.progress(result)
        elif kind == "done":
            self.start = len(self.cases)
            return True
        return False

    def lose_row(self, reason: str) -> None:
        """Row ``start`` ended without a result: an error row with ``reason``; resume after it."""
        self.done[self.start] = BenchResult(self.cases[self.start], status=ERROR, reason=reason)
        if self.progress:
            self.progress(self.done[self.start])
        self.start += 1

    def drain(self, worker: Worker | InlineWorker) -> None:
        """Take the messages already sent: after a Ctrl-C, rows measured before it are kept even
        when the parent had not read them yet."""
        try:  # until nothing is waiting: receive(0) then ends the worker, which is stopped anyway
            while True:
                kind, payload = worker.receive(0)
                if kind in ("plan", "header", "result"):
                    self.take(kind, payload)
        except (WorkerDied, WorkerTimeout):
            pass


def run_bench(
    request: BenchRequest,
    settings: TimerSettings,
    timeout: float | None,
    verbose: bool = False,
    on_plan: Callable[[list[str], int], None] | None = None,
    progress: Callable[[BenchResult], None] | None = None,
) -> BenchRun:
    """Every row of ``request`` timed in a worker; UsageError for a request the worker refused."""
    from normcheck.bench.run import with_baseline

    began = time.perf_counter()
    run = _Stream(progress, on_plan)
    worker: Worker | InlineWorker | None = None
    interrupted = False
    ctrl_c = SecondCtrlC()
    ctrl_c.arm()
    try:
        while not run.planned or run.start < len(run.cases):
            worker = make_worker(verbose=verbose)
            finished = _serve(worker, run, request, settings, timeout)
            worker.stop()
            worker = None
            if finished:
                break
    except KeyboardInterrupt:
        ctrl_c.ignore()  # the rows measured so far are written whatever else arrives
        interrupted = True
        if worker is not None:
            run.drain(worker)
    finally:
        if worker is not None:
            worker.kill()
        ctrl_c.restore()
    report = run.report
    if report is None:
        if interrupted:
            raise KeyboardInterrupt
        raise UsageError("bench could not start: its worker measured nothing")
    copy_gbps, dram_gbps = run.copy.gbps if run.copy else None, report.settings.get("dram_gbps")
    rows = [
        run.done[i]
        if run.done[i].copy_gbps is not None
        else replace(run.done[i], copy_gbps=copy_gbps, dram_gbps=dram_gbps)
        for i in sorted(run.done)
    ]
    report.results = with_baseline(rows, run.baseline)
    report.interrupted = interrupted
    report.seconds = time.perf_counter() - began
    return BenchRun(report, notes=[] if not run.cases else list(report.settings.get("notes", [])))


def _serve(
    worker: Worker | InlineWorker,
    run: _Stream,
    request: BenchRequest,
    settings: TimerSettings,
    timeout: float | None,
) -> bool:
    """One worker runs rows from ``run.start`` until it has run them all (True) or loses one
    (False: an error row is recorded, and a new worker resumes after it)."""
    worker.send(("bench.run", (request, settings, run.start, run.copy)))
    deadline: float | None = LOAD_TIMEOUT + (timeout or 0.0)
    while True:
        try:
            kind, payload = worker.receive(deadline)
        except (WorkerDied, WorkerTimeout) as e:
            if not run.cases:  # lost while loading: nothing planned to blame it on
                how = e.how if isinstance(e, WorkerDied) else f"loading took over {LOAD_TIMEOUT:g} s"
                raise UsageError(f"bench could not start: its worker died ({how})") from None
            run.lose_row(
                f"the worker died: {e.how}"
                if isinstance(e, WorkerDied)
                else f"timed out after {timeout:g} s (the limit is --timeout); the worker was stopped"
            )
            return False
        if kind == "usage":
            raise UsageError(payload)
        if kind == "fail":
            if not run.cases:
                raise UsageError(f"bench could not start: {payload}")
            run.lose_row(payload)
            return False
        if run.take(kind, payload):
            return True
        if kind == "header":
            deadline = timeout
