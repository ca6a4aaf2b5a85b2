"""Closed-form backward of every op against central finite differences, in float64.

For a random upstream gradient ``dy`` the gradients of L = sum(forward(x, w, b) * dy) with
respect to x, the weight and the bias are computed two ways: by ``Normalization.backward``
(plain and ``expanded``) and by the public ``*_backward`` functions, and by central
differences of the public forward functions. Also checks ``Op.update_running`` against the
PyTorch running-statistics rule written out directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from normcheck.ops import OPS, OpParams
from normcheck.ops.batch_norm import batch_norm, batch_norm_backward
from normcheck.ops.group_norm import group_norm, group_norm_backward
from normcheck.ops.instance_norm import instance_norm, instance_norm_backward
from normcheck.ops.layer_norm import layer_norm, layer_norm_backward
from normcheck.ops.rms_norm import rms_norm, rms_norm_backward

STEP = 1e-6
RTOL = 1e-6
ATOL = 1e-8
EPS = 1e-5


@dataclass
class FDCase:
    """One op configuration: the op, its params, the shapes and how to call the public API."""

    id: str
    op: str
    shape: tuple[int, ...]
    params: OpParams
    affine: bool = True
    has_bias: bool = True
    eval_stats: bool = False  # batch norm in eval mode, normalized by given running stats


CASES = [
    FDCase("bn-train-2d", "bn", (6, 4), OpParams(mode="train", running_stats=True)),
    FDCase("bn-train-4d", "bn", (3, 3, 2, 3), OpParams(mode="train", running_stats=True)),
    FDCase("bn-train-noaffine", "bn", (3, 2, 5), OpParams(mode="train", running_stats=True), affine=False),
    FDCase("bn-eval-3d", "bn", (3, 4, 5), OpParams(mode="eval", running_stats=True), eval_stats=True),
    FDCase("bn-eval-4d", "bn", (2, 3, 2, 3), OpParams(mode="eval", running_stats=True), eval_stats=True),
    FDCase("ln-k1", "ln", (2, 3, 7), OpParams(normalized_ndim=1)),
    FDCase("ln-k2", "ln", (2, 3, 4, 5), OpParams(normalized_ndim=2)),
    FDCase("ln-k3", "ln", (2, 3, 4, 5), OpParams(normalized_ndim=3)),
    FDCase("ln-k2-noaffine", "ln", (3, 4, 5), OpParams(normalized_ndim=2), affine=False),
    FDCase("in-affine", "in", (2, 3, 3, 4), OpParams()),
    FDCase("in-noaffine", "in", (2, 3, 3, 4), OpParams(affine=False), affine=False),
    FDCase("in-3d", "in", (3, 2, 7), OpParams()),
    FDCase("gn-G1", "gn", (2, 6, 2, 3), OpParams(groups=1)),
    FDCase("gn-G2-C/G=3", "gn", (2, 6, 2, 3), OpParams(groups=2)),
    FDCase("gn-G3", "gn", (2, 6, 2, 3), OpParams(groups=3)),
    FDCase("gn-G=C", "gn", (2, 6, 2, 3), OpParams(groups=6)),
    FDCase("gn-2d", "gn", (4, 9), OpParams(groups=3)),
    FDCase("gn-noaffine", "gn", (2, 6, 5), OpParams(groups=2, affine=False), affine=False),
    FDCase("gn-per-group-affine", "gn", (2, 6, 2, 3), OpParams(groups=3, group_affine=True)),  # ONNX opset 18
    FDCase("gn-per-group-affine-2d", "gn", (4, 6), OpParams(groups=2, group_affine=True)),
    FDCase("rms-weight-k1", "rms", (3, 4, 6), OpParams(normalized_ndim=1), has_bias=False),
    FDCase("rms-weight-k2", "rms", (2, 4, 5), OpParams(normalized_ndim=2), has_bias=False),
    FDCase("rms-noweight", "rms", (3, 4, 6), OpParams(normalized_ndim=1, affine=False), affine=False, has_bias=False),
]


@dataclass
class Inputs:
    x: np.ndarray
    dy: np.ndarray
    weight: np.ndarray | None
    bias: np.ndarray | None
    running_mean: np.ndarray | None
    running_var: np.ndarray | None


def make_inputs(case: FDCase, seed: int = 0) -> Inputs:
    rng = np.random.default_rng(seed)
    pshape = OPS[case.op].param_shape(case.shape, case.params)
    x = rng.standard_normal(case.shape) * 1.5 + 0.3
    dy = rng.standard_normal(case.shape)
    weight = 1.0 + 0.5 * rng.standard_normal(pshape) if case.affine else None
    bias = 0.5 * rng.standard_normal(pshape) if case.affine and case.has_bias else None
    rm = rv = None
    if case.op == "bn":
        c = case.shape[1]
        rm = rng.standard_normal(c) * 0.5
        rv = rng.uniform(0.5, 2.0, c)
    return Inputs(x, dy, weight, bias, rm, rv)


def public_forward(
    case: FDCase, inp: Inputs
) -> Callable[[np.ndarray, np.ndarray | None, np.ndarray | None], np.ndarray]:
    """y = f(x, weight, bias) through the op's public forward function."""
    shape = case.shape
    if case.op == "bn":
        return lambda x, w, b: batch_norm(
            x, inp.running_mean, inp.running_var, w, b, training=not case.eval_stats, eps=EPS
        )[0]
    if case.op == "ln":
        nshape = shape[len(shape) - case.params.normalized_ndim :]
        return lambda x, w, b: layer_norm(x, nshape, w, b, eps=EPS)
    if case.op == "in":
        return lambda x, w, b: instance_norm(x, None, None, w, b, use_input_stats=True, eps=EPS)[0]
    if case.op == "gn":
        return lambda x, w, b: group_norm(
            x, case.params.groups, w, b, eps=EPS, per_group_affine=case.params.group_affine
        )
    if case.op == "rms":
        nshape = shape[len(shape) - case.params.normalized_ndim :]
        return lambda x, w, b: rms_norm(x, nshape, w, eps=EPS)
    raise AssertionError(case.op)


