"""Markdown for pull-request comments: the verdict, a summary per op and implementation, and
the failures with their diagnosis."""

from __future__ import annotations

from typing import Any

from normcheck.report.frames import status_counts
from normcheck.report.markdown import markdown_table

MAX_ROWS = 50  # failures listed in full; a comment has a size limit
STATUSES = ("pass", "fail", "known", "error", "skip")


def render_verify_markdown(records: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    strict = bool(summary.get("strict"))
    bad = [r for r in records if r["status"] in ("fail", "error") or (strict and r["status"] == "known")]
    verdict = "FAILED" if bad else "passed"
    counts = ", ".join(f"{summary.get(s, 0)} {s}" for s in STATUSES)
    parts = [
        f"### normcheck verify: {verdict}\n",
        f"{counts} ({summary.get('cases', 0)} cases, {summary.get('seconds', 0):.1f} s)\n",
    ]
    for note in summary.get("translations", ()):
        parts.append(f"- translated: {note}\n")
    rows = status_counts(records, ("op", "framework", "impl")).to_dict("records")
    parts.append("\n" + markdown_table(rows, ("op", "framework", "impl", *STATUSES)))
    if bad:
        parts.append(f"\n#### Failures ({len(bad)})\n\n")
        shown = [{**r, "diagnosis": _diagnosis(r)} for r in bad[:MAX_ROWS]]
        columns = (
            "op",
            "impl",
            "shape",
            "params",
            "dtype",
            "layout",
            "input",
            "check",
            "status",
            "max_abs_err",
            "tolerance",
            "message",
            "diagnosis",
        )
        parts.append(markdown_table(shown, columns))
        if len(bad) > MAX_ROWS:
            parts.append(f"\n... and {len(bad) - MAX_ROWS} more; the JSON report has them all.\n")
    return "".join(parts)


def _diagnosis(r: dict[str, Any]) -> str:
    d = r.get("diagnosis")
    if not d:
        return ""
    return f"**{d['cause']}**: {d['evidence']}" if d["hypothesis"] else f"cause unknown ({d['evidence']})"
