"""Renderers: one module per format, each turning the same flat records into output."""

from __future__ import annotations

from typing import Any

FORMATS = ("table", "csv", "json")


def render(fmt: str, records: list[dict[str, Any]], summary: dict[str, Any], show_all: bool = False) -> Any:
    """Text (csv, json) or a rich renderable (table) for ``records``."""
    if fmt == "csv":
        from normcheck.report.csv import render_csv

        return render_csv(records)
    if fmt == "json":
        from normcheck.report.json import render_json

        return render_json(records, summary)
    from normcheck.report.table import render_table

    return render_table(records, show_all=show_all, notes=summary.get("translations", ()))
