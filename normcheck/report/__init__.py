"""Renderers: one module per format, each turning the same flat records into output."""

from __future__ import annotations

from typing import Any

from rich.console import Group

from normcheck.bench.compare import Comparison
from normcheck.bench.records import BenchReport

FORMATS = ("table", "csv", "json", "junit", "markdown")
BENCH_FORMATS = ("table", "csv", "json", "markdown")


def render(fmt: str, records: list[dict[str, Any]], summary: dict[str, Any], show_all: bool = False) -> str | Group:
    """Text (csv, json, junit, markdown) or a rich renderable (table) for ``records``."""
    if fmt == "csv":
        from normcheck.report.csv import render_csv

        return render_csv(records)
    if fmt == "junit":
        from normcheck.report.junit import render_junit

        return render_junit(records, summary)
    if fmt == "markdown":
        from normcheck.report.verify_markdown import render_verify_markdown

        return render_verify_markdown(records, summary)
    if fmt == "json":
        from normcheck.report.json import render_json

        return render_json(records, summary)
    from normcheck.report.table import render_table

    return render_table(records, show_all=show_all, notes=summary.get("translations", ()))


def render_bench(fmt: str, report: BenchReport, comparison: Comparison | None = None) -> str | Group:
    """Text (csv, json, markdown) or a rich renderable (table) for a bench run (a BenchReport),
    with the regression gate's findings when ``comparison`` is given."""
    if fmt == "csv":
        from normcheck.report.csv import render_csv

        return render_csv([r.as_dict() for r in report.results])
    if fmt == "json":
        from normcheck.report.bench_json import render_bench_json

        extra = None
        if comparison is not None:
            extra = {
                "compare": {
                    "threshold": comparison.threshold,
                    "slower": [c.as_dict() for c in comparison.slower],
                    "faster": [c.as_dict() for c in comparison.faster],
                    "env_differences": comparison.env_differences,
                }
            }
        return render_bench_json(report, extra)
    if fmt == "markdown":
        from normcheck.report.bench_markdown import render_bench_markdown

        return render_bench_markdown(report, comparison)
    from normcheck.report.bench_table import render_bench_table

    return render_bench_table(report, comparison)
