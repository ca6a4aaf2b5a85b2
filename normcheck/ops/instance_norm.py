"""Instance norm: statistics over the spatial axes, per sample and channel."""

from __future__ import annotations

import numpy as np

from normcheck.ops._generic import Grads, Normalization
from normcheck.ops._op import (
    Op,
    OpParams,
    broadcast_channels,
    check_more_than_one_value,
    check_per_channel,
    fmt_shape,
    running_as_stats,
    running_pair,
    spatial_axes,
)


class InstanceNorm(Op):
    def normalization(self, shape: tuple[int, ...], params: OpParams) -> Normalization:
        return Normalization(
            view=tuple(shape),
            axes=spatial_axes(len(shape)),
            param_view=broadcast_channels(len(shape), shape[1]),
        )

    def validate(self, shape: tuple[int, ...], params: OpParams) -> str | None:
        problem = super().validate(shape, params)
        if problem is None and params.input_stats and self.normalization(shape, params).count == 1:
            problem = (
                "instance norm with the input's statistics needs more than one spatial value, "
                f"got shape {fmt_shape(shape)}; torch raises"
            )
        return problem

    def default_cases(self) -> list[tuple[tuple[int, ...], OpParams]]:
        shapes = [(2, 3, 10), (1, 4, 5, 5), (3, 6, 4, 4), (2, 3, 3, 4, 5), (2, 5, 1, 7)]
        cases = [(s, OpParams()) for s in shapes]
        cases.append(((2, 4, 6, 6), OpParams(affine=False)))  # PyTorch's default: no affine
        cases += [((3, 4, 5, 5), OpParams(mode=m, running_stats=True)) for m in ("train", "eval")]
        return cases

    def cases_for_shape(
        self, shape: tuple[int, ...], groups: list[int] | None, normalized_ndim: list[int] | None
    ) -> list[OpParams]:
        return [OpParams(), OpParams(mode="train", running_stats=True), OpParams(mode="eval", running_stats=True)]


OP = InstanceNorm(name="in", title="instance norm", min_ndim=3, max_ndim=5)


def instance_norm(
    x: np.ndarray,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Instance norm forward in float64, as ``torch.nn.functional.instance_norm``.

    Returns (y, new running mean, new running var). With ``use_input_stats`` the running
    statistics, when given, move towards the batch average of the per-instance statistics.
    ValueError where PyTorch raises: the input's statistics over one spatial value, a parameter
    not of shape (C,).
    """
    shape = np.shape(x)
    check_per_channel(shape, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)
    running = running_pair(running_mean, running_var)
    params = OpParams(running_stats=running is not None)
    norm = OP.normalization(shape, params)
    if use_input_stats:
        check_more_than_one_value(norm.count, shape, "spatial element")
        y = norm.forward(x, eps, weight, bias)[0]
        if running is None:
            return y, None, None
        return (y, *OP.update_running(x, params, *running, momentum))
    stats = running_as_stats(shape, running)
    return norm.forward(x, eps, weight, bias, stats=stats)[0], running_mean, running_var


def instance_norm_backward(
    dy: np.ndarray, x: np.ndarray, weight: np.ndarray | None = None, bias: np.ndarray | None = None, eps: float = 1e-5
) -> Grads:
    shape = np.shape(x)
    check_per_channel(shape, weight=weight, bias=bias)
    norm = OP.normalization(shape, OpParams())
    check_more_than_one_value(norm.count, shape, "spatial element")
    return norm.backward(dy, norm.forward(x, eps, weight, bias)[1])
