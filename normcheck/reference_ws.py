"""The expected outputs of a Weight Standardization case (``ws``, ``ws_gn``) and what a correct
implementation in the case's dtype errs by on it (the witness the tolerance is tied to).

A case's Problem holds the input ``x`` (N, C, H, W), the convolution's ``weight`` (O, C, k, k) and
``bias`` (O,) (``ws``), the group norm's ``gn_weight`` and ``gn_bias`` (``ws_gn``), and ``dy``, the
upstream gradient of the output (N, O, H', W'). Checks: ``forward``, ``grad_input``,
``grad_weight`` (the raw weight's: through the standardization), ``grad_bias`` (``ws`` with a
bias), ``grad_gn_weight`` and ``grad_gn_bias`` (``ws_gn`` with its affine).
"""

from __future__ import annotations

import numpy as np

from normcheck.dtypes import compute_dtype, quantize
from normcheck.ops import OpParams
from normcheck.ops.group_norm import OP as GROUP_NORM
from normcheck.ops.weight_standardization import (
    GN_EPS,
    WS_GN,
    WS_OPS,
    Standardization,
    conv2d,
    conv2d_backward,
    conv_of,
    convention,
    standardize,
    standardize_backward,
)
from normcheck.problem import Problem

# what a correct kernel's sums may err by beyond the witness's (the witness sums in two orders,
# BLAS's blocked one and one kernel position at a time): sqrt(n) + SUM_TERMS roundings of the
# sum of the n terms' magnitudes (the probabilistic bound of recursive summation, Higham,
# Accuracy and Stability of Numerical Algorithms, 2nd ed., section 4.2), the SUM_TERMS for the
# roundings of each term itself (the standardized weight's three, the product's one).
SUM_TERMS = 4.0


def is_ws(problem: Problem) -> bool:
    return problem.op in WS_OPS


def conv_weight(problem: Problem) -> np.ndarray:
    """The case's convolution weight (O, C, k, k): every ws case has one."""
    if problem.weight is None:
        raise ValueError(f"{problem.op}: a case needs the convolution's weight")
    return problem.weight


def ws_reference(
    problem: Problem,
    dtype: type = np.float64,
    how: Standardization | None = None,
    mean_ulps: int = 0,
    store: str | None = None,
    by_tap: bool = False,
) -> dict[str, np.ndarray]:
    """Every expected output of a ws or ws_gn case, computed in ``dtype``.

    ``how``: the standardization (default: the case's convention, the reference's or the paper's
    variant); the diagnosis passes a mistaken one. ``mean_ulps`` nudges the weight's mean,
    ``store`` rounds every intermediate tensor to that dtype as an implementation storing them
    in the input dtype does (the standardized weight, the convolution's output before group norm,
    the gradients between the stages), and ``by_tap`` sums the convolutions in another order: the
    witness's knobs, which the reference itself leaves off.
    """
    how = how if how is not None else convention(problem.params.variant)
    weight = conv_weight(problem)
    _, _, padding = conv_of(problem.params)

    def stored(a: np.ndarray) -> np.ndarray:
        return a if store is None else quantize(a, store).astype(dtype)

    what, cache = standardize(weight, problem.eps, how, dtype, mean_ulps)
    what = stored(what)
    gn = problem.op == WS_GN
    y = stored(conv2d(problem.x, what, None if gn else problem.bias, padding, dtype, by_tap))
    out: dict[str, np.ndarray] = {}
    upstream: np.ndarray = np.asarray(problem.dy, dtype=dtype)
    if gn:
        norm = GROUP_NORM.normalization(y.shape, OpParams(groups=problem.params.groups))
        y2, gn_cache = norm.forward(y, GN_EPS, problem.gn_weight, problem.gn_bias, dtype=dtype)
        grads = norm.backward(problem.dy, gn_cache, dtype=dtype)
        out["forward"], upstream = y2, stored(grads.dx)
    else:
        out["forward"] = y
    dx, dwhat, dbias = conv2d_backward(upstream, problem.x, what, padding, dtype, by_tap)
    out["grad_input"] = dx
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        out["grad_weight"] = standardize_backward(stored(dwhat), cache, dtype)
    if not gn and problem.bias is not None:
        out["grad_bias"] = dbias
    if gn and grads.dweight is not None:
        out["grad_gn_weight"] = grads.dweight
    if gn and grads.dbias is not None:
        out["grad_gn_bias"] = grads.dbias
    return out


