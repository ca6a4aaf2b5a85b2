"""Identities between the ops, hand-written formulas, and the shape of ``reference``'s output."""

from __future__ import annotations

import numpy as np
import pytest

from normcheck.dtypes import quantize
from normcheck.ops import OPS, OpParams
from normcheck.ops import rms_norm as rms_module
from normcheck.ops.batch_norm import batch_norm, batch_norm_backward
from normcheck.ops.group_norm import group_norm, group_norm_backward
from normcheck.ops.instance_norm import instance_norm, instance_norm_backward
from normcheck.ops.layer_norm import layer_norm, layer_norm_backward
from normcheck.ops.rms_norm import rms_norm, rms_norm_backward
from normcheck.reference import reference
from normcheck.verify.inputs import make_problem

EPS = 1e-5
TIGHT = {"rtol": 1e-12, "atol": 1e-12}


def _rng(seed=0):
    return np.random.default_rng(seed)


def _data(shape, seed=0, with_bias=True):
    rng = _rng(seed)
    c = shape[1]
    x = rng.standard_normal(shape) * 2 + 0.5
    dy = rng.standard_normal(shape)
    w = 1 + 0.5 * rng.standard_normal(c)
    b = 0.5 * rng.standard_normal(c) if with_bias else None
    return x, dy, w, b


# -- hand-written forwards ------------------------------------------------------------------


def test_batch_norm_train_matches_hand_formula():
    x, _, w, b = _data((4, 3, 2, 5))
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    want = (x - mean) / np.sqrt(var + EPS) * w[:, None, None] + b[:, None, None]
    y, _, _ = batch_norm(x, None, None, w, b, training=True, eps=EPS)
    np.testing.assert_allclose(y, want, **TIGHT)


def test_instance_norm_matches_hand_formula():
    x, _, w, b = _data((3, 4, 5, 2))
    mean = x.mean(axis=(2, 3), keepdims=True)
    var = x.var(axis=(2, 3), keepdims=True)
    want = (x - mean) / np.sqrt(var + EPS) * w[:, None, None] + b[:, None, None]
    y, _, _ = instance_norm(x, weight=w, bias=b, eps=EPS)
    np.testing.assert_allclose(y, want, **TIGHT)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_layer_norm_matches_hand_formula(k):
    rng = _rng(k)
    shape = (2, 3, 4, 5)
    x = rng.standard_normal(shape) * 3 - 1
    nshape = shape[4 - k :]
    w, b = 1 + rng.standard_normal(nshape) * 0.5, rng.standard_normal(nshape)
    flat = x.reshape(int(np.prod(shape[: 4 - k])), -1)
    mean = flat.mean(axis=1, keepdims=True)
    var = ((flat - mean) ** 2).mean(axis=1, keepdims=True)
    want = ((flat - mean) / np.sqrt(var + EPS)).reshape(shape) * w + b
    np.testing.assert_allclose(layer_norm(x, nshape, w, b, eps=EPS), want, **TIGHT)


@pytest.mark.parametrize("groups", [1, 2, 3, 6])
def test_group_norm_matches_hand_formula(groups):
    x, _, w, b = _data((2, 6, 3, 2), seed=groups)
    want = np.empty_like(x)
    cpg = 6 // groups
    for n in range(2):
        for g in range(groups):
            chunk = x[n, g * cpg : (g + 1) * cpg]
            want[n, g * cpg : (g + 1) * cpg] = (chunk - chunk.mean()) / np.sqrt(chunk.var() + EPS)
    want = want * w[:, None, None] + b[:, None, None]
    np.testing.assert_allclose(group_norm(x, groups, w, b, eps=EPS), want, **TIGHT)


