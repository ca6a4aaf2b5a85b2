"""CSV: one row per check."""

from __future__ import annotations

from typing import Any


def render_csv(records: list[dict[str, Any]]) -> str:
    import pandas as pd

    rows = [{k: (" ".join(map(str, v)) if isinstance(v, list) else v) for k, v in r.items()} for r in records]
    return pd.DataFrame(rows).to_csv(index=False)
