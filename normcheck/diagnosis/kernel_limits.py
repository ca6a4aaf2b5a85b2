"""Two kernel mistakes that only sizes past the default grid show, for layer and RMS norm over a
row of ``hidden`` values: each row normalized with statistics taken from the wrong values, forward
and backward computed in closed form.

- a row index that wraps at 2^16 (a grid coordinate kept in 16 bits, or CUDA's gridDim.y of
  65535 with a wrapping index: apex#411): row r >= 65536 is normalized with the mean and variance
  of row r mod 65536;
- a reduction over part of the row (vllm#44692): the statistics of the first ``block`` values
  only, where ``block`` is the largest power of two in the row (a tree reduction written for
  4096) or the row less its remainder of a vector width (a vectorized loop without its tail).

Both are tried only where the stress profile's cases reach: more than 65536 rows, rows of 1024
values or more. The default grid never does, so these predict nothing there.

y_r = (x_r - mu_s) * rho_s * w + b, with s = src(r) the row whose first ``block`` values give
mu_s and rho_s = 1 / sqrt(var_s + eps) (RMS norm: mu = 0, var = mean(x^2)). The input's gradient
is rho_s * g_r (g = dy * w) plus, for a row k that is some rows' statistics source, through mu_k
and rho_k on its first ``block`` values: (d mu_k + d rho_k * (-rho_k^3) * (x_kj - mu_k)) / block,
with d mu_k = -rho_k * sum g and d rho_k = sum g * (x - mu_k), each summed over the rows r with
src(r) = k.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from normcheck.dtypes import compute_dtype, quantize
from normcheck.problem import Problem

ROW_INDEX_LIMIT = 2**16  # a 16-bit row index wraps here
WIDE_ROW = 1024  # the narrowest row a kernel's block-reduction fast path takes
VECTOR_WIDTHS = (2, 4, 8)  # elements per vector load: 4- to 16-byte vectors of 16- and 32-bit values


@dataclass(frozen=True)
class Limited:
    """A kernel mistake's prediction for a case: the outputs in float64, in the case's compute
    precision (rounded to the dtype), the title and the fix."""

    title: str
    values: dict[str, np.ndarray]
    witness: dict[str, np.ndarray]
    fix: str


def _rows(p: Problem) -> tuple[int, int] | None:
    """(rows, hidden) of a layer or RMS norm case over its trailing axes, or None."""
    if p.op not in ("ln", "rms") or p.params.axes is not None or p.params.normalized_ndim is None or not p.x.size:
        return None
    hidden = int(np.prod(p.shape[len(p.shape) - p.params.normalized_ndim :], dtype=np.int64))
    return p.x.size // hidden, hidden


def row_index_wraps(p: Problem) -> list[Limited]:
    """Rows past 65535 normalized with the statistics of row r mod 65536."""
    size = _rows(p)
    if size is None or size[0] <= ROW_INDEX_LIMIT:
        return []
    src = np.arange(size[0]) % ROW_INDEX_LIMIT
    title = (
        f"the row index wraps at {ROW_INDEX_LIMIT}: rows {ROW_INDEX_LIMIT} and past use the statistics of row "
        f"r - {ROW_INDEX_LIMIT} (a 16-bit row index, or a grid of at most 65535 rows)"
    )
    fix = "index rows with 32 or 64 bits and cover every row (a grid-stride loop over the rows)"
    return [_limited(p, src, size[1], title, fix)]


def partial_row(p: Problem) -> list[Limited]:
    """Statistics over the first ``block`` values of each row: the largest power of two in it, or
    the row less its remainder of a vector width."""
    size = _rows(p)
    if size is None or size[1] < WIDE_ROW:
        return []
    hidden = size[1]
    blocks = {1 << (hidden.bit_length() - 1): "the largest power of two in the row (a tree reduction's block)"}
    for width in VECTOR_WIDTHS:
        blocks.setdefault(hidden - hidden % width, f"the row less its remainder of {width} (vector loads, no tail)")
    fix = "reduce over every value of the row: loop the block over it and handle the tail past the last full block"
    return [
        _limited(
            p, np.arange(size[0]), block, f"statistics over the first {block} of the row's {hidden} values: {how}", fix
        )
        for block, how in blocks.items()
        if block != hidden
    ]


def _limited(p: Problem, src: np.ndarray, block: int, title: str, fix: str) -> Limited:
    values = limited_outputs(p, src, block, np.float64)
    witness = {k: quantize(v, p.dtype) for k, v in limited_outputs(p, src, block, compute_dtype(p.dtype)).items()}
    return Limited(title, values, witness, fix)


def limited_outputs(p: Problem, src: np.ndarray, block: int, dtype: type) -> dict[str, np.ndarray]:
    """forward, grad_input, grad_weight and grad_bias of the layer/RMS norm case ``p`` with row r
    normalized by the statistics of the first ``block`` values of row ``src[r]``, computed in
    ``dtype`` and rounded to the case's dtype (see the module docstring for the gradient)."""
    rows, hidden = len(src), p.x.size // len(src)
    x: np.ndarray = np.asarray(p.x, dtype=dtype).reshape(rows, hidden)
    dy: np.ndarray = np.asarray(p.dy, dtype=dtype).reshape(rows, hidden)
    w: np.ndarray = (
        np.ones(hidden, dtype=dtype) if p.weight is None else np.asarray(p.weight, dtype=dtype).reshape(hidden)
    )
    b: np.ndarray | None = None if p.bias is None else np.asarray(p.bias, dtype=dtype).reshape(hidden)
    center = p.op == "ln"
    head = x[:, :block]
    mu = head.mean(axis=1) if center else np.zeros(rows, dtype=dtype)
    var = np.square(head - mu[:, None]).mean(axis=1)
    rho = 1 / np.sqrt(var + dtype(p.eps))
    d = x - mu[src][:, None]
    xhat = d * rho[src][:, None]
    y = xhat * w if b is None else xhat * w + b
    g = dy * w
    dx = rho[src][:, None] * g
    d_rho: np.ndarray = np.bincount(src, weights=(g * d).sum(axis=1), minlength=rows).astype(dtype)
    through = d_rho[:, None] * -(rho**3)[:, None] * (head - mu[:, None])
    if center:
        through = through - (rho * np.bincount(src, weights=g.sum(axis=1), minlength=rows))[:, None]
    dx[:, :block] += through / dtype(block)
    out = {"forward": y, "grad_input": dx}
    if p.weight is not None:
        out["grad_weight"] = (dy * xhat).sum(axis=0)
    if b is not None:
        out["grad_bias"] = dy.sum(axis=0)
    shapes = {
        "forward": p.shape,
        "grad_input": p.shape,
        "grad_weight": () if p.weight is None else p.weight.shape,
        "grad_bias": () if p.bias is None else p.bias.shape,
    }
    return {k: quantize(np.asarray(v, dtype=np.float64).reshape(shapes[k]), p.dtype) for k, v in out.items()}
