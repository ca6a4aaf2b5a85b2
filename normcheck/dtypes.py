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


def round_float32(a: np.ndarray, dtype: str) -> np.ndarray:
    """float32 ``a`` rounded to ``dtype`` and kept in float32: ``quantize`` for a float32 array and
    a dtype no wider, bit for bit the same (one rounding of the same exact value), without its
    float64 copies."""
    if dtype == "bfloat16":
        return _round_bfloat16(a)
    if dtype == "float16":
        with np.errstate(over="ignore"):
            return a.astype(np.float16).astype(np.float32)
    if dtype == "float32":
        return a.copy()
    raise ValueError(f"float32 cannot be rounded to the wider {dtype}")


def _round_bfloat16(a: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 (nearest, ties to even), keeping float32 storage."""
    # in uint32, in place, wrapping: the mask keeps bits 16-31 only, so a carry out of bit 31 (NaN
    # bit patterns alone, put back below) is dropped as a wider sum would drop it; twice as fast
    bits = np.ascontiguousarray(a).view(np.uint32)
    rounded = bits >> np.uint32(16)
    rounded &= np.uint32(1)
    rounded += np.uint32(0x7FFF)
    rounded += bits
    rounded &= np.uint32(0xFFFF0000)
    out = rounded.view(np.float32)
    nan = np.isnan(a)
    if nan.any():
        out[nan] = a[nan]
    return out


def compute_dtype(dtype: str) -> type:
    """Precision a correct implementation computes in: float32 for half types."""
    return np.float64 if dtype == "float64" else np.float32
