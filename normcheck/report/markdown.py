"""Markdown (GitHub-flavoured) tables, for pull-request comments and READMEs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def markdown_table(records: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in records:
        lines.append("| " + " | ".join(_cell(r.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else ""
    return str(v).replace("|", "\\|").replace("\n", " ")
