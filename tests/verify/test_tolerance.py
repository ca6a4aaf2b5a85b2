"""compare(), the tolerance rule and the witness that sizes it."""

from __future__ import annotations

import numpy as np
import pytest

from normcheck.dtypes import EPS, HALF, quantize
from normcheck.ops import OPS, OpParams
from normcheck.reference import reference
from normcheck.verify.inputs import make_problem
from normcheck.verify.records import Tolerance
from normcheck.verify.tolerance import (
    CONDITIONING_FACTOR,
    DTYPE_TOLERANCES,
    TERM_ROUNDING,
    WITNESS_VARIANTS,
    compare,
    out_of_range,
    term_sizes,
    tolerance_for,
    witness_errors,
    witness_variants,
)

LAYER_EPS = 1e-5


def _tol(rtol, atol):
    return Tolerance(rtol=rtol, atol=atol, floor_atol=atol, witness_err=0.0, source="user")


# -- compare --------------------------------------------------------------------------------


def test_compare_counts_mismatches_and_reports_errors():
    expected = np.array([[1.0, 2.0, -4.0], [0.5, 10.0, 0.0]])
    actual = np.array([[1.0, 2.05, -4.5], [0.5, 10.9, 0.0]])
    # allowance atol + rtol*|e| = 0.01 + 0.05*|e|: [0.06, 0.11, 0.21, 0.035, 0.51, 0.01]
    c = compare(actual, expected, _tol(0.05, 0.01))
    assert c.numel == 6
    assert c.mismatched == 2  # -4.5 vs -4 (0.5 > 0.21) and 10.9 vs 10 (0.9 > 0.51)
    assert c.max_abs_err == pytest.approx(0.9)
    assert c.max_rel_err == pytest.approx(0.125)  # 0.5 / 4
    assert c.mismatched_pct == pytest.approx(100 * 2 / 6)
    # the worst element is the one furthest past its allowance: 0.9 - 0.51 = 0.39 > 0.5 - 0.21 = 0.29
    assert c.worst_index == (1, 1)


def test_compare_worst_index_is_by_excess_not_by_absolute_error():
    expected = np.array([100.0, 1.0, 3.0])
    actual = np.array([105.0, 1.5, 3.0])
    c = compare(actual, expected, _tol(0.1, 0.0))
    assert c.max_abs_err == 5.0  # at index 0, within its allowance of 10
    assert c.mismatched == 1
    assert c.worst_index == (1,)
    assert c.max_rel_err == pytest.approx(0.5)


def test_compare_all_within_tolerance():
    rng = np.random.default_rng(0)
    e = rng.standard_normal((3, 4, 5))
    a = e * (1 + 1e-7)
    c = compare(a, e, _tol(1e-6, 0.0))
    assert c.mismatched == 0
    assert c.max_rel_err == pytest.approx(1e-7, rel=1e-3)
    assert len(c.worst_index) == 3


def test_compare_boundary_is_inclusive():
    c = compare(np.array([1.5]), np.array([1.0]), _tol(0.25, 0.25))
    assert c.mismatched == 0
    c = compare(np.array([1.5000001]), np.array([1.0]), _tol(0.25, 0.25))
    assert c.mismatched == 1


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_actual_is_a_mismatch_with_infinite_error(bad):
    expected = np.array([[1.0, 2.0], [3.0, 4.0]])
    actual = expected.copy()
    actual[1, 0] = bad
    c = compare(actual, expected, _tol(1e9, 1e9))  # no finite tolerance saves it
    assert c.mismatched == 1
    assert c.max_abs_err == np.inf
    assert c.max_rel_err == np.inf
    assert c.worst_index == (1, 0)


def test_compare_relative_error_at_zero_expected():
    c = compare(np.array([0.0, 1e-3]), np.array([0.0, 0.0]), _tol(0.0, 1e-2))
    assert c.mismatched == 0
    assert c.max_rel_err == np.inf  # nonzero error where zero was expected
    c = compare(np.array([0.0, 1.0]), np.array([0.0, 1.0]), _tol(0.0, 0.0))
    assert (c.max_abs_err, c.max_rel_err, c.mismatched) == (0.0, 0.0, 0)


def test_compare_empty():
    c = compare(np.zeros((0, 3)), np.zeros((0, 3)), _tol(1e-3, 1e-3))
    assert (c.max_abs_err, c.max_rel_err, c.mismatched, c.numel, c.worst_index) == (0.0, 0.0, 0, 0, None)
    assert c.mismatched_pct == 0.0