def public_backward(case: FDCase, inp: Inputs):
    shape = case.shape
    x, dy, w, b = inp.x, inp.dy, inp.weight, inp.bias
    if case.op == "bn":
        return batch_norm_backward(
            dy, x, inp.running_mean, inp.running_var, w, b, training=not case.eval_stats, eps=EPS
        )
    if case.op == "ln":
        return layer_norm_backward(dy, x, shape[len(shape) - case.params.normalized_ndim :], w, b, eps=EPS)
    if case.op == "in":
        return instance_norm_backward(dy, x, w, b, eps=EPS)
    if case.op == "gn":
        return group_norm_backward(dy, x, case.params.groups, w, b, eps=EPS, per_group_affine=case.params.group_affine)
    if case.op == "rms":
        return rms_norm_backward(dy, x, shape[len(shape) - case.params.normalized_ndim :], w, eps=EPS)
    raise AssertionError(case.op)


def generic_backward(case: FDCase, inp: Inputs, expanded: bool):
    norm = OPS[case.op].normalization(case.shape, case.params)
    stats = None
    if case.eval_stats:
        b = (1, case.shape[1]) + (1,) * (len(case.shape) - 2)
        stats = (inp.running_mean.reshape(b), inp.running_var.reshape(b))
    _, cache = norm.forward(inp.x, EPS, inp.weight, inp.bias, stats=stats)
    return norm.backward(inp.dy, cache, expanded=expanded)


def central_difference(loss: Callable[[np.ndarray], float], a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    grad = np.empty_like(a)
    for idx in np.ndindex(a.shape):
        orig = a[idx]
        a[idx] = orig + STEP
        up = loss(a)
        a[idx] = orig - STEP
        down = loss(a)
        a[idx] = orig
        grad[idx] = (up - down) / (2 * STEP)
    return grad


def numeric_grads(case: FDCase, inp: Inputs) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, float]:
    f = public_forward(case, inp)
    dy = inp.dy

    def loss(x, w, b):
        return float(np.sum(f(x, w, b) * dy))

    dx = central_difference(lambda x: loss(x, inp.weight, inp.bias), inp.x)
    dw = None if inp.weight is None else central_difference(lambda w: loss(inp.x, w, inp.bias), inp.weight)
    db = None if inp.bias is None else central_difference(lambda b: loss(inp.x, inp.weight, b), inp.bias)
    # rounding error of a central difference is about ulp(L) / STEP: scale atol with |L|'s terms
    scale = 1.0 + float(np.sum(np.abs(f(inp.x, inp.weight, inp.bias) * dy)))
    return dx, dw, db, scale


