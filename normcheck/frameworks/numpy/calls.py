"""What the CS231n-style forms share (forms.py, variants.py): the dtypes NumPy has, and the
values a user's function returned, checked against the convention."""

from __future__ import annotations

import numpy as np

from normcheck.frameworks.base import Unsupported

NUMPY_DTYPES = {"float64": np.float64, "float32": np.float32, "float16": np.float16}


def numpy_dtype(dtype: str) -> type:
    if dtype not in NUMPY_DTYPES:
        raise Unsupported(f"NumPy has no {dtype}")
    return NUMPY_DTYPES[dtype]


def function_name(f: object, fallback: str) -> str:
    return getattr(f, "__name__", None) or fallback


def unpack(result: object, count: int, who: str, what: str) -> tuple:
    """The ``count`` values a function returned, or a ValueError that says what came back instead."""
    if not isinstance(result, tuple | list) or len(result) != count:
        got = f"{len(result)} values" if isinstance(result, tuple | list) else f"a {type(result).__name__}"
        raise ValueError(f"{who} returned {got}; the CS231n convention returns {what}")
    return tuple(result)


def array(value: object, who: str, label: str) -> np.ndarray:
    if value is None:
        raise ValueError(f"{who} returned {label}=None")
    return np.asarray(value)
