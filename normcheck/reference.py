"""The expected outputs of a whole case: the reference formulas of normcheck.ops applied to a
Problem (its training steps, then the checked batch forward and backward), in float64 by default."""

from __future__ import annotations

import numpy as np

from normcheck.dtypes import quantize
from normcheck.ops import OPS, broadcast_channels
from normcheck.problem import Problem


def reference(
    problem: Problem,
    dtype: type = np.float64,
    mean_ulps: int = 0,
    expanded: bool = False,
    store_dtype: str | None = None,
) -> dict[str, np.ndarray]:
    """Every expected output of ``problem``, computed in ``dtype``.

    ``mean_ulps`` nudges every computed mean by that many ulps of ``dtype`` (see
    ``Normalization.moments``) and ``expanded`` picks the fused-kernel form of the backward
    (see ``Normalization.backward``); ``store_dtype`` rounds the running statistics to that
    dtype after every step, as an implementation that keeps them in it must. The reference
    itself uses none of these.

    Ops with running statistics first take ``problem.steps`` as training batches; in "train"
    mode ``problem.x`` is one more training batch, in "eval" mode it is normalized with the
    running statistics.
    """
    op = OPS[problem.op]
    params = problem.params
    norm = op.normalization(problem.shape, params)
    out: dict[str, np.ndarray] = {}
    stats = None
    if params.running_stats:
        rm, rv = problem.initial_running()
        batches = problem.steps + ((problem.x,) if params.mode == "train" else ())
        for batch in batches:
            rm, rv = op.update_running(
                batch, params, rm, rv, problem.momentum, dtype, mean_ulps, problem.unbiased_running_var
            )
            if store_dtype is not None:
                rm, rv = quantize(rm, store_dtype).astype(dtype), quantize(rv, store_dtype).astype(dtype)
        out["running_mean"], out["running_var"] = rm, rv
        if params.mode == "eval":
            b = broadcast_channels(len(problem.shape), problem.shape[1])
            stats = (rm.reshape(b), rv.reshape(b))
    y, cache = norm.forward(
        problem.x, problem.eps, problem.weight, problem.bias, stats=stats, dtype=dtype, mean_ulps=mean_ulps
    )
    grads = norm.backward(problem.dy, cache, dtype=dtype, expanded=expanded)
    out["forward"] = y
    out["grad_input"] = grads.dx
    if grads.dweight is not None:
        out["grad_weight"] = grads.dweight
    if grads.dbias is not None:
        out["grad_bias"] = grads.dbias
    return out