def test_compare_accepts_float32_actuals():
    e = np.array([1.0 / 3.0])
    a = np.array([1.0 / 3.0], dtype=np.float32)
    c = compare(a, e, _tol(0.0, 0.0))
    assert c.mismatched == 1
    assert 0 < c.max_abs_err < 2**-24


# -- tolerance_for, out_of_range -------------------------------------------------------------


@pytest.mark.parametrize("dtype", list(DTYPE_TOLERANCES))
def test_tolerance_for_adds_conditioning_allowance(dtype):
    rtol, atol = DTYPE_TOLERANCES[dtype]
    t = tolerance_for(dtype, 0.0)
    assert (t.rtol, t.atol, t.floor_atol, t.witness_err, t.source) == (rtol, atol, atol, 0.0, "dtype")
    assert "(cond)" not in t.describe()
    t = tolerance_for(dtype, 0.25)
    assert t.rtol == rtol
    assert t.atol == pytest.approx(atol + CONDITIONING_FACTOR * 0.25)
    assert t.floor_atol == atol
    assert t.witness_err == 0.25
    assert "(cond)" in t.describe()


def test_conditioning_factor_is_eight():
    assert CONDITIONING_FACTOR == 8.0
    assert tolerance_for("float64", 1.0).atol == pytest.approx(1e-7 + 8.0)


def test_user_tolerance_replaces_the_table():
    t = tolerance_for("float16", 0.0, user=(0.5, 0.125))
    assert (t.rtol, t.atol, t.floor_atol, t.source) == (0.5, 0.125, 0.125, "user")
    t = tolerance_for("float16", 0.01, user=(0.5, 0.125))
    assert t.rtol == 0.5
    assert t.atol == pytest.approx(0.125 + CONDITIONING_FACTOR * 0.01)
    assert t.floor_atol == 0.125


def test_dtype_tolerance_table():
    assert DTYPE_TOLERANCES["float32"] == (1.3e-6, 1e-5)
    assert DTYPE_TOLERANCES["float16"] == (1e-3, 1e-5)
    assert DTYPE_TOLERANCES["bfloat16"] == (1.6e-2, 1e-5)


def test_out_of_range():
    assert out_of_range(np.array([1.0, -65504.0]), "float16") is None
    msg = out_of_range(np.array([1.0, -7e4]), "float16")
    assert msg is not None and "float16" in msg and "7e+04" in msg
    assert out_of_range(np.array([7e4]), "bfloat16") is None
    assert out_of_range(np.array([1e39]), "float32") is not None
    assert out_of_range(np.array([1e39]), "bfloat16") is not None
    assert out_of_range(np.array([1e300]), "float64") is None
    assert out_of_range(np.zeros(0), "float16") is None


# -- witness_errors ------------------------------------------------------------------------------

WITNESS_CASES = [
    ("bn", (4, 3, 3, 3), OpParams(mode="train", running_stats=True)),
    ("bn", (4, 3, 3, 3), OpParams(mode="eval", running_stats=True)),
    ("ln", (4, 24), OpParams(normalized_ndim=1)),
    ("in", (2, 3, 4, 4), OpParams()),
    ("gn", (2, 6, 4, 4), OpParams(groups=2)),
    ("rms", (4, 24), OpParams(normalized_ndim=1)),
]
WITNESS_IDS = [f"{op}-{p.label()}" for op, _, p in WITNESS_CASES]


@pytest.mark.parametrize(("op", "shape", "params"), WITNESS_CASES, ids=WITNESS_IDS)
def test_witness_is_tiny_for_float64(op, shape, params):
    p = make_problem(op, shape, params, "float64", "normal", LAYER_EPS, seed=0)
    expected = reference(p)
    w = witness_errors(p, expected)
    assert set(w) == set(expected)
    for check, err in w.items():
        scale = max(1.0, float(np.abs(expected[check]).max()))
        assert 0.0 <= err < 1e-12 * scale, check


@pytest.mark.parametrize(("op", "shape", "params"), WITNESS_CASES, ids=WITNESS_IDS)
def test_witness_sees_the_dtype_rounding(op, shape, params):
    """For half types the witness error is about one rounding into the dtype, never zero."""
    p = make_problem(op, shape, params, "float16", "normal", LAYER_EPS, seed=0)
    expected = reference(p)
    w = witness_errors(p, expected)
    for check in ("forward", "grad_input"):
        peak = float(np.abs(expected[check]).max())
        assert 0.0 < w[check] <= 2 * EPS["float16"] * peak, check