@pytest.mark.parametrize("with_weight", [True, False])
@pytest.mark.parametrize("k", [1, 2])
def test_rms_norm_matches_hand_formula(with_weight, k):
    rng = _rng(7)
    shape = (3, 4, 6)
    x = rng.standard_normal(shape) + 0.7  # nonzero mean: RMS norm must not subtract it
    nshape = shape[3 - k :]
    w = 1 + 0.5 * rng.standard_normal(nshape) if with_weight else None
    axes = tuple(range(3 - k, 3))
    want = x / np.sqrt(np.mean(x * x, axis=axes, keepdims=True) + EPS)
    if with_weight:
        want = want * w
    np.testing.assert_allclose(rms_norm(x, nshape, w, eps=EPS), want, **TIGHT)
    # and it is not layer norm: the mean is kept
    assert not np.allclose(rms_norm(x, nshape, None, eps=EPS), layer_norm(x, nshape, eps=EPS), atol=1e-3)


def test_rms_norm_default_eps_is_used_when_eps_is_none():
    x = np.full((2, 4), 1e-4)  # mean(x^2) = 1e-8, comparable with float32's eps (1.19e-7)
    eps32 = float(np.finfo(np.float32).eps)
    want = x / np.sqrt(1e-8 + eps32)
    np.testing.assert_allclose(rms_norm(x, (4,), eps=None, dtype="float16"), want, rtol=1e-12)
    np.testing.assert_allclose(rms_norm(x, (4,), eps=None, dtype="float64"), x / np.sqrt(1e-8 + 2.0**-52), rtol=1e-12)


@pytest.mark.parametrize(
    ("dtype", "want"),
    [
        ("float16", np.finfo(np.float32).eps),
        ("bfloat16", np.finfo(np.float32).eps),
        ("float32", np.finfo(np.float32).eps),
        ("float64", np.finfo(np.float64).eps),
    ],
)
def test_rms_default_eps(dtype, want):
    got = rms_module.default_eps(dtype)
    assert isinstance(got, float)
    assert got == float(want)


# -- identities between ops ---------------------------------------------------------------


def test_group_norm_one_group_equals_layer_norm_over_chw():
    x, dy, w, b = _data((3, 4, 2, 3), seed=1)
    nshape = x.shape[1:]
    w_full = np.broadcast_to(w[:, None, None], nshape).copy()
    b_full = np.broadcast_to(b[:, None, None], nshape).copy()
    np.testing.assert_allclose(group_norm(x, 1, w, b, eps=EPS), layer_norm(x, nshape, w_full, b_full, eps=EPS), **TIGHT)
    g = group_norm_backward(dy, x, 1, w, b, eps=EPS)
    ln = layer_norm_backward(dy, x, nshape, w_full, b_full, eps=EPS)
    np.testing.assert_allclose(g.dx, ln.dx, **TIGHT)
    # per-channel parameters: their gradient is the per-element one summed over H, W
    np.testing.assert_allclose(g.dweight, ln.dweight.sum(axis=(1, 2)), **TIGHT)
    np.testing.assert_allclose(g.dbias, ln.dbias.sum(axis=(1, 2)), **TIGHT)
    assert g.dweight.shape == (4,) and g.dbias.shape == (4,)


