"""RMS norm: y = x / sqrt(mean(x^2) + eps) * weight over the trailing k dims; no mean, no bias."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from normcheck.ops._generic import Grads, Normalization
from normcheck.ops._op import OpParams
from normcheck.ops.layer_norm import LayerNorm, normalized_ndim

# The type PyTorch computes RMS norm in, by input dtype (its decomposition upcasts half types)
COMPUTE_TYPES: dict[str, type[np.floating]] = {
    "float16": np.float32,
    "bfloat16": np.float32,
    "float32": np.float32,
    "float64": np.float64,
}


def default_eps(dtype: str) -> float:
    """PyTorch's ``eps=None``: the machine epsilon of the op's compute type.

    Half types compute in float32, so float16, bfloat16 and float32 inputs all get float32's
    epsilon (about 1.19e-7); float64 gets float64's.
    """
    if dtype not in COMPUTE_TYPES:
        raise ValueError(f"RMS norm has no default eps for {dtype} input; choose from {', '.join(COMPUTE_TYPES)}")
    return float(np.finfo(COMPUTE_TYPES[dtype]).eps)


GEMMA = "gemma"  # y = xhat * (1 + weight): Gemma's RMSNorm, whose weight is stored as an offset from 1


class RMSNorm(LayerNorm):
    center = False

    def variants(self) -> tuple[str, ...]:
        return (GEMMA,)

    def variant_problem(self, params: OpParams) -> str | None:
        problem = super().variant_problem(params)
        if problem is None and params.variant == GEMMA and not params.affine:
            problem = f"{self.title}: the gemma variant needs a weight (without one it is plain RMS norm)"
        return problem

    def default_cases(self) -> list[tuple[tuple[int, ...], OpParams]]:
        grid = [
            ((4, 16), 1, True),
            ((2, 5, 33), 1, True),
            ((1, 7, 24), 1, True),
            ((2, 3, 8, 8), 2, True),
            ((3, 2, 3, 4, 5), 3, True),
            ((2, 6, 32), 1, False),  # weight omitted
        ]
        return [(shape, OpParams(normalized_ndim=k, affine=affine)) for shape, k, affine in grid]


OP = RMSNorm(name="rms", title="RMS norm", min_ndim=1)


def rms_norm(
    x: np.ndarray,
    normalized_shape: Sequence[int] | int,
    weight: np.ndarray | None = None,
    eps: float | None = None,
    dtype: str | None = None,
) -> np.ndarray:
    """RMS norm forward in float64, as ``torch.nn.functional.rms_norm``.

    ``eps=None`` follows PyTorch: the machine epsilon of the input's compute type (see
    ``default_eps``), the input being ``x``'s dtype unless ``dtype`` names another (a case's
    dtype, when ``x`` holds its values in float64). ValueError where PyTorch raises (see
    ``normalized_ndim``).
    """
    norm, eps = _checked(x, normalized_shape, weight, eps, dtype)
    return norm.forward(x, eps, weight)[0]


def rms_norm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    normalized_shape: Sequence[int] | int,
    weight: np.ndarray | None = None,
    eps: float | None = None,
    dtype: str | None = None,
) -> Grads:
    norm, eps = _checked(x, normalized_shape, weight, eps, dtype)
    return norm.backward(dy, norm.forward(x, eps, weight)[1])


def _checked(
    x: np.ndarray,
    normalized_shape: Sequence[int] | int,
    weight: np.ndarray | None,
    eps: float | None,
    dtype: str | None,
) -> tuple[Normalization, float]:
    """The normalization and eps of a public call, checked as PyTorch checks them."""
    k = normalized_ndim(np.shape(x), normalized_shape, weight=weight)
    eps = default_eps(dtype or np.asarray(x).dtype.name) if eps is None else eps
    return OP.normalization(np.shape(x), OpParams(normalized_ndim=k)), eps


def gemma_rms_norm(
    x: np.ndarray,
    normalized_shape: Sequence[int] | int,
    weight: np.ndarray,
    eps: float | None = None,
    dtype: str | None = None,
) -> np.ndarray:
    """Gemma's RMS norm forward in float64: y = x / sqrt(mean(x^2) + eps) * (1 + weight).

    The offset is added in float64 (a correct kernel adds it in float32, never in a half dtype).
    Otherwise as ``rms_norm``.
    """
    return rms_norm(x, normalized_shape, offset_weight(weight), eps, dtype)


def gemma_rms_norm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    normalized_shape: Sequence[int] | int,
    weight: np.ndarray,
    eps: float | None = None,
    dtype: str | None = None,
) -> Grads:
    """Gradients of ``gemma_rms_norm``: those of RMS norm with weight 1 + weight (d(1 + w)/dw = 1)."""
    return rms_norm_backward(dy, x, normalized_shape, offset_weight(weight), eps, dtype)


def offset_weight(weight: np.ndarray) -> np.ndarray:
    """The scale Gemma's RMS norm multiplies by, 1 + weight, in float64."""
    return 1.0 + np.asarray(weight, dtype=np.float64)
