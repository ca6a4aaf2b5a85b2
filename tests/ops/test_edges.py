"""The reference at the edges PyTorch defines: what it raises on, empty tensors, eps=None,
the running-variance conventions and ONNX's per-group affine group norm.

The behaviours were measured on PyTorch's CPU functions (tests/external/test_torch_opinfo.py
checks the reference against torch itself); these tests need no framework.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from normcheck.ops import OPS, OpParams
from normcheck.ops.batch_norm import batch_norm, batch_norm_backward
from normcheck.ops.group_norm import group_norm, group_norm_backward
from normcheck.ops.instance_norm import instance_norm, instance_norm_backward
from normcheck.ops.layer_norm import layer_norm, layer_norm_backward
from normcheck.ops.rms_norm import default_eps, rms_norm, rms_norm_backward
from normcheck.reference import reference
from normcheck.verify.inputs import make_problem

EPS = 1e-5


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture
def no_warnings():
    """Any NumPy warning (empty slice, 0/0) fails the test."""
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        yield


# -- layer and RMS norm: normalized_shape and the parameters' shapes ---------------------------

X234 = np.arange(24.0).reshape(2, 3, 4)


@pytest.mark.parametrize("fn", [layer_norm, rms_norm], ids=["ln", "rms"])
@pytest.mark.parametrize(
    ("normalized_shape", "needle"),
    [
        ((5,), "Given normalized_shape=[5], expected input with shape [*, 5], but got input of size [2, 3, 4]"),
        ((4, 3), "Given normalized_shape=[4, 3]"),  # the right sizes, in the wrong order
        ((1, 2, 3, 4), "Given normalized_shape=[1, 2, 3, 4]"),  # more dims than the input
        ((), "Expected normalized_shape to be at least 1-dimensional"),
    ],
)
def test_a_normalized_shape_that_is_not_the_trailing_dims_raises(fn, normalized_shape, needle):
    with pytest.raises(ValueError) as info:
        fn(X234, normalized_shape)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("name", "shape"),
    [("weight", (12,)), ("weight", (4, 3)), ("weight", (4,)), ("weight", ()), ("bias", (12,)), ("bias", (1, 3, 4))],
)
def test_layer_norm_parameters_must_have_exactly_the_normalized_shape(name, shape):
    with pytest.raises(ValueError) as info:
        layer_norm(X234, (3, 4), **{name: np.ones(shape)})
    assert f"Expected {name} to be of shape [3, 4]" in str(info.value)
    assert f"got {name} of shape {list(shape)}" in str(info.value)
    with pytest.raises(ValueError):
        layer_norm_backward(X234, X234, (3, 4), **{name: np.ones(shape)})


@pytest.mark.parametrize("shape", [(12,), (1, 4), (3,)])
def test_rms_norm_weight_must_have_exactly_the_normalized_shape(shape):
    normalized = (4,) if shape == (1, 4) else (3, 4)
    with pytest.raises(ValueError, match="Expected weight to be of shape"):
        rms_norm(X234, normalized, np.ones(shape))
    with pytest.raises(ValueError, match="Expected weight to be of shape"):
        rms_norm_backward(X234, X234, normalized, np.ones(shape))


def test_an_int_normalized_shape_is_one_trailing_dim():
    w = 1 + _rng().standard_normal(4)
    np.testing.assert_array_equal(layer_norm(X234, 4, w), layer_norm(X234, (4,), w))
    np.testing.assert_array_equal(rms_norm(X234, 4, w), rms_norm(X234, [4], w))


# -- RMS norm's eps=None ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("array_dtype", "want"),
    [
        (np.float16, np.finfo(np.float32).eps),  # half inputs compute in float32
        (np.float32, np.finfo(np.float32).eps),
        (np.float64, np.finfo(np.float64).eps),
    ],
)
def test_rms_eps_none_follows_the_input_arrays_dtype(array_dtype, want):
    x = np.full((2, 4), 1e-4, dtype=array_dtype)  # mean(x^2) near 1e-8: eps shows
    x64 = x.astype(np.float64)
    ms = np.mean(x64 * x64, axis=-1, keepdims=True)
    np.testing.assert_allclose(rms_norm(x, (4,)), x64 / np.sqrt(ms + float(want)), rtol=1e-12)


def test_rms_eps_none_can_follow_the_cases_dtype_instead():
    """A float64 array holding a float16 case's values: ``dtype`` names the case's dtype."""
    x = np.full((2, 4), 1e-4)
    eps32 = float(np.finfo(np.float32).eps)
    np.testing.assert_allclose(rms_norm(x, (4,), dtype="float16"), x / np.sqrt(1e-8 + eps32), rtol=1e-12)
    np.testing.assert_allclose(rms_norm(x, (4,)), x / np.sqrt(1e-8 + 2.0**-52), rtol=1e-12)
    assert not np.allclose(rms_norm(x, (4,)), rms_norm(x, (4,), dtype="float32"), rtol=1e-3)


def test_rms_default_eps_refuses_a_dtype_torch_has_no_rule_for():
    with pytest.raises(ValueError, match="no default eps for int64"):
        default_eps("int64")


# -- batch norm -------------------------------------------------------------------------------


def _per_channel(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)


@pytest.mark.parametrize(("unbiased", "ddof"), [(True, 1), (False, 0)])
def test_batch_norm_running_variance_convention_is_selectable(unbiased, ddof):
    x = 2 * _rng(1).standard_normal((4, 3, 5)) + 1
    rm, rv = np.zeros(3), np.ones(3)
    y, new_m, new_v = batch_norm(x, rm, rv, training=True, momentum=0.25, unbiased_running_var=unbiased)
    np.testing.assert_allclose(new_m, 0.25 * _per_channel(x).mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(new_v, 0.75 + 0.25 * _per_channel(x).var(axis=1, ddof=ddof), rtol=1e-12)
    # the batch itself is normalized with the biased variance either way
    np.testing.assert_array_equal(y, batch_norm(x, None, None, training=True)[0])


def test_batch_norm_running_variance_is_unbiased_by_default():
    x = _rng(2).standard_normal((3, 2))
    _, _, default = batch_norm(x, np.zeros(2), np.ones(2), training=True)
    _, _, unbiased = batch_norm(x, np.zeros(2), np.ones(2), training=True, unbiased_running_var=True)
    _, _, population = batch_norm(x, np.zeros(2), np.ones(2), training=True, unbiased_running_var=False)
    np.testing.assert_array_equal(default, unbiased)
    assert not np.allclose(default, population)


@pytest.mark.parametrize("shape", [(0, 3), (0, 3, 4), (2, 3, 0), (2, 0), (0,)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_of_an_empty_batch_leaves_running_statistics_unchanged(shape, training, no_warnings):
    c = shape[1] if len(shape) > 1 else 0
    rm, rv = _rng(3).standard_normal(c), _rng(4).uniform(0.5, 2, c)
    y, new_m, new_v = batch_norm(np.zeros(shape), rm, rv, training=training, momentum=0.5)
    assert y.shape == shape
    np.testing.assert_array_equal(new_m, rm)
    np.testing.assert_array_equal(new_v, rv)


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1), (1, 4, 1, 1)])
def test_batch_norm_training_on_one_value_per_channel_raises_as_torch_does(shape):
    x = _rng(5).standard_normal(shape)
    c = shape[1]
    message = f"Expected more than 1 value per channel when training, got input size {list(shape)}"
    with pytest.raises(ValueError) as info:
        batch_norm(x, np.zeros(c), np.ones(c), training=True)
    assert str(info.value) == message
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        batch_norm(x, training=True)  # no running statistics: still raises
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        batch_norm_backward(x, x, training=True)
    # evaluation normalizes with the running statistics: defined
    y, _, _ = batch_norm(x, np.zeros(c), np.full(c, 4.0), training=False, eps=0.0)
    np.testing.assert_allclose(y, x / 2, rtol=1e-15)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"weight": np.ones(2)}, "Expected weight to be of shape [4]"),
        ({"bias": np.ones((1, 4))}, "Expected bias to be of shape [4]"),
        ({"running_mean": np.zeros(2), "running_var": np.ones(4)}, "Expected running_mean to be of shape [4]"),
    ],
)
def test_batch_norm_parameters_must_be_per_channel(kwargs, needle):
    with pytest.raises(ValueError) as info:
        batch_norm(np.ones((2, 4, 3)), training=True, **kwargs)
    assert needle in str(info.value)


def test_batch_norm_of_a_non_empty_1d_input_raises():
    with pytest.raises(ValueError, match=r"\(N, C, \.\.\.\) input"):
        batch_norm(np.ones(3), training=True)


# -- instance norm ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 3, 1), (1, 3, 1, 1), (2, 2, 1, 1, 1)])
def test_instance_norm_on_one_spatial_value_raises_as_torch_does(shape):
    x = _rng(6).standard_normal(shape)
    c = shape[1]
    message = f"Expected more than 1 spatial element when training, got input size {list(shape)}"
    with pytest.raises(ValueError) as info:
        instance_norm(x)
    assert str(info.value) == message
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        instance_norm(x, np.zeros(c), np.ones(c), use_input_stats=True)
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        instance_norm_backward(x, x)
    # with the running statistics instead: defined
    y, _, _ = instance_norm(x, np.zeros(c), np.full(c, 4.0), use_input_stats=False, eps=0.0)
    np.testing.assert_allclose(y, x / 2, rtol=1e-15)


def test_instance_norm_of_an_empty_spatial_extent_leaves_running_statistics_unchanged(no_warnings):
    rm, rv = np.array([0.5, -1.0, 2.0]), np.array([1.5, 0.5, 3.0])
    y, new_m, new_v = instance_norm(np.zeros((2, 3, 0)), rm, rv, momentum=0.5)
    assert y.shape == (2, 3, 0)
    np.testing.assert_array_equal(new_m, rm)
    np.testing.assert_array_equal(new_v, rv)


# -- group norm -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "groups", "kwargs", "needle"),
    [
        ((4,), 2, {}, "Expected at least 2 dimensions for input tensor but received 1"),
        ((2, 7, 4), 2, {}, "Expected number of channels in input to be divisible by num_groups"),
        ((2, 4, 3), 0, {}, "divisible by num_groups"),
        ((2, 4, 3), 2, {"weight": np.ones(2)}, "Expected weight to be of shape [4]"),
        ((2, 4, 3), 2, {"bias": np.ones((4, 1))}, "Expected bias to be of shape [4]"),
        ((2, 4, 3), 2, {"weight": np.ones(4), "per_group_affine": True}, "Expected weight to be of shape [2]"),
    ],
)
def test_group_norm_raises_where_torch_does(shape, groups, kwargs, needle):
    with pytest.raises(ValueError) as info:
        group_norm(np.ones(shape), groups, **kwargs)
    assert needle in str(info.value)


@pytest.mark.parametrize(("shape", "groups"), [((2, 6, 5), 2), ((3, 6, 2, 2), 3), ((2, 4), 1), ((2, 6, 3), 6)])
def test_per_group_affine_equals_per_channel_affine_repeated_per_group(shape, groups):
    rng = _rng(7)
    x, dy = rng.standard_normal(shape) * 2 + 1, rng.standard_normal(shape)
    w, b = 1 + 0.5 * rng.standard_normal(groups), 0.5 * rng.standard_normal(groups)
    per = shape[1] // groups
    wc, bc = np.repeat(w, per), np.repeat(b, per)
    y = group_norm(x, groups, w, b, eps=EPS, per_group_affine=True)
    np.testing.assert_allclose(y, group_norm(x, groups, wc, bc, eps=EPS), rtol=1e-13, atol=1e-14)
    g = group_norm_backward(dy, x, groups, w, b, eps=EPS, per_group_affine=True)
    gc = group_norm_backward(dy, x, groups, wc, bc, eps=EPS)
    np.testing.assert_allclose(g.dx, gc.dx, rtol=1e-12, atol=1e-13)
    # a group's parameter gradient is the sum of its channels' gradients
    assert g.dweight is not None and g.dbias is not None and gc.dweight is not None and gc.dbias is not None
    assert g.dweight.shape == g.dbias.shape == (groups,)
    np.testing.assert_allclose(g.dweight, gc.dweight.reshape(groups, per).sum(axis=1), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(g.dbias, gc.dbias.reshape(groups, per).sum(axis=1), rtol=1e-12, atol=1e-13)


def test_per_group_affine_is_not_per_channel_affine():
    """With G < C a (G,) weight read per channel would be the wrong shape, and a per-group
    weight applied to the first G channels would differ: the option changes the result."""
    x = _rng(8).standard_normal((2, 4, 3))
    w = np.array([2.0, -1.0])
    y = group_norm(x, 2, w, per_group_affine=True)
    y_first_channels = group_norm(x, 2, np.array([2.0, -1.0, 1.0, 1.0]))
    assert not np.allclose(y, y_first_channels)


def test_per_group_affine_in_op_params():
    params = OpParams(groups=2, group_affine=True)
    assert OPS["gn"].param_shape((2, 6, 3), params) == (2,)
    assert OPS["gn"].validate((2, 6, 3), params) is None
    assert "per-group affine" in params.label()
    assert OPS["ln"].validate((2, 6), OpParams(normalized_ndim=1, group_affine=True)) is not None
    # a problem of it: the reference takes (G,) parameters
    problem = make_problem("gn", (2, 6, 3), params, "float64", "normal", EPS)
    assert problem.weight is not None and problem.weight.shape == (2,)
    out = reference(problem)
    assert out["grad_weight"].shape == out["grad_bias"].shape == (2,)
    want = group_norm(problem.x, 2, problem.weight, problem.bias, eps=EPS, per_group_affine=True)
    np.testing.assert_allclose(out["forward"], want, rtol=1e-13, atol=1e-14)


def test_group_affine_stays_out_of_the_seed():
    """Cases without it keep the inputs they always had (the seed hashes the params' repr)."""
    assert repr(OpParams(groups=2)) == repr(OpParams(groups=2, group_affine=True))
    assert OpParams(groups=2) != OpParams(groups=2, group_affine=True)


# -- what the plan may check ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "shape", "params", "valid"),
    [
        ("bn", (1, 3), OpParams(mode="train", running_stats=True), False),
        ("bn", (1, 3), OpParams(mode="eval", running_stats=True), True),
        ("bn", (0, 3), OpParams(mode="train", running_stats=True), True),  # torch: unchanged stats
        ("bn", (2, 3, 0), OpParams(mode="train", running_stats=True), True),
        ("in", (2, 3, 1), OpParams(), False),  # torch raises without running statistics too
        ("in", (2, 3, 1), OpParams(mode="train", running_stats=True), False),
        ("in", (2, 3, 1), OpParams(mode="eval", running_stats=True), True),
        ("in", (2, 3, 0), OpParams(), True),
        ("gn", (2, 4, 1), OpParams(groups=4), True),  # torch defines it: the bias
    ],
)
def test_validate_refuses_what_torch_raises_on(op, shape, params, valid):
    reason = OPS[op].validate(shape, params)
    assert (reason is None) == valid
    if not valid:
        assert reason is not None and reason.endswith("torch raises")


