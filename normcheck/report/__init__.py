"""Renderers: one module per format, each turning the same flat records into output."""

from __future__ import annotations

from typing import Any

FORMATS = ("table", "csv", "json", "junit", "markdown")


def render(fmt: str, records: list[dict[str, Any]], summary: dict[str, Any], show_all: bool = False) -> Any:
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
