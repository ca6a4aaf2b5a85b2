"""Reading a bench JSON back into records (for --compare)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from normcheck.bench.records import STATUSES, BenchCase, BenchReport, BenchResult
from normcheck.errors import UsageError


def load_report(path: Path) -> BenchReport:
    """The run saved in ``path`` by ``bench --format json``; UsageError naming what is wrong."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "bench" or not isinstance(doc.get("results"), list):
        raise UsageError(f"{path} is not the JSON of a normcheck bench run (write one with --format json)")
    try:
        results = [result_from_row(row) for row in doc["results"]]
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f"{path}: a result row is malformed ({type(e).__name__}: {e})") from None
    report = BenchReport(env=doc.get("env", {}), settings=doc.get("settings", {}), results=results)
    report.interrupted = bool(doc.get("interrupted", False))
    return report


def result_from_row(row: dict[str, Any]) -> BenchResult:
    if row["status"] not in STATUSES:
        raise ValueError(f"unknown status {row['status']!r}")
    shape = tuple(int(n) for n in str(row["shape"]).split("x"))
    case = BenchCase(
        op=row["op"], shape=shape, params=row["params"], dtype=row["dtype"], framework=row["framework"],
        impl=row["impl"], device=row["device"], pass_=row["pass"], mode=row["mode"], layout=row["layout"],
        model=row.get("model", ""),
    )
    notes = tuple(n for n in (row.get("notes") or "").split("; ") if n)
    return BenchResult(
        case, status=row["status"], reason=row.get("reason", ""),
        samples=tuple(float(s) for s in row.get("samples_s") or ()), block=int(row.get("block", 1)),
        timer=row.get("timer", ""), converged=row.get("converged") is not False,
        first_call_s=row.get("first_call_s"), compile_s=row.get("compile_s"), bytes_moved=row.get("bytes"),
        peak_memory=row.get("peak_memory_bytes"), copy_gbps=row.get("copy_gbps"), dram_gbps=row.get("dram_gbps"),
        baseline_s=row.get("baseline_s"), threads=row.get("threads"), notes=notes,
    )
