"""Weight Standardization's reference (normcheck.ops.weight_standardization): the convolution
against a direct loop, the closed-form backward against central finite differences (through the
standardization to the raw weight, and through group norm for GN+WS), and the identities the
standardization must satisfy."""

from __future__ import annotations

import numpy as np
import pytest

from normcheck.ops import OPS, OpParams
from normcheck.ops.weight_standardization import (
    REFERENCE,
    Standardization,
    conv2d,
    conv2d_backward,
    standardize,
    standardize_backward,
    ws_conv2d,
    ws_conv2d_backward,
    ws_gn,
    ws_gn_backward,
)

STEP = 1e-6


def _loop_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, padding: int) -> np.ndarray:
    """The textbook definition, one output element at a time."""
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.zeros((n, c, h + 2 * padding, wd + 2 * padding))
    xp[:, :, padding : padding + h, padding : padding + wd] = x
    ho, wo = h + 2 * padding - k + 1, wd + 2 * padding - k + 1
    y = np.zeros((n, o, ho, wo))
    for i in range(n):
        for j in range(o):
            for r in range(ho):
                for s in range(wo):
                    y[i, j, r, s] = np.sum(xp[i, :, r : r + k, s : s + k] * w[j]) + (0.0 if b is None else b[j])
    return y


def _inputs(seed: int, x_shape, w_shape, bias: bool = True):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    w = 0.3 + rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0]) if bias else None
    return rng, x, w, b


@pytest.mark.parametrize(("k", "padding"), [(1, 0), (3, 0), (3, 1), (2, 1)])
@pytest.mark.parametrize("by_tap", [False, True])
def test_conv2d_is_the_textbook_cross_correlation(k, padding, by_tap):
    _, x, w, b = _inputs(0, (2, 3, 5, 4), (4, 3, k, k))
    np.testing.assert_allclose(conv2d(x, w, b, padding, by_tap=by_tap), _loop_conv(x, w, b, padding), atol=1e-12)


def _numeric_grad(f, a: np.ndarray) -> np.ndarray:
    g = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        up, down = a.copy(), a.copy()
        up[idx] += STEP
        down[idx] -= STEP
        g[idx] = (f(up) - f(down)) / (2 * STEP)
    return g


CONVENTIONS = {
    "reference": {},
    "paper": {"unbiased": True, "eps_outside": True},
}


