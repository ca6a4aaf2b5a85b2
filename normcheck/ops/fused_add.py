"""Fused residual add + norm (vLLM's fused_add_rms_norm, TransformerEngine, ONNX Runtime's
SkipLayerNormalization): h = x + residual, rounded to the input dtype; outputs the normalized h
and h itself (the updated residual stream).

Gradients: the loss reaches h through both outputs, so with upstream gradients dy (normalized
output) and dh (residual output), dx = dresidual = J^T dy + dh, J the norm's Jacobian at h.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from normcheck.ops._generic import Normalization
from normcheck.ops._op import Op, OpParams
from normcheck.ops.layer_norm import OP as LAYER_NORM
from normcheck.ops.layer_norm import layer_norm, layer_norm_backward
from normcheck.ops.rms_norm import OP as RMS_NORM
from normcheck.ops.rms_norm import offset_weight, rms_norm, rms_norm_backward

# what an implementation declares (Implementation.extensions) to be run on a fused op's cases
FUSED_ADD = "fused_add"


@dataclass(frozen=True)
class FusedGrads:
    """Gradients of a fused add + norm: the input's and the residual's are equal."""

    dx: np.ndarray
    dresidual: np.ndarray
    dweight: np.ndarray | None
    dbias: np.ndarray | None


@dataclass(frozen=True)
class FusedAddNorm(Op):
    """The norm ``base`` applied to x + residual; statistics, parameters and variants are its."""

    base: Op | None = None

    @property
    def norm_op(self) -> Op:
        if self.base is None:
            raise ValueError(f"{self.name} has no base op")
        return self.base

    def normalization(self, shape: tuple[int, ...], params: OpParams) -> Normalization:
        return self.norm_op.normalization(shape, params)

    def param_shape(self, shape: tuple[int, ...], params: OpParams) -> tuple[int, ...]:
        return self.norm_op.param_shape(shape, params)

    def validate(self, shape: tuple[int, ...], params: OpParams) -> str | None:
        if params.running_stats:
            return f"{self.title} keeps no running statistics"
        return self.norm_op.validate(shape, params)

    def has_bias(self, params: OpParams) -> bool:
        return self.norm_op.has_bias(params)

    def variants(self) -> tuple[str, ...]:
        return self.norm_op.variants()

    def variant_problem(self, params: OpParams) -> str | None:
        return self.norm_op.variant_problem(params)

    def default_cases(self) -> list[tuple[tuple[int, ...], OpParams]]:
        # fused kernels always take a weight; small grids, the layer shapes of a transformer block
        grid = [((4, 16), 1), ((2, 5, 33), 1), ((1, 7, 24), 1), ((2, 3, 7, 9), 2), ((8, 64), 1)]
        return [(shape, OpParams(normalized_ndim=k)) for shape, k in grid]

    def cases_for_shape(
        self, shape: tuple[int, ...], groups: list[int] | None, normalized_ndim: list[int] | None
    ) -> list[OpParams]:
        return self.norm_op.cases_for_shape(shape, groups, normalized_ndim)


ADD_RMS = FusedAddNorm(name="add_rms", title="fused add + RMS norm", min_ndim=1, base=RMS_NORM)
ADD_LN = FusedAddNorm(name="add_ln", title="fused add + layer norm", min_ndim=1, base=LAYER_NORM)


def residual_sum(x: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """h = x + residual in the inputs' own dtype (rounded once, as a kernel stores it), as float64."""
    xa, ra = np.asarray(x), np.asarray(residual)
    if xa.shape != ra.shape:
        raise ValueError(f"residual of shape {list(ra.shape)} does not match input of shape {list(xa.shape)}")
    return np.asarray(xa + ra, dtype=np.float64)


def fused_add_rms_norm(
    x: np.ndarray,
    residual: np.ndarray,
    normalized_shape: Sequence[int] | int,
    weight: np.ndarray,
    eps: float | None = None,
    gemma: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(RMS norm of h, h) for h = x + residual, in float64 after the add (see ``residual_sum``);
    ``gemma`` scales by 1 + weight."""
    h = residual_sum(x, residual)
    w = offset_weight(weight) if gemma else weight
    return rms_norm(h, normalized_shape, w, eps, np.asarray(x).dtype.name), h


def fused_add_rms_norm_backward(
    dy: np.ndarray,
    dh: np.ndarray,
    x: np.ndarray,
    residual: np.ndarray,
    normalized_shape: Sequence[int] | int,
    weight: np.ndarray,
    eps: float | None = None,
    gemma: bool = False,
) -> FusedGrads:
    h = residual_sum(x, residual)
    w = offset_weight(weight) if gemma else weight
    g = rms_norm_backward(dy, h, normalized_shape, w, eps, np.asarray(x).dtype.name)
    dx = g.dx + np.asarray(dh, dtype=np.float64)
    return FusedGrads(dx, dx.copy(), g.dweight, g.dbias)


def fused_add_layer_norm(
    x: np.ndarray,
    residual: np.ndarray,
    normalized_shape: Sequence[int] | int,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    eps: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray]:
    """(layer norm of h, h) for h = x + residual (see ``residual_sum``)."""
    h = residual_sum(x, residual)
    return layer_norm(h, normalized_shape, weight, bias, eps), h


def fused_add_layer_norm_backward(
    dy: np.ndarray,
    dh: np.ndarray,
    x: np.ndarray,
    residual: np.ndarray,
    normalized_shape: Sequence[int] | int,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    eps: float = 1e-5,
) -> FusedGrads:
    h = residual_sum(x, residual)
    g = layer_norm_backward(dy, h, normalized_shape, weight, bias, eps)
    dx = g.dx + np.asarray(dh, dtype=np.float64)
    return FusedGrads(dx, dx.copy(), g.dweight, g.dbias)


def base_op(op: Op) -> Op:
    """The norm an op applies: a fused op's base, any other op itself."""
    return op.norm_op if isinstance(op, FusedAddNorm) else op


__all__ = ["ADD_LN", "ADD_RMS", "FUSED_ADD", "FusedAddNorm", "FusedGrads", "base_op"]