@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (3, 4, 6), (2, 3, 2, 2, 3)])
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_c_groups_equals_instance_norm(shape, affine):
    x, dy, w, b = _data(shape, seed=2)
    if not affine:
        w = b = None
    c = shape[1]
    np.testing.assert_allclose(group_norm(x, c, w, b, eps=EPS), instance_norm(x, weight=w, bias=b, eps=EPS)[0], **TIGHT)
    g = group_norm_backward(dy, x, c, w, b, eps=EPS)
    i = instance_norm_backward(dy, x, w, b, eps=EPS)
    np.testing.assert_allclose(g.dx, i.dx, **TIGHT)
    if affine:
        np.testing.assert_allclose(g.dweight, i.dweight, **TIGHT)
        np.testing.assert_allclose(g.dbias, i.dbias, **TIGHT)
        assert g.dweight.shape == i.dweight.shape == (c,)
    else:
        assert g.dweight is g.dbias is i.dweight is i.dbias is None


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (2, 4, 3, 2)])
def test_batch_norm_eval_with_batch_stats_equals_train(shape):
    x, dy, w, b = _data(shape, seed=3)
    axes = (0, *range(2, len(shape)))
    mean = x.mean(axis=axes)
    var = x.var(axis=axes)  # biased, as training normalizes with
    y_train, _, _ = batch_norm(x, None, None, w, b, training=True, eps=EPS)
    y_eval, _, _ = batch_norm(x, mean, var, w, b, training=False, eps=EPS)
    np.testing.assert_allclose(y_eval, y_train, **TIGHT)

    g_train = batch_norm_backward(dy, x, None, None, w, b, training=True, eps=EPS)
    g_eval = batch_norm_backward(dy, x, mean, var, w, b, training=False, eps=EPS)
    # the affine gradients see the same xhat either way
    np.testing.assert_allclose(g_eval.dweight, g_train.dweight, **TIGHT)
    np.testing.assert_allclose(g_eval.dbias, g_train.dbias, **TIGHT)
    # but in eval the statistics are constants, so dx = dy * w * rstd without the projection terms
    assert not np.allclose(g_eval.dx, g_train.dx, rtol=1e-3, atol=1e-3)
    bshape = (1, shape[1]) + (1,) * (len(shape) - 2)
    want_eval_dx = dy * (w / np.sqrt(var + EPS)).reshape(bshape)
    np.testing.assert_allclose(g_eval.dx, want_eval_dx, **TIGHT)
    # training dx sums to zero per channel; eval dx does not
    np.testing.assert_allclose(g_train.dx.sum(axis=axes), 0, atol=1e-12)
    assert np.abs(g_eval.dx.sum(axis=axes)).max() > 1e-3


# -- reference(problem) -----------------------------------------------------------------------


def _expected_checks(op, params):
    checks = {"forward", "grad_input"}
    if params.affine:
        checks.add("grad_weight")
        if op != "rms":
            checks.add("grad_bias")
    if params.running_stats:
        checks |= {"running_mean", "running_var"}
    return checks


REFERENCE_CASES = [
    ("bn", (4, 3, 2, 2), OpParams(mode="train", running_stats=True)),
    ("bn", (4, 3, 2, 2), OpParams(mode="eval", running_stats=True)),
    ("bn", (5, 3), OpParams(mode="train", running_stats=True, affine=False)),
    ("ln", (2, 3, 4), OpParams(normalized_ndim=1)),
    ("ln", (2, 3, 4), OpParams(normalized_ndim=2, affine=False)),
    ("ln", (2, 3, 4, 5), OpParams(normalized_ndim=3)),
    ("in", (2, 3, 4, 2), OpParams()),
    ("in", (2, 3, 4, 2), OpParams(affine=False)),
    ("in", (2, 3, 4), OpParams(mode="train", running_stats=True)),
    ("in", (2, 3, 4), OpParams(mode="eval", running_stats=True)),
    ("gn", (2, 6, 3), OpParams(groups=2)),
    ("gn", (2, 6, 3), OpParams(groups=6, affine=False)),
    ("rms", (3, 8), OpParams(normalized_ndim=1)),
    ("rms", (2, 3, 4), OpParams(normalized_ndim=2, affine=False)),
]


def _ids(cases):
    return [f"{op}-{'x'.join(map(str, s))}-{p.label()}" for op, s, p in cases]


