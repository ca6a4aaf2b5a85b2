"""The right formula computed with the wrong precision: a simulator of where an implementation
rounds, so precision causes are predicted and re-run like formula mistakes.

A ``Policy`` says which intermediate results an implementation keeps in the input dtype (the
statistics, every elementwise result, the sums' accumulators) and whether it casts the
normalized value back before the weight multiply. ``simulate`` computes the case's outputs
under it, in float32 arithmetic with the named roundings (float64 input under a float32
policy: everything in float32), in one of two operation orders: implementations that round
in the same places still differ by the order they evaluate in, and the two orders bound how
far from the prediction such an implementation may land.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from normcheck.diagnosis.model import in_view, reduce_to_param
from normcheck.dtypes import HALF, quantize, round_float32
from normcheck.ops import OPS, broadcast_channels
from normcheck.problem import Problem

MEAN, VAR, RSTD = "mean", "var", "rstd"
# 0: x̂ = d * rsqrt, the fused kernels' backward; 1: x̂ = d / std, the textbook backward;
# 2: x̂ = d / std, the backward autograd derives from it, step by step.
ORDERS = (0, 1, 2)


@dataclass(frozen=True)
class _Scale:
    rstd: np.ndarray  # 1 / sqrt(var + eps)
    std: np.ndarray  # sqrt(var + eps)


@dataclass(frozen=True)
class Policy:
    """Where the computation rounds to the input dtype. Defaults: nowhere (a correct kernel)."""

    compute: type = np.float32  # the dtype the arithmetic runs in
    stats: frozenset[str] = frozenset()  # statistics rounded to the input dtype once computed
    saved_only: bool = False  # the rounded statistics are the ones saved for the backward only
    elementwise: bool = False  # every elementwise result rounded to the input dtype
    fused_stats: bool = False  # with ``elementwise``: the statistics come from a float32 kernel
    # (torch.var_mean, tf.nn.moments of a half tensor), rounded once, not from rounded steps
    sums: bool = False  # every sum's result rounded to the input dtype (float32 accumulators)
    accumulate: bool = False  # sums accumulate in the input dtype, one rounding per addition
    param_sums: bool = False  # only the weight and bias gradients' sums accumulate so (llm.c#476)
    cast_before_weight: bool = False  # x̂ rounded to the input dtype before the weight multiply
    one_pass: bool = False  # the variance as E[x²] - E[x]² in the compute dtype
    affine_in_input_dtype: bool = False  # only the normalization in ``compute``: x̂ is cast to the
    # input dtype and the affine transform runs there (ONNX GroupNormalization-21's function body)
    folded: bool = False  # tf.nn.batch_normalization's graph: y = x * inv + (offset - mean * inv),
    # inv = rsqrt(var + eps) * scale, differentiated op by op as TensorFlow does
    split_gradient: bool = False  # the input's gradient summed in the input dtype from its direct
    # part and its part through the statistics, each rounded first (two casts of one input)


def simulate(
    problem: Problem, policy: Policy, order: int = 0, running: tuple[np.ndarray, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """forward, grad_input, grad_weight and grad_bias of ``problem`` under ``policy``, rounded to
    the input dtype, as float64. ``running`` (mean, var): the statistics evaluation mode uses."""
    with np.errstate(all="ignore"):
        return _Simulation(problem, policy, order, running).outputs()


class _Simulation:
    def __init__(self, p: Problem, policy: Policy, order: int, running: tuple[np.ndarray, np.ndarray] | None) -> None:
        self.p, self.policy, self.order = p, policy, order
        self.norm = OPS[p.op].normalization(p.shape, p.params)
        c = policy.compute
        self.c = c
        self.X, self.G, self.W, self.B = in_view(p, None, self.norm.view, self.norm.param_view, c)
        evaluating = running is not None and p.params.running_stats and p.params.mode == "eval"
        self.fixed = running if evaluating else None
        rounding = policy.elementwise
        self.ew: Callable[[np.ndarray], np.ndarray] = self.q if rounding else _same
        self.red: Callable[[np.ndarray], np.ndarray] = self.q if rounding or policy.sums else _same

    def q(self, a: np.ndarray) -> np.ndarray:
        """``a`` rounded to the input dtype, kept in the compute dtype."""
        a = np.asarray(a)
        if a.dtype == np.float32 and self.c is np.float32 and self.p.dtype in HALF:
            return round_float32(a, self.p.dtype)
        return quantize(a, self.p.dtype).astype(self.c)

    def mean(self, a: np.ndarray) -> np.ndarray:
        axes = self.norm.axes
        if self.policy.accumulate:
            return self.red(self.q(_sequential_sum(a, axes, self.p.dtype)) / self.c(self.norm.count))
        return self.red(a.mean(axis=axes, keepdims=True, dtype=self.c))

    def sum(self, a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
        if self.policy.accumulate:
            return self.q(_sequential_sum(a, axes, self.p.dtype))
        return self.red(a.sum(axis=axes, keepdims=True, dtype=self.c))

    def param_sum(self, a: np.ndarray) -> np.ndarray:
        """``a`` summed over the axes a parameter is broadcast along."""
        pview = self.norm.param_view
        if self.policy.accumulate or self.policy.param_sums:
            axes = tuple(i for i, n in enumerate(pview) if n == 1 and a.shape[i] != 1)
            return self.q(_sequential_sum(a, axes, self.p.dtype))
        return self.red(reduce_to_param(a, pview, pview))

    def statistics(self) -> tuple[np.ndarray, _Scale, np.ndarray, _Scale]:
        """(mean, scale) the forward normalizes with and (mean, scale) the backward uses. The
        variance is always computed around the computed mean; the policy rounds what is kept."""
        mean: np.ndarray
        if self.fixed is not None:
            bshape = broadcast_channels(len(self.p.shape), self.p.shape[1])
            mean = np.asarray(self.fixed[0], dtype=self.c).reshape(bshape)
            scale = self.scale(np.asarray(self.fixed[1], dtype=self.c).reshape(bshape))
            return mean, scale, mean, scale
        stats = self.policy.stats
        mean = self.mean(self.X) if self.norm.center else np.zeros((1,) * self.X.ndim, dtype=self.c)
        if self.policy.one_pass:
            d = self.ew(self.X - mean)
            var = np.maximum(self.mean(self.ew(self.X * self.X)) - self.ew(mean * mean), self.c(0))
        elif self.policy.fused_stats:
            d = self.X - mean
            var = self.q(np.mean(d * d, axis=self.norm.axes, keepdims=True, dtype=self.c))
        else:
            d = self.ew(self.X - mean)
            var = self.mean(self.ew(d * d))
        kept_mean = self.q(mean) if MEAN in stats else mean
        kept = self.scale(self.q(var) if VAR in stats else var)
        if RSTD in stats:
            rstd = self.q(kept.rstd)
            kept = _Scale(rstd, self.ew(self.c(1) / rstd))
        if self.policy.saved_only:
            return mean, self.scale(var), kept_mean, kept
        return kept_mean, kept, kept_mean, kept

    def scale(self, var: np.ndarray) -> _Scale:
        """1/sqrt(var + eps) and sqrt(var + eps): rsqrt rounded once in order 0; in the others
        the square root rounded, then its inverse."""
        root = np.sqrt(self.ew(var + self.c(self.p.eps)))
        if self.order == 0:
            rstd = self.ew(self.c(1) / root)
            return _Scale(rstd, self.ew(root))
        std = self.ew(root)
        return _Scale(self.ew(self.c(1) / std), std)

    def outputs(self) -> dict[str, np.ndarray]:
        if self.policy.folded and self.fixed is None:
            return self._folded()
        mean, scale, saved_mean, saved = self.statistics()
        d = self.ew(self.X - mean)
        xhat = self.ew(d * scale.rstd) if self.order == 0 else self.ew(d / scale.std)
        y = self.q(xhat) if self.policy.cast_before_weight else xhat
        if self.policy.affine_in_input_dtype:
            y = self._affine_in_input_dtype(y)
        else:
            if self.W is not None:
                y = self.ew(y * self.W)
            if self.B is not None:
                y = self.ew(y + self.B)
        p = self.p
        d_saved = self.ew(self.X - saved_mean)
        xhat_saved = self.ew(d_saved * saved.rstd) if self.order == 0 else self.ew(d_saved / saved.std)
        out = {
            "forward": self._out(y, p.shape),
            "grad_input": self._out(self._grad_input(d_saved, xhat_saved, saved), p.shape),
        }
        if self.W is not None and p.weight is not None:
            out["grad_weight"] = self._out(self.param_sum(self.ew(self.G * xhat_saved)), np.shape(p.weight))
        if self.B is not None and p.bias is not None:
            out["grad_bias"] = self._out(self.param_sum(self.G), np.shape(p.bias))
        return out

    def _grad_input(self, d: np.ndarray, xhat: np.ndarray, scale: _Scale) -> np.ndarray:
        dxhat = self.ew(self.G * self.W) if self.W is not None else self.G
        rstd = scale.rstd
        if self.fixed is not None:
            return self.ew(dxhat * rstd)
        if self.order == 2:
            return self._autograd(dxhat, d, scale.std)
        axes, n = self.norm.axes, self.c(self.norm.count)
        s2 = self.sum(self.ew(dxhat * xhat), axes)
        s1 = self.sum(dxhat, axes) if self.norm.center else None
        if self.policy.split_gradient:
            through = -xhat * (rstd * s2 / n) - (rstd * s1 / n if s1 is not None else 0)
            return self.q(self.q(dxhat * rstd) + self.q(through))
        if self.order == 0:  # rstd / n * (n * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))
            inner = self.ew(n * dxhat)
            if s1 is not None:
                inner = self.ew(inner - s1)
            inner = self.ew(inner - self.ew(xhat * s2))
            return self.ew(self.ew(rstd / n) * inner)
        inner = dxhat  # rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
        if s1 is not None:
            inner = self.ew(inner - self.ew(s1 / n))
        inner = self.ew(inner - self.ew(xhat * self.ew(s2 / n)))
        return self.ew(rstd * inner)

    def _autograd(self, dxhat: np.ndarray, d: np.ndarray, std: np.ndarray) -> np.ndarray:
        """The chain rule step by step, as autograd runs it on (x - mean) / sqrt(var + eps):
        through the square root, whose derivative 1 / (2 std) can overflow float16."""
        axes, n = self.norm.axes, self.c(self.norm.count)
        dstd = -self.sum(self.ew(self.ew(dxhat * d) / self.ew(std * std)), axes)
        dvar = self.ew(dstd / self.ew(self.c(2) * std))
        direct = self.ew(dxhat / std)
        if self.policy.one_pass and self.norm.center:
            # var = E[x²] - E[x]²: x's share 2x/n·dvar and the mean's -2·mean·dvar/n, each large
            # beside their difference when the mean is, computed apart and then cancelling
            mean = self.X.mean(axis=axes, keepdims=True, dtype=self.c)
            from_square = self.ew(self.ew(self.c(2) * self.X / n) * dvar)
            from_mean = self.ew(self.ew(self.c(-2) * mean * dvar) / n)
            dx = self.ew(self.ew(direct + from_square) + from_mean)
            return self.ew(dx - self.ew(self.sum(direct, axes) / n))
        dx = self.ew(direct + self.ew(self.ew(self.c(2) * d / n) * dvar))
        if not self.norm.center:
            return dx
        # the mean's gradient through x - mean only: the variance's dependence on the mean
        # cancels analytically, and autograd of a fused var_mean never forms it
        return self.ew(dx - self.ew(self.sum(direct, axes) / n))

    def _affine_in_input_dtype(self, xhat: np.ndarray) -> np.ndarray:
        pview, p = self.norm.param_view, self.p
        y = quantize(np.asarray(xhat, dtype=np.float64), p.dtype)
        if p.weight is not None:
            y = quantize(y * np.asarray(p.weight, dtype=np.float64).reshape(pview), p.dtype)
        if p.bias is not None:
            y = quantize(y + np.asarray(p.bias, dtype=np.float64).reshape(pview), p.dtype)
        return y

    def _sum_to(self, a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """``a`` summed down to ``shape`` (a broadcast gradient's reduction), rounded as summed."""
        axes = tuple(i for i, n in enumerate(shape) if n == 1 and a.shape[i] != 1)
        if not axes:
            return a
        if self.policy.accumulate:
            return self.q(_sequential_sum(a, axes, self.p.dtype))
        return self.red(a.sum(axis=axes, keepdims=True, dtype=self.c))

    def _folded(self) -> dict[str, np.ndarray]:
        """tf.nn.moments + tf.nn.batch_normalization in the input dtype, every op's result rounded
        to it; with ``fused_stats`` the moments (float16: computed in float32 by tf.nn.moments)
        are rounded once, and so is their gradient on its way back through the cast."""
        c, ew, q, p = self.c, self.ew, self.q, self.p
        X, G, W, B = self.X, self.G, self.W, self.B
        axes, n = self.norm.axes, self.c(self.norm.count)
        if self.policy.fused_stats:
            mean32 = X.mean(axis=axes, keepdims=True, dtype=c)
            var = q(((X - mean32) ** 2).mean(axis=axes, keepdims=True, dtype=c))
            mean = q(mean32)
        else:
            mean = mean32 = self.mean(X)
            var = self.mean(ew(ew(X - mean) ** 2))
        root = np.sqrt(ew(var + c(p.eps)))
        r = ew(c(1) / (root if self.order == 0 else ew(root)))
        inv = ew(r * W) if W is not None else r
        minv = ew(mean * inv)
        t = ew(B - minv) if B is not None else -minv
        y = ew(ew(X * inv) + t)
        g_t = self._sum_to(G, t.shape)
        g_inv = ew(self._sum_to(ew(G * X), inv.shape) - self._sum_to(ew(g_t * mean), inv.shape))
        g_mean = -self._sum_to(ew(g_t * inv), mean.shape)
        g_r = self._sum_to(ew(g_inv * W), r.shape) if W is not None else self._sum_to(g_inv, r.shape)
        g_var = ew(ew(c(-0.5) * ew(g_r * r)) * ew(r * r))
        inner = _same if self.policy.fused_stats else ew  # float32 inside tf.nn.moments' casts
        through = inner(inner(inner(c(2) * inner(g_var / n)) * inner(X - mean32)) + inner(g_mean / n))
        out = {"forward": self._out(y, p.shape), "grad_input": self._out(ew(ew(G * inv) + q(through)), p.shape)}
        pview = self.norm.param_view
        if W is not None and p.weight is not None:
            out["grad_weight"] = self._out(self._sum_to(ew(g_inv * r), pview), np.shape(p.weight))
        if B is not None and p.bias is not None:
            out["grad_bias"] = self._out(self._sum_to(g_t, pview), np.shape(p.bias))
        return out

    def _out(self, a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return quantize(np.asarray(a, dtype=np.float64), self.p.dtype).reshape(shape)


def _same(a: np.ndarray) -> np.ndarray:
    return a


# Sums over at most this many terms are simulated exactly, one float64 addition rounded to the
# dtype per term, in a Python loop; longer ones (the weight gradient of a layer norm over 2^16
# rows) with NumPy's accumulate in the dtype itself, 20 times faster (see _sequential_sum).
EXACT_SEQUENTIAL_TERMS = 1024


def _sequential_sum(a: np.ndarray, axes: tuple[int, ...], dtype: str) -> np.ndarray:
    """The sum over ``axes`` (keepdims) accumulated one element at a time in ``dtype``.

    Up to EXACT_SEQUENTIAL_TERMS terms: each float64 term added to the running sum exactly and
    the sum rounded to ``dtype``. Beyond: ``np.add.accumulate`` in ``dtype`` (ml_dtypes' bfloat16),
    which rounds each term to ``dtype`` first and adds in float32 for the half types before
    rounding, so a sum may differ from the loop's in the last bits; its error against the exact
    sum is the loop's in size (measured on 65536 terms: the same mean absolute error to four
    digits, the sums within 1.2e-3 of each other relatively in bfloat16, 4e-4 in float16, 2e-7 in
    float32), which is what a half-accumulation hypothesis is judged by. Without ml_dtypes a
    bfloat16 sum takes the loop whatever its length.
    """
    moved = np.moveaxis(a, axes, tuple(range(a.ndim - len(axes), a.ndim)))
    flat = moved.reshape(*moved.shape[: a.ndim - len(axes)], -1).astype(np.float64)
    shape = tuple(1 if i in axes else n for i, n in enumerate(a.shape))
    native = _numpy_dtype(dtype) if flat.shape[-1] > EXACT_SEQUENTIAL_TERMS else None
    if native is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            summed = np.add.accumulate(flat.astype(native), axis=-1)[..., -1]
        return np.asarray(summed, dtype=np.float64).reshape(shape)
    total = np.zeros(flat.shape[:-1])
    for i in range(flat.shape[-1]):
        total = quantize(total + flat[..., i], dtype)
    return total.reshape(shape)


def _numpy_dtype(dtype: str) -> type | None:
    """The NumPy scalar type of ``dtype`` (bfloat16: ml_dtypes'), None when there is none."""
    if dtype != "bfloat16":
        return {"float64": np.float64, "float32": np.float32, "float16": np.float16}[dtype]
    try:
        import ml_dtypes
    except ImportError:
        return None
    return ml_dtypes.bfloat16
