"""bench's work as the worker does it: plan, measure the machine, then time each row and send it.

One worker times at a time, pinned to the run's CPUs. When a row kills its worker or overruns,
the parent starts a new worker that resumes after that row, with the copy bandwidth already
measured, so the report keeps every row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def run_bench(payload: tuple[Any, Any, int, Any], send: Callable[[Any], None]) -> None:
    from normcheck.bench.threads import apply_threads

    request, settings, start, copy = payload
    cpus = apply_threads(request.threads)  # before any framework is imported
    from normcheck.bench.plan import prepare
    from normcheck.bench.run import header, planned_cases, results

    plan = prepare(request)
    send(("plan", (list(plan.notes), planned_cases(plan), plan.baseline)))
    report, threads = header(plan, settings, cpus, copy)
    send(("header", report))
    for i, result in results(plan, settings, threads, report, start):
        send(("result", (i, result)))
