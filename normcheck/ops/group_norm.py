"""Group norm: channels split into G contiguous groups; statistics per sample and group."""

from __future__ import annotations

import numpy as np

from normcheck.ops._generic import Grads, Normalization
from normcheck.ops._op import Op, OpParams, divisors, fmt_shape, required


class GroupNorm(Op):
    def normalization(self, shape: tuple[int, ...], params: OpParams) -> Normalization:
        n, c, *spatial = shape
        g = required(params.groups, "groups")
        view = (n, g, c // g, *spatial)
        param_view = (1, g, c // g) + (1,) * len(spatial)
        return Normalization(view=view, axes=tuple(range(2, len(view))), param_view=param_view)

    def validate(self, shape: tuple[int, ...], params: OpParams) -> str | None:
        problem = super().validate(shape, params)
        if problem is None and (params.groups is None or params.groups < 1 or shape[1] % params.groups):
            problem = f"group norm: C={shape[1]} is not divisible by G={params.groups} (shape {fmt_shape(shape)})"
        return problem

    def default_cases(self) -> list[tuple[tuple[int, ...], OpParams]]:
        grid = [
            ((2, 6, 5, 5), [1, 2, 3, 6]),  # G in {1, C, between}; C/G = 3, not a power of two
            ((1, 12, 4, 4), [4]),  # batch of 1
            ((3, 32, 7), [8]),  # 3-D
            ((2, 10, 3, 4, 5), [5]),  # 5-D, odd sizes
            ((4, 64, 8, 8), [32]),  # the common setting
            ((2, 9, 1, 1), [3]),  # H = W = 1
            ((5, 4), [2]),  # 2-D
        ]
        return [(shape, OpParams(groups=g)) for shape, gs in grid for g in gs]

    def cases_for_shape(
        self, shape: tuple[int, ...], groups: list[int] | None, normalized_ndim: list[int] | None
    ) -> list[OpParams]:
        if groups:
            return [OpParams(groups=g) for g in groups]
        c = shape[1] if len(shape) > 1 else 1
        ds = divisors(c)
        return [OpParams(groups=g) for g in sorted({1, ds[len(ds) // 2], c})]


OP = GroupNorm(name="gn", title="group norm", min_ndim=2)


def group_norm(
    x: np.ndarray, num_groups: int, weight: np.ndarray | None = None, bias: np.ndarray | None = None, eps: float = 1e-5
) -> np.ndarray:
    """Group norm forward in float64, as ``torch.nn.functional.group_norm``."""
    return OP.normalization(np.shape(x), OpParams(groups=num_groups)).forward(x, eps, weight, bias)[0]


def group_norm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    num_groups: int,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    eps: float = 1e-5,
) -> Grads:
    norm = OP.normalization(np.shape(x), OpParams(groups=num_groups))
    return norm.backward(dy, norm.forward(x, eps, weight, bias)[1])
