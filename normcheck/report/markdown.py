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
    # GitHub renders HTML in comments: "returned <class 'torch.Tensor'>" would lose its tag-like
    # part. Escaping "<" (and "&", for entities) is enough; "->" stays as it reads.
    text = str(v).replace("&", "&amp;").replace("<", "&lt;")
    return text.replace("|", "\\|").replace("\n", " ")
