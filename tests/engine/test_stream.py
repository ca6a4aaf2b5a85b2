"""bench's parent side: rows a worker already sent are kept when Ctrl-C arrives before the
parent has read them (the race a busy machine exposes)."""

from __future__ import annotations

from normcheck.bench.records import OK, BenchCase, BenchReport, BenchResult
from normcheck.engine.process import InlineWorker
from normcheck.engine.stream import _Stream

CASES = [
    BenchCase("gn", (1, 32, 8, 8), "G=32", "float32", "torch", "F.group_norm", "cpu", "forward", "eager"),
    BenchCase("gn", (4, 64, 32, 32), "G=32", "float32", "torch", "F.group_norm", "cpu", "forward", "eager"),
]
HEADER = BenchReport(env={}, settings={"copy_bandwidth": {"gbps": 10.0, "how": "numpy copy"}})


def _sent(*messages):
    worker = InlineWorker()
    worker.queue.extend(messages)
    return worker


def test_drain_keeps_the_plan_header_and_rows_already_sent():
    seen: list[BenchResult] = []
    run = _Stream(progress=seen.append, on_plan=None)
    row = BenchResult(CASES[0], status=OK, samples=(1e-3, 1e-3, 1e-3), block=1)
    run.drain(_sent(("plan", ([], CASES, None)), ("header", HEADER), ("result", (0, row))))
    assert run.report is HEADER and run.copy is not None and run.copy.gbps == 10.0
    assert run.done == {0: row} and run.start == 1 and seen == [row]


def test_drain_of_a_silent_worker_changes_nothing():
    run = _Stream(progress=None, on_plan=None)
    run.drain(_sent())
    assert run.report is None and run.done == {} and run.start == 0


def test_a_lost_row_is_an_error_row_and_the_run_resumes_after_it():
    run = _Stream(progress=None, on_plan=None)
    run.take("plan", ([], CASES, None))
    run.lose_row("the worker died: segmentation fault (SIGSEGV)")
    assert run.start == 1 and run.done[0].status == "error" and "SIGSEGV" in run.done[0].reason
