"""Parameter summaries: shape, dtype and min/max/mean, from an array any framework can give.

Each inspector turns its tensors into NumPy (float64 where NumPy lacks the dtype, as bfloat16)
and calls ``summarize``; nothing here imports a framework.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from normcheck.model.records import ParamSummary


def _number(value: Any) -> float | None:
    x = float(value)
    return x if math.isfinite(x) else None


def summarize(role: str, name: str, values: Any, dtype: str | None = None, note: str = "") -> ParamSummary:
    """A summary of ``values`` (anything np.asarray takes); ``dtype`` names the original dtype
    where the array had to be converted (bfloat16 → float64)."""
    array = np.asarray(values)
    shape = tuple(int(n) for n in array.shape)
    dtype = dtype or str(array.dtype)
    if array.size == 0:
        return ParamSummary(role, name, shape, dtype, note=note or "empty")
    try:
        data = array.astype(np.float64, copy=False)
    except (TypeError, ValueError):
        return ParamSummary(role, name, shape, dtype, note=note or "not numeric")
    with np.errstate(all="ignore"):
        finite = np.isfinite(data)
        if not finite.all():
            bad = int(data.size - finite.sum())
            note = (note + "; " if note else "") + f"{bad} non-finite value(s) left out of min/max/mean"
            data = data[finite]
        if data.size == 0:
            return ParamSummary(role, name, shape, dtype, note=note)
        return ParamSummary(
            role, name, shape, dtype, _number(data.min()), _number(data.max()), _number(data.mean()), note
        )


def unread(role: str, name: str, shape: tuple[int, ...] | None, dtype: str | None, note: str) -> ParamSummary:
    """A parameter whose values cannot be read (uninitialized, external data, a meta tensor)."""
    return ParamSummary(role, name, shape, dtype, note=note)