CENTERED_CASES = [c for c in WITNESS_CASES if c[0] != "rms"]


@pytest.mark.parametrize(
    ("op", "shape", "params"), CENTERED_CASES, ids=[f"{op}-{p.label()}" for op, _, p in CENTERED_CASES]
)
def test_witness_larger_for_large_mean_than_normal(op, shape, params):
    """Subtracting a large mean cancels digits: centered ops are ill-conditioned on large_mean data."""
    normal = make_problem(op, shape, params, "float32", "normal", LAYER_EPS, seed=1)
    large = make_problem(op, shape, params, "float32", "large_mean", LAYER_EPS, seed=1)
    w_normal = witness_errors(normal, reference(normal))
    w_large = witness_errors(large, reference(large))
    assert w_normal["forward"] < 1e-5
    assert w_large["forward"] > 100 * w_normal["forward"]
    assert w_large["grad_input"] > w_normal["grad_input"]


def test_rms_norm_is_well_conditioned_on_large_mean():
    """RMS norm subtracts nothing, so large_mean data do not inflate its witness."""
    problem = make_problem("rms", (4, 24), OpParams(normalized_ndim=1), "float32", "large_mean", LAYER_EPS, seed=1)
    expected = reference(problem)
    w = witness_errors(problem, expected)
    assert w["forward"] < 1e-5 * max(1.0, float(np.abs(expected["forward"]).max()))


def test_witness_bounds_every_correct_variant():
    """Each witness variant, rounded to the dtype, is within its own witness error (by definition)."""
    p = make_problem("gn", (2, 6, 4, 4), OpParams(groups=3), "float32", "large_mean", LAYER_EPS, seed=2)
    expected = reference(p)
    w = witness_errors(p, expected)
    for ulps in (0, 1, -1):
        for expanded in (False, True):
            variant = reference(p, np.float32, mean_ulps=ulps, expanded=expanded)
            for check, want in expected.items():
                err = float(np.abs(quantize(variant[check], "float32") - want).max())
                assert err <= w[check], (ulps, expanded, check)


# -- the tolerance rule's central claim -------------------------------------------------------


def _one_pass_forward(problem, dtype=np.float32):
    """A wrong float32 group norm: variance as E[x^2] - E[x]^2 (catastrophic cancellation)."""
    norm = OPS[problem.op].normalization(problem.shape, problem.params)
    v = problem.x.astype(dtype).reshape(norm.view)
    mean = v.mean(axis=norm.axes, keepdims=True, dtype=dtype)
    mean_sq = (v * v).mean(axis=norm.axes, keepdims=True, dtype=dtype)
    var = mean_sq - mean * mean
    with np.errstate(invalid="ignore"):
        y = (v - mean) / np.sqrt(var + dtype(problem.eps))
    y = y * problem.weight.astype(dtype).reshape(norm.param_view) + problem.bias.astype(dtype).reshape(norm.param_view)
    return quantize(y.reshape(problem.shape), problem.dtype)


GN_CASES = [((2, 6, 4, 4), 2), ((2, 8, 5), 4), ((3, 12, 3, 3), 3), ((2, 4, 6), 1)]


@pytest.mark.parametrize(("shape", "groups"), GN_CASES, ids=[f"{s}-G{g}" for s, g in GN_CASES])
@pytest.mark.parametrize("seed", [0, 1])
def test_one_pass_variance_fails_where_two_pass_passes(shape, groups, seed):
    problem = make_problem("gn", shape, OpParams(groups=groups), "float32", "large_mean", LAYER_EPS, seed=seed)
    expected = reference(problem)
    witness = witness_errors(problem, expected)
    tol = tolerance_for("float32", witness["forward"])
    assert tol.atol > tol.floor_atol  # the conditioning allowance is in play

    two_pass = quantize(reference(problem, np.float32)["forward"], "float32")
    good = compare(two_pass, expected["forward"], tol)
    assert good.mismatched == 0

    one_pass = _one_pass_forward(problem)
    bad = compare(one_pass, expected["forward"], tol)
    assert bad.mismatched > 0
    # not only NaNs from negative variances: finite outputs are wrong too
    finite = np.isfinite(one_pass)
    assert finite.any()
    excess = np.abs(one_pass[finite] - expected["forward"][finite]) - (
        tol.atol + tol.rtol * np.abs(expected["forward"][finite])
    )
    assert excess.max() > 0

    # and without the allowance even the correct two-pass computation would be rejected:
    # the table tolerance alone does not fit ill-conditioned data
    assert compare(two_pass, expected["forward"], tolerance_for("float32", 0.0)).mismatched > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_one_pass_variance_passes_on_well_conditioned_data(seed):
    """The rule is about conditioning: on zero-mean data the one-pass formula is accurate enough."""
    problem = make_problem("gn", (2, 6, 4, 4), OpParams(groups=2), "float32", "normal", LAYER_EPS, seed=seed)
    expected = reference(problem)
    tol = tolerance_for("float32", witness_errors(problem, expected)["forward"])
    assert compare(_one_pass_forward(problem), expected["forward"], tol).mismatched == 0


