"""The inputs of a timed case: random data of the case's shape, affine parameters and, for
batch norm, running statistics; for the fused, adaptive, Weight Standardization, variant and
quantized cases verify's inputs. Values do not matter for speed; shapes and dtypes do."""

from __future__ import annotations

import numpy as np

from normcheck.names import OP_NAMES, DtypeName, OpName
from normcheck.ops import OPS, OpParams
from normcheck.problem import Problem, case_seed

EPS = 1e-5
MOMENTUM = 0.1


def bench_problem(op: OpName, shape: tuple[int, ...], params: OpParams, dtype: DtypeName, seed: int = 0) -> Problem:
    if op not in OP_NAMES or params.variant is not None or params.quant is not None:
        # a residual, a per-sample modulation, a convolution's weight, a variant's weight, a static
        # scale: verify's inputs of the case (normal data), made the same way
        from normcheck.verify.inputs import make_problem

        return make_problem(op, shape, params, dtype, "normal", EPS, MOMENTUM, seed)
    rng = np.random.default_rng(case_seed(seed, "bench", op, shape, params))
    pshape = OPS[op].param_shape(shape, params)
    weight = bias = None
    if params.affine:
        weight = 1.0 + 0.5 * rng.standard_normal(pshape)
        bias = None if op == "rms" else 0.5 * rng.standard_normal(pshape)
    running_mean = running_var = None
    if params.running_stats:
        running_mean, running_var = np.zeros(shape[1]), np.ones(shape[1])
    return Problem(
        op=op,
        shape=tuple(shape),
        params=params,
        dtype=dtype,
        kind="normal",
        eps=EPS,
        momentum=MOMENTUM,
        x=rng.standard_normal(shape),
        dy=rng.standard_normal(shape),
        weight=weight,
        bias=bias,
        running_mean=running_mean,
        running_var=running_var,
    )
