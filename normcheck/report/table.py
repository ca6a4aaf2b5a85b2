"""Rich tables: per op, a summary by implementation and dtype, then every row that needs a look."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from normcheck.report.frames import status_counts

STYLE = {"pass": "green", "fail": "bold red", "error": "bold magenta", "known": "yellow", "skip": "dim"}
DETAIL_COLUMNS = (
    ("framework", "framework"),
    ("impl", "impl"),
    ("shape", "shape"),
    ("params", "params"),
    ("dtype", "dtype"),
    ("layout", "layout"),
    ("input", "input"),
    ("check", "check"),
    ("against", "against"),
    ("status", "status"),
    ("max_abs_err", "max abs err"),
    ("max_rel_err", "max rel err"),
    ("mismatched_pct", "mismatch %"),
    ("tolerance", "tolerance"),
    ("worst_index", "worst index"),
    ("message", "message"),
    ("diagnosis", "diagnosis"),
)
OP_TITLES = {
    "bn": "batch norm",
    "ln": "layer norm",
    "in": "instance norm",
    "gn": "group norm",
    "rms": "RMS norm",
    "add_rms": "fused add + RMS norm",
    "add_ln": "fused add + layer norm",
    "ws": "weight-standardized conv",
    "ws_gn": "weight-standardized conv + group norm",
}


def render_table(records: list[dict[str, Any]], show_all: bool = False, notes: Iterable[str] = ()) -> Group:
    by_op: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_op[r["op"]].append(r)
    parts: list[RenderableType] = [Text(f"translated: {note}", style="cyan") for note in notes]
    for op, rows in by_op.items():
        title = f"{OP_TITLES.get(op, op)} ({op})"
        parts.append(_summary(title, rows))
        shown = rows if show_all else [r for r in rows if r["status"] in ("fail", "error")]
        if shown:
            parts.append(_detail(f"{title}: {'all checks' if show_all else 'failures and errors'}", shown))
        known = Counter(r["message"].split(". ")[0] for r in rows if r["status"] == "known")
        for cause, n in known.items():
            parts.append(Text(f"  {n} checks match a {cause}", style=STYLE["known"]))
    return Group(*parts)


def _summary(title: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("framework", "impl", "dtype", "checks", "pass", "known", "fail", "error", "skip"):
        table.add_column(col, justify="left" if col in ("framework", "impl", "dtype") else "right", no_wrap=True)
    shown = [{**r, "impl": f"{r['impl']} vs {r['against']}" if r.get("against") else r["impl"]} for r in rows]
    statuses = ("pass", "known", "fail", "error", "skip")
    for row in status_counts(shown, ("framework", "impl", "dtype")).to_dict("records"):
        cells = [Text(str(row[s]) if row[s] else "", style=STYLE[s]) for s in statuses]
        table.add_row(row["framework"], row["impl"], row["dtype"], str(row["checks"]), *cells)
    return table


def _detail(title: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    for _, header in DETAIL_COLUMNS:
        table.add_column(header, overflow="fold")
    for r in rows:
        cells: list[str | Text] = [_cell(r[key]) for key, _ in DETAIL_COLUMNS]
        cells[9] = Text(r["status"], style=STYLE.get(r["status"], ""))
        table.add_row(*cells)
    return table


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list):
        return ",".join(map(str, v))
    if isinstance(v, dict):  # the diagnosis
        return v.get("summary", "")
    return str(v)