@pytest.mark.parametrize("check", ["forward", "grad_input", "grad_weight", "grad_bias"])
def test_two_pass_witness_passes_every_check_on_large_mean(check):
    problem = make_problem("gn", (2, 6, 4, 4), OpParams(groups=3), "float32", "large_mean", LAYER_EPS, seed=3)
    expected = reference(problem)
    witness = witness_errors(problem, expected)
    for expanded in (False, True):
        got = quantize(reference(problem, np.float32, expanded=expanded)[check], "float32")
        assert compare(got, expected[check], tolerance_for("float32", witness[check])).mismatched == 0


# -- where the witness cancels exactly: the rounding of the terms ------------------------------
F32 = np.float32


def _measured_witness(problem, expected, check):
    """The witness's own error, without the floor of its terms' rounding."""
    return max(
        float(
            np.abs(
                quantize(reference(problem, F32, mean_ulps=u, expanded=e)[check], problem.dtype) - expected[check]
            ).max()
        )
        for u, e in WITNESS_VARIANTS
    )


def _fused_group_norm_backward(problem):
    """grad_input as PyTorch's CPU group norm kernel computes it, in float32: dx = a*dy + b*x + c
    with a = rstd*w, b = (db*mean - ds)*rstd^3/n, c = -b*mean - db*rstd/n, and ds, db summed per
    channel first. A correct kernel."""
    n, c = problem.shape[:2]
    g = problem.params.groups
    x = problem.x.astype(F32).reshape(n, g, c // g, -1)
    dy = problem.dy.astype(F32).reshape(x.shape)
    w = problem.weight.astype(F32).reshape(1, g, c // g)
    mean = x.mean(axis=(2, 3), dtype=F32)
    var = np.square(x - mean[..., None, None]).mean(axis=(2, 3), dtype=F32)
    rstd = F32(1) / np.sqrt(var + F32(problem.eps))
    ds = ((dy * x).sum(axis=3, dtype=F32) * w).sum(axis=2, dtype=F32)
    db = (dy.sum(axis=3, dtype=F32) * w).sum(axis=2, dtype=F32)
    s = F32(1 / (x.shape[2] * x.shape[3]))
    b = (db * mean - ds) * rstd * rstd * rstd * s
    shift = -b * mean - db * rstd * s
    dx = (rstd[..., None] * w)[..., None] * dy + b[..., None, None] * x + shift[..., None, None]
    return dx.reshape(problem.shape).astype(np.float64)


def _fused_batch_norm_eval(problem, expected):
    """Evaluation-mode batch norm as fused kernels compute it, in float32: y = x*a + (b - mean*a)
    with a = w/sqrt(var + eps) from the running statistics. A correct kernel."""
    view = (1, problem.shape[1]) + (1,) * (len(problem.shape) - 2)
    mean, var = (expected[k].astype(F32).reshape(view) for k in ("running_mean", "running_var"))
    a = problem.weight.astype(F32).reshape(view) / np.sqrt(var + F32(problem.eps))
    return (problem.x.astype(F32) * a + (problem.bias.astype(F32).reshape(view) - mean * a)).astype(np.float64)


# (shape, kind): group norm with G = C, where the table tolerance alone failed PyTorch
G_EQUALS_C = [((2, 8), "normal"), ((2, 8), "constant"), ((2, 8), "tiny_scale"), ((2, 9), "normal")]
G_EQUALS_C += [((2, 9), "constant"), ((2, 6, 1, 1), "normal"), ((2, 6, 1, 1), "tiny_scale")]


@pytest.mark.parametrize(("shape", "kind"), G_EQUALS_C, ids=[f"{s}-{k}" for s, k in G_EQUALS_C])
def test_a_fused_kernel_passes_group_norm_with_one_value_per_group(shape, kind):
    p = make_problem("gn", shape, OpParams(groups=shape[1]), "float32", kind, LAYER_EPS, seed=0)
    expected = reference(p)
    got = _fused_group_norm_backward(p)
    assert not expected["grad_input"].any()  # one value per group: the gradient is exactly 0
    assert _measured_witness(p, expected, "grad_input") == 0.0  # and the witness cancels exactly
    assert compare(got, expected["grad_input"], tolerance_for("float32", 0.0)).mismatched > 0
    size = term_sizes(p, expected)["grad_input"]
    witness = witness_errors(p, expected)["grad_input"]
    assert witness == pytest.approx(TERM_ROUNDING * EPS["float32"] * size)
    assert compare(got, expected["grad_input"], tolerance_for("float32", witness)).mismatched == 0
    # the fused kernel errs by under one eps of the largest term; the allowance is 8
    assert np.abs(got - expected["grad_input"]).max() < EPS["float32"] * size


@pytest.mark.parametrize("shape", [(1, 4), (1, 3, 1, 1)])
def test_a_fused_kernel_passes_evaluation_batch_norm_on_a_large_mean(shape):
    p = make_problem("bn", shape, OpParams(mode="eval", running_stats=True), "float32", "large_mean", LAYER_EPS)
    expected = reference(p)
    got = _fused_batch_norm_eval(p, expected)
    measured = _measured_witness(p, expected, "forward")  # the witness subtracts the mean exactly
    assert compare(got, expected["forward"], tolerance_for("float32", measured)).mismatched > 0
    witness = witness_errors(p, expected)["forward"]
    assert compare(got, expected["forward"], tolerance_for("float32", witness)).mismatched == 0
    assert np.abs(got - expected["forward"]).max() < EPS["float32"] * term_sizes(p, expected)["forward"]


def test_term_sizes_are_the_largest_terms_of_each_formula():
    p = make_problem("gn", (2, 8), OpParams(groups=8), "float64", "normal", LAYER_EPS)
    expected = reference(p)
    rstd = 1 / np.sqrt(LAYER_EPS)  # one value per group: no variance
    w = np.abs(p.weight)
    sizes = term_sizes(p, expected)
    assert sizes["grad_input"] == pytest.approx(rstd * float(np.max(np.abs(p.dy) * w)))
    fused = max(float(np.max(np.abs(p.x) * w)) * rstd, float(np.max(np.abs(p.bias))))
    assert sizes["forward"] == pytest.approx(fused)
    assert sizes["grad_weight"] == pytest.approx(float(np.max(np.abs(p.dy) * np.abs(p.x))) * rstd)
    # with fixed statistics only the direct term of the gradient is left
    p = make_problem("bn", (4, 3), OpParams(mode="eval", running_stats=True), "float64", "normal", LAYER_EPS)
    expected = reference(p)
    rstd = 1 / np.sqrt(expected["running_var"] + LAYER_EPS)
    assert term_sizes(p, expected)["grad_input"] == pytest.approx(float(np.max(np.abs(p.dy) * np.abs(p.weight) * rstd)))
    empty = make_problem("ln", (0, 4), OpParams(normalized_ndim=1), "float32", "normal", LAYER_EPS)
    assert term_sizes(empty, reference(empty)) == {}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_term_floor_stays_below_the_table_on_well_conditioned_data(dtype):
    """On ordinary data the terms are the size of the result: the floor changes nothing there."""
    p = make_problem("gn", (4, 16, 6, 6), OpParams(groups=4), dtype, "normal", LAYER_EPS)
    expected = reference(p)
    rtol, atol = DTYPE_TOLERANCES[dtype]
    sizes = term_sizes(p, expected)
    assert set(sizes) == {"forward", "grad_input", "grad_weight"}
    for check, size in sizes.items():
        floor = CONDITIONING_FACTOR * TERM_ROUNDING * EPS[dtype] * size
        assert floor < atol + rtol * float(np.abs(expected[check]).max()), check


def test_a_mean_of_one_value_is_never_nudged():
    """A nudged mean of one value would invent a spread of 1/sqrt(eps) ulps: float32 data of
    6e4 make it 1.2, and an allowance that passes a gradient cut from the statistics."""
    p = make_problem("gn", (2, 8), OpParams(groups=8), "float32", "half_range", LAYER_EPS)
    assert witness_variants(p) == [(0, False), (0, True)]
    p = make_problem("gn", (2, 8), OpParams(groups=4), "float32", "half_range", LAYER_EPS)
    assert witness_variants(p) == WITNESS_VARIANTS


def _mistaken_gradient(problem, mistake):
    """grad_input of a hand-written backward with one term missing, in float64, rounded to the dtype."""
    norm = OPS[problem.op].normalization(problem.shape, problem.params)
    _, cache = norm.forward(problem.x, problem.eps, problem.weight, problem.bias)
    dxhat = problem.dy.reshape(norm.view) * (cache.weight if cache.weight is not None else 1.0)
    mean_term = dxhat.mean(axis=norm.axes, keepdims=True) if norm.center else 0.0
    variance_term = cache.xhat * (dxhat * cache.xhat).mean(axis=norm.axes, keepdims=True)
    kept = {"detached": dxhat, "no_variance_term": dxhat - mean_term, "no_mean_term": dxhat - variance_term}
    return quantize((kept[mistake] * cache.rstd).reshape(problem.shape), problem.dtype)


# groups of one to three values in every op
SMALL_GROUPS = [
    ("gn", (2, 8), OpParams(groups=8)),
    ("gn", (2, 6), OpParams(groups=3)),
    ("gn", (2, 6), OpParams(groups=2)),
    ("gn", (1, 6, 2), OpParams(groups=6)),
    ("ln", (3, 2), OpParams(normalized_ndim=1)),
    ("ln", (2, 3), OpParams(normalized_ndim=1)),
    ("ln", (2, 1, 2), OpParams(normalized_ndim=2)),
    ("rms", (2, 3), OpParams(normalized_ndim=1)),
    ("in", (2, 3, 2), OpParams()),
    ("in", (2, 3, 3), OpParams()),
    ("bn", (3, 4), OpParams(mode="train", running_stats=True)),
    ("bn", (1, 3, 2), OpParams(mode="train", running_stats=True)),
]


def _mistakes(op, shape, params, dtype, kind):
    """The gradient mistakes visible on the case: all three on groups of two or more values (rms
    has no mean term), only the cut statistics on groups of one value (whose xhat is 0). In half
    dtypes the constant kind's groups of two or three values leave out the dropped variance term:
    its error there is within the witness's rounding of the largest gradient to the dtype."""
    if params.groups == shape[1]:
        return ("detached",)
    if op == "rms":
        return ("detached", "no_variance_term")
    if dtype in HALF and kind == "constant":
        return ("detached", "no_mean_term")
    return ("detached", "no_variance_term", "no_mean_term")


@pytest.mark.parametrize(
    ("op", "shape", "params"), SMALL_GROUPS, ids=[f"{o}-{s}-{p.label()}" for o, s, p in SMALL_GROUPS]
)
@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_a_gradient_cut_from_the_statistics_still_fails_on_small_groups(op, shape, params, dtype):
    for kind in ("normal", "constant", "tiny_scale", "half_range"):
        p = make_problem(op, shape, params, dtype, kind, LAYER_EPS, seed=0)
        expected = reference(p)
        tol = tolerance_for(dtype, witness_errors(p, expected)["grad_input"])
        for mistake in _mistakes(op, shape, params, dtype, kind):
            got = _mistaken_gradient(p, mistake)
            assert compare(got, expected["grad_input"], tol).mismatched > 0, (kind, mistake)


def test_a_sum_over_many_values_in_float32_order_is_allowed_in_half_it_is_not():
    """grad_bias of a float32 group norm sums 2 x 63 x 65 = 8190 values a channel: added one by
    one in float32 (as PyTorch's channels-last kernel does) it errs by about u * sum|dy|, beyond
    the witness's pairwise sums but within sqrt(n) u sum|dy|; added in float16 it is far off."""
    from normcheck.ops import OpParams
    from normcheck.reference import reference
    from normcheck.verify.inputs import make_problem
    from normcheck.verify.tolerance import compare, tolerance_for, witness_errors

    p = make_problem("gn", (2, 96, 63, 65), OpParams(groups=32), "float32", "normal", eps=1e-5)
    expected = reference(p)
    tol = tolerance_for("float32", witness_errors(p, expected)["grad_bias"])
    per_channel = np.moveaxis(np.asarray(p.dy, dtype=np.float64), 1, -1).reshape(-1, 96)
    one_by_one = np.cumsum(per_channel.astype(np.float32), axis=0, dtype=np.float32)[-1]
    assert not compare(one_by_one, expected["grad_bias"], tol).mismatched
    in_half = np.cumsum(per_channel.astype(np.float16), axis=0, dtype=np.float16)[-1]
    assert compare(in_half, expected["grad_bias"], tol).mismatched