@pytest.mark.parametrize(("op", "shape", "params"), REFERENCE_CASES, ids=_ids(REFERENCE_CASES))
def test_reference_returns_expected_checks_and_shapes(op, shape, params):
    assert OPS[op].validate(shape, params) is None
    problem = make_problem(op, shape, params, "float32", "normal", eps=EPS, seed=4)
    out = reference(problem)
    assert set(out) == _expected_checks(op, params)
    assert out["forward"].shape == shape
    assert out["grad_input"].shape == shape
    pshape = OPS[op].param_shape(shape, params)
    for check in ("grad_weight", "grad_bias"):
        if check in out:
            assert out[check].shape == pshape
    for check in ("running_mean", "running_var"):
        if check in out:
            assert out[check].shape == (shape[1],)
    for value in out.values():
        assert value.dtype == np.float64
        assert np.all(np.isfinite(value))


def test_reference_running_stats_follow_the_steps():
    """Train: steps + x are training batches; eval: the steps are, and x is normalized with the result."""
    op = OPS["bn"]
    for mode, n_batches in (("train", 3), ("eval", 3)):
        params = OpParams(mode=mode, running_stats=True)
        problem = make_problem("bn", (4, 3, 5), params, "float64", "normal", eps=EPS, seed=5)
        batches = [*problem.steps, problem.x] if mode == "train" else list(problem.steps)
        assert len(batches) == n_batches
        rm, rv = problem.running_mean, problem.running_var
        for batch in batches:
            rm, rv = op.update_running(batch, params, rm, rv, problem.momentum)
        out = reference(problem)
        np.testing.assert_allclose(out["running_mean"], rm, **TIGHT)
        np.testing.assert_allclose(out["running_var"], rv, **TIGHT)
        if mode == "eval":
            want, _, _ = batch_norm(problem.x, rm, rv, problem.weight, problem.bias, training=False, eps=EPS)
        else:
            want, _, _ = batch_norm(problem.x, None, None, problem.weight, problem.bias, training=True, eps=EPS)
        np.testing.assert_allclose(out["forward"], want, **TIGHT)


STATELESS_CASES = [c for c in REFERENCE_CASES if not c[2].running_stats]


@pytest.mark.parametrize(("op", "shape", "params"), STATELESS_CASES, ids=_ids(STATELESS_CASES))
def test_reference_matches_public_functions(op, shape, params):
    problem = make_problem(op, shape, params, "float64", "normal", eps=EPS, seed=6)
    out = reference(problem)
    x, dy, w, b = problem.x, problem.dy, problem.weight, problem.bias
    if op == "ln":
        nshape = shape[len(shape) - params.normalized_ndim :]
        y, g = layer_norm(x, nshape, w, b, eps=EPS), layer_norm_backward(dy, x, nshape, w, b, eps=EPS)
    elif op == "rms":
        nshape = shape[len(shape) - params.normalized_ndim :]
        y, g = rms_norm(x, nshape, w, eps=EPS), rms_norm_backward(dy, x, nshape, w, eps=EPS)
    elif op == "in":
        y, g = instance_norm(x, weight=w, bias=b, eps=EPS)[0], instance_norm_backward(dy, x, w, b, eps=EPS)
    elif op == "gn":
        y, g = group_norm(x, params.groups, w, b, eps=EPS), group_norm_backward(dy, x, params.groups, w, b, eps=EPS)
    else:
        y, g = (
            batch_norm(x, None, None, w, b, training=True, eps=EPS)[0],
            batch_norm_backward(dy, x, None, None, w, b, training=True, eps=EPS),
        )
    np.testing.assert_array_equal(out["forward"], y)
    np.testing.assert_array_equal(out["grad_input"], g.dx)
    if g.dweight is not None:
        np.testing.assert_array_equal(out["grad_weight"], g.dweight)
    if g.dbias is not None:
        np.testing.assert_array_equal(out["grad_bias"], g.dbias)


VARIANT_CASES = [
    ("bn", (8, 3, 4), OpParams(mode="train", running_stats=True)),
    ("bn", (8, 3, 4), OpParams(mode="eval", running_stats=True)),
    ("ln", (4, 3, 16), OpParams(normalized_ndim=2)),
    ("in", (3, 4, 5, 5), OpParams(mode="train", running_stats=True)),
    ("gn", (2, 6, 4, 4), OpParams(groups=2)),
    ("rms", (4, 3, 16), OpParams(normalized_ndim=1)),
]


