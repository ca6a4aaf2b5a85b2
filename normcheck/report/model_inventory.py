"""Renderers of ``normcheck model``'s inventory: a rich table, CSV, JSON or Markdown, from the flat
records (``NormLayer.as_dict()``) and the summary (``Inventory.summary()``) only."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

FORMATS = ("table", "json", "csv", "markdown")
JSON_KIND = "model-inventory"  # the JSON document's kind (its layout version: json_document.SCHEMAS)
OP_TITLES = {"bn": "batch norm", "ln": "layer norm", "in": "instance norm", "gn": "group norm", "rms": "RMS norm"}
ROLE_LETTERS = {"weight": "w", "bias": "b", "running_mean": "mean", "running_var": "var"}
COLUMNS = (  # (key of the display row, header)
    ("path", "path"),
    ("kind", "kind"),
    ("op", "op"),
    ("eps", "eps"),
    ("momentum", "momentum"),
    ("axes", "axes / groups"),
    ("affine", "affine"),
    ("mode", "stats / mode"),
    ("dtype", "dtype"),
    ("params", "parameters"),
    ("status", "status"),
    ("notes", "notes"),
)


def render_inventory(fmt: str, records: list[dict[str, Any]], summary: dict[str, Any]) -> str | Group:
    """Text (csv, json, markdown) or a rich renderable (table) for an inventory."""
    if fmt == "json":
        return _json(records, summary)
    if fmt == "csv":
        from normcheck.report.csv import render_csv

        return render_csv(records) if records else ",".join(_csv_header()) + "\n"
    if fmt == "markdown":
        return _markdown(records, summary)
    return _table(records, summary)


def _json(records: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    from normcheck.report.json_document import header

    doc = {**header(JSON_KIND), "summary": summary, "layers": records}
    return json.dumps(doc, indent=1, allow_nan=False) + "\n"


def _csv_header() -> list[str]:
    from normcheck.model.records import NormLayer

    return list(NormLayer("", None, "", "", True, "").as_dict())


# ---- display cells ----------------------------------------------------------------------------


def _number(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return f"{value:.4g}"


def _momentum(r: dict[str, Any]) -> str:
    weights = r.get("momentum_weights")
    if r.get("momentum") is None:
        return "cumulative average" if weights == "cumulative average" else ""
    text = f"{_number(r['momentum'])} ({weights})"
    if weights == "old" and r.get("momentum_new_batch") is not None:
        text += f" = {_number(r['momentum_new_batch'])} new"
    return text


def _axes(r: dict[str, Any]) -> str:
    parts = []
    if r.get("axes") is not None:
        parts.append("axes " + ",".join(map(str, r["axes"])))
    if r.get("channel_axis") is not None:
        parts.append(f"channels {r['channel_axis']}")
    if r.get("groups") is not None:
        parts.append(f"G={r['groups']}")
    return "; ".join(parts)


def _affine(r: dict[str, Any]) -> str:
    w, b = r.get("weight"), r.get("bias")
    if w is None and b is None:
        return "?"
    return "+".join(name for name, on in (("w", w), ("b", b)) if on) or "none"


def _mode(r: dict[str, Any]) -> str:
    if not r.get("running_stats"):
        return r.get("mode") or ("" if r.get("running_stats") is None else "no running stats")
    return f"running, {r['mode']}" if r.get("mode") else "running"


def _dtype(r: dict[str, Any]) -> str:
    dtype = r.get("dtype") or ""
    return f"{dtype} → {r['compute_dtype']}" if r.get("compute_dtype") else dtype


def _params(r: dict[str, Any]) -> str:
    lines = []
    for role, letter in ROLE_LETTERS.items():
        shape = r.get(f"{role}_shape")
        if r.get(f"{role}_name") is None:
            continue
        text = f"{letter}({','.join(map(str, shape))})" if shape is not None else f"{letter}(?)"
        lo, hi, mean = r.get(f"{role}_min"), r.get(f"{role}_max"), r.get(f"{role}_mean")
        if lo is not None and hi is not None and mean is not None:
            text += f" {lo:.3g}…{hi:.3g} μ{mean:.3g}"
        lines.append(text)
    return "\n".join(lines)


def _status(r: dict[str, Any]) -> str:
    return "confirmed" if r.get("confirmed") else "candidate"


def display_row(r: dict[str, Any]) -> dict[str, str]:
    """One record as the table and Markdown show it."""
    return {
        "path": r["path"],
        "kind": r["kind"],
        "op": (r.get("op") or "?") + ("" if r.get("confirmed") else "?"),  # a candidate's op is a guess
        "eps": _number(r.get("eps")) or "?",
        "momentum": _momentum(r),
        "axes": _axes(r),
        "affine": _affine(r),
        "mode": _mode(r),
        "dtype": _dtype(r),
        "params": _params(r),
        "status": _status(r),
        "notes": "\n".join(r.get("notes") or []),
    }


def _title(summary: dict[str, Any]) -> str:
    head = f"{summary['model']} ({summary['loader']}, {summary['framework']})"
    if summary.get("opsets"):
        head += ", opsets " + ", ".join(f"{d} {v}" for d, v in summary["opsets"].items())
    return head


def counts_text(summary: dict[str, Any]) -> str:
    """'2 normalization layers (1 batch norm, 1 group norm), 1 candidate user layer (unconfirmed)'"""
    if not summary.get("layers"):
        return "no normalization layers found"
    counts = summary.get("counts") or {}
    parts = [f"{n} {OP_TITLES.get(op, op)}" for op, n in counts.items() if op != "candidate"]
    n = summary["confirmed"]
    text = f"{n} normalization layer{'s' if n != 1 else ''}" + (f" ({', '.join(parts)})" if parts else "")
    if summary.get("candidates"):
        c = summary["candidates"]
        text += f", {c} candidate user layer{'s' if c != 1 else ''} (unconfirmed)"
    return text


# ---- formats --------------------------------------------------------------------------------


def _table(records: list[dict[str, Any]], summary: dict[str, Any]) -> Group:
    parts: list[RenderableType] = []
    table = Table(title=f"{_title(summary)}: {counts_text(summary)}", title_justify="left", show_lines=True)
    rows = [display_row(r) for r in records]
    shown = [(key, header) for key, header in COLUMNS if any(row[key] for row in rows)]  # no empty column
    for key, header in shown:
        table.add_column(header, overflow="fold", no_wrap=key in ("path", "op", "eps", "status", "params"))
    for r, row in zip(records, rows, strict=True):
        style = {"status": "green" if r.get("confirmed") else "yellow"}
        table.add_row(*(Text(row[key], style=style.get(key, "")) for key, _ in shown))
    parts.append(table if records else Text(f"{_title(summary)}: no normalization layers found"))
    parts.extend(Text(f"note: {note}", style="cyan") for note in summary.get("notes") or [])
    return Group(*parts)


def _markdown(records: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    from normcheck.report.markdown import markdown_table

    head = f"### {_title(summary)}\n\n{counts_text(summary)}.\n"
    notes = "".join(f"\n- {note}" for note in summary.get("notes") or [])
    if not records:
        return head + notes + ("\n" if notes else "")
    rows = [{header: display_row(r)[key].replace("\n", "; ") for key, header in COLUMNS} for r in records]
    table = markdown_table(rows, [header for _, header in COLUMNS])
    return f"{head}\n{table}" + (f"{notes}\n" if notes else "")
