"""Adaptive layer norm (DiT's adaLN): the closed form against central finite differences in
float64, against the case-level reference (the generic normalization with weight 1 + scale),
its identities, and the shapes and params the op takes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from normcheck.dtypes import quantize
from normcheck.ops import OPS, OpParams
from normcheck.ops.adaptive_layer_norm import (
    TOKEN,
    adaptive_layer_norm,
    adaptive_layer_norm_backward,
    check_label,
    modulated,
    stray_affine,
)
from normcheck.ops.layer_norm import layer_norm, layer_norm_backward
from normcheck.reference import reference
from normcheck.verify.inputs import KINDS, make_problem

STEP = 1e-6
EPS = 1e-6


def _numeric(f: Callable[[np.ndarray], float], a: np.ndarray) -> np.ndarray:
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        plus, minus = a.copy(), a.copy()
        plus[i] += STEP
        minus[i] -= STEP
        g[i] = (f(plus) - f(minus)) / (2 * STEP)
    return g


def _inputs(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    n, _, d = shape
    return (
        rng.standard_normal(shape),
        0.5 * rng.standard_normal((n, d)),
        0.5 * rng.standard_normal((n, d)),
        rng.standard_normal(shape),
    )


@pytest.mark.parametrize("shape", [(2, 3, 5), (1, 4, 3), (3, 1, 4)])
def test_gradients_match_finite_differences(shape):
    x, shift, scale, dy = _inputs(shape)
    g = adaptive_layer_norm_backward(dy, x, shift, scale, EPS)

    def loss(x_=x, shift_=shift, scale_=scale) -> float:
        return float(np.sum(adaptive_layer_norm(x_, shift_, scale_, EPS) * dy))

    np.testing.assert_allclose(g.dx, _numeric(lambda a: loss(x_=a), x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g.dshift, _numeric(lambda a: loss(shift_=a), shift), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g.dscale, _numeric(lambda a: loss(scale_=a), scale), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("knobs", [{"offset": False}, {"broadcast": TOKEN}, {"inner": stray_affine(5, "float64")}])
def test_mistaken_forms_gradients_match_finite_differences(knobs):
    x, shift, scale, dy = _inputs((3, 3, 5), seed=1)
    g = modulated(x, shift, scale, EPS, dy=dy, **knobs)[1]
    assert g is not None

    def loss(x_=x, shift_=shift, scale_=scale) -> float:
        return float(np.sum(modulated(x_, shift_, scale_, EPS, **knobs)[0] * dy))

    np.testing.assert_allclose(g.dx, _numeric(lambda a: loss(x_=a), x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g.dshift, _numeric(lambda a: loss(shift_=a), shift), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g.dscale, _numeric(lambda a: loss(scale_=a), scale), rtol=1e-6, atol=1e-8)


def test_no_modulation_is_layer_norm_without_affine():
    x, _, _, dy = _inputs((2, 4, 6))
    zeros = np.zeros((2, 6))
    np.testing.assert_allclose(adaptive_layer_norm(x, zeros, zeros, EPS), layer_norm(x, 6, eps=EPS), atol=1e-14)
    g = adaptive_layer_norm_backward(dy, x, zeros, zeros, EPS)
    np.testing.assert_allclose(g.dx, layer_norm_backward(dy, x, 6, eps=EPS).dx, atol=1e-13)


def test_one_sample_is_layer_norm_with_weight_one_plus_scale():
    x, shift, scale, dy = _inputs((1, 5, 4))
    w, b = 1.0 + scale[0], shift[0]
    np.testing.assert_allclose(adaptive_layer_norm(x, shift, scale, EPS), layer_norm(x, 4, w, b, EPS), atol=1e-14)
    want = layer_norm_backward(dy, x, 4, w, b, EPS)
    got = adaptive_layer_norm_backward(dy, x, shift, scale, EPS)
    np.testing.assert_allclose(got.dx, want.dx, atol=1e-13)
    np.testing.assert_allclose(got.dscale[0], want.dweight, atol=1e-13)
    np.testing.assert_allclose(got.dshift[0], want.dbias, atol=1e-13)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [s for s, _ in OPS["adaln"].default_cases()])
def test_case_reference_is_the_closed_form(shape, kind):
    p = make_problem("adaln", shape, OpParams(), "float32", kind, EPS)
    assert p.weight is not None and p.bias is not None and p.weight.shape == (shape[0], shape[2])
    want = reference(p)
    y, g = modulated(p.x, p.bias, p.weight, EPS, dy=p.dy)
    assert g is not None
    scale = max(1.0, float(np.max(np.abs(want["grad_input"]))))
    np.testing.assert_allclose(y, want["forward"], atol=1e-9 * scale)
    np.testing.assert_allclose(g.dx, want["grad_input"], atol=1e-9 * scale)
    np.testing.assert_allclose(g.dscale, want["grad_weight"], atol=1e-9 * scale)
    np.testing.assert_allclose(g.dshift, want["grad_bias"], atol=1e-9)


def test_scale_is_drawn_around_zero_and_other_ops_draws_are_unchanged():
    p = make_problem("adaln", (4, 4, 16), OpParams(), "float64", "normal", EPS)
    assert p.weight is not None and abs(float(np.mean(p.weight))) < 0.3  # an offset from 1, as DiT's
    ln = make_problem("ln", (4, 16), OpParams(normalized_ndim=1), "float64", "normal", 1e-5)
    assert ln.weight is not None and abs(float(np.mean(ln.weight)) - 1.0) < 0.3


@pytest.mark.parametrize(
    ("shape", "params", "reason"),
    [
        ((4, 16), OpParams(), "3..3-D"),
        ((2, 3, 4, 5), OpParams(), "3..3-D"),
        ((2, 3, 4), OpParams(normalized_ndim=1), "last axis"),
        ((2, 3, 4), OpParams(affine=False), "shift and scale"),
        ((2, 3, 4), OpParams(running_stats=True), "running statistics"),
    ],
)
def test_shapes_and_params_it_refuses(shape, params, reason):
    problem = OPS["adaln"].validate(shape, params)
    assert problem is not None and reason in problem


def test_stray_affine_is_fixed_and_exact_in_the_dtype():
    w, b = stray_affine(24, "bfloat16")
    w2, b2 = stray_affine(24, "bfloat16")
    assert np.array_equal(w, w2) and np.array_equal(b, b2)
    assert np.array_equal(w, quantize(w, "bfloat16")) and not np.allclose(w, 1.0) and not np.allclose(b, 0.0)


def test_reports_name_the_gradients_of_scale_and_shift():
    assert check_label("adaln", "grad_weight") == "grad_scale"
    assert check_label("adaln", "grad_bias") == "grad_shift"
    assert check_label("ln", "grad_weight") == "grad_weight"