@pytest.mark.parametrize(("op", "shape", "params"), VARIANT_CASES, ids=_ids(VARIANT_CASES))
@pytest.mark.parametrize(("mean_ulps", "expanded"), [(1, False), (-1, False), (0, True), (1, True)])
def test_reference_variants_agree_with_plain_reference(op, shape, params, mean_ulps, expanded):
    problem = make_problem(op, shape, params, "float64", "normal", eps=EPS, seed=8)
    plain = reference(problem)
    variant = reference(problem, mean_ulps=mean_ulps, expanded=expanded)
    assert set(variant) == set(plain)
    for check, want in plain.items():
        scale = float(np.abs(want).max())
        np.testing.assert_allclose(variant[check], want, rtol=1e-9, atol=1e-9 * scale, err_msg=check)


def test_reference_variants_are_actually_different_roundings():
    """The knobs do something: a nudged mean and the expanded backward change the last bits."""
    problem = make_problem("ln", (8, 64), OpParams(normalized_ndim=1), "float64", "normal", eps=EPS, seed=9)
    plain = reference(problem)
    nudged = reference(problem, mean_ulps=1)
    expanded = reference(problem, expanded=True)
    assert not np.array_equal(nudged["forward"], plain["forward"])
    assert not np.array_equal(expanded["grad_input"], plain["grad_input"])
    np.testing.assert_array_equal(expanded["forward"], plain["forward"])  # expanded touches only the backward


@pytest.mark.parametrize("op", ["bn", "in"])
@pytest.mark.parametrize("store", ["float16", "bfloat16"])
def test_reference_store_dtype_rounds_running_stats_every_step(op, store):
    params = OpParams(mode="train", running_stats=True)
    problem = make_problem(op, (4, 3, 5), params, store, "normal", eps=EPS, momentum=0.3, seed=14)
    out = reference(problem, np.float32, store_dtype=store)
    rm, rv = problem.running_mean, problem.running_var
    for batch in (*problem.steps, problem.x):
        rm, rv = OPS[op].update_running(batch, params, rm, rv, problem.momentum, np.float32)
        rm, rv = quantize(rm, store).astype(np.float32), quantize(rv, store).astype(np.float32)
    np.testing.assert_array_equal(out["running_mean"], rm)
    np.testing.assert_array_equal(out["running_var"], rv)
    for check in ("running_mean", "running_var"):
        np.testing.assert_array_equal(quantize(out[check], store), out[check])
    # rounding only at the end would differ from rounding after every step somewhere
    unrounded = reference(problem, np.float32)
    assert not np.array_equal(quantize(unrounded["running_var"], store), out["running_var"]) or not np.array_equal(
        quantize(unrounded["running_mean"], store), out["running_mean"]
    )
    # the forward and gradients do not depend on where running statistics are stored (train mode)
    np.testing.assert_array_equal(out["forward"], unrounded["forward"])


def test_reference_in_float32_is_computed_in_float32():
    problem = make_problem("gn", (2, 6, 4), OpParams(groups=3), "float32", "normal", eps=EPS, seed=10)
    out32 = reference(problem, np.float32)
    out64 = reference(problem)
    for check in out64:
        assert out32[check].dtype == np.float32
        np.testing.assert_allclose(out32[check], out64[check], rtol=1e-4, atol=1e-4)
    assert any(not np.array_equal(out32[c].astype(np.float64), out64[c]) for c in out64)


# -- precision and purity of the generic normalization ----------------------------------------


