"""Batch norm: statistics over N and the spatial axes, per channel; running statistics."""

from __future__ import annotations

import numpy as np

from normcheck.ops._generic import Grads, Normalization
from normcheck.ops._op import Op, OpParams, broadcast_channels, fmt_shape, spatial_axes


class BatchNorm(Op):
    def normalization(self, shape: tuple[int, ...], params: OpParams) -> Normalization:
        return Normalization(
            view=tuple(shape),
            axes=(0, *spatial_axes(len(shape))),
            param_view=broadcast_channels(len(shape), shape[1]),
        )

    def validate(self, shape: tuple[int, ...], params: OpParams) -> str | None:
        problem = super().validate(shape, params)
        if problem is None and params.mode == "train" and self.normalization(shape, params).count < 2:
            problem = f"batch norm in training needs more than one value per channel, got shape {fmt_shape(shape)}"
        return problem

    def default_cases(self):
        shapes = [(8, 5), (4, 6, 7), (2, 3, 5, 5), (1, 4, 3, 3), (2, 3, 2, 3, 4), (16, 12, 1, 1), (3, 7, 4, 6)]
        return [(s, OpParams(mode=m, running_stats=True)) for s in shapes for m in ("train", "eval")]

    def cases_for_shape(self, shape, groups, normalized_ndim):
        return [OpParams(mode=m, running_stats=True) for m in ("train", "eval")]


OP = BatchNorm(name="bn", title="batch norm", min_ndim=2, max_ndim=5)


def batch_norm(
    x,
    running_mean=None,
    running_var=None,
    weight=None,
    bias=None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Batch norm forward in float64, as ``torch.nn.functional.batch_norm``.

    Returns (y, new running mean, new running var); in training the running statistics are
    updated with ``momentum`` (weight of the new batch) and the Bessel-corrected batch variance,
    while the batch itself is normalized with the biased variance.
    """
    shape = np.shape(x)
    params = OpParams(mode="train" if training else "eval", running_stats=running_mean is not None)
    norm = OP.normalization(shape, params)
    if training:
        y = norm.forward(x, eps, weight, bias)[0]
        if running_mean is None:
            return y, None, None
        rm, rv = OP.update_running(x, params, running_mean, running_var, momentum)
        return y, rm, rv
    stats = _running_as_stats(shape, running_mean, running_var)
    return norm.forward(x, eps, weight, bias, stats=stats)[0], running_mean, running_var


def batch_norm_backward(
    dy, x, running_mean=None, running_var=None, weight=None, bias=None, training: bool = False, eps: float = 1e-5
) -> Grads:
    shape = np.shape(x)
    norm = OP.normalization(shape, OpParams())
    stats = None if training else _running_as_stats(shape, running_mean, running_var)
    return norm.backward(dy, norm.forward(x, eps, weight, bias, stats=stats)[1])


def _running_as_stats(shape, running_mean, running_var):
    b = broadcast_channels(len(shape), shape[1])
    return np.reshape(running_mean, b), np.reshape(running_var, b)