def assert_grads_match(grads, want, scale: float) -> None:
    dx, dw, db = want
    atol = ATOL * scale
    assert grads.dx.shape == dx.shape
    np.testing.assert_allclose(grads.dx, dx, rtol=RTOL, atol=atol, err_msg="dx")
    if dw is None:
        assert grads.dweight is None
    else:
        assert grads.dweight is not None and grads.dweight.shape == dw.shape
        np.testing.assert_allclose(grads.dweight, dw, rtol=RTOL, atol=atol, err_msg="dweight")
    if db is None:
        assert grads.dbias is None
    else:
        assert grads.dbias is not None and grads.dbias.shape == db.shape
        np.testing.assert_allclose(grads.dbias, db, rtol=RTOL, atol=atol, err_msg="dbias")


@pytest.fixture(scope="module", params=CASES, ids=[c.id for c in CASES])
def fd(request):
    case = request.param
    assert int(np.prod(case.shape)) <= 200
    inp = make_inputs(case)
    *want, scale = numeric_grads(case, inp)
    # a sanity check that the numeric gradient is not trivially zero (a real test needs signal)
    assert np.abs(want[0]).max() > 1e-3
    return case, inp, want, scale


@pytest.mark.parametrize("expanded", [False, True], ids=["xhat", "expanded"])
def test_normalization_backward_matches_finite_differences(fd, expanded):
    case, inp, want, scale = fd
    assert_grads_match(generic_backward(case, inp, expanded), want, scale)


def test_public_backward_matches_finite_differences(fd):
    case, inp, want, scale = fd
    assert_grads_match(public_backward(case, inp), want, scale)


def test_finite_differences_detect_a_wrong_gradient():
    """The comparison is tight enough to catch a gradient that forgets the variance term."""
    case = next(c for c in CASES if c.id == "ln-k1")
    inp = make_inputs(case)
    dx, _, _, scale = numeric_grads(case, inp)
    norm = OPS["ln"].normalization(case.shape, case.params)
    _, cache = norm.forward(inp.x, EPS, inp.weight, inp.bias)
    dxhat = inp.dy.reshape(norm.view) * cache.weight
    wrong = (dxhat - dxhat.mean(axis=norm.axes, keepdims=True)) * cache.rstd  # no xhat * proj term
    assert not np.allclose(wrong, dx, rtol=RTOL, atol=ATOL * scale)


def test_rms_default_eps_backward_matches_finite_differences():
    """rms_norm(eps=None) uses the dtype's epsilon in both directions."""
    rng = np.random.default_rng(3)
    x, dy, w = rng.standard_normal((3, 5)), rng.standard_normal((3, 5)), 1 + 0.3 * rng.standard_normal(5)
    grads = rms_norm_backward(dy, x, (5,), w, eps=None, dtype="float64")
    dx = central_difference(lambda a: float(np.sum(rms_norm(a, (5,), w, eps=None, dtype="float64") * dy)), x)
    np.testing.assert_allclose(grads.dx, dx, rtol=RTOL, atol=ATOL * 20)


# -- running statistics ------------------------------------------------------------------


def _expected_bn_running(x, rm, rv, momentum):
    c = x.shape[1]
    per_channel = np.moveaxis(x, 1, 0).reshape(c, -1)
    mean = per_channel.mean(axis=1)
    var = per_channel.var(axis=1, ddof=1)
    return (1 - momentum) * rm + momentum * mean, (1 - momentum) * rv + momentum * var


