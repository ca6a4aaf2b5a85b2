"""Adaptive layer norm (adaLN, DiT): y = LN(x) * (1 + scale[:, None]) + shift[:, None].

x is (N, T, D): N samples of T tokens of width D. LN normalizes each token over D and has no
affine parameters of its own (DiT: ``nn.LayerNorm(hidden_size, elementwise_affine=False,
eps=1e-6)``); shift and scale are (N, D), one row per sample, produced from the conditioning
(``modulate(x, shift, scale) = x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)`` in
facebookresearch/DiT's models.py). So adaLN is the generic normalization over the last axis with
a per-sample affine: weight 1 + scale and bias shift, each of shape (N, 1, D) in the view; its
gradients are dx, dscale = sum over T of dy * x̂ and dshift = sum over T of dy.

A case keeps scale in ``Problem.weight`` and shift in ``Problem.bias`` (the reference adds the 1,
``normcheck.reference.scale``), so tolerances, inputs and the plain-op diagnosis treat them as the
case's affine parameters; reports name their gradients ``grad_scale`` and ``grad_shift``
(``check_label``).

``modulated`` is the closed form written out on its own (not through ``Normalization``), with the
knobs the diagnosis turns: the 1 + left out, the modulation broadcast per token instead of per
sample, and an affine layer norm's weight and bias left in before the modulation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from normcheck.dtypes import quantize
from normcheck.ops._generic import Normalization
from normcheck.ops._op import Op, OpParams, fmt_shape

ADALN = "adaln"
DIT_EPS = 1e-6  # DiT's nn.LayerNorm(..., elementwise_affine=False, eps=1e-6)
# Internal marker (OpParams.variant) of an adaLN case whose weight already holds 1 + scale: the
# plain-op form the diagnosis reduces a case to (normcheck.diagnosis.variants); never planned.
PREMODULATED = "premodulated"
# adaLN's affine parameters are scale and shift: the reports' names for their gradients
CHECK_LABELS = {"grad_weight": "grad_scale", "grad_bias": "grad_shift"}
SAMPLE, TOKEN = "sample", "token"


class AdaptiveLayerNorm(Op):
    """Layer norm over the last axis of (N, T, D), modulated per sample by (N, D) shift and scale."""

    def normalization(self, shape: tuple[int, ...], params: OpParams) -> Normalization:
        n, _, d = shape
        return Normalization(view=tuple(shape), axes=(2,), param_view=(n, 1, d), center=True)

    def param_shape(self, shape: tuple[int, ...], params: OpParams) -> tuple[int, ...]:
        return (shape[0], shape[2])

    def has_bias(self, params: OpParams) -> bool:
        return True  # the shift

    def validate(self, shape: tuple[int, ...], params: OpParams) -> str | None:
        problem = super().validate(shape, params)
        if problem is not None:
            return problem
        if params.normalized_ndim is not None or params.axes is not None or params.groups is not None:
            return f"{self.title} normalizes the last axis (D) of (N, T, D) input, got params {params.label()}"
        if params.running_stats:
            return f"{self.title} keeps no running statistics"
        if not params.affine:
            return f"{self.title} always has its shift and scale"
        return None

    def default_cases(self) -> list[tuple[tuple[int, ...], OpParams]]:
        grid = [
            (2, 5, 33),  # odd width
            (1, 7, 24),  # one sample
            (4, 4, 16),  # N == T: a modulation broadcast per token runs (and is wrong) instead of raising
            (3, 3, 8),  # N == T again, a small width
            (2, 16, 64),
            (3, 1, 12),  # one token per sample
        ]
        return [(shape, OpParams()) for shape in grid]

    def cases_for_shape(
        self, shape: tuple[int, ...], groups: list[int] | None, normalized_ndim: list[int] | None
    ) -> list[OpParams]:
        return [OpParams()]


OP = AdaptiveLayerNorm(name=ADALN, title="adaptive layer norm", min_ndim=3, max_ndim=3)


def check_label(op: str, check: str) -> str:
    """The name a report gives ``check`` of an ``op`` case (adaLN's scale and shift gradients)."""
    return CHECK_LABELS.get(check, check) if op == ADALN else check


@dataclass(frozen=True)
class AdaLNGrads:
    """Gradients of adaLN: of x, and of shift and scale in the shape they were given."""

    dx: np.ndarray
    dshift: np.ndarray
    dscale: np.ndarray


def _check(x: np.ndarray, shift: np.ndarray, scale: np.ndarray, broadcast: str) -> None:
    if x.ndim != 3:
        raise ValueError(f"adaptive layer norm takes (N, T, D) input, got shape {fmt_shape(x.shape)}")
    n, t, d = x.shape
    want = (n, d) if broadcast == SAMPLE else (t, d)
    for name, a in (("shift", shift), ("scale", scale)):
        if a.shape != want:
            raise ValueError(f"{name} of shape {fmt_shape(a.shape)} does not broadcast as {fmt_shape(want)}")


def _expand(a: np.ndarray, broadcast: str) -> np.ndarray:
    return a[:, None, :] if broadcast == SAMPLE else a[None, :, :]


def modulated(
    x: np.ndarray,
    shift: np.ndarray,
    scale: np.ndarray,
    eps: float = DIT_EPS,
    dy: np.ndarray | None = None,
    offset: bool = True,
    broadcast: str = SAMPLE,
    inner: tuple[np.ndarray, np.ndarray] | None = None,
    dtype: type = np.float64,
) -> tuple[np.ndarray, AdaLNGrads | None]:
    """(y, gradients for ``dy``) of z * (1 + scale) + shift, computed in ``dtype`` (float64 by
    default; results as float64), z = LN(x) over the last axis (two-pass variance), z = LN(x) * w + b
    with ``inner`` = (w, b) of shape (D,).

    ``offset`` False multiplies by scale itself; ``broadcast`` TOKEN takes shift and scale as (T, D),
    one row per token (``scale`` of shape (N, D) with N == T broadcast against (N, T, D) without the
    unsqueeze). The gradients of shift and scale have their given shapes.
    """
    x = np.asarray(x, dtype=dtype)
    shift = np.asarray(shift, dtype=dtype)
    scale = np.asarray(scale, dtype=dtype)
    _check(x, shift, scale, broadcast)
    mean = x.mean(axis=-1, keepdims=True, dtype=dtype)
    centered = x - mean
    rstd = dtype(1.0) / np.sqrt((centered * centered).mean(axis=-1, keepdims=True, dtype=dtype) + dtype(eps))
    xhat = centered * rstd
    w: np.ndarray = np.ones(x.shape[-1], dtype=dtype) if inner is None else np.asarray(inner[0], dtype=dtype)
    b: np.ndarray = np.zeros(x.shape[-1], dtype=dtype) if inner is None else np.asarray(inner[1], dtype=dtype)
    z = xhat * w + b
    factor = _expand(scale, broadcast) + dtype(1.0 if offset else 0.0)
    y = z * factor + _expand(shift, broadcast)
    if dy is None:
        return y.astype(np.float64), None
    g: np.ndarray = np.asarray(dy, dtype=dtype)
    summed = 1 if broadcast == SAMPLE else 0
    dxhat = g * factor * w
    dx = rstd * (
        dxhat
        - dxhat.mean(axis=-1, keepdims=True, dtype=dtype)
        - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True, dtype=dtype)
    )
    grads = AdaLNGrads(
        dx.astype(np.float64),
        g.sum(axis=summed, dtype=dtype).astype(np.float64),
        (g * z).sum(axis=summed).astype(np.float64),
    )
    return y.astype(np.float64), grads


