"""The expected outputs of a whole case: the reference formulas of normcheck.ops applied to a
Problem (its training steps, then the checked batch forward and backward), in float64 by default."""

from __future__ import annotations

import numpy as np

from normcheck.dtypes import quantize
from normcheck.ops import FUSED_BASE, OPS, broadcast_channels
from normcheck.ops.adaptive_layer_norm import ADALN, PREMODULATED
from normcheck.ops.batch_norm import CUMULATIVE, cumulative_momentum
from normcheck.ops.rms_norm import GEMMA, offset_weight
from normcheck.problem import Problem
from normcheck.reference_ws import is_ws, ws_reference


def reference(
    problem: Problem,
    dtype: type = np.float64,
    mean_ulps: int = 0,
    expanded: bool = False,
    store_dtype: str | None = None,
    round_sum: bool = True,
) -> dict[str, np.ndarray]:
    """Every expected output of ``problem``, computed in ``dtype``.

    ``mean_ulps`` nudges every computed mean by that many ulps of ``dtype`` (see
    ``Normalization.moments``) and ``expanded`` picks the fused-kernel form of the backward
    (see ``Normalization.backward``); ``store_dtype`` rounds the running statistics to that
    dtype after every step, as an implementation that keeps them in it must. The reference
    itself uses none of these, nor ``round_sum=False`` (a fused add + norm normalizing x +
    residual before it is rounded to the input dtype, a mistake the diagnosis models).

    Variants: batch norm's "cumulative" (momentum=None) weighs the k-th training batch 1/k, so
    the running statistics are the mean of the batches' statistics. Gemma's RMS norm scales by
    1 + weight (``scale``), and its weight gradient is that of the scale. A fused add + norm
    (``FUSED_BASE``) normalizes h = x + residual rounded to the input dtype
    (``normalized_input``) and also outputs h (``residual_out``); the gradients of x and of the
    residual (``grad_residual``) are equal, the norm's input gradient plus the residual output's
    upstream gradient.
    """
    if is_ws(problem):  # Weight Standardization: a convolution, its own formulas (normcheck.reference_ws)
        return ws_reference(problem, dtype, mean_ulps=mean_ulps)
    op = OPS[problem.op]
    params = problem.params
    norm = op.normalization(problem.shape, params)
    out: dict[str, np.ndarray] = {}
    stats = None
    if params.running_stats:
        rm, rv = problem.initial_running()
        batches = problem.steps + ((problem.x,) if params.mode == "train" else ())
        for step, batch in enumerate(batches):
            momentum = cumulative_momentum(step) if params.variant == CUMULATIVE else problem.momentum
            rm, rv = op.update_running(batch, params, rm, rv, momentum, dtype, mean_ulps, problem.unbiased_running_var)
            if store_dtype is not None:
                rm, rv = quantize(rm, store_dtype).astype(dtype), quantize(rv, store_dtype).astype(dtype)
        out["running_mean"], out["running_var"] = rm, rv
        if params.mode == "eval":
            b = broadcast_channels(len(problem.shape), problem.shape[1])
            stats = (rm.reshape(b), rv.reshape(b))
    x = normalized_input(problem, round_sum)
    y, cache = norm.forward(x, problem.eps, scale(problem), problem.bias, stats=stats, dtype=dtype, mean_ulps=mean_ulps)
    grads = norm.backward(problem.dy, cache, dtype=dtype, expanded=expanded)
    out["forward"] = y
    if problem.op in FUSED_BASE:
        out["residual_out"] = normalized_input(problem)  # the rounded h, whatever was normalized
        dx = grads.dx + np.asarray(problem.fused_inputs()[1], dtype=dtype)
        out["grad_input"], out["grad_residual"] = dx, dx.copy()
    else:
        out["grad_input"] = grads.dx
    if grads.dweight is not None:
        out["grad_weight"] = grads.dweight
    if grads.dbias is not None:
        out["grad_bias"] = grads.dbias
    return out


def normalized_input(problem: Problem, rounded: bool = True) -> np.ndarray:
    """What the case's norm is applied to: x, or for a fused add + norm h = x + residual, added
    in float64 (exact for every dtype's values) and rounded to the input dtype once (unless
    ``rounded`` is False), as the kernels store h before normalizing it."""
    if problem.op not in FUSED_BASE:
        return problem.x
    h = np.asarray(problem.x, dtype=np.float64) + problem.fused_inputs()[0]
    return quantize(h, problem.dtype) if rounded else h


def scale(problem: Problem) -> np.ndarray | None:
    """The weight the normalized value is multiplied by: Gemma's 1 + weight and adaLN's 1 + scale
    (in float64), else the weight."""
    if problem.weight is None:
        return None
    if problem.params.variant == GEMMA or (problem.op == ADALN and problem.params.variant != PREMODULATED):
        return offset_weight(problem.weight)
    return problem.weight
