"""The normalization formula with the mistakes people make switched on one at a time.

This is not the reference (normcheck.ops is): it is a second, knob-laden float64 model whose
only job is to predict what a *mistaken* implementation outputs, forward and backward, so a
failure can be explained by reproducing it. With no knob set it equals the reference
(tests/diagnosis/test_model.py checks that), so a hypothesis that reproduces a failure differs
from correct code by its knob alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from normcheck.ops import OPS
from normcheck.ops._op import broadcast_channels, required
from normcheck.problem import Problem

AFFINE_RIGHT, AFFINE_ORDER, AFFINE_SWAPPED = "right", "order", "swapped"


@dataclass(frozen=True)
class Variant:
    """One way of computing the op. Defaults: the correct formula."""

    axes: tuple[int, ...] | None = None  # statistics axes in the op's view; None: the op's own
    interleaved: bool = False  # group norm: channel c in group c % G
    correction: bool = False  # variance * n / (n - 1)
    eps: float | None = None  # None: the problem's eps
    eps_outside: bool = False  # 1 / (sqrt(var) + eps)
    center: bool | None = None  # subtract the mean; None: as the op does
    affine: str = AFFINE_RIGHT  # AFFINE_ORDER: (xhat + b) * w; AFFINE_SWAPPED: xhat * b + w
    cut: str | None = None  # "mean", "variance" or "both": no gradient flows through it
    var: np.ndarray | None = None  # the variance used (fitted from an output); None: computed
    # x / sqrt(Var[x] + eps): the variance about the mean, but x itself (not x - mean) scaled by it
    # (Keras's LayerNormalization(rms_scaling=True), taken for RMS norm)
    uncentered_numerator: bool = False


def interleave_order(channels: int, groups: int) -> np.ndarray:
    """Channel order that makes interleaved groups (c % G) contiguous runs."""
    return np.arange(channels).reshape(channels // groups, groups).T.reshape(-1)


def outputs(
    problem: Problem, v: Variant, running: tuple[np.ndarray, np.ndarray] | None = None, dtype: type = np.float64
) -> dict[str, np.ndarray]:
    """forward, grad_input, grad_weight, grad_bias of ``problem`` under ``v``, computed in ``dtype``
    (float64 predicts; a lower precision measures how ill-conditioned the mistaken formula is).

    ``running`` (mean, var) are the statistics evaluation mode normalizes with.
    """
    params = problem.params
    norm = OPS[problem.op].normalization(problem.shape, params)
    order = interleave_order(problem.shape[1], required(params.groups, "groups")) if v.interleaved else None
    X, G, W, B = in_view(problem, order, norm.view, norm.param_view, dtype)
    axes = norm.axes if v.axes is None else v.axes
    center = norm.center if v.center is None else v.center
    eps = problem.eps if v.eps is None else v.eps
    fixed = running if running is not None and params.running_stats and params.mode == "eval" else None
    n = int(np.prod([norm.view[a] for a in axes]))
    with np.errstate(all="ignore"):
        statistics_centered = center or v.uncentered_numerator
        d, var = _centered_and_variance(
            X, axes, statistics_centered, v, fixed, len(problem.shape), problem.shape[1], dtype
        )
        numerator = X if v.uncentered_numerator else d
        c = dtype(n / (n - 1) if v.correction and n > 1 else 1.0)
        r, dr = _inverse_std(var * c, eps, v.eps_outside)
        xhat = numerator * r
        y, scale = _affine(xhat, W, B, v.affine)
        dxhat = G * scale if scale is not None else G
        if fixed is not None:
            dx = dxhat * r
        else:
            k = 0.0 if v.cut in ("variance", "both") else (dxhat * numerator).sum(axis=axes, keepdims=True) * dr
            # d Var/dx_j = 2 d_j / n holds with the mean's own gradient (the d sum to 0); only a
            # centered numerator takes the mean's gradient again
            dd = dxhat * r + (2.0 * c / n) * k * d
            subtract = center and not v.uncentered_numerator and v.cut not in ("mean", "both")
            dx = dd - dd.mean(axis=axes, keepdims=True) if subtract else dd
        out = {
            "forward": y.reshape(problem.shape).astype(np.float64),
            "grad_input": dx.reshape(problem.shape).astype(np.float64),
        }
        out.update(_param_grads(G, xhat, W, B, v.affine, norm.param_view, problem))
    return out if order is None else _original_order(out, order)


def in_view(
    problem: Problem, order: np.ndarray | None, view: tuple[int, ...], pview: tuple[int, ...], dtype: type
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """x, dy, weight and bias in the op's view and ``dtype``, channels in ``order`` if given."""
    x, dy, w, b = problem.x, problem.dy, problem.weight, problem.bias
    if order is not None:
        x, dy = x[:, order], dy[:, order]
        # per-channel parameters follow their channels; per-group ones (ONNX GroupNormalization-18,
        # one a group) stay: the k-th group, whichever channels it holds, takes the k-th value
        w = w if w is None or w.size != len(order) else w[order]
        b = b if b is None or b.size != len(order) else b[order]
    X: np.ndarray = np.asarray(x, dtype=dtype).reshape(view)
    G: np.ndarray = np.asarray(dy, dtype=dtype).reshape(view)
    W: np.ndarray | None = None if w is None else np.asarray(w, dtype=dtype).reshape(pview)
    B: np.ndarray | None = None if b is None else np.asarray(b, dtype=dtype).reshape(pview)
    return X, G, W, B


