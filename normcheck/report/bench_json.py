"""JSON of a bench run: environment, settings, and every row with its raw samples. It is the
input of ``bench --compare``, so normcheck.bench.load reads it back into the same records."""

from __future__ import annotations

import json
from typing import Any

from normcheck.bench.records import BenchReport
from normcheck.report.json_document import header


def bench_document(report: BenchReport, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        **header("bench"),
        "env": report.env,
        "settings": report.settings,
        "interrupted": report.interrupted,
        "seconds": round(report.seconds, 3),
        "counts": report.counts(),
        "results": [r.as_dict(samples=True) for r in report.results],
    }
    doc.update(extra or {})
    return doc


def render_bench_json(report: BenchReport, extra: dict[str, Any] | None = None) -> str:
    return json.dumps(bench_document(report, extra), indent=1, allow_nan=False) + "\n"
