"""The LLM-era variants of the reference: Gemma's RMS norm, layer norm without bias, fused
residual add + RMS/layer norm. Closed-form gradients against central finite differences in
float64, identities with the plain ops, and the case-level reference (normcheck.reference) on
the variants' problems; the plain ops' cases and seeds are unchanged."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from normcheck.dtypes import quantize
from normcheck.ops import OPS, OpParams
from normcheck.ops.fused_add import (
    fused_add_layer_norm,
    fused_add_layer_norm_backward,
    fused_add_rms_norm,
    fused_add_rms_norm_backward,
)
from normcheck.ops.layer_norm import layer_norm, layer_norm_backward
from normcheck.ops.rms_norm import gemma_rms_norm, gemma_rms_norm_backward, rms_norm, rms_norm_backward
from normcheck.problem import case_seed
from normcheck.reference import reference
from normcheck.verify.inputs import make_problem

STEP = 1e-6
RTOL = 1e-6
ATOL = 1e-8
EPS = 1e-5


def _numeric(f: Callable[[np.ndarray], float], a: np.ndarray) -> np.ndarray:
    """Central differences of the scalar ``f`` with respect to every element of ``a``."""
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        plus, minus = a.copy(), a.copy()
        plus[i] += STEP
        minus[i] -= STEP
        g[i] = (f(plus) - f(minus)) / (2 * STEP)
    return g


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_gemma_gradients_match_finite_differences(rng):
    x, w, dy = rng.standard_normal((3, 2, 5)), 0.5 * rng.standard_normal(5), rng.standard_normal((3, 2, 5))
    g = gemma_rms_norm_backward(dy, x, 5, w, EPS)
    np.testing.assert_allclose(
        g.dx, _numeric(lambda v: float((gemma_rms_norm(v, 5, w, EPS) * dy).sum()), x), RTOL, ATOL
    )
    np.testing.assert_allclose(
        g.dweight, _numeric(lambda v: float((gemma_rms_norm(x, 5, v, EPS) * dy).sum()), w), RTOL, ATOL
    )
    assert g.dbias is None


def test_gemma_is_rms_norm_with_one_plus_weight(rng):
    x, w, dy = rng.standard_normal((4, 6)), 0.5 * rng.standard_normal(6), rng.standard_normal((4, 6))
    np.testing.assert_array_equal(gemma_rms_norm(x, 6, w, EPS), rms_norm(x, 6, 1.0 + w, EPS))
    np.testing.assert_array_equal(
        gemma_rms_norm_backward(dy, x, 6, w, EPS).dx, rms_norm_backward(dy, x, 6, 1.0 + w, EPS).dx
    )
    # a zero offset is plain RMS norm without weight
    np.testing.assert_allclose(gemma_rms_norm(x, 6, np.zeros(6), EPS), rms_norm(x, 6, None, EPS), 0, 1e-15)


@pytest.mark.parametrize("fused", ["rms", "ln"])
def test_fused_add_gradients_match_finite_differences(rng, fused):
    shape, ns = (2, 3, 4), (3, 4)
    x, r = rng.standard_normal(shape), rng.standard_normal(shape)
    w, b = 1.0 + 0.5 * rng.standard_normal(ns), 0.5 * rng.standard_normal(ns)
    dy, dh = rng.standard_normal(shape), rng.standard_normal(shape)

    def loss(x_: np.ndarray, r_: np.ndarray, w_: np.ndarray, b_: np.ndarray) -> float:
        if fused == "rms":
            y, h = fused_add_rms_norm(x_, r_, ns, w_, EPS)
        else:
            y, h = fused_add_layer_norm(x_, r_, ns, w_, b_, EPS)
        return float((y * dy).sum() + (h * dh).sum())

    if fused == "rms":
        g = fused_add_rms_norm_backward(dy, dh, x, r, ns, w, EPS)
    else:
        g = fused_add_layer_norm_backward(dy, dh, x, r, ns, w, b, EPS)
    np.testing.assert_allclose(g.dx, _numeric(lambda v: loss(v, r, w, b), x), RTOL, ATOL)
    np.testing.assert_allclose(g.dresidual, _numeric(lambda v: loss(x, v, w, b), r), RTOL, ATOL)
    np.testing.assert_allclose(g.dweight, _numeric(lambda v: loss(x, r, v, b), w), RTOL, ATOL)
    if fused == "ln":
        np.testing.assert_allclose(g.dbias, _numeric(lambda v: loss(x, r, w, v), b), RTOL, ATOL)
    else:
        assert g.dbias is None


def test_fused_add_is_the_norm_of_the_sum(rng):
    x, r, w, b = (rng.standard_normal(s) for s in ((3, 8), (3, 8), (8,), (8,)))
    dy, dh = rng.standard_normal((3, 8)), rng.standard_normal((3, 8))
    y, h = fused_add_layer_norm(x, r, 8, w, b, EPS)
    np.testing.assert_array_equal(h, x + r)
    np.testing.assert_array_equal(y, layer_norm(x + r, 8, w, b, EPS))
    g = fused_add_layer_norm_backward(dy, dh, x, r, 8, w, b, EPS)
    np.testing.assert_array_equal(g.dx, g.dresidual)
    np.testing.assert_allclose(g.dx, layer_norm_backward(dy, x + r, 8, w, b, EPS).dx + dh, 0, 1e-14)
    # the sum is rounded in the inputs' dtype, once
    y16, h16 = fused_add_rms_norm(x.astype(np.float16), r.astype(np.float16), 8, w, EPS)
    np.testing.assert_array_equal(h16, (x.astype(np.float16) + r.astype(np.float16)).astype(np.float64))
    np.testing.assert_allclose(y16, rms_norm(h16, 8, w, EPS), 0, 1e-14)


def test_nobias_is_layer_norm_without_bias():
    p = make_problem("ln", (2, 5, 33), OpParams(normalized_ndim=1, variant="nobias"), "float32", "normal", EPS)
    plain = make_problem("ln", (2, 5, 33), OpParams(normalized_ndim=1), "float32", "normal", EPS)
    assert p.bias is None and plain.bias is not None
    np.testing.assert_array_equal(p.x, plain.x)  # same seed, same draws: only the bias is left out
    np.testing.assert_array_equal(p.weight, plain.weight)
    np.testing.assert_array_equal(p.dy, plain.dy)
    out = reference(p)
    assert "grad_bias" not in out
    np.testing.assert_allclose(out["forward"], layer_norm(p.x, 33, p.weight, None, EPS), 0, 1e-15)


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16"])
def test_case_reference_of_gemma_and_fused_cases(dtype):
    p = make_problem("add_rms", (2, 5, 33), OpParams(normalized_ndim=1, variant="gemma"), dtype, "normal", EPS)
    assert p.residual is not None and p.dresidual is not None and p.weight is not None
    out = reference(p)
    h = quantize(p.x + p.residual, dtype)
    np.testing.assert_array_equal(out["residual_out"], h)
    np.testing.assert_allclose(out["forward"], gemma_rms_norm(h, 33, p.weight, EPS), 0, 1e-14)
    dx = gemma_rms_norm_backward(p.dy, h, 33, p.weight, EPS).dx + p.dresidual
    np.testing.assert_allclose(out["grad_input"], dx, 0, 1e-13)
    np.testing.assert_array_equal(out["grad_input"], out["grad_residual"])
    assert set(out) == {"forward", "residual_out", "grad_input", "grad_residual", "grad_weight"}


def test_gemma_weight_is_an_offset_around_zero():
    gemma = make_problem("rms", (4, 16), OpParams(normalized_ndim=1, variant="gemma"), "float64", "normal", EPS)
    plain = make_problem("rms", (4, 16), OpParams(normalized_ndim=1), "float64", "normal", EPS)
    assert gemma.weight is not None and plain.weight is not None
    np.testing.assert_allclose(gemma.weight, plain.weight - 1.0, 0, 1e-15)  # the same scale 1 + w
    np.testing.assert_allclose(reference(gemma)["forward"], reference(plain)["forward"], 0, 1e-14)


def test_half_range_residual_keeps_the_sum_in_float16():
    p = make_problem("add_ln", (8, 64), OpParams(normalized_ndim=1), "float16", "half_range", EPS)
    assert p.residual is not None
    assert np.all(np.isfinite(quantize(p.x + p.residual, "float16")))
    assert np.max(np.abs(p.x + p.residual)) < 65504


def test_the_plain_ops_cases_and_seeds_are_unchanged():
    params = OpParams(normalized_ndim=1)
    assert repr(params) == repr(replace(params, variant="gemma"))  # the variant keeps the seed
    assert case_seed(0, "rms", (4, 16), params, "normal") == case_seed(
        0, "rms", (4, 16), replace(params, variant="gemma"), "normal"
    )
    for op in ("bn", "ln", "in", "gn", "rms"):
        assert all(p.variant is None for _, p in OPS[op].default_cases())
    assert OPS["rms"].variant_cases("gemma") and all(
        p.variant == "gemma" and p.affine for _, p in OPS["rms"].variant_cases("gemma")
    )
    assert len(OPS["ln"].variant_cases("nobias")) == len(OPS["ln"].default_cases())


def test_unknown_variants_are_refused():
    assert OPS["gn"].validate((2, 6, 5, 5), OpParams(groups=2, variant="gemma")) is not None
    assert OPS["rms"].validate((4, 16), OpParams(normalized_ndim=1, variant="nobias")) is not None
    assert OPS["rms"].validate((4, 16), OpParams(normalized_ndim=1, variant="gemma", affine=False)) is not None
    assert OPS["add_rms"].validate((4, 16), OpParams(normalized_ndim=1, variant="gemma")) is None
    assert OPS["add_ln"].validate((4, 16), OpParams(normalized_ndim=1, variant="nobias")) is None


def test_cumulative_running_statistics_are_the_mean_of_the_batches():
    p = make_problem(
        "bn", (8, 5), OpParams(mode="train", running_stats=True, variant="cumulative"), "float64", "normal", EPS
    )
    out = reference(p)
    batches = [*p.steps, p.x]
    np.testing.assert_allclose(out["running_mean"], np.mean([b.mean(axis=0) for b in batches], axis=0), 0, 1e-15)
    np.testing.assert_allclose(out["running_var"], np.mean([b.var(axis=0, ddof=1) for b in batches], axis=0), 0, 1e-15)
    plain = reference(make_problem("bn", (8, 5), OpParams(mode="train", running_stats=True), "float64", "normal", EPS))
    np.testing.assert_array_equal(out["forward"], plain["forward"])  # the batch itself is normalized alike