@pytest.mark.parametrize(
    ("op", "shape", "cases"),
    [("gn", (2, 0, 3), [OpParams(groups=1)]), ("gn", (0, 4, 3), [OpParams(groups=g) for g in (1, 2, 4)])],
)
def test_group_norm_variants_of_empty_shapes(op, shape, cases):
    assert OPS[op].cases_for_shape(shape, None, None) == cases


# -- empty tensors through the reference ------------------------------------------------------

EMPTY = [
    ("ln", (0, 8), OpParams(normalized_ndim=1)),
    ("ln", (8, 0), OpParams(normalized_ndim=1)),
    ("ln", (2, 0, 4), OpParams(normalized_ndim=2)),
    ("rms", (0, 8), OpParams(normalized_ndim=1)),
    ("rms", (8, 0), OpParams(normalized_ndim=1)),
    ("bn", (0, 3), OpParams(mode="train", running_stats=True)),
    ("bn", (2, 3, 0), OpParams(mode="train", running_stats=True)),
    ("bn", (0, 3, 4), OpParams(mode="eval", running_stats=True)),
    ("bn", (2, 0), OpParams(mode="train", running_stats=True)),
    ("in", (0, 3, 4), OpParams(mode="train", running_stats=True)),
    ("in", (2, 3, 0), OpParams()),
    ("in", (2, 0, 4), OpParams()),
    ("gn", (0, 4, 3), OpParams(groups=2)),
    ("gn", (2, 4, 0), OpParams(groups=2)),
    ("gn", (2, 0, 3), OpParams(groups=1)),
]


@pytest.mark.parametrize(("op", "shape", "params"), EMPTY, ids=[f"{op}-{s}" for op, s, _ in EMPTY])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_reference_of_an_empty_tensor(op, shape, params, dtype, no_warnings):
    """Outputs of the input's shape, parameter gradients of zeros (sums over nothing), running
    statistics unchanged; no NumPy warning on the way, in float64 or the witness's dtypes."""
    assert OPS[op].validate(shape, params) is None
    problem = make_problem(op, shape, params, "float32", "constant", EPS)
    out = reference(problem, dtype)
    assert out["forward"].shape == out["grad_input"].shape == shape
    for name in ("grad_weight", "grad_bias"):
        if name in out:
            np.testing.assert_array_equal(out[name], 0)
    if params.running_stats:
        np.testing.assert_array_equal(out["running_mean"], problem.running_mean)
        np.testing.assert_array_equal(out["running_var"], problem.running_var)
