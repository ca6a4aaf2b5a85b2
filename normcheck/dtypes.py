"""The floating dtypes normcheck checks, by name, and exact rounding into them with NumPy."""

from __future__ import annotations

import numpy as np

from normcheck.names import DTYPE_NAMES

DTYPES = DTYPE_NAMES
HALF = ("float16", "bfloat16")

# Machine epsilon and largest finite value of each dtype.
EPS = {"float64": 2.0**-52, "float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}
MAX = {
    "float64": float(np.finfo(np.float64).max),
    "float32": float(np.finfo(np.float32).max),
    "float16": 65504.0,
    "bfloat16": float(np.float32(3.3895314e38)),
}


def quantize(a: np.ndarray, dtype: str) -> np.ndarray:
    """Round ``a`` to the nearest value of ``dtype``, returned as float64 (exactly representable)."""
    a = np.asarray(a, dtype=np.float64)
    if dtype == "float64":
        return a.copy()
    with np.errstate(over="ignore"):  # beyond the dtype's range is inf, as in the dtype itself
        if dtype == "bfloat16":
            return _round_bfloat16(a.astype(np.float32)).astype(np.float64)
        return a.astype({"float32": np.float32, "float16": np.float16}[dtype]).astype(np.float64)


def _round_bfloat16(a: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 (nearest, ties to even), keeping float32 storage."""
    bits = np.ascontiguousarray(a).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    out = rounded.astype(np.uint32).view(np.float32)
    return np.where(np.isnan(a), a, out)


def compute_dtype(dtype: str) -> type:
    """Precision a correct implementation computes in: float32 for half types."""
    return np.float64 if dtype == "float64" else np.float32
