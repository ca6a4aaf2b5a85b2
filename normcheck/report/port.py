"""Renderers of ``normcheck port``: a rich table, JSON, Markdown or CSV, from the flat pair records
(``PortPair.as_dict()``) and the summary (``PortComparison.summary()``) only."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

FORMATS = ("table", "json", "csv", "markdown")
JSON_KIND = "model-port"
SEVERITY_STYLES = {"error": "red", "warning": "yellow", "info": "dim"}
STATUS_STYLES = {"equivalent": "green", "differs": "red", "unpaired": "red"}
PAIR_COLUMNS = ("src_path", "dst_path", "src_kind", "dst_kind", "op", "paired_by", "status")
FINDING_COLUMNS = ("property", "severity", "src_value", "dst_value", "rule", "detail", "check")


def render_port(fmt: str, records: list[dict[str, Any]], summary: dict[str, Any]) -> str | Group:
    """Text (csv, json, markdown) or a rich renderable (table) for a port comparison."""
    if fmt == "json":
        from normcheck.report.json_document import header

        return json.dumps({**header(JSON_KIND), "summary": summary, "pairs": records}, indent=1, allow_nan=False) + "\n"
    if fmt == "csv":
        return _csv(records)
    if fmt == "markdown":
        return _markdown(records, summary)
    return _table(records, summary)


def _side(s: dict[str, Any]) -> str:
    return f"{s['model']} ({s['loader']}, {s['framework']})"


def title(summary: dict[str, Any]) -> str:
    """'SmallCNN (torch.nn.Module, torch) vs small_cnn_port (Keras, tensorflow)'"""
    return f"{_side(summary['src'])} vs {_side(summary['dst'])}"


def counts_text(summary: dict[str, Any]) -> str:
    """'2 pairs: 1 equivalent, 1 differs, 0 unpaired; 1 error, 1 warning'"""
    status, found = summary["status"], summary["findings"]
    n = summary["pairs"]
    text = f"{n} pair{'s' if n != 1 else ''}" if n else "no norm layers on either side"
    parts = [f"{status[k]} {k}" for k in ("equivalent", "differs", "unpaired") if status.get(k)]
    if parts:
        text += ": " + ", ".join(parts)
    errors, warnings = found.get("error", 0), found.get("warning", 0)
    text += f"; {errors} error{'s' if errors != 1 else ''}, {warnings} warning{'s' if warnings != 1 else ''}"
    return text


def first_divergence_text(summary: dict[str, Any]) -> str:
    first = summary.get("first_divergence")
    return (
        "no divergence: every pair is equivalent after translation"
        if first is None
        else f"first divergence: {first['text']}"
    )


def _finding_line(f: dict[str, Any]) -> str:
    text = f"{f['severity']}: {f['property']} {f['src_value']} vs {f['dst_value']}: {f['rule']}"
    return text + (f" ({f['detail']})" if f.get("detail") else "")


def _table(records: list[dict[str, Any]], summary: dict[str, Any]) -> Group:
    parts: list[RenderableType] = []
    table = Table(title=f"{title(summary)}: {counts_text(summary)}", title_justify="left", show_lines=True)
    for header in ("source", "port", "op", "paired by", "status", "findings"):
        table.add_column(header, overflow="fold", no_wrap=header in ("op", "status", "paired by"))
    for r in records:
        findings = Text()
        for k, f in enumerate(r["findings"]):
            if k:
                findings.append("\n")
            findings.append(_finding_line(f), style=SEVERITY_STYLES.get(f["severity"], ""))
        status = r["status"] + (f" ({r['severity']})" if r["status"] == "differs" else "")
        table.add_row(
            r["src_path"] or "—",
            r["dst_path"] or "—",
            r["op"] or "",
            r["paired_by"] or "",
            Text(status, style=STATUS_STYLES.get(r["status"], "")),
            findings,
        )
    parts.append(table if records else Text(f"{title(summary)}: no norm layers on either side"))
    parts.append(Text(first_divergence_text(summary), style="bold" if summary.get("first_divergence") else "green"))
    parts.extend(Text(f"note: {note}", style="cyan") for note in summary.get("notes") or [])
    return Group(*parts)


def _markdown(records: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    from normcheck.report.markdown import markdown_table

    head = f"### {title(summary)}\n\n{counts_text(summary)}. {first_divergence_text(summary)}.\n"
    notes = "".join(f"\n- {note}" for note in summary.get("notes") or [])
    rows = [
        {
            "source": r["src_path"] or "—",
            "port": r["dst_path"] or "—",
            "op": r["op"],
            "paired by": r["paired_by"] or "",
            "status": r["status"] + (f" ({r['severity']})" if r["status"] == "differs" else ""),
            "findings": "<br>".join(_finding_line(f) for f in r["findings"]),
        }
        for r in records
    ]
    table = markdown_table(rows, ["source", "port", "op", "paired by", "status", "findings"]) if rows else ""
    # markdown_table escapes "<": put the line breaks back
    table = table.replace("&lt;br>", "<br>")
    return f"{head}\n{table}" + (f"{notes}\n" if notes else "")


def finding_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per finding (a pair without findings: one row with the finding columns empty)."""
    rows = []
    for r in records:
        pair = {**{k: r.get(k) for k in PAIR_COLUMNS}, "pair_severity": r.get("severity")}
        for f in r["findings"] or [dict.fromkeys(FINDING_COLUMNS)]:
            rows.append({**pair, **{k: f.get(k) for k in FINDING_COLUMNS}})
    return rows


def _csv(records: list[dict[str, Any]]) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*PAIR_COLUMNS, "pair_severity", *FINDING_COLUMNS], lineterminator="\n")
    writer.writeheader()
    for row in finding_rows(records):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()
