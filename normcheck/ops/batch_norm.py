"""Batch norm: statistics over N and the spatial axes, per channel; running statistics."""

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

# momentum=None: PyTorch's cumulative moving average, running = mean of the batches seen so far
# (the k-th training batch has weight 1/k, num_batches_tracked counting from 0)
CUMULATIVE = "cumulative"


def cumulative_momentum(step: int) -> float:
    """The weight of the ``step``-th training batch (0-based) under momentum=None: 1/(step + 1)."""
    return 1.0 / (step + 1)


class BatchNorm(Op):
    def variants(self) -> tuple[str, ...]:
        return (CUMULATIVE,)

    def normalization(self, shape: tuple[int, ...], params: OpParams) -> Normalization:
        return Normalization(
            view=tuple(shape),
            axes=(0, *spatial_axes(len(shape))),
            param_view=broadcast_channels(len(shape), shape[1]),
        )

    def validate(self, shape: tuple[int, ...], params: OpParams) -> str | None:
        problem = super().validate(shape, params)
        if problem is None and params.mode == "train" and self.normalization(shape, params).count == 1:
            problem = (
                f"batch norm in training needs more than one value per channel, got shape {fmt_shape(shape)}; "
                "torch raises"
            )
        return problem

    def default_cases(self) -> list[tuple[tuple[int, ...], OpParams]]:
        shapes = [(8, 5), (4, 6, 7), (2, 3, 5, 5), (1, 4, 3, 3), (2, 3, 2, 3, 4), (16, 12, 1, 1), (3, 7, 4, 6)]
        return [(s, OpParams(mode=m, running_stats=True)) for s in shapes for m in ("train", "eval")]

    def cases_for_shape(
        self, shape: tuple[int, ...], groups: list[int] | None, normalized_ndim: list[int] | None
    ) -> list[OpParams]:
        return [OpParams(mode=m, running_stats=True) for m in ("train", "eval")]


OP = BatchNorm(name="bn", title="batch norm", min_ndim=2, max_ndim=5)


def batch_norm(
    x: np.ndarray,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    unbiased_running_var: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Batch norm forward in float64, as ``torch.nn.functional.batch_norm``.

    Returns (y, new running mean, new running var); in training the running statistics are
    updated with ``momentum`` (weight of the new batch) and the batch variance, Bessel-corrected
    as PyTorch does (``unbiased_running_var``) or the population variance as ONNX's training
    mode, Keras and Flax keep it, while the batch itself is normalized with the biased variance.
    ValueError where PyTorch raises: training on one value per channel, a parameter not of shape
    (C,). An empty input gives an empty output and leaves the running statistics as they are.
    """
    shape = _checked_shape(x, running_mean, running_var, weight, bias)
    running = running_pair(running_mean, running_var)
    if np.size(x) == 0:
        return np.zeros(shape), running_mean, running_var
    params = OpParams(mode="train" if training else "eval", running_stats=running is not None)
    norm = OP.normalization(shape, params)
    if training:
        check_more_than_one_value(norm.count, shape, "value per channel")
        y = norm.forward(x, eps, weight, bias)[0]
        if running is None:
            return y, None, None
        rm, rv = OP.update_running(x, params, *running, momentum, unbiased=unbiased_running_var)
        return y, rm, rv
    stats = running_as_stats(shape, running)
    return norm.forward(x, eps, weight, bias, stats=stats)[0], running_mean, running_var


def batch_norm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    training: bool = False,
    eps: float = 1e-5,
) -> Grads:
    shape = _checked_shape(x, running_mean, running_var, weight, bias, empty_1d=False)
    norm = OP.normalization(shape, OpParams())
    if training:
        check_more_than_one_value(norm.count, shape, "value per channel")
    stats = None if training else running_as_stats(shape, running_pair(running_mean, running_var))
    return norm.backward(dy, norm.forward(x, eps, weight, bias, stats=stats)[1])


def _checked_shape(
    x: np.ndarray,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    empty_1d: bool = True,
) -> tuple[int, ...]:
    """The shape of ``x``, an (N, C, ...) input whose parameters are all (C,): ValueError otherwise.

    PyTorch also takes an empty 1-D input (``empty_1d``), and returns it as it is.
    """
    shape = np.shape(x)
    if len(shape) < 2:
        if empty_1d and np.size(x) == 0:
            return shape
        raise ValueError(f"batch norm needs an (N, C, ...) input, got input of shape {list(shape)}")
    check_per_channel(shape, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)
    return shape
