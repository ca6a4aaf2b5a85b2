"""JSON: the summary and one object per check."""

from __future__ import annotations

import json
from typing import Any

from normcheck.report.json_document import header


def render_json(records: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    doc = {**header("verify"), "summary": summary, "results": records}
    return json.dumps(doc, indent=1, allow_nan=False) + "\n"
