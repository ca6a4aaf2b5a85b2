"""verify's records as pandas tables: the one place rows are grouped and counted, for the
renderers' summaries and for users who analyse a report (``Report.frame()``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from normcheck.verify.records import STATUSES

if TYPE_CHECKING:
    import pandas as pd


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per check, one column per record field, in report order."""
    import pandas as pd

    return pd.DataFrame.from_records(records)


def status_counts(records: list[dict[str, Any]], by: Sequence[str]) -> pd.DataFrame:
    """How many checks of each status per group of ``by``, groups in order of first appearance:
    the columns are ``by``, then ``checks`` (the total) and one per status."""
    import pandas as pd

    columns = [*by, "checks", *STATUSES]
    if not records:
        return pd.DataFrame(columns=columns)
    frame = records_frame(records)
    counts = (
        frame.assign(n=1)
        .pivot_table(index=list(by), columns="status", values="n", aggfunc="sum", fill_value=0, sort=False)
        .reindex(columns=list(STATUSES), fill_value=0)
    )
    counts.insert(0, "checks", counts.sum(axis=1))
    return counts.reset_index()[columns]
