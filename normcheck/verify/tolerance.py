"""Tolerances and comparison: actual vs expected, to records. Never prints, never exits."""

from __future__ import annotations

import numpy as np

from normcheck.dtypes import MAX, compute_dtype, quantize
from normcheck.ops import OPS, broadcast_channels
from normcheck.problem import Problem
from normcheck.reference import normalized_input, reference, scale
from normcheck.reference_ws import is_ws, ws_witness_errors
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

# A correct kernel's error is relative to the terms it adds and cancels, not to its result, so
# the witness's error is never taken below TERM_ROUNDING * eps(compute dtype) * T per check, T
# the largest term (term_sizes). Where the terms cancel the result is small (a group of one
# value: its gradient is exactly 0) while each term keeps its roundings, and the witness may
# cancel exactly where a kernel summing in another order or in the fused form does not:
# PyTorch's float32 group norm with G = C returns grad_input = +-1.2e-4 where 0 is due (0.86
# eps * T, T = rstd*|dy*w| = 1.2e3), and fused evaluation-mode batch norm, x*a + (b - mean*a)
# with a = rstd*w, errs by 0.26 eps * T on mean-1e4 data that the witness centres exactly.
# Times CONDITIONING_FACTOR, as any witness error, the allowance is 8 eps * T: 16 roundings
# (u = eps/2) of the largest term, above what a fused kernel makes at worst (each term carries
# four or five: rstd, its product with w, the product with the data, the mean's own; two or
# three terms and the additions joining them make 12-15). A formula mistake errs by a fraction
# of T itself (cutting the gradient from the statistics of a group of two values leaves all of
# rstd*dy*w where about 0 is due): 1e5 times the allowance in float32.
TERM_ROUNDING = 1.0

# The weight and bias gradients are sums over every value of a channel (N*H*W of them, or every
# row of a layer norm), and a correct kernel adds them in its own order: recursive summation of
# n values errs by about sqrt(n) roundings of the sum of their magnitudes (the probabilistic bound,
# Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., §4.2), where the witness's
# pairwise sums err far less. PyTorch's float32 channels-last group norm sums 8190 values a
# channel with 1.3 u * sum|dy*xhat|. Their allowance is sqrt(n) * u * sum|terms| (this factor
# times CONDITIONING_FACTOR is 1): sqrt(8190) = 90 times that. Summing in the half input dtype
# instead errs by about n * u(half) * |sum|, 2^16 times u(float32) per value, so it still fails;
# a formula mistake errs by a fraction of the sum itself.
SUM_ROUNDING = 1.0 / CONDITIONING_FACTOR


def witness_errors(problem: Problem, expected: dict[str, np.ndarray]) -> dict[str, float]:
    """Per check, the largest error of a correct two-pass implementation in the case's dtype.

    The witness computes in float32 for half types (as frameworks do) and in the dtype itself
    otherwise, keeps running statistics in the dtype between steps, and rounds its results to
    the dtype. It is run in each of its variants (witness_variants), since correct
    implementations differ in how they round the mean and sum the gradients.
    Where its terms happen to cancel exactly, its error is taken as the rounding a correct
    kernel makes on them instead (TERM_ROUNDING).
    """
    if is_ws(problem):  # a convolution: its own witness (normcheck.reference_ws)
        return ws_witness_errors(problem, expected, CONDITIONING_FACTOR)
    worst = dict.fromkeys(expected, 0.0)
    unit = float(np.finfo(compute_dtype(problem.dtype)).eps)
    for check, size in term_sizes(problem, expected).items():
        worst[check] = TERM_ROUNDING * unit * size
    for check, size in summation_sizes(problem, expected).items():
        worst[check] = max(worst[check], SUM_ROUNDING * unit * size)
    for ulps, expanded in witness_variants(problem):
        witness = reference(
            problem, compute_dtype(problem.dtype), mean_ulps=ulps, expanded=expanded, store_dtype=problem.dtype
        )
        for check, want in expected.items():
            with np.errstate(invalid="ignore", over="ignore"):
                err = np.abs(quantize(witness[check], problem.dtype) - want)
            worst[check] = max(worst[check], float(np.nanmax(err, initial=0.0)))
    return worst


def witness_variants(problem: Problem) -> list[tuple[int, bool]]:
    """WITNESS_VARIANTS, less the nudged means where each statistic runs over one value: the mean
    of one value is exact whatever the algorithm (sum / n, sum * (1/n), Welford's update), and a
    nudge there would invent a spread of 1/sqrt(eps) ulps wide enough to pass a gradient cut
    from the statistics."""
    if OPS[problem.op].normalization(problem.shape, problem.params).count > 1:
        return WITNESS_VARIANTS
    return [(ulps, expanded) for ulps, expanded in WITNESS_VARIANTS if ulps == 0]


