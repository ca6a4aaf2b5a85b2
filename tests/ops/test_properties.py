"""Property tests of the reference formulas over random shapes and ops (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from normcheck.ops import OPS, OpParams

SETTINGS = settings(max_examples=40, deadline=None)
EPS = 1e-10  # far below every group variance the tests accept
CENTERED = ("bn", "ln", "in", "gn")


@st.composite
def cases(draw, ops=("bn", "ln", "in", "gn", "rms"), affine=None):
    """(op, shape, params, seed) for a valid case with at least two values per statistic."""
    op = draw(st.sampled_from(ops))
    spec = OPS[op]
    lo = max(2, spec.min_ndim)
    hi = min(5, spec.max_ndim or 5)
    ndim = draw(st.integers(lo, hi))
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=ndim, max_size=ndim)))
    aff = draw(st.booleans()) if affine is None else affine
    if op in ("ln", "rms"):
        params = OpParams(normalized_ndim=draw(st.integers(1, ndim)), affine=aff)
    elif op == "gn":
        groups = draw(st.sampled_from([d for d in range(1, shape[1] + 1) if shape[1] % d == 0]))
        params = OpParams(groups=groups, affine=aff)
    else:
        params = OpParams(affine=aff)
    assume(spec.normalization(shape, params).count >= 2)
    assert spec.validate(shape, params) is None
    seed = draw(st.integers(0, 2**32 - 1))
    return op, shape, params, seed


def _setup(op, shape, params, seed):
    rng = np.random.default_rng(seed)
    norm = OPS[op].normalization(shape, params)
    x = rng.standard_normal(shape) * 3 + rng.uniform(-5, 5)
    dy = rng.standard_normal(shape)
    pshape = OPS[op].param_shape(shape, params)
    w = 1 + 0.5 * rng.standard_normal(pshape) if params.affine else None
    b = 0.5 * rng.standard_normal(pshape) if params.affine and op != "rms" else None
    return rng, norm, x, dy, w, b


def _group_var(norm, x):
    v = x.reshape(norm.view)
    if norm.center:
        return v.var(axis=norm.axes)
    return np.mean(v * v, axis=norm.axes)


@SETTINGS
@given(cases(affine=False))
def test_output_is_standardized_over_reduction_axes(case):
    op, shape, params, seed = case
    _, norm, x, _, _, _ = _setup(op, shape, params, seed)
    assume(_group_var(norm, x).min() > 1e-4)  # var >> eps
    ones = np.ones(OPS[op].param_shape(shape, params))
    zeros = np.zeros_like(ones)
    for w, b in ((None, None), (ones, None if op == "rms" else zeros)):
        y, _ = norm.forward(x, EPS, w, b)
        assert y.shape == shape
        v = y.reshape(norm.view)
        if norm.center:
            np.testing.assert_allclose(v.mean(axis=norm.axes), 0, atol=1e-9)
            np.testing.assert_allclose(v.var(axis=norm.axes), 1, rtol=1e-6)
        else:
            np.testing.assert_allclose(np.mean(v * v, axis=norm.axes), 1, rtol=1e-6)


@SETTINGS
@given(cases(ops=("bn", "ln", "in", "gn"), affine=True))
def test_dbias_is_dy_summed_over_non_parameter_axes(case):
    op, shape, params, seed = case
    _, norm, x, dy, w, b = _setup(op, shape, params, seed)
    _, cache = norm.forward(x, 1e-5, w, b)
    grads = norm.backward(dy, cache)
    if op == "ln":
        want = dy.reshape(-1, *shape[len(shape) - params.normalized_ndim :]).sum(axis=0)
    else:  # one parameter per channel
        want = np.moveaxis(dy, 1, 0).reshape(shape[1], -1).sum(axis=1)
    assert grads.dbias.shape == b.shape
    np.testing.assert_allclose(grads.dbias, want, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(cases(ops=("rms", "ln", "bn", "in", "gn"), affine=True))
def test_dweight_is_dy_times_xhat_summed_over_non_parameter_axes(case):
    op, shape, params, seed = case
    _, norm, x, dy, w, b = _setup(op, shape, params, seed)
    y0, _ = norm.forward(x, 1e-5, None, None)  # xhat, unscaled
    grads = norm.backward(dy, norm.forward(x, 1e-5, w, b)[1])
    prod = dy * y0
    if op in ("ln", "rms"):
        want = prod.reshape(-1, *shape[len(shape) - params.normalized_ndim :]).sum(axis=0)
    else:
        want = np.moveaxis(prod, 1, 0).reshape(shape[1], -1).sum(axis=1)
    np.testing.assert_allclose(grads.dweight, want, rtol=1e-10, atol=1e-10)


@SETTINGS
@given(cases(ops=CENTERED))
def test_dx_sums_to_zero_over_reduction_axes(case):
    op, shape, params, seed = case
    _, norm, x, dy, w, b = _setup(op, shape, params, seed)
    assume(_group_var(norm, x).min() > 1e-4)
    for expanded in (False, True):
        _, cache = norm.forward(x, 1e-5, w, b)
        dx = norm.backward(dy, cache, expanded=expanded).dx
        sums = dx.reshape(norm.view).sum(axis=norm.axes)
        scale = np.abs(dx).reshape(norm.view).sum(axis=norm.axes)
        np.testing.assert_array_less(np.abs(sums), 1e-10 * (1 + scale))


@SETTINGS
@given(cases(ops=CENTERED))
def test_dx_is_orthogonal_to_xhat(case):
    """A scale of the input within a group does not change the output: sum(dx * xhat) = 0 when eps = 0."""
    op, shape, params, seed = case
    _, norm, x, dy, w, b = _setup(op, shape, params, seed)
    assume(_group_var(norm, x).min() > 1e-4)
    _, cache = norm.forward(x, 0.0, w, b)
    dx = norm.backward(dy, cache).dx
    xhat = cache.xhat
    sums = (dx.reshape(norm.view) * xhat).sum(axis=norm.axes)
    scale = (np.abs(dx.reshape(norm.view)) * np.abs(xhat)).sum(axis=norm.axes)
    np.testing.assert_array_less(np.abs(sums), 1e-10 * (1 + scale))


@SETTINGS
@given(cases(ops=CENTERED), st.floats(-50, 50))
def test_forward_invariant_to_per_group_shift(case, spread):
    op, shape, params, seed = case
    rng, norm, x, _, w, b = _setup(op, shape, params, seed)
    assume(_group_var(norm, x).min() > 1e-2)
    stat_shape = tuple(1 if a in norm.axes else n for a, n in enumerate(norm.view))
    shift = spread * rng.uniform(-1, 1, stat_shape)  # one constant per normalization group
    shifted = (x.reshape(norm.view) + shift).reshape(shape)
    y, _ = norm.forward(x, 1e-5, w, b)
    y_shifted, _ = norm.forward(shifted, 1e-5, w, b)
    np.testing.assert_allclose(y_shifted, y, rtol=1e-9, atol=1e-9)


@SETTINGS
@given(cases(ops=("rms",)), st.floats(0.1, 100))
def test_rms_invariant_to_positive_scale_not_to_shift(case, factor):
    op, shape, params, seed = case
    _, norm, x, _, w, _ = _setup(op, shape, params, seed)
    assume(_group_var(norm, x).min() > 1e-2)
    y, _ = norm.forward(x, EPS, w)
    np.testing.assert_allclose(norm.forward(factor * x, EPS, w)[0], y, rtol=1e-6, atol=1e-9)
    # a shift changes an RMS norm (no mean is removed)
    y_shift, _ = norm.forward(x + 10.0, EPS, w)
    assert not np.allclose(y_shift, y, atol=1e-3)
