"""Layer norm over any set of axes (OpParams.axes): canonical axes, trailing sets as
normalized_ndim, the reference against NumPy's own moved-axis layer norm, finite differences,
and the seeds of the existing cases unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from normcheck.ops import OPS, OpParams
from normcheck.ops.layer_norm import AXES_GRID, axes_cases, axes_params, canonical_axes
from normcheck.problem import case_seed
from normcheck.reference import reference
from normcheck.verify.inputs import make_problem

LN = OPS["ln"]


def test_canonical_axes():
    assert canonical_axes(4, [-3]) == (1,)
    assert canonical_axes(4, [3, 1]) == (1, 3)
    for bad in ([], [4], [-5], [1, -3]):
        with pytest.raises(ValueError):
            canonical_axes(4, bad)


def test_trailing_axes_are_normalized_ndim_and_others_axes():
    assert axes_params((2, 3, 4, 5), (1, 2, 3)) == OpParams(normalized_ndim=3)
    assert axes_params((2, 3, 4, 5), (-1,)) == OpParams(normalized_ndim=1)
    assert axes_params((2, 3, 4, 5), (1,)) == OpParams(axes=(1,))
    assert axes_params((2, 3, 4, 5), (1, 2)) == OpParams(axes=(1, 2))
    invalid = axes_params((2, 3), (2,))
    assert LN.validate((2, 3), invalid) is not None


def test_axes_are_out_of_the_seed_and_in_the_label():
    plain, over = OpParams(), OpParams(axes=(1,))
    assert repr(plain) == repr(over)  # the seed hashes the repr: existing cases keep their inputs
    assert case_seed(0, "ln", (2, 3), plain) == case_seed(0, "ln", (2, 3), OpParams())
    assert over.label() == "axes=1" and plain != over


def test_default_axes_grid_keeps_the_shapes_that_have_the_axes():
    cases = axes_cases([(1,)], [])
    assert [s for s, _ in cases] == list(AXES_GRID)
    assert all(LN.validate(s, p) is None for s, p in cases)
    five = axes_cases([(4,)], [])
    assert [s for s, _ in five] == [s for s in AXES_GRID if len(s) == 5]


def _moved_layer_norm(x, axes, w, b, eps):
    """Layer norm over ``axes`` by NumPy alone: the axes moved last, normalized, moved back."""
    rest = [a for a in range(x.ndim) if a not in axes]
    v = np.transpose(x, rest + list(axes))
    k = len(axes)
    red = tuple(range(v.ndim - k, v.ndim))
    mean = v.mean(axis=red, keepdims=True)
    var = ((v - mean) ** 2).mean(axis=red, keepdims=True)
    y = (v - mean) / np.sqrt(var + eps) * w + b
    return np.transpose(y, np.argsort(rest + list(axes)))


@pytest.mark.parametrize(("shape", "axes"), [((2, 6, 5, 7), (1,)), ((3, 4, 7), (1,)), ((2, 3, 2, 3, 4), (1, 2))])
@pytest.mark.parametrize("kind", ["normal", "constant", "tiny_scale"])
def test_reference_is_the_moved_axis_layer_norm(shape, axes, kind):
    p = make_problem("ln", shape, OpParams(axes=axes), "float64", kind, 1e-5)
    assert p.weight is not None and p.weight.shape == tuple(shape[a] for a in axes)
    want = _moved_layer_norm(p.x, axes, p.weight, p.bias, 1e-5)
    np.testing.assert_allclose(reference(p)["forward"], want, atol=1e-11)


def test_axes_gradients_match_finite_differences():
    p = make_problem("ln", (2, 3, 2, 2), OpParams(axes=(1,)), "float64", "normal", 1e-5)
    got = reference(p)
    step = 1e-6

    def loss(x):
        return float(np.sum(_moved_layer_norm(x, (1,), p.weight, p.bias, 1e-5) * p.dy))

    numeric = np.zeros_like(p.x)
    for i in np.ndindex(p.x.shape):
        plus, minus = p.x.copy(), p.x.copy()
        plus[i] += step
        minus[i] -= step
        numeric[i] = (loss(plus) - loss(minus)) / (2 * step)
    np.testing.assert_allclose(got["grad_input"], numeric, rtol=1e-6, atol=1e-8)
    xhat = _moved_layer_norm(p.x, (1,), np.ones(3), np.zeros(3), 1e-5)
    np.testing.assert_allclose(got["grad_weight"], (p.dy * xhat).sum(axis=(0, 2, 3)), atol=1e-12)
    np.testing.assert_allclose(got["grad_bias"], p.dy.sum(axis=(0, 2, 3)), atol=1e-12)


def test_only_layer_norm_takes_axes():
    assert OPS["rms"].validate((2, 3, 4), OpParams(axes=(1,))) is not None
    assert LN.validate((2, 3, 4), OpParams(axes=(1,), normalized_ndim=1)) is not None
