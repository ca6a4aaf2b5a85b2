"""Renderers of ``normcheck model``'s per-layer checks: verify's own renderers over the same
CheckResult records (one row per layer, input kind and check; ``impl`` names the layer), with the
model's inventory at the head of the table and Markdown, and inside the JSON document."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Group

FORMATS = ("table", "csv", "json", "junit", "markdown")


def render_model_checks(
    fmt: str,
    records: list[dict[str, Any]],
    summary: dict[str, Any],
    layers: list[dict[str, Any]],
    inventory: dict[str, Any],
    show_all: bool = False,
) -> str | Group:
    """Text (csv, json, junit, markdown) or a rich renderable (table): ``records`` are the checks'
    flat records, ``summary`` their counts, ``layers`` and ``inventory`` the model's inventory
    (NormLayer.as_dict() records and Inventory.summary())."""
    from normcheck.report import render
    from normcheck.report.model_inventory import render_inventory

    if fmt == "json":
        from normcheck.report.json_document import header

        doc = {
            **header("verify"),
            "summary": summary,
            "model": {"summary": inventory, "layers": layers},
            "results": records,
        }
        return json.dumps(doc, indent=1, allow_nan=False) + "\n"
    if fmt == "markdown":
        head = render_inventory("markdown", layers, inventory)
        body = render("markdown", records, summary)
        return f"{head}\n{body}" if isinstance(head, str) and isinstance(body, str) else body
    if fmt == "table":
        return Group(render_inventory("table", layers, inventory), render("table", records, summary, show_all))
    return render(fmt, records, summary)
