"""RMS norm: y = x / sqrt(mean(x^2) + eps) * weight over the trailing k dims; no mean, no bias."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from normcheck.ops._generic import Grads
from normcheck.ops._op import OpParams
from normcheck.ops.layer_norm import LayerNorm


def default_eps(dtype: str) -> float:
    """PyTorch's ``eps=None``: the machine epsilon of the op's compute type.

    Half types compute in float32, so float16, bfloat16 and float32 inputs all get float32's
    epsilon (about 1.19e-7); float64 gets float64's.
    """
    return float(np.finfo(np.float64 if dtype == "float64" else np.float32).eps)


class RMSNorm(LayerNorm):
    center = False

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
    normalized_shape: Sequence[int],
    weight: np.ndarray | None = None,
    eps: float | None = None,
    dtype: str = "float32",
) -> np.ndarray:
    """RMS norm forward in float64, as ``torch.nn.functional.rms_norm``.

    ``eps=None`` follows PyTorch: the machine epsilon of ``dtype``'s compute type.
    """
    eps = default_eps(dtype) if eps is None else eps
    k = len(tuple(normalized_shape))
    return OP.normalization(np.shape(x), OpParams(normalized_ndim=k)).forward(x, eps, weight)[0]


def rms_norm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    normalized_shape: Sequence[int],
    weight: np.ndarray | None = None,
    eps: float | None = None,
    dtype: str = "float32",
) -> Grads:
    eps = default_eps(dtype) if eps is None else eps
    norm = OP.normalization(np.shape(x), OpParams(normalized_ndim=len(tuple(normalized_shape))))
    return norm.backward(dy, norm.forward(x, eps, weight)[1])
