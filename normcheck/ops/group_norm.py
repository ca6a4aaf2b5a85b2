"""Group norm: channels split into G contiguous groups; statistics per sample and group."""

from __future__ import annotations

import numpy as np

from normcheck.ops._generic import Grads, Normalization
from normcheck.ops._op import Op, OpParams, check_shape, divisors, fmt_shape, required


class GroupNorm(Op):
    def normalization(self, shape: tuple[int, ...], params: OpParams) -> Normalization:
        n, c, *spatial = shape
        g = required(params.groups, "groups")
        view = (n, g, c // g, *spatial)
        param_view = (1, g, 1 if params.group_affine else c // g) + (1,) * len(spatial)
        return Normalization(view=view, axes=tuple(range(2, len(view))), param_view=param_view)

    def param_shape(self, shape: tuple[int, ...], params: OpParams) -> tuple[int, ...]:
        return (required(params.groups, "groups"),) if params.group_affine else (shape[1],)

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
        if c == 0:  # no channel to split: one group, as every G divides zero channels alike
            return [OpParams(groups=1)]
        ds = divisors(c)
        return [OpParams(groups=g) for g in sorted({1, ds[len(ds) // 2], c})]


OP = GroupNorm(name="gn", title="group norm", min_ndim=2)


def group_norm(
    x: np.ndarray,
    num_groups: int,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    eps: float = 1e-5,
    per_group_affine: bool = False,
) -> np.ndarray:
    """Group norm forward in float64, as ``torch.nn.functional.group_norm``.

    ``per_group_affine`` takes weight and bias of shape (G,), one value per group, as ONNX
    GroupNormalization-18 does, instead of PyTorch's (C,). ValueError where PyTorch raises: fewer
    than 2 dims, C not divisible by G, a parameter of another shape.
    """
    norm = _normalization(np.shape(x), num_groups, weight, bias, per_group_affine)
    return norm.forward(x, eps, weight, bias)[0]


def group_norm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    num_groups: int,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    eps: float = 1e-5,
    per_group_affine: bool = False,
) -> Grads:
    norm = _normalization(np.shape(x), num_groups, weight, bias, per_group_affine)
    return norm.backward(dy, norm.forward(x, eps, weight, bias)[1])


def _normalization(
    shape: tuple[int, ...],
    groups: int,
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    per_group_affine: bool,
) -> Normalization:
    """The checked normalization of the public functions: ValueError where PyTorch raises."""
    if len(shape) < 2:
        raise ValueError(f"Expected at least 2 dimensions for input tensor but received {len(shape)}")
    if groups < 1 or shape[1] % groups:
        raise ValueError(
            "Expected number of channels in input to be divisible by num_groups, "
            f"but got input of shape {list(shape)} and num_groups={groups}"
        )
    params = OpParams(groups=groups, group_affine=per_group_affine)
    want = OP.param_shape(shape, params)
    what = "one value per group" if per_group_affine else "one value per channel"
    for name, value in (("weight", weight), ("bias", bias)):
        check_shape(name, value, want, f"{what} of an input of shape {list(shape)}")
    return OP.normalization(shape, params)
