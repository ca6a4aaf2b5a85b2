"""The one formula behind every op: y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias.

An op decides three things only: how x is viewed (group norm splits channels into groups),
which axes of that view the statistics run over, and how the affine parameters broadcast.
Everything here is plain NumPy, computed in ``dtype`` (float64 for the reference) with the
variance in two passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grads:
    """Gradients of a normalization with respect to its input and affine parameters."""

    dx: np.ndarray
    dweight: np.ndarray | None
    dbias: np.ndarray | None


@dataclass(frozen=True)
class Normalization:
    """A normalization of ``x`` viewed as ``view`` with statistics over ``axes``.

    ``param_view`` is the shape the affine parameters are reshaped to so they broadcast
    against the view; ``center`` is False for RMS norm (no mean subtracted).
    """

    view: tuple[int, ...]
    axes: tuple[int, ...]
    param_view: tuple[int, ...]
    center: bool = True

    @property
    def count(self) -> int:
        """Number of elements each statistic runs over."""
        return int(np.prod([self.view[a] for a in self.axes], dtype=np.int64))

    def moments(self, x: np.ndarray, dtype: type = np.float64, mean_ulps: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Mean and biased variance over the reduction axes (two passes, keepdims).

        ``mean_ulps`` moves the mean by that many units in the last place of ``dtype``: the
        rounding a correct implementation may make (``sum * (1/n)`` instead of ``sum / n``).
        """
        mean, centered = self._center(np.asarray(x, dtype=dtype).reshape(self.view), dtype, mean_ulps)
        return mean, self._mean_of_product(centered, centered, dtype)

    def _center(self, v: np.ndarray, dtype: type, mean_ulps: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.center:
            return np.zeros((1,) * v.ndim, dtype=dtype), v
        mean = self._mean(v, dtype)
        if mean_ulps:
            mean = mean + dtype(mean_ulps) * np.spacing(mean)
        return mean, v - mean

    def _mean_of_product(self, a: np.ndarray, b: np.ndarray, dtype: type) -> np.ndarray:
        """mean(a * b) over the reduction axes, keepdims.

        float64 uses einsum, one pass and no temporary; its plain summation is far inside any
        tolerance in float64. Other dtypes keep NumPy's pairwise sum, whose accuracy is what a
        correct implementation in that dtype reaches (the witness depends on it).
        """
        if dtype is not np.float64 or self.count == 0:
            return self._mean(a * b, dtype)
        total = _sum_of_product(a, b, summed=self.axes)
        return (total / self.count).reshape(self._kept(a.shape))

    def _mean(self, a: np.ndarray, dtype: type) -> np.ndarray:
        """Mean over the reduction axes, keepdims; NaN where they hold no value (an empty
        tensor), without NumPy's empty-slice warning."""
        if self.count == 0:
            return np.full(self._kept(a.shape), np.nan, dtype=dtype)
        return a.mean(axis=self.axes, keepdims=True, dtype=dtype)

    def _kept(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """``shape`` with the reduction axes kept as size 1."""
        return tuple(1 if i in self.axes else n for i, n in enumerate(shape))

    def forward(
        self,
        x: np.ndarray,
        eps: float,
        weight: np.ndarray | None = None,
        bias: np.ndarray | None = None,
        stats: tuple[np.ndarray, np.ndarray] | None = None,
        dtype: type = np.float64,
        mean_ulps: int = 0,
    ) -> tuple[np.ndarray, Cache]:
        """Normalize ``x``.

        ``stats`` (mean, var), each broadcastable against the view, fixes the statistics as in
        evaluation mode; the gradient then does not flow through them.
        """
        shape = np.shape(x)
        v: np.ndarray = np.asarray(x, dtype=dtype).reshape(self.view)
        if stats is None:
            mean, centered = self._center(v, dtype, mean_ulps)
            var = self._mean_of_product(centered, centered, dtype)
        else:
            mean, var = (np.asarray(s, dtype=dtype) for s in stats)
            centered = v - mean
        rstd = 1.0 / np.sqrt(var + dtype(eps))
        xhat = centered * rstd if centered is v else np.multiply(centered, rstd, out=centered)
        w = self._param(weight, dtype)
        b = self._param(bias, dtype)
        y = xhat * w if w is not None else xhat.copy()
        if b is not None:
            y += b
        cache = Cache(
            shape=shape,
            x=v,
            mean=mean,
            xhat=xhat,
            rstd=rstd,
            weight=w,
            weight_shape=None if weight is None else np.shape(weight),
            bias_shape=None if bias is None else np.shape(bias),
            fixed_stats=stats is not None,
        )
        return y.reshape(shape), cache

    def backward(self, dy: np.ndarray, cache: Cache, dtype: type = np.float64, expanded: bool = False) -> Grads:
        """Closed-form gradients for the upstream gradient ``dy``.

        ``expanded`` computes the sums from x rather than from xhat, as fused kernels do:
        mean(dxhat * xhat) = rstd * (sum(dxhat * x) - mean * sum(dxhat)) / n. Same math,
        different rounding; the witness uses it to know what correct kernels reach.
        """
        g: np.ndarray = np.asarray(dy, dtype=dtype).reshape(self.view)
        dxhat = g * cache.weight if cache.weight is not None else g
        if cache.fixed_stats or self.count == 0:  # fixed statistics, or no value to normalize
            dx = dxhat * cache.rstd
        else:
            if expanded:
                ds = (dxhat * cache.x).sum(axis=self.axes, keepdims=True, dtype=dtype)
                db = dxhat.sum(axis=self.axes, keepdims=True, dtype=dtype)
                proj = cache.rstd * (ds - cache.mean * db) / dtype(self.count)
            else:
                proj = self._mean_of_product(dxhat, cache.xhat, dtype)
            dx = cache.xhat * proj
            np.subtract(dxhat, dx, out=dx)
            if self.center:
                dx -= self._mean(dxhat, dtype)
            dx *= cache.rstd
        if cache.weight_shape is None:
            dweight = None
        elif expanded:
            dweight = self._reduce_to(g * cache.x * cache.rstd, cache.weight_shape) - self._reduce_to(
                g * (cache.mean * cache.rstd), cache.weight_shape
            )
        else:
            dweight = self._reduce_product_to(g, cache.xhat, cache.weight_shape, dtype)
        dbias = None if cache.bias_shape is None else self._reduce_to(g, cache.bias_shape)
        return Grads(dx.reshape(cache.shape), dweight, dbias)

    def _param(self, p: np.ndarray | None, dtype: type) -> np.ndarray | None:
        return None if p is None else np.asarray(p, dtype=dtype).reshape(self.param_view)

    def _reduce_product_to(self, a: np.ndarray, b: np.ndarray, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        """Sum of a * b back to a parameter's shape; one einsum pass in float64 (see above)."""
        if dtype is not np.float64:
            return self._reduce_to(a * b, shape)
        summed = tuple(i for i, n in enumerate(self.param_view) if n == 1 and a.shape[i] != 1)
        return _sum_of_product(a, b, summed).reshape(shape)

    def _reduce_to(self, a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Sum ``a`` over the axes a parameter is broadcast along, back to the parameter's shape."""
        axes = tuple(i for i, n in enumerate(self.param_view) if n == 1 and a.shape[i] != 1)
        return a.sum(axis=axes).reshape(shape)


def _sum_of_product(a: np.ndarray, b: np.ndarray, summed: tuple[int, ...]) -> np.ndarray:
    """sum(a * b) over the ``summed`` axes in one einsum pass, without the a * b temporary."""
    letters = "abcdefghijklmnop"[: a.ndim]
    kept = "".join(c for i, c in enumerate(letters) if i not in summed)
    return np.einsum(f"{letters},{letters}->{kept}", a, b)


@dataclass(frozen=True)
class Cache:
    """What the backward pass needs from the forward pass."""

    shape: tuple[int, ...]
    x: np.ndarray  # x in the view, in the compute dtype
    mean: np.ndarray
    xhat: np.ndarray
    rstd: np.ndarray
    weight: np.ndarray | None
    weight_shape: tuple[int, ...] | None
    bias_shape: tuple[int, ...] | None
    fixed_stats: bool
