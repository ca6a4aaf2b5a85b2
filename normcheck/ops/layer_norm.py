"""Layer norm: statistics over the trailing k dims, or over any set of axes (``OpParams.axes``:
ConvNeXt's LayerNorm2d normalizes axis 1 of NCHW); elementwise affine of those axes' sizes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from normcheck.ops._generic import Grads, Normalization
from normcheck.ops._op import Op, OpParams, check_shape, fmt_shape, required, trailing_axes

NOBIAS = "nobias"  # no bias: torch.nn.LayerNorm(bias=False), F.layer_norm(bias=None)
# what an implementation declares (Implementation.extensions) to be run on a case whose axes are
# not the trailing ones (OpParams.axes); one that lacks it has a skip row
AXES = "axes"
# --axes without --shape: shapes of 3 to 5 dims, batches of 1 and more, odd sizes, H = W = 1
AXES_GRID: tuple[tuple[int, ...], ...] = (
    (2, 6, 5, 7),
    (1, 5, 3, 3),
    (2, 7, 1, 1),
    (4, 3, 8, 8),
    (3, 4, 7),
    (2, 3, 2, 3, 4),
)


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
        axes = normalized_axes(shape, params)
        return Normalization(
            view=tuple(shape),
            axes=axes,
            param_view=tuple(n if i in axes else 1 for i, n in enumerate(shape)),
            center=self.center,
        )

    def param_shape(self, shape: tuple[int, ...], params: OpParams) -> tuple[int, ...]:
        return tuple(shape[a] for a in normalized_axes(shape, params))

    def validate(self, shape: tuple[int, ...], params: OpParams) -> str | None:
        problem = super().validate(shape, params)
        k = params.normalized_ndim
        if problem is None and params.axes is not None:
            problem = self._axes_problem(shape, params.axes, k)
        elif problem is None and (k is None or not 1 <= k <= len(shape)):
            problem = f"{self.title}: cannot normalize {k} trailing dims of shape {fmt_shape(shape)}"
        return problem

    def _axes_problem(self, shape: tuple[int, ...], axes: tuple[int, ...], k: int | None) -> str | None:
        if self.name != "ln":
            return f"{self.title} normalizes trailing dims only (normalized_ndim), not axes {list(axes)}"
        if k is not None:
            return f"{self.title}: give axes or normalized_ndim, not both"
        try:
            canonical = canonical_axes(len(shape), axes)
        except ValueError as e:
            return f"{self.title}: {e} of shape {fmt_shape(shape)}"
        return None if canonical == axes else f"{self.title}: axes {list(axes)} are not in canonical form"

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


def normalized_axes(shape: tuple[int, ...], params: OpParams) -> tuple[int, ...]:
    """The axes a layer/RMS norm case normalizes: ``params.axes``, else the trailing ``normalized_ndim``."""
    if params.axes is not None:
        return params.axes
    return trailing_axes(len(shape), required(params.normalized_ndim, "normalized_ndim"))


def canonical_axes(ndim: int, axes: Sequence[int]) -> tuple[int, ...]:
    """``axes`` of a rank-``ndim`` tensor, negative ones counted from the end, ascending.
    ValueError for none, a repeated one or one out of range."""
    if not axes:
        raise ValueError("no axes to normalize")
    out = sorted(a + ndim if a < 0 else a for a in axes)
    if any(not 0 <= a < ndim for a in out):
        raise ValueError(f"cannot normalize axes {list(axes)}: out of range for rank {ndim}")
    if len(set(out)) != len(out):
        raise ValueError(f"cannot normalize axes {list(axes)}: an axis is repeated")
    return tuple(out)


def axes_params(shape: tuple[int, ...], axes: Sequence[int]) -> OpParams:
    """The params of layer norm over ``axes`` of ``shape``: trailing axes are ``normalized_ndim``
    (what every framework's layer norm takes), other sets ``OpParams.axes``; axes ``shape``
    cannot have are kept as given, for ``validate`` to say why."""
    try:
        canonical = canonical_axes(len(shape), axes)
    except ValueError:
        return OpParams(axes=tuple(axes))
    if canonical == trailing_axes(len(shape), len(canonical)):
        return OpParams(normalized_ndim=len(canonical))
    return OpParams(axes=canonical)


def axes_cases(
    axes_sets: Sequence[Sequence[int]], shapes: Sequence[tuple[int, ...]]
) -> list[tuple[tuple[int, ...], OpParams]]:
    """The cases of ``--axes``: each set on each of ``shapes``, or without shapes on the shapes of
    ``AXES_GRID`` of a rank that has those axes (the first grid shape when none has: invalid, so
    ``validate`` says why)."""
    cases = []
    for axes in axes_sets:
        if shapes:
            cases += [(shape, axes_params(shape, axes)) for shape in shapes]
            continue
        fit = [shape for shape in AXES_GRID if _fits(len(shape), axes)]
        cases += [(shape, axes_params(shape, axes)) for shape in fit or AXES_GRID[:1]]
    return cases


def _fits(ndim: int, axes: Sequence[int]) -> bool:
    try:
        canonical_axes(ndim, axes)
    except ValueError:
        return False
    return True


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
