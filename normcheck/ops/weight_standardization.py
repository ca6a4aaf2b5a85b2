"""Weight Standardization: a 2-D convolution whose weight is standardized per output channel.

W of shape (O, I, kh, kw) becomes Ŵ = (W - mean) / sqrt(var + eps), the mean and the population
(biased) variance taken over (I, kh, kw) for each output channel, and y = conv2d(x, Ŵ) + bias
(NCHW input, stride 1, zero padding). This is timm's ``StdConv2d`` (``F.batch_norm`` over the
weight viewed as (1, O, I*kh*kw): biased variance, eps inside the square root, eps 1e-6) and
BiT's (``torch.var_mean(unbiased=False)``, ``sqrt(v + 1e-10)``). The paper's own code
(joe-siyuan-qiao/WeightStandardization, PyTorch) divides by ``w.std(dim=1) + 1e-5``: the
Bessel-corrected std with eps added to it; that convention is the ``paper`` variant here.

``ws_gn`` follows the convolution with group norm and its affine over the O output channels
(GN+WS, as in BiT's ResNet-v2 blocks); its group norm's eps is PyTorch's default, ``GN_EPS``.

Gradients: the convolution's (dx: the transposed convolution of dy with Ŵ; dŴ: the correlation
of dy with x; dbias: dy summed) and, through the standardization, the usual normalization
backward applied to dŴ: dW = r * (dŴ - mean(dŴ) - Ŵ * mean(dŴ * Ŵ)), r = 1/sqrt(var + eps).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from normcheck.dtypes import quantize
from normcheck.ops._generic import Normalization
from normcheck.ops._op import Op, OpParams, divisors, fmt_shape
from normcheck.ops.group_norm import OP as GROUP_NORM

WS, WS_GN = "ws", "ws_gn"
WS_OPS = (WS, WS_GN)
PAPER = "paper"  # the paper's original code: w.std(dim=1) (Bessel-corrected) + eps, eps outside the root
GN_EPS = 1e-5  # ws_gn's group norm: torch.nn.GroupNorm's default, what BiT's and timm's GN+WS blocks use
# what an implementation declares (Implementation.extensions) to be run on a ws or ws_gn case
WEIGHT_STANDARDIZATION = "weight_standardization"
WEIGHT_AXES = (1, 2, 3)  # (I, kh, kw) of the (O, I, kh, kw) weight: the reference's statistics


@dataclass(frozen=True)
class Standardization:
    """How the weight is standardized: the reference's way by default; the other settings are the
    paper's convention and the mistakes the diagnosis re-runs.

    ``axes``: the weight's axes the statistics run over ((1, 2, 3): per output channel).
    ``unbiased``: the variance divided by n - 1. ``eps_outside``: (W - mean) / (sqrt(var) + eps).
    ``eps``: an eps in place of the case's (None: the case's). ``center``: the mean subtracted.
    ``cut``: no gradient through "mean", "variance" or "both" (detached statistics).
    ``off``: no standardization at all (a plain convolution).
    ``rounding``: a dtype name the mean and 1/std are rounded to before they are applied (and
    saved for the backward), as PyTorch's CPU ``batch_norm`` kernel does for half inputs;
    ``elementwise``: the variance rounded to it too and every elementwise step computed in it
    (``torch.var_mean`` on a half weight, then ``(w - m) / torch.sqrt(v + eps)`` in half).
    """

    axes: tuple[int, ...] = WEIGHT_AXES
    unbiased: bool = False
    eps_outside: bool = False
    eps: float | None = None
    center: bool = True
    cut: str | None = None
    off: bool = False
    rounding: str | None = None
    elementwise: bool = False


REFERENCE = Standardization()
PAPER_CONVENTION = Standardization(unbiased=True, eps_outside=True)


def convention(variant: str | None) -> Standardization:
    """The standardization a case of ``variant`` is checked against."""
    return PAPER_CONVENTION if variant == PAPER else REFERENCE


@dataclass(frozen=True)
class StdCache:
    """What the standardization's backward needs from its forward."""

    centered: np.ndarray  # W - mean (W itself when not centered)
    what: np.ndarray  # the standardized weight
    scale: np.ndarray  # Ŵ = centered * scale: 1/sqrt(var + eps), or 1/(std + eps)
    std: np.ndarray  # sqrt of the variance used (for eps outside the root)
    count: int  # values each statistic runs over
    denominator: float  # n, or n - 1 when unbiased
    how: Standardization
    eps: float


