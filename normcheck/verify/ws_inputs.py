"""Seeded inputs of a Weight Standardization case (``ws``, ``ws_gn``).

A case has two tensors an input kind could make hostile: the input x and the convolution's
weight W, whose standardization is the part under test. x is standard normal in every kind (a
large-mean x only tests the convolution's own cancellation); the kind shapes W (O, C, k, k):

- ``normal``: 0.1 + 0.5 z, a mean to subtract;
- ``large_mean``: 1e4 + a spread of 16 ulps of 1e4 (at least 0.01): a one-pass variance
  E[W²] - E[W]² cancels;
- ``constant``: the first output channel's weights all 1.5: zero variance, eps alone keeps 1/std
  finite;
- ``tiny_scale``: spread sqrt(eps) around 0.5 sqrt(eps): where eps goes and its value decide
  the output;
- ``half_range``: uniform in +-6e4: the sum of squares overflows float16.

Every array holds values exactly representable in the case's dtype (float64 storage), as the
other ops' inputs (normcheck.verify.inputs, whose LARGE_MEAN, CONSTANT_VALUE and HALF_RANGE these
equal; a test holds them together).
"""

from __future__ import annotations

import numpy as np

from normcheck.dtypes import EPS, quantize
from normcheck.names import DtypeName, InputKind, OpName
from normcheck.ops import OpParams
from normcheck.ops.weight_standardization import WS_GN, output_shape, weight_shape
from normcheck.problem import Problem, case_seed

LARGE_MEAN = 1e4
CONSTANT_VALUE = 1.5
HALF_RANGE = 6e4
KINDS: tuple[InputKind, ...] = ("normal", "large_mean", "constant", "tiny_scale", "half_range")


def make_ws_problem(
    op: OpName,
    shape: tuple[int, ...],
    params: OpParams,
    dtype: DtypeName,
    kind: InputKind,
    eps: float,
    momentum: float = 0.1,
    seed: int = 0,
) -> Problem:
    """The seeded inputs of one ws or ws_gn case; the data do not depend on dtype beyond rounding."""
    if kind not in KINDS:
        raise ValueError(f"unknown input kind {kind!r}; choose from {', '.join(KINDS)}")
    rng = np.random.default_rng(case_seed(seed, op, shape, params.conv, params, kind))
    wshape = weight_shape(shape, params)
    x = _input(rng, shape, dtype, kind)
    weight = _weight(rng, wshape, dtype, kind, eps)
    dy = quantize(rng.standard_normal(output_shape(shape, params)), dtype)
    channels = (wshape[0],)
    bias = gn_weight = gn_bias = None
    if op == WS_GN:
        if params.affine:
            gn_weight = quantize(1.0 + 0.5 * rng.standard_normal(channels), dtype)
            gn_bias = quantize(0.5 * rng.standard_normal(channels), dtype)
    elif params.affine:
        bias = quantize(0.5 * rng.standard_normal(channels), dtype)
    for a in (x, weight, dy, bias, gn_weight, gn_bias):
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
        x=x,
        dy=dy,
        weight=weight,
        bias=bias,
        gn_weight=gn_weight,
        gn_bias=gn_bias,
    )


def _spread(dtype: str) -> float:
    """Sixteen units in the last place of LARGE_MEAN in ``dtype``, never below 0.01 (as the other ops')."""
    return max(1e-2, 16 * EPS[dtype] * 2.0 ** np.floor(np.log2(LARGE_MEAN)))


def _input(rng: np.random.Generator, shape: tuple[int, ...], dtype: str, kind: str) -> np.ndarray:
    return quantize(rng.standard_normal(shape), dtype)


def _weight(rng: np.random.Generator, shape: tuple[int, ...], dtype: str, kind: str, eps: float) -> np.ndarray:
    z = rng.standard_normal(shape)
    if kind == "large_mean":
        w = LARGE_MEAN + _spread(dtype) * z
    elif kind == "constant":
        w = 0.1 + 0.5 * z
        w[0] = CONSTANT_VALUE
    elif kind == "tiny_scale":
        w = np.sqrt(eps) * (0.5 + z)
    elif kind == "half_range":
        w = rng.uniform(-HALF_RANGE, HALF_RANGE, size=shape)
    else:
        w = 0.1 + 0.5 * z
    return quantize(w, dtype)
