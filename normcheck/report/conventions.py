"""Renderers of ``normcheck conventions``: the same records as a rich table, CSV, JSON or Markdown."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from normcheck.report.json_document import header

OP_TITLES = {"bn": "batch norm", "ln": "layer norm", "in": "instance norm", "gn": "group norm", "rms": "RMS norm"}
META = ("op", "property", "differs", "when porting")


def framework_columns(rows: list[dict[str, Any]]) -> list[str]:
    return [k for k in rows[0] if k not in META] if rows else []


def render_conventions(fmt: str, rows: list[dict[str, Any]]) -> str | Group:
    if fmt == "json":
        return json.dumps({**header("conventions"), "conventions": rows}, indent=1) + "\n"
    if fmt == "csv":
        from normcheck.report.csv import render_csv

        return render_csv(rows)
    if fmt == "markdown":
        return _markdown(rows)
    return _table(rows)


def _markdown(rows: list[dict[str, Any]]) -> str:
    from normcheck.report.markdown import markdown_table

    fws = framework_columns(rows)
    parts = []
    for op in dict.fromkeys(r["op"] for r in rows):
        shown = [
            {**r, "property": f"**{r['property']}**" if r["differs"] else r["property"]} for r in rows if r["op"] == op
        ]
        table = markdown_table(shown, ["property", *fws, "when porting"])
        parts.append(f"### {OP_TITLES.get(op, op)} ({op})\n\n{table}")
    return "\n".join(parts)


def _table(rows: list[dict[str, Any]]) -> Group:
    fws = framework_columns(rows)
    tables: list[RenderableType] = []
    for op in dict.fromkeys(r["op"] for r in rows):
        table = Table(title=f"{OP_TITLES.get(op, op)} ({op})", title_justify="left", show_lines=True)
        table.add_column("property", no_wrap=True)
        for fw in fws:
            table.add_column(fw, overflow="fold")
        table.add_column("when porting", overflow="fold")
        for r in rows:
            if r["op"] != op:
                continue
            style = "bold yellow" if r["differs"] else ""
            table.add_row(
                Text(r["property"], style=style),
                *(Text(r[fw], style=style) for fw in fws),
                Text(r["when porting"], style="yellow"),
            )
        tables.append(table)
    tables.append(Text("Rows in yellow differ between frameworks; 'when porting' says how to translate.", style="dim"))
    return Group(*tables)