def _centered_and_variance(
    X: np.ndarray,
    axes: tuple[int, ...],
    center: bool,
    v: Variant,
    fixed: tuple[np.ndarray, np.ndarray] | None,
    ndim: int,
    channels: int,
    dtype: type,
) -> tuple[np.ndarray, np.ndarray]:
    """x minus the mean it is normalized with, and the variance (the running ones when ``fixed``)."""
    if fixed is not None:
        bshape = broadcast_channels(ndim, channels)
        mean: np.ndarray = np.asarray(fixed[0], dtype=dtype).reshape(bshape)
        var: np.ndarray = np.asarray(fixed[1], dtype=dtype).reshape(bshape)
        return X - mean, var
    mean = X.mean(axis=axes, keepdims=True) if center else np.zeros((1,) * X.ndim, dtype=dtype)
    d = X - mean
    var = (d * d).mean(axis=axes, keepdims=True) if v.var is None else np.asarray(v.var, dtype=dtype)
    return d, var


def _inverse_std(var: np.ndarray, eps: float, eps_outside: bool) -> tuple[np.ndarray, np.ndarray]:
    """1 / std and its derivative with respect to the variance."""
    if eps_outside:
        root = np.sqrt(var)
        r = 1.0 / (root + eps)
        return r, -r * r / (2.0 * root)
    r = 1.0 / np.sqrt(var + eps)
    return r, -0.5 * r**3


def _affine(
    xhat: np.ndarray, W: np.ndarray | None, B: np.ndarray | None, affine: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """The output and the factor the upstream gradient is scaled by on its way to xhat."""
    scale, shift = (B, W) if affine == AFFINE_SWAPPED else (W, B)
    if affine == AFFINE_ORDER and W is not None and B is not None:
        return (xhat + B) * W, scale
    y = xhat * scale if scale is not None else xhat.copy()
    return (y + shift if shift is not None else y), scale


def _param_grads(
    G: np.ndarray,
    xhat: np.ndarray,
    W: np.ndarray | None,
    B: np.ndarray | None,
    affine: str,
    pview: tuple[int, ...],
    problem: Problem,
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    if W is not None and problem.weight is not None:  # W is problem.weight in the op's view
        wsum = {AFFINE_ORDER: G * (xhat + B) if B is not None else G * xhat, AFFINE_SWAPPED: G}.get(affine, G * xhat)
        out["grad_weight"] = reduce_to_param(wsum, pview, np.shape(problem.weight)).astype(np.float64)
    if B is not None and problem.bias is not None:  # B is problem.bias in the op's view
        bsum = {AFFINE_ORDER: G * W if W is not None else G, AFFINE_SWAPPED: G * xhat}.get(affine, G)
        out["grad_bias"] = reduce_to_param(bsum, pview, np.shape(problem.bias)).astype(np.float64)
    return out


def _original_order(out: dict[str, np.ndarray], order: np.ndarray) -> dict[str, np.ndarray]:
    back = np.argsort(order)
    for check in ("forward", "grad_input"):
        out[check] = out[check][:, back]
    for check in ("grad_weight", "grad_bias"):
        if check in out and out[check].size == len(order):  # per-group ones keep their order
            out[check] = out[check][back]
    return out


def reduce_to_param(a: np.ndarray, pview: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    axes = tuple(i for i, s in enumerate(pview) if s == 1 and a.shape[i] != 1)
    return a.sum(axis=axes).reshape(shape)


def fitted_variance(problem: Problem, forward: np.ndarray) -> np.ndarray | None:
    """The variance an implementation normalized with, read back from its forward output: per
    group, the least-squares r in y = (x - mean) * r * w + b gives var = 1 / r^2 - eps."""
    params = problem.params
    if params.running_stats and params.mode == "eval":
        return None
    norm = OPS[problem.op].normalization(problem.shape, params)
    if not norm.center:
        return None
    X = np.asarray(problem.x, dtype=np.float64).reshape(norm.view)
    Y = np.asarray(forward, dtype=np.float64).reshape(norm.view)
    with np.errstate(all="ignore"):
        z = Y
        if problem.bias is not None:
            z = z - np.asarray(problem.bias).reshape(norm.param_view)
        if problem.weight is not None:
            w = np.asarray(problem.weight).reshape(norm.param_view)
            z = np.where(w != 0, z / w, np.nan)
        d = X - X.mean(axis=norm.axes, keepdims=True)
        ok = np.isfinite(z)
        r = np.where(ok, z * d, 0).sum(axis=norm.axes, keepdims=True) / np.where(ok, d * d, 0).sum(
            axis=norm.axes, keepdims=True
        )
        var = 1.0 / (r * r) - problem.eps
    return np.where(np.isfinite(var), np.maximum(var, 0.0), np.nan)


def fitted_variance_from_gradient(problem: Problem, grad_input: np.ndarray) -> np.ndarray:
    """The variance an implementation used on constant groups (x - mean = 0, so the output is the
    bias whatever the variance), read back from its input gradient: there dx = r * (dxhat -
    mean(dxhat)), so the least-squares r gives var = 1 / r^2 - eps. NaN for other groups."""
    norm = OPS[problem.op].normalization(problem.shape, problem.params)
    X = np.asarray(problem.x, dtype=np.float64).reshape(norm.view)
    G = np.asarray(problem.dy, dtype=np.float64).reshape(norm.view)
    dx = np.asarray(grad_input, dtype=np.float64).reshape(norm.view)
    with np.errstate(all="ignore"):
        if problem.weight is not None:
            G = G * np.asarray(problem.weight).reshape(norm.param_view)
        z = G - G.mean(axis=norm.axes, keepdims=True)
        r = (dx * z).sum(axis=norm.axes, keepdims=True) / (z * z).sum(axis=norm.axes, keepdims=True)
        var = 1.0 / (r * r) - problem.eps
        constant = np.ptp(X, axis=norm.axes, keepdims=True) == 0
    return np.where(constant & np.isfinite(var), np.maximum(var, 0.0), np.nan)
