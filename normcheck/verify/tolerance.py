"""Tolerances and comparison: actual vs expected, to records. Never prints, never exits."""

from __future__ import annotations

import numpy as np

from normcheck.dtypes import MAX, compute_dtype, quantize
from normcheck.problem import Problem
from normcheck.reference import reference
from normcheck.verify.records import Comparison, Tolerance

# torch.testing's defaults: (rtol, atol) per dtype.
DTYPE_TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-7, 1e-7),
    "float32": (1.3e-6, 1e-5),
    "float16": (1e-3, 1e-5),
    "bfloat16": (1.6e-2, 1e-5),
}
# How many times the error of a correct two-pass implementation in the same dtype is allowed.
# The witness sums in one order; correct kernels sum in others, and on ill-conditioned data the
# order alone moves the error severalfold (float32 batch-norm dgamma, mean 1e4: NumPy's pairwise
# sums err by 1.5, TensorFlow's reductions by 6.0). A one-pass variance errs by a factor of
# mean/std more, so it still fails by orders of magnitude.
CONDITIONING_FACTOR = 8.0


# Correct implementations the witness stands for: the mean as computed or nudged by one ulp,
# gradients from xhat or in the expanded form fused kernels use.
WITNESS_VARIANTS = [(ulps, expanded) for ulps in (0, 1, -1) for expanded in (False, True)]


def witness_errors(problem: Problem, expected: dict[str, np.ndarray]) -> dict[str, float]:
    """Per check, the largest error of a correct two-pass implementation in the case's dtype.

    The witness computes in float32 for half types (as frameworks do) and in the dtype itself
    otherwise, keeps running statistics in the dtype between steps, and rounds its results to
    the dtype. It is run in each of WITNESS_VARIANTS,
    since correct implementations differ in how they round the mean and sum the gradients.
    """
    worst = dict.fromkeys(expected, 0.0)
    for ulps, expanded in WITNESS_VARIANTS:
        witness = reference(
            problem, compute_dtype(problem.dtype), mean_ulps=ulps, expanded=expanded, store_dtype=problem.dtype
        )
        for check, want in expected.items():
            with np.errstate(invalid="ignore", over="ignore"):
                err = np.abs(quantize(witness[check], problem.dtype) - want)
            if err.size:
                worst[check] = max(worst[check], float(np.nanmax(err)))
    return worst


def tolerance_for(dtype: str, witness_err: float, user: tuple[float, float] | None = None) -> Tolerance:
    rtol, atol = user if user is not None else DTYPE_TOLERANCES[dtype]
    return Tolerance(
        rtol=rtol,
        atol=atol + CONDITIONING_FACTOR * witness_err,
        floor_atol=atol,
        witness_err=witness_err,
        source="user" if user is not None else "dtype",
    )


def out_of_range(expected: np.ndarray, dtype: str) -> str | None:
    """Why ``expected`` cannot be held in ``dtype``, or None."""
    peak = float(np.max(np.abs(expected))) if expected.size else 0.0
    if peak > MAX[dtype]:
        return f"expected values reach {peak:.3g}, beyond {dtype}'s largest {MAX[dtype]:.3g}"
    return None


def compare(actual: np.ndarray, expected: np.ndarray, tol: Tolerance) -> Comparison:
    """Elementwise |actual - expected| <= atol + rtol * |expected|; non-finite actuals mismatch."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        diff = np.abs(a - e)
        diff = np.where(np.isnan(diff), np.inf, diff)  # NaN where a finite value was due
        rel = np.where(e != 0, diff / np.abs(e), np.where(diff == 0, 0.0, np.inf))
        bad = diff > tol.atol + tol.rtol * np.abs(e)
    if not a.size:
        return Comparison(0.0, 0.0, 0, 0, None)
    # worst = the element furthest past its allowance, else the largest absolute error
    excess = diff - (tol.atol + tol.rtol * np.abs(e))
    flat = int(np.argmax(excess))
    return Comparison(
        max_abs_err=float(diff.max()),
        max_rel_err=float(rel.max()),
        mismatched=int(bad.sum()),
        numel=int(a.size),
        worst_index=tuple(int(i) for i in np.unravel_index(flat, a.shape)),
    )
