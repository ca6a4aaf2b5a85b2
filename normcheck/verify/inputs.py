"""Seeded inputs for one case: the data kinds that expose normalization bugs.

Every array is float64 holding values exactly representable in the case's dtype, so the
reference sees precisely what the implementation is given.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from normcheck.dtypes import EPS, quantize
from normcheck.names import KIND_NAMES, REPEATED, STRESS_KIND_NAMES, DtypeName, InputKind, OpName
from normcheck.ops import FUSED_BASE, OPS, Op, OpParams
from normcheck.ops.adaptive_layer_norm import ADALN
from normcheck.ops.rms_norm import GEMMA
from normcheck.ops.weight_standardization import WS_OPS
from normcheck.problem import Problem, case_seed
from normcheck.verify.ws_inputs import make_ws_problem

KINDS = KIND_NAMES
TRAINING_STEPS = 3  # batches seen before running statistics are compared
LARGE_MEAN = 1e4
CONSTANT_VALUE = 1.5  # sums of it stay exact, so a correct mean is exactly this value
HALF_RANGE = 6e4


def make_problem(
    op: OpName,
    shape: tuple[int, ...],
    params: OpParams,
    dtype: DtypeName,
    kind: InputKind,
    eps: float,
    momentum: float = 0.1,
    seed: int = 0,
    unbiased_running_var: bool = True,
) -> Problem:
    """The seeded inputs of one case. The data do not depend on dtype beyond rounding."""
    if op in WS_OPS:  # a convolution's input and weight (normcheck.verify.ws_inputs)
        return make_ws_problem(op, shape, params, dtype, kind, eps, momentum, seed)
    if params.quant is not None:  # the unquantized case's inputs, and a static scale where one is given
        from normcheck.verify.quantized import quantized_problem

        plain = make_problem(op, shape, replace(params, quant=None), dtype, kind, eps, momentum, seed)
        return quantized_problem(plain, params)
    rng = np.random.default_rng(case_seed(seed, op, shape, params, kind))
    spec = OPS[op]
    n_steps = _training_steps(spec, shape, params)
    batches = [_data(rng, spec, shape, params, dtype, kind, eps) for _ in range(n_steps + 1)]
    pshape = spec.param_shape(shape, params)
    weight = bias = None
    if params.affine:
        # Gemma's weight and adaLN's scale are offsets from 1: drawn around 0, so the factor
        # 1 + weight is as others' weights
        offset = params.variant == GEMMA or spec.name == ADALN
        weight = quantize((0.0 if offset else 1.0) + 0.5 * rng.standard_normal(pshape), dtype)
        if spec.name not in ("rms", "add_rms"):
            bias = quantize(0.5 * rng.standard_normal(pshape), dtype)  # drawn even when unused: same stream
            if not spec.has_bias(params):
                bias = None
    dy = quantize(rng.standard_normal(shape), dtype)
    running_mean = running_var = None
    if params.running_stats:
        running_mean, running_var = np.zeros(shape[1]), np.ones(shape[1])
        if n_steps == 0 and params.mode == "eval":
            seen = [_data(rng, spec, shape, params, dtype, kind, eps) for _ in range(TRAINING_STEPS)]
            running_mean, running_var = _statistics_seen(np.stack(seen), dtype)
    residual = dresidual = None
    if op in FUSED_BASE:  # drawn last, so the draws above are those of any other op
        residual = _residual(rng, spec, shape, params, dtype, kind, eps, batches[-1])
        dresidual = quantize(rng.standard_normal(shape), dtype)
    arrays = [*batches, dy, weight, bias, running_mean, running_var, residual, dresidual]
    for a in arrays:
        if a is not None:
            a.setflags(write=False)  # an implementation that writes into its inputs fails loudly
    return Problem(
        op=op,
        shape=tuple(shape),
        params=params,
        dtype=dtype,
        kind=kind,
        eps=eps,
        momentum=momentum,
        x=batches[-1],
        dy=dy,
        weight=weight,
        bias=bias,
        steps=tuple(batches[:-1]),
        running_mean=running_mean,
        running_var=running_var,
        unbiased_running_var=unbiased_running_var,
        residual=residual,
        dresidual=dresidual,
    )


def _residual(
    rng: np.random.Generator,
    spec: Op,
    shape: tuple[int, ...],
    params: OpParams,
    dtype: DtypeName,
    kind: InputKind,
    eps: float,
    x: np.ndarray,
) -> np.ndarray:
    """The residual of a fused add + norm case: data of the same kind, so h = x + residual keeps
    the kind's trait (a constant group stays constant, a large mean stays large, a tiny spread
    tiny), except ``half_range``, where it is drawn so that |x + residual| stays below 65000 and
    float16 does not overflow in the add."""
    if kind == "half_range":
        room = np.maximum(6.5e4 - np.abs(x), 0.0)
        return quantize(rng.uniform(-1.0, 1.0, size=shape) * room, dtype)
    return _data(rng, spec, shape, params, dtype, kind, eps)


def _training_steps(spec: Op, shape: tuple[int, ...], params: OpParams) -> int:
    """Training batches before ``x``, for a case with running statistics: none on a shape that
    cannot be trained on (one value per channel), where evaluation starts from ``_statistics_seen``."""
    if not params.running_stats or spec.validate(shape, replace(params, mode="train")):
        return 0
    return TRAINING_STEPS - 1 if params.mode == "train" else TRAINING_STEPS


def _statistics_seen(batches: np.ndarray, dtype: DtypeName) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and variance of every value of ``batches`` (stacked: K, N, C, ...), in
    ``dtype``: running statistics as if learned from batches of the case's kind."""
    axes = tuple(a for a in range(batches.ndim) if a != 2)
    return quantize(batches.mean(axis=axes), dtype), quantize(batches.var(axis=axes), dtype)


def _data(
    rng: np.random.Generator, spec: Op, shape: tuple[int, ...], params: OpParams, dtype: str, kind: str, eps: float
) -> np.ndarray:
    z = rng.standard_normal(shape)
    if kind == "normal":
        x = z
    elif kind == "large_mean":
        # ten-odd units in the last place of 1e4 in this dtype, and never below 0.01
        spread = max(1e-2, 16 * EPS[dtype] * 2.0 ** np.floor(np.log2(LARGE_MEAN)))
        x = LARGE_MEAN + spread * z
    elif kind == "constant":
        norm = spec.normalization(shape, params)
        x = z.reshape(norm.view).copy()
        if x.size:  # an empty tensor has no group to hold constant
            first_group = tuple(slice(None) if a in norm.axes else 0 for a in range(len(norm.view)))
            x[first_group] = CONSTANT_VALUE
        x = x.reshape(shape)
    elif kind == "tiny_scale":
        x = np.sqrt(eps) * z
    elif kind == "half_range":
        x = rng.uniform(-HALF_RANGE, HALF_RANGE, size=shape)
    elif kind == REPEATED:  # the stress profile's: one normal sample, repeated along the batch axis
        x = np.broadcast_to(z[:1], shape).copy()
    else:
        raise ValueError(f"unknown input kind {kind!r}; choose from {', '.join(KINDS + STRESS_KIND_NAMES)}")
    return quantize(x, dtype)
