"""Renderers: one module per format, each turning the same flat records into output."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from rich.console import Group

from normcheck.bench.compare import Comparison
from normcheck.bench.records import BenchReport

FORMATS = ("table", "csv", "json", "junit", "markdown", "github")
BENCH_FORMATS = ("table", "csv", "json", "markdown", "github")


def render(
    fmt: str,
    records: list[dict[str, Any]],
    summary: dict[str, Any],
    show_all: bool = False,
    specs: Sequence[str | None] | None = None,
) -> str | Group:
    """Text (csv, json, junit, markdown, github) or a rich renderable (table) for ``records``.
    ``specs``: for each record, the SPEC of the user implementation it checks, or None (github
    points its annotations at that file)."""
    if fmt == "github":
        from normcheck.report.github import render_github

        return render_github(records, summary, specs, workspace=os.environ.get("GITHUB_WORKSPACE"))
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


def render_bench(
    fmt: str, report: BenchReport, comparison: Comparison | None = None, spec: str | None = None
) -> str | Group:
    """Text (csv, json, markdown, github) or a rich renderable (table) for a bench run (a
    BenchReport), with the regression gate's findings when ``comparison`` is given. ``spec``: the
    SPEC of the user implementation timed, if any (github points at its file)."""
    if fmt == "github":
        from normcheck.report.github import render_bench_github

        return render_bench_github(report, comparison, spec, workspace=os.environ.get("GITHUB_WORKSPACE"))
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