def ws_witness_errors(problem: Problem, expected: dict[str, np.ndarray], conditioning: float) -> dict[str, float]:
    """Per check, the largest error of a correct implementation in the case's dtype: the
    reference computed in the compute dtype (float32 for half types), its intermediates stored in
    the input dtype, the weight's mean as computed or one ulp off, the convolutions summed in
    two orders; never below ``summation_floors`` (divided by ``conditioning``, the factor the
    tolerance multiplies this error by, so the floor is the allowance itself)."""
    worst = {c: size / conditioning for c, size in summation_floors(problem, expected).items()}
    compute = compute_dtype(problem.dtype)
    for ulps in (0, 1, -1):
        for by_tap in (False, True):
            with np.errstate(all="ignore"):
                witness = ws_reference(problem, compute, mean_ulps=ulps, store=problem.dtype, by_tap=by_tap)
                for check, want in expected.items():
                    err = np.abs(quantize(witness[check], problem.dtype) - want)
                    worst[check] = max(worst.get(check, 0.0), float(np.nanmax(err, initial=0.0)))
    return worst


def summation_floors(problem: Problem, expected: dict[str, np.ndarray]) -> dict[str, float]:
    """(sqrt(n) + SUM_TERMS) units of the compute dtype times the largest sum of magnitudes each
    check adds up, n the terms of that sum: the conv's n = C*k*k (forward), O*k*k (input
    gradient), N*H'*W' (the weight's and bias's gradients), the standardization's backward and the
    group norm's terms carried through at their magnitudes. Where the witness's sums happen to
    cancel exactly, this is what a kernel adding in another order still errs by."""
    unit = float(np.finfo(compute_dtype(problem.dtype)).eps)
    how = convention(problem.params.variant)
    _, k, padding = conv_of(problem.params)
    with np.errstate(all="ignore"):
        what, cache = standardize(conv_weight(problem), problem.eps, how)
        x, w_abs = np.abs(problem.x), np.abs(what)
        n_out, c_in = problem.dy.shape[1], problem.x.shape[1]
        pixels = problem.dy.shape[0] * problem.dy.shape[2] * problem.dy.shape[3]
        dy = np.abs(np.asarray(problem.dy, dtype=np.float64))
        conv_terms = conv2d(x, w_abs, None, padding)
        sizes: dict[str, float] = {}
        if problem.op == WS_GN:
            y = conv2d(problem.x, what, None, padding)
            norm = GROUP_NORM.normalization(y.shape, OpParams(groups=problem.params.groups))
            _, gn_cache = norm.forward(y, GN_EPS, problem.gn_weight, problem.gn_bias)
            gamma = np.abs(gn_cache.weight) if gn_cache.weight is not None else np.ones(1)
            scaled = gn_cache.rstd * gamma  # in the group norm's view
            view = norm.view
            sizes["forward"] = (np.sqrt(c_in * k * k) + SUM_TERMS) * _peak(conv_terms.reshape(view) * scaled)
            g = dy.reshape(view) * gamma
            upstream = gn_cache.rstd * (
                g
                + g.mean(axis=norm.axes, keepdims=True)
                + np.abs(gn_cache.xhat) * (g * np.abs(gn_cache.xhat)).mean(axis=norm.axes, keepdims=True)
            )
            upstream = upstream.reshape(dy.shape)
            sizes["grad_gn_weight"] = _sum_size(dy * np.abs(gn_cache.xhat.reshape(dy.shape)), pixels)
            sizes["grad_gn_bias"] = _sum_size(dy, pixels)
        else:
            bias = 0.0 if problem.bias is None else float(np.max(np.abs(problem.bias)))
            sizes["forward"] = (np.sqrt(c_in * k * k) + SUM_TERMS) * (_peak(conv_terms) + bias)
            sizes["grad_bias"] = _sum_size(dy, pixels)
            upstream = dy
        dx_terms, dwhat_terms, _ = conv2d_backward(upstream, x, w_abs, padding)
        sizes["grad_input"] = (np.sqrt(n_out * k * k) + SUM_TERMS) * _peak(dx_terms)
        axes = how.axes
        through = np.abs(cache.scale) * (
            dwhat_terms
            + dwhat_terms.mean(axis=axes, keepdims=True)
            + w_abs * (dwhat_terms * w_abs).mean(axis=axes, keepdims=True)
        )
        sizes["grad_weight"] = (np.sqrt(pixels) + SUM_TERMS) * _peak(through)
    return {check: unit * size for check, size in sizes.items() if check in expected}


def _sum_size(terms: np.ndarray, count: int) -> float:
    """The largest per-channel sum of ``terms`` (N, C, H, W) times sqrt(count) + SUM_TERMS."""
    return (np.sqrt(count) + SUM_TERMS) * _peak(terms.sum(axis=(0, 2, 3)))


def _peak(a: np.ndarray) -> float:
    """The largest finite magnitude of ``a`` (0 when none is finite)."""
    finite = a[np.isfinite(a)]
    return float(np.max(np.abs(finite), initial=0.0))