def _expected_in_running(x, rm, rv, momentum):
    n, c = x.shape[:2]
    per_instance = x.reshape(n, c, -1)
    mean = per_instance.mean(axis=2).mean(axis=0)
    var = per_instance.var(axis=2, ddof=1).mean(axis=0)
    return (1 - momentum) * rm + momentum * mean, (1 - momentum) * rv + momentum * var


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (2, 3, 2, 4), (2, 2, 2, 3, 2)])
@pytest.mark.parametrize("momentum", [0.1, 0.35])
def test_bn_update_running_matches_formula(shape, momentum):
    rng = np.random.default_rng(11)
    x = 2.0 * rng.standard_normal(shape) + 1.0
    rm, rv = rng.standard_normal(shape[1]), rng.uniform(0.5, 2.0, shape[1])
    want_m, want_v = _expected_bn_running(x, rm, rv, momentum)
    params = OpParams(mode="train", running_stats=True)
    got_m, got_v = OPS["bn"].update_running(x, params, rm, rv, momentum)
    np.testing.assert_allclose(got_m, want_m, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got_v, want_v, rtol=1e-12, atol=1e-14)
    # the public function gives the same update
    _, pub_m, pub_v = batch_norm(x, rm, rv, training=True, momentum=momentum)
    np.testing.assert_allclose(pub_m, want_m, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(pub_v, want_v, rtol=1e-12, atol=1e-14)
    # the Bessel correction matters: a biased variance would be visibly different
    biased = (1 - momentum) * rv + momentum * np.moveaxis(x, 1, 0).reshape(shape[1], -1).var(axis=1)
    assert not np.allclose(got_v, biased, rtol=1e-6)


@pytest.mark.parametrize("shape", [(3, 2, 5), (2, 3, 2, 3), (4, 2, 2, 2, 2)])
@pytest.mark.parametrize("momentum", [0.1, 0.35])
def test_in_update_running_matches_formula(shape, momentum):
    rng = np.random.default_rng(12)
    # per-sample offsets and scales so averaging per-instance stats differs from pooling the batch
    x = rng.standard_normal(shape) * rng.uniform(0.5, 3.0, shape[:2] + (1,) * (len(shape) - 2))
    x = x + rng.standard_normal(shape[:2] + (1,) * (len(shape) - 2)) * 2
    rm, rv = rng.standard_normal(shape[1]), rng.uniform(0.5, 2.0, shape[1])
    want_m, want_v = _expected_in_running(x, rm, rv, momentum)
    params = OpParams(mode="train", running_stats=True)
    got_m, got_v = OPS["in"].update_running(x, params, rm, rv, momentum)
    np.testing.assert_allclose(got_m, want_m, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got_v, want_v, rtol=1e-12, atol=1e-14)
    _, pub_m, pub_v = instance_norm(x, rm, rv, use_input_stats=True, momentum=momentum)
    np.testing.assert_allclose(pub_m, want_m, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(pub_v, want_v, rtol=1e-12, atol=1e-14)
    # per-instance averaging is not the batch-norm pooled variance
    pooled = _expected_bn_running(x, rm, rv, momentum)[1]
    assert not np.allclose(got_v, pooled, rtol=1e-6)


def test_update_running_does_not_write_inputs():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((4, 3, 2))
    rm, rv = np.zeros(3), np.ones(3)
    for a in (x, rm, rv):
        a.setflags(write=False)
    m, v = OPS["bn"].update_running(x, OpParams(running_stats=True), rm, rv, 0.1)
    assert np.all(rm == 0) and np.all(rv == 1)
    assert not np.allclose(m, 0) and not np.allclose(v, 1)


def test_eval_mode_leaves_running_stats_unchanged():
    rng = np.random.default_rng(14)
    x = rng.standard_normal((4, 3, 2))
    rm, rv = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    y, m, v = batch_norm(x, rm, rv, training=False)
    np.testing.assert_array_equal(m, rm)
    np.testing.assert_array_equal(v, rv)
    want = (x - rm[None, :, None]) / np.sqrt(rv[None, :, None] + 1e-5)
    np.testing.assert_allclose(y, want, rtol=1e-13, atol=1e-14)