@pytest.mark.parametrize("convention", list(CONVENTIONS))
@pytest.mark.parametrize(("k", "padding", "bias"), [(1, 0, True), (3, 1, True), (3, 0, False)])
def test_ws_backward_matches_finite_differences(convention, k, padding, bias):
    rng, x, w, b = _inputs(1, (2, 3, 5, 4), (4, 3, k, k), bias)
    opts = {"eps": 1e-3, **CONVENTIONS[convention]}
    dy = rng.standard_normal(ws_conv2d(x, w, b, padding, **opts).shape)
    g = ws_conv2d_backward(dy, x, w, b, padding, **opts)

    def loss(xx=x, ww=w, bb=b):
        return float(np.sum(ws_conv2d(xx, ww, bb, padding, **opts) * dy))

    np.testing.assert_allclose(g.dx, _numeric_grad(lambda a: loss(xx=a), x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(g.dweight, _numeric_grad(lambda a: loss(ww=a), w), rtol=1e-6, atol=1e-7)
    if bias:
        np.testing.assert_allclose(g.dbias, _numeric_grad(lambda a: loss(bb=a), b), rtol=1e-6, atol=1e-7)
    else:
        assert g.dbias is None


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_ws_gn_backward_matches_finite_differences(groups):
    rng, x, w, _ = _inputs(2, (2, 3, 5, 4), (4, 3, 3, 3), bias=False)
    gw, gb = 1.0 + 0.5 * rng.standard_normal(4), 0.5 * rng.standard_normal(4)
    dy = rng.standard_normal(ws_gn(x, w, groups, gw, gb, 1, 1e-3).shape)
    g = ws_gn_backward(dy, x, w, groups, gw, gb, 1, 1e-3)

    def loss(xx=x, ww=w, a=gw, c=gb):
        return float(np.sum(ws_gn(xx, ww, groups, a, c, 1, 1e-3) * dy))

    for got, arg, value in ((g.dx, "xx", x), (g.dweight, "ww", w), (g.dgn_weight, "a", gw), (g.dgn_bias, "c", gb)):
        want = _numeric_grad(lambda v, arg=arg: loss(**{arg: v}), value)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "how",
    [
        Standardization(axes=(0, 2, 3)),
        Standardization(axes=(0, 1, 2, 3)),
        Standardization(unbiased=True),
        Standardization(eps_outside=True),
        Standardization(center=False),
    ],
    ids=["per-input-channel", "whole-tensor", "unbiased", "eps-outside", "uncentered"],
)
def test_standardize_backward_matches_finite_differences_for_every_variant(how):
    """The diagnosis re-runs these mistakes: their gradients must be the mistakes' true gradients."""
    rng = np.random.default_rng(3)
    w = 0.2 + rng.standard_normal((4, 3, 3, 3))
    g = rng.standard_normal(w.shape)
    _, cache = standardize(w, 1e-3, how)
    got = standardize_backward(g, cache)
    want = _numeric_grad(lambda a: float(np.sum(standardize(a, 1e-3, how)[0] * g)), w)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cut", ["mean", "variance", "both"])
def test_a_cut_gradient_treats_the_statistics_as_constants(cut):
    rng = np.random.default_rng(4)
    w = 0.2 + rng.standard_normal((3, 2, 3, 3))
    g = rng.standard_normal(w.shape)
    _, cache = standardize(w, 1e-5, Standardization(cut=cut))
    got = standardize_backward(g, cache)
    mean = w.mean(axis=(1, 2, 3), keepdims=True)
    var = w.var(axis=(1, 2, 3), keepdims=True)

    def f(a: np.ndarray) -> float:
        m = mean if cut in ("mean", "both") else a.mean(axis=(1, 2, 3), keepdims=True)
        v = (
            var
            if cut in ("variance", "both")
            else ((a - a.mean(axis=(1, 2, 3), keepdims=True)) ** 2).mean(axis=(1, 2, 3), keepdims=True)
        )
        return float(np.sum((a - m) / np.sqrt(v + 1e-5) * g))

    np.testing.assert_allclose(got, _numeric_grad(f, w), rtol=1e-6, atol=1e-7)


def test_the_standardized_weight_has_zero_mean_and_unit_variance_per_output_channel():
    w = 5.0 + 3.0 * np.random.default_rng(5).standard_normal((6, 4, 3, 3))
    what, _ = standardize(w, 1e-12)
    np.testing.assert_allclose(what.mean(axis=(1, 2, 3)), 0.0, atol=1e-12)
    np.testing.assert_allclose(what.var(axis=(1, 2, 3)), 1.0, rtol=1e-10)


def test_standardizing_a_standardized_weight_changes_it_by_eps_only():
    eps = 1e-6
    what, _ = standardize(np.random.default_rng(6).standard_normal((5, 3, 3, 3)), eps)
    twice, _ = standardize(what, eps)
    # var(Ŵ) = v / (v + eps), so the second pass scales by 1/sqrt(v/(v + eps) + eps) = 1 + O(eps)
    np.testing.assert_allclose(twice, what, rtol=2 * eps, atol=0)
    assert not np.array_equal(twice, what)  # ... and by eps: the identity is not exact


def test_the_output_ignores_a_positive_scale_and_a_shift_of_each_output_channels_weight():
    rng, x, w, b = _inputs(7, (2, 3, 6, 6), (4, 3, 3, 3))
    scale = np.exp(rng.standard_normal((4, 1, 1, 1)))
    shift = rng.standard_normal((4, 1, 1, 1))
    y = ws_conv2d(x, w, b, 1, eps=0.0)
    np.testing.assert_allclose(ws_conv2d(x, scale * w + shift, b, 1, eps=0.0), y, rtol=1e-10, atol=1e-10)
    # and so its gradient has no component along the weight's mean or its centred self
    dw = ws_conv2d_backward(rng.standard_normal(y.shape), x, w, b, 1, eps=0.0).dweight
    np.testing.assert_allclose(dw.sum(axis=(1, 2, 3)), 0.0, atol=1e-10)
    centered = w - w.mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose((dw * centered).sum(axis=(1, 2, 3)), 0.0, atol=1e-9)


def test_the_paper_convention_is_the_unbiased_std_plus_eps():
    w = np.random.default_rng(8).standard_normal((3, 2, 3, 3))
    what, _ = standardize(w, 1e-5, Standardization(unbiased=True, eps_outside=True))
    rows = w.reshape(3, -1)
    want = (rows - rows.mean(axis=1, keepdims=True)) / (rows.std(axis=1, ddof=1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(what.reshape(3, -1), want, rtol=1e-13)


def test_a_constant_row_standardizes_to_zero_and_its_gradient_is_finite():
    w = np.random.default_rng(9).standard_normal((3, 2, 3, 3))
    w[0] = 1.5
    g = np.ones_like(w) + np.arange(w.size).reshape(w.shape)
    for how in (REFERENCE, Standardization(unbiased=True, eps_outside=True)):
        what, cache = standardize(w, 1e-6, how)
        assert np.all(what[0] == 0.0)
        dw = standardize_backward(g, cache)
        assert np.isfinite(dw).all()
        # the std's term is 0 there (PyTorch's std backward): only the scale of the centred gradient
        np.testing.assert_allclose(dw[0], cache.scale[0] * (g[0] - g[0].mean()), rtol=1e-12)


def test_the_rounded_statistics_variant_rounds_the_mean_and_1_over_std():
    w = 1e4 + 128 * np.random.default_rng(10).standard_normal((2, 3, 3, 3))
    w = w.astype(np.float16).astype(np.float64)
    _, cache = standardize(w, 1e-6, Standardization(rounding="float16"), np.float32)
    m = w.reshape(2, -1).astype(np.float32).mean(axis=1).astype(np.float16).astype(np.float32)
    assert np.all((w.astype(np.float32) - cache.centered).reshape(2, -1) == m[:, None])
    assert np.all(cache.scale.astype(np.float16).astype(np.float32) == cache.scale)


def test_validate_refuses_what_cannot_be_convolved_or_standardized():
    ws, ws_gn_op = OPS["ws"], OPS["ws_gn"]
    assert ws.validate((2, 3, 5, 5), OpParams(conv=(4, 3, 1))) is None
    assert "4..4-D" in ws.validate((2, 3, 5), OpParams(conv=(4, 3, 1)))
    assert "does not fit" in ws.validate((2, 3, 2, 2), OpParams(conv=(4, 5, 0)))
    assert "one value" in ws.validate((2, 1, 5, 5), OpParams(conv=(4, 1, 0)))
    assert "no convolution" in ws.validate((2, 3, 5, 5), OpParams())
    assert "running statistics" in ws.validate((2, 3, 5, 5), OpParams(conv=(4, 3, 1), running_stats=True))
    assert "not divisible" in ws_gn_op.validate((2, 3, 5, 5), OpParams(conv=(4, 3, 1), groups=3))
    assert ws_gn_op.validate((2, 3, 5, 5), OpParams(conv=(4, 3, 1), groups=2)) is None


@pytest.mark.parametrize("op", ["ws", "ws_gn"])
def test_every_default_case_is_valid_and_the_grid_covers_the_edges(op):
    cases = OPS[op].default_cases()
    assert all(OPS[op].validate(shape, params) is None for shape, params in cases)
    kernels = {params.conv[1] for _, params in cases}
    assert kernels == {1, 3}  # 1x1 and 3x3
    assert any(shape[0] == 1 for shape, _ in cases)  # a batch of 1
    assert any(shape[1] & (shape[1] - 1) for shape, _ in cases)  # C not a power of two
    assert {params.conv[2] for _, params in cases} >= {0, 1}  # with and without padding


def test_conv2d_backward_is_the_adjoint_of_conv2d():
    """<conv(x, w), dy> = <x, dx> = <w, dw>: the three gradients of one bilinear form."""
    rng, x, w, _ = _inputs(11, (2, 3, 6, 5), (4, 3, 3, 3), bias=False)
    dy = rng.standard_normal(conv2d(x, w, None, 1).shape)
    for by_tap in (False, True):
        dx, dw, db = conv2d_backward(dy, x, w, 1, by_tap=by_tap)
        total = np.sum(conv2d(x, w, None, 1) * dy)
        np.testing.assert_allclose(np.sum(x * dx), total, rtol=1e-12)
        np.testing.assert_allclose(np.sum(w * dw), total, rtol=1e-12)
        np.testing.assert_allclose(db, dy.sum(axis=(0, 2, 3)), rtol=1e-12)
