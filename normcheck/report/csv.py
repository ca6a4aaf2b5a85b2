"""CSV: one row per check."""

from __future__ import annotations

from typing import Any


def render_csv(records: list[dict[str, Any]]) -> str:
    import pandas as pd

    rows = [{k: _cell(v) for k, v in r.items()} for r in records]
    return pd.DataFrame(rows).to_csv(index=False)


def _cell(v: Any) -> Any:
    if isinstance(v, list):
        return " ".join(map(str, v))
    if isinstance(v, dict):  # the diagnosis
        return v.get("summary", "")
    return v