@pytest.mark.parametrize(("op", "shape", "params"), VARIANT_CASES, ids=_ids(VARIANT_CASES))
def test_moments_in_float32_are_numpy_float32_two_pass(op, shape, params):
    """The witness relies on float32 statistics being what a correct float32 kernel computes."""
    problem = make_problem(op, shape, params, "float32", "large_mean", EPS, seed=11)
    norm = OPS[op].normalization(shape, params)
    mean, var = norm.moments(problem.x, np.float32)
    assert mean.dtype == np.float32 and var.dtype == np.float32
    v = problem.x.astype(np.float32).reshape(norm.view)
    if norm.center:
        want_mean = v.mean(axis=norm.axes, keepdims=True, dtype=np.float32)
        want_var = np.square(v - want_mean).mean(axis=norm.axes, keepdims=True, dtype=np.float32)
        np.testing.assert_array_equal(mean, want_mean)
    else:
        want_var = np.square(v).mean(axis=norm.axes, keepdims=True, dtype=np.float32)
    np.testing.assert_array_equal(var, want_var)


@pytest.mark.parametrize(("op", "shape", "params"), VARIANT_CASES, ids=_ids(VARIANT_CASES))
def test_moments_in_float64_match_numpy(op, shape, params):
    problem = make_problem(op, shape, params, "float64", "large_mean", EPS, seed=12)
    norm = OPS[op].normalization(shape, params)
    mean, var = norm.moments(problem.x)
    v = problem.x.reshape(norm.view)
    if norm.center:
        np.testing.assert_allclose(mean, v.mean(axis=norm.axes, keepdims=True), rtol=1e-15)
        np.testing.assert_allclose(var, v.var(axis=norm.axes, keepdims=True), rtol=1e-9)
    else:
        np.testing.assert_allclose(var, np.mean(v * v, axis=norm.axes, keepdims=True), rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("expanded", [False, True])
@pytest.mark.parametrize(
    ("op", "shape", "params", "eval_stats"),
    [
        ("bn", (4, 3, 5), OpParams(mode="train", running_stats=True), False),
        ("bn", (4, 3, 5), OpParams(mode="eval", running_stats=True), True),
        ("ln", (3, 4, 5), OpParams(normalized_ndim=2), False),
        ("in", (2, 3, 4), OpParams(), False),
        ("gn", (2, 6, 3), OpParams(groups=3), False),
        ("rms", (3, 8), OpParams(normalized_ndim=1), False),
        ("rms", (3, 8), OpParams(normalized_ndim=1, affine=False), False),
    ],
)
def test_forward_and_backward_do_not_write_their_inputs(op, shape, params, eval_stats, expanded, dtype):
    rng = _rng(13)
    norm = OPS[op].normalization(shape, params)
    pshape = OPS[op].param_shape(shape, params)
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    w = 1 + rng.standard_normal(pshape) * 0.5 if params.affine else None
    b = rng.standard_normal(pshape) if params.affine and op != "rms" else None
    stats = None
    if eval_stats:
        bshape = (1, shape[1]) + (1,) * (len(shape) - 2)
        stats = (rng.standard_normal(bshape), rng.uniform(0.5, 2, bshape))
    arrays = [a for a in (x, dy, w, b, *(stats or ())) if a is not None]
    before = [a.copy() for a in arrays]
    y, cache = norm.forward(x, EPS, w, b, stats=stats, dtype=dtype)
    y_copy = y.copy()
    grads = norm.backward(dy, cache, dtype=dtype, expanded=expanded)
    for a, want in zip(arrays, before, strict=True):
        np.testing.assert_array_equal(a, want)
    np.testing.assert_array_equal(y, y_copy)  # the backward does not write the forward's output either
    assert not np.shares_memory(grads.dx, dy) and not np.shares_memory(y, x)
    # a second call gives the same answer (no state left behind in the cache)
    y2, cache2 = norm.forward(x, EPS, w, b, stats=stats, dtype=dtype)
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(norm.backward(dy, cache2, dtype=dtype, expanded=expanded).dx, grads.dx)