def adaptive_layer_norm(x: np.ndarray, shift: np.ndarray, scale: np.ndarray, eps: float = DIT_EPS) -> np.ndarray:
    """adaLN forward in float64, as DiT computes it. ValueError for shapes it cannot take."""
    return modulated(x, shift, scale, eps)[0]


def adaptive_layer_norm_backward(
    dy: np.ndarray, x: np.ndarray, shift: np.ndarray, scale: np.ndarray, eps: float = DIT_EPS
) -> AdaLNGrads:
    """adaLN's closed-form gradients in float64: dx, dshift (N, D), dscale (N, D)."""
    grads = modulated(x, shift, scale, eps, dy=dy)[1]
    if grads is None:  # modulated returns gradients whenever dy is given
        raise ValueError("no gradients computed")
    return grads


def stray_affine(width: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """The values normcheck puts in a module's own (D,) weight and bias on an adaLN case: adaLN's
    layer norm has none (DiT's is elementwise_affine=False), so parameters found there are an
    affine layer norm left in. Left at 1 and 0 they would change nothing; trained ones do, so they
    get these values (the same for every case of a width and dtype; exact in ``dtype``)."""
    rng = np.random.default_rng(20240615 + width)
    weight = quantize(1.0 + 0.5 * rng.standard_normal(width), dtype)
    bias = quantize(0.5 * rng.standard_normal(width), dtype)
    return weight, bias


__all__ = [
    "ADALN",
    "DIT_EPS",
    "OP",
    "PREMODULATED",
    "AdaLNGrads",
    "adaptive_layer_norm",
    "adaptive_layer_norm_backward",
    "check_label",
    "modulated",
    "stray_affine",
]