def standardize(
    w: np.ndarray, eps: float, how: Standardization = REFERENCE, dtype: type = np.float64, mean_ulps: int = 0
) -> tuple[np.ndarray, StdCache]:
    """Ŵ in ``dtype`` (two-pass statistics); ``mean_ulps`` nudges the mean by that many ulps of
    ``dtype``, a rounding a correct implementation may make."""
    v: np.ndarray = np.asarray(w, dtype=dtype)
    eps = float(how.eps if how.eps is not None else eps)
    count = int(np.prod([v.shape[a] for a in how.axes], dtype=np.int64))
    denominator = float(count - 1 if how.unbiased else count)
    if how.off:
        one: np.ndarray = np.ones((1,) * v.ndim, dtype=dtype)
        return v.copy(), StdCache(v, v.copy(), one, one, count, denominator, how, eps)
    if how.center:
        mean = v.mean(axis=how.axes, keepdims=True, dtype=dtype)
        if mean_ulps:
            mean = mean + dtype(mean_ulps) * np.spacing(mean)
        centered = v - mean
    else:
        mean, centered = np.zeros((1,) * v.ndim, dtype=dtype), v
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        var = (centered * centered).sum(axis=how.axes, keepdims=True, dtype=dtype) / dtype(denominator)
        if how.rounding is not None:
            return _rounded(v, mean, var, eps, how, count, denominator, dtype)
        std = np.sqrt(var)
        scale = dtype(1.0) / (std + dtype(eps)) if how.eps_outside else dtype(1.0) / np.sqrt(var + dtype(eps))
    what = centered * scale
    return what, StdCache(centered, what, scale, std, count, denominator, how, eps)


def _rounded(
    v: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    eps: float,
    how: Standardization,
    count: int,
    denominator: float,
    dtype: type,
) -> tuple[np.ndarray, StdCache]:
    """``standardize`` with the statistics (and with ``elementwise`` every step) rounded to
    ``how.rounding``; the backward reuses the rounded values, as a kernel saving them does."""
    rounding = how.rounding or "float64"

    def q(a: np.ndarray) -> np.ndarray:
        return quantize(a, rounding).astype(dtype)

    m = q(mean)
    if how.elementwise:
        centered = q(v - m)
        std = q(np.sqrt(q(q(var) + dtype(eps))))
        scale = dtype(1.0) / std
        what = q(centered / std)
    else:  # PyTorch's half batch_norm backward reproduces this exactly: (w - m_h) * r_h, unrounded
        centered = v - m
        std = np.sqrt(var)
        scale = q(dtype(1.0) / np.sqrt(var + dtype(eps)))
        what = centered * scale
    return what, StdCache(centered, what, scale, std, count, denominator, how, eps)


