"""Renderers of ``normcheck conventions --policies``: the named precision policies (one flat record
each, normcheck.policies) as a rich table, CSV, JSON or Markdown. The table and Markdown put the
policies side by side, one row per declared property, as the conventions are shown."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from normcheck.report.json_document import header

NOTE = (
    "With --policy NAME, normcheck verify holds every case's forward output to the policy computed "
    "exactly as stated, to the ulp; the float64 reference check keeps its own tolerance."
)


def render_policies(fmt: str, records: list[dict[str, Any]]) -> str | Group:
    if fmt == "json":
        return json.dumps({**header("conventions"), "policies": records}, indent=1) + "\n"
    if fmt == "csv":
        from normcheck.report.csv import render_csv

        return render_csv(records)
    if fmt == "markdown":
        return _markdown(records)
    return _table(records)


def _properties(records: list[dict[str, Any]]) -> list[str]:
    return [k for k in records[0] if k != "policy"] if records else []


def _markdown(records: list[dict[str, Any]]) -> str:
    from normcheck.report.markdown import markdown_table

    rows = [{"property": prop, **{r["policy"]: r[prop] for r in records}} for prop in _properties(records)]
    return "### precision policies of RMS norm\n\n" + markdown_table(
        rows, ["property", *(r["policy"] for r in records)]
    )


def _table(records: list[dict[str, Any]]) -> Group:
    table = Table(title="precision policies of RMS norm (--policy)", title_justify="left", show_lines=True)
    table.add_column("property", no_wrap=True)
    for r in records:
        table.add_column(r["policy"], overflow="fold")
    for prop in _properties(records):
        table.add_row(Text(prop), *(Text(str(r[prop])) for r in records))
    return Group(table, Text(NOTE, style="dim"))