def term_sizes(problem: Problem, expected: dict[str, np.ndarray]) -> dict[str, float]:
    """The largest term the forward and the gradients of the input and weight add or cancel, in
    float64, from the two-pass form (x - mean)*rstd and the fused one x*rstd - mean*rstd.

    forward: |x|*rstd*|w|, |mean|*rstd*|w| and |b|, the terms of x*a + (b - mean*a), a = rstd*w.
    grad_input: rstd*|dy*w|, rstd*mean|dy*w| (where a mean is subtracted) and
    rstd*|xhat|*mean|dy*w*xhat|, the terms of rstd*(dxhat - mean(dxhat) - xhat*mean(dxhat*xhat));
    only the first where the statistics are fixed (evaluation mode).
    grad_weight: |dy|*|x|*rstd and |dy|*|mean|*rstd, the terms of sum(dy*x*rstd - dy*mean*rstd)
    (the sum's own rounding is the witness's to measure).
    """
    if not problem.x.size:
        return {}
    norm = OPS[problem.op].normalization(problem.shape, problem.params)
    x = normalized_input(problem)
    _, cache = norm.forward(x, problem.eps, scale(problem), problem.bias, stats=_fixed_stats(problem, expected))
    w = np.abs(cache.weight) if cache.weight is not None else np.ones(1)
    scaled = [np.abs(cache.x) * cache.rstd, np.abs(cache.mean) * cache.rstd]  # the fused form's
    dy = np.abs(np.asarray(problem.dy, dtype=np.float64).reshape(norm.view))
    backward = [dy * w]
    if not cache.fixed_stats:
        backward.append(np.abs(cache.xhat) * (dy * w * np.abs(cache.xhat)).mean(axis=norm.axes, keepdims=True))
        if norm.center:
            backward.append((dy * w).mean(axis=norm.axes, keepdims=True))
    bias = 0.0 if problem.bias is None else float(np.max(np.abs(problem.bias), initial=0.0))
    with np.errstate(over="ignore", invalid="ignore"):
        sizes = {
            "forward": max(bias, *(_peak(t * w) for t in scaled)),
            "grad_input": max(_peak(cache.rstd * t) for t in backward),
            "grad_weight": max(_peak(t * dy) for t in scaled),
        }
    if problem.residual is not None and problem.dresidual is not None:  # fused add + norm
        # h = x + residual, one rounding of the larger term; the gradients add dh to J^T dy
        sizes["residual_out"] = max(_peak(problem.x), _peak(problem.residual))
        sizes["grad_input"] = sizes["grad_residual"] = max(sizes["grad_input"], _peak(problem.dresidual))
    return {check: size for check, size in sizes.items() if check in expected}


def summation_sizes(problem: Problem, expected: dict[str, np.ndarray]) -> dict[str, float]:
    """sqrt(n) times the largest sum of magnitudes the weight and bias gradients add, n the
    values a channel sums (see SUM_ROUNDING): sum|dy*xhat| and sum|dy|."""
    if not problem.x.size or not ({"grad_weight", "grad_bias"} & set(expected)):
        return {}
    norm = OPS[problem.op].normalization(problem.shape, problem.params)
    x = normalized_input(problem)
    _, cache = norm.forward(x, problem.eps, scale(problem), problem.bias, stats=_fixed_stats(problem, expected))
    dy = np.abs(np.asarray(problem.dy, dtype=np.float64).reshape(norm.view))
    summed = tuple(i for i, n in enumerate(norm.param_view) if n == 1 and norm.view[i] != 1)
    n = int(np.prod([norm.view[i] for i in summed], dtype=np.int64))
    with np.errstate(over="ignore", invalid="ignore"):
        sizes = {
            "grad_weight": _peak(np.sum(dy * np.abs(cache.xhat), axis=summed)),
            "grad_bias": _peak(np.sum(dy, axis=summed)),
        }
    return {check: float(np.sqrt(n)) * size for check, size in sizes.items() if check in expected}


def _peak(a: np.ndarray) -> float:
    """The largest finite magnitude of ``a`` (0 when none is finite)."""
    finite = a[np.isfinite(a)]
    return float(np.max(np.abs(finite), initial=0.0))


def _fixed_stats(problem: Problem, expected: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """The running statistics an evaluation-mode case normalizes with, shaped to broadcast."""
    if not (problem.params.running_stats and problem.params.mode == "eval"):
        return None
    b = broadcast_channels(len(problem.shape), problem.shape[1])
    return expected["running_mean"].reshape(b), expected["running_var"].reshape(b)


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
    worst = tuple(int(i) for i in np.unravel_index(flat, a.shape))
    return Comparison(
        max_abs_err=float(diff.max()),
        max_rel_err=float(rel.max()),
        mismatched=int(bad.sum()),
        numel=int(a.size),
        worst_index=worst,
        worst_got=float(a[worst]),
        worst_expected=float(e[worst]),
    )
