"""Layer norm: statistics over the trailing k dims; elementwise affine of that shape."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from normcheck.ops._generic import Grads, Normalization
from normcheck.ops._op import Op, OpParams, check_shape, fmt_shape, required, trailing_axes

NOBIAS = "nobias"  # no bias: torch.nn.LayerNorm(bias=False), F.layer_norm(bias=None)


class LayerNorm(Op):
    center = True

    def variants(self) -> tuple[str, ...]:
        return (NOBIAS,)

    def variant_problem(self, params: OpParams) -> str | None:
        problem = super().variant_problem(params)
        if problem is None and params.variant == NOBIAS and not params.affine:
            problem = f"{self.title}: the nobias variant needs a weight (without one, affine is off altogether)"
        return problem

    def normalization(self, shape: tuple[int, ...], params: OpParams) -> Normalization:
        k = required(params.normalized_ndim, "normalized_ndim")
        return Normalization(
            view=tuple(shape),
            axes=trailing_axes(len(shape), k),
            param_view=(1,) * (len(shape) - k) + tuple(shape[len(shape) - k :]),
            center=self.center,
        )

    def param_shape(self, shape: tuple[int, ...], params: OpParams) -> tuple[int, ...]:
        return tuple(shape[len(shape) - required(params.normalized_ndim, "normalized_ndim") :])

    def validate(self, shape: tuple[int, ...], params: OpParams) -> str | None:
        problem = super().validate(shape, params)
        k = params.normalized_ndim
        if problem is None and (k is None or not 1 <= k <= len(shape)):
            problem = f"{self.title}: cannot normalize {k} trailing dims of shape {fmt_shape(shape)}"
        return problem

    def default_cases(self) -> list[tuple[tuple[int, ...], OpParams]]:
        grid = [
            ((4, 16), 1),
            ((2, 5, 33), 1),  # odd hidden size
            ((1, 7, 24), 1),  # batch of 1
            ((2, 3, 7, 9), 2),  # multi-dim normalized_shape
            ((2, 3, 4, 5), 3),
            ((3, 2, 3, 4, 5), 2),  # 5-D
            ((8, 64), 1),
        ]
        return [(shape, OpParams(normalized_ndim=k)) for shape, k in grid]

    def cases_for_shape(
        self, shape: tuple[int, ...], groups: list[int] | None, normalized_ndim: list[int] | None
    ) -> list[OpParams]:
        ks = normalized_ndim or sorted({1, max(1, len(shape) - 1)})
        return [OpParams(normalized_ndim=k) for k in ks]

    def has_bias(self, params: OpParams) -> bool:
        """Whether a case of ``params`` has a bias (RMS norm never does)."""
        return params.affine and self.center and params.variant != NOBIAS


OP = LayerNorm(name="ln", title="layer norm", min_ndim=1)


def layer_norm(
    x: np.ndarray,
    normalized_shape: Sequence[int] | int,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    eps: float = 1e-5,
) -> np.ndarray:
    """Layer norm forward in float64, as ``torch.nn.functional.layer_norm``.

    ValueError where PyTorch raises (see ``normalized_ndim``).
    """
    k = normalized_ndim(np.shape(x), normalized_shape, weight=weight, bias=bias)
    return OP.normalization(np.shape(x), OpParams(normalized_ndim=k)).forward(x, eps, weight, bias)[0]


def layer_norm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    normalized_shape: Sequence[int] | int,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    eps: float = 1e-5,
) -> Grads:
    k = normalized_ndim(np.shape(x), normalized_shape, weight=weight, bias=bias)
    norm = OP.normalization(np.shape(x), OpParams(normalized_ndim=k))
    return norm.backward(dy, norm.forward(x, eps, weight, bias)[1])


def normalized_ndim(shape: tuple[int, ...], normalized_shape: Sequence[int] | int, **params: np.ndarray | None) -> int:
    """How many trailing dims ``normalized_shape`` names, checked as PyTorch checks it.

    ValueError unless it is non-empty and equals the trailing dims of ``shape``, and every
    parameter given (weight, bias) has exactly that shape.
    """
    ns = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(int(n) for n in normalized_shape)
    if not ns:
        raise ValueError(
            "Expected normalized_shape to be at least 1-dimensional, i.e., containing at least one element, "
            "but got normalized_shape = []"
        )
    if len(ns) > len(shape) or tuple(shape[len(shape) - len(ns) :]) != ns:
        raise ValueError(
            f"Given normalized_shape={list(ns)}, expected input with shape [*, {', '.join(map(str, ns))}], "
            f"but got input of size {list(shape)}"
        )
    for name, value in params.items():
        check_shape(name, value, ns, f"normalized_shape = {list(ns)}")
    return len(ns)