def standardize_backward(dwhat: np.ndarray, cache: StdCache, dtype: type = np.float64) -> np.ndarray:
    """dW for the upstream gradient dŴ.

    With c = W - mean and v = sum(c^2) / d (d = n, or n - 1): Ŵ = c * f(v), f = (v + eps)^-1/2, or
    1/(sqrt(v) + eps) with eps outside; dc = f * dŴ + 2 f'(v) * sum(dŴ * c) * c / d, and the mean's
    gradient subtracts the mean of dc. With eps outside the root the std has no derivative where
    a row is constant (v = 0); there its term is 0, the subgradient PyTorch's std backward takes.
    """
    how = cache.how
    g: np.ndarray = np.asarray(dwhat, dtype=dtype)
    if how.off:
        return g.copy()
    if how.rounding is not None and not how.elementwise:
        # a batch-norm kernel's closed form, r * (g - mean(g) - xhat * mean(g * xhat)), on its
        # rounded mean and r: xhat = (w - m) * r no longer sums to 0, so this is not the
        # projection below (PyTorch's half batch_norm backward, reproduced exactly)
        xhat = cache.centered * cache.scale
        inner = (g * xhat).mean(axis=how.axes, keepdims=True, dtype=dtype)
        return cache.scale * (g - g.mean(axis=how.axes, keepdims=True, dtype=dtype) - xhat * inner)
    dc = g * cache.scale
    if how.cut not in ("variance", "both"):
        dot = (g * cache.centered).sum(axis=how.axes, keepdims=True, dtype=dtype)
        with np.errstate(divide="ignore", invalid="ignore"):
            if how.eps_outside:  # f'(v) = -f^2 / (2 sqrt(v)); 0 where v = 0, as PyTorch's std backward
                slope = np.where(cache.std > 0, -(cache.scale * cache.scale) / (dtype(2.0) * cache.std), dtype(0.0))
            else:  # f'(v) = -f^3 / 2
                slope = -(cache.scale * cache.scale * cache.scale) / dtype(2.0)
            dc = dc + (dtype(2.0) / dtype(cache.denominator)) * slope * dot * cache.centered
    if how.center and how.cut not in ("mean", "both"):
        dc = dc - dc.mean(axis=how.axes, keepdims=True, dtype=dtype)
    return dc


# -- the convolution ----------------------------------------------------------------------


def _windows(x: np.ndarray, k: int, padding: int) -> np.ndarray:
    """im2col: (N*H'*W', I*k*k) rows, each the k x k window of every input channel."""
    n, c = x.shape[:2]
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    view = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))  # N, I, H', W', k, k
    ho, wo = view.shape[2], view.shape[3]
    return np.ascontiguousarray(view.transpose(0, 2, 3, 1, 4, 5)).reshape(n * ho * wo, c * k * k)


def output_hw(shape: tuple[int, ...], kernel: int, padding: int) -> tuple[int, int]:
    return shape[2] + 2 * padding - kernel + 1, shape[3] + 2 * padding - kernel + 1


def conv2d(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None = None,
    padding: int = 0,
    dtype: type = np.float64,
    by_tap: bool = False,
) -> np.ndarray:
    """Cross-correlation, stride 1, zero padding, as ``torch.nn.functional.conv2d``, in ``dtype``.

    ``by_tap`` sums in another order, one kernel position at a time (the same math, other
    roundings: the witness uses it to see how far correct kernels' orders may land apart)."""
    xa: np.ndarray = np.asarray(x, dtype=dtype)
    wa: np.ndarray = np.asarray(w, dtype=dtype)
    o, _, k, _ = wa.shape
    ho, wo = output_hw(xa.shape, k, padding)
    if by_tap:
        xp = np.pad(xa, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        y: np.ndarray = np.zeros((xa.shape[0], o, ho, wo), dtype=dtype)
        for a in range(k):
            for b in range(k):
                y += np.einsum("nihw,oi->nohw", xp[:, :, a : a + ho, b : b + wo], wa[:, :, a, b])
    else:
        y = _windows(xa, k, padding) @ wa.reshape(o, -1).T
        y = np.ascontiguousarray(y.reshape(xa.shape[0], ho, wo, o).transpose(0, 3, 1, 2))
    if bias is not None:
        y += np.asarray(bias, dtype=dtype).reshape(1, o, 1, 1)
    return y


def conv2d_backward(
    dy: np.ndarray, x: np.ndarray, w: np.ndarray, padding: int = 0, dtype: type = np.float64, by_tap: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dw, dbias) of ``conv2d`` for the upstream gradient ``dy``, in ``dtype`` (``by_tap``:
    as in ``conv2d``)."""
    xa: np.ndarray = np.asarray(x, dtype=dtype)
    wa: np.ndarray = np.asarray(w, dtype=dtype)
    g: np.ndarray = np.asarray(dy, dtype=dtype)
    n, c, h, wd = xa.shape
    o, _, k, _ = wa.shape
    ho, wo = g.shape[2], g.shape[3]
    if by_tap:
        xp = np.pad(xa, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        dxp = np.zeros_like(xp)
        dw = np.zeros_like(wa)
        for a in range(k):
            for b in range(k):
                window = xp[:, :, a : a + ho, b : b + wo]
                dw[:, :, a, b] = np.einsum("nohw,nihw->oi", g, window)
                dxp[:, :, a : a + ho, b : b + wo] += np.einsum("nohw,oi->nihw", g, wa[:, :, a, b])
        dx = dxp[:, :, padding : padding + h, padding : padding + wd]
        return np.ascontiguousarray(dx), dw, g.sum(axis=(0, 2, 3), dtype=dtype)
    rows = np.ascontiguousarray(g.transpose(0, 2, 3, 1)).reshape(-1, o)  # N*H'*W', O
    dw = (rows.T @ _windows(xa, k, padding)).reshape(wa.shape)
    cols = (rows @ wa.reshape(o, -1)).reshape(n, ho, wo, c, k, k)
    dxp = np.zeros((n, c, h + 2 * padding, wd + 2 * padding), dtype=dtype)
    for a in range(k):
        for b in range(k):
            dxp[:, :, a : a + ho, b : b + wo] += cols[:, :, :, :, a, b].transpose(0, 3, 1, 2)
    dx = dxp[:, :, padding : padding + h, padding : padding + wd]
    return np.ascontiguousarray(dx), dw, g.sum(axis=(0, 2, 3), dtype=dtype)


# -- the public functions -----------------------------------------------------------------


@dataclass(frozen=True)
class WSGrads:
    """Gradients of a weight-standardized convolution (and of its group norm, for GN+WS)."""

    dx: np.ndarray
    dweight: np.ndarray
    dbias: np.ndarray | None
    dgn_weight: np.ndarray | None = None
    dgn_bias: np.ndarray | None = None


def _checked(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, padding: int) -> None:
    """ValueError where ``torch.nn.functional.conv2d`` raises (or the standardization cannot run)."""
    xs, ws = np.shape(x), np.shape(weight)
    if len(xs) != 4 or len(ws) != 4:
        raise ValueError(f"expected a 4-D input and a 4-D weight, got {list(xs)} and {list(ws)}")
    if ws[1] != xs[1]:
        raise ValueError(f"weight of shape {list(ws)} expects {ws[1]} input channels, got input of shape {list(xs)}")
    if ws[2] != ws[3]:
        raise ValueError(f"only square kernels are modelled, got weight of shape {list(ws)}")
    if padding < 0 or min(output_hw(xs, ws[2], padding)) < 1:
        raise ValueError(f"kernel {ws[2]} with padding {padding} does not fit input of shape {list(xs)}")
    if bias is not None and np.shape(bias) != (ws[0],):
        raise ValueError(f"bias of shape {list(np.shape(bias))} does not match {ws[0]} output channels")


def ws_conv2d(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    padding: int = 0,
    eps: float = 1e-6,
    unbiased: bool = False,
    eps_outside: bool = False,
) -> np.ndarray:
    """conv2d(x, Ŵ) + bias in float64; ``unbiased`` and ``eps_outside`` give the paper's convention."""
    _checked(x, weight, bias, padding)
    what, _ = standardize(weight, eps, Standardization(unbiased=unbiased, eps_outside=eps_outside))
    return conv2d(x, what, bias, padding)


def ws_conv2d_backward(
    dy: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    padding: int = 0,
    eps: float = 1e-6,
    unbiased: bool = False,
    eps_outside: bool = False,
) -> WSGrads:
    _checked(x, weight, bias, padding)
    what, cache = standardize(weight, eps, Standardization(unbiased=unbiased, eps_outside=eps_outside))
    dx, dwhat, db = conv2d_backward(dy, x, what, padding)
    return WSGrads(dx, standardize_backward(dwhat, cache), db if bias is not None else None)


def ws_gn(
    x: np.ndarray,
    weight: np.ndarray,
    groups: int,
    gn_weight: np.ndarray | None = None,
    gn_bias: np.ndarray | None = None,
    padding: int = 0,
    eps: float = 1e-6,
    gn_eps: float = GN_EPS,
) -> np.ndarray:
    """group_norm(conv2d(x, Ŵ), groups, gn_weight, gn_bias) in float64 (GN+WS; no conv bias)."""
    _checked(x, weight, None, padding)
    what, _ = standardize(weight, eps)
    y = conv2d(x, what, None, padding)
    return _gn(y.shape, groups).forward(y, gn_eps, gn_weight, gn_bias)[0]


def ws_gn_backward(
    dy: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray,
    groups: int,
    gn_weight: np.ndarray | None = None,
    gn_bias: np.ndarray | None = None,
    padding: int = 0,
    eps: float = 1e-6,
    gn_eps: float = GN_EPS,
) -> WSGrads:
    _checked(x, weight, None, padding)
    what, cache = standardize(weight, eps)
    y = conv2d(x, what, None, padding)
    norm = _gn(y.shape, groups)
    grads = norm.backward(dy, norm.forward(y, gn_eps, gn_weight, gn_bias)[1])
    dx, dwhat, _ = conv2d_backward(grads.dx, x, what, padding)
    return WSGrads(dx, standardize_backward(dwhat, cache), None, grads.dweight, grads.dbias)


def _gn(shape: tuple[int, ...], groups: int) -> Normalization:
    if groups < 1 or shape[1] % groups:
        raise ValueError(f"{shape[1]} output channels are not divisible by {groups} groups")
    return GROUP_NORM.normalization(shape, OpParams(groups=groups))


# -- the ops ------------------------------------------------------------------------------


def conv_of(params: OpParams) -> tuple[int, int, int]:
    """(out_channels, kernel, padding) of a valid case."""
    if params.conv is None:
        raise ValueError("a weight-standardization case needs its convolution (OpParams.conv)")
    return params.conv


def weight_shape(shape: tuple[int, ...], params: OpParams) -> tuple[int, int, int, int]:
    o, k, _ = conv_of(params)
    return (o, shape[1], k, k)


def output_shape(shape: tuple[int, ...], params: OpParams) -> tuple[int, int, int, int]:
    o, k, p = conv_of(params)
    ho, wo = output_hw(shape, k, p)
    return (shape[0], o, ho, wo)


class WeightStandardizedConv(Op):
    """``ws``: conv2d(x, Ŵ) + bias. ``OpParams.affine`` is whether the convolution has a bias."""

    def normalization(self, shape: tuple[int, ...], params: OpParams) -> Normalization:
        """The standardization of the weight viewed as (O, I*kh*kw): per output channel."""
        o, k, _ = conv_of(params)
        return Normalization(view=(o, shape[1] * k * k), axes=(1,), param_view=(o, 1))

    def param_shape(self, shape: tuple[int, ...], params: OpParams) -> tuple[int, ...]:
        return (conv_of(params)[0],)  # the bias (ws_gn: the group norm's weight and bias)

    def variants(self) -> tuple[str, ...]:
        return (PAPER,)

    def validate(self, shape: tuple[int, ...], params: OpParams) -> str | None:
        problem = super().validate(shape, params)
        if problem is not None:
            return problem
        if params.conv is None:
            return f"{self.title}: the case has no convolution (out channels, kernel, padding)"
        o, k, p = params.conv
        if params.running_stats or params.group_affine:
            return f"{self.title} keeps no running statistics and has no per-group affine"
        if o < 1 or k < 1 or p < 0:
            return f"{self.title}: out channels and kernel must be positive, padding not negative: O={o} k={k} p={p}"
        if min(shape) < 1:
            return f"{self.title} needs a non-empty input, got shape {fmt_shape(shape)}"
        if min(output_hw(shape, k, p)) < 1:
            return f"{self.title}: a {k}x{k} kernel with padding {p} does not fit input of shape {fmt_shape(shape)}"
        if shape[1] * k * k < 2:
            return (
                f"{self.title}: each output channel's weight has one value (C={shape[1]}, {k}x{k} kernel), "
                "so its standardized weight is 0 whatever it holds; give C*k*k >= 2"
            )
        return None

    def default_cases(self) -> list[tuple[tuple[int, ...], OpParams]]:
        grid = [
            ((2, 5, 6, 6), (7, 3, 1), True),  # C = 5, not a power of two; 3x3, 'same' padding
            ((1, 6, 5, 5), (4, 1, 0), True),  # batch of 1; 1x1
            ((2, 3, 7, 5), (6, 3, 0), False),  # no padding, non-square input; no bias (timm's and BiT's default)
            ((3, 12, 4, 4), (10, 3, 1), True),  # 108 weights per output channel
            ((2, 1, 6, 6), (3, 3, 1), True),  # one input channel: 9 weights per output channel
        ]
        return [(shape, OpParams(conv=conv, affine=bias)) for shape, conv, bias in grid]

    def cases_for_shape(
        self, shape: tuple[int, ...], groups: list[int] | None, normalized_ndim: list[int] | None
    ) -> list[OpParams]:
        """The user's input (N, C, H, W): C output channels, 3x3 with padding 1 and 1x1, with a bias."""
        c = shape[1] if len(shape) > 1 else 1
        return [OpParams(conv=(c, k, k // 2)) for k in (3, 1)]


class WeightStandardizedConvGN(WeightStandardizedConv):
    """``ws_gn``: group_norm(conv2d(x, Ŵ)) with the group norm's affine; no convolution bias.
    ``OpParams.groups`` is the group norm's G over the O output channels, ``affine`` its affine."""

    def has_bias(self, params: OpParams) -> bool:
        return False  # a bias before group norm: BiT's and timm's GN+WS convolutions have none

    def validate(self, shape: tuple[int, ...], params: OpParams) -> str | None:
        problem = super().validate(shape, params)
        if problem is None:
            o = conv_of(params)[0]
            if params.groups is None or params.groups < 1 or o % params.groups:
                problem = f"{self.title}: O={o} output channels are not divisible by G={params.groups}"
        return problem

    def default_cases(self) -> list[tuple[tuple[int, ...], OpParams]]:
        grid = [
            ((2, 5, 6, 6), (6, 3, 1), [1, 3, 6]),  # G in {1, between, O}; O/G = 2
            ((1, 6, 5, 5), (8, 1, 0), [4]),  # batch of 1; 1x1
            ((2, 4, 7, 5), (6, 3, 0), [2]),  # no padding, non-square; O/G = 3
        ]
        return [(shape, OpParams(conv=conv, groups=g)) for shape, conv, gs in grid for g in gs]

    def cases_for_shape(
        self, shape: tuple[int, ...], groups: list[int] | None, normalized_ndim: list[int] | None
    ) -> list[OpParams]:
        """C output channels, 3x3 (padding 1) and 1x1; G from ``groups``, else 1, C and one between."""
        c = shape[1] if len(shape) > 1 else 1
        if groups:
            gs = groups
        else:
            ds = divisors(max(c, 1))
            gs = sorted({1, ds[len(ds) // 2], max(c, 1)})
        return [replace(p, groups=g) for p in super().cases_for_shape(shape, None, None) for g in gs]


OP = WeightStandardizedConv(name=WS, title="weight-standardized conv", min_ndim=4, max_ndim=4)
OP_GN = WeightStandardizedConvGN(name=WS_GN, title="weight-standardized conv + group norm", min_ndim=4, max_ndim=4)

__all__ = [
    "GN_EPS",
    "OP",
    "OP_GN",
    "PAPER",
    "WEIGHT_STANDARDIZATION",
    "WS_OPS",
    "Standardization",
    "WSGrads",
    "conv2d",
    "conv2d_backward",
    "standardize",
    "standardize_backward",
    "ws_conv2d",
    "ws_conv2d_backward",
    "ws_gn",
    "ws_gn_backward",
]
